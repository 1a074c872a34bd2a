"""What the IMAP connector fetches (issue 9, "Fetch less"): a short text prefix first, BODYSTRUCTURE
only for multipart mail, no text for mail the store skips; the records stay what the file path reads."""

from __future__ import annotations

import base64
import json
import os
import re
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from crm_bridge.connectors import imap, imapwire
from crm_bridge.connectors.base import SkipRule
from crm_bridge.connectors.mailparse import parse_message
from crm_bridge.connectors.snippet import FIRST_FETCH_BYTES, FIRST_FETCH_HTML_BYTES
from crm_bridge.crm_core.settings import AddressSet, LinkingSettings, SourcePolicy
from crm_bridge.crm_core.store import mail_key
from crm_bridge.sync.config import parse_config
from crm_bridge.sync.engine import Engine
from tests.conftest import write_config
from tests.imap_server import dovecot  # noqa: F401  (fixture)
from tests.test_imap import MemoryView, connector
from tests.test_mailparse_field import OWN, QUOTED, _html, _mail, _padded_qp


@pytest.fixture
def sent(monkeypatch):
    """(UIDs, items) of every UID FETCH the connector sends, in this process."""
    log: list[tuple[list[int], str]] = []
    real = imap.Fetches.send

    def send(self, uids, items, modifiers=None):
        log.append((imapwire.expand_set(uids) if "*" not in uids else [], " ".join(items)))
        return real(self, uids, items, modifiers)

    monkeypatch.setattr(imap.Fetches, "send", send)
    return log


def sync_in_process(tmp_path: Path, sources: dict, customers=(("Kunde", ["kunde.example"]),), db: str = "crm.db"):
    """One engine run of ``sources`` in this process into ``tmp_path/db`` (internal domain nordlicht.example,
    ``customers`` as (name, domains)); it must end ok.  Its outcome."""
    config = parse_config({
        "store": {"path": str(tmp_path / db)},
        "company": {"internal_domains": ["nordlicht.example"]},
        "customers": [{"name": n, "domains": d} for n, d in customers],
        "sources": sources,
    }, tmp_path / "crm.toml")
    engine = Engine(config, retries=0, backoff=0.0, parallel=False)
    try:
        [outcome] = engine.run(push=False)
    finally:
        engine.close()
        engine.store.conn.close()
    assert outcome.status == "ok", outcome.message
    return outcome


def _asked(log, uid: int, word: str) -> bool:
    return any(uid in uids and word in items for uids, items in log)


def test_single_part_mail_is_read_without_bodystructure_as_from_the_maildir(dovecot, sent):
    b64 = base64.encodebytes((("Grüße aus Lübeck. " + OWN + "\n") * 40).encode()).decode()
    mails = {
        "plain@x": _mail(OWN + "\n\n" + ("Noch eine Zeile mit Text.\n" * 300)),
        "qp@x": _mail(_padded_qp(OWN + " " + QUOTED), cte="quoted-printable"),
        "b64@x": _mail(b64, cte="base64"),
        "latin1@x": _mail((OWN + " Grüße\n").encode("latin-1") * 50, "text/plain; charset=iso-8859-1"),
        "html@x": _mail(_html(20_000), "text/html; charset=utf-8"),
        "html-big-head@x": _mail(_html(40_000), "text/html; charset=utf-8"),
        "attached-text@x": _mail(OWN, "text/plain; charset=utf-8",
                                 headers='Content-Disposition: attachment; filename="notiz.txt"\n'),
        "pdf@x": _mail(base64.encodebytes(b"%PDF-1.4 " * 200).decode(), "application/pdf", cte="base64"),
        "bad-ctype@x": _mail(OWN, "text"),
        "multi@x": _mail("--b\nContent-Type: text/plain; charset=utf-8\n\n" + OWN + "\n--b\nContent-Type: "
                         "application/pdf\nContent-Disposition: attachment; filename=a.pdf\n\nxx\n--b--\n",
                         'multipart/mixed; boundary="b"'),
    }
    mails = {mid: raw.replace(b"<m@kunde.example>", f"<{mid}>".encode()) for mid, raw in mails.items()}
    mails["no-ctype@x"] = (b"From: Kim <kim@kunde.example>\nTo: anna@nordlicht.example\nSubject: ohne\n"
                           b"Message-ID: <no-ctype@x>\nDate: Tue, 12 Mar 2024 10:15:00 +0100\n\n" + OWN.encode() + b"\n")
    dovecot.append("alice", "INBOX", list(mails.values()))
    view = MemoryView()
    view.sync(connector(dovecot))
    assert not view.failures
    files = dovecot.maildir_files("alice")
    uids = {}
    for (_scope, lid), rec in view.records.items():
        uid = int(lid.split(":")[1])
        uids[rec.message_id] = uid
        from_file = parse_message(files[uid].read_bytes(), rec.location)
        assert (rec.snippet, rec.has_attachments, mail_key(rec)) == \
            (from_file.snippet, from_file.has_attachments, mail_key(from_file)), rec.message_id
    assert set(uids) == set(mails)
    assert view.records[("INBOX", next(lid for (_s, lid), r in view.records.items()
                                       if r.message_id == "html@x"))].snippet == OWN
    structure = {mid for mid, uid in uids.items() if _asked(sent, uid, "BODYSTRUCTURE")}
    assert structure == {"multi@x"}
    assert not _asked(sent, uids["pdf@x"], "BODY.PEEK[1]") and not _asked(sent, uids["attached-text@x"], "BODY.PEEK[1]")


