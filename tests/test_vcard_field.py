"""vCards as real exports write them: several FN/ORG/TITLE/N lines with and
without PREF, vCard 2.1 from older phones (bare QUOTED-PRINTABLE, CHARSET,
soft line breaks), CR CR LF files from iPhone exports, lines that are not
properties.  Damage inside a card costs the damaged line, not the card."""

from __future__ import annotations

import pytest
import vobject

from crm_bridge.connectors.vcard import parse_vcards
from crm_bridge.crm_core.records import Location

LOC = Location("book", "cards.vcf", '"e"')


def one(text: str | bytes):
    cards, failures = parse_vcards(text, LOC)
    assert failures == []
    [card] = cards
    return card


# ------------------------------------------------------------ RFC 6350 PREF


def test_several_single_valued_lines_without_pref_first_wins():
    card = one("BEGIN:VCARD\r\nVERSION:4.0\r\nUID:u1\r\nFN:Anna Weber\r\nFN:A. Weber (alt)\r\n"
               "N:Weber;Anna;;;\r\nN:Weber-Alt;Anneliese;;;\r\nORG:Nordlicht GmbH;Service\r\nORG:Old Employer AG\r\n"
               "TITLE:Kundendienst\r\nTITLE:Azubi\r\nUID:u2\r\nEND:VCARD\r\n")
    assert (card.uid, card.full_name, card.family_name, card.given_name, card.organisation, card.title) == (
        "u1", "Anna Weber", "Weber", "Anna", "Nordlicht GmbH", "Kundendienst")
    # vobject (an independent reader) keeps every line in order: we take the first as it lists it
    parsed = vobject.readOne("BEGIN:VCARD\r\nVERSION:3.0\r\nFN:Anna Weber\r\nFN:A. Weber (alt)\r\nN:Weber;Anna;;;\r\nEND:VCARD\r\n")
    assert parsed.contents["fn"][0].value == card.full_name


def test_lowest_pref_wins_whatever_the_order():
    card = one("BEGIN:VCARD\r\nVERSION:4.0\r\nUID:u\r\nFN;PREF=50:Fifty\r\nFN;PREF=3:Three\r\nFN:No pref\r\n"
               "ORG:Plain AG\r\nORG;PREF=100:Hundred AG\r\nORG:Plain 2 AG\r\n"
               "TITLE;PREF=2:Second\r\nTITLE;PREF=1:First\r\nTITLE:None\r\n"
               "N;PREF=9:Nine;N;;;\r\nN;PREF=4:Four;F;;;\r\nN:None;N;;;\r\nEND:VCARD\r\n")
    assert card.full_name == "Three"
    assert card.organisation == "Hundred AG"  # any PREF beats none
    assert card.title == "First"
    assert (card.family_name, card.given_name) == ("Four", "F")


@pytest.mark.parametrize("pref_line", [
    "ORG;TYPE=WORK,PREF:Preferred GmbH",       # vCard 3.0: TYPE list
    "ORG;type=WORK;type=pref:Preferred GmbH",  # Apple: TYPE repeated
    "ORG;PREF:Preferred GmbH",                 # vCard 2.1: bare
])
def test_vcard3_and_21_pref_forms(pref_line):
    card = one(f"BEGIN:VCARD\r\nVERSION:3.0\r\nFN:X\r\nORG:Other AG\r\n{pref_line}\r\nORG:Later AG\r\nEND:VCARD\r\n")
    assert card.organisation == "Preferred GmbH"


def test_equal_pref_keeps_the_first():
    card = one("BEGIN:VCARD\nVERSION:4.0\nFN;PREF=1:First\nFN;PREF=1:Second\nEND:VCARD\n")
    assert card.full_name == "First"


# ------------------------------------------------------------ vCard 2.1


def test_bare_quoted_printable_with_charset_and_soft_breaks():
    text = (b"BEGIN:VCARD\r\nVERSION:2.1\r\n"
            b"N;CHARSET=UTF-8;QUOTED-PRINTABLE:M=C3=BCller-L=C3=BCdenscheid;J=\r\n=C3=B6rg;;;\r\n"
            b"FN;QUOTED-PRINTABLE;CHARSET=UTF-8:J=C3=B6rg M=C3=BCller-=\r\nL=C3=BCdenscheid\r\n"
            b"ORG;CHARSET=ISO-8859-1;QUOTED-PRINTABLE:B=E4ckerei Sch=F6n=\r\nfeld\r\n"
            b"TITLE;QUOTED-PRINTABLE:Gesch=C3=A4ftsf=C3=BChrer\r\n"
            b"TEL;CELL;PREF:+49 171 1234567\r\nEMAIL;INTERNET:joerg@example.org\r\nEND:VCARD\r\n")
    card = one(text)
    assert (card.family_name, card.given_name) == ("Müller-Lüdenscheid", "Jörg")
    assert card.full_name == "Jörg Müller-Lüdenscheid"
    assert card.organisation == "Bäckerei Schönfeld"
    assert card.title == "Geschäftsführer"  # no CHARSET: UTF-8 when the bytes are UTF-8
    assert card.phones == ("+49 171 1234567",) and card.emails == ("joerg@example.org",)
    # the bare form reads as the ENCODING= form of the same card does
    assert one(text.replace(b";QUOTED-PRINTABLE", b";ENCODING=QUOTED-PRINTABLE")) == card


