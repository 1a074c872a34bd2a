#!/usr/bin/env python3
"""Regenerate the crm-bridge demo data in this folder.

    python examples/generate.py

(Re)writes, deterministically (fixed seed, fixed reference date 2026-11-01):

* ``mail/``          a Maildir (cur/ new/ tmp/) of Anna Weber's mailbox at
                     Nordlicht Haustechnik GmbH, ~300 messages
* ``calendar.ics``   Anna's calendar, ~40 VEVENTs
* ``contacts.vcf``   Anna's address book, ~25 vCards

Standard library only.  ``mail/`` is deleted and rebuilt on every run; see
README.md for what the data contains and which items are broken on purpose.
"""

from __future__ import annotations

import base64
import html
import os
import quopri
import random
import shutil
import sys
import uuid
import zlib
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from email.utils import format_datetime
from pathlib import Path

SEED = 20261101
REF = datetime(2026, 11, 1, 0, 0, tzinfo=timezone.utc)  # "today" of the demo
START = REF - timedelta(days=548)  # ~18 months back
HERE = Path(__file__).resolve().parent
INTERNAL = "nordlicht-haustechnik.de"

rng = random.Random(SEED)


# --------------------------------------------------------------------------
# time zones (EU DST rule, no tzdata needed)
# --------------------------------------------------------------------------

def _last_sunday(year: int, month: int) -> date:
    d = date(year + (month == 12), month % 12 + 1, 1) - timedelta(days=1)
    return d - timedelta(days=(d.weekday() - 6) % 7)


def _eu_summer(utc: datetime) -> bool:
    y = utc.year
    begin = datetime.combine(_last_sunday(y, 3), datetime.min.time(), timezone.utc) + timedelta(hours=1)
    end = datetime.combine(_last_sunday(y, 10), datetime.min.time(), timezone.utc) + timedelta(hours=1)
    return begin <= utc < end


def local(utc: datetime, zone: str = "berlin") -> datetime:
    base = 0 if zone == "london" else 1
    off = base + (1 if _eu_summer(utc) else 0)
    return utc.astimezone(timezone(timedelta(hours=off)))


def berlin_wall_to_utc(d: date, hour: int, minute: int = 0) -> datetime:
    guess = datetime(d.year, d.month, d.day, hour, minute, tzinfo=timezone.utc) - timedelta(hours=1)
    off = 2 if _eu_summer(guess) else 1
    return datetime(d.year, d.month, d.day, hour, minute, tzinfo=timezone.utc) - timedelta(hours=off)


def closed(d: date) -> bool:
    """Weekend, public holiday or the company's Christmas shutdown."""
    return (d.weekday() >= 5 or (d.month, d.day) in {(1, 1), (5, 1), (10, 3)}
            or (d.month == 12 and d.day >= 24) or d in {date(2026, 4, 3), date(2026, 4, 6), date(2026, 5, 14),
                                                        date(2026, 5, 25), date(2025, 5, 29), date(2025, 6, 9)})


def business(utc: datetime, zone: str = "berlin", first: int = 7, last: int = 17) -> datetime:
    """Move a time into the next weekday working hours (local)."""
    loc = local(utc, zone)
    if not closed(loc.date()) and first <= loc.hour < last:
        return utc
    d = loc.date()
    if loc.hour >= last or closed(d):
        d += timedelta(days=1)
    while closed(d):
        d += timedelta(days=1)
    h = first + rng.choice([0, 0, 1, 1, 2])
    u = berlin_wall_to_utc(d, h, rng.randrange(60))
    if zone == "london":
        u += timedelta(hours=1)
    return u + timedelta(seconds=rng.randrange(60))


WD_DE = ["Montag", "Dienstag", "Mittwoch", "Donnerstag", "Freitag", "Samstag", "Sonntag"]
WD_EN = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
MON_DE = ["Januar", "Februar", "März", "April", "Mai", "Juni", "Juli", "August", "September",
          "Oktober", "November", "Dezember"]
MON_EN = ["January", "February", "March", "April", "May", "June", "July", "August", "September",
          "October", "November", "December"]


def day_text(d: date, lang: str) -> str:
    if lang == "en":
        return f"{WD_EN[d.weekday()]} {d.day} {MON_EN[d.month - 1]}"
    return f"{WD_DE[d.weekday()]}, {d:%d.%m.%Y}"


def money(x: float, lang: str) -> str:
    s = f"{x:,.2f}"
    if lang == "en":
        return s
    return s.replace(",", "_").replace(".", ",").replace("_", ".")


# --------------------------------------------------------------------------
# people and organisations
# --------------------------------------------------------------------------

@dataclass
class P:
    first: str
    last: str
    gender: str  # f | m | x (role mailbox)
    email: str
    org: str = ""  # customer key, "internal", "free", "supplier", ...
    mua: str = "outlook"  # outlook | thunderbird | gmail | gmx | apple | tonline | exchange
    lang: str = "de"
    style: str = "formal"  # formal | semi | du
    title: str = ""
    display: str | None = None
    zone: str = "berlin"

    @property
    def name(self) -> str:
        return self.display if self.display is not None else f"{self.first} {self.last}".strip()


OWNER = P("Anna", "Weber", "f", f"anna.weber@{INTERNAL}", "internal", "thunderbird",
          title="Kundenservice & Auftragsabwicklung")
OWNER_ALIAS = f"a.weber@{INTERNAL}"
JONAS = P("Jonas", "Keller", "m", f"jonas.keller@{INTERNAL}", "internal", "thunderbird", title="Leitung Kundendienst")
MEHMET = P("Mehmet", "Yılmaz", "m", f"mehmet.yilmaz@{INTERNAL}", "internal", "apple", title="Servicetechniker")
SABINE = P("Sabine", "Hoffmann", "f", f"sabine.hoffmann@{INTERNAL}", "internal", "thunderbird", title="Buchhaltung")
HENRIK = P("Henrik", "Nordmann", "m", f"h.nordmann@{INTERNAL}", "internal", "thunderbird", title="Geschäftsführer")
INFO = P("Nordlicht Haustechnik", "", "x", f"info@{INTERNAL}", "internal", "thunderbird",
         display="Nordlicht Haustechnik GmbH")
COLLEAGUES = [JONAS, MEHMET, SABINE, HENRIK]

NORDLICHT_ADDR = "Hafenstraße 17 · 24103 Kiel"


@dataclass
class Org:
    key: str
    name: str
    domain: str  # registrable domain
    street: str
    city: str
    phone: str
    lang: str
    objects: list[tuple[str, str]]  # (long name, short name)
    people: list[P] = field(default_factory=list)


ORGS: dict[str, Org] = {}


def org(key, name, domain, street, city, phone, lang, objects):
    ORGS[key] = Org(key, name, domain, street, city, phone, lang, objects)
    return ORGS[key]


org("swl", "Stadtwerke Lindenau GmbH", "stadtwerke-lindenau.de", "Bahnhofstraße 21", "24937 Lindenau",
    "+49 4621 4711-0", "de",
    [("Hallenbad Lindenau, Am Stadtpark 4", "Hallenbad"),
     ("Verwaltungsgebäude Bahnhofstraße 21", "Verwaltungsgebäude"),
     ("Klärwerk Nord, Betriebsgebäude", "Klärwerk Nord")])
org("hotel", "Hotel Seeblick Plön GmbH", "hotel-seeblick.example", "Uferweg 3", "24306 Plön",
    "04522 7890-0", "de",
    [("Hotel Seeblick, Uferweg 3, Plön", "Hotel Seeblick"),
     ("Wellnessbereich Hotel Seeblick", "Wellnessbereich")])
org("kramer", "Bauhaus Kramer GmbH & Co. KG", "bauhaus-kramer.de", "Industriestraße 8", "24537 Neumünster",
    "+49 (0)4321 55 20-0", "de",
    [("Baumarkt Neumünster, Industriestraße 8", "Markt Neumünster"),
     ("Zentrallager Rendsburg, Am Kanal 2", "Lager Rendsburg")])
org("thornbury", "Thornbury Facilities Ltd", "thornbury-facilities.co.uk", "14 Canal Street",
    "Manchester M1 3HE, United Kingdom", "+44 161 496 0734", "en",
    [("Harbour House, Kaistraße 12, Kiel", "Harbour House"),
     ("Fjord Office Park, Building B, Kiel", "Fjord Office Park")])
org("praxis", "Zahnarztpraxis Dr. Sommerfeld", "praxis-sommerfeld.de", "Holstenstraße 45", "24103 Kiel",
    "0431 / 66 77 88", "de",
    [("Praxis Holstenstraße 45", "Praxis"),
     ("Praxis Holstenstraße 45, Steri-Raum", "Steri-Raum")])
org("eichenhof", "Wohnungsbaugenossenschaft Eichenhof eG", "wbg-eichenhof.de", "Eichenhof 1", "24143 Kiel",
    "+49 431 2345670", "de",
    [("Wohnanlage Eichenhof 1–7, Kiel-Gaarden", "Eichenhof 1–7"),
     ("Wohnanlage Fördeblick, Ostring 120", "Fördeblick")])


def person(o, first, last, g, email, mua, style="formal", title="", known=True, **kw):
    p = P(first, last, g, email, o, mua, ORGS[o].lang if o in ORGS else "de", style, title, **kw)
    if o in ORGS and known:
        ORGS[o].people.append(p)
    return p


# Stadtwerke Lindenau (plain registrable domain, Exchange on-prem)
BRANDT = person("swl", "Thomas", "Brandt", "m", "t.brandt@stadtwerke-lindenau.de", "exchange",
                title="Leiter Gebäudemanagement")
RICHTER = person("swl", "Claudia", "Richter", "f", "claudia.richter@stadtwerke-lindenau.de", "exchange",
                 title="Einkauf")
MUELLER = person("swl", "Jürgen", "Müller", "m", "j.mueller@stadtwerke-lindenau.de", "exchange", "semi",
                 title="Haustechnik")
KRUEGER = person("swl", "Nadine", "Krüger", "f", "n.krueger@stadtwerke-lindenau.de", "exchange",
                 title="Kreditorenbuchhaltung", known=False)
# Hotel Seeblick (.example TLD)
VOGEL = person("hotel", "Katrin", "Vogel", "f", "k.vogel@hotel-seeblick.example", "outlook", "semi",
               title="Hoteldirektorin")
LEHMANN = person("hotel", "Frank", "Lehmann", "m", "technik@hotel-seeblick.example", "outlook", "du",
                 title="Haustechnik")
BIANCHI = P("Marco", "Bianchi", "m", "m.bianchi@hotel-seeblick.example", "hotel", "apple", "en", "semi",
            "F&B Manager")
# Bauhaus Kramer (purchasing writes from a subdomain)
SOMMER = person("kramer", "Jörg", "Sommer", "m", "j.sommer@einkauf.bauhaus-kramer.de", "outlook",
                title="Einkauf Haustechnik")
PKRAMER = person("kramer", "Petra", "Kramer", "f", "petra.kramer@bauhaus-kramer.de", "outlook",
                 title="Geschäftsführerin")
BRENNER = person("kramer", "Lukas", "Brenner", "m", "l.brenner@einkauf.bauhaus-kramer.de", "outlook",
                 title="Einkauf", known=False)
KBUCH = person("kramer", "Buchhaltung", "", "x", "buchhaltung@bauhaus-kramer.de", "outlook",
               display="Bauhaus Kramer Buchhaltung", known=False)
# Thornbury Facilities (.co.uk, London time)
WHITFIELD = person("thornbury", "Sarah", "Whitfield", "f", "sarah.whitfield@thornbury-facilities.co.uk",
                   "outlook", "semi", title="Contract Manager", zone="london")
OCONNOR = person("thornbury", "James", "O'Connor", "m", "james.oconnor@thornbury-facilities.co.uk",
                 "outlook", "formal", title="Accounts Payable", zone="london")
TACCOUNTS = person("thornbury", "Accounts Payable", "", "x", "accounts@thornbury-facilities.co.uk", "outlook",
                   display="Thornbury Accounts Payable", known=False, zone="london")
# Praxis Sommerfeld (doctor also writes from a private t-online address)
SOMMERFELD = person("praxis", "Elke", "Sommerfeld", "f", "e.sommerfeld@praxis-sommerfeld.de", "apple",
                    "semi", title="Zahnärztin", display="Dr. Elke Sommerfeld")
SOMMERFELD_PRIV = P("Elke", "Sommerfeld", "f", "dr.e.sommerfeld@t-online.de", "praxis", "tonline", "de",
                    "semi", display="Elke Sommerfeld")
GROTE = person("praxis", "Melanie", "Grote", "f", "empfang@praxis-sommerfeld.de", "outlook", "semi",
               title="Praxismanagerin")
# WBG Eichenhof (caretaker uses gmx.de)
SCHULZE = person("eichenhof", "Martin", "Schulze", "m", "m.schulze@wbg-eichenhof.de", "outlook",
                 title="Technischer Leiter")
HANSEN = person("eichenhof", "Birgit", "Hansen", "f", "b.hansen@wbg-eichenhof.de", "outlook",
                title="Buchhaltung / Mietenverwaltung")
KRAUSE = P("Uwe", "Krause", "m", "uwe.krause62@gmx.de", "eichenhof", "gmx", "de", "semi", "Hausmeister")
KOEHLER = person("eichenhof", "Björn", "Köhler", "m", "b.koehler@wbg-eichenhof.de", "outlook",
                 title="Bestandsmanagement", known=False)

# not customers
PETERSEN = P("Olaf", "Petersen", "m", "o.petersen@waermetechnik-nord.example", "supplier", "outlook",
             title="Außendienst")
FISCHER = P("Rainer", "Fischer", "m", "elektro-fischer@gmx.de", "free", "gmx", "de", "du",
            display="Elektro Fischer")
MERTENS = P("Lisa", "Mertens", "f", "lisa.mertens84@web.de", "free", "gmx", "de", "semi")
KHOFF = P("Klaus", "Hoffmann", "m", "k.hoffmann1971@gmail.com", "free", "gmail", "de", "formal")
JANSEN = P("Peter", "Jansen", "m", "peter.jansen@t-online.de", "free", "tonline", "de", "formal")
LANGE = P("Ingrid", "Lange", "f", "ingrid.lange@web.de", "free", "gmx", "de", "formal")
SPAMMER = P("Daniel", "Brooks", "m", "daniel.brooks.seo@gmail.com", "free", "gmail", "en", "semi")


# --------------------------------------------------------------------------
# text helpers: greetings, signatures, quoting
# --------------------------------------------------------------------------

def greeting(frm: P, to: P, lang: str) -> str:
    if to.gender == "x":
        return "Sehr geehrte Damen und Herren," if lang == "de" else "Dear Sir or Madam,"
    style = to.style if frm is OWNER or frm.org == "internal" else frm.style
    if to.org == "internal" and frm.org == "internal":
        return f"Hallo {to.first},"
    if lang == "en":
        if style == "formal":
            return f"Dear {'Ms' if to.gender == 'f' else 'Mr'} {to.last},"
        return f"Hi {to.first},"
    if style == "du":
        return f"Hallo {to.first},"
    if style == "semi":
        return f"Hallo {'Frau' if to.gender == 'f' else 'Herr'} {to.last},"
    return f"Sehr geehrte{'' if to.gender == 'f' else 'r'} {'Frau' if to.gender == 'f' else 'Herr'} {to.last},"


