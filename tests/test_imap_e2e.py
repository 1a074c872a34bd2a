"""IMAP sources through the whole `crm` command: engine, store, linking."""

from __future__ import annotations

import os

from tests.conftest import Crm, make_mail, write_config
from tests.imap_server import dovecot  # noqa: F401  (fixture)

CUSTOMERS = (("Kunde GmbH", ["kunde.example"]),)


def imap_source(server, user: str, **extra) -> dict:
    env = f"CRM_E2E_IMAP_{user.upper()}"
    os.environ[env] = server.users[user]
    return {"type": "imap", "host": "127.0.0.1", "port": server.port, "tls": "none", "allow_plaintext": True,
            "username": user, "password_env": env, "owner": [f"{user}@nordlicht.example"], **extra}


def counts(crm: Crm) -> dict:
    return crm.json("status")["counts"]


def test_same_mail_in_two_mailboxes_is_one_interaction_and_rerun_adds_nothing(tmp_path, dovecot):
    raw = make_mail(sender="kim@kunde.example", to="alice@nordlicht.example, bob@nordlicht.example",
                    message_id="both@x", subject="Angebot", body="Guten Tag, bitte ein Angebot.")
    dovecot.append("alice", "INBOX", raw)
    dovecot.append("bob", "INBOX", raw)
    dovecot.append("bob", "Sent", make_mail(sender="bob@nordlicht.example", to="kim@kunde.example",
                                            message_id="reply@x", subject="Re: Angebot", in_reply_to="both@x"))
    crm = Crm(write_config(tmp_path / "crm.toml", customers=CUSTOMERS, internal=("nordlicht.example",), sources={
        "alice": imap_source(dovecot, "alice"), "bob": imap_source(dovecot, "bob")}))
    crm("sync")
    rows = crm.json("explain", "both@x")
    assert len(rows) == 1
    assert sorted(p["source"] for p in rows[0]["seen_in"]) == ["alice", "bob"]
    assert sorted(i["subject"] for i in crm.json("timeline", "Kunde GmbH")) == ["Angebot", "Re: Angebot"]
    before = counts(crm)
    assert before["mails"] == 2
    crm("sync")
    assert counts(crm) == before
    # nothing was marked read on the server
    with dovecot.client("alice") as c:
        c.select_folder("INBOX", readonly=True)
        assert all(b"\\Seen" not in d[b"FLAGS"] for d in c.fetch(c.search("ALL"), ["FLAGS"]).values())


def test_log_folder_logs_unknown_sender_and_private_is_never_logged(tmp_path, dovecot):
    dovecot.append("alice", "CRM.Log", make_mail(sender="fremd@gmail.com", to="alice@nordlicht.example",
                                                 message_id="log@x", subject="bitte loggen"))
    dovecot.append("alice", "Privat", make_mail(sender="kim@kunde.example", message_id="priv@x", subject="privat"))
    dovecot.append("alice", "INBOX", make_mail(sender="kim@kunde.example", message_id="kw@x", subject="geheim"),
                   flags=["$Private"])
    dovecot.append("alice", "INBOX", make_mail(sender="kim@kunde.example", message_id="open@x", subject="offen"))
    crm = Crm(write_config(tmp_path / "crm.toml", customers=CUSTOMERS, internal=("nordlicht.example",), sources={
        "alice": imap_source(dovecot, "alice", log_folder="CRM/Log", private_folder="Privat")}))
    crm("sync")
    logged = crm.json("explain", "log@x")[0]
    assert logged["logged"] and [(link["target"], link["reason"]) for link in logged["links"]] == [("contact", "log folder")]
    assert "private" in crm.json("explain", "priv@x")[0]["reason"]
    assert "private" in crm.json("explain", "kw@x")[0]["reason"]
    assert [i["subject"] for i in crm.json("timeline", "Kunde GmbH")] == ["offen"]
    assert crm.json("search", "privat") == [] and crm.json("search", "geheim") == []
    # marking a logged mail private later takes it out of the CRM
    with dovecot.client("alice") as c:
        c.select_folder("INBOX")
        uid = c.search(["HEADER", "Message-ID", "open@x"])[0]
        c.add_flags([uid], ["$Private"])
    crm("sync")
    assert crm.json("timeline", "Kunde GmbH") == []  # the CONDSTORE flag change reached the store


