"""The IMAP connector against a real Dovecot (tests/imap_server.py).

The connector is driven directly with a tiny in-memory SourceView that
applies batches the way the engine does (records add locations, changes
update etags, removed drop them; batch and cursor together).
"""

from __future__ import annotations

import base64
import itertools
import os
import quopri
import random
import sysconfig
import threading
import time
from datetime import datetime, timezone
from email.utils import format_datetime
from pathlib import Path

import pytest

from crm_bridge.connectors.base import AuthError, ConfigError, SourceUnavailable, TransientError
from crm_bridge.connectors.imap import ImapConnector
from crm_bridge.connectors.imapwire import expand_set, parse_fetch, uid_set
from crm_bridge.connectors.mailparse import MailParseError, parse_message
from crm_bridge.crm_core.records import Batch, Location, MailRecord
from tests.imap_server import dovecot, dovecot_tls  # noqa: F401  (fixtures)
from tests.tcp_proxy import TcpProxy

CPYTHON_EMAIL_DATA = Path(sysconfig.get_paths()["stdlib"]) / "test" / "test_email" / "data"


# -- helpers ------------------------------------------------------------------
class MemoryView:
    """scope -> {local_id: etag}; applies batches like the engine."""

    def __init__(self) -> None:
        self.data: dict[str, dict[str, str]] = {}
        self.cursor: dict | None = None
        self.records: dict[tuple[str, str], MailRecord] = {}
        self.problems: list[str] = []
        self.failures: list = []
        self.removed: list[Location] = []
        self.changes: list = []

    def known(self, scope: str) -> dict[str, str]:
        return self.data.get(scope, {})

    def scopes(self) -> list[str]:
        return [s for s, items in self.data.items() if items]

    def apply(self, batch: Batch) -> None:
        for r in batch.records:
            self.data.setdefault(r.location.scope, {})[r.location.local_id] = r.location.etag
            self.records[(r.location.scope, r.location.local_id)] = r
        for c in batch.changes:
            self.data.setdefault(c.location.scope, {})[c.location.local_id] = c.location.etag
            self.changes.append(c)
        for loc in batch.removed:
            self.data.get(loc.scope, {}).pop(loc.local_id, None)
            self.records.pop((loc.scope, loc.local_id), None)
            self.removed.append(loc)
        self.problems += batch.problems
        self.failures += batch.failures
        if batch.cursor is not None:
            self.cursor = batch.cursor

    def sync(self, conn: ImapConnector) -> list[Batch]:
        batches = []
        for batch in conn.pull(self.cursor, self):
            self.apply(batch)
            batches.append(batch)
        return batches

    def message_ids(self, scope: str = "INBOX") -> list[str]:
        return sorted(r.message_id for (s, _l), r in self.records.items() if s == scope)

    def snapshot(self) -> dict[str, dict[str, str]]:
        return {s: dict(items) for s, items in self.data.items() if items}


def connector(server, user: str = "alice", port: int | None = None, **options) -> ImapConnector:
    os.environ[f"CRM_TEST_IMAP_{user.upper()}"] = server.users[user]
    opts = {
        "type": "imap", "host": "127.0.0.1", "port": port or server.port, "tls": "none",
        "allow_plaintext": True, "username": user, "password_env": f"CRM_TEST_IMAP_{user.upper()}",
        "timeout": 20,
    }
    opts.update(options)
    return ImapConnector(f"{user}-imap", opts)


def mail(n: int, *, subject: str | None = None, body: str | None = None, sender: str = "Kim Kunde <kim@kunde.example>",
         when: datetime | None = None, extra: str = "") -> bytes:
    when = when or datetime(2026, 3, 1, 9, 0, tzinfo=timezone.utc)
    body = body if body is not None else f"Hallo, das ist Nachricht {n}.\r\nGruss Kim"
    return (
        f"From: {sender}\r\nTo: Anna <anna@nordlicht.example>\r\nSubject: {subject or f'Anfrage {n}'}\r\n"
        f"Date: {format_datetime(when)}\r\nMessage-ID: <m{n}@kunde.example>\r\n{extra}"
        f"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{body}\r\n"
    ).encode()