def signoff(frm: P, to: P, lang: str) -> str:
    style = to.style if frm is OWNER or frm.org == "internal" else frm.style
    if lang == "en":
        return {"formal": "Kind regards,", "semi": "Best regards,", "du": "Cheers,"}[style]
    if frm.org == "internal" and to.org == "internal":
        return rng.choice(["Gruß", "Viele Grüße", "LG"])
    return {"formal": "Mit freundlichen Grüßen", "semi": "Viele Grüße", "du": "Gruß"}[style]


def signature(p: P, lang: str, named: bool = True) -> str:
    if p.org == "internal":
        if p is MEHMET:
            return "\n\nVon meinem iPhone gesendet"
        lines = [p.name, p.title, "Nordlicht Haustechnik GmbH", NORDLICHT_ADDR,
                 f"Tel. +49 431 987654-{10 + COLLEAGUES.index(p) if p in COLLEAGUES else 12} · {p.email}",
                 "www.nordlicht-haustechnik.de", "",
                 "Geschäftsführer: Henrik Nordmann · Amtsgericht Kiel HRB 12345 KI"]
        return "\n\n-- \n" + "\n".join(lines)
    if p.org in ORGS and not p.email.endswith(("gmx.de", "t-online.de", "web.de", "gmail.com")):
        o = ORGS[p.org]
        lines = [p.name if p.gender != "x" else o.name] if named or p.gender == "x" else []
        if p.title and p.gender != "x":
            lines.append(p.title)
        lines += ["", o.name, o.street, o.city, f"{'Phone' if lang == 'en' else 'Tel.'} {o.phone}"]
        if p.gender != "x":
            lines.append(p.email)
        if p.org == "thornbury":
            lines += ["", "Registered in England and Wales No. 08123456. This e-mail and any attachments are "
                          "confidential and intended solely for the addressee."]
        return "\n\n" + "\n".join(lines)
    if p.mua == "apple":
        return "\n\nVon meinem iPhone gesendet"
    if p is FISCHER:
        return "\n\nElektro Fischer – Inh. Rainer Fischer\nDorfstraße 9, 24245 Kirchbarkau\nMobil 0171 2233445"
    return "\n\n" + p.first if p.first else ""


def compose(frm: P, to: P, text: str, lang: str, short: bool = False) -> str:
    if short:
        return text.strip() + signature(frm, lang)
    so = signoff(frm, to, lang)
    style = to.style if (frm is OWNER or frm.org == "internal") else frm.style
    name = frm.first if (frm.org == "internal" and to.org == "internal") or style == "du" else frm.name
    if frm.gender == "x":
        name = frm.name
    body = f"{greeting(frm, to, lang)}\n\n{text.strip()}\n\n{so}\n{name}"
    if frm.org == "internal" or frm.org in ORGS:
        body += signature(frm, lang, named=frm.org == "internal")
    return body


def quote_block(prev: "Mail", replier: P, lang: str) -> str:
    core = prev.core
    d = local(prev.date, prev.sender.zone) if prev.date else REF
    if replier.mua in ("outlook", "exchange"):
        if lang == "en":
            head = (f"From: {prev.sender.name} <{prev.sender.email}>\nSent: {WD_EN[d.weekday()]}, "
                    f"{d.day} {MON_EN[d.month - 1]} {d.year} {d:%H:%M}\nTo: "
                    + "; ".join(f"{p.name} <{p.email}>" for p in prev.to)
                    + f"\nSubject: {prev.subject}\n\n")
        else:
            head = (f"-----Ursprüngliche Nachricht-----\nVon: {prev.sender.name} <{prev.sender.email}>\n"
                    f"Gesendet: {WD_DE[d.weekday()]}, {d.day}. {MON_DE[d.month - 1]} {d.year} {d:%H:%M}\nAn: "
                    + "; ".join(f"{p.name} <{p.email}>" for p in prev.to)
                    + f"\nBetreff: {prev.subject}\n\n")
        return "\n\n" + head + core
    if lang == "en":
        head = f"On {d:%d/%m/%Y} {d:%H:%M}, {prev.sender.name} wrote:"
    else:
        head = f"Am {d:%d.%m.%Y} um {d:%H:%M} schrieb {prev.sender.name}:"
    quoted = "\n".join(("> " + ln) if ln else ">" for ln in core.splitlines())
    return "\n\n" + head + "\n" + quoted


# --------------------------------------------------------------------------
# message model and rendering
# --------------------------------------------------------------------------

@dataclass
class Mail:
    sender: P
    to: list[P]
    subject: str
    core: str  # body without quoted text
    body: str  # full plain text body
    date: datetime | None
    cc: list[P] = field(default_factory=list)
    msgid: str | None = None
    in_reply_to: str | None = None
    references: list[str] = field(default_factory=list)
    html: str = ""  # "" | "alt" | "only"
    attachments: list[tuple[str, bytes, str]] = field(default_factory=list)
    extra: list[tuple[str, str]] = field(default_factory=list)
    from_addr: str | None = None  # override sender e-mail (owner alias)
    reply_to: str | None = None
    drop_date: bool = False
    wrong_charset: bool = False
    raw_utf8_subject: bool = False
    folder: str = "cur"
    flags: str = "S"
    bulk: bool = False
    kind: str = ""  # for the summary
    note: str = ""  # deliberate oddity, listed in the summary
    delivered_to: str = OWNER.email
    hdr_style: str = ""
    body_style: str = ""
    raw: bytes = b""
    path: str = ""

    @property
    def outbound(self) -> bool:
        return self.sender is OWNER


MAILS: list[Mail] = []
EVENTS: list[dict] = []


def rand_hex(n: int) -> str:
    return "%0*x" % (n, rng.getrandbits(4 * n))


def rand_uuid() -> uuid.UUID:
    return uuid.UUID(int=rng.getrandbits(128), version=4)


def make_msgid(p: P, when: datetime) -> str:
    dom = p.email.rpartition("@")[2]
    ms = int(when.timestamp() * 1000)
    if p.mua == "outlook":
        srv = rng.choice(["AM9PR07MB", "DB8PR02MB", "FR3P281MB", "PAXPR10MB", "LO4P265MB"]) + str(rng.randrange(1000, 9999))
        region = "eurprd07" if not srv.startswith(("FR3", "LO4")) else ("DEUP281" if srv.startswith("FR3") else "GBRP265")
        return f"{srv}{rand_hex(20).upper()}@{srv}.{region}.prod.outlook.com"
    if p.mua == "exchange":
        return f"{rand_hex(32)}@EX0{rng.randrange(1, 4)}.swl.local"
    if p.mua == "gmail":
        alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-"
        return "CA" + "".join(rng.choice(alphabet) for _ in range(46)) + "@mail.gmail.com"
    if p.mua == "gmx":
        return f"trinity-{rand_uuid()}-{ms}@3c-app-{'webde' if 'web.de' in dom else 'gmx'}-bs{rng.randrange(10, 80)}"
    if p.mua == "tonline":
        return f"{ms}.{rng.randrange(10000, 99999)}.{rand_hex(6)}@email.t-online.de"
    if p.mua == "apple":
        return f"{str(rand_uuid()).upper()}@{dom}"
    if p.mua == "bulk":
        return f"{ms // 1000}.{rand_hex(16)}@mailer.{dom}"
    return f"{rand_uuid()}@{dom}"


def encoded_word(text: str, style: str) -> str:
    """RFC 2047 encode ``text`` (style: utf8-q, utf8-b, latin1-q, latin1-b)."""
    cs, enc = style.split("-")
    charset = "UTF-8" if cs == "utf8" else "ISO-8859-1"
    if cs == "latin1":
        try:
            text.encode("iso-8859-1")
        except UnicodeEncodeError:
            charset, cs = "UTF-8", "utf8"
    codec = "utf-8" if cs == "utf8" else "iso-8859-1"
    words: list[str] = []
    chunk = ""

    def encode(s: str) -> str:
        b = s.encode(codec)
        if enc == "b":
            return f"=?{charset}?B?{base64.b64encode(b).decode()}?="
        out = []
        for byte in b:
            c = chr(byte)
            if c == " ":
                out.append("_")
            elif c.isalnum() and byte < 128:
                out.append(c)
            elif c in "!*+-/" and byte < 128:
                out.append(c)
            else:
                out.append(f"={byte:02X}")
        return f"=?{charset}?Q?{''.join(out)}?="

    for ch in text:
        if len(encode(chunk + ch)) > 70:
            words.append(encode(chunk))
            chunk = ch
        else:
            chunk += ch
    if chunk:
        words.append(encode(chunk))
    return "\n ".join(words)


def hdr_text(text: str, style: str) -> str:
    if all(ord(c) < 128 for c in text):
        return text
    # like most MUAs: leave leading plain words ("Re:", "AW:", ...) unencoded
    first = next(i for i, c in enumerate(text) if ord(c) > 127)
    cut = text.rfind(" ", 0, first)
    if cut <= 0 or "=?" in text[:cut]:
        return encoded_word(text, style)
    return text[:cut] + " " + encoded_word(text[cut + 1:], style)


def fmt_addr(p: P, style: str, email: str | None = None) -> str:
    email = email or p.email
    name = p.name
    if not name:
        return email
    if any(ord(c) > 127 for c in name):
        return f"{encoded_word(name, style)} <{email}>"
    if any(c in name for c in '.,;:@()<>[]"'):
        return f'"{name}" <{email}>'
    return f"{name} <{email}>"


def fold_addrs(parts: list[str]) -> str:
    return ",\n\t".join(parts) if len(parts) > 1 and sum(map(len, parts)) > 60 else ", ".join(parts)


def text_part(text: str, charset: str, cte: str, subtype: str = "plain", flowed: bool = False) -> bytes:
    codec = {"utf-8": "utf-8", "iso-8859-1": "iso-8859-1", "windows-1252": "cp1252", "us-ascii": "ascii"}[charset]
    try:
        data = text.encode(codec)
    except UnicodeEncodeError:
        charset, codec = "utf-8", "utf-8"
        data = text.encode(codec)
    if all(b < 128 for b in data) and cte == "8bit":
        cte = "7bit"
        if charset != "utf-8":
            charset = "us-ascii"
    head = f"Content-Type: text/{subtype}; charset={charset if subtype == 'html' else charset}"
    if flowed and subtype == "plain":
        head += "; format=flowed"
    head += f"\nContent-Transfer-Encoding: {cte}\n"
    if cte == "quoted-printable":
        payload = quopri.encodestring(data)
    elif cte == "base64":
        payload = base64.encodebytes(data)
    else:
        payload = data
    if not payload.endswith(b"\n"):
        payload += b"\n"
    return head.encode() + b"\n" + payload


def html_of(text: str, lang: str) -> str:
    paras = []
    for block in text.split("\n\n"):
        paras.append("<p>" + "<br>\n".join(html.escape(x) for x in block.splitlines()) + "</p>")
    return (f'<html><head><meta http-equiv="Content-Type" content="text/html; charset=utf-8"></head>\n'
            f'<body lang="{lang}"><div style="font-family:Calibri,Arial,sans-serif;font-size:11pt">\n'
            + "\n".join(paras) + "\n</div></body></html>\n")


def boundary(p: P) -> str:
    if p.mua in ("outlook", "exchange"):
        return f"_000_{rand_hex(24).upper()}_"
    if p.mua == "gmail":
        return rand_hex(28)
    if p.mua == "apple":
        return f"Apple-Mail={rand_uuid()}".upper().replace("APPLE-MAIL", "Apple-Mail")
    return "------------" + "".join(rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789abcdefghijklmnopqrstuvwxyz")
                                    for _ in range(24))


def attachment_part(fname: str, data: bytes, ctype: str) -> bytes:
    if all(ord(c) < 128 for c in fname):
        disp = f'attachment; filename="{fname}"'
        ct = f'{ctype}; name="{fname}"'
    else:
        q = "".join(c if c.isalnum() and ord(c) < 128 or c in "._-" else
                    "".join(f"%{b:02X}" for b in c.encode()) for c in fname)
        disp = f"attachment;\n filename*=UTF-8''{q}"
        ct = f'{ctype};\n name="{encoded_word(fname, "utf8-q")}"'
    return (f"Content-Type: {ct}\nContent-Disposition: {disp}\nContent-Transfer-Encoding: base64\n\n"
            ).encode() + base64.encodebytes(data)


def fake_pdf(title: str, size: int) -> bytes:
    stream = zlib.compress(f"BT /F1 14 Tf 72 770 Td ({title}) Tj ET\nBT /F1 10 Tf 72 740 Td "
                           f"(Nordlicht Haustechnik GmbH - {NORDLICHT_ADDR.replace('·', '-')}) Tj ET".encode("latin-1", "replace"))
    img = rng.randbytes(max(256, size - 900))
    parts = [b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n",
             b"1 0 obj\n<< /Type /Catalog /Pages 2 0 R >>\nendobj\n",
             b"2 0 obj\n<< /Type /Pages /Kids [3 0 R] /Count 1 >>\nendobj\n",
             b"3 0 obj\n<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Contents 4 0 R "
             b"/Resources << /Font << /F1 5 0 R >> /XObject << /Im1 6 0 R >> >> >>\nendobj\n",
             b"4 0 obj\n<< /Length %d /Filter /FlateDecode >>\nstream\n" % len(stream) + stream + b"\nendstream\nendobj\n",
             b"5 0 obj\n<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>\nendobj\n",
             b"6 0 obj\n<< /Type /XObject /Subtype /Image /Width 64 /Height 32 /ColorSpace /DeviceGray "
             b"/BitsPerComponent 8 /Length %d /Filter /FlateDecode >>\nstream\n" % len(img) + img + b"\nendstream\nendobj\n",
             b"trailer\n<< /Root 1 0 R /Info << /Title (" + title.encode("latin-1", "replace") + b") /Producer (Nordlicht ERP 4.2) >> >>\n%%EOF\n"]
    return b"".join(parts)


MUA_HEADERS = {
    "thunderbird": [("User-Agent", "Mozilla Thunderbird")],
    "outlook": [("X-MS-Has-Attach", ""), ("X-MS-TNEF-Correlator", ""), ("X-MS-Exchange-Organization-SCL", "1")],
    "exchange": [("X-Mailer", "Microsoft Outlook 16.0"), ("X-MS-Has-Attach", "")],
    "gmail": [],
    "gmx": [("X-UI-Message-Type", "mail"), ("X-Priority", "3"), ("Importance", "normal")],
    "tonline": [("X-Mailer", "t-online.de Mail")],
    "apple": [("X-Mailer", "iPhone Mail (21F90)")],
    "bulk": [],
}

IP = {"swl": "192.0.2.45", "hotel": "198.51.100.23", "kramer": "192.0.2.140", "thornbury": "52.101.73.12",
      "praxis": "198.51.100.77", "eichenhof": "203.0.113.61", "supplier": "203.0.113.9", "free": "212.227.15.18",
      "bulk": "198.51.100.200"}


def choose_styles(m: Mail) -> None:
    mua = m.sender.mua
    if not m.hdr_style:
        m.hdr_style = {
            "outlook": rng.choice(["utf8-b", "latin1-q", "utf8-q"]),
            "exchange": rng.choice(["latin1-q", "latin1-b", "utf8-b"]),
            "thunderbird": "utf8-q",
            "gmail": rng.choice(["utf8-b", "utf8-q"]),
            "gmx": "utf8-q",
            "tonline": rng.choice(["latin1-q", "utf8-q"]),
            "apple": "utf8-q",
            "bulk": rng.choice(["utf8-q", "utf8-b"]),
        }[mua]
    if not m.body_style:
        m.body_style = {
            "outlook": rng.choice(["windows-1252/quoted-printable", "utf-8/base64", "iso-8859-1/quoted-printable"]),
            "exchange": rng.choice(["iso-8859-1/quoted-printable", "utf-8/base64"]),
            "thunderbird": rng.choice(["utf-8/8bit", "utf-8/8bit", "utf-8/quoted-printable"]),
            "gmail": "utf-8/quoted-printable",
            "gmx": "utf-8/quoted-printable",
            "tonline": rng.choice(["iso-8859-1/quoted-printable", "utf-8/quoted-printable"]),
            "apple": "utf-8/quoted-printable",
            "bulk": rng.choice(["utf-8/quoted-printable", "utf-8/8bit"]),
        }[mua]
        if m.sender.mua == "gmail" and not m.html:
            m.html = "alt"


