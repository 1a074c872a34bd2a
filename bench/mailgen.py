#!/usr/bin/env python3
"""Fast, deterministic generator of realistic mail for benchmarks.

    python bench/mailgen.py DIR N [--seed S]

writes N messages into the Maildir DIR (``cur/``; ``new/`` and ``tmp/`` are
created empty).  From Python::

    from bench.mailgen import generate_messages, write_maildir
    for raw in generate_messages(1000, seed=1): ...
    write_maildir("/tmp/bench-mail", 100_000)

Each message is a distinct RFC 5322 message of 3–8 KB: ~15 headers including
two ``Received`` lines, a unique ``Message-ID``; ~30 % are replies carrying
``In-Reply-To``/``References`` so threads form; ~10 % carry a base64 PDF-like
attachment; some are multipart/alternative; ~7 % are bulk (``List-Id``,
``Precedence: bulk``).  Correspondents: 370 organisation domains (a few mailing
from a subdomain, some on ``.co.uk``/``.com.au``), ~2,000 addresses, a few
freemail senders.  The mailbox owner is ``anna.weber@nordlicht-haustechnik.de``
(the same as in ``examples/``); about 30 % of the messages are hers (outbound).

Messages are built from string templates, not with the ``email`` package:
100,000 messages take a few seconds to generate.  Standard library only.
"""

from __future__ import annotations

import base64
import binascii
import os
import random
import sys
import time
from email.header import Header
from typing import Iterator

OWNER = "anna.weber@nordlicht-haustechnik.de"
OWNER_NAME = "Anna Weber"
INTERNAL = "nordlicht-haustechnik.de"
REF_TS = 1793491200  # 2026-11-01T00:00:00Z, the same reference date as examples/
SPAN = 548 * 86400  # ~18 months
#: organisation domains the correspondents write from; bench/realistic.py makes the first 300 customers,
#: so that about 70 % of the mail matches a customer (the rest: other firms, freemail, newsletters, colleagues)
DOMAINS = 370

FIRST = ["Thomas", "Claudia", "Jürgen", "Katrin", "Frank", "Petra", "Jörg", "Sarah", "James", "Elke", "Martin",
         "Birgit", "Uwe", "Björn", "Nadine", "Lukas", "Melanie", "Stefan", "Sabine", "Michael", "Andrea", "Markus",
         "Susanne", "Oliver", "Julia", "Christian", "Anja", "Tobias", "Heike", "Sven", "Emma", "Oliver", "Chloe",
         "Daniel", "Sophie", "Marco", "Ayşe", "Mehmet", "Zoë", "François", "Agnieszka", "Lars", "Ingrid", "Kai"]
LAST = ["Brandt", "Richter", "Müller", "Vogel", "Lehmann", "Kramer", "Sommer", "Whitfield", "O'Connor", "Schulze",
        "Hansen", "Krause", "Köhler", "Krüger", "Brenner", "Grote", "Schmidt", "Schneider", "Fischer", "Weber",
        "Meyer", "Wagner", "Becker", "Schulz", "Hoffmann", "Schäfer", "Koch", "Bauer", "Klein", "Wolf", "Neumann",
        "Schwarz", "Zimmermann", "Braun", "Hofmann", "Hartmann", "Lange", "Schmitt", "Werner", "Krause", "Petersen",
        "Jensen", "Thompson", "Evans", "Walsh", "Yılmaz", "Nowak", "Dubois", "Rossi", "Jansen"]
WORD1 = ["stadtwerke", "hotel", "bauhaus", "praxis", "wbg", "klinik", "autohaus", "immobilien", "hausverwaltung",
         "schule", "kita", "gemeinde", "brauerei", "baeckerei", "logistik", "metallbau", "spedition", "apotheke",
         "sportzentrum", "seniorenheim"]
WORD2 = ["lindenau", "seeblick", "kramer", "sommerfeld", "eichenhof", "nordsee", "foerde", "holstein", "elbe",
         "harbour", "birkenweg", "moewe", "leuchtturm", "ostsee", "heide", "marsch", "kanal", "hafen", "buche",
         "ahorn", "thornbury", "kingsway", "riverside"]
