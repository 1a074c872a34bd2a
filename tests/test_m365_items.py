"""Graph messages -> records: the one-pass reader (graphitems.mail_of) against the EWS connector's rules.

``mail_of`` reads a message's JSON straight into a MailRecord (the initial
sync of a big mailbox spends its client time here); the rules it must keep
are those of the EWS connector, applied through the attribute shim
``GraphMail``: ``ewsitems.mail_record`` and ``ewsitems.flags_of``.  Every
message below, well-formed or not, must come out the same both ways:
the same record, or the same kind of error.
"""

from __future__ import annotations

import copy
from datetime import datetime, timedelta, timezone

import pytest

from crm_bridge.connectors.ewsitems import ItemError, flags_of, mail_record
from crm_bridge.connectors.graphitems import (
    IN_REPLY_TO_PROP,
    REFERENCES_PROP,
    SENSITIVITY_PROP,
    _box,
    extended,
    mail_of,
    parse_time,
)
from crm_bridge.crm_core.records import Location
from tests.graph_emulator.seed import make_message

OWNER = "anna@firma.example"
POLICIES = [("CRM", "Private", "$crm-log", "$crm-private"), ("", "", "", ""), ("crm", "PRIVAT", "log", "")]


def _graph(msg: dict) -> dict:
    """The emulator's stored message as Graph answers it ($expand of the extended properties)."""
    out = {k: v for k, v in msg.items() if not k.startswith("_")}
    out["id"] = "AAMkAD-1"
    if msg.get("_extended"):
        out["singleValueExtendedProperties"] = [dict(p) for p in msg["_extended"]]
    return out


def _messages() -> list[dict]:
    base = datetime(2026, 10, 1, 8, 0, tzinfo=timezone.utc)
    kunde, anna = ("Kunde Eins", "kunde1@kunde.example"), ("Anna", OWNER)
    plain = _graph(make_message("Angebot", kunde, [anna], base, "<m1@mail.example>", body="Guten Tag,\n  anbei."))
    out = [
        plain,
        _graph(make_message(" Re: Angebot ", anna, [kunde, ("", "zwei@kunde.example")], base + timedelta(hours=1),
                            "<m2@mail.example>", cc=[("Chef", "CHEF@Kunde.Example ")], categories=["CRM", "Blau"],
                            in_reply_to="<m1@mail.example>")),
        _graph(make_message("privat", kunde, [anna], base, "<m3@mail.example>", sensitivity="private")),
        _graph(make_message("vertraulich", kunde, [anna], base, "<m4@mail.example>", sensitivity="confidential",
                            categories=["private", ""])),
        _graph(make_message("persönlich", kunde, [anna], base, "<m5@mail.example>", sensitivity="personal")),
    ]
    odd: list[dict] = []
    for change in (
        {"from": None}, {"from": None, "sender": None}, {"from": None, "sender": None, "internetMessageId": None},
        {"from": {"emailAddress": None}}, {"from": {"emailAddress": {"address": " Kunde1@Kunde.example ", "name": " K. "}}}, {"from": {"emailAddress": {"address": None, "name": "X"}}},
        {"from": {"emailAddress": {"address": "kein-at", "name": None}}}, {"from": "kunde1@kunde.example"},
        {"toRecipients": None}, {"toRecipients": [None, {"emailAddress": {"address": "a@b.example"}}, 7, "x"]},
        {"toRecipients": "a@b.example"}, {"ccRecipients": {"emailAddress": {"address": "a@b.example"}}},
        {"sentDateTime": None}, {"sentDateTime": None, "receivedDateTime": None}, {"sentDateTime": "gestern"},
        {"sentDateTime": "2026-10-01T09:30:00.1234567Z"}, {"sentDateTime": "2026-10-01T11:30:00+02:00"},
        {"sentDateTime": "2026-10-01T09:30:00"}, {"subject": None}, {"subject": 5}, {"bodyPreview": None},
        {"bodyPreview": ["x"]}, {"hasAttachments": "true"}, {"hasAttachments": True}, {"categories": None},
        {"categories": "CRM"}, {"categories": ["CRM", None, 3, "Private"]}, {"internetMessageId": "kaputt"},
        {"internetMessageId": "<a b@c> <d@e>"}, {"internetMessageId": 12},
        {"singleValueExtendedProperties": None}, {"singleValueExtendedProperties": [None, {"id": 5}]},
        {"singleValueExtendedProperties": [{"id": "Integer 0x0036", "value": "3"},
                                           {"id": "String 0x1039", "value": "<r1@x> <r2@x>"},
                                           {"id": "String 0x1042", "value": None}]},
        {"singleValueExtendedProperties": [{"id": "Integer 0x36", "value": 2}]},
        {"singleValueExtendedProperties": 7}, {"toRecipients": 7},
    ):
        item = copy.deepcopy(plain)
        item.update(change)
        odd.append(item)
    return out + odd