def render(m: Mail) -> bytes:
    choose_styles(m)
    s = m.sender
    hs = m.hdr_style
    lang = "en" if s.lang == "en" else "de"
    H: list[tuple[str, str]] = []
    when = m.date or REF
    if not m.outbound and s.org != "internal":
        if m.kind == "auto-reply":
            rp = "<>"
        elif m.bulk:
            rp = f"<bounce-{rand_hex(12)}@{(m.from_addr or s.email).rpartition('@')[2]}>"
        else:
            rp = f"<{m.from_addr or s.email}>"
        H.append(("Return-Path", rp))
        H.append(("Delivered-To", m.delivered_to))
        t1 = local(when + timedelta(seconds=rng.randrange(2, 40)))
        t0 = local(when + timedelta(seconds=rng.randrange(0, 2)))
        H.append(("Received", f"from mx01.{INTERNAL} (localhost [127.0.0.1])\n\tby mail.{INTERNAL} (Postfix) with "
                              f"ESMTP id {rand_hex(10).upper()}\n\tfor <{m.delivered_to}>; "
                              f"{format_datetime(t1)}"))
        sdom = (m.from_addr or s.email).rpartition("@")[2]
        ip = IP.get("bulk" if m.bulk and m.kind != "auto-reply" else s.org, "203.0.113.80")
        H.append(("Received", f"from mail.{sdom} (mail.{sdom} [{ip}])\n\tby mx01.{INTERNAL} (Postfix) with "
                              f"ESMTPS id {rand_hex(10).upper()}\n\tfor <{m.delivered_to}>; {format_datetime(t0)}"))
    elif s.org == "internal" and not m.outbound:
        H.append(("Return-Path", f"<{s.email}>"))
        H.append(("Delivered-To", m.delivered_to))
        H.append(("Received", f"from [10.0.0.{rng.randrange(20, 90)}] (unknown [10.0.0.1])\n\tby mail.{INTERNAL} "
                              f"(Postfix) with ESMTPSA id {rand_hex(10).upper()}\n\tfor <{m.delivered_to}>; "
                              f"{format_datetime(local(when + timedelta(seconds=3)))}"))
    if m.msgid is None and not m.note.startswith("no Message-ID"):
        m.msgid = make_msgid(s, when)
    H.append(("From", fmt_addr(s, hs, m.from_addr)))
    if m.to:
        H.append(("To", fold_addrs([fmt_addr(p, hs) for p in m.to])))
    else:
        H.append(("To", "undisclosed-recipients:;"))
    if m.cc:
        H.append(("Cc", fold_addrs([fmt_addr(p, hs) for p in m.cc])))
    if m.reply_to:
        H.append(("Reply-To", m.reply_to))
    if m.raw_utf8_subject:
        H.append(("Subject", m.subject))
    else:
        H.append(("Subject", hdr_text(m.subject, hs)))
    if s.mua in ("outlook", "exchange"):
        H.append(("Thread-Topic", hdr_text(strip_prefix(m.subject), hs)))
        H.append(("Thread-Index", base64.b64encode(rng.randbytes(22)).decode()))
    if not m.drop_date:
        H.append(("Date", format_datetime(local(when, s.zone))))
    if m.msgid:
        H.append(("Message-ID", f"<{m.msgid}>"))
    if m.in_reply_to:
        H.append(("In-Reply-To", f"<{m.in_reply_to}>"))
    if m.references:
        H.append(("References", "\n ".join(f"<{r}>" for r in m.references)))
    H += m.extra
    H += MUA_HEADERS[s.mua]
    if s.mua in ("thunderbird",):
        H.append(("Content-Language", "en-GB" if lang == "en" else "de-DE"))
    elif s.mua in ("outlook", "exchange"):
        H.append(("Accept-Language", "en-GB, en-US" if lang == "en" else "de-DE, en-US"))
        H.append(("Content-Language", "en-GB" if lang == "en" else "de-DE"))
    H.append(("MIME-Version", "1.0"))

    charset, cte = m.body_style.split("/")
    flowed = False
    if m.wrong_charset:
        body = (f"Content-Type: text/plain; charset=us-ascii\nContent-Transfer-Encoding: 8bit\n\n").encode() \
               + m.body.encode("iso-8859-1") + b"\n"
    elif m.html == "only":
        body = text_part(m.body if m.body.lstrip().startswith("<") else html_of(m.body, lang), charset, cte, "html")
    elif m.html == "alt":
        b = boundary(s)
        body = (f'Content-Type: multipart/alternative;\n boundary="{b}"\n\n').encode()
        body += f"--{b}\n".encode() + text_part(m.body, charset, cte, "plain") + b"\n"
        body += f"--{b}\n".encode() + text_part(html_of(m.body, lang), charset, cte, "html") + b"\n"
        body += f"--{b}--\n".encode()
    else:
        body = text_part(m.body, charset, cte, "plain", flowed)
    if m.attachments:
        b = boundary(s)
        inner = body
        body = (f'Content-Type: multipart/mixed;\n boundary="{b}"\n\n').encode()
        if s.mua == "thunderbird":
            body += b"This is a multi-part message in MIME format.\n"
        body += f"--{b}\n".encode() + inner + b"\n"
        for fname, data, ctype in m.attachments:
            body += f"--{b}\n".encode() + attachment_part(fname, data, ctype) + b"\n"
        body += f"--{b}--\n".encode()
    if s.mua in ("outlook", "exchange") and m.attachments:
        H = [(k, "yes" if k == "X-MS-Has-Attach" else v) for k, v in H]
    head = b""
    for k, v in H:
        line = f"{k}: {v}".rstrip() + "\n" if v else f"{k}: \n"
        head += line.encode("utf-8")
    raw = head + body
    m.raw = raw
    return raw


PREFIX = ("re:", "aw:", "antw:", "wg:", "fwd:", "fw:")


def strip_prefix(subj: str) -> str:
    s = subj
    while s.lower().startswith(PREFIX):
        s = s.split(":", 1)[1].lstrip()
    return s


def reply_prefix(p: P, lang: str) -> str:
    if p.mua in ("outlook", "exchange"):
        return "RE: " if lang == "en" else "AW: "
    if p.mua == "gmx":
        return "Aw: "
    return "Re: "


# --------------------------------------------------------------------------
# threads
# --------------------------------------------------------------------------

class Thread:
    def __init__(self, o: Org | None, start: datetime, lang: str, quirks: dict | None = None,
                 obj: int | None = None):
        self.o = o
        self.lang = lang
        self.t = business(start)
        self.msgs: list[Mail] = []
        self.quirks = quirks or {}
        self.subject = ""
        self.obj, self.objshort = (o.objects[obj if obj is not None else rng.randrange(len(o.objects))]
                                   if o else ("", ""))
        self.alive = True

    def day(self, lo: int, hi: int) -> date:
        d = local(self.t).date() + timedelta(days=rng.randint(lo, hi))
        while closed(d):
            d += timedelta(days=1)
        return d

    def send(self, frm: P, to: list[P] | P, text: str, *, cc=(), gap=(1.5, 30), attach=None, subject=None,
             reply=True, html="", short=False, zone=None, **kw) -> Mail | None:
        if not self.alive:
            return None
        to = [to] if isinstance(to, P) else list(to)
        step = len(self.msgs)
        q = dict(self.quirks.get(step, {}))
        q.update(kw)
        if self.msgs:
            self.t = business(self.t + timedelta(hours=rng.uniform(*gap)), frm.zone)
        if self.t > REF - timedelta(hours=2):
            self.alive = False
            return None
        prev = self.msgs[-1] if self.msgs and reply else None
        core = compose(frm, to[0], text, self.lang, short)
        if prev is not None:
            subj = subject or self._re(prev.subject, frm)
            quoting = q.pop("quote", frm.mua not in ("apple",))
            body = core + (quote_block(prev, frm, self.lang) if quoting else "")
        else:
            subj = subject or self.subject
            body = core
        m = Mail(frm, to, subj, core, body, self.t, cc=list(cc), html=html)
        if prev is not None:
            refs = (prev.references or ([prev.in_reply_to] if prev.in_reply_to else [])) + ([prev.msgid] if prev.msgid else [])
            mode = q.pop("refs", "both" if rng.random() > 0.1 or frm.mua in ("outlook", "exchange") else "irt")
            if mode in ("both", "irt") and prev.msgid:
                m.in_reply_to = prev.msgid
            if mode in ("both", "refs"):
                m.references = refs[-8:]
            m._prev = prev
        if attach:
            for a in ([attach] if isinstance(attach, tuple) else attach):
                fname, kb = a
                m.attachments.append((fname, fake_pdf(fname.rsplit(".", 1)[0], kb * 1024), "application/pdf"))
        for k, v in q.items():
            setattr(m, k, v)
        if m.msgid is None and not m.note.startswith("no Message-ID"):
            m.msgid = make_msgid(frm, self.t)
        self.msgs.append(m)
        MAILS.append(m)
        return m

    @staticmethod
    def _re(prev_subject: str, frm: P) -> str:
        lang = "en" if frm.lang == "en" else "de"
        pre = reply_prefix(frm, lang)
        if prev_subject.lower().startswith(pre.lower()):
            return prev_subject
        n = 0
        s = prev_subject
        while s.lower().startswith(PREFIX):
            s = s.split(":", 1)[1].lstrip()
            n += 1
        if n >= 2:
            return prev_subject
        return pre + prev_subject

    def event(self, summary, d: date, hour, minutes, attendees, organizer=OWNER, location=None, **kw):
        EVENTS.append(dict(summary=summary, start=berlin_wall_to_utc(d, int(hour), 0 if hour == int(hour) else 30),
                           minutes=minutes, attendees=attendees, organizer=organizer,
                           location=location if location is not None else self.obj,
                           created=self.t, **kw))


def nr(prefix: str, year: int) -> str:
    return f"{prefix}-{year}-{rng.randrange(100, 999):04d}"


def amount(lo: int, hi: int) -> float:
    return round(rng.uniform(lo, hi), -1) + rng.choice([0, 0.5, 0.9]) * 0


# ---- German templates -------------------------------------------------------

def th_angebot(t: Thread, c: P, c2: P | None = None, variant: str = "heizung"):
    o = OWNER
    if variant == "lueftung":
        t.subject = rng.choice([f"Anfrage Lüftungsanlage {t.objshort}", f"Angebot Lüftung {t.objshort} erbeten"])
        ask = (f"für {t.obj} möchten wir die Lüftungsanlage erneuern lassen. Die vorhandene Anlage ist "
               f"über 20 Jahre alt und sehr laut. Bitte erstellen Sie uns ein Angebot für eine neue Anlage mit "
               f"Wärmerückgewinnung.")
        a, b = amount(18000, 42000), amount(24000, 56000)
        var = f"  Variante A: Zentrales Lüftungsgerät mit WRG – {money(a, 'de')} € netto\n  Variante B: Dezentrale Geräte (6 Stück) – {money(b, 'de')} € netto"
    else:
        t.subject = rng.choice([f"Anfrage Angebot Heizungsmodernisierung {t.objshort}",
                                f"Angebot Heizungstausch – {t.objshort}", f"Heizung {t.objshort}: Bitte um Angebot"])
        ask = (f"wir planen für {t.obj} den Austausch der Heizungsanlage (Gas-Brennwertkessel, Baujahr "
               f"{rng.choice([1998, 2002, 2004, 2006])}). Können Sie uns dafür ein Angebot erstellen? Gerne auch "
               f"mit einer Variante Wärmepumpe.\n\nFür eine Besichtigung stehe ich nächste Woche vormittags zur "
               f"Verfügung.")
        a, b = amount(28000, 65000), amount(52000, 110000)
        var = (f"  Variante A: Gas-Brennwertkessel inkl. Montage – {money(a, 'de')} € netto\n"
               f"  Variante B: Luft-Wasser-Wärmepumpe (Kaskade) – {money(b, 'de')} € netto")
    if t.send(c, o, ask) is None:
        return
    d = t.day(3, 8)
    if not t.send(o, c, f"vielen Dank für Ihre Anfrage. Gerne kommt unser Kollege Jonas Keller am "
                        f"{day_text(d, 'de')} um 9:00 Uhr zur Besichtigung vorbei. Bitte geben Sie mir kurz "
                        f"Bescheid, ob der Termin passt.", cc=[JONAS], gap=(1, 8)):
        return
    t.event(f"Besichtigung {t.objshort} ({t.o.name})", d, 9, 90, [c, JONAS])
    t.send(c, o, rng.choice(["der Termin passt. Unser Hausmeister wird Herrn Keller am Haupteingang empfangen.",
                             "passt, danke. Bitte am Empfang melden.",
                             "der Termin ist in Ordnung, ich bin selbst vor Ort."]), gap=(2, 20), short=rng.random() < .3)
    angebot = nr("AN", local(t.t).year)
    t.t = berlin_wall_to_utc(d, 9) if berlin_wall_to_utc(d, 9) > t.t else t.t
    t.send(o, c, f"wie besprochen erhalten Sie anbei unser Angebot Nr. {angebot} für {t.obj}. Das Angebot "
                 f"enthält zwei Varianten:\n\n{var}\n\nDas Angebot ist sechs Wochen gültig. Für Rückfragen stehe ich "
                 f"Ihnen gerne zur Verfügung.", gap=(24, 96), attach=(f"Angebot_{angebot}.pdf", rng.randint(3, 5)),
           subject=f"Ihr Angebot {angebot} – {t.objshort}", reply=False if rng.random() < .3 else True)
    if rng.random() < .2:
        return  # still open: nobody answered
    t.send(c2 or c, o, "danke für das Angebot. Ist bei Variante B die Demontage der Altanlage und die Entsorgung "
                       "enthalten? Und wie lang ist derzeit die Lieferzeit?", gap=(24, 200))
    t.send(o, c2 or c, "ja, Demontage und fachgerechte Entsorgung sind in Position 4 enthalten. Die Lieferzeit "
                       "beträgt derzeit ca. 8–10 Wochen ab Auftragseingang.", gap=(1, 6))
    if rng.random() < .75:
        t.send(c, o, f"hiermit erteilen wir Ihnen den Auftrag für Variante B gemäß Angebot {angebot}. Die "
                     f"Bestellung folgt separat über unseren Einkauf.", gap=(48, 300), cc=[c2] if c2 else ())
        t.send(o, c, "vielen Dank für Ihren Auftrag! Ich melde mich in den nächsten Tagen mit einem Vorschlag "
                     "für die Terminplanung.", gap=(1, 5))


