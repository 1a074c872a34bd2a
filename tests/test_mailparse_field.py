"""Mail as it comes from the field (issue 8, "Lost or wrong data"), through Maildir and .eml sources.

Each case is a mail written the way a real mail program or a broken
export writes it; the assertions are on what `crm` then shows.
"""

from __future__ import annotations

import re
import sqlite3

import pytest

from crm_bridge.connectors.mailparse import parse_message, text_snippet
from crm_bridge.crm_core.records import Location
from crm_bridge.crm_core.store import Store, utc_iso
from tests.conftest import Maildir, make_mail

OWN = "Vielen Dank, der Termin am Donnerstag passt uns gut. Bitte bringen Sie die Zeichnungen mit."
QUOTED = "Sehr geehrte Frau Weber, koennen wir den Termin fuer die Begehung auf Donnerstag legen?"

# realistic reply bodies: (mail program, body); each answers OWN above a quote of QUOTED
REPLIES = {
    "outlook-en": f"""{OWN}

Best regards
Kim

-----Original Message-----
From: Anna Weber <anna@nordlicht.example>
Sent: Tuesday, March 12, 2024 10:15 AM
To: Kim Kunde <kim@kunde.example>
Subject: Termin

{QUOTED}
""",
    "outlook-de": f"""{OWN}

Mit freundlichen Grüßen
Kim Kunde

-----Ursprüngliche Nachricht-----
Von: Anna Weber <anna@nordlicht.example>
Gesendet: Dienstag, 12. März 2024 10:15
An: Kim Kunde <kim@kunde.example>
Betreff: Termin

{QUOTED}
""",
    "outlook-365-en": f"""{OWN}

Kim

________________________________
From: Anna Weber <anna@nordlicht.example>
Sent: Tuesday, March 12, 2024 10:15
To: Kim Kunde <kim@kunde.example>
Subject: Termin

{QUOTED}
""",
    "outlook-365-de": f"""{OWN}

________________________________
Von: Anna Weber <anna@nordlicht.example>
Gesendet: Dienstag, 12. März 2024 10:15
An: Kim Kunde <kim@kunde.example>
Betreff: Termin

{QUOTED}
""",
    "outlook-mac-de": f"""{OWN}

Von: Anna Weber <anna@nordlicht.example>
Datum: Dienstag, 12. März 2024 um 10:15
An: Kim Kunde <kim@kunde.example>
Betreff: Termin

{QUOTED}
""",
    "gmail-html-of-outlook": f"""{OWN}

*From:* Anna Weber <anna@nordlicht.example>
*Sent:* Tuesday, March 12, 2024 10:15 AM
*To:* Kim Kunde <kim@kunde.example>
*Subject:* Termin

{QUOTED}
""",
    "thunderbird-en": f"""{OWN}

On 12.03.2024 10:15, Anna Weber wrote:
> {QUOTED}
>
> Anna
""",
    "thunderbird-de": f"""{OWN}

Am 12.03.24 um 10:15 schrieb Anna Weber:
> {QUOTED}
""",
    "apple-mail-en": f"""{OWN}

> On 12 Mar 2024, at 10:15, Anna Weber <anna@nordlicht.example> wrote:
>
> {QUOTED}
""",
    "apple-mail-en-unquoted": f"""{OWN}

Sent from my iPhone

On 12 Mar 2024, at 10:15, Anna Weber <anna@nordlicht.example> wrote:

{QUOTED}
""",
    "apple-mail-de": f"""{OWN}

Am 12.03.2024 um 10:15 schrieb Anna Weber <anna@nordlicht.example>:

{QUOTED}
""",
    "gmail-en": f"""{OWN}

On Tue, Mar 12, 2024 at 10:15 AM Anna Weber <
anna@nordlicht.example> wrote:

> {QUOTED}
>
""",
    "gmail-de": f"""{OWN}

Am Di., 12. März 2024 um 10:15 Uhr schrieb Anna Weber <
anna@nordlicht.example>:

> {QUOTED}
""",
    "quote-block": f"""{OWN}

> {QUOTED}
> Anna
""",
    "lotus-notes-de": f"""{OWN}

Anna Weber <anna@nordlicht.example> schrieb am 12.03.2024 10:15:05:

> {QUOTED}
""",
}
SIGNOFF = {"outlook-en": " Best regards Kim", "outlook-de": " Mit freundlichen Grüßen Kim Kunde",
           "outlook-365-en": " Kim", "apple-mail-en-unquoted": " Sent from my iPhone"}