def test_uidvalidity_reset_makes_no_duplicates(tmp_path, dovecot):
    dovecot.append("alice", "INBOX", [make_mail(sender="kim@kunde.example", message_id=f"u{i}@x", subject=f"s{i}")
                                      for i in range(5)])
    crm = Crm(write_config(tmp_path / "crm.toml", customers=CUSTOMERS, internal=("nordlicht.example",), sources={
        "alice": imap_source(dovecot, "alice")}))
    crm("sync")
    before = counts(crm)
    dovecot.set_uidvalidity("alice", "INBOX")
    crm("sync")
    assert counts(crm) == before
    items = crm.json("timeline", "Kunde GmbH")
    assert sorted(i["subject"] for i in items) == [f"s{i}" for i in range(5)]
    assert all(not i["deleted"] for i in items)


def _wait_for(predicate, seconds: float = 30.0) -> bool:
    import time

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.25)
    return False


def test_sync_watch_logs_new_mail_within_seconds_and_survives_a_server_restart(tmp_path, dovecot):
    """`crm sync --watch` as its own process: IDLE, then reconnect with back-off."""
    import signal
    import subprocess
    import sys
    from pathlib import Path

    from crm_bridge.crm_core.store import Store

    config = write_config(tmp_path / "crm.toml", customers=CUSTOMERS, internal=("nordlicht.example",),
                          sources={"alice": imap_source(dovecot, "alice", folders=["INBOX"])})
    repo = Path(__file__).resolve().parents[1]
    proc = subprocess.Popen([sys.executable, "-m", "crm_bridge.cli", "--config", str(config), "sync", "--watch", "--interval", "120"],
                            cwd=repo, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def stored(message_id: str) -> bool:
        if not (tmp_path / "crm.db").exists():
            return False
        store = Store(tmp_path / "crm.db")
        try:
            return store.conn.execute("SELECT 1 FROM interactions WHERE message_id=?", (message_id,)).fetchone() is not None
        finally:
            store.close()

    reconnected = False
    try:
        assert _wait_for(lambda: (tmp_path / "crm.db").exists() and Store(tmp_path / "crm.db").status() != [])
        dovecot.append("alice", "INBOX", make_mail(sender="kim@kunde.example", message_id="idle1@x", subject="neu"))
        assert _wait_for(lambda: stored("idle1@x"), 20), "a new mail did not arrive through IDLE"
        # the server goes away and comes back: the watcher reconnects by itself
        dovecot.stop()
        dovecot.start()
        dovecot.append("alice", "INBOX", make_mail(sender="kim@kunde.example", message_id="idle2@x", subject="danach"))
        reconnected = _wait_for(lambda: stored("idle2@x"), 60)
        assert proc.poll() is None
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            out, err = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
    assert reconnected, f"no reconnect after the server restart: {out}\n{err}"
    assert "Traceback" not in err, err


def test_a_failing_source_is_one_status_line_and_the_others_still_sync(tmp_path, dovecot):
    from tests.conftest import Maildir

    box = Maildir(tmp_path / "mail")
    box.add(make_mail(sender="kim@kunde.example", message_id="local@x", subject="lokal"))
    os.environ["CRM_E2E_WRONG_PW"] = "not-the-password"
    bad = imap_source(dovecot, "alice")
    bad["password_env"] = "CRM_E2E_WRONG_PW"
    down = imap_source(dovecot, "alice", port=1, timeout=5)  # nothing listens on port 1
    crm = Crm(write_config(tmp_path / "crm.toml", customers=CUSTOMERS, internal=("nordlicht.example",), sources={
        "wrong-password": bad, "server-down": down,
        "local": {"type": "maildir", "path": str(box.root), "owner": ["alice@nordlicht.example"]}}))
    result = crm("sync", ok=False)
    assert result.exit_code == 1
    status = {s["name"]: s for s in crm.json("status")["sources"]}
    assert status["local"]["last_status"] == "ok" and status["local"]["items"] == 1
    assert status["wrong-password"]["last_status"] == "error"
    assert "authentication failed" in status["wrong-password"]["last_error"]
    assert status["server-down"]["last_status"] == "error"
    assert "\n" not in status["server-down"]["last_error"]
    text = crm("status").output
    assert "not-the-password" not in text + result.output
    assert [line for line in text.splitlines() if line.startswith("wrong-password")]


def test_start_up_imports_only_the_connectors_the_config_uses(tmp_path):
    """A Maildir-only config never imports imapclient, caldav or exchangelib."""
    import subprocess
    import sys
    from pathlib import Path

    from tests.conftest import Maildir

    Maildir(tmp_path / "mail")
    config = write_config(tmp_path / "crm.toml", sources={"local": {"type": "maildir", "path": str(tmp_path / "mail")}})
    probe = (
        "import sys, cli\n"
        "try:\n"
        f"    cli.main(['--config', {str(config)!r}, 'sync'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "print(sorted(m for m in ('imapclient', 'caldav', 'exchangelib', 'niquests', 'icalendar', 'vobject') if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], cwd=Path(__file__).resolve().parents[1],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]", done.stdout