def th_stoerung(t: Thread, c: P, extra: P | None = None):
    o = OWNER
    what = rng.choice([("die Heizung ausgefallen", "Störung F.28"), ("kein Warmwasser mehr", "Fehler 4E"),
                       ("die Heizung ausgefallen", "Störmeldung „Flamme aus“"), ("die Heizung sehr laut", "")])
    t.subject = rng.choice([f"Heizungsstörung {t.objshort} – dringend!", f"Störung {t.objshort}",
                            f"DRINGEND: Störung {t.objshort}", f"Ausfall Heizung {t.objshort}"])
    code = f", die Anlage zeigt {what[1]} an" if what[1] else ""
    if t.send(c, o, f"seit heute früh ist bei uns im Objekt {t.obj} {what[0]}{code}. Können Sie heute noch jemanden "
                    f"vorbeischicken?", short=c.mua == "gmx") is None:
        return
    hour = local(t.t).hour + rng.randint(2, 3)
    t.send(o, c, f"danke für die Meldung. Unser Techniker Mehmet Yılmaz ist bereits unterwegs und wird gegen "
                 f"{min(hour, 18)}:00 Uhr bei Ihnen sein. Bitte sorgen Sie dafür, dass der Heizraum zugänglich ist.",
           gap=(0.1, 0.6), cc=[MEHMET] + ([extra] if extra else []))
    if extra:
        t.send(extra, o, "ich war heute mit dem Kollegen von Nordlicht vor Ort. Die Steuerung hatte keinen Strom, "
                         "die Sicherung im Unterverteiler war defekt. Habe sie getauscht, Anlage läuft.\n"
                         "Rechnung schicke ich an das Hotel.", gap=(3, 8), short=False, cc=[c])
    t.send(c, o, rng.choice(["vielen Dank für die schnelle Hilfe! Die Anlage läuft wieder.",
                             "alles wieder warm, danke an Ihren Techniker!",
                             "danke, es funktioniert wieder."]), gap=(3, 30), short=c.mua in ("gmx", "apple"))
    if rng.random() < .8:
        t.send(o, c, "gern geschehen. Laut Bericht unseres Technikers war die Zündelektrode verschlissen; sie "
                     "wurde provisorisch gereinigt. Das Ersatzteil ist bestellt, für den Austausch melde ich "
                     "mich mit einem Terminvorschlag.\n\nDer Notdiensteinsatz ist durch den Wartungsvertrag "
                     "abgedeckt.", gap=(4, 30))


def th_wartung(t: Thread, c: P):
    o = OWNER
    vnr = nr("WV", 2019 + rng.randrange(5))
    t.subject = rng.choice([f"Verlängerung Wartungsvertrag {vnr}", f"Wartungsvertrag {t.objshort} – Verlängerung"])
    end = t.day(30, 60)
    if t.send(o, c, f"Ihr Wartungsvertrag Nr. {vnr} für {t.obj} läuft zum {end:%d.%m.%Y} aus. Gerne "
                    f"verlängern wir den Vertrag zu den bisherigen Konditionen um ein weiteres Jahr; die "
                    f"Pauschale erhöht sich lediglich um die Materialpreisanpassung von 3,5 %.\n\nAnbei finden "
                    f"Sie den Entwurf der Vertragsverlängerung.",
              attach=(f"Wartungsvertrag_{vnr}_Verlängerung.pdf", 3)) is None:
        return
    t.send(c, o, "vielen Dank. Könnten Sie zusätzlich die Lüftungsanlage im Untergeschoss in den Vertrag "
                 "aufnehmen? Die wird bisher von einer anderen Firma gewartet.", gap=(24, 160))
    t.send(o, c, f"selbstverständlich. Ich habe die Lüftungsanlage als Position 3 ergänzt (jährliche Wartung "
                 f"inkl. Filterwechsel, {money(amount(380, 900), 'de')} € netto). Die angepasste Fassung "
                 f"finden Sie im Anhang.", gap=(2, 30), attach=(f"Wartungsvertrag_{vnr}_v2.pdf", 3))
    t.send(c, o, "passt so. Die unterschriebene Verlängerung schicke ich Ihnen per Post.", gap=(24, 120))


def th_rechnung(t: Thread, c: P, correction: bool = True, c_reply: P | None = None):
    o = OWNER
    year = local(t.t).year
    rnr = nr("RE", year)
    bnr = f"{rng.choice(['4500', 'BE-', 'PO'])}{rng.randrange(10000, 99999)}"
    bet = amount(400, 9000)
    worked = local(t.t).date() - timedelta(days=rng.randint(5, 20))
    t.subject = rng.choice([f"Rechnung {rnr}", f"Rechnung {rnr} – {t.objshort}", f"Ihre Rechnung {rnr}"])
    if t.send(o, c, f"anbei erhalten Sie unsere Rechnung {rnr} über die Wartungsarbeiten vom "
                    f"{worked:%d.%m.%Y} im Objekt {t.obj}. Der Rechnungsbetrag von {money(bet, 'de')} € ist zahlbar "
                    f"innerhalb von 14 Tagen ohne Abzug.", attach=(f"Rechnung_{rnr}.pdf", 2),
              cc=[SABINE] if rng.random() < .5 else ()) is None:
        return
    r = c_reply or c
    if correction:
        t.send(r, o, f"für die Buchung benötigen wir auf der Rechnung noch unsere Bestellnummer {bnr}. Könnten "
                     f"Sie die Rechnung bitte korrigiert erneut senden?", gap=(24, 100))
        t.send(o, r, f"entschuldigen Sie bitte, die Bestellnummer fehlte. Anbei die korrigierte Rechnung {rnr} "
                     f"mit Bestellnummer {bnr}.", gap=(1, 6), attach=(f"Rechnung_{rnr}_korrigiert.pdf", 2))
    if rng.random() < .7:
        t.send(r, o, "danke, die Rechnung ist zur Zahlung angewiesen.", gap=(24, 100))


def th_termin(t: Thread, c: P):
    o = OWNER
    d1 = t.day(7, 21)
    t.subject = rng.choice([f"Terminbestätigung Wartung {t.objshort}", f"Wartungstermin {t.objshort} am {d1:%d.%m.}",
                            f"Terminbestätigung {d1:%d.%m.%Y}"])
    if t.send(o, c, f"wie telefonisch besprochen bestätige ich Ihnen den Termin für die jährliche Wartung im "
                    f"Objekt {t.obj} am {day_text(d1, 'de')} ab 8:00 Uhr. Unser Team benötigt ca. 4 Stunden; während "
                    f"dieser Zeit steht kein Warmwasser zur Verfügung.") is None:
        return
    if rng.random() < .5:
        d2 = d1 + timedelta(days=rng.choice([1, 2, 7]))
        while closed(d2):
            d2 += timedelta(days=1)
        t.send(c, o, f"danke für die Bestätigung. Leider ist an dem Tag eine Veranstaltung im Haus – wäre auch "
                     f"{day_text(d2, 'de')} möglich?", gap=(2, 48))
        t.send(o, c, f"kein Problem, ich habe den Termin auf {day_text(d2, 'de')}, 8:00 Uhr verschoben. Eine "
                     f"aktualisierte Einladung folgt.", gap=(1, 5))
        t.event(f"Wartung {t.objshort} ({t.o.name})", d1, 8, 240, [c, MEHMET], status="CANCELLED", sequence=1,
                description="Abgesagt, verschoben auf " + day_text(d2, "de"))
        t.event(f"Wartung {t.objshort} ({t.o.name})", d2, 8, 240, [c, MEHMET], sequence=1)
        t.send(c, o, "Prima, danke!", gap=(0.5, 5), short=True)
    else:
        t.send(c, o, "vielen Dank, der Termin ist notiert.", gap=(2, 48))
        t.event(f"Wartung {t.objshort} ({t.o.name})", d1, 8, 240, [c, MEHMET])


def th_lieferung(t: Thread, c: P):
    o = OWNER
    geraet = rng.choice(["Wärmepumpe", "Brennwertkessels", "Pufferspeichers", "Lüftungsgeräts"])
    d1, d2 = t.day(5, 12), t.day(20, 30)
    t.subject = rng.choice([f"Lieferverzögerung {t.objshort}", f"Verschiebung Montagetermin {t.objshort}"])
    if t.send(o, c, f"leider hat uns unser Großhändler mitgeteilt, dass sich die Lieferung des {geraet} für "
                    f"{t.obj} um ca. zwei Wochen verzögert. Der Montagetermin am {d1:%d.%m.%Y} muss daher "
                    f"verschoben werden. Als neuen Termin schlage ich {day_text(d2, 'de')} vor.") is None:
        return
    t.send(c, o, f"das ist ärgerlich, aber nicht zu ändern. Der {d2:%d.%m.} passt uns. Bitte informieren Sie uns, "
                 f"falls es weitere Verzögerungen gibt.", gap=(2, 30))
    t.event(f"Montage {geraet.rstrip('s')} {t.objshort}", d2, 7, 480, [c, JONAS, MEHMET])
    t.send(o, c, f"kurze Info: die Ware ist inzwischen bei uns eingetroffen, der Termin am {d2:%d.%m.%Y} steht.",
           gap=(100, 250), reply=rng.random() < .5)


def th_zahlung(t: Thread, c: P, answer: P):
    o = OWNER
    rnr = nr("RE", local(t.t).year)
    t.subject = f"Zahlungserinnerung Rechnung {rnr}"
    d = local(t.t).date() - timedelta(days=rng.randint(30, 50))
    if t.send(o, c, f"bei der Durchsicht unserer Buchhaltung ist uns aufgefallen, dass die Rechnung {rnr} vom "
                    f"{d:%d.%m.%Y} über {money(amount(800, 6000), 'de')} € noch offen ist. Sicher handelt es sich "
                    f"um ein Versehen. Wir bitten Sie, den Betrag in den nächsten Tagen zu überweisen.",
              cc=[SABINE]) is None:
        return
    t.send(answer, o, "die Zahlung ist gestern rausgegangen, bitte entschuldigen Sie die Verzögerung. Die Rechnung "
                      "lag bei uns noch in der Freigabe.", gap=(4, 60), cc=[c] if answer is not c else ())
    t.send(o, answer, "danke für die Rückmeldung, dann betrachten wir die Sache als erledigt.", gap=(1, 8))


def th_abnahme(t: Thread, c: P):
    o = OWNER
    d = t.day(3, 9)
    t.subject = rng.choice([f"Abnahme {t.objshort}", f"Fertigstellung und Abnahme – {t.objshort}"])
    if t.send(o, c, f"die Arbeiten im Objekt {t.obj} sind abgeschlossen. Für die Abnahme und die Einweisung Ihrer "
                    f"Mitarbeiter schlage ich {day_text(d, 'de')} um 10:00 Uhr vor.") is None:
        return
    t.send(c, o, "Termin passt. Wir kommen mit zwei Kollegen aus der Haustechnik.", gap=(2, 30))
    t.event(f"Abnahme + Einweisung {t.objshort}", d, 10, 120, [c, JONAS])
    t.t = max(t.t, berlin_wall_to_utc(d, 12))
    t.send(o, c, "vielen Dank für den angenehmen Termin. Anbei das Abnahmeprotokoll zur Unterschrift. Die "
                 "Gewährleistung beginnt mit dem heutigen Datum.", gap=(0.5, 3),
           attach=(f"Abnahmeprotokoll_{d:%Y%m%d}.pdf", 2), subject=f"Abnahmeprotokoll {t.objshort}", reply=False)
    t.send(c, o, "anbei das unterschriebene Protokoll zurück.", gap=(24, 120), attach=(f"Scan_{d:%Y%m%d}_{rng.randrange(1000, 9999)}.pdf", 4))


def th_frage(t: Thread, c: P):
    o = OWNER
    ask, ans, subj = rng.choice([
        ("kurze Frage: Ist für die Heizungsanlage dieses Jahr eine Abgasmessung durch den Schornsteinfeger fällig, "
         "oder übernehmen Sie das im Rahmen der Wartung?",
         "die Abgasmessung erfolgt durch den bevollmächtigten Bezirksschornsteinfeger, nicht durch uns. Die letzte "
         "Messung war laut unseren Unterlagen im Frühjahr; die nächste ist im kommenden Jahr fällig.",
         "Frage Abgasmessung"),
        ("können Sie uns die Zählerstände der Wärmemengenzähler vom letzten Wartungstermin schicken? Wir brauchen "
         "sie für die Nebenkostenabrechnung.",
         f"anbei die Zählerstände vom letzten Wartungstermin:\n\n  WMZ 1: {rng.randrange(100000, 250000)} kWh\n"
         f"  WMZ 2: {rng.randrange(50000, 120000)} kWh", "Zählerstände Wärmemengenzähler"),
        ("steht bei uns dieses Jahr die Legionellenprüfung an? Wenn ja, können Sie die Probenahme mit übernehmen?",
         "ja, die Prüfung ist im Herbst fällig. Wir übernehmen die Probenahme gemeinsam mit einem akkreditierten "
         "Labor; die Kosten liegen bei ca. 380 € netto.", "Legionellenprüfung"),
        ("in Raum 2.14 lässt sich das Thermostat nicht mehr verstellen, der Heizkörper ist dauerhaft warm.",
         "danke für den Hinweis, wir tauschen den Thermostatkopf beim nächsten Einsatz mit aus.",
         "Thermostat Raum 2.14 defekt"),
        ("bitte senden Sie uns 12 Filtermatten G4 für die Lüftungsanlage, gleiche Ausführung wie beim letzten Mal.",
         "die Filter sind bestellt und werden voraussichtlich Ende nächster Woche geliefert.",
         "Bestellung Filtermatten"),
        ("der Schlüssel für den Heizraum liegt ab sofort beim Empfang. Bitte bei Ihrem nächsten Einsatz dort melden.",
         "danke für die Info, ich habe es an unsere Techniker weitergegeben.", "Schlüssel Heizraum"),
    ])
    t.subject = subj
    if t.send(c, o, ask, short=c.mua == "gmx") is None:
        return
    t.send(o, c, ans, gap=(1, 20))
    if rng.random() < .4:
        t.send(c, o, "Danke!", gap=(0.5, 10), short=True)


# ---- English templates ------------------------------------------------------

def th_en_quote(t: Thread, c: P, ap: P):
    o = OWNER
    t.subject = rng.choice([f"Boiler replacement {t.objshort} – quote request", f"Quote request: heating {t.objshort}"])
    if t.send(c, o, f"We're looking to replace the two gas boilers at {t.obj} before the heating season. Could you "
                    f"send us a quote for a like-for-like replacement, and separately for a heat pump option?\n\n"
                    f"The building is occupied Mon–Fri, so a site survey would ideally be on a weekday after 4pm.") is None:
        return
    d = t.day(4, 10)
    t.send(o, c, f"Thank you for your enquiry. My colleague Jonas Keller can visit {t.obj} on {day_text(d, 'en')} at "
                 f"4:30pm for the survey. Please let me know if that works for you.", gap=(2, 20), cc=[JONAS])
    t.event(f"Site survey {t.objshort} (Thornbury)", d, 16.5, 90, [c, JONAS])
    t.send(c, o, "That works. Our building manager will meet him at reception.", gap=(2, 20))
    q = nr("AN", local(t.t).year)
    a, b = amount(38000, 60000), amount(70000, 120000)
    t.t = max(t.t, berlin_wall_to_utc(d, 18))
    t.send(o, c, f"Please find attached our quote {q} for {t.obj}.\n\n  Option A (gas condensing boilers, 2 x 60 kW): "
                 f"EUR {money(a, 'en')} net\n  Option B (air source heat pump cascade): EUR {money(b, 'en')} net\n\n"
                 f"The quote is valid for six weeks.", gap=(30, 120), attach=(f"Quote_{q}.pdf", 4))
    t.send(c, o, "Thanks, Anna. Could you confirm whether option B qualifies for the German federal subsidy (BEG)? "
                 "Our client is asking.", gap=(24, 150))
    t.send(o, c, "Yes, option B qualifies for BEG funding of currently 30 % of eligible costs. We can provide the "
                 "technical project description needed for the application.", gap=(1, 8))
    t.send(c, o, "Great – we'll go with option B. The PO will follow from our accounts team.", gap=(48, 200),
           cc=[ap])