def test_a_short_prefix_first_and_more_only_where_needed(dovecot, sent):
    short = _mail(OWN + "\n\n" + ("Noch eine Zeile mit Text.\n" * 300), mid="short@x")
    head = _mail(_html(20_000), "text/html; charset=utf-8", mid="head@x")
    dovecot.append("alice", "INBOX", [short, head])
    view = MemoryView()
    view.sync(connector(dovecot))
    body = [(uids, items) for uids, items in sent if "BODY.PEEK[1]" in items]
    asked = {uid: [re.search(r"<(\d+)\.(\d+)>", items).groups() for uids, items in body if uid in uids] for uid in (1, 2)}
    assert asked[1] == [("0", str(FIRST_FETCH_BYTES))]  # settled by its first 1.5 KiB
    assert asked[2][0] == ("0", str(FIRST_FETCH_HTML_BYTES)) and len(asked[2]) > 1  # the style sheet runs past them
    assert int(asked[2][1][0]) == FIRST_FETCH_HTML_BYTES  # the next bytes, not the first ones again
    assert {r.message_id: r.snippet for r in view.records.values()}["head@x"] == OWN


def _rule(**policy) -> SkipRule:
    return SkipRule(LinkingSettings(internal_domains=AddressSet(["nordlicht.example"])),
                    SourcePolicy(name="alice-imap", owner=frozenset(["anna@nordlicht.example"]), **policy))


class RuleView(MemoryView):
    def __init__(self, rule: SkipRule) -> None:
        super().__init__()
        self.rule = rule

    def skip_rule(self) -> SkipRule:
        return self.rule


def _skip_mails() -> list[bytes]:
    news = _html(2_000, "Angebot der Woche " * 3000)
    return [
        _mail(OWN, mid="kunde@x"),
        _mail(news, "text/html; charset=utf-8", mid="news@x",
              headers="List-Id: <news.example>\nList-Unsubscribe: <https://news.example/u>\n"),
        _mail(OWN * 50, mid="intern@x").replace(b"kim@kunde.example", b"kim@nordlicht.example"),
        _mail(OWN * 50, mid="private@x"),
    ]


def test_mail_the_store_skips_gets_no_text(dovecot, sent):
    dovecot.append("alice", "INBOX", _skip_mails()[:3])
    dovecot.append("alice", "INBOX", _skip_mails()[3], flags=["$Private"])
    view = RuleView(_rule())
    view.sync(connector(dovecot))
    by_mid = {r.message_id: (int(lid.split(":")[1]), r) for (_s, lid), r in view.records.items()}
    assert set(by_mid) == {"kunde@x", "news@x", "intern@x", "private@x"}
    texts = {mid for mid, (uid, _r) in by_mid.items() if _asked(sent, uid, "BODY.PEEK[1]")}
    assert texts == {"kunde@x"}
    assert by_mid["kunde@x"][1].snippet == OWN


def _body_fetches(server, since: int) -> int:
    """Message bodies Dovecot sent to alice's sessions logged after offset ``since`` of its log."""
    text = server.log.read_text()[since:]
    return sum(int(n) for n in re.findall(r"Logged out .*?body_count=(\d+)", text))


@pytest.mark.parametrize("parallel", [False, True], ids=["in-process", "reader-process"])
def test_sync_skips_as_before_without_fetching_the_text(dovecot, tmp_path: Path, parallel: bool):
    dovecot.append("alice", "INBOX", _skip_mails()[:3])
    dovecot.append("alice", "INBOX", _skip_mails()[3], flags=["$Private"])
    os.environ["CRM_TEST_IMAP_ALICE"] = dovecot.users["alice"]
    sources = {"alice-imap": {"type": "imap", "host": "127.0.0.1", "port": dovecot.port, "tls": "none",
                              "allow_plaintext": True, "username": "alice",
                              "password_env": "CRM_TEST_IMAP_ALICE", "folders": ["INBOX"],
                              "owner": ["anna@nordlicht.example"]}}
    since = len(dovecot.log.read_text())
    if parallel:
        # as `crm sync` runs it: its own process, where the reader process is used (no other thread runs)
        path = write_config(tmp_path / "crm.toml", customers=(("Kunde", ["kunde.example"]),), sources=sources,
                            store=str(tmp_path / "crm.db"))
        done = subprocess.run([sys.executable, "-m", "crm_bridge.cli", "--config", str(path), "sync", "--json"],
                              capture_output=True, text=True, timeout=120, env={**os.environ, "CRM_PARALLEL_PULL": "1"})
        assert done.returncode == 0, done.stderr
        [result] = json.loads(done.stdout)["results"][:1]
        assert result["status"] == "ok", result
    else:
        sync_in_process(tmp_path, sources)
    db = sqlite3.connect(tmp_path / "crm.db")
    skipped = dict(db.execute("SELECT message_id, reason FROM skipped"))
    assert skipped == {"news@x": "bulk or automatic mail (List-Id)", "intern@x": "internal only: no external participant",
                       "private@x": "private keyword $Private"}
    assert db.execute("SELECT message_id, snippet FROM interactions").fetchall() == [("kunde@x", OWN)]
    for _ in range(50):  # Dovecot writes the session's line when it sees the logout
        if "Logged out" in dovecot.log.read_text()[since:]:
            break
        time.sleep(0.1)
    assert _body_fetches(dovecot, since) == 1  # only the customer's mail was read past its header
