"""mbox files as real programs write them: the mailbox module, Thunderbird,
Gmail Takeout, mutt, procmail's formail, mboxrd and mboxcl2 (Content-Length)."""

from __future__ import annotations

import mailbox
import os
import subprocess
from pathlib import Path
from typing import Mapping

import pytest

from crm_bridge.connectors.files import MboxConnector, _mbox_messages, open_regular
from crm_bridge.connectors.mailparse import MAX_MESSAGE_BYTES
from crm_bridge.crm_core.records import MailRecord
from tests.conftest import make_mail


class EmptyView:
    """A store that knows nothing yet (the SourceView of a first run)."""

    def known(self, scope: str) -> Mapping[str, str]:
        return {}

    def scopes(self) -> list[str]:
        return []


def messages(path: Path) -> list[bytes]:
    with open_regular(path) as fh:
        return [raw for _offset, raw, _size in _mbox_messages(fh, 0)]


def records(path: Path) -> list[MailRecord]:
    connector = MboxConnector("arch", {"type": "mbox", "path": str(path)})
    out = []
    for batch in connector.pull(None, EmptyView()):
        assert not batch.failures, batch.failures
        out.extend(r for r in batch.records if isinstance(r, MailRecord))
    return out


def subjects(path: Path) -> list[str]:
    return [r.subject for r in records(path)]


def mailbox_subjects(path: Path) -> list[str]:
    """What Python's mailbox module reads (the reference for mboxo/mboxrd files)."""
    return [str(m["subject"]) for m in mailbox.mbox(path)]


def mail(n: int, body: str = "Guten Tag.", crlf: bool = False, **kw) -> bytes:
    raw = make_mail(sender="kim@kunde.example", subject=f"Mail {n}", message_id=f"m{n}@x", body=body, **kw)
    return raw if crlf else raw.replace(b"\r\n", b"\n")


def test_python_mailbox_module_file(tmp_path):
    path = tmp_path / "py.mbox"
    box = mailbox.mbox(path)
    box.add(mail(1, body="From the start\nline"))  # the module quotes it as >From
    box.add(mail(2, body="Zeile\n\nFrom here on it is text\n>From quoted"))
    box.add(mail(3, crlf=True))
    box.flush()
    box.close()
    assert subjects(path) == ["Mail 1", "Mail 2", "Mail 3"] == mailbox_subjects(path)
    first = records(path)[0]
    assert first.snippet == "From the start line"


def test_gmail_takeout_messages_back_to_back(tmp_path):
    """Takeout writes the next postmark right after the last body line, no blank line between."""
    path = tmp_path / "All mail Including Spam and Trash.mbox"
    parts = []
    for n in range(1, 5):
        parts.append(f"From 178403259140528387{n}@xxx Thu Dec 21 16:29:2{n} +0000 2023\n".encode())
        parts.append(b"X-GM-THRID: 1784032591405283870\nX-Gmail-Labels: Inbox,Opened\n")
        parts.append(mail(n, body=f"Text {n}\nFrom the second line, unquoted").rstrip(b"\n") + b"\n")
    path.write_bytes(b"".join(parts))
    # (the mailbox module would also split at the unquoted body line; mutt, like this reader, does not:
    # without a blank line before it only a postmark with a date starts a message)
    assert subjects(path) == ["Mail 1", "Mail 2", "Mail 3", "Mail 4"]
    assert [r.snippet for r in records(path)][1] == "Text 2 From the second line, unquoted"


def test_thunderbird_mbox(tmp_path):
    path = tmp_path / "Inbox"
    parts = []
    for n in range(1, 4):
        parts.append(b"From - Mon Jan 01 00:00:0%d 2001\n" % n)
        parts.append(b"X-Mozilla-Status: 0001\nX-Mozilla-Status2: 00000000\nX-Mozilla-Keys:                 \n")
        parts.append(mail(n, body=">From an escaped line\nEnde"))
        if n == 1:
            parts.append(b"\n")  # the first with a blank line after it, the others without
    path.write_bytes(b"".join(parts))
    assert subjects(path) == ["Mail 1", "Mail 2", "Mail 3"] == mailbox_subjects(path)
    assert records(path)[2].snippet == "From an escaped line Ende"


