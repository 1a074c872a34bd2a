"""crm_bridge.connectors.vcard: vCard 2.1/3.0/4.0 in, ContactCard out; vCard out."""

from __future__ import annotations

import re

import pytest
import vobject
from hypothesis import given, settings
from hypothesis import strategies as st

from crm_bridge.connectors.ical import normalised_hash
from crm_bridge.connectors.vcard import build_vcard, parse_vcards
from crm_bridge.crm_core.records import ContactCard, Failure, Location

LOC = Location("book", "cards.vcf", '"e"')

V3 = """BEGIN:VCARD\r
VERSION:3.0\r
UID:anna-1\r
FN:Anna Müller\r
N:Müller;Anna;;Dr.;\r
item1.EMAIL;TYPE=INTERNET,WORK:Anna.Mueller@Example.COM\r
item1.X-ABLabel:work\r
EMAIL;TYPE=HOME:anna@home.example\r
TEL;TYPE=CELL:+49 30 1234567\r
TEL;TYPE=WORK,VOICE:030 7654321\r
ORG:ACME\\, Inc.;Sales\r
TITLE:Head of Sales\r
CATEGORIES:customer,vip\r
NOTE:A long note that gets fol\r
 ded by the client\r
PHOTO;ENCODING=b;TYPE=JPEG:/9j/4AAQSkZJRgABAQAAAQABAAD=\r
END:VCARD\r
"""

V4 = """BEGIN:VCARD
VERSION:4.0
UID:urn:uuid:4fbe8971-0bc3-424c-9c26-36c3e1eff6b1
FN:Bob Builder
N:Builder;Bob;;;
EMAIL;PREF=1:mailto:bob@builder.example
TEL;VALUE=uri;TYPE="voice,cell":tel:+1-555-555-5555
ORG:Builders Ltd
CATEGORIES:supplier
END:VCARD
"""

V21 = """BEGIN:VCARD
VERSION:2.1
N;CHARSET=UTF-8;ENCODING=QUOTED-PRINTABLE:M=C3=BCller;J=
=C3=B6rg
TEL;WORK;VOICE:123 456
EMAIL;INTERNET:joerg@example.org
END:VCARD
"""


def test_vcard3_fields():
    [card], failures = parse_vcards(V3, LOC)
    assert failures == []
    assert card == ContactCard(
        location=LOC, uid="anna-1", full_name="Anna Müller", given_name="Anna", family_name="Müller",
        emails=("anna.mueller@example.com", "anna@home.example"),
        phones=("+49 30 1234567", "030 7654321"), organisation="ACME, Inc.", title="Head of Sales",
        categories=("customer", "vip"),
    )


def test_vcard4_fields():
    [card], failures = parse_vcards(V4, LOC)
    assert failures == []
    assert card.uid == "urn:uuid:4fbe8971-0bc3-424c-9c26-36c3e1eff6b1"
    assert card.emails == ("bob@builder.example",)
    assert card.phones == ("+1-555-555-5555",)
    assert card.organisation == "Builders Ltd"
    assert card.given_name == "Bob" and card.family_name == "Builder"


def test_vcard21_quoted_printable_and_missing_uid():
    [card], failures = parse_vcards(V21, LOC)
    assert failures == []
    assert card.family_name == "Müller" and card.given_name == "Jörg"
    assert card.full_name == "Jörg Müller"
    assert card.uid.startswith("nouid-")
    assert parse_vcards(V21, LOC)[0][0].uid == card.uid  # stable
    assert card.emails == ("joerg@example.org",)
    assert card.phones == ("123 456",)