TLDS = ["de"] * 12 + ["com", "eu", "at", "ch", "nl", "co.uk", "co.uk", "com.au", "example"]
FREEMAIL = ["gmail.com", "gmx.de", "web.de", "t-online.de", "gmx.net", "outlook.com", "yahoo.de"]
COLLEAGUES = [("Jonas Keller", "jonas.keller"), ("Mehmet Yılmaz", "mehmet.yilmaz"), ("Sabine Hoffmann", "sabine.hoffmann"),
              ("Henrik Nordmann", "h.nordmann"), ("", "info")]
LISTS = ["shk-aktuell", "waermetechnik-nord", "haustechnik-news", "ihk-kiel-info", "heizungsforum", "baublatt",
         "energie-update", "handwerk-digital", "sanitaer-magazin", "messe-shk"]

SUBJECTS = ["Angebot Heizungsmodernisierung", "Terminbestätigung Wartung", "Rechnung", "Heizungsstörung – dringend",
            "Wartungsvertrag Verlängerung", "Lieferverzögerung Wärmepumpe", "Abnahmeprotokoll", "Zahlungserinnerung",
            "Rückfrage zum Angebot", "Bestellung Filtermatten", "Legionellenprüfung", "Zählerstände",
            "Quote request: boiler replacement", "Invoice", "Site visit", "Delivery schedule", "Purchase order",
            "Maintenance visit", "Kein Warmwasser", "Thermostat defekt", "Schlüsselübergabe Heizraum",
            "Einweisung Haustechnik", "Förderantrag BEG", "Hydraulischer Abgleich", "Baustellenbesprechung",
            "Protokoll Jour fixe", "Nachtrag zum Auftrag", "Gewährleistung", "Ersatzteilbestellung",
            "Terminvorschlag Begehung"]
BULK_SUBJECTS = ["Newsletter", "Aktionswochen für Fachbetriebe", "Ihre Rechnung ist online", "Lieferavis",
                 "Neue Ausschreibung", "Webinar-Einladung", "Produktneuheiten", "Preisliste gültig ab"]

