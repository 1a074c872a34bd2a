"""IMAP under faults, against Dovecot and real sockets: a renumbering server,
a cut during LOGIN, the wrong kind of server on the port, missing folders."""

from __future__ import annotations

import http.server
import os
import socket
import threading
import time

import pytest

from tests.conftest import Crm, make_mail, write_config
from tests.imap_server import dovecot  # noqa: F401  (fixture)
from tests.tcp_proxy import TcpProxy

CUSTOMERS = (("Kunde GmbH", ["kunde.example"]),)


def imap_source(server, user: str, **extra) -> dict:
    env = f"CRM_FAULT_IMAP_{user.upper()}"
    os.environ[env] = server.users[user]
    return {"type": "imap", "host": "127.0.0.1", "port": server.port, "tls": "none", "allow_plaintext": True,
            "username": user, "password_env": env, "owner": [f"{user}@nordlicht.example"], **extra}


def crm_for(tmp_path, **sources) -> Crm:
    return Crm(write_config(tmp_path / "crm.toml", customers=CUSTOMERS, internal=("nordlicht.example",),
                            sources=sources))


def result_of(crm: Crm, *args: str) -> tuple[int, dict]:
    import json

    done = crm("sync", "--json", *args, ok=False)
    data = json.loads(done.stdout)
    return done.exit_code, {r["source"]: r for r in data["results"]}


def mails(n: int, tag: str) -> list[bytes]:
    return [make_mail(sender="kim@kunde.example", message_id=f"{tag}{i}@x", subject=f"{tag} {i}") for i in range(n)]


# -- 1. UIDVALIDITY ------------------------------------------------------------------
def test_a_renumbering_folder_is_quarantined_counted_once_and_reset_by_the_admin(tmp_path, dovecot):
    dovecot.append("alice", "INBOX", mails(3, "first"))
    crm = crm_for(tmp_path, alice=imap_source(dovecot, "alice", folders=["INBOX"]))
    assert result_of(crm)[0] == 0
    for _ in range(3):  # three changes in 30 days are tolerated
        dovecot.set_uidvalidity("alice", "INBOX")
        code, res = result_of(crm)
        assert code == 0 and res["alice"]["status"] == "ok", res
    dovecot.set_uidvalidity("alice", "INBOX")  # the fourth: quarantined
    dovecot.append("alice", "INBOX", mails(1, "later"))
    code, res = result_of(crm)
    assert code == 1 and res["alice"]["status"] == "error"
    assert "quarantined" in res["alice"]["message"] and "changed 4 times" in res["alice"]["message"]
    assert "crm sources reset alice --folder INBOX" in res["alice"]["message"]
    status = crm("status").stdout
    assert "quarantined" in status and "crm sources reset alice" in status
    for _ in range(2):  # nothing changed on the server: still four changes, still quarantined, still failing
        code, res = result_of(crm)
        assert code == 1 and "changed 4 times" in res["alice"]["message"], res
    assert crm.json("search", "later") == []
    # the admin clears it after the migration
    out = crm("sources", "reset", "alice", "--folder", "INBOX").stdout
    assert "next sync" in out
    code, res = result_of(crm)
    assert code == 0 and res["alice"]["status"] == "ok", res
    assert [r["subject"] for r in crm.json("search", "later")] == ["later 0"]
    counts = crm.json("status")["counts"]
    assert counts["mails"] == 4  # nothing doubled
    assert all(not i["deleted"] for i in crm.json("timeline", "Kunde GmbH"))
    assert result_of(crm)[0] == 0


def test_reset_of_an_unknown_folder_is_one_line(tmp_path, dovecot):
    crm = crm_for(tmp_path, alice=imap_source(dovecot, "alice", folders=["INBOX"]))
    crm("sync")
    done = crm("sources", "reset", "alice", "--folder", "Nope", ok=False)
    assert done.exit_code == 2 and "no folder 'Nope'" in done.output and "INBOX" in done.output


