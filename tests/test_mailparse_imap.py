"""The field cases of tests/test_mailparse_field.py through IMAP (Dovecot): the prefix IMAP fetches
must give what the file path gives, and what `crm` shows must be right on both."""

from __future__ import annotations

from crm_bridge.connectors.mailparse import parse_message
from tests.imap_server import dovecot  # noqa: F401  (fixture)
from tests.test_imap import MemoryView, connector
from tests.test_mailparse_field import CSS, OWN, QUOTED, REPLIES, SIGNOFF, _html, _mail, _padded_qp


def _by_mid(view: MemoryView) -> dict:
    return {r.message_id: r for r in view.records.values()}


def test_imap_prefix_gives_the_file_snippet_for_field_mails(dovecot):
    text = OWN + " " + QUOTED + " " + OWN + " " + QUOTED
    inline = ("--b\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Disposition: inline; filename=\"message.txt\""
              "\r\n\r\n" + OWN + "\r\n--b--\r\n")
    mails = {
        "html-20k@x": _mail(_html(20_000), "text/html; charset=utf-8", mid="html-20k@x"),
        "html-40k@x": _mail(_html(40_000), "text/html; charset=utf-8", mid="html-40k@x"),
        "html-20k-qp@x": _mail(_html(20_000).replace("=", "=3D").replace(">", ">=\n"), "text/html; charset=utf-8",
                               cte="quoted-printable", mid="html-20k-qp@x"),
        "qp-padded@x": _mail(_padded_qp(text), cte="quoted-printable", mid="qp-padded@x"),
        "inline-named@x": _mail(inline, 'multipart/mixed; boundary="b"', mid="inline-named@x"),
        **{f"{p}@x": _mail(body, mid=f"{p}@x") for p, body in REPLIES.items()},
    }
    want = {"html-20k@x": OWN, "html-40k@x": "", "html-20k-qp@x": OWN, "qp-padded@x": text[:300],
            "inline-named@x": OWN, **{f"{p}@x": OWN + SIGNOFF.get(p, "") for p in REPLIES}}
    dovecot.append("alice", "INBOX", list(mails.values()))
    view = MemoryView()
    view.sync(connector(dovecot, batch_size=10))
    got = _by_mid(view)
    assert {m: r.snippet for m, r in got.items()} == want
    assert not any(CSS.search(r.snippet) for r in got.values())
    files = dovecot.maildir_files("alice")
    for (_scope, lid), rec in view.records.items():  # the stored files (LF) read by the file path agree
        assert parse_message(files[int(lid.split(":")[1])].read_bytes(), rec.location).snippet == rec.snippet


def test_cr_only_mail_in_the_server_maildir_is_read(dovecot):
    """An old Mac export copied into the server's Maildir: the server sees one long header line."""
    raw = _mail("Hallo Anna,\n\ndas Angebot passt so.\nGruss Kim\n", mid="mac@x", nl="\r",
                headers="Received: from old-mac.example by mx.example; Tue, 12 Mar 2024 10:15:00 +0100\n")
    dovecot.drop("alice", "INBOX", [raw, _mail("Andere Zeilenenden.\n", mid="lf@x")])
    view = MemoryView()
    view.sync(connector(dovecot))
    assert not view.failures
    rec = _by_mid(view)["mac@x"]
    assert rec.snippet == "Hallo Anna, das Angebot passt so. Gruss Kim"
    assert rec.sender is not None and rec.sender.email == "kim@kunde.example"
    assert [a.email for a in rec.to] == ["anna@nordlicht.example"] and rec.subject == "Termin"
    assert rec.date is not None and rec.date.year == 2024
    assert _by_mid(view)["lf@x"].snippet == "Andere Zeilenenden."
    assert rec == parse_message(raw, rec.location, rec.flags, rec.size)