def test_21_without_charset_in_windows_1252():
    text = b"BEGIN:VCARD\r\nVERSION:2.1\r\nFN;QUOTED-PRINTABLE:Fran=E7oise G=FCnther\r\nORG:M\xfcller & S\xf6hne\r\nEND:VCARD\r\n"
    card = one(text)
    assert card.full_name == "Françoise Günther"
    assert card.organisation == "Müller & Söhne"  # 8-bit bytes, not UTF-8: Windows-1252


def test_encoding_qp_short_form_soft_break():
    card = one("BEGIN:VCARD\nVERSION:2.1\nFN;ENCODING=QP;CHARSET=UTF-8:Zo=C3=\n=AB Meyer\nEND:VCARD\n")
    assert card.full_name == "Zoë Meyer"


def test_soft_break_does_not_swallow_end_vcard():
    cards, failures = parse_vcards("BEGIN:VCARD\nVERSION:2.1\nFN;QUOTED-PRINTABLE:Kai=\nEND:VCARD\n"
                                   "BEGIN:VCARD\nVERSION:2.1\nFN:Lea\nEND:VCARD\n", LOC)
    assert [c.full_name for c in cards] == ["Kai", "Lea"] and failures == []


# ------------------------------------------------------------ damaged cards


# An iPhone contact exported through Windows: every CRLF became CR CR LF,
# folds included (a long NOTE, the base64 lines of the PHOTO).
IPHONE = (
    b"BEGIN:VCARD\r\r\nVERSION:3.0\r\r\nPRODID:-//Apple Inc.//iPhone OS 16.6//EN\r\r\n"
    b"N:Brandt;Thomas;;;\r\r\nFN:Thomas Brandt\r\r\nORG:Stadtwerke Lindenau GmbH;Technik\r\r\n"
    b"TITLE:Leiter B\xc3\xa4derbetrieb\r\r\n"
    b"item1.EMAIL;type=INTERNET;type=pref:t.brandt@stadtwerke-lindenau.de\r\r\nitem1.X-ABLabel:_$!<Work>!$_\r\r\n"
    b"TEL;type=CELL;type=VOICE;type=pref:+49 151 2345678\r\r\n"
    b"NOTE:Ansprechpartner f\xc3\xbcr das Hallenbad\\, erreichbar Mo-Fr. Bitte immer vorher an\r\r\n"
    b" rufen\\, Zugang \xc3\xbcber den Hof.\r\r\n"
    b"PHOTO;ENCODING=b;TYPE=JPEG:/9j/4AAQSkZJRgABAQAAAQABAAD/4QBYRXhpZgAATU0AKgAAAAgAAgESAAMAAAABAAEAA\r\r\n"
    b" IdpAAQAAAABAAAAJgAAAAAAA6ABAAMAAAABAAEAAKACAAQAAAABAAAAQKADAAQAAAABAAAAQAAAAA\r\r\n"
    b" D/7QA4UGhvdG9zaG9wIDMuMAA4QklNBAQAAAAAAAA4QklNBCUAAAAAABDUHYzZjwCyBOmACZjs+EJ+\r\r\n"
    b"REV:2024-03-05T09:12:44Z\r\r\nEND:VCARD\r\r\n"
    b"BEGIN:VCARD\r\r\nVERSION:3.0\r\r\nN:Richter;Claudia;;;\r\r\nFN:Claudia Richter\r\r\n"
    b"EMAIL;type=INTERNET;type=WORK:c.richter@stadtwerke-lindenau.de\r\r\nEND:VCARD\r\r\n"
)


def test_iphone_cr_cr_lf_export_reads_every_card_whole():
    cards, failures = parse_vcards(IPHONE, LOC)
    assert failures == []
    brandt, richter = cards
    assert (brandt.full_name, brandt.organisation, brandt.title) == (
        "Thomas Brandt", "Stadtwerke Lindenau GmbH", "Leiter Bäderbetrieb")
    assert brandt.emails == ("t.brandt@stadtwerke-lindenau.de",) and brandt.phones == ("+49 151 2345678",)
    assert brandt.warnings == ()  # nothing was lost: the line ends are only odd
    assert richter.emails == ("c.richter@stadtwerke-lindenau.de",)
    # the same bytes with plain CRLF give the same cards
    assert parse_vcards(IPHONE.replace(b"\r\r\n", b"\r\n"), LOC) == (cards, [])
    assert parse_vcards(IPHONE.replace(b"\r\r\n", b"\r"), LOC) == (cards, [])  # old Mac