def test_several_cards_one_broken():
    damaged = "BEGIN:VCARD\nVERSION:3.0\nUID:x\nFN:Xaver\nTHIS LINE HAS NO COLON\nEND:VCARD\n"
    nobody = "BEGIN:VCARD\nVERSION:4.0\nUID:y\nNOTE:nobody\nEND:VCARD\n"
    unterminated = "BEGIN:VCARD\nVERSION:4.0\nUID:z\nFN:Zed\n"
    unterminated_nobody = "BEGIN:VCARD\nVERSION:4.0\nUID:w\n"
    cards, failures = parse_vcards(V3 + damaged + V4 + nobody + unterminated_nobody + unterminated, LOC)
    assert [c.uid for c in cards] == ["anna-1", "x", "urn:uuid:4fbe8971-0bc3-424c-9c26-36c3e1eff6b1", "z"]
    assert [c.warnings != () for c in cards] == [False, True, False, True]
    assert len(failures) == 2
    assert all(isinstance(f, Failure) and f.location == LOC for f in failures)
    assert any("names nobody" in f.reason for f in failures)
    assert any("END:VCARD" in f.reason for f in failures)


def test_card_cut_by_another_begin():
    text = "BEGIN:VCARD\nVERSION:3.0\nFN:Cut\n" + V4
    cards, failures = parse_vcards(text, LOC)
    assert [c.full_name for c in cards] == ["Cut", "Bob Builder"]  # the cut card keeps what it has
    assert "END:VCARD" in cards[0].warnings[0] and cards[1].warnings == ()
    assert failures == []


@pytest.mark.parametrize("text", ["", "garbage", b"\xff\xfe\x00", "END:VCARD\n", "BEGIN:VCALENDAR\nEND:VCALENDAR\n"])
def test_garbage_never_raises(text):
    cards, failures = parse_vcards(text, LOC)
    assert cards == []
    assert failures


# -------------------------------------------------------------- build_vcard


@pytest.mark.parametrize("version", ["3.0", "4.0"])
def test_build_round_trip(version):
    text = build_vcard(
        "crm-cust-7", "Smith, Jane; CEO", given_name="Jane", family_name="Smith",
        emails=["jane@acme.example", "j@private.example"], phones=["+4930123456", "030 123"],
        organisation="ACME; Holding, GmbH", title="CEO", categories=["customer", "a,b"],
        note="Last contact 2024-05-01: offer sent\nOpen task: call back", version=version,
    )
    assert f"VERSION:{version}" in text
    assert "PRODID:-//crm-bridge//crm-bridge//EN" in text
    assert all(len(line.encode()) <= 75 for line in text.split("\r\n"))
    [card], failures = parse_vcards(text, LOC)
    assert failures == []
    assert card.uid == "crm-cust-7"
    assert card.full_name == "Smith, Jane; CEO"
    assert (card.given_name, card.family_name) == ("Jane", "Smith")
    assert card.emails == ("jane@acme.example", "j@private.example")
    assert card.phones == ("+4930123456", "030 123")
    assert card.organisation == "ACME; Holding, GmbH"
    assert card.categories == ("customer", "a,b")
    # an independent reader agrees
    parsed = vobject.readOne(text)
    assert parsed.fn.value == "Smith, Jane; CEO"
    assert "offer sent\nOpen task" in parsed.note.value


def test_build_is_stable_apart_from_rev():
    from datetime import datetime, timezone

    a = build_vcard("u", "A", rev=datetime(2024, 1, 1, tzinfo=timezone.utc))
    b = build_vcard("u", "A", rev=datetime(2025, 1, 1, tzinfo=timezone.utc))
    assert a != b and normalised_hash(a) == normalised_hash(b)
    assert normalised_hash(build_vcard("u", "B")) != normalised_hash(a)


_TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=80).filter(
    lambda s: s.strip() == s and not re.search(r"\s\s", s)
)


@settings(max_examples=80, deadline=None)
@given(name=_TEXT, org=_TEXT, note=st.text(max_size=200), cats=st.lists(_TEXT, max_size=3, unique=True))
def test_build_parse_round_trip_any_text(name, org, note, cats):
    text = build_vcard("uid-1", name, organisation=org, note=note, categories=cats)
    [card], failures = parse_vcards(text, LOC)
    assert failures == []
    assert card.full_name == name
    assert card.organisation == org
    assert card.categories == tuple(dict.fromkeys(cats))