def th_en_invoice(t: Thread, c: P, ap: P):
    o = OWNER
    rnr = nr("RE", local(t.t).year)
    t.subject = f"Invoice {rnr} – {t.objshort} quarterly maintenance"
    worked = local(t.t).date() - timedelta(days=rng.randint(5, 15))
    if t.send(o, c, f"Please find attached invoice {rnr} for the quarterly maintenance at {t.obj} carried out on "
                    f"{worked.day} {MON_EN[worked.month - 1]}. Amount due: EUR {money(amount(1200, 4800), 'en')}, "
                    f"payable within 30 days.", attach=(f"Invoice_{rnr}.pdf", 2)) is None:
        return
    po = f"TF-PO-{rng.randrange(10000, 99999)}"
    t.send(ap, o, f"Could you please re-issue the invoice addressed to Thornbury Facilities Ltd, 14 Canal Street, "
                  f"Manchester, and quote PO {po}? Otherwise our system will reject it.", gap=(24, 120), cc=[c])
    t.send(o, ap, "Of course – the corrected invoice is attached.", gap=(1, 6), attach=(f"Invoice_{rnr}_rev1.pdf", 2))
    t.send(ap, o, "Received, thank you. Payment is scheduled for our next payment run on Friday.", gap=(4, 48))


def th_en_visit(t: Thread, c: P):
    o = OWNER
    t.subject = rng.choice([f"Cold radiators – {t.objshort}, 3rd floor", f"{t.objshort}: no hot water in kitchens",
                            f"Noisy pipes at {t.objshort}"])
    if t.send(c, o, f"Tenants at {t.obj} report a problem ({strip_prefix(t.subject).split(' – ')[0].lower()}). "
                    f"Can someone take a look this week?") is None:
        return
    d = t.day(1, 3)
    t.send(o, c, f"We'll send an engineer on {day_text(d, 'en')} in the morning. Could you let the tenants know?",
           gap=(1, 6))
    t.send(c, o, "Done, thanks.", gap=(0.5, 8), short=rng.random() < .5)
    t.event(f"Service visit {t.objshort}", d, 8, 180, [c, MEHMET])
    t.t = max(t.t, berlin_wall_to_utc(d, 13))
    t.send(o, c, "Our engineer bled the system and replaced a faulty thermostatic valve; everything is working "
                 "normally again. The service report is attached.", gap=(1, 24), attach=(f"Service_report_{d:%Y%m%d}.pdf", 2))


def th_en_short(t: Thread, c: P):
    o = OWNER
    subj, ask, ans = rng.choice([
        ("Site access next week", f"Just a heads-up: the car park at {t.obj} will be closed next week for "
                                  "resurfacing. Engineers can use the rear entrance.",
         "Thanks, I've passed that on to our team."),
        ("Heat meter readings", "Could you send the heat meter readings from your last visit? We need them for the "
                                "service charge reconciliation.",
         f"Sure – HM1: {rng.randrange(100000, 250000)} kWh, HM2: {rng.randrange(50000, 120000)} kWh."),
        ("Insurance certificate", "Our compliance team needs an up-to-date copy of your public liability insurance "
                                  "certificate. Could you send one over?",
         "Please find the current certificate attached; it is valid until the end of next year."),
    ])
    t.subject = subj
    if t.send(c, o, ask) is None:
        return
    t.send(o, c, ans, gap=(1, 24), attach=("Versicherungsbestaetigung_2026.pdf", 2) if "certificate" in ans else None)


# --------------------------------------------------------------------------
# standalone mails (bulk, internal, freemail)
# --------------------------------------------------------------------------

def rand_time(lo: datetime = START, hi: datetime = REF - timedelta(days=1)) -> datetime:
    return business(lo + timedelta(seconds=rng.randrange(int((hi - lo).total_seconds()))))


def single(frm: P, to, subject, text, when, *, lang="de", short=False, raw_text=False, **kw) -> Mail:
    to = [to] if isinstance(to, P) else list(to)
    core = text if raw_text or not to else compose(frm, to[0], text, lang, short)
    m = Mail(frm, to, subject, core, core, when)
    for k, v in kw.items():
        setattr(m, k, v)
    MAILS.append(m)
    return m


NEWS = P("SHK Aktuell", "", "x", "newsletter@shk-aktuell.example", "bulk", "bulk", display="SHK Aktuell – Der Branchen-Newsletter")
WTN_NEWS = P("Wärmetechnik Nord", "", "x", "aktionen@waermetechnik-nord.example", "supplier", "outlook",
             display="Wärmetechnik Nord Großhandel")
WTN_NOREPLY = P("Wärmetechnik Nord Versand", "", "x", "noreply@versand.waermetechnik-nord.example", "supplier",
                "bulk", display="Wärmetechnik Nord – Versand")
PORTAL = P("Lieferantenportal", "", "x", "noreply@portal.stadtwerke-lindenau.de", "swl", "bulk",
           display="Stadtwerke Lindenau Lieferantenportal")
SCANNER = P("Scanner", "", "x", "scanner-2og@stadtwerke-lindenau.de", "swl", "bulk", display="Scanner 2. OG")
FORM = P("Kontaktformular", "", "x", f"noreply@{INTERNAL}", "internal", "bulk", display="Website-Kontaktformular")