def test_orphan_lines_are_joined_or_dropped_with_a_warning():
    # the fold of the NOTE lost its leading space; a raw line break inside the TITLE;
    # a line with neither name nor colon right after BEGIN
    text = IPHONE.replace(b"\r\r\n rufen", b"\r\r\nrufen").replace(
        b"TITLE:Leiter B\xc3\xa4derbetrieb\r\r\n", b"TITLE:Leiter\r\r\nB\xc3\xa4derbetrieb\r\r\n").replace(
        b"BEGIN:VCARD\r\r\nVERSION:3.0\r\r\nN:Richter", b"BEGIN:VCARD\r\r\n====\r\r\nVERSION:3.0\r\r\nN:Richter")
    cards, failures = parse_vcards(text, LOC)
    assert failures == []
    brandt, richter = cards
    assert brandt.title == "Leiter Bäderbetrieb"
    assert brandt.emails == ("t.brandt@stadtwerke-lindenau.de",)
    assert brandt.warnings and "joined" in brandt.warnings[0]
    assert richter.full_name == "Claudia Richter"
    assert richter.warnings and "dropped" in richter.warnings[0] and "====" in richter.warnings[0]


def test_base64_photo_lines_without_indent_do_not_cost_the_card():
    text = (b"BEGIN:VCARD\r\nVERSION:2.1\r\nN:Keller;Jonas\r\nPHOTO;ENCODING=BASE64;TYPE=JPEG:\r\n"
            b"/9j/4AAQSkZJRgABAQAAAQABAAD/4QBYRXhpZgAATU0AKgAAAAgAAgESAAMAAAABAAEAA\r\n"
            b"IdpAAQAAAABAAAAJgAAAAAAA6ABAAMAAAABAAEAAKACAAQAAAABAAAAQKADAAQAAAABAAAAQ\r\n\r\n"
            b"EMAIL;INTERNET:jonas.keller@example.org\r\nEND:VCARD\r\n")
    card = one(text)
    assert card.full_name == "Jonas Keller" and card.emails == ("jonas.keller@example.org",)
    assert len(card.warnings) == 1


def test_undecodable_bytes_in_a_warning_are_safe_to_store():
    card = one(b"BEGIN:VCARD\nVERSION:3.0\n\xff\xfe broken\nFN:Ida\nEND:VCARD\n")
    assert card.full_name == "Ida"
    card.warnings[0].encode("utf-8")  # no surrogates left


def test_property_line_without_colon_is_dropped_not_joined_onto_the_email():
    # the demo's broken card: the TEL line lost its colon
    card = one("BEGIN:VCARD\nVERSION:3.0\nN:Brodersen;Kai;;;\nFN:Kai Brodersen\nORG:Stadtwerke Lindenau GmbH\n"
               "EMAIL;TYPE=INTERNET,WORK:k.brodersen@stadtwerke-lindenau.de\nTEL;TYPE=WORK,VOICE 04621 4711-240\n"
               "END:VCARD\n")
    assert card.emails == ("k.brodersen@stadtwerke-lindenau.de",) and card.phones == ()
    assert card.organisation == "Stadtwerke Lindenau GmbH"
    assert card.warnings == ("a property line without a colon was dropped: 'TEL;TYPE=WORK,VOICE 04621 4711-240'",)


def test_stray_line_after_an_email_is_dropped():
    card = one("BEGIN:VCARD\nVERSION:3.0\nFN:Ole\nEMAIL:ole@example.org\nsome stray text\nEND:VCARD\n")
    assert card.emails == ("ole@example.org",) and len(card.warnings) == 1


def test_truncated_export_keeps_the_last_card_with_a_warning():
    cut = IPHONE[: IPHONE.index(b"EMAIL;type=INTERNET;type=WORK:c.richter")]
    cards, failures = parse_vcards(cut, LOC)
    assert failures == []
    assert [c.full_name for c in cards] == ["Thomas Brandt", "Claudia Richter"]
    assert cards[0].warnings == () and "no END:VCARD" in cards[1].warnings[0]


def test_8bit_value_in_its_charset():
    card = one(b"BEGIN:VCARD\r\nVERSION:2.1\r\nN;CHARSET=ISO-8859-1:Sch\xf6nfeld;J\xfcrgen\r\nEND:VCARD\r\n")
    assert (card.family_name, card.given_name) == ("Schönfeld", "Jürgen")