def flags_of(server, user: str, folder: str = "INBOX") -> dict[int, tuple]:
    with server.client(user) as c:
        c.select_folder(folder, readonly=True)
        return {uid: tuple(d[b"FLAGS"]) for uid, d in c.fetch(c.search("ALL"), ["FLAGS"]).items()}


# -- unit bits ------------------------------------------------------------------
def test_uid_set_and_fetch_parser():
    assert uid_set([5, 1, 2, 3, 9, 10]) == "1:3,5,9:10"
    assert uid_set([]) == ""
    assert expand_set(b"1:3,7,9:8") == [1, 2, 3, 7, 8, 9]
    data = [
        (b'1 (UID 5 FLAGS (\\Seen $x) RFC822.SIZE 12 BODY[HEADER.FIELDS (FROM TO)] {5}', b"From:"),
        b' BODYSTRUCTURE ("text" "plain" ("charset" "a \\"q\\"") NIL NIL "7bit" 1 1 NIL NIL NIL NIL))',
        b"2 (UID 7 FLAGS () BODY[1]<0> NIL)",
    ]
    out = parse_fetch(data)
    assert out[5][b"FLAGS"] == [b"\\Seen", b"$x"]
    assert out[5][b"BODY[HEADER.FIELDS (FROM TO)]"] == b"From:"
    assert out[5][b"BODYSTRUCTURE"][2] == [b"charset", b'a "q"']
    assert out[7] == {b"UID": b"7", b"FLAGS": [], b"BODY[1]<0>": None}


def test_config_is_checked_without_network():
    base = {"type": "imap", "host": "imap.example.com", "username": "a", "password_env": "X"}
    ImapConnector("ok", base)
    with pytest.raises(ConfigError, match="loopback"):
        ImapConnector("x", {**base, "tls": "none", "allow_plaintext": True})
    with pytest.raises(ConfigError, match="password_env"):
        ImapConnector("x", {**base, "password": "hunter2"})
    with pytest.raises(ConfigError, match="since"):
        ImapConnector("x", {**base, "since": "yesterday"})
    with pytest.raises(ConfigError, match="tls"):
        ImapConnector("x", {**base, "tls": "maybe"})
    with pytest.raises(ConfigError, match="token"):
        ImapConnector("x", {**base, "auth": "xoauth2"})
    c = ImapConnector("x", {**base, "log_folder": "CRM/Log", "private_folder": "Private"})
    assert c.folder_specs == ["INBOX", "\\Sent", "CRM/Log", "Private"]


# -- syncing ----------------------------------------------------------------------
def test_first_sync_reads_inbox_and_sent_only(dovecot):
    dovecot.append("alice", "INBOX", [mail(i) for i in range(3)])
    dovecot.append("alice", "Sent", mail(10, sender="Anna <anna@nordlicht.example>"))
    dovecot.append("alice", "Junk", mail(20))
    dovecot.append("alice", "Trash", mail(21))
    view = MemoryView()
    view.sync(connector(dovecot))
    assert view.message_ids("INBOX") == ["m0@kunde.example", "m1@kunde.example", "m2@kunde.example"]
    assert view.message_ids("Sent") == ["m10@kunde.example"]
    assert set(view.scopes()) == {"INBOX", "Sent"}
    uv = dovecot.uidvalidity("alice")
    assert set(view.known("INBOX")) == {f"{uv}:1", f"{uv}:2", f"{uv}:3"}
    rec = view.records[("INBOX", f"{uv}:1")]
    assert rec.sender.email == "kim@kunde.example" and rec.subject == "Anfrage 0"
    assert rec.snippet == "Hallo, das ist Nachricht 0. Gruss Kim"
    assert rec.size > 0 and rec.flags == () and rec.date.tzinfo is not None
    assert view.cursor["version"] == 1 and view.cursor["folders"]["INBOX"]["last_uid"] == 3
    assert not view.problems and not view.failures