@pytest.mark.parametrize("program", sorted(REPLIES))
def test_reply_headers_and_quotes_are_not_in_the_snippet(program):
    body = REPLIES[program]
    assert text_snippet(body.encode(), "8bit", "utf-8", "plain") == OWN + SIGNOFF.get(program, "")
    # the same with CRLF line ends, and behind 2 KB of own text (the rule looks at the head first)
    long_own = ("Zeile eins der Antwort. " * 4 + "\n") * 20
    snippet = text_snippet((long_own + body).replace("\n", "\r\n").encode(), "8bit", "utf-8", "plain")
    assert snippet == " ".join(long_own.split())[:300]


def test_inline_answers_below_a_quote_are_kept_and_a_forward_keeps_its_text():
    bottom = f"On Tue, Mar 12, 2024 at 10:15 AM Anna Weber <anna@nordlicht.example> wrote:\n> {QUOTED}\n\n{OWN}\n"
    assert text_snippet(bottom.encode(), "8bit", "utf-8", "plain") == OWN
    forward = ("-----Original Message-----\nFrom: Anna Weber <anna@nordlicht.example>\n"
               "Sent: Tuesday, March 12, 2024 10:15 AM\nTo: Kim <kim@kunde.example>\nSubject: Termin\n\n" + QUOTED + "\n")
    assert text_snippet(forward.encode(), "8bit", "utf-8", "plain") == QUOTED  # nothing of its own: the forwarded text
    # ordinary sentences that look a little like reply headers stay
    plain = "Am Montag komme ich vorbei.\nOn site we need two people.\nVon: Lager Nord\nbis: Freitag\n"
    assert text_snippet(plain.encode(), "8bit", "utf-8", "plain") == " ".join(plain.split())