PARAS = [
    "vielen Dank für Ihre Nachricht. Wir haben die Unterlagen geprüft und melden uns bis Ende der Woche mit "
    "einem Terminvorschlag für die Besichtigung vor Ort.",
    "anbei erhalten Sie wie besprochen unser Angebot. Das Angebot ist sechs Wochen gültig; die Preise verstehen "
    "sich zuzüglich der gesetzlichen Mehrwertsteuer. Für Rückfragen stehe ich Ihnen gerne zur Verfügung.",
    "seit heute früh ist die Heizung im Verwaltungsgebäude ausgefallen, die Anlage zeigt eine Störung an. Können "
    "Sie heute noch jemanden vorbeischicken? Der Heizraum ist über den Hintereingang zugänglich.",
    "unser Techniker war gestern vor Ort und hat die Zündelektrode getauscht. Die Anlage läuft seitdem wieder "
    "störungsfrei. Den Servicebericht finden Sie im Anhang.",
    "wie telefonisch besprochen bestätige ich Ihnen den Wartungstermin. Unser Team benötigt ca. vier Stunden; "
    "während dieser Zeit steht kein Warmwasser zur Verfügung. Bitte informieren Sie die Mieter rechtzeitig.",
    "für die Buchung benötigen wir auf der Rechnung noch unsere Bestellnummer. Könnten Sie die Rechnung bitte "
    "korrigiert erneut senden? Ohne Bestellnummer kann unsere Kreditorenbuchhaltung sie nicht freigeben.",
    "leider hat uns unser Großhändler mitgeteilt, dass sich die Lieferung der Wärmepumpe um etwa zwei Wochen "
    "verzögert. Der Montagetermin muss daher verschoben werden; einen neuen Vorschlag sende ich Ihnen morgen.",
    "die Lüftungsanlage im Untergeschoss wird bisher von einer anderen Firma gewartet. Könnten Sie diese in den "
    "Wartungsvertrag aufnehmen? Die technischen Daten und das letzte Prüfprotokoll habe ich beigefügt.",
    "Ist bei Variante B die Demontage der Altanlage und die fachgerechte Entsorgung enthalten? Und wie lang ist "
    "derzeit die Lieferzeit für die Außeneinheiten?",
    "Die Abgasmessung erfolgt durch den bevollmächtigten Bezirksschornsteinfeger, nicht durch uns. Die letzte "
    "Messung war laut unseren Unterlagen im Frühjahr; die nächste ist im kommenden Jahr fällig.",
    "Thank you for your enquiry. My colleague can visit the site next Tuesday at 4:30pm for the survey. Please let "
    "me know if that works for you and whom he should ask for at reception.",
    "Please find attached our quote for the replacement of the two gas boilers. Option A covers a like-for-like "
    "replacement, option B an air source heat pump cascade. The quote is valid for six weeks.",
    "Could you please re-issue the invoice addressed to our Manchester office and quote our PO number? Otherwise "
    "our accounts payable system will reject it automatically.",
    "Tenants on the third floor report that the radiators in the meeting rooms are cold again. Could someone take "
    "a look this week? Access is via the loading bay; the code for the door is at the front desk.",
    "Our engineer bled the system and replaced a faulty thermostatic valve; everything is working normally again. "
    "The service report with the measured flow temperatures is attached for your records.",
    "Great – we'll go with option B. The purchase order will follow from our accounts team in the next few days; "
    "please quote it on all invoices and delivery notes.",
    "Zur Vorbereitung der Nebenkostenabrechnung benötigen wir die Zählerstände der Wärmemengenzähler vom letzten "
    "Wartungstermin. Wäre es möglich, uns diese bis Monatsende zu schicken?",
    "Im Raum 2.14 lässt sich das Thermostat nicht mehr verstellen, der Heizkörper ist dauerhaft warm. Bitte beim "
    "nächsten Einsatz mit ansehen; der Schlüssel liegt beim Empfang.",
    "Hiermit erteilen wir Ihnen den Auftrag gemäß Angebot inklusive der besprochenen Änderungen. Die Bestellung "
    "folgt separat über unseren Einkauf, bitte bestätigen Sie uns den voraussichtlichen Ausführungszeitraum.",
    "Für die Abnahme und die Einweisung Ihrer Mitarbeiter schlage ich Donnerstag um 10:00 Uhr vor. Die "
    "Gewährleistung beginnt mit dem Datum des unterschriebenen Abnahmeprotokolls.",
    "Bei der Durchsicht unserer Buchhaltung ist uns aufgefallen, dass eine Rechnung noch offen ist. Sicher handelt "
    "es sich um ein Versehen. Wir bitten Sie, den Betrag in den nächsten Tagen zu überweisen.",
    "Die Zahlung ist gestern rausgegangen, bitte entschuldigen Sie die Verzögerung. Die Rechnung lag bei uns noch "
    "in der Freigabe, weil die Bestellnummer gefehlt hat.",
    "  Pos. 1  Gas-Brennwertkessel 120 kW inkl. Montage        38.450,00 EUR\n"
    "  Pos. 2  Neutralisationsanlage                            1.240,00 EUR\n"
    "  Pos. 3  Demontage und Entsorgung Altanlage               2.980,00 EUR\n"
    "  Pos. 4  Inbetriebnahme und Einweisung                      640,00 EUR",
    "Just a heads-up: the car park will be closed next week for resurfacing. Engineers can use the rear entrance "
    "on Kaistraße; please make sure they carry their ID badges.",
]
SIGS = ["\n\nMit freundlichen Grüßen\n{name}\n\n{org}\nTel. +49 431 {tel}\n",
        "\n\nViele Grüße\n{name}\n",
        "\n\nKind regards,\n{name}\n{org}\nPhone +44 161 {tel}\n",
        "\n\nBest,\n{name}\n\nSent from my iPhone\n",
        "\n\nMit freundlichen Grüßen\n\n{name}\n{org}\n{dom}\n\nDiese E-Mail enthält vertrauliche Informationen. "
        "Wenn Sie nicht der richtige Adressat sind, informieren Sie bitte sofort den Absender.\n"]