def test_incremental_sync_fetches_only_new_mail(dovecot):
    dovecot.append("alice", "INBOX", [mail(i) for i in range(5)])
    view = MemoryView()
    conn = connector(dovecot, batch_size=2)
    batches = view.sync(conn)
    assert [len(b.records) for b in batches if b.records] == [2, 2, 1]
    # every batch's cursor moves last_uid forward in ascending UID order
    assert [b.cursor["folders"]["INBOX"]["last_uid"] for b in batches if b.records] == [2, 4, 5]
    dovecot.append("alice", "INBOX", [mail(i) for i in range(5, 7)])
    batches = view.sync(conn)
    assert sorted(r.message_id for b in batches for r in b.records) == ["m5@kunde.example", "m6@kunde.example"]
    assert sum(len(b.records) + len(b.removed) + len(b.changes) for b in view.sync(conn)) == 0
    assert len(view.known("INBOX")) == 7
    conn.close()


def test_interrupted_first_sync_resumes_where_it_stopped(dovecot):
    dovecot.append("alice", "INBOX", [mail(i) for i in range(9)])
    view = MemoryView()
    pull = connector(dovecot, batch_size=3).pull(None, view)
    view.apply(next(pull))
    view.apply(next(pull))
    pull.close()  # the process died after two stored batches
    assert view.cursor["folders"]["INBOX"]["last_uid"] == 6
    batches = view.sync(connector(dovecot, batch_size=3))
    assert sorted(r.message_id for b in batches for r in b.records) == [f"m{i}@kunde.example" for i in (6, 7, 8)]
    assert len(view.known("INBOX")) == 9


def test_pull_stopped_with_fetches_in_flight_leaves_a_usable_connector(dovecot):
    # batches are pipelined: when the engine stops reading, the server still
    # has answers on the wire; the same connector must not read them later
    dovecot.append("alice", "INBOX", [mail(i) for i in range(12)])
    view = MemoryView()
    conn = connector(dovecot, batch_size=3)
    pull = conn.pull(None, view)
    view.apply(next(pull))
    pull.close()
    assert view.cursor["folders"]["INBOX"]["last_uid"] == 3
    batches = view.sync(conn)
    assert sorted(r.message_id for b in batches for r in b.records) == sorted(f"m{i}@kunde.example" for i in range(3, 12))
    assert all(r.snippet.startswith("Hallo, das ist Nachricht") for r in view.records.values())
    assert len(view.known("INBOX")) == 12 and not view.failures
    conn.close()


def test_pipelined_fetches_are_matched_by_uid(dovecot):
    from crm_bridge.connectors.imapwire import Fetches

    dovecot.append("alice", "INBOX", [mail(i) for i in range(6)])
    with dovecot.client("alice") as c:
        c.select_folder("INBOX", readonly=True)
        c._imap.debug = 0
        fetches = Fetches(c)
        first = fetches.send("1:3", ["UID", "RFC822.SIZE"])
        second = fetches.send("4:6", ["UID", "BODY.PEEK[HEADER.FIELDS (SUBJECT)]"])
        third = fetches.send("1:6", ["UID", "FLAGS"])
        fetches.wait(second)  # the later command first: the earlier answers are kept, not lost
        fetches.wait(first, third)
        got = fetches.take([1, 5])
        assert set(got) == {1, 5}
        assert set(got[1]) == {b"UID", b"RFC822.SIZE", b"FLAGS"}
        assert got[5][b"BODY[HEADER.FIELDS (SUBJECT)]"].strip() == b"Subject: Anfrage 4"
        assert sorted(fetches.take()) == [2, 3, 4, 6] and not fetches.busy
        bad = fetches.send("1", ["NOSUCHITEM"])
        with pytest.raises(Exception, match="UID FETCH failed"):
            fetches.wait(bad)
        assert c.noop()  # the connection is still in step after the failed command


def test_since_is_pushed_into_the_search(dovecot):
    old = datetime(2020, 1, 1, tzinfo=timezone.utc)
    with dovecot.client("alice") as c:
        c.append("INBOX", mail(1, when=old), msg_time=old)
        c.append("INBOX", mail(2), msg_time=datetime(2026, 3, 1, tzinfo=timezone.utc))
    view = MemoryView()
    view.sync(connector(dovecot, since="2025-01-01"))
    assert view.message_ids() == ["m2@kunde.example"]