# -- 4. a cut during LOGIN ------------------------------------------------------------
def bytes_before_login(port: int) -> int:
    """What goes over the wire before imaplib sends LOGIN: the greeting, CAPABILITY and its answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        f = s.makefile("rb")
        n = len(f.readline())
        cmd = b"ABCD1 CAPABILITY\r\n"  # imaplib's tags have the same length
        s.sendall(cmd)
        n += len(cmd)
        while True:
            line = f.readline()
            n += len(line)
            if line.startswith(b"ABCD1 ") or not line:
                return n


@pytest.mark.parametrize("reset", [False, True], ids=["closed", "reset"])
def test_a_connection_cut_during_login_is_retried_not_a_wrong_password(tmp_path, dovecot, reset):
    dovecot.append("alice", "INBOX", mails(2, "login"))
    with TcpProxy(("127.0.0.1", dovecot.port)) as proxy:
        proxy.cut_first_after(bytes_before_login(dovecot.port) + 8, reset=reset)  # inside the LOGIN command
        crm = crm_for(tmp_path, alice=imap_source(dovecot, "alice", port=proxy.port, folders=["INBOX"]))
        code, res = result_of(crm)
        assert proxy.cuts == 1 and proxy.connections >= 2
    assert code == 0 and res["alice"]["status"] == "ok", res
    assert res["alice"]["added"] == 2


def test_a_wrong_password_is_one_attempt(tmp_path, dovecot):
    os.environ["CRM_FAULT_WRONG"] = "not-the-password"
    with TcpProxy(("127.0.0.1", dovecot.port)) as proxy:
        crm = crm_for(tmp_path, alice=imap_source(dovecot, "alice", port=proxy.port, password_env="CRM_FAULT_WRONG"))
        code, res = result_of(crm)
        assert proxy.connections == 1
    assert code == 1 and "authentication failed" in res["alice"]["message"]


# -- 8. what retrying cannot fix: one attempt, one line -------------------------------------
class _Quiet(http.server.BaseHTTPRequestHandler):
    def do_HEAD(self) -> None:
        self.send_response(200)
        self.end_headers()

    do_GET = do_HEAD

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def web_server():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fails_fast(tmp_path, source: dict, expect: str, seconds: float) -> None:
    crm = crm_for(tmp_path, alice=source)
    started = time.monotonic()
    done = crm("sync", ok=False)
    took = time.monotonic() - started
    assert done.exit_code == 1, done.output
    assert expect in done.stderr, done.output  # the problem on stderr, the summary line on stdout
    assert "retrying" not in done.output and "Traceback" not in done.output
    assert done.output.count(expect) == 1, done.output  # printed once, not on stdout and stderr both
    assert took < seconds, f"took {took:.1f} s"


def test_tls_on_a_plain_imap_port(tmp_path, dovecot):
    fails_fast(tmp_path, imap_source(dovecot, "alice", tls="implicit", verify_tls=False),
               f'port {dovecot.port} speaks plain IMAP, not TLS: use tls = "starttls"', 6)


@pytest.mark.parametrize("tls", ["implicit", "starttls"])
def test_an_imap_source_pointed_at_a_web_server(tmp_path, dovecot, web_server, tls):
    fails_fast(tmp_path, imap_source(dovecot, "alice", port=web_server, tls=tls, verify_tls=False, timeout=2),
               "is a web server (HTTP), not an IMAP server", 10)


def test_a_refused_connection(tmp_path, dovecot):
    fails_fast(tmp_path, imap_source(dovecot, "alice", port=closed_port()), "connection refused", 3)


# -- 9./10. a log folder that does not exist yet; a sync with no sources -------------------------
def test_a_missing_log_folder_is_reported_once_with_how_to_create_it(tmp_path, dovecot):
    dovecot.append("alice", "INBOX", mails(1, "inbox"))
    crm = crm_for(tmp_path, alice=imap_source(dovecot, "alice", folders=["INBOX"], log_folder="CRM/Log"))
    code, res = result_of(crm)
    assert code == 0 and res["alice"]["status"] == "warning"
    assert "create folder" in res["alice"]["message"] and "separator" in res["alice"]["message"]
    assert "deleted or renamed" not in res["alice"]["message"]
    dovecot.append("alice", "INBOX", mails(1, "second"))
    for _ in range(2):  # told once: later runs are clean
        code, res = result_of(crm)
        assert code == 0 and res["alice"]["status"] == "ok", res
    with dovecot.client("alice") as c:  # created: it is read
        c.create_folder("CRM.Log" if c.namespace()[0][0][1] == "." else "CRM/Log")
    dovecot.append("alice", "CRM.Log", mails(1, "logged"))
    code, res = result_of(crm)
    assert code == 0 and res["alice"]["status"] == "ok" and res["alice"]["added"] == 1, res


def test_a_sync_with_no_sources_says_so(tmp_path):
    crm = Crm(write_config(tmp_path / "crm.toml", sources={}))
    done = crm("sync")
    assert "no sources configured" in done.output and "[sources.NAME]" in done.output