OWNER_SIG = ("\n\nViele Grüße\nAnna Weber\n\n-- \nAnna Weber\nKundenservice & Auftragsabwicklung\n"
             "Nordlicht Haustechnik GmbH\nHafenstraße 17 · 24103 Kiel\nTel. +49 431 987654-12\n")
MAILERS = ["Microsoft Outlook 16.0", "Mozilla Thunderbird", "Apple Mail (2.3774.600.62)", "iPhone Mail (21F90)",
           "Open-Xchange Mailer v7.10.6", "Roundcube Webmail/1.6.7", "GMX Freemail", "Evolution 3.50.2"]
WD = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]
MON = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]


def _enc(s: str) -> str:
    """RFC 2047 encode when needed (done once per name/subject, not per message)."""
    if s.isascii():
        return s
    return Header(s, "utf-8").encode()


def _addr(name: str, email: str) -> str:
    if not name:
        return email
    if not name.isascii():
        return f"{_enc(name)} <{email}>"
    if any(c in name for c in ".,;:@()\"'"):
        return '"' + name.replace('"', "") + f'" <{email}>'
    return f"{name} <{email}>"


def _date(ts: int) -> str:
    """RFC 5322 date in Europe/Berlin (EU DST approximated by day of year)."""
    tm = time.gmtime(ts)
    summer = (tm.tm_mon, tm.tm_mday) >= (3, 29) and (tm.tm_mon, tm.tm_mday) < (10, 25)
    off = 2 if summer else 1
    lt = time.gmtime(ts + off * 3600)
    return (f"{WD[lt.tm_wday]}, {lt.tm_mday:02d} {MON[lt.tm_mon - 1]} {lt.tm_year} "
            f"{lt.tm_hour:02d}:{lt.tm_min:02d}:{lt.tm_sec:02d} +0{off}00")


class _World:
    """Correspondents, domains and pre-encoded pieces for one seed."""

    def __init__(self, seed: int):
        r = random.Random(seed * 7919 + 17)
        doms: list[str] = []
        seen = set()
        while len(doms) < DOMAINS:
            d = f"{r.choice(WORD1)}-{r.choice(WORD2)}.{r.choice(TLDS)}"
            if d not in seen:
                seen.add(d)
                doms.append(d)
        self.domains = doms
        # a few organisations send from a subdomain of their registrable domain
        send_dom = {d: (f"{r.choice(['einkauf', 'mail', 'buchhaltung', 'technik'])}.{d}" if r.random() < .08 else d)
                    for d in doms}
        people = []
        seen = set()
        while len(people) < 2000:
            f, l = r.choice(FIRST), r.choice(LAST)
            d = doms[len(people) % DOMAINS]
            local = f"{f[0]}.{l}" if r.random() < .5 else f"{f}.{l}"
            local = (local.lower().replace("ä", "ae").replace("ö", "oe").replace("ü", "ue").replace("ß", "ss")
                     .replace("ş", "s").replace("ı", "i").replace("ë", "e").replace("ç", "c").replace("'", ""))
            email = f"{local}@{send_dom[d]}"
            if email in seen:
                continue
            seen.add(email)
            people.append((_addr(f"{f} {l}", email), email, f"{f} {l}", d))
        self.people = people
        free = []
        for i in range(60):
            f, l = r.choice(FIRST), r.choice(LAST)
            email = f"{l.lower().encode('ascii', 'ignore').decode().replace(chr(39), '')}{r.randrange(60, 99)}" \
                    f".{f[0].lower()}@{r.choice(FREEMAIL)}"
            free.append((_addr(f"{f} {l}", email), email, f"{f} {l}", email.rpartition("@")[2]))
        self.free = free
        self.owner = _addr(OWNER_NAME, OWNER)
        self.colleagues = [(_addr(n, f"{lp}@{INTERNAL}"), f"{lp}@{INTERNAL}", n or "Info", INTERNAL)
                           for n, lp in COLLEAGUES]
        self.subjects = [(_enc(s), s.isascii()) for s in SUBJECTS]
        self.bulk_subjects = [_enc(s) for s in BULK_SUBJECTS]
        en = [p for p in PARAS if p.isascii() and not p.startswith(" ")]
        de = [p for p in PARAS if p not in en]
        self.paras = {lang: [p.encode("utf-8") for p in ps] for lang, ps in (("de", de), ("en", en))}
        self.quoted = {lang: [b"> " + p.replace(b"\n", b"\n> ") for p in ps] for lang, ps in self.paras.items()}
        # attachment pool: base64 bodies of 2-3.3 KB "PDFs"
        self.attachments = []
        for i in range(24):
            raw = (b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Type /Catalog /Pages 2 0 R >>\nendobj\n"
                   + r.randbytes(r.randrange(1900, 3200)) + b"\n%%EOF\n")
            self.attachments.append((f"Dokument_{i + 1:03d}.pdf", base64.encodebytes(raw)))
        self.sigs = []
        for name_tpl in SIGS:
            self.sigs.append(name_tpl)