def test_mboxrd_quoting_is_undone_one_level(tmp_path):
    path = tmp_path / "rd.mbox"
    body = b"Erste\n>From one level\n>>From two levels\n>>>From three\n> From not quoting\n"
    path.write_bytes(b"From MAILER-DAEMON Mon Jan  1 00:00:00 2001\n" + mail(1).split(b"\n\n")[0] + b"\n\n" + body
                     + b"\nFrom MAILER-DAEMON Mon Jan  1 00:00:01 2001\n" + mail(2) + b"\n")
    first, second = messages(path)
    assert first.endswith(b"Erste\nFrom one level\n>From two levels\n>>From three\n> From not quoting\n")
    assert b"Mail 2" in second and b"Mail 2" not in first


def test_mboxcl2_content_length_keeps_unquoted_from_lines_in_the_body(tmp_path):
    """mboxcl2: the body is not quoted, Content-Length says where it ends."""
    path = tmp_path / "cl2.mbox"
    out = []
    for n in (1, 2):
        head, body = mail(n).split(b"\n\n", 1)
        body = b"Hallo\n\nFrom here on it is the body\n" + body
        out.append(b"From kim@kunde.example Mon Jan  1 00:00:00 2001\n" + head
                   + b"\nContent-Length: %d\n\n" % len(body) + body + b"\n")
    head, _ = mail(3).split(b"\n\n", 1)
    big = b"Gross\n\nFrom a big body\n" + b"x" * 79 + b"\n" + (b"y" * 79 + b"\n") * 40_000
    out.append(b"From kim@kunde.example Mon Jan  1 00:00:00 2001\n" + head
               + b"\nContent-Length: %d\n\n" % len(big) + big + b"\n")
    out.append(b"From kim@kunde.example Mon Jan  1 00:00:00 2001\n" + mail(4))
    path.write_bytes(b"".join(out))
    assert subjects(path) == ["Mail 1", "Mail 2", "Mail 3", "Mail 4"]
    assert "From here on it is the body" in records(path)[0].snippet
    with open_regular(path) as fh:
        sizes = [(len(raw), size) for _o, raw, size in _mbox_messages(fh, 0)]
    assert sizes[2][0] <= MAX_MESSAGE_BYTES + 64 * 1024 and sizes[2][1] > len(big)  # bounded, counted whole


def test_wrong_content_length_falls_back_to_the_separators(tmp_path):
    path = tmp_path / "wrong.mbox"
    out = []
    for n, length in ((1, 5), (2, 100_000), (3, 3)):  # too short, beyond the end, too short
        head, body = mail(n).split(b"\n\n", 1)
        out.append(b"From kim@kunde.example Mon Jan  1 00:00:00 2001\n" + head
                   + b"\nContent-Length: %d\n\n" % length + body + b"\n")
    path.write_bytes(b"".join(out))
    assert subjects(path) == ["Mail 1", "Mail 2", "Mail 3"]
    assert all(r.snippet == "Guten Tag." for r in records(path))


def test_content_length_pointing_into_the_next_message_is_not_believed(tmp_path):
    path = tmp_path / "cl.mbox"
    one_head, one_body = mail(1).split(b"\n\n", 1)
    two = b"From kim@kunde.example Mon Jan  1 00:00:01 2001\n" + mail(2)
    # a length that ends inside message 2, at a line that is not a separator
    length = len(one_body) + 1 + len(two.split(b"\n")[0]) + 1 + 5
    path.write_bytes(b"From kim@kunde.example Mon Jan  1 00:00:00 2001\n" + one_head
                     + b"\nContent-Length: %d\n\n" % length + one_body + b"\n" + two)
    assert subjects(path) == ["Mail 1", "Mail 2"]


def test_large_message_is_bounded_and_the_next_one_is_found(tmp_path):
    path = tmp_path / "big.mbox"
    big = mail(1, body="x" * 80 + ("\n" + "y" * 79) * 40_000)  # 3.2 MB of lines
    huge_line = mail(2, body="z" * (3 * 1024 * 1024))  # one 3 MB line
    path.write_bytes(b"From a Mon Jan  1 00:00:00 2001\n" + big + b"From b Mon Jan  1 00:00:00 2001\n"
                     + huge_line + b"\nFrom c Mon Jan  1 00:00:00 2001\n" + mail(3))
    with open_regular(path) as fh:
        found = list(_mbox_messages(fh, 0))
    assert len(found) == 3
    assert all(len(raw) <= MAX_MESSAGE_BYTES + 64 * 1024 for _o, raw, _s in found)
    assert found[0][2] >= 3_200_000 and found[1][2] >= 3 * 1024 * 1024
    assert subjects(path) == ["Mail 1", "Mail 2", "Mail 3"]