@pytest.mark.parametrize("condstore", [True, False], ids=["condstore", "compare"])
def test_flag_changes(dovecot, condstore):
    dovecot.append("alice", "INBOX", [mail(i) for i in range(4)])
    view = MemoryView()
    conn = connector(dovecot, use_condstore=condstore)
    view.sync(conn)
    assert ("modseq" in view.cursor["folders"]["INBOX"]) and (view.cursor["folders"]["INBOX"]["modseq"] > 0) == condstore
    with dovecot.client("alice") as c:
        c.select_folder("INBOX")
        c.add_flags([2], ["\\Flagged", "$Private"])
        c.add_flags([3], ["\\Answered"])
    batches = view.sync(conn)
    changes = {c.location.local_id.split(":")[1]: c.flags for b in batches for c in b.changes}
    assert changes == {"2": ("$Private", "\\Flagged"), "3": ("\\Answered",)}
    assert not any(b.records or b.removed for b in batches)
    uv = dovecot.uidvalidity("alice")
    assert view.known("INBOX")[f"{uv}:2"] == "$Private \\Flagged"
    # nothing changed: nothing reported
    assert not any(b.changes for b in view.sync(conn))
    with dovecot.client("alice") as c:
        c.select_folder("INBOX")
        c.remove_flags([2], ["$Private"])
    changes = [c for b in view.sync(conn) for c in b.changes]
    assert [(c.location.local_id, c.flags) for c in changes] == [(f"{uv}:2", ("\\Flagged",))]


def test_sync_is_read_only(dovecot):
    dovecot.append("alice", "INBOX", [mail(i) for i in range(3)])
    dovecot.append("alice", "Sent", mail(9))
    view = MemoryView()
    view.sync(connector(dovecot))
    assert len(view.records) == 4
    for folder in ("INBOX", "Sent"):
        assert all("\\Seen" not in [f.decode() for f in flags] for flags in flags_of(dovecot, "alice", folder).values())
    assert "expunged=0" in dovecot.log.read_text()


def test_uidvalidity_reset_rescans_and_removes_old_locations_last(dovecot):
    dovecot.append("alice", "INBOX", [mail(i) for i in range(7)])
    view = MemoryView()
    conn = connector(dovecot, batch_size=3)
    view.sync(conn)
    before = view.message_ids()
    old_ids = set(view.known("INBOX"))
    new_uv = dovecot.set_uidvalidity("alice", "INBOX")
    batches = [b for b in view.sync(conn) if b.records or b.removed]
    assert view.message_ids() == before  # same mails, no duplicates
    assert set(view.known("INBOX")) == {f"{new_uv}:{u}" for u in range(1, 8)}
    removing = [i for i, b in enumerate(batches) if b.removed]
    assert removing == [len(batches) - 1]  # only in the last batch of the rescan
    assert {loc.local_id for loc in batches[-1].removed} == old_ids
    assert view.cursor["folders"]["INBOX"]["uidvalidity"] == new_uv
    assert len(view.cursor["folders"]["INBOX"]["resets"]) == 1


def test_uidvalidity_that_keeps_changing_is_skipped(dovecot):
    dovecot.append("alice", "INBOX", [mail(i) for i in range(2)])
    view = MemoryView()
    conn = connector(dovecot, folders=["INBOX"])
    view.sync(conn)
    now = time.time()
    view.cursor["folders"]["INBOX"]["resets"] = [now - 3000, now - 2000, now - 1000]
    known = dict(view.known("INBOX"))
    dovecot.set_uidvalidity("alice", "INBOX")
    batches = view.sync(conn)
    assert any("UIDVALIDITY changed 4 times" in a and "quarantined" in a for b in batches for a in b.alerts)
    assert view.known("INBOX") == known  # nothing removed, nothing rescanned
    assert not any(b.records or b.removed for b in batches)
    batches = view.sync(conn)  # nothing changed since: still four changes, still quarantined
    assert any("UIDVALIDITY changed 4 times" in a for b in batches for a in b.alerts)