def _html(head_bytes: int, text: str = OWN) -> str:
    rules = "".join(f".MsoRule{i} {{margin:0cm; font-family:\"Calibri\",sans-serif; color:#1F497D;}}\n"
                    for i in range(head_bytes // 70 + 1))
    return ("<html xmlns:o=\"urn:schemas-microsoft-com:office:office\"><head>\n<meta http-equiv=\"Content-Type\" "
            "content=\"text/html; charset=utf-8\">\n<style><!--\n/* Font Definitions */\n" + rules[:head_bytes]
            + "--></style><!--[if gte mso 9]><xml>\n<o:shapedefaults v:ext=\"edit\" spidmax=\"1026\" />\n</xml><![endif]-->"
            "</head><body lang=\"DE\"><div class=\"WordSection1\"><p class=\"MsoNormal\">" + text
            + "<o:p></o:p></p></div></body></html>\n")


def _mail(body: bytes | str, ctype: str = "text/plain; charset=utf-8", cte: str = "8bit", headers: str = "",
          mid: str = "m@kunde.example", subject: str = "Termin", nl: str = "\n",
          date: str = "Tue, 12 Mar 2024 10:15:00 +0100") -> bytes:
    if isinstance(body, str):
        body = body.encode()
    head = (f"From: Kim Kunde <kim@kunde.example>\nTo: Anna Weber <anna@nordlicht.example>\nSubject: {subject}\n"
            f"Date: {date}\nMessage-ID: <{mid}>\n{headers}MIME-Version: 1.0\n"
            f"Content-Type: {ctype}\nContent-Transfer-Encoding: {cte}\n\n")
    return (head.encode() + body).replace(b"\n", nl.encode())


def _timeline(crm) -> dict[str, dict]:
    return {i["message_id"]: i for i in crm.json("timeline", "Kunde GmbH", "--limit", "0")}


CSS = re.compile(r"Mso|margin|font-family|\{|\}|tracking")


def test_html_only_mail_never_gives_css_or_script_as_snippet(crm_env, maildir: Maildir):
    maildir.add(_mail(_html(6_000), "text/html; charset=utf-8", mid="html-6k@x"))
    maildir.add(_mail(_html(20_000), "text/html; charset=utf-8", mid="html-20k@x"))
    maildir.add(_mail(_html(40_000), "text/html; charset=utf-8", mid="html-40k@x"))
    script = "<html><head><script>var tracking = {id: 1};" + "x = 1;\n" * 6000 + "</script></head><body>Hallo</body></html>"
    maildir.add(_mail(script, "text/html; charset=utf-8", mid="html-script@x"))
    crm = crm_env()
    crm("sync")
    items = _timeline(crm)
    assert not any(CSS.search(i["snippet"] or "") for i in items.values())
    assert items["html-6k@x"]["snippet"] == OWN
    assert items["html-20k@x"]["snippet"] == OWN  # the HTML prefix reaches past a 20 KB style sheet
    assert items["html-40k@x"]["snippet"] == ""  # the prefix ends inside the style sheet: no snippet rather than CSS
    assert items["html-script@x"]["snippet"] == ""


def _padded_qp(text: str) -> str:
    """Quoted-printable as some gateways write it: =20 padding, lines padded with blanks, blanks after soft breaks."""
    words = text.split(" ")
    lines = ["=20" * 25 + "=", "=20" * 25 + "="] * 30
    lines += [w + " " * 70 + "=" + " " * 8 for w in words[:-1]] + [words[-1] + " " * 60]
    return "\n".join(lines) + "\n"


def test_quoted_printable_padded_with_blanks_gives_the_whole_snippet(crm_env, maildir: Maildir):
    text = OWN + " " + QUOTED + " " + OWN + " " + QUOTED
    maildir.add(_mail(_padded_qp(text), cte="quoted-printable", mid="qp-padded@x"))
    crm = crm_env()
    crm("sync")
    assert _timeline(crm)["qp-padded@x"]["snippet"] == text[:300]


def test_quoting_of_every_mail_program_is_left_out_through_a_maildir(crm_env, maildir: Maildir):
    for program, body in REPLIES.items():
        maildir.add(_mail(body, mid=f"{program}@x"))
    crm = crm_env()
    crm("sync")
    items = _timeline(crm)
    for program in REPLIES:
        assert items[f"{program}@x"]["snippet"] == OWN + SIGNOFF.get(program, ""), program


def test_inline_text_part_with_a_file_name_gives_the_snippet(crm_env, maildir: Maildir):
    inline = ("--b\nContent-Type: text/plain; charset=utf-8\nContent-Disposition: inline; filename=\"message.txt\"\n\n"
              + OWN + "\n--b\nContent-Type: application/pdf\nContent-Disposition: attachment; filename=\"a.pdf\"\n\n"
              "JVBERi0xLjQK\n--b--\n")
    maildir.add(_mail(inline, 'multipart/mixed; boundary="b"', mid="inline-named@x"))
    crm = crm_env()
    crm("sync")
    assert _timeline(crm)["inline-named@x"]["snippet"] == OWN


def test_years_are_read_like_mail_programs_and_stored_as_iso_8601(crm_env, maildir: Maildir):
    cases = {  # Date header -> the stored UTC time
        "Sat, 30 May 0001 21:10:06 +0000": "2001-05-30T21:10:06Z",
        "Wed, 30 May 01 21:10:06 +0000": "2001-05-30T21:10:06Z",
        "30 May 49 08:00:00 +0000": "2049-05-30T08:00:00Z",
        "30 May 50 08:00:00 +0000": "1950-05-30T08:00:00Z",
        "Thu, 30 May 60 10:00:00 EST": "1960-05-30T15:00:00Z",  # email.utils alone says 2060
        "Tue, 30 May 101 21:10:06 GMT": "2001-05-30T21:10:06Z",  # tm_year written as it is
        "Fri, 12 Mar 1999 10:15:00 +0100": "1999-03-12T09:15:00Z",
    }
    for n, date in enumerate(cases):
        maildir.add(_mail("Text.\n", mid=f"d{n}@x", date=date))
    crm = crm_env()
    crm("sync")
    items = crm.json("timeline", "Kunde GmbH", "--limit", "0")
    stored = {i["message_id"]: i["date"] for i in items}
    assert stored == {f"d{n}@x": want for n, want in enumerate(cases.values())}
    dates = [i["date"] for i in items]
    assert dates == sorted(dates, reverse=True)  # newest first: every date sorts as text


def test_utc_iso_pads_the_year():
    from datetime import date, datetime, timezone

    assert utc_iso(datetime(1, 5, 30, 21, 10, 6, tzinfo=timezone.utc)) == "0001-05-30T21:10:06Z"
    assert utc_iso(date(999, 1, 2)) == "0999-01-02T00:00:00Z"
    assert utc_iso(datetime(2026, 3, 1, 9, 0, tzinfo=timezone.utc)) == "2026-03-01T09:00:00Z"


def test_store_of_version_1_gets_warnings_and_iso_dates(tmp_path):
    path = tmp_path / "old.db"
    Store(path).close()
    db = sqlite3.connect(path)
    db.execute("ALTER TABLE interactions DROP COLUMN warnings")
    rows = [("mail", "k1", "1-05-30T21:10:06Z"), ("mail", "k2", "98-01-02T00:00:00Z"),
            ("appointment", "k3", "999-01-02T00:00:00Z"), ("mail", "k4", "2026-03-01T09:00:00Z")]
    db.executemany("INSERT INTO interactions(kind, dedup_key, date, created_at, updated_at) VALUES (?, ?, ?, '', '')", rows)
    db.execute("UPDATE meta SET value='1' WHERE key='schema_version'")
    db.commit()
    db.close()
    for _ in range(2):  # and again: nothing changes
        store = Store(path)
        got = dict(store.conn.execute("SELECT dedup_key, date FROM interactions"))
        assert got == {"k1": "2001-05-30T21:10:06Z", "k2": "1998-01-02T00:00:00Z", "k3": "0999-01-02T00:00:00Z",
                       "k4": "2026-03-01T09:00:00Z"}
        assert store.conn.execute("SELECT warnings FROM interactions").fetchall() == [("",)] * 4
        store.close()


def test_cr_only_mail_from_an_old_mac_is_read(crm_env, maildir: Maildir, tmp_path):
    raw = _mail("Hallo Anna,\n\ndas Angebot passt so.\nGruss Kim\n", mid="mac@x", nl="\r")
    assert b"\n" not in raw
    maildir.add(raw)
    eml = tmp_path / "eml"
    eml.mkdir()
    (eml / "old.eml").write_bytes(_mail("Zweite Nachricht vom Mac.\n", mid="mac-eml@x", nl="\r"))
    crm = crm_env(sources={
        "anna": {"type": "maildir", "path": str(maildir.root), "owner": ["anna@nordlicht.example"]},
        "archive": {"type": "eml", "path": str(eml), "owner": ["anna@nordlicht.example"]}})
    crm("sync")
    items = _timeline(crm)
    assert items["mac@x"]["snippet"] == "Hallo Anna, das Angebot passt so. Gruss Kim"
    assert items["mac@x"]["sender"] == "kim@kunde.example" and items["mac@x"]["recipients"] == "anna@nordlicht.example"
    assert items["mac@x"]["subject"] == "Termin"
    assert items["mac-eml@x"]["snippet"] == "Zweite Nachricht vom Mac."


def test_header_larger_than_the_read_limit_keeps_its_fields_and_says_so(crm_env, maildir: Maildir):
    received = "".join(f"Received: from relay{i}.example by mx.example; Tue, 12 Mar 2024 10:15:00 +0100\n"
                       for i in range(20_000))
    raw = _mail("Text nach dem Kopf.\n", mid="big-header@x", headers=received + "Cc: lost@kunde.example\n")
    assert len(raw) > 1024 * 1024
    maildir.add(raw)
    crm = crm_env()
    crm("sync")
    big = crm.json("explain", "big-header@x")[0]
    assert big["logged"] and big["subject"] == "Termin"
    assert len(big["warnings"]) == 1
    assert "header larger than 1024 KiB: read up to the Received field" in big["warnings"][0]
    assert "warning: header larger than 1024 KiB" in crm("explain", "big-header@x").stdout


def test_address_list_too_deep_for_the_parser_keeps_its_addresses(crm_env, maildir: Maildir):
    nested = "(" * 3000 + "x" + ")" * 3000
    maildir.add(make_mail(message_id="deep@x", to=f"Anna <anna@nordlicht.example>, {nested} Bob <bob@kunde.example>",
                          subject="Verschachtelt"))
    crm = crm_env()
    crm("sync")
    assert "bob@kunde.example" in _timeline(crm)["deep@x"]["recipients"]
    deep = crm.json("explain", "deep@x")[0]
    assert any("To field could not be parsed (RecursionError)" in w for w in deep["warnings"])


def test_message_id_with_spaces_is_threaded(crm_env, maildir: Maildir):
    maildir.add(_mail("Frage.\n", mid="1234 5678@kunde.example", subject="Frage"))
    maildir.add(make_mail(sender="Anna <anna@nordlicht.example>", to="kim@kunde.example", subject="Re: Frage",
                          message_id="answer@x", extra_headers=("In-Reply-To: <1234\r\n 5678@kunde.example>",)))
    crm = crm_env()
    crm("sync")
    store = Store(crm.config.parent / "crm.db")
    threads = dict(store.conn.execute("SELECT message_id, thread_id FROM interactions"))
    store.close()
    assert threads["12345678@kunde.example"] == threads["answer@x"] is not None
    spaced = crm.json("explain", "<1234 5678@kunde.example>")[0]
    assert spaced["logged"] and any("Message-ID contained spaces" in w for w in spaced["warnings"])
    assert any("In-Reply-To contained spaces" in w for w in crm.json("explain", "answer@x")[0]["warnings"])


def test_mixed_utf8_header_and_nul_bytes(crm_env, maildir: Maildir):
    subject = "Grüße aus Lindenau".encode() + b" \xe4rger" + b"\x00 mit NUL"
    raw = _mail("Text mit\x00 NUL und Grüßen.\n", mid="mixed@x").replace(b"Subject: Termin", b"Subject: " + subject)
    raw = raw.replace(b"From: Kim Kunde", "From: Kim Kündé\x00".encode())
    maildir.add(raw)
    crm = crm_env()
    crm("sync")
    item = _timeline(crm)["mixed@x"]
    assert item["subject"] == "Grüße aus Lindenau ärger mit NUL"
    assert item["snippet"] == "Text mit NUL und Grüßen."
    store = Store(crm.config.parent / "crm.db")
    assert store.conn.execute("SELECT name FROM participants WHERE email='kim@kunde.example'").fetchone()[0] == "Kim Kündé"
    assert not store.conn.execute("SELECT COUNT(*) FROM interactions WHERE instr(subject, char(0)) OR instr(snippet, char(0))"
                                  ).fetchone()[0]
    store.close()


def test_file_and_parse_message_agree_on_a_cr_only_mail():
    raw = _mail("Alte Nachricht.\n", mid="cr@x", nl="\r")
    rec = parse_message(raw, Location("INBOX", "1"))
    assert rec.snippet == "Alte Nachricht." and rec.message_id == "cr@x" and rec.to[0].email == "anna@nordlicht.example"


def test_html_replies_of_outlook_and_gmail_leave_the_quoted_message_out():
    outlook = (_html(3_000, OWN).replace("</div></body>", "")
               + '<div style="border:none;border-top:solid #E1E1E1 1.0pt;padding:3.0pt 0cm 0cm 0cm">'
               '<p class="MsoNormal"><b>From:</b> Anna Weber &lt;anna@nordlicht.example&gt;<br><b>Sent:</b> '
               'Tuesday, March 12, 2024 10:15 AM<br><b>To:</b> Kim Kunde &lt;kim@kunde.example&gt;<br><b>Subject:</b> '
               f'Termin<o:p></o:p></p></div><p class="MsoNormal">{QUOTED}<o:p></o:p></p></div></body></html>')
    gmail = (f'<div dir="ltr">{OWN}</div><br><div class="gmail_quote"><div dir="ltr" class="gmail_attr">On Tue, Mar 12, '
             '2024 at 10:15\u202fAM Anna Weber &lt;<a href="mailto:anna@nordlicht.example">anna@nordlicht.example</a>'
             f'&gt; wrote:<br></div><blockquote class="gmail_quote" style="margin:0px 0px 0px 0.8ex">{QUOTED}'
             '</blockquote></div>')
    for html in (outlook, gmail):
        assert text_snippet(html.encode(), "8bit", "utf-8", "html") == OWN