def test_formail_written_mbox(tmp_path):
    """formail adds a postmark to each mail and quotes From lines; appended mails follow back to back."""
    path = tmp_path / "formail.mbox"
    with open(path, "wb") as out:
        for n in range(1, 4):
            raw = mail(n, body="Hallo\nFrom a line formail quotes\nEnde").rstrip(b"\n") + b"\n"
            done = subprocess.run(["formail"], input=raw, stdout=subprocess.PIPE, check=True, timeout=30)
            assert done.stdout.startswith(b"From ")
            out.write(done.stdout)
    text = path.read_bytes()
    assert b">From a line formail quotes" in text
    assert subjects(path) == ["Mail 1", "Mail 2", "Mail 3"] == mailbox_subjects(path)
    assert records(path)[0].snippet == "Hallo From a line formail quotes Ende"


def test_mutt_written_mbox(tmp_path):
    """mutt's record folder (mbox_type=mbox): Content-Length, body From lines left unquoted."""
    path = tmp_path / "sent.mbox"
    for n in range(1, 4):
        body = f"Hallo {n}\n\nFrom here on the offer, {n}\n>From a literal quote\nEnde\n"
        done = subprocess.run(
            ["mutt", "-n", "-F", os.devnull, "-e",
             f"set record={path}; set sendmail=/bin/true; set mbox_type=mbox; set copy=yes; "
             "set from='Anna <anna@nordlicht.example>'; set use_from=yes",
             "-s", f"Mail {n}", "kim@kunde.example"],
            input=body.encode(), capture_output=True, timeout=60, env={**os.environ, "HOME": str(tmp_path)})
        assert done.returncode == 0, done.stderr
    assert b"\nFrom here on the offer, 2\n" in path.read_bytes()  # mutt did not quote it
    got = records(path)
    assert [r.subject for r in got] == ["Mail 1", "Mail 2", "Mail 3"]
    assert got[1].snippet == "Hallo 2 From here on the offer, 2 Ende"
    assert b"\n>From a literal quote\n" in messages(path)[1]  # mboxcl2 does not quote: nothing to undo


def test_back_to_back_messages_are_counted_by_crm_sync(tmp_path):
    """The whole path: every message of a Takeout-style file is stored, a rerun adds nothing."""
    from tests.conftest import Crm, write_config

    path = tmp_path / "takeout.mbox"
    path.write_bytes(b"".join(b"From 1%d@xxx Thu Dec 21 16:29:24 +0000 2023\n" % n + mail(n) for n in range(1, 6)))
    crm = Crm(write_config(tmp_path / "crm.toml", customers=(("Kunde GmbH", ["kunde.example"]),),
                           sources={"arch": {"type": "mbox", "path": str(path), "owner": ["anna@nordlicht.example"]}}))
    assert crm.json("sync")["results"][0]["added"] == 5
    assert crm.json("sync")["results"][0]["added"] == 0
    assert sorted(i["subject"] for i in crm.json("timeline", "Kunde GmbH")) == [f"Mail {n}" for n in range(1, 6)]


def test_old_mac_mbox_with_cr_line_ends(tmp_path):
    """An mbox from an old Mac mail program ends every line with CR alone: each message is read whole."""
    path = tmp_path / "eudora.mbox"
    text = b"".join(b"From kim@kunde.example Mon Jan  1 00:00:00 2001\n" + mail(n, body=f"Hallo {n}\n\nGruss")
                    + b"\n" for n in range(1, 4))
    path.write_bytes(text.replace(b"\n", b"\r"))
    got = records(path)
    assert [r.subject for r in got] == ["Mail 1", "Mail 2", "Mail 3"]
    assert [r.snippet for r in got] == ["Hallo 1 Gruss", "Hallo 2 Gruss", "Hallo 3 Gruss"]
    assert [r.message_id for r in got] == ["m1@x", "m2@x", "m3@x"]
