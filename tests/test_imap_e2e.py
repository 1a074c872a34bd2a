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