def test_message_moved_between_folders(dovecot):
    dovecot.append("alice", "INBOX", [mail(i) for i in range(3)])
    dovecot.append("alice", "Archive", mail(50))
    view = MemoryView()
    conn = connector(dovecot, folders=["INBOX", "Archive"])
    view.sync(conn)
    with dovecot.client("alice") as c:
        c.select_folder("INBOX")
        c.move([2], "Archive")
    batches = view.sync(conn)
    uv_in = dovecot.uidvalidity("alice", "INBOX")
    assert [loc.local_id for b in batches for loc in b.removed] == [f"{uv_in}:2"]
    assert [r.message_id for b in batches for r in b.records] == ["m1@kunde.example"]
    assert [r.location.scope for b in batches for r in b.records] == ["Archive"]
    assert view.message_ids("Archive") == ["m1@kunde.example", "m50@kunde.example"]


def test_nested_folders_use_slash_scopes_and_rename_is_a_problem(dovecot):
    dovecot.append("alice", "Projects.Alpha", [mail(i) for i in range(3)])
    dovecot.append("alice", "Projects.Beta", mail(9))
    view = MemoryView()
    conn = connector(dovecot, folders=["INBOX", "Projects/*"])
    view.sync(conn)
    assert set(view.scopes()) == {"Projects/Alpha", "Projects/Beta"}
    with dovecot.client("alice") as c:
        c.rename_folder("Projects.Alpha", "Projects.Gamma")
    view.sync(conn)
    assert len(view.known("Projects/Alpha")) == 3  # nothing removed
    assert any("'Projects/Alpha' is gone" in p for p in view.problems)
    assert view.message_ids("Projects/Gamma") == [f"m{i}@kunde.example" for i in range(3)]
    assert not view.removed


def test_deleted_folder_is_a_problem_not_a_deletion(dovecot):
    dovecot.append("alice", "Archive", [mail(i) for i in range(3)])
    view = MemoryView()
    conn = connector(dovecot, folders=["INBOX", "Archive"])
    view.sync(conn)
    with dovecot.client("alice") as c:
        c.delete_folder("Archive")
    batches = view.sync(conn)
    assert any("'Archive' does not exist" in p for p in view.problems)
    assert not any(b.removed for b in batches)
    assert len(view.known("Archive")) == 3


def test_emptied_folder_is_guarded_but_small_deletions_go_through(dovecot):
    dovecot.append("alice", "INBOX", [mail(i) for i in range(13)])
    view = MemoryView()
    conn = connector(dovecot, folders=["INBOX"])  # empty_guard = 10
    view.sync(conn)
    with dovecot.client("alice") as c:
        c.select_folder("INBOX")
        c.delete_messages([1, 2])
        c.expunge()
    view.sync(conn)
    assert len(view.known("INBOX")) == 11 and len(view.removed) == 2
    with dovecot.client("alice") as c:
        c.select_folder("INBOX")
        c.delete_messages(c.search("ALL"))
        c.expunge()
    view.sync(conn)
    assert any("empty on the server" in p for p in view.problems)
    assert len(view.known("INBOX")) == 11


def test_log_and_private_folders_are_synced(dovecot):
    dovecot.append("alice", "CRM.Log", mail(1))
    dovecot.append("alice", "Private", mail(2))
    view = MemoryView()
    view.sync(connector(dovecot, log_folder="CRM/Log", private_folder="Private"))
    assert view.message_ids("CRM/Log") == ["m1@kunde.example"]
    assert view.message_ids("Private") == ["m2@kunde.example"]


# -- errors ---------------------------------------------------------------------
def test_wrong_password_is_an_auth_error_without_the_password(dovecot, monkeypatch):
    conn = connector(dovecot)
    monkeypatch.setenv("CRM_TEST_IMAP_ALICE", "Wrong-Secret-123")
    with pytest.raises(AuthError) as info:
        list(conn.pull(None, MemoryView()))
    text = f"{info.value!r} {info.value.__cause__!r} {info.value.__context__!r}"
    assert "Wrong-Secret-123" not in text and "alice" in str(info.value)


def test_refused_connection_fails_fast(dovecot):
    """Nothing listens: retrying within the run cannot fix it (issue 8); one line that says so."""
    port = dovecot.port
    dovecot.stop()
    with pytest.raises(SourceUnavailable, match="connection refused") as info:
        list(connector(dovecot, port=port).pull(None, MemoryView()))
    assert not isinstance(info.value, TransientError)