def bulk_mails():
    # monthly newsletter (HTML + text, List-Id etc.)
    topics = ["Neue Förderrichtlinien für Wärmepumpen", "GEG-Novelle: Was Betriebe jetzt wissen müssen",
              "Fachkräftemangel im SHK-Handwerk", "Hydraulischer Abgleich – Pflicht und Praxis",
              "Preisentwicklung Kupfer und Stahl", "Legionellen: neue Prüfintervalle",
              "Messe-Rückblick SHK Essen", "Digitalisierung im Kundendienst", "Kältemittel R290 im Einsatz"]
    month = date(START.year, START.month, 1)
    i = 0
    while True:
        month = date(month.year + month.month // 12, month.month % 12 + 1, 1)
        when = berlin_wall_to_utc(month + timedelta(days=rng.randint(1, 5)), 6, rng.randrange(60))
        if when > REF - timedelta(days=2):
            break
        i += 1
        if i % 2:  # every other month
            continue
        topic = topics[(i // 2) % len(topics)]
        body = (f"<html><body><h1>SHK Aktuell {month:%m/%Y}</h1><h2>{html.escape(topic)}</h2>"
                f"<p>Liebe Leserinnen und Leser,</p><p>in dieser Ausgabe: {html.escape(topic)}, aktuelle Urteile "
                f"und Termine aus der Branche.</p><p><a href=\"https://shk-aktuell.example/n/{month:%Y%m}\">Weiterlesen"
                f"</a></p><p style=\"font-size:9px\">Sie erhalten diesen Newsletter, weil Sie ihn abonniert haben. "
                f"<a href=\"https://shk-aktuell.example/abmelden?u=8f3a\">Abmelden</a></p></body></html>\n")
        m = single(NEWS, [OWNER], f"SHK-Newsletter {month:%m/%Y}: {topic}", body, when, raw_text=True,
                   html="only", bulk=True, kind="newsletter", body_style="utf-8/quoted-printable",
                   hdr_style=rng.choice(["utf8-q", "utf8-b"]),
                   extra=[("List-Id", "SHK Aktuell Newsletter <newsletter.shk-aktuell.example>"),
                          ("List-Unsubscribe", "<mailto:unsubscribe@shk-aktuell.example?subject=unsubscribe>,\n "
                                               "<https://shk-aktuell.example/abmelden?u=8f3a>"),
                          ("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"),
                          ("Precedence", "bulk"), ("X-Mailer", "Newsletter2Go")])
        m.delivered_to = OWNER.email
    # supplier promotions (multipart/alternative, Precedence: bulk)
    for k in range(5):
        when = rand_time()
        text = (f"Aktionswochen bei Wärmetechnik Nord!\n\nNur bis Monatsende: {rng.choice(['15', '20', '12'])} % auf "
                f"alle {rng.choice(['Heizkörperventile', 'Pufferspeicher', 'Pressfittings', 'Umwälzpumpen'])}.\n\n"
                f"Ihr Team von Wärmetechnik Nord Großhandel GmbH\n\nAbmelden: https://waermetechnik-nord.example/nl/ab")
        single(WTN_NEWS, [OWNER], rng.choice(["Aktionswochen: Sonderpreise für Fachbetriebe",
                                              "Neu im Sortiment – jetzt bestellen", "Ihre Vorteile im Oktober"]),
               text, when, raw_text=True, html="alt", bulk=True, kind="bulk",
               extra=[("Precedence", "bulk"), ("List-Unsubscribe", "<https://waermetechnik-nord.example/nl/ab>")])
    # delivery notices (noreply, auto-generated)
    for k in range(8):
        when = rand_time()
        lnr = f"LS{rng.randrange(1000000, 9999999)}"
        single(WTN_NOREPLY, [OWNER], f"Lieferavis {lnr} – Ihre Bestellung ist unterwegs",
               f"Guten Tag,\n\nIhre Bestellung {rng.randrange(400000, 499999)} wurde heute versendet.\n"
               f"Lieferschein: {lnr}\nVoraussichtliche Zustellung: {(local(when).date() + timedelta(days=1)):%d.%m.%Y}\n\n"
               f"Diese E-Mail wurde automatisch erzeugt. Bitte antworten Sie nicht auf diese Nachricht.",
               when, raw_text=True, bulk=True, kind="noreply", extra=[("Auto-Submitted", "auto-generated")])
    # customer supplier-portal notifications (noreply at a customer subdomain)
    for k in range(5):
        when = rand_time()
        single(PORTAL, [OWNER], rng.choice(["Neue Ausschreibung im Lieferantenportal",
                                            "Ihre Rechnung wurde im Portal erfasst",
                                            "Erinnerung: Nachweise im Lieferantenportal aktualisieren"]),
               "Sehr geehrte Damen und Herren,\n\nim Lieferantenportal der Stadtwerke Lindenau GmbH liegt eine neue "
               "Nachricht für Sie vor: https://portal.stadtwerke-lindenau.de/lieferanten\n\nDies ist eine "
               "automatisch versendete Nachricht.", when, raw_text=True, bulk=True, kind="noreply",
               extra=[("Auto-Submitted", "auto-generated"), ("X-Auto-Response-Suppress", "All")])
    # spam / cold outreach from a freemail address
    single(SPAMMER, [OWNER], "Quick question about nordlicht-haustechnik.de",
           "Hi there,\n\nI noticed your website isn't ranking for \"heating repair Kiel\". We help local businesses "
           "get to page 1 of Google in 30 days. Can I send you a free audit?\n\nBest,\nDaniel",
           rand_time(), raw_text=True, kind="freemail-random")


def auto_replies():
    # out-of-office replies to Anna's own mails, found after threads exist
    picks = [m for m in MAILS if m.outbound and m.to and m.to[0] in (BRANDT, WHITFIELD, SCHULZE) and m.date]
    done = set()
    for m in picks:
        r = m.to[0]
        if r.email in done or rng.random() < .5:
            continue
        done.add(r.email)
        when = m.date + timedelta(seconds=rng.randrange(5, 90))
        if r.lang == "en":
            subj, text = f"Automatic reply: {m.subject}", (
                "Thank you for your email. I am out of the office with limited access to email until next Monday. "
                "For urgent matters please contact facilities@thornbury-facilities.co.uk.")
            pre = [("X-Auto-Response-Suppress", "All")]
        else:
            subj, text = f"Automatische Antwort: {m.subject}", (
                f"Vielen Dank für Ihre Nachricht. Ich bin bis einschließlich "
                f"{(local(when).date() + timedelta(days=7)):%d.%m.%Y} nicht im Büro. Ihre E-Mail wird nicht "
                f"weitergeleitet. In dringenden Fällen wenden Sie sich bitte an die Zentrale.")
            pre = [("X-Auto-Response-Suppress", "All")]
        a = single(r, [OWNER], subj, text, when, short=True, kind="auto-reply", bulk=True,
                   extra=[("Auto-Submitted", "auto-replied")] + pre, in_reply_to=m.msgid)
        a.note = f"out-of-office auto-reply (Auto-Submitted: auto-replied) from customer contact {r.email}"


def internal_mails():
    # colleague chatter; mostly no customer addresses in headers (but customers in text)
    topics = [
        (JONAS, "Einsatzplanung KW {kw}", "anbei die Einsatzplanung für KW {kw}. Mehmet ist Dienstag und Mittwoch "
                                         "komplett bei Stadtwerke Lindenau (Hallenbad), bitte dort keine weiteren Termine "
                                         "einplanen.", True),
        (SABINE, "Offene Posten Kunden", "kannst du bei Bauhaus Kramer und beim Hotel Seeblick mal nachhaken? Da sind "
                                         "noch drei Rechnungen offen, die älteste seit über 40 Tagen.", True),
        (HENRIK, "Betriebsversammlung am Freitag", "zur Info: am Freitag um 14 Uhr ist Betriebsversammlung in der Halle. "
                                                   "Themen: Auftragslage, Fahrzeugflotte, Weihnachtsfeier.", True),
        (MEHMET, "Bericht Störung Hotel Seeblick", "war heute im Hotel Seeblick. Sicherung Steuerung war durch, Elektriker "
                                                  "hat getauscht. Brenner läuft wieder. Zündelektrode sollten wir beim "
                                                  "nächsten Mal tauschen.", False),
        (JONAS, "Material Eichenhof", "für die Baustelle Eichenhof brauchen wir noch 2 Pufferspeicher 800 l und das "
                                      "Zubehörpaket. Bestellst du bei Wärmetechnik Nord?", True),
        (SABINE, "Mahnlauf", "der Mahnlauf ist durch, Liste liegt im Ordner Buchhaltung/Mahnungen. Bitte kurz "
                             "drüberschauen, ob bei den Stadtwerken etwas dabei ist, das schon geklärt ist.", True),
        (JONAS, "Urlaubsplanung", "bitte trag deinen Urlaub bis Ende des Monats in den Kalender ein.", True),
        (HENRIK, "Preisanpassung Wartungsverträge", "wir passen ab 1. Januar die Wartungspauschalen um 3,5 % an. "
                                                    "Kannst du die betroffenen Kunden informieren? Liste anbei.", True),
        (MEHMET, "Ersatzteil Zündelektrode", "Zündelektrode für Stadtwerke ist da, baue ich Donnerstag ein.", False),
        (JONAS, "Fahrzeug HH-NL 204 in der Werkstatt", "der Sprinter ist bis Mittwoch in der Werkstatt, Touren bitte "
                                                       "entsprechend planen.", True),
    ]
    count = 0
    for rep in range(3):
        for frm, subj, text, reply in topics:
            if rep and rng.random() < .45:
                continue
            when = rand_time()
            kw = local(when).isocalendar()[1]
            subj = subj.format(kw=kw)
            t = Thread(None, when, "de")
            t.subject = subj
            cc = [JONAS] if frm is SABINE and rng.random() < .4 else []
            t.send(frm, [OWNER], text.format(kw=kw), cc=cc, short=frm is MEHMET,
                   attach=("Kundenliste_Preisanpassung.pdf", 2) if "Liste anbei" in text else None)
            count += 1
            if reply and rng.random() < .6:
                t.send(OWNER, frm, rng.choice(["danke, mache ich.", "ok, ist erledigt.", "alles klar, ich kümmere mich.",
                                               "danke für die Info!"]), gap=(0.2, 5))
                if rng.random() < .3:
                    t.send(frm, OWNER, "Super, danke!", gap=(0.2, 3), short=True)
    for m in MAILS:
        if m.sender.org == "internal" and not m.kind:
            m.kind = "internal"
    # Anna writes to colleagues too
    for i in range(4):
        when = rand_time()
        to = rng.choice([JONAS, SABINE, MEHMET])
        single(OWNER, [to], rng.choice(["Rückruf Stadtwerke", "Kurze Frage", "Termine nächste Woche",
                                        "Rechnung Thornbury"]),
               rng.choice(["Herr Brandt von den Stadtwerken bittet um Rückruf wegen des Jour fixe.",
                           "kannst du mir bis morgen sagen, ob der Termin bei der Praxis Sommerfeld steht?",
                           "ich habe die Termine für nächste Woche eingetragen, bitte kurz prüfen."]),
               when, kind="internal")


def web_form():
    # contact-form notifications: sender is our own noreply, Reply-To is the prospect (freemail)
    for who, text in [(MERTENS, "Wir interessieren uns für eine Wärmepumpe für unser Einfamilienhaus (Baujahr 1978, "
                                "140 m²). Bitte rufen Sie mich zurück."),
                      (JANSEN, "Unsere Therme tropft. Bitte um Rückruf unter 0431 123456.")]:
        when = berlin_wall_to_utc(date(2026, 1, 26), 19, 42) if who is MERTENS else rand_time()
        m = single(FORM, [Pfake("info")], f"Neue Anfrage über das Kontaktformular: {who.name}",
                   f"Name: {who.name}\nE-Mail: {who.email}\nNachricht:\n{text}\n\n-- \nGesendet über "
                   f"nordlicht-haustechnik.de/kontakt", when, raw_text=True, kind="web-form",
                   reply_to=f"{who.name} <{who.email}>", extra=[("Auto-Submitted", "auto-generated")],
                   delivered_to=OWNER.email)
        # Jonas forwards one to Anna
        if who is MERTENS:
            fw = single(JONAS, [OWNER], f"WG: {m.subject}", "Anna, kannst du die Dame bitte anrufen und einen Termin "
                        "machen?\n\nJonas\n\n-------- Weitergeleitete Nachricht --------\nBetreff: " + m.subject
                        + "\nVon: " + FORM.name + " <" + FORM.email + ">\n\n" + m.body,
                        business(when + timedelta(hours=2)), raw_text=True, kind="internal")


def Pfake(local_part: str) -> P:
    return P("", "", "x", f"{local_part}@{INTERNAL}", "internal", "thunderbird", display="")


# --------------------------------------------------------------------------
# building the mailbox
# --------------------------------------------------------------------------

def spread(n: int) -> list[datetime]:
    span = (REF - START).total_seconds() - 86400 * 6
    pts = sorted(START + timedelta(seconds=span * (i + rng.random()) / n) for i in range(n))
    return pts


def build_mail() -> None:
    plans = [
        # (template, org, kwargs, quirks)
        (th_angebot, "swl", dict(c=BRANDT, c2=RICHTER), {}),
        (th_stoerung, "swl", dict(c=MUELLER), {1: dict(refs="irt")}),
        (th_wartung, "swl", dict(c=BRANDT), {}),
        (th_rechnung, "swl", dict(c=RICHTER), {}),
        (th_rechnung, "swl", dict(c=RICHTER, correction=False), {}),
        (th_termin, "swl", dict(c=MUELLER), {}),
        (th_zahlung, "swl", dict(c=RICHTER, answer=KRUEGER), {}),
        (th_abnahme, "swl", dict(c=BRANDT), {}),
        (th_frage, "swl", dict(c=MUELLER), {}),
        (th_stoerung, "swl", dict(c=BRANDT), {}),
        (th_stoerung, "hotel", dict(c=LEHMANN, extra=FISCHER), {}),
        (th_angebot, "hotel", dict(c=VOGEL, c2=LEHMANN, variant="lueftung"), {}),
        (th_termin, "hotel", dict(c=LEHMANN), {}),
        (th_rechnung, "hotel", dict(c=VOGEL), {}),
        (th_wartung, "hotel", dict(c=VOGEL), {}),
        (th_frage, "hotel", dict(c=LEHMANN), {}),
        (th_angebot, "kramer", dict(c=SOMMER, c2=PKRAMER), {}),
        (th_lieferung, "kramer", dict(c=SOMMER), {}),
        (th_rechnung, "kramer", dict(c=SOMMER, c_reply=KBUCH), {}),
        (th_zahlung, "kramer", dict(c=SOMMER, answer=KBUCH), {}),
        (th_abnahme, "kramer", dict(c=PKRAMER), {}),
        (th_termin, "kramer", dict(c=BRENNER), {}),
        (th_frage, "kramer", dict(c=SOMMER), {}),
        (th_en_quote, "thornbury", dict(c=WHITFIELD, ap=TACCOUNTS), {}),
        (th_en_invoice, "thornbury", dict(c=WHITFIELD, ap=OCONNOR), {}),
        (th_en_invoice, "thornbury", dict(c=WHITFIELD, ap=TACCOUNTS), {}),
        (th_en_visit, "thornbury", dict(c=WHITFIELD), {}),
        (th_en_visit, "thornbury", dict(c=WHITFIELD), {}),
        (th_en_short, "thornbury", dict(c=WHITFIELD), {}),
        (th_en_short, "thornbury", dict(c=OCONNOR), {}),
        (th_stoerung, "praxis", dict(c=GROTE), {}),
        (th_angebot, "praxis", dict(c=SOMMERFELD_PRIV, c2=SOMMERFELD, variant="lueftung"), {}),
        (th_rechnung, "praxis", dict(c=GROTE, correction=False), {}),
        (th_termin, "praxis", dict(c=GROTE), {}),
        (th_frage, "praxis", dict(c=SOMMERFELD), {}),
        (th_stoerung, "eichenhof", dict(c=KRAUSE), {}),
        (th_stoerung, "eichenhof", dict(c=SCHULZE), {}),
        (th_wartung, "eichenhof", dict(c=SCHULZE), {}),
        (th_lieferung, "eichenhof", dict(c=SCHULZE), {}),
        (th_rechnung, "eichenhof", dict(c=HANSEN), {}),
        (th_angebot, "eichenhof", dict(c=KOEHLER, c2=SCHULZE), {}),
        (th_frage, "eichenhof", dict(c=KRAUSE), {}),
        (th_frage, "eichenhof", dict(c=SCHULZE), {}),
        (th_termin, "eichenhof", dict(c=SCHULZE), {}),
        (th_frage, "swl", dict(c=BRANDT), {}),
        (th_en_short, "thornbury", dict(c=WHITFIELD), {}),
        (th_abnahme, "eichenhof", dict(c=SCHULZE), {}),
        (th_frage, "hotel", dict(c=VOGEL), {}),
        (th_rechnung, "swl", dict(c=BRANDT, c_reply=RICHTER), {}),
        (th_en_visit, "thornbury", dict(c=WHITFIELD), {}),
        (th_termin, "swl", dict(c=BRANDT), {}),
        (th_frage, "praxis", dict(c=GROTE), {}),
        (th_lieferung, "hotel", dict(c=VOGEL), {}),
        (th_rechnung, "kramer", dict(c=SOMMER, correction=False), {}),
        (th_stoerung, "praxis", dict(c=GROTE), {}),
        (th_stoerung, "hotel", dict(c=VOGEL), {}),
        (th_frage, "kramer", dict(c=BRENNER), {}),
        (th_en_invoice, "thornbury", dict(c=WHITFIELD, ap=OCONNOR), {}),
        (th_wartung, "praxis", dict(c=SOMMERFELD), {}),
    ]
    starts = spread(len(plans))
    rng.shuffle(starts)
    threads = []
    for (fn, okey, kwargs, quirks), start in zip(plans, starts):
        o = ORGS[okey]
        t = Thread(o, start, o.lang, quirks)
        n0 = len(MAILS)
        fn(t, **kwargs)
        for m in MAILS[n0:]:
            m.kind = m.kind or f"customer:{okey}"
        threads.append(t)

    # Hotel: a newly hired manager (unknown at the customer domain) writes in English
    t = Thread(ORGS["hotel"], rand_time(REF - timedelta(days=120), REF - timedelta(days=40)), "en")
    t.subject = "Kitchen extraction – who do I talk to?"
    t.send(BIANCHI, OWNER, "I'm the new F&B manager at Hotel Seeblick. Katrin Vogel gave me your address. The kitchen "
                           "extraction hood has been making a rattling noise since last week – is that covered by "
                           "our maintenance contract?", cc=[VOGEL], raw_utf8_subject=False)
    t.send(OWNER, BIANCHI, "Welcome on board! The kitchen extraction is covered. I've booked our technician for "
                           "Thursday morning; he will report to the kitchen at 8am.", gap=(1, 6), cc=[VOGEL])
    for m in t.msgs:
        m.kind = "customer:hotel"
    # private freemail prospects
    # (she first came in through the web form on 26.01.2026, see web_form())
    t = Thread(None, berlin_wall_to_utc(date(2026, 1, 27), 10, 5), "de")
    t.subject = "Ihre Anfrage Wärmepumpe Einfamilienhaus"
    t.send(OWNER, MERTENS, "vielen Dank für Ihre Anfrage über unser Kontaktformular. Für eine seriöse Einschätzung "
                           "würden wir uns das Haus gern ansehen. Passt Ihnen Donnerstag, 12.02., um 16 Uhr?")
    t.send(MERTENS, OWNER, "Donnerstag 16 Uhr passt. Adresse: Eckernförder Straße 210, Kronshagen.", gap=(2, 24),
           short=True)
    t.t = berlin_wall_to_utc(date(2026, 2, 13), 11, 20)
    t.send(OWNER, MERTENS, "vielen Dank für den netten Termin gestern. Anbei wie besprochen unser Angebot für die "
                           "Luft-Wasser-Wärmepumpe. Bei Fragen melden Sie sich gern.", gap=(72, 140),
           attach=("Angebot_Waermepumpe_Mertens.pdf", 3), reply=False, subject="Ihr Angebot Wärmepumpe")
    t.send(MERTENS, OWNER, "vielen Dank! Wir überlegen noch und melden uns bis Ende März.", gap=(30, 90))
    for m in t.msgs:
        m.kind = "freemail-random"
    t = Thread(None, rand_time(), "de")
    t.subject = "Badsanierung?"
    t.send(KHOFF, OWNER, "machen Sie auch Badsanierungen oder nur Heizung?")
    t.send(OWNER, KHOFF, "wir machen auch Bäder, allerdings sind wir bis Frühjahr ausgebucht. Gern nehme ich Sie auf "
                         "die Warteliste.", gap=(2, 30))
    for m in t.msgs:
        m.kind = "freemail-random"
    # a tenant of the housing cooperative writes directly (freemail, unknown)
    t = Thread(None, rand_time(REF - timedelta(days=200)), "de")
    t.subject = "Heizung kalt Eichenhof 5, 3. OG links"
    t.send(LANGE, OWNER, "ich wohne im Eichenhof 5 und meine Heizung ist seit zwei Tagen kalt. Der Hausmeister ist "
                         "nicht erreichbar. Können Sie helfen?", cc=[KRAUSE])
    t.send(OWNER, LANGE, "danke für Ihre Nachricht. Wir sind im Auftrag der Genossenschaft tätig und schicken morgen "
                         "früh einen Techniker. Herr Krause ist in Kopie.", gap=(1, 5), cc=[KRAUSE, SCHULZE])
    t.send(KRAUSE, OWNER, "bin wieder da, kümmere mich mit eurem Techniker drum.", gap=(2, 20), short=True,
           cc=[LANGE])
    for m in t.msgs:
        m.kind = "freemail-random"
    # the doctor writes from her private address (known freemail of a customer contact)
    t = Thread(ORGS["praxis"], rand_time(REF - timedelta(days=160), REF - timedelta(days=60)), "de")
    t.subject = "Klimaanlage Behandlungsraum 2"
    t.send(SOMMERFELD_PRIV, OWNER, "ich schreibe Ihnen von meiner privaten Adresse, die Praxis-Mail funktioniert "
                                   "gerade nicht. Die Klimaanlage im Behandlungsraum 2 tropft. Können Sie sich das "
                                   "diese Woche noch ansehen?")
    t.send(OWNER, SOMMERFELD_PRIV, "natürlich. Unser Techniker kommt am Donnerstag um 7:30 Uhr, also vor Ihrer "
                                   "Sprechstunde. Frau Grote habe ich in Kopie gesetzt.", gap=(1, 6), cc=[GROTE])
    t.send(GROTE, OWNER, "Danke, ich schließe ihm auf.", gap=(1, 8), cc=[SOMMERFELD_PRIV], short=True)
    for m in t.msgs:
        m.kind = "customer:praxis"

    bulk_mails()
    internal_mails()
    web_form()
    auto_replies()


def apply_quirks() -> None:
    """Put the deliberate oddities on specific, stable messages."""
    def first(pred, what):
        for m in MAILS:
            if pred(m) and not m.note:
                return m
        raise SystemExit(f"generate.py: no message for quirk {what}")

    def is_reply(m):
        return hasattr(m, "_prev")

    # replies with only In-Reply-To (no References)
    n = 0
    for m in MAILS:
        if is_reply(m) and m.sender.org in ("eichenhof", "hotel") and m.in_reply_to and n < 3 and not m.note:
            m.references = []
            m.note = "reply with In-Reply-To only (no References)"
            n += 1
    # one reply with References but no In-Reply-To
    m = first(lambda m: is_reply(m) and m.sender.org == "kramer" and len(m.references) >= 2, "refs only")
    m.in_reply_to = None
    m.note = "reply with References only (no In-Reply-To)"
    # one reply deep in a thread with neither header: only the subject ("AW: ...") ties it in
    m = first(lambda m: is_reply(m) and m.sender.org == "swl" and len(m.references) >= 3 and not m.outbound,
              "no refs")
    m.in_reply_to, m.references = None, []
    m.note = "reply without References and without In-Reply-To (threadable only by subject / later replies)"
    # reply from the caretaker's phone app without a Message-ID
    m = first(lambda m: m.sender is KRAUSE and is_reply(m), "no msgid")
    gone, m.msgid = m.msgid, None
    m.note = "no Message-ID header"
    for later in MAILS:  # nobody can refer to a message without an id
        if later.in_reply_to == gone:
            later.in_reply_to = None
        later.references = [r for r in later.references if r != gone]
    # scanner mail without Date
    when = rand_time(REF - timedelta(days=90), REF - timedelta(days=30))
    sc = single(SCANNER, [OWNER], "Scan-Auftrag 0042", "Gescanntes Dokument im Anhang.\n\nGerät: Kyocera TASKalfa "
                "2554ci, Standort 2. OG Verwaltung", when, raw_text=True, kind="customer:swl",
                drop_date=True, note="no Date header (copier scan-to-mail; the Maildir file name still carries the "
                                     "delivery time)")
    sc.attachments.append(("doc20260917101512.pdf", fake_pdf("Scan", 3500), "application/pdf"))
    # Zahlungsavis from the customer's old ERP: declared us-ascii, contains latin-1 bytes
    when = rand_time(REF - timedelta(days=200), REF - timedelta(days=100))
    single(KBUCH, [OWNER], "Zahlungsavis 2026/0815",
           "Sehr geehrte Damen und Herren,\n\nwir überweisen heute folgende Beträge:\n\n"
           "  RE-2026-0412   1.874,30 EUR\n  RE-2026-0433     612,00 EUR\n\nSumme: 2.486,30 EUR\n\n"
           "Mit freundlichen Grüßen\nBauhaus Kramer GmbH & Co. KG - Buchhaltung\nIndustriestraße 8, 24537 Neumünster",
           when, raw_text=True, kind="customer:kramer", wrong_charset=True,
           note="declared charset=us-ascii but body contains ISO-8859-1 bytes (ü, ß)")
    # raw (unencoded) UTF-8 in the Subject
    m = first(lambda m: m.sender.org == "hotel" and not is_reply(m) and not m.outbound
              and any(ord(c) > 127 for c in m.subject), "raw utf8")
    m.raw_utf8_subject = True
    m.note = "raw 8-bit UTF-8 in Subject (not RFC 2047 encoded)"
    # HTML-only mail from a customer (not a newsletter)
    m = first(lambda m: m.sender is VOGEL and not is_reply(m) and not m.attachments, "html only")
    m.html = "only"
    m.note = "HTML-only body (no text/plain part)"
    # an owner alias
    k = 0
    for m in MAILS:
        if m.outbound and m.sender.org == "internal" and m.to and m.to[0].org == "praxis" and k < 3 and not m.note:
            m.from_addr = OWNER_ALIAS
            m.note = f"sent from the owner's alias {OWNER_ALIAS}"
            k += 1
    # a "Weber, Anna" style quoted display name is produced by DR. names; force all 4 encodings to appear
    styles = ["latin1-q", "latin1-b", "utf8-q", "utf8-b"]
    def latin1_ok(m):
        try:
            (m.subject + m.sender.name).encode("iso-8859-1")
            return True
        except UnicodeEncodeError:
            return False
    cands = [m for m in MAILS if any(ord(c) > 127 for c in m.subject) and not m.raw_utf8_subject and latin1_ok(m)]
    for s, m in zip(styles, cands[3::9]):
        m.hdr_style = s
    # Anna bcc'd: mail to Jonas, Anna not in To/Cc
    single(SCHULZE, [JONAS], "Heizungsausfall Fördeblick – Vorgehen",
           "wie heute Vormittag besprochen: Bitte planen Sie für die Wohnanlage Fördeblick die Umstellung auf den "
           "Notbetrieb ein. Frau Weber bekommt diese Nachricht zur Information in Blindkopie.",
           rand_time(REF - timedelta(days=300), REF - timedelta(days=250)), kind="customer:eichenhof",
           note="owner only in Bcc (not in To/Cc; only Delivered-To names her)")


def finalize_flags() -> None:
    replied = {getattr(m, "_prev").msgid for m in MAILS if m.outbound and hasattr(m, "_prev") and m._prev.msgid}
    inbound = [m for m in MAILS if not m.outbound and m.date]
    for m in MAILS:
        if m.outbound:
            m.flags = "S"
        elif m.msgid and m.msgid in replied:
            m.flags = "RS"
        else:
            m.flags = "S"
    recent = [m for m in sorted(inbound, key=lambda m: m.date, reverse=True)
              if not m.note and m.flags == "S"][:7]
    for m in recent:  # delivered but not yet seen by any client: new/, no info suffix
        m.folder = "new"
        m.flags = ""
    flagged = [m for m in inbound if m.folder == "cur" and m.attachments]
    for m in flagged[::5]:
        m.flags = "F" + m.flags
    unseen = [m for m in inbound if m.folder == "cur" and m.flags == "S" and m.kind == "newsletter"]
    for m in unseen[:3]:
        m.flags = ""  # in cur/ but never read: ":2,"


def write_maildir() -> dict:
    root = HERE / "mail"
    if root.exists():
        shutil.rmtree(root)
    for sub in ("cur", "new", "tmp"):
        (root / sub).mkdir(parents=True)
    names = set()
    order = sorted(MAILS, key=lambda m: m.date or REF)
    stats = {"cur": 0, "new": 0, "bytes": 0}
    files = []

    def name_for(ts: float) -> str:
        while True:
            n = f"{int(ts)}.M{rng.randrange(100000, 999999)}P{rng.randrange(1000, 32000)}.demo"
            if n not in names:
                names.add(n)
                return n

    for m in order:
        raw = render(m)
        ts = (m.date or REF).timestamp() + rng.randrange(1, 30)
        base = name_for(ts)
        fname = base if m.folder == "new" else f"{base}:2,{''.join(sorted(m.flags))}"
        files.append((root / m.folder / fname, raw, ts, m))
        m.path = f"mail/{m.folder}/{fname}"
    # the same message delivered twice (identical bytes, second file name)
    dup = next(m for m in order if m.sender is BRANDT and not m.note and not hasattr(m, "_prev"))
    dup.note = "stored twice (identical copy under a second file name)"
    ts = dup.date.timestamp() + 95
    dup_name = f"{name_for(ts)}:2,S"
    files.append((root / "cur" / dup_name, dup.raw, ts, None))
    dup.path += f" and mail/cur/{dup_name}"
    # the broken one: binary junk, no headers at all (truncated download)
    junk = (b"\x00\x00\x00\x1f\x8b\x08\x00" + rng.randbytes(600)
            + b"\nG3Hk2lPq+Xw0vZ9aR8sT1uY4oB7cD6eF5gH2iJ0kL9mN\nAAAAAAAAAAAAAAAA==\n" + rng.randbytes(300))
    ts = (REF - timedelta(days=37)).timestamp() + 4242
    broken_name = f"{name_for(ts)}:2,S"
    files.append((root / "cur" / broken_name, junk, ts, None))
    for path, raw, ts, m in files:
        path.write_bytes(raw)
        os.utime(path, (ts, ts))
        stats[path.parent.name] += 1
        stats["bytes"] += len(raw)
    stats["broken"] = broken_name
    stats["dup"] = dup
    return stats


# --------------------------------------------------------------------------
# calendar
# --------------------------------------------------------------------------

def ical_escape(s: str) -> str:
    return s.replace("\\", "\\\\").replace(";", "\\;").replace(",", "\\,").replace("\n", "\\n")


def fold(line: str) -> str:
    b = line.encode("utf-8")
    if len(b) <= 75:
        return line
    out, cur, limit = [], b"", 75
    for ch in line:
        e = ch.encode("utf-8")
        if len(cur) + len(e) > limit:
            out.append(cur.decode("utf-8"))
            cur, limit = b"", 74
        cur += e
    out.append(cur.decode("utf-8"))
    return "\r\n ".join(out)


def ical_dt(u: datetime) -> str:
    return local(u).strftime("%Y%m%dT%H%M%S")


def utc_stamp(u: datetime) -> str:
    return u.astimezone(timezone.utc).strftime("%Y%m%dT%H%M%SZ")


def cn(p: P) -> str:
    name = p.name
    if any(c in name for c in ",;:"):
        return f'"{name}"'
    return name


def att_line(p: P, status: str, role: str = "REQ-PARTICIPANT") -> str:
    return (f"ATTENDEE;CUTYPE=INDIVIDUAL;ROLE={role};PARTSTAT={status};"
            f"{'RSVP=TRUE;' if status == 'NEEDS-ACTION' else ''}CN={cn(p)}:mailto:{p.email}")


def vevent(ev: dict) -> list[str]:
    L = ["BEGIN:VEVENT"]
    created = ev.get("created") or ev["start"] - timedelta(days=5)
    L.append(f"CREATED:{utc_stamp(created)}")
    L.append(f"LAST-MODIFIED:{utc_stamp(created + timedelta(hours=ev.get('sequence', 0) * 20 + 1))}")
    L.append(f"DTSTAMP:{utc_stamp(created + timedelta(hours=ev.get('sequence', 0) * 20 + 1))}")
    L.append(f"UID:{ev['uid']}")
    L.append(f"SUMMARY:{ical_escape(ev['summary'])}")
    if ev.get("allday"):
        d0: date = ev["date"]
        L.append(f"DTSTART;VALUE=DATE:{d0:%Y%m%d}")
        L.append(f"DTEND;VALUE=DATE:{(d0 + timedelta(days=ev.get('days', 1))):%Y%m%d}")
    elif ev.get("utc"):
        L.append(f"DTSTART:{utc_stamp(ev['start'])}")
        L.append(f"DTEND:{utc_stamp(ev['start'] + timedelta(minutes=ev['minutes']))}")
    else:
        L.append(f"DTSTART;TZID=Europe/Berlin:{ical_dt(ev['start'])}")
        L.append(f"DTEND;TZID=Europe/Berlin:{ical_dt(ev['start'] + timedelta(minutes=ev['minutes']))}")
    if ev.get("recurrence_id"):
        L.append(f"RECURRENCE-ID;TZID=Europe/Berlin:{ical_dt(ev['recurrence_id'])}")
    if ev.get("rrule"):
        L.append(f"RRULE:{ev['rrule']}")
    for x in ev.get("exdate", []):
        L.append(f"EXDATE;TZID=Europe/Berlin:{ical_dt(x)}")
    if ev.get("location"):
        L.append(f"LOCATION:{ical_escape(ev['location'])}")
    if ev.get("description"):
        L.append(f"DESCRIPTION:{ical_escape(ev['description'])}")
    org_ = ev.get("organizer")
    if org_ is not None and ev.get("attendees"):
        L.append(f"ORGANIZER;CN={cn(org_)}:mailto:{org_.email}")
        if org_ is not OWNER:
            L.append(att_line(OWNER, ev.get("owner_status", "ACCEPTED")))
        else:
            L.append(att_line(OWNER, "ACCEPTED", "CHAIR"))
        for p in ev["attendees"]:
            st = ev.get("statuses", {}).get(p.email) or rng.choice(["ACCEPTED", "ACCEPTED", "ACCEPTED", "TENTATIVE",
                                                                     "NEEDS-ACTION"])
            L.append(att_line(p, st, "OPT-PARTICIPANT" if p in ev.get("optional", []) else "REQ-PARTICIPANT"))
    if ev.get("categories"):
        L.append(f"CATEGORIES:{','.join(ev['categories'])}")
    L.append(f"CLASS:{ev.get('klass', 'PUBLIC')}")
    L.append(f"STATUS:{ev.get('status', 'CONFIRMED')}")
    L.append(f"SEQUENCE:{ev.get('sequence', 0)}")
    L.append(f"TRANSP:{'TRANSPARENT' if ev.get('allday') and not ev.get('busy') else 'OPAQUE'}")
    if not ev.get("allday") and ev.get("status") != "CANCELLED" and rng.random() < .5:
        L += ["BEGIN:VALARM", "ACTION:DISPLAY", "TRIGGER:-PT15M", "DESCRIPTION:Erinnerung", "END:VALARM"]
    L.append("END:VEVENT")
    return L


VTIMEZONE = """BEGIN:VTIMEZONE
TZID:Europe/Berlin
X-LIC-LOCATION:Europe/Berlin
BEGIN:DAYLIGHT
TZOFFSETFROM:+0100
TZOFFSETTO:+0200
TZNAME:CEST
DTSTART:19700329T020000
RRULE:FREQ=YEARLY;BYMONTH=3;BYDAY=-1SU
END:DAYLIGHT
BEGIN:STANDARD
TZOFFSETFROM:+0200
TZOFFSETTO:+0100
TZNAME:CET
DTSTART:19701025T030000
RRULE:FREQ=YEARLY;BYMONTH=10;BYDAY=-1SU
END:STANDARD
END:VTIMEZONE""".splitlines()


def build_calendar() -> tuple[str, dict]:
    evs = []
    for ev in EVENTS:
        ev["uid"] = f"{rand_uuid()}@{INTERNAL}"
        ev.setdefault("description", "Automatisch aus der Terminplanung übernommen. Ansprechpartner vor Ort: "
                      + ", ".join(p.name for p in ev["attendees"] if p.org != "internal"))
        evs.append(ev)
    # weekly jour fixe with Stadtwerke (recurring, one EXDATE, one moved occurrence)
    first = date(2026, 3, 3)  # Tuesday
    jf_uid = f"jourfixe-swl-hallenbad-{rand_hex(8)}@{INTERNAL}"
    jf = dict(uid=jf_uid, summary="Jour fixe Stadtwerke Lindenau – Sanierung Hallenbad",
              start=berlin_wall_to_utc(first, 10), minutes=60, organizer=BRANDT,
              attendees=[BRANDT, MUELLER, JONAS], statuses={BRANDT.email: "ACCEPTED", MUELLER.email: "ACCEPTED",
                                                            JONAS.email: "TENTATIVE"},
              location="Stadtwerke Lindenau, Besprechungsraum 1.02, Bahnhofstraße 21",
              rrule="FREQ=WEEKLY;BYDAY=TU;UNTIL=20260630T080000Z",
              exdate=[berlin_wall_to_utc(date(2026, 4, 7), 10)],
              description="Wöchentliche Abstimmung Bauablauf Hallenbad.\nAgenda: Termine, Material, offene Punkte, "
                          "Protokoll der Vorwoche.", created=datetime(2026, 2, 20, 9, 12, tzinfo=timezone.utc),
              categories=["Kunde", "Stadtwerke Lindenau"])
    moved = dict(jf, recurrence_id=berlin_wall_to_utc(date(2026, 5, 12), 10),
                 start=berlin_wall_to_utc(date(2026, 5, 13), 14), rrule=None, exdate=[], sequence=1,
                 location="Baustelle Hallenbad, Container 2",
                 description="Verschoben: Herr Brandt ist Dienstag auf einer Schulung. Treffen direkt auf der Baustelle.",
                 created=datetime(2026, 5, 6, 7, 40, tzinfo=timezone.utc))
    evs += [jf, moved]
    # all-day events
    evs.append(dict(uid=f"messe-shk-2026@{INTERNAL}", summary="SHK Essen 2026 (Messe)", allday=True,
                    date=date(2026, 3, 10), days=3, location="Messe Essen", categories=["Messe"], busy=True,
                    created=datetime(2025, 11, 3, 8, 0, tzinfo=timezone.utc)))
    evs.append(dict(uid=f"betriebsurlaub-2025@{INTERNAL}", summary="Betriebsurlaub Nordlicht Haustechnik",
                    allday=True, date=date(2025, 12, 24), days=9, busy=True,
                    description="Notdienst: Bereitschaftshandy 0171 9876543",
                    created=datetime(2025, 9, 1, 8, 0, tzinfo=timezone.utc)))
    evs.append(dict(uid=f"baustelle-eichenhof-{rand_hex(6)}@{INTERNAL}",
                    summary="Baustelle Eichenhof 1–7: Heizungstausch (Monteure vor Ort)", allday=True,
                    date=date(2026, 6, 15), days=5, location="Eichenhof 1–7, Kiel-Gaarden", organizer=OWNER,
                    attendees=[SCHULZE, KRAUSE, JONAS, MEHMET],
                    statuses={SCHULZE.email: "ACCEPTED", KRAUSE.email: "ACCEPTED"},
                    created=datetime(2026, 5, 20, 10, 0, tzinfo=timezone.utc), categories=["Kunde", "Baustelle"]))
    evs.append(dict(uid=f"frist-beg-thornbury@{INTERNAL}", summary="Deadline BEG subsidy application (Thornbury)",
                    allday=True, date=date(2026, 9, 30), location="", created=datetime(2026, 8, 1, 9, 0, tzinfo=timezone.utc)))
    # cancelled appointment
    evs.append(dict(uid=f"{rand_uuid()}@{INTERNAL}", summary="Besichtigung Spa-Bereich Hotel Seeblick",
                    start=berlin_wall_to_utc(date(2026, 2, 18), 11), minutes=90, organizer=OWNER,
                    attendees=[VOGEL, LEHMANN], location="Hotel Seeblick, Uferweg 3, Plön", status="CANCELLED",
                    sequence=2, statuses={VOGEL.email: "DECLINED", LEHMANN.email: "ACCEPTED"},
                    description="Abgesagt: Spa-Bereich wird erst im Herbst umgebaut.",
                    created=datetime(2026, 1, 30, 9, 0, tzinfo=timezone.utc)))
    # private event
    evs.append(dict(uid=f"{rand_uuid()}@{INTERNAL}", summary="Arzttermin", klass="PRIVATE",
                    start=berlin_wall_to_utc(date(2026, 10, 6), 15), minutes=60, location="Praxis am Markt",
                    created=datetime(2026, 9, 20, 18, 0, tzinfo=timezone.utc)))
    # internal meetings
    for d in [date(2025, 9, 8), date(2025, 12, 1), date(2026, 3, 2), date(2026, 6, 1), date(2026, 9, 7)]:
        evs.append(dict(uid=f"{rand_uuid()}@{INTERNAL}", summary="Teambesprechung Kundendienst",
                        start=berlin_wall_to_utc(d, 7, 30), minutes=60, organizer=JONAS,
                        attendees=[JONAS, MEHMET, SABINE], location="Besprechungsraum, Hafenstraße 17",
                        statuses={JONAS.email: "ACCEPTED"}, created=datetime.combine(d - timedelta(days=14),
                                                                                     datetime.min.time(), timezone.utc)))
    evs.append(dict(uid=f"{rand_uuid()}@{INTERNAL}", summary="Quartalsgespräch Geschäftsführung",
                    start=berlin_wall_to_utc(date(2026, 7, 2), 13), minutes=90, organizer=HENRIK,
                    attendees=[HENRIK, JONAS], location="Büro GF",
                    created=datetime(2026, 6, 15, 8, 0, tzinfo=timezone.utc)))
    # calls organised by the UK customer, times in UTC
    for d, h in [(date(2026, 1, 20), 14), (date(2026, 4, 21), 13), (date(2026, 10, 13), 13)]:
        evs.append(dict(uid=f"040000008200E00074C5B7101A82E00800000000{rand_hex(32).upper()}",
                        summary="Thornbury / Nordlicht – quarterly contract review (Teams)", utc=True,
                        start=datetime(d.year, d.month, d.day, h, 0, tzinfo=timezone.utc), minutes=45,
                        organizer=WHITFIELD, attendees=[WHITFIELD, OCONNOR], owner_status="ACCEPTED",
                        location="Microsoft Teams Meeting",
                        description="Join on your computer or mobile app: https://teams.microsoft.com/l/meetup-join/"
                                    f"19%3ameeting_{rand_hex(40)}%40thread.v2/0",
                        created=datetime.combine(d - timedelta(days=10), datetime.min.time(), timezone.utc)))
    # a few more customer appointments without a mail thread
    extra = [("Vor-Ort-Termin Wärmepumpe Mertens", date(2026, 2, 12), 16, [MERTENS], "Eckernförder Straße 210, Kronshagen"),
             ("Wartung Klimaanlage Praxis Sommerfeld", date(2026, 5, 7), 7.5, [GROTE, SOMMERFELD_PRIV],
              "Praxis Holstenstraße 45"),
             ("Begehung Fördeblick mit Hr. Schulze", date(2025, 10, 14), 9, [SCHULZE, KOEHLER], "Ostring 120, Kiel"),
             ("Kennenlernen neuer F&B Manager Hotel Seeblick", date(2026, 9, 24), 15, [BIANCHI, VOGEL],
              "Hotel Seeblick, Uferweg 3, Plön"),
             ("Einkaufsgespräch Rahmenvertrag Bauhaus Kramer", date(2025, 11, 19), 10, [SOMMER, PKRAMER, BRENNER],
              "Bauhaus Kramer, Industriestraße 8, Neumünster")]
    for s, d, h, att, loc in extra:
        evs.append(dict(uid=f"{rand_uuid()}@{INTERNAL}", summary=s, start=berlin_wall_to_utc(d, int(h), 30 if h % 1 else 0),
                        minutes=60, organizer=OWNER, attendees=att, location=loc,
                        created=datetime.combine(d - timedelta(days=8), datetime.min.time(), timezone.utc)))
    lines = ["BEGIN:VCALENDAR", "VERSION:2.0", "PRODID:-//Mozilla.org/NONSGML Mozilla Calendar V1.1//EN",
             "CALSCALE:GREGORIAN", "X-WR-CALNAME:Anna Weber", "X-WR-TIMEZONE:Europe/Berlin"] + VTIMEZONE
    evs.sort(key=lambda e: (e.get("start") or datetime.combine(e["date"], datetime.min.time(), timezone.utc),
                            e.get("recurrence_id") is not None))
    for ev in evs:
        lines += vevent(ev)
    lines.append("END:VCALENDAR")
    text = "".join(fold(ln) + "\r\n" for ln in lines)
    return text, {"events": len(evs)}


# --------------------------------------------------------------------------
# contacts
# --------------------------------------------------------------------------

def vcard(p: P, version: str, emails: list[tuple[str, str]], phones: list[tuple[str, str]], cats: list[str],
          orgname: str | None = None, note: str = "", extra: list[str] = ()) -> list[str]:
    L = ["BEGIN:VCARD", f"VERSION:{version}"]
    if version == "4.0":
        L.append("KIND:individual")
    given, family = p.first, p.last
    prefix = "Dr." if (p.display or "").startswith("Dr.") else ""
    L.append(f"N:{ical_escape(family)};{ical_escape(given)};;{prefix};")
    L.append(f"FN:{ical_escape(p.name)}")
    org_ = orgname if orgname is not None else (ORGS[p.org].name if p.org in ORGS else "")
    if org_:
        L.append("ORG:" + org_.replace(",", "\\,").replace(";", "\\;"))
    if p.title:
        L.append(f"TITLE:{ical_escape(p.title)}")
    for i, (addr, kind) in enumerate(emails):
        if version == "4.0":
            L.append(f"EMAIL;TYPE={kind}{';PREF=1' if i == 0 and len(emails) > 1 else ''}:{addr}")
        else:
            L.append(f"EMAIL;TYPE=INTERNET,{kind.upper()}{',PREF' if i == 0 and len(emails) > 1 else ''}:{addr}")
    for num, kind in phones:
        if version == "4.0":
            if num.startswith("+") and rng.random() < .5:
                L.append(f"TEL;VALUE=uri;TYPE={kind}:tel:{num.replace(' ', '-').replace('/', '')}")
            else:
                L.append(f"TEL;TYPE={kind}:{num}")
        else:
            L.append(f"TEL;TYPE={kind.upper()},VOICE:{num}")
    if cats:
        L.append(f"CATEGORIES:{','.join(cats)}")
    if p.org in ORGS:
        o = ORGS[p.org]
        if o.lang == "en":  # "Manchester M1 3HE, United Kingdom"
            town, _, rest = o.city.partition(" ")
            code, country = rest.split(", ")
        else:  # "24937 Lindenau"
            code, _, town = o.city.partition(" ")
            country = "Deutschland"
        L.append(f"ADR;TYPE=work:;;{ical_escape(o.street)};{ical_escape(town)};;{code};{country}")
    if note:
        L.append(f"NOTE:{ical_escape(note)}")
    L += list(extra)
    L.append(f"UID:{'urn:uuid:' if version == '4.0' else ''}{rand_uuid()}")
    L.append(f"REV:{utc_stamp(REF - timedelta(days=rng.randrange(30, 500)))}")
    L.append("END:VCARD")
    return L


def build_contacts() -> tuple[str, dict]:
    cards: list[list[str]] = []
    K = ["Kunde"]
    cards.append(vcard(BRANDT, "3.0", [(BRANDT.email, "work")], [("+49 4621 4711-230", "work"), ("0170 5556677", "cell")],
                       K + ["Wartungsvertrag"], note="Jour fixe dienstags 10 Uhr (Hallenbad-Sanierung)."))
    cards.append(vcard(RICHTER, "4.0", [(RICHTER.email, "work")], [("04621 4711-118", "work")], K + ["Einkauf"]))
    cards.append(vcard(MUELLER, "3.0", [(MUELLER.email, "work"), ("haustechnik@stadtwerke-lindenau.de", "work")],
                       [("04621/4711-305", "work"), ("+49 160 9988776", "cell")], K + ["Haustechnik"]))
    cards.append(vcard(VOGEL, "4.0", [(VOGEL.email, "work"), ("direktion@hotel-seeblick.example", "work")],
                       [("+49 4522 7890-10", "work")], K + ["Hotel", "VIP"]))
    cards.append(vcard(LEHMANN, "3.0", [(LEHMANN.email, "work")], [("04522 7890-44", "work"), ("0171-3344556", "cell")],
                       K + ["Haustechnik"]))
    cards.append(["BEGIN:VCARD", "VERSION:4.0", "KIND:org", "FN:Hotel Seeblick Plön GmbH", "ORG:Hotel Seeblick Plön GmbH",
                  "EMAIL;TYPE=work:rezeption@hotel-seeblick.example", "TEL;TYPE=work:+49 4522 7890-0",
                  "URL:https://hotel-seeblick.example", "CATEGORIES:Kunde,Firma",
                  "ADR;TYPE=work:;;Uferweg 3;Plön;;24306;Deutschland", f"UID:urn:uuid:{rand_uuid()}",
                  f"REV:{utc_stamp(REF - timedelta(days=200))}", "END:VCARD"])
    cards.append(vcard(SOMMER, "3.0", [(SOMMER.email, "work")], [("+49 (0)4321 55 20-31", "work")], K + ["Einkauf"]))
    cards.append(vcard(PKRAMER, "4.0", [(PKRAMER.email, "work")], [("+49 4321 5520-10", "work")], K + ["Geschäftsführung"]))
    cards.append(vcard(WHITFIELD, "4.0", [(WHITFIELD.email, "work")], [("+44 161 496 0734", "work"),
                                                                       ("+44 7700 900123", "cell")],
                       K + ["UK", "Facility Management"],
                       note="Contract manager for Harbour House and Fjord Office Park (Kiel). Prefers e-mail; "
                            "quarterly review calls via Teams. Invoices must quote the Thornbury PO number, otherwise "
                            "accounts payable in Manchester rejects them."))
    cards.append(vcard(OCONNOR, "3.0", [(OCONNOR.email, "work")], [("+44 161 496 0999", "work")], K + ["UK"]))
    cards.append(vcard(SOMMERFELD, "4.0", [(SOMMERFELD.email, "work"), (SOMMERFELD_PRIV.email, "home")],
                       [("0431 / 66 77 88", "work"), ("+49 151 22334455", "cell")], K + ["Praxis"],
                       note="Schreibt oft von der privaten t-online-Adresse."))
    cards.append(vcard(GROTE, "3.0", [(GROTE.email, "work")], [("0431 66 77 88", "work")], K + ["Praxis"]))
    cards.append(vcard(SCHULZE, "4.0", [(SCHULZE.email, "work")], [("+49 431 2345670", "work"), ("0431 2345671", "fax")],
                       K + ["Wohnungswirtschaft", "Wartungsvertrag"]))
    cards.append(vcard(HANSEN, "3.0", [(HANSEN.email, "work")], [("0431-2345675", "work")], K + ["Buchhaltung"]))
    cards.append(vcard(KRAUSE, "3.0", [(KRAUSE.email, "home")], [("0172 4455667", "cell")], K + ["Hausmeister"],
                       orgname=ORGS["eichenhof"].name, note="Hausmeister Eichenhof 1–7, nur mobil erreichbar."))
    # the malformed card (a property line without a colon) sits in the middle of the file
    bad = ["BEGIN:VCARD", "VERSION:3.0", "N:Brodersen;Kai;;;", "FN:Kai Brodersen", "ORG:Stadtwerke Lindenau GmbH",
           "EMAIL;TYPE=INTERNET,WORK:k.brodersen@stadtwerke-lindenau.de",
           "TEL;TYPE=WORK,VOICE 04621 4711-240", "END:VCARD"]
    cards.insert(8, bad)
    # colleagues
    for p, ext in [(JONAS, "11"), (MEHMET, "15"), (SABINE, "13"), (HENRIK, "10")]:
        cards.append(vcard(p, rng.choice(["3.0", "4.0"]), [(p.email, "work")], [(f"+49 431 987654-{ext}", "work")],
                           ["Kollegen"], orgname="Nordlicht Haustechnik GmbH"))
    # suppliers and others
    cards.append(vcard(PETERSEN, "3.0", [(PETERSEN.email, "work")], [("+49 40 3344556-70", "work")], ["Lieferant"],
                       orgname="Wärmetechnik Nord Großhandel GmbH"))
    cards.append(vcard(FISCHER, "4.0", [(FISCHER.email, "home")], [("0171 2233445", "cell")], ["Subunternehmer"],
                       orgname="Elektro Fischer"))
    cards.append(vcard(MERTENS, "4.0", [(MERTENS.email, "home")], [("0431 5889 12", "home")], ["Interessent"],
                       orgname=""))
    cards.append(vcard(P("Karin", "Nordmann", "f", "", "private"), "3.0", [], [("0431 8899001", "home")], ["Privat"],
                       orgname=""))
    text = "".join(fold(ln) + "\r\n" for card in cards for ln in card)
    return text, {"cards": len(cards)}


# --------------------------------------------------------------------------

def main() -> int:
    build_mail()
    apply_quirks()
    finalize_flags()
    st = write_maildir()
    cal, cst = build_calendar()
    (HERE / "calendar.ics").write_bytes(cal.encode("utf-8"))
    vcf, vst = build_contacts()
    (HERE / "contacts.vcf").write_bytes(vcf.encode("utf-8"))

    kinds: dict[str, int] = {}
    for m in MAILS:
        k = m.kind or "other"
        kinds[k] = kinds.get(k, 0) + 1
    out = sum(1 for m in MAILS if m.outbound)
    print(f"examples/mail/: {st['cur'] + st['new']} files ({st['cur']} in cur/, {st['new']} in new/), "
          f"{st['bytes'] / 1024:.0f} KiB; {len(MAILS)} distinct messages, {out} outbound from the owner")
    for k in sorted(kinds):
        print(f"  {k:24} {kinds[k]:4}")
    print("  + 1 duplicate copy, + 1 broken file")
    print(f"examples/calendar.ics: {cst['events']} VEVENTs, {len(cal.encode()) / 1024:.0f} KiB")
    print(f"examples/contacts.vcf: {vst['cards']} vCards (1 malformed), {len(vcf.encode()) / 1024:.0f} KiB")
    print("deliberate oddities:")
    for m in MAILS:
        if m.note:
            print(f"  - {m.note}: {m.sender.email} {m.subject[:60]!r}\n      {m.path}")
    print(f"  - broken file (binary junk, no headers): mail/cur/{st['broken']}")
    print("  - contacts.vcf: card 'Kai Brodersen' has a TEL line without ':'")
    return 0


if __name__ == "__main__":
    sys.exit(main())