def generate_messages(n: int, seed: int = 1) -> Iterator[bytes]:
    """Yield ``n`` distinct RFC 5322 messages (bytes, LF line ends) of 3–8 KB."""
    w = _World(seed)
    r = random.Random(seed)
    rand, randrange, choice = r.random, r.randrange, r.choice
    people, free = w.people, w.free
    threads: list[list] = []  # [subject_encoded, refs(list), correspondent]
    step = SPAN / max(n, 1)
    t0 = REF_TS - SPAN
    for i in range(n):
        ts = int(t0 + i * step + rand() * step)
        x = rand()
        bulk = x < 0.07
        reply_to = None
        if not bulk and threads and rand() < 0.30:
            reply_to = threads[-1 - int(rand() ** 2 * min(len(threads), 400))]
        if bulk:
            lst = choice(LISTS)
            dom = f"{lst}.example" if rand() < .5 else f"{lst}.de"
            who = (f"{lst.replace('-', ' ').title()} <newsletter@{dom}>", f"newsletter@{dom}", lst, dom)
            corr = who
        elif reply_to is not None:
            corr = reply_to[2]
        else:
            y = rand()
            corr = choice(free) if y < .05 else (choice(w.colleagues) if y < .09 else choice(people))
        outbound = not bulk and rand() < 0.30
        if outbound:
            frm, frm_email, to = w.owner, OWNER, corr[0]
            mid_dom = INTERNAL
        else:
            frm, frm_email, to = corr[0], corr[1], w.owner
            mid_dom = corr[1].rpartition("@")[2]
        msgid = f"{ts:x}.{i:x}.{seed}.{randrange(1 << 30):08x}@{mid_dom}"
        if reply_to is not None:
            subj = ("Re: " if not reply_to[0].startswith(("Re: ", "AW: ")) else "") + reply_to[0]
            refs = reply_to[1]
            irt = refs[-1]
            ref_hdr = "\n ".join(f"<{m}>" for m in refs[-10:])
            refs.append(msgid)
        elif bulk:
            subj = f"{choice(w.bulk_subjects)} {randrange(1, 13):02d}/{2025 + (ts > REF_TS - 300 * 86400)}"
            irt = None
        else:
            s, _ = choice(w.subjects)
            subj = f"{s} {randrange(1000, 9999)}" if rand() < .6 else s
            irt = None
            threads.append([subj, [msgid], corr, ""])
        date = _date(ts)
        lang = "en" if corr[3].endswith((".com", ".co.uk", ".com.au", ".nl")) else "de"
        paras, quoted = w.paras[lang], w.quoted[lang]
        npara = len(paras)
        # ---- headers
        h = []
        if not outbound:
            sdom = frm_email.rpartition("@")[2]
            ip = f"{choice(('192.0.2', '198.51.100', '203.0.113'))}.{randrange(1, 255)}"
            qid = f"{randrange(1 << 40):010X}"
            h.append(f"Return-Path: <{'bounce-' + str(i) + '@' + sdom if bulk else frm_email}>\n"
                     f"Delivered-To: {OWNER}\n"
                     f"Received: from mx01.{INTERNAL} (localhost [127.0.0.1])\n\tby mail.{INTERNAL} (Postfix) "
                     f"with ESMTP id {qid}\n\tfor <{OWNER}>; {date}\n"
                     f"Received: from mail.{sdom} (mail.{sdom} [{ip}])\n\tby mx01.{INTERNAL} (Postfix) with ESMTPS "
                     f"id {qid[::-1]}\n\t(version=TLS1_3 cipher=TLS_AES_256_GCM_SHA384)\n\tfor <{OWNER}>; {date}\n"
                     f"Authentication-Results: mail.{INTERNAL};\n\tdkim=pass header.d={sdom};\n\t"
                     f"spf=pass smtp.mailfrom={sdom}\n"
                     f"X-Spam-Status: No, score=-{randrange(1, 40) / 10}\n")
        else:
            h.append(f"Received: from [10.0.0.{randrange(20, 90)}] (unknown [10.0.0.1])\n\tby mail.{INTERNAL} "
                     f"(Postfix) with ESMTPSA id {randrange(1 << 40):010X}\n\tfor <{corr[1]}>; {date}\n"
                     f"Received: from localhost (localhost [127.0.0.1])\n\tby mail.{INTERNAL} (amavis)\n\t"
                     f"with ESMTP; {date}\n")
        h.append(f"From: {frm}\nTo: {to}\n")
        if not bulk and rand() < .25:
            c = choice(w.colleagues) if rand() < .5 else choice(people)
            h.append(f"Cc: {c[0]}\n")
        h.append(f"Subject: {subj}\nDate: {date}\nMessage-ID: <{msgid}>\n")
        if irt is not None:
            h.append(f"In-Reply-To: <{irt}>\nReferences: {ref_hdr}\n")
        if bulk:
            h.append(f"List-Id: {corr[2]} <news.{corr[3]}>\nList-Unsubscribe: <https://{corr[3]}/unsubscribe?id={i:x}>"
                     f"\nPrecedence: bulk\n")
        h.append(f"X-Mailer: {choice(MAILERS)}\nContent-Language: {'en-GB' if lang == 'en' else 'de-DE'}\n"
                 f"MIME-Version: 1.0\n")
        head = "".join(h).encode("utf-8")
        # ---- body
        kind = rand()
        attach = (not bulk) and kind < 0.10
        alt = bulk or 0.10 <= kind < 0.22
        qp = 0.22 <= kind < 0.32
        if attach:
            target = randrange(6400, 7700)
        else:
            target = randrange(3200, 6000)
        a_name = a_data = None
        if attach:
            a_name, a_data = w.attachments[randrange(len(w.attachments))]
        budget = target - len(head) - 400 - (len(a_data) if a_data else 0)
        if alt:
            budget = budget // 2 - 200
        name = corr[2] if not outbound else OWNER_NAME
        if lang == "en":
            parts = [b"Hi,\n\n" if rand() < .5 else b"Dear Sir or Madam,\n\n"]
        else:
            parts = [b"Hallo,\n\n" if rand() < .5 else b"Guten Tag,\n\n"]
        size = 12
        j = randrange(npara)
        while size < budget and (reply_to is None or size < budget * 0.45):
            p = paras[j % npara]
            parts.append(p)
            parts.append(b"\n\n")
            size += len(p) + 2
            j += randrange(1, 5)
        parts.append((OWNER_SIG if outbound else w.sigs[(2 + randrange(2)) if lang == "en" else randrange(5)].format(
            name=name, org=corr[3], tel=randrange(100000, 999999), dom=corr[3])).encode("utf-8"))
        if reply_to is not None:
            pdate, pname = reply_to[3] or date, reply_to[2][2] if outbound else OWNER_NAME
            if lang == "en":
                parts.append(f"\nOn {pdate[:16]}, {pname} wrote:\n".encode("utf-8"))
            else:
                parts.append(f"\nAm {pdate[5:16]} schrieb {pname}:\n".encode("utf-8"))
            size = sum(len(p) for p in parts)
            while size < budget:
                q = quoted[j % npara]
                parts.append(q)
                parts.append(b"\n>\n")
                size += len(q) + 3
                j += randrange(1, 4)
        text = b"".join(parts)
        while len(head) + len(text) * (2 if alt else 1) < 3150:  # keep every message >= ~3 KB
            text += b"\n" + paras[randrange(npara)] + b"\n"
        if qp:
            text_part = (b"Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: quoted-printable\n\n"
                         + binascii.b2a_qp(text))
        else:
            text_part = b"Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\n" + text
        if alt:
            html = (b"<html><head><meta charset=\"utf-8\"></head><body><p>"
                    + text.replace(b"&", b"&amp;").replace(b"<", b"&lt;").replace(b"\n\n", b"</p>\n<p>")
                    .replace(b"\n", b"<br>\n") + b"</p></body></html>\n")
            b1 = f"=_alt_{i:x}_{seed}".encode()
            body = (b"Content-Type: multipart/alternative; boundary=\"" + b1 + b"\"\n\n--" + b1 + b"\n" + text_part
                    + b"\n--" + b1 + b"\nContent-Type: text/html; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\n"
                    + html + b"\n--" + b1 + b"--\n")
        else:
            body = text_part
        if attach:
            b2 = f"=_mix_{i:x}_{seed}".encode()
            body = (b"Content-Type: multipart/mixed; boundary=\"" + b2 + b"\"\n\n--" + b2 + b"\n" + body
                    + b"\n--" + b2 + b"\nContent-Type: application/pdf; name=\"" + a_name.encode()
                    + b"\"\nContent-Disposition: attachment; filename=\"" + a_name.encode()
                    + b"\"\nContent-Transfer-Encoding: base64\n\n" + a_data + b"--" + b2 + b"--\n")
        if reply_to is not None:
            reply_to[3] = date
        elif not bulk:
            threads[-1][3] = date
        yield head + body
        if len(threads) > 5000:
            del threads[:1000]