def test_tls_certificate_checks(dovecot_tls):
    dovecot_tls.append("alice", "INBOX", mail(1))
    common = {"port": dovecot_tls.ssl_port, "tls": "implicit"}
    with pytest.raises(SourceUnavailable, match="certificate") as info:
        list(connector(dovecot_tls, **common).pull(None, MemoryView()))
    assert not isinstance(info.value, TransientError)
    view = MemoryView()
    view.sync(connector(dovecot_tls, ca_file=str(dovecot_tls.cert), **common))
    assert view.message_ids() == ["m1@kunde.example"]
    view = MemoryView()
    view.sync(connector(dovecot_tls, tls="starttls", port=dovecot_tls.port, ca_file=str(dovecot_tls.cert)))
    assert view.message_ids() == ["m1@kunde.example"]
    view = MemoryView()
    view.sync(connector(dovecot_tls, verify_tls=False, **common))
    assert view.message_ids() == ["m1@kunde.example"]


def test_xoauth2_login_with_token_command(tmp_path):
    """XOAUTH2 through Dovecot's oauth2 passdb, which asks a local introspection endpoint."""
    import json
    import sys
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    from urllib.parse import parse_qs

    from tests.imap_server import Dovecot, require_dovecot

    require_dovecot()

    class Introspect(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            form = parse_qs(self.rfile.read(int(self.headers.get("Content-Length", 0))).decode())
            token = (form.get("token") or [""])[0]
            body = json.dumps({"active": True, "username": "alice"} if token == "good-token" else {"active": False})
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body.encode())

        def log_message(self, *args):
            pass

    http = ThreadingHTTPServer(("127.0.0.1", 0), Introspect)
    threading.Thread(target=http.serve_forever, daemon=True).start()
    server = Dovecot(oauth2_introspection_url=f"http://127.0.0.1:{http.server_address[1]}/introspect")
    try:
        server.start()
        server.append("alice", "INBOX", mail(1))
        script = tmp_path / "token.py"
        script.write_text("print('good-token')\n")
        opts = {"type": "imap", "host": "127.0.0.1", "port": server.port, "tls": "none", "allow_plaintext": True,
                "username": "alice", "auth": "xoauth2", "token_command": [sys.executable, str(script)]}
        view = MemoryView()
        view.sync(ImapConnector("oauth", opts))
        assert view.message_ids() == ["m1@kunde.example"]
        script.write_text("print('expired-token')\n")
        with pytest.raises(AuthError) as info:
            list(ImapConnector("oauth", opts).pull(None, MemoryView()))
        assert "expired-token" not in repr(info.value)
    finally:
        server.cleanup()
        http.shutdown()


def test_broken_mail_becomes_a_failure(dovecot):
    dovecot.append("alice", "INBOX", [b"this is not a mail at all\r\njust text\r\n", mail(1), b"\x00\xff\xfe garbage\r\n\r\n"])
    view = MemoryView()
    view.sync(connector(dovecot))
    assert view.message_ids() == ["m1@kunde.example"]
    assert len(view.failures) == 2 and all(f.reason for f in view.failures)


def test_every_cpython_email_test_message_gives_a_record_or_a_failure(dovecot):
    files = sorted(CPYTHON_EMAIL_DATA.glob("msg_*.txt"))
    assert len(files) > 40
    dovecot.append("alice", "INBOX", [p.read_bytes() for p in files])
    view = MemoryView()
    view.sync(connector(dovecot, batch_size=7))
    assert len(view.records) + len(view.failures) == len(files)
    assert len(view.records) > 30