_SENSITIVITY = {"0": "Normal", "1": "Personal", "2": "Private", "3": "Confidential"}


class GraphMail:
    """A Graph message with the attribute names :func:`ewsitems.mail_record` and ``flags_of`` read
    (the M365 connector's reader before ``mail_of``; kept here as the reference it is held to)."""

    def __init__(self, item: dict):
        ext = extended(item)
        self.id = item.get("id")
        self.subject = item.get("subject") if isinstance(item.get("subject"), str) else ""
        self.author = _box(item.get("from"))
        self.sender = _box(item.get("sender"))
        self.to_recipients = [b for b in map(_box, item.get("toRecipients") or ()) if b]
        self.cc_recipients = [b for b in map(_box, item.get("ccRecipients") or ()) if b]
        self.bcc_recipients = [b for b in map(_box, item.get("bccRecipients") or ()) if b]
        self.datetime_sent = parse_time(item.get("sentDateTime"))
        self.datetime_received = parse_time(item.get("receivedDateTime"))
        self.message_id = item.get("internetMessageId") if isinstance(item.get("internetMessageId"), str) else ""
        self.in_reply_to = ext.get(IN_REPLY_TO_PROP.lower(), "")
        self.references = ext.get(REFERENCES_PROP.lower(), "")
        cats = item.get("categories")
        self.categories = [c for c in cats if isinstance(c, str)] if isinstance(cats, list) else []
        self.sensitivity = _SENSITIVITY.get(ext.get(SENSITIVITY_PROP.lower(), "0"), "Normal")
        self.text_body = item.get("bodyPreview") if isinstance(item.get("bodyPreview"), str) else ""
        self.size = 0
        self.has_attachments = item.get("hasAttachments") is True
        self.changekey = item.get("changeKey") or ""


def _reference(item: dict, location: Location, policy: tuple[str, str, str, str]):
    mail = GraphMail(item)
    return mail_record(mail, location, flags_of(mail, *policy), OWNER)


def _outcome(make, *args):
    try:
        return make(*args)
    except ItemError:
        return ItemError
    except Exception as exc:  # the connector quarantines these too; both ways must fail alike
        return type(exc)


@pytest.mark.parametrize("policy", POLICIES)
def test_mail_of_reads_every_message_as_the_ews_rules_do(policy):
    location = Location("Inbox", "AAMkAD-1", "ck")
    messages = _messages()
    outcomes = []
    for item in messages:
        expected = _outcome(_reference, item, location, policy)
        got = _outcome(lambda i, loc, p: mail_of(i, loc, OWNER, *p), item, location, policy)
        assert got == expected, item
        outcomes.append(expected)
    records = [o for o in outcomes if not isinstance(o, type)]
    # the cases mean something: records with flags, directions, recipients; refusals of both kinds
    assert any("$crm-log" in r.flags for r in records) or policy[2] != "$crm-log"
    assert any(r.direction == "out" for r in records) and any(r.direction == "in" for r in records)
    assert any(r.in_reply_to for r in records) and any(r.cc for r in records)
    assert ItemError in outcomes and TypeError in outcomes