def write_maildir(path, n: int, seed: int = 1) -> int:
    """Write ``n`` messages into the Maildir at ``path`` (``cur/``); return how many were written."""
    path = os.fspath(path)
    for sub in ("cur", "new", "tmp"):
        os.makedirs(os.path.join(path, sub), exist_ok=True)
    cur = os.path.join(path, "cur")
    pid = os.getpid()
    host = "mailgen"
    flags = (":2,S", ":2,S", ":2,S", ":2,S", ":2,S", ":2,S", ":2,RS", ":2,", ":2,FS", ":2,S")
    start = REF_TS - SPAN
    step = SPAN / max(n, 1)
    flag_o = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    count = 0
    for i, raw in enumerate(generate_messages(n, seed)):
        name = f"{int(start + i * step)}.M{i}P{pid}Q{seed}.{host}{flags[i % 10]}"
        fd = os.open(os.path.join(cur, name), flag_o, 0o644)
        try:
            os.write(fd, raw)
        finally:
            os.close(fd)
        count += 1
    return count


def main(argv: list[str]) -> int:
    import argparse

    ap = argparse.ArgumentParser(description="Write N generated messages into the Maildir DIR.")
    ap.add_argument("dir")
    ap.add_argument("n", type=int)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args(argv)
    t = time.perf_counter()
    written = write_maildir(args.dir, args.n, args.seed)
    dt = time.perf_counter() - t
    print(f"wrote {written} messages to {os.path.join(args.dir, 'cur')} in {dt:.1f} s "
          f"({written / dt if dt else 0:,.0f} msg/s)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))


def customer_domains(seed: int = 1) -> list[str]:
    """The registrable domains (DOMAINS of them) the generated correspondents write from."""
    return list(_World(seed).domains)


def correspondents(seed: int = 1) -> list[tuple[str, str, str]]:
    """(name, address, registrable domain) of the 2,000 people at organisation domains."""
    return [(name, email, dom) for _hdr, email, name, dom in _World(seed).people]