# -- snippets equal the file path's ------------------------------------------------
def _varied_mails(n: int, seed: int):
    """Mails that stress the snippet rule: encodings, nesting, long UTF-8 text, HTML only."""
    rng = random.Random(seed)
    words = "Angebot Rechnung Lieferung Grüße Straße Größe naïve café ñandú Ελλάδα 東京 ok the of and".split()

    def text(k):
        lines = []
        for _ in range(k):
            line = " ".join(rng.choice(words) for _ in range(rng.randint(0, 14)))
            lines.append(("> " + line) if rng.random() < 0.2 else line)
        return "\n".join(lines)

    for i in range(n):
        body = text(rng.choice([2, 10, 80, 400]))
        kind = i % 6
        head = (f"From: Kunde {i} <k{i}@kunde.example>\nTo: anna@nordlicht.example\nSubject: Test {i}\n"
                f"Date: Mon, 2 Mar 2026 10:{i % 60:02d}:00 +0100\nMessage-ID: <v{i}.{seed}@kunde.example>\nMIME-Version: 1.0\n")
        if kind == 0:
            raw = head + "Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\n" + body + "\n"
        elif kind == 1:
            qp = quopri.encodestring(body.encode()).decode()
            raw = head + 'Content-Type: multipart/alternative; boundary="alt"\n\n--alt\nContent-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: quoted-printable\n\n' + qp + '\n--alt\nContent-Type: text/html; charset=utf-8\n\n<p>' + body + '</p>\n--alt--\n'
        elif kind == 2:
            b64 = base64.encodebytes(body.encode()).decode()
            raw = head + 'Content-Type: multipart/mixed; boundary="mix"\n\n--mix\nContent-Type: text/plain; charset="utf-8"\nContent-Transfer-Encoding: base64\n\n' + b64 + '--mix\nContent-Type: application/pdf; name="a.pdf"\nContent-Disposition: attachment; filename="a.pdf"\nContent-Transfer-Encoding: base64\n\nJVBERi0xLjQK\n--mix--\n'
        elif kind == 3:
            raw = head + 'Content-Type: text/html; charset=utf-8\n\n<html><head><style>p{}</style></head><body><p>' + body.replace("\n", "<br>") + '</p></body></html>\n'
        elif kind == 4:
            raw = head + 'Content-Type: multipart/mixed; boundary="o"\n\n--o\nContent-Type: multipart/alternative; boundary="i"\n\n--i\nContent-Type: text/html; charset=utf-8\n\n<b>' + body + '</b>\n--i\nContent-Type: text/plain; charset=iso-8859-1\nContent-Transfer-Encoding: quoted-printable\n\n' + quopri.encodestring(body.encode("latin-1", "replace")).decode() + '\n--i--\n--o\nContent-Type: image/png\nContent-Disposition: inline; filename="x.png"\n\nAAAA\n--o--\n'
        else:
            raw = head + "Content-Type: text/plain; charset=windows-1252\n\n" + body.encode("cp1252", "replace").decode("cp1252") + "\n"
            yield raw.encode("cp1252", "replace").replace(b"\n", b"\r\n")
            continue
        yield raw.encode()


def _sample_mails():
    try:
        from bench.mailgen import generate_messages  # written by another engineer
    except ImportError:
        generate_messages = None
    sample = list(_varied_mails(120, seed=7))
    if generate_messages is not None:
        sample += list(itertools.islice(generate_messages(300, 11), 300))
    return sample


def test_snippets_equal_parse_message_of_the_stored_file(dovecot):
    """The store deduplicates IMAP and Maildir copies on the snippet: they must agree."""
    sample = _sample_mails()
    dovecot.append("alice", "INBOX", sample)
    view = MemoryView()
    view.sync(connector(dovecot, batch_size=50))
    assert len(view.records) == len(sample)
    files = dovecot.maildir_files("alice")
    mismatches = []
    for (_scope, lid), rec in view.records.items():
        uid = int(lid.split(":")[1])
        raw = files[uid].read_bytes()
        ref = parse_message(raw, rec.location)
        for field in ("snippet", "has_attachments", "message_id", "subject", "sender", "to", "date", "bulk"):
            if getattr(ref, field) != getattr(rec, field):
                mismatches.append((uid, field, getattr(ref, field), getattr(rec, field)))
        # the original bytes (LF) agree too
        original = sample[uid - 1]
        if b"\r\n" not in original:
            assert parse_message(original, rec.location).snippet == rec.snippet
    assert not mismatches, mismatches[:5]
    assert sum(1 for r in view.records.values() if len(r.snippet) >= 250) > 10


# -- faults -----------------------------------------------------------------------
def _sync_until_done(make_conn, view: MemoryView, attempts: int = 300) -> int:
    """Rerun after every TransientError (as the engine's back-off would); returns the failures."""
    failed = 0
    for _ in range(attempts):
        conn = make_conn()
        try:
            view.sync(conn)
            return failed
        except TransientError:
            failed += 1
        finally:
            conn.close()
    raise AssertionError(f"no complete sync in {attempts} attempts")


def test_connection_cuts_at_random_points_then_clean_rerun_equals_clean_sync(dovecot):
    dovecot.drop("alice", "INBOX", list(_varied_mails(150, seed=3)))
    dovecot.append("alice", "Sent", [mail(i) for i in range(20)])
    clean = MemoryView()
    clean.sync(connector(dovecot, batch_size=20))
    with TcpProxy(("127.0.0.1", dovecot.port)) as proxy:
        for seed in range(3):
            view = MemoryView()
            # a batch of 10 mails with 8 kB text prefixes is up to ~100 kB: some cuts must fall later
            proxy.cut_random(seed=seed, low=1_500, high=300_000)
            failed = _sync_until_done(lambda: connector(dovecot, port=proxy.port, batch_size=10), view)
            assert failed > 0
            proxy.passthrough()
            view.sync(connector(dovecot, port=proxy.port, batch_size=20))
            assert view.snapshot() == clean.snapshot()
            assert not view.removed
    # flag changes and deletions through a flaky line, too
    view = MemoryView()
    view.sync(connector(dovecot, batch_size=20))
    with dovecot.client("alice") as c:
        c.select_folder("INBOX")
        c.add_flags([1, 2, 3], ["\\Flagged"])
        c.delete_messages([4, 5])
        c.expunge()
    clean.sync(connector(dovecot, batch_size=20))
    with TcpProxy(("127.0.0.1", dovecot.port)) as proxy:
        proxy.cut_random(seed=99, low=800, high=3_000)
        _sync_until_done(lambda: connector(dovecot, port=proxy.port, batch_size=20), view)
    assert view.snapshot() == clean.snapshot()


def test_server_killed_mid_sync_then_restarted(dovecot):
    dovecot.drop("alice", "INBOX", list(_varied_mails(200, seed=5)))
    clean = MemoryView()
    clean.sync(connector(dovecot, batch_size=25))
    view = MemoryView()
    pull = connector(dovecot, batch_size=25).pull(None, view)
    view.apply(next(pull))
    view.apply(next(pull))
    dovecot.kill()
    with pytest.raises(TransientError):
        for batch in pull:
            view.apply(batch)
    assert 50 <= len(view.known("INBOX")) < 200
    dovecot.start()  # the same port
    view.sync(connector(dovecot, batch_size=25))
    assert view.snapshot() == clean.snapshot()


def test_proxy_cut_all_during_fetch(dovecot):
    dovecot.drop("alice", "INBOX", list(_varied_mails(100, seed=8)))
    with TcpProxy(("127.0.0.1", dovecot.port)) as proxy:
        view = MemoryView()
        pull = connector(dovecot, port=proxy.port, batch_size=10).pull(None, view)
        view.apply(next(pull))
        proxy.cut_all()
        with pytest.raises(TransientError):
            for batch in pull:
                view.apply(batch)
        view.sync(connector(dovecot, port=proxy.port, batch_size=10))
    assert len(view.known("INBOX")) == 100


# -- IDLE -------------------------------------------------------------------------
def test_watch_returns_true_after_an_append(dovecot):
    dovecot.append("alice", "INBOX", mail(1))
    view = MemoryView()
    conn = connector(dovecot)
    view.sync(conn)
    assert conn.watch(view.cursor, view, timeout=1) is False  # nothing happened
    timer = threading.Timer(1.0, lambda: dovecot.append("alice", "INBOX", mail(2)))
    timer.start()
    try:
        assert conn.watch(view.cursor, view, timeout=30) is True
    finally:
        timer.join()
    # the change is visible to the next pull on the same connection
    assert [r.message_id for b in view.sync(conn) for r in b.records] == ["m2@kunde.example"]
    # a stale cursor is reported without waiting
    dovecot.append("alice", "INBOX", mail(3))
    assert conn.watch(view.cursor, view, timeout=30) is True
    conn.close()


def test_parse_error_type_is_shared():
    with pytest.raises(MailParseError):
        parse_message(b"   ", Location("x", "1"))
