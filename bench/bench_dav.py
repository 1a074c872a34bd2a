#!/usr/bin/env python3
"""CalDAV/CardDAV sync speed against a local Radicale, with vdirsyncer for reference.

    python bench/bench_dav.py [--events 3000] [--cards 3000] [--runs 3] [--quick] [--no-vdirsyncer] [--no-write] [--keep]

Starts its own Radicale (tests/dav_servers.DavServer, logging at info so
every request is counted from its log) on a free loopback port, creates one
calendar and one address book with MKCALENDAR/MKCOL and fills them by
writing the item files straight into Radicale's storage (PUT-ing 6,000 items
one by one takes ~12 minutes); a PROPFIND must then list every item.  A
warm-up pass lets Radicale fill its item cache before anything is timed.
Then, each ``--runs`` times (median, min-max):

(a) bare protocol per collection with niquests + lxml: ``sync-collection``
    (empty token, getetag only) and ``calendar-multiget`` /
    ``addressbook-multiget`` in batches of 500 hrefs, multistatus parsed,
    no records built; plus a no-change ``sync-collection`` with the token
    from the first;
(b) the whole ``crm sync`` process into a fresh *realistic* store
    (bench/realistic.py: 300 customers, 2,000 contacts from an address
    book, a blocklist, internal domains) from a caldav and a carddav
    source (password through ``password_env``), with its peak memory; and,
    as a second line, into a fresh store with no customers (the old setup);
(c) a no-change rerun of ``crm sync`` and the HTTP requests it sends;
(d) ``vdirsyncer sync`` of the same two collections into local folders:
    initial (fresh status and folders every time) and no-change.

vdirsyncer comes from PATH, else from a virtualenv bench/work/vdirsyncer-venv
(created with --system-site-packages and ``pip install vdirsyncer`` on first
use; our own environment stays untouched).

Everything lives under bench/work/dav/ (removed at the end unless --keep).
Writes the section "dav" of bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import sqlite3
import statistics
import subprocess
import sys
import time
import uuid
from datetime import date, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._results import TreeMemory, like_an_installation, write_section  # noqa: E402
from bench.mailgen import INTERNAL, customer_domains  # noqa: E402
from bench.realistic import StoreKit  # noqa: E402
from crm_bridge.crm_core.contentlines import escape_text, fold_line  # noqa: E402
from tests import dav_servers  # noqa: E402
from tests.dav_servers import USER, DavServer  # noqa: E402

WORK = ROOT / "bench" / "work" / "dav"
VENV = ROOT / "bench" / "work" / "vdirsyncer-venv"
CAL, BOOK = "bench-calendar", "bench-contacts"
PW_ENV = "CRM_BENCH_DAV_PASSWORD"
BATCH = 500

# ---------------------------------------------------------------------------
# test data

VTIMEZONE_BERLIN = """BEGIN:VTIMEZONE
TZID:Europe/Berlin
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
END:VTIMEZONE"""

FIRST = ["Anna", "Jonas", "Lena", "Felix", "Marie", "Paul", "Sophie", "Lukas", "Emma", "Noah", "Hannah",
         "Elias", "Mia", "Ben", "Lea", "Finn", "Clara", "Tom", "Ida", "Oskar", "Greta", "Karl", "Jürgen", "Björn"]
LAST = ["Müller", "Schmidt", "Schneider", "Fischer", "Weber", "Meyer", "Wagner", "Becker", "Schulz", "Hoffmann",
        "Koch", "Richter", "Klein", "Wolf", "Neumann", "Schwarz", "Braun", "Zimmermann", "Krüger", "Hartmann"]
TOPICS = ["Wartung Heizungsanlage", "Angebot Wärmepumpe", "Baubesprechung", "Abnahme Lüftung", "Jahresgespräch",
          "Störung Kältetechnik", "Begehung Technikzentrale", "Projektstatus Sanierung", "Schulung Regelung",
          "Vertragsverlängerung Wartung", "Heizlastberechnung", "Übergabe Dokumentation"]
STAFF = ["anna.weber", "jonas.keller", "lena.fischer", "tom.becker"]


def _lines(lines: list[str]) -> str:
    return "\r\n".join(fold_line(l) for l in "\r\n".join(lines).split("\r\n")) + "\r\n"


def _person(rng: random.Random) -> tuple[str, str]:
    return rng.choice(FIRST), rng.choice(LAST)


def _local(first: str, last: str) -> str:
    table = str.maketrans({"ä": "ae", "ö": "oe", "ü": "ue", "ß": "ss"})
    return f"{first}.{last}".lower().translate(table)


def make_event(i: int, rng: random.Random, domains: list[str], today: date) -> tuple[str, str]:
    uid = f"bench-{i:05d}-{uuid.UUID(int=rng.getrandbits(128)).hex[:12]}@crm-bridge.example"
    day = today + timedelta(days=rng.randint(-365, 365))
    start = datetime(day.year, day.month, day.day, rng.randint(7, 17), rng.choice((0, 15, 30, 45)))
    end = start + timedelta(minutes=rng.choice((30, 45, 60, 90, 120)))
    domain = rng.choice(domains)
    organizer = rng.choice(STAFF)
    fmt = "%Y%m%dT%H%M%S"
    lines = [
        "BEGIN:VCALENDAR", "VERSION:2.0", "PRODID:-//crm-bridge bench//DE", "CALSCALE:GREGORIAN",
        VTIMEZONE_BERLIN.replace("\n", "\r\n"),
        "BEGIN:VEVENT",
        f"UID:{uid}",
        f"DTSTAMP:{(start - timedelta(days=10)).strftime(fmt)}Z",
        f"CREATED:{(start - timedelta(days=12)).strftime(fmt)}Z",
        f"LAST-MODIFIED:{(start - timedelta(days=10)).strftime(fmt)}Z",
        f"DTSTART;TZID=Europe/Berlin:{start.strftime(fmt)}",
        f"DTEND;TZID=Europe/Berlin:{end.strftime(fmt)}",
        f"SUMMARY:{escape_text(rng.choice(TOPICS))} – {domain.split('.')[0].title()}",
        f"LOCATION:{escape_text(rng.choice(['Vor Ort beim Kunden', 'Büro Kiel', 'Teams', 'Baustelle, Haus ' + str(rng.randint(1, 40))]))}",
        "DESCRIPTION:" + escape_text("Agenda:\n1. Stand der Arbeiten\n2. Offene Punkte, Termine\n3. Nächste Schritte"),
        "STATUS:CONFIRMED", "TRANSP:OPAQUE", "SEQUENCE:0",
        f"ORGANIZER;CN={escape_text(organizer.replace('.', ' ').title())}:mailto:{organizer}@{INTERNAL}",
    ]
    for _ in range(rng.randint(1, 3)):
        first, last = _person(rng)
        lines.append(f'ATTENDEE;CN="{first} {last}";ROLE=REQ-PARTICIPANT;PARTSTAT='
                     f'{rng.choice(["ACCEPTED", "NEEDS-ACTION", "TENTATIVE"])};RSVP=TRUE:mailto:{_local(first, last)}@{domain}')
    if rng.random() < 0.3:
        colleague = rng.choice(STAFF)
        lines.append(f"ATTENDEE;ROLE=OPT-PARTICIPANT;PARTSTAT=ACCEPTED:mailto:{colleague}@{INTERNAL}")
    if i % 8 == 0:  # every 8th: weekly series with one exception date
        lines.append(f"RRULE:FREQ=WEEKLY;COUNT={rng.randint(6, 20)}")
        lines.append(f"EXDATE;TZID=Europe/Berlin:{(start + timedelta(weeks=rng.randint(1, 4))).strftime(fmt)}")
    if rng.random() < 0.4:
        lines += ["BEGIN:VALARM", "ACTION:DISPLAY", "DESCRIPTION:Erinnerung", "TRIGGER:-PT15M", "END:VALARM"]
    lines += ["END:VEVENT", "END:VCALENDAR"]
    return f"{uid.split('@')[0]}.ics", _lines(lines)


def make_card(i: int, rng: random.Random, domains: list[str]) -> tuple[str, str]:
    uid = str(uuid.UUID(int=rng.getrandbits(128)))
    first, last = _person(rng)
    domain = rng.choice(domains)
    org = domain.split(".")[0].replace("-", " ").title() + rng.choice([" GmbH", " AG", " KG", " eG", " Ltd"])
    email = f"{_local(first, last)}@{domain}"
    phone = f"+49 {rng.randint(30, 999)} {rng.randint(100000, 9999999)}"
    mobile = f"+49 1{rng.randint(50, 79)} {rng.randint(1000000, 99999999)}"
    title = rng.choice(["Geschäftsführer", "Einkauf", "Technische Leitung", "Hausmeister", "Projektleitung", ""])
    if i % 2:
        lines = ["BEGIN:VCARD", "VERSION:3.0", "PRODID:-//crm-bridge bench//DE", f"UID:{uid}",
                 f"N:{escape_text(last)};{escape_text(first)};;;", f"FN:{first} {last}", f"ORG:{escape_text(org)};Technik",
                 f"EMAIL;TYPE=INTERNET,WORK:{email}", f"TEL;TYPE=WORK,VOICE:{phone}", f"TEL;TYPE=CELL:{mobile}",
                 f"ADR;TYPE=WORK:;;Hauptstraße {rng.randint(1, 200)};Kiel;;{rng.randint(20000, 29999)};Deutschland"]
        if rng.random() < 0.3:
            lines.append(f"EMAIL;TYPE=INTERNET,HOME:{first.lower()}{rng.randint(1, 99)}@gmx.example")
    else:
        lines = ["BEGIN:VCARD", "VERSION:4.0", "PRODID:-//crm-bridge bench//DE", f"UID:urn:uuid:{uid}",
                 "KIND:individual", f"N:{escape_text(last)};{escape_text(first)};;;", f"FN:{first} {last}", f"ORG:{escape_text(org)}",
                 f"EMAIL;TYPE=work;PREF=1:{email}", f"TEL;VALUE=uri;TYPE=\"work,voice\":tel:{phone.replace(' ', '-')}",
                 f"TEL;VALUE=uri;TYPE=cell:tel:{mobile.replace(' ', '-')}",
                 f"REV:{datetime(2025, 1, 1) + timedelta(minutes=i):%Y%m%dT%H%M%SZ}"]
    if title:
        lines.append(f"TITLE:{escape_text(title)}")
    lines.append("END:VCARD")
    return f"{uid}.vcf", _lines(lines)


# ---------------------------------------------------------------------------
# server


def start_radicale(root: Path) -> DavServer:
    """The tests' Radicale, logging every request (with its own time) at info."""
    return dav_servers.start_radicale(root, log_level="info")


def load(server: DavServer, n_events: int, n_cards: int) -> tuple[float, float, int, int]:
    """Create the collections over HTTP, write the items into the storage,
    check Radicale lists them all.  (seconds writing, seconds of Radicale's
    first listing, bytes of events, bytes of cards)"""
    t = time.perf_counter()
    cal_url = server.make_calendar(CAL, components="VEVENT")
    book_url = server.make_addressbook(BOOK)
    domains = customer_domains(1)
    today = date.today()
    sizes = []
    for url, tag, count, maker in (
        (cal_url, "VCALENDAR", n_events, lambda i, rng: make_event(i, rng, domains, today)),
        (book_url, "VADDRESSBOOK", n_cards, lambda i, rng: make_card(i, rng, domains)),
    ):
        folder = server.storage_dir() / USER / url.rstrip("/").rsplit("/", 1)[-1]
        props = json.loads((folder / ".Radicale.props").read_text())
        assert props.get("tag") == tag, props
        rng = random.Random(7 if tag == "VCALENDAR" else 11)
        total = 0
        for i in range(count):
            name, text = maker(i, rng)
            data = text.encode("utf-8")
            (folder / name).write_bytes(data)
            total += len(data)
        sizes.append(total)
    written = time.perf_counter() - t
    # Radicale lists the folder on every request: no restart needed, but check.
    # The first listing parses every item to fill Radicale's item cache (slow).
    for url, count in ((cal_url, n_events), (book_url, n_cards)):
        listed = len(propfind_hrefs(server, url))
        if listed != count:
            raise SystemExit(f"Radicale lists {listed} items in {url}, expected {count}:\n{server.read_log()[-3000:]}")
    return written, time.perf_counter() - t - written, sizes[0], sizes[1]


def propfind_hrefs(server: DavServer, url: str) -> list[str]:
    """Hrefs of the items of a collection (PROPFIND Depth 1), patient enough
    for Radicale's first look at thousands of new files."""
    import niquests
    from lxml import etree

    body = '<?xml version="1.0"?><D:propfind xmlns:D="DAV:"><D:prop><D:getetag/></D:prop></D:propfind>'
    with niquests.Session() as session:
        resp = session.request("PROPFIND", url, data=body, timeout=600, auth=(server.user, server.password),
                               headers={"Depth": "1", "Content-Type": "application/xml"})
    assert resp.status_code == 207, (resp.status_code, resp.text[:300])
    hrefs = [r.findtext("{DAV:}href") for r in etree.fromstring(resp.content).iterchildren("{DAV:}response")]
    return [h for h in hrefs if h and not h.endswith("/")]


class RequestLog:
    """The requests Radicale logged since the last mark, and the seconds it
    says it spent answering them."""

    LINE = re.compile(r"\[INFO\] (\w+) request for '([^']*)'.*?(?:using '([^']*)')?$", re.M)
    DONE = re.compile(r"\[INFO\] \w+ response status for '[^']*'.*? in ([0-9.]+) seconds", re.M)

    def __init__(self, server: DavServer):
        self.path = server.log_path
        self.offset = 0
        self.server_s = 0.0  # of the last since()

    def mark(self) -> None:
        self.offset = self.path.stat().st_size

    def since(self) -> list[tuple[str, str, str]]:
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            text = f.read().decode("utf-8", "replace")
        self.server_s = sum(float(m.group(1)) for m in self.DONE.finditer(text))
        return [(m.group(1), m.group(2), m.group(3) or "") for m in self.LINE.finditer(text)]


# ---------------------------------------------------------------------------
# (a) the bare protocol


SYNC_BODY = ('<?xml version="1.0" encoding="utf-8"?><D:sync-collection xmlns:D="DAV:">'
             "<D:sync-token>{token}</D:sync-token><D:sync-level>1</D:sync-level>"
             "<D:prop><D:getetag/></D:prop></D:sync-collection>")


def bare_protocol(server: DavServer) -> dict:
    """sync-collection + multigets of both collections; then a no-change
    sync-collection of each.  Seconds and what came back."""
    import niquests
    from lxml import etree

    D = "{DAV:}"
    session = niquests.Session()
    auth = (server.user, server.password)
    hdr = {"Content-Type": "application/xml; charset=utf-8"}
    out = {"items": 0, "bytes": 0, "requests": 0}
    tokens = {}
    t = time.perf_counter()
    for coll, ns, report, data_tag in (
        (CAL, "urn:ietf:params:xml:ns:caldav", "calendar-multiget", "calendar-data"),
        (BOOK, "urn:ietf:params:xml:ns:carddav", "addressbook-multiget", "address-data"),
    ):
        url = server.abs(f"/{server.user}/{coll}/")
        resp = session.request("REPORT", url, data=SYNC_BODY.format(token="").encode(),
                               headers={**hdr, "Depth": "0"}, auth=auth)
        assert resp.status_code == 207, (resp.status_code, resp.text[:300])
        out["requests"] += 1
        root = etree.fromstring(resp.content)
        hrefs = [r.findtext(D + "href") for r in root.iterchildren(D + "response")]
        tokens[url] = root.findtext(D + "sync-token")
        for i in range(0, len(hrefs), BATCH):
            body = "".join([f'<?xml version="1.0" encoding="utf-8"?><C:{report} xmlns:D="DAV:" xmlns:C="{ns}">',
                            f"<D:prop><D:getetag/><C:{data_tag}/></D:prop>",
                            *(f"<D:href>{h}</D:href>" for h in hrefs[i:i + BATCH]), f"</C:{report}>"])
            resp = session.request("REPORT", url, data=body.encode(), headers={**hdr, "Depth": "1"}, auth=auth)
            assert resp.status_code == 207, (resp.status_code, resp.text[:300])
            out["requests"] += 1
            root = etree.fromstring(resp.content, etree.XMLParser(huge_tree=True))
            for r in root.iterchildren(D + "response"):
                href = r.findtext(D + "href")
                etag = r.findtext(f"{D}propstat/{D}prop/{D}getetag")
                text = r.findtext(f"{D}propstat/{D}prop/{{{ns}}}{data_tag}")
                if href and etag and text:
                    out["items"] += 1
                    out["bytes"] += len(text)
    out["initial_s"] = time.perf_counter() - t
    t = time.perf_counter()
    for url, token in tokens.items():
        resp = session.request("REPORT", url, data=SYNC_BODY.format(token=token).encode(),
                               headers={**hdr, "Depth": "0"}, auth=auth)
        assert resp.status_code == 207, (resp.status_code, resp.text[:300])
        root = etree.fromstring(resp.content)
        assert not list(root.iterchildren(D + "response")), "the no-change sync-collection reported changes"
    out["nochange_s"] = time.perf_counter() - t
    session.close()
    return out


# ---------------------------------------------------------------------------
# processes


def run_input(argv: list[str], cwd: Path, stdin: bytes) -> str:
    """Run a command feeding ``stdin``; its stdout (fails loudly)."""
    done = subprocess.run(argv, cwd=cwd, input=stdin, capture_output=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(map(str, argv))} failed ({done.returncode}):\n"
                         f"{done.stdout.decode()[-3000:]}\n{done.stderr.decode()[-3000:]}")
    return done.stdout.decode()


def run_wait4(argv: list[str], cwd: Path, env: dict | None = None) -> tuple[float, int, str, str]:
    """Wall seconds, peak memory (MB), stdout, stderr; output goes to files so no pipe can fill.

    Peak memory: the summed PSS of the process and its reader process
    (bench/_results.TreeMemory; os.wait4's ru_maxrss includes this script's own RSS).
    """
    out_f = WORK / "child.out"
    err_f = WORK / "child.err"
    with open(out_f, "wb") as out, open(err_f, "wb") as err:
        started = time.perf_counter()
        proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=out, stderr=err, stdin=subprocess.DEVNULL)
        memory = TreeMemory(proc.pid)
        _, status, _usage = os.wait4(proc.pid, 0)
        tree_mb, _rss_sum = memory.stop()
        elapsed = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    stdout, stderr = out_f.read_text("utf-8", "replace"), err_f.read_text("utf-8", "replace")
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(map(str, argv))} failed ({proc.returncode}):\n{stdout[-3000:]}\n{stderr[-3000:]}")
    return elapsed, tree_mb, stdout, stderr


def crm_stores(server: DavServer, work: Path) -> StoreKit:
    """Configs with the realistic store (or none) for the two DAV sources."""
    return StoreKit(work, {
        "bench-calendar": {"type": "caldav", "url": server.url, "username": server.user, "password_env": PW_ENV,
                           "allow_plaintext": True, "calendars": [CAL]},
        "bench-contacts": {"type": "carddav", "url": server.url, "username": server.user, "password_env": PW_ENV,
                           "allow_plaintext": True, "addressbooks": [BOOK]},
    })


def vdirsyncer_bin() -> tuple[str, str]:
    """(path of vdirsyncer, how it was found/installed)."""
    found = shutil.which("vdirsyncer")
    if found:
        return found, f"on PATH ({found})"
    exe = VENV / "bin" / "vdirsyncer"
    how = f"virtualenv {VENV.relative_to(ROOT)} (--system-site-packages, `pip install vdirsyncer`)"
    if not exe.exists():
        print("installing vdirsyncer into", VENV)
        subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(VENV)], check=True)
        subprocess.run([str(VENV / "bin" / "python"), "-m", "pip", "install", "-q", "vdirsyncer"], check=True)
    return str(exe), how


def vdirsyncer_config(server: DavServer, base: Path) -> Path:
    cfg = base / "config"
    cfg.write_text(f"""[general]
status_path = "{base / 'status'}/"

[pair bench_cal]
a = "cal_remote"
b = "cal_local"
collections = ["{CAL}"]

[storage cal_remote]
type = "caldav"
url = "{server.url}"
username = "{server.user}"
password = "{server.password}"

[storage cal_local]
type = "filesystem"
path = "{base / 'calendars'}/"
fileext = ".ics"

[pair bench_book]
a = "book_remote"
b = "book_local"
collections = ["{BOOK}"]

[storage book_remote]
type = "carddav"
url = "{server.url}"
username = "{server.user}"
password = "{server.password}"

[storage book_local]
type = "filesystem"
path = "{base / 'contacts'}/"
fileext = ".vcf"
""")
    return cfg


def vdir_reset(base: Path) -> None:
    for sub in ("status", "calendars", "contacts"):
        shutil.rmtree(base / sub, ignore_errors=True)
    (base / "calendars" / CAL).mkdir(parents=True)  # pre-created: discover asks nothing
    (base / "contacts" / BOOK).mkdir(parents=True)


def count_files(folder: Path, ext: str) -> int:
    return sum(1 for p in folder.rglob(f"*{ext}"))


# ---------------------------------------------------------------------------


def med(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} s ({min(values):.2f}-{max(values):.2f})"


def main() -> None:
    like_an_installation()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=3000)
    parser.add_argument("--cards", type=int, default=3000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--no-vdirsyncer", action="store_true")
    parser.add_argument("--no-write", action="store_true", help="print the table, leave RESULTS.md alone")
    parser.add_argument("--keep", action="store_true", help="keep bench/work/dav (server data, stores, logs)")
    parser.add_argument("--quick", action="store_true", help="300 events, 300 cards, one round")
    args = parser.parse_args()
    if args.quick:
        args.events, args.cards, args.runs = 300, 300, 1
    cmdline = "python bench/bench_dav.py" + "".join(
        f" {a}" for a in sys.argv[1:] if a not in ("--no-write", "--keep"))

    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    server = start_radicale(WORK / "radicale")
    try:
        report = bench(server, args, cmdline)
    finally:
        server.stop()
    print(report)
    if not args.no_write:
        write_section("dav", report)
    if not args.keep:
        shutil.rmtree(WORK, ignore_errors=True)


def kinds(requests: list[tuple[str, str, str]]) -> str:
    """'PROPFIND /alice/ x2, REPORT ... x7' in the order first seen."""
    counted: dict[str, int] = {}
    for method, path, _ in requests:
        counted[f"{method} {path}"] = counted.get(f"{method} {path}", 0) + 1
    return ", ".join(f"{k} x{v}" if v > 1 else k for k, v in counted.items())


def bench(server: DavServer, args, cmdline: str) -> str:
    import radicale

    reqlog = RequestLog(server)
    load_s, cache_s, ev_bytes, card_bytes = load(server, args.events, args.cards)
    print(f"wrote {args.events} events ({ev_bytes / 1e6:.1f} MB) and {args.cards} vCards "
          f"({card_bytes / 1e6:.1f} MB) in {load_s:.1f} s; Radicale's first listing took {cache_s:.1f} s")
    n_items = args.events + args.cards

    kit = crm_stores(server, WORK / "crm")
    env = {**os.environ, PW_ENV: server.password}
    only = ["--source", "bench-calendar", "--source", "bench-contacts"]  # not the realistic store's address book

    vx = None
    if not args.no_vdirsyncer:
        exe, how = vdirsyncer_bin()
        vversion = subprocess.run([exe, "--version"], capture_output=True, text=True).stdout.strip()
        vbase = WORK / "vdirsyncer"
        vbase.mkdir()
        vx = [exe, "-c", str(vdirsyncer_config(server, vbase))]

    m: dict[str, list] = {k: [] for k in (
        "bare", "bare_nc", "crm", "crm_rss", "plain", "plain_rss", "crm_reqs", "rerun", "rerun_reqs", "crm_nc", "crm_nc_rss",
        "crm_nc_reqs", "v", "v_reqs", "v_nc", "v_nc_reqs",
        "bare_srv", "crm_srv", "rerun_srv", "crm_nc_srv", "v_srv", "v_nc_srv")}
    load_before = os.getloadavg()
    bare_requests = 0
    outputs: dict[str, str] = {}
    counts: dict = {}
    status: dict = {}
    rescan: list[str] = []
    # Rounds interleave every client, so a busy neighbour on the machine hits all alike.
    # Round 0 is the warm-up (Radicale's caches, our imports and .pyc files) and is not kept.
    for rnd in range(args.runs + 1):
        keep = rnd > 0
        t0 = time.perf_counter()
        # (a)
        reqlog.mark()
        r = bare_protocol(server)
        reqlog.since()
        assert r["items"] == n_items, r
        bare_requests = r["requests"]
        if keep:
            m["bare"].append(r["initial_s"])
            m["bare_nc"].append(r["nochange_s"])
            m["bare_srv"].append(reqlog.server_s)
        # (b), (e)
        cfg = kit.config("real", True)
        crm = [sys.executable, "-m", "crm_bridge.cli", "--config", str(cfg)]
        reqlog.mark()
        sec, rss, outputs["initial"], _ = run_wait4([*crm, "sync", *only], ROOT, env)
        reqs = reqlog.since()
        srv = reqlog.server_s
        _, _, status_txt, _ = run_wait4([*crm, "status", "--json"], ROOT, env)
        status = json.loads(status_txt)
        counts = status["counts"]
        items = {row["name"]: row["items"] for row in status["sources"]}
        if counts["appointments"] != args.events or items.get("bench-contacts") != args.cards:
            raise SystemExit(f"the store does not hold what the server has: {counts} {items}\n{outputs['initial']}")
        with sqlite3.connect(cfg.parent / "real.db") as db:
            rescan = sorted(name for name, flag in db.execute("SELECT name, rescan FROM sources") if flag)
        if keep:
            m["crm"].append(sec)
            m["crm_rss"].append(rss)
            m["crm_reqs"].append(reqs)
            m["crm_srv"].append(srv)
        # (b') the first rerun: may read a source again, see the note in the report
        reqlog.mark()
        sec, _, outputs["rerun"], _ = run_wait4([*crm, "sync", *only], ROOT, env)
        if keep:
            m["rerun"].append(sec)
            m["rerun_reqs"].append(reqlog.since())
            m["rerun_srv"].append(reqlog.server_s)
        # (c)
        reqlog.mark()
        sec, rss, outputs["nochange"], _ = run_wait4([*crm, "sync", *only], ROOT, env)
        if keep:
            m["crm_nc"].append(sec)
            m["crm_nc_rss"].append(rss)
            m["crm_nc_reqs"].append(reqlog.since())
            m["crm_nc_srv"].append(reqlog.server_s)
        # (b2) the same into a store with no customers
        plain = [sys.executable, "-m", "crm_bridge.cli", "--config", str(kit.config("plain", False))]
        sec, rss, _, _ = run_wait4([*plain, "sync", *only], ROOT, env)
        if keep:
            m["plain"].append(sec)
            m["plain_rss"].append(rss)
        # (d)
        if vx is not None:
            vdir_reset(vbase)
            run_input([*vx, "discover"], ROOT, b"y\n" * 10)
            reqlog.mark()
            sec, _, _, _ = run_wait4([*vx, "sync"], ROOT)
            reqs = reqlog.since()
            srv = reqlog.server_s
            got = (count_files(vbase / "calendars", ".ics"), count_files(vbase / "contacts", ".vcf"))
            if got != (args.events, args.cards):
                raise SystemExit(f"vdirsyncer fetched {got}")
            if keep:
                m["v"].append(sec)
                m["v_reqs"].append(reqs)
                m["v_srv"].append(srv)
            reqlog.mark()
            sec, _, _, _ = run_wait4([*vx, "sync"], ROOT)
            if keep:
                m["v_nc"].append(sec)
                m["v_nc_reqs"].append(reqlog.since())
                m["v_nc_srv"].append(reqlog.server_s)
        print(f"round {rnd}{'' if keep else ' (warm-up)'}: {time.perf_counter() - t0:.1f} s; "
              + ", ".join(f"{k} {v[-1]:.2f}" for k, v in m.items() if v and isinstance(v[-1], float) and "srv" not in k))
    load_after = os.getloadavg()
    for name in ("initial", "rerun", "nochange"):
        print(f"--- crm sync, {name}:\n{outputs[name].strip()}")

    # ------------------------------------------------------------- report
    md = statistics.median
    bare, crm_i, crm_nc = md(m["bare"]), md(m["crm"]), md(m["crm_nc"])
    n_nc = [len(r) for r in m["crm_nc_reqs"]]
    ok = lambda cond: "met" if cond else "**NOT met**"  # noqa: E731
    srv = lambda key: f"{md(m[key]):.2f} s"  # noqa: E731
    rows = [
        f"| measurement | median (min-max) of {args.runs} | requests | Radicale busy (its log) | ratio |",
        "|---|---:|---:|---:|---:|",
        f"| (a) bare protocol, both collections: sync-collection + multiget per 500, niquests + lxml | "
        f"{med(m['bare'])} | {bare_requests} | {srv('bare_srv')} (with the no-change REPORTs) | 1.00 |",
        f"| (a) bare no-change sync-collection with the token, both collections | {med(m['bare_nc'])} | 2 | | |",
        f"| **(b) `crm sync` initial, whole process, fresh realistic store** | **{med(m['crm'])}** | "
        f"{md(len(r) for r in m['crm_reqs']):.0f} | {srv('crm_srv')} | **{crm_i / bare:.2f}x (a)** |",
        f"| (b2) the same into a store with no customers | {med(m['plain'])} | | | {md(m['plain']) / bare:.2f}x (a) |",
        f"| (b') `crm sync` first rerun after (b) (a rescan, see below) | {med(m['rerun'])} | "
        f"{md(len(r) for r in m['rerun_reqs']):.0f} | {srv('rerun_srv')} | |",
        f"| **(c) `crm sync` no-change rerun, whole process** | **{med(m['crm_nc'])}** | "
        f"{md(n_nc):.0f} | {srv('crm_nc_srv')} | {crm_nc / md(m['bare_nc']):.1f}x (a) no-change |",
    ]
    targets = [f"`crm sync` initial <= 1.5x bare protocol: {ok(crm_i <= 1.5 * bare)} ({crm_i / bare:.2f}x)",
               f"no-change rerun, one request per collection: {ok(max(n_nc) <= 2)} ({kinds(m['crm_nc_reqs'][-1])})"]
    if vx is not None:
        vi, vn = md(m["v"]), md(m["v_nc"])
        rows += [
            f"| (d) `vdirsyncer sync` initial (fresh status + folders) | {med(m['v'])} | "
            f"{md(len(r) for r in m['v_reqs']):.0f} | {srv('v_srv')} | crm {vi / crm_i:.2f}x faster |",
            f"| (d) `vdirsyncer sync` no-change | {med(m['v_nc'])} | "
            f"{md(len(r) for r in m['v_nc_reqs']):.0f} | {srv('v_nc_srv')} | crm {vn / crm_nc:.2f}x faster |",
        ]
        targets += [f"crm initial >= 2x faster than vdirsyncer initial: {ok(vi >= 2 * crm_i)} ({vi / crm_i:.2f}x)",
                    f"crm no-change >= 4x faster than vdirsyncer no-change: {ok(vn >= 4 * crm_nc)} ({vn / crm_nc:.2f}x)"]
    srcs = {r["name"]: r for r in status["sources"]}
    lines = [
        "## CalDAV/CardDAV (bench/bench_dav.py)",
        "",
        f"`{cmdline}`",
        "",
        f"Radicale {radicale.VERSION} (multifilesystem storage, htpasswd plain, loopback, no TLS, logging at info "
        f"to count requests): one calendar with {args.events:,} VEVENTs ({ev_bytes / 1e6:.1f} MB; TZID "
        "Europe/Berlin + VTIMEZONE, 1 in 8 weekly with an EXDATE, +-1 year around today, organizer internal, "
        f"1-3 customer attendees) and one address book with {args.cards:,} vCards (half 3.0, half 4.0, ORG/EMAIL/TEL; "
        f"{card_bytes / 1e6:.1f} MB), written into the storage in {load_s:.1f} s (Radicale's first PROPFIND of "
        f"them, which fills its item cache: {cache_s:.1f} s). Rounds interleave (a)-(d); one warm-up round first. "
        f"Load average {load_before[0]:.2f} before, {load_after[0]:.2f} after (other work on the machine shows here).",
        "",
        *rows,
        "",
        f"(e) Peak memory of `crm sync` (summed PSS of the process tree; see run_wait4): initial **{max(m['crm_rss'])} MB**, "
        f"no-change {max(m['crm_nc_rss'])} MB; initial into the store with no customers {max(m['plain_rss'])} MB.",
        "",
        f"Requests, `crm sync` initial: {kinds(m['crm_reqs'][-1])}. First rerun: {kinds(m['rerun_reqs'][-1])}. "
        f"No-change: {kinds(m['crm_nc_reqs'][-1])}.",
    ]
    if vx is not None:
        lines[-1] += (f" vdirsyncer initial: {kinds(m['v_reqs'][-1])}; no-change: {kinds(m['v_nc_reqs'][-1])}.")
    lines += [
        "",
        "Realistic store (bench/realistic.py): 300 customers, 2,000 contacts from an address book synced before the "
        "clock starts, a blocklist, two internal domains; the generated events' attendees and the cards' addresses "
        "are at the same organisation domains as the generated mail. "
        f"Store after each initial `crm sync` (checked every round): {counts['appointments']:,} appointments, "
        f"{counts['contacts']:,} contacts, {counts['customers']:,} customers, {counts['tasks']:,} tasks, "
        f"{counts['quarantine']} quarantined; " + ", ".join(f"{n}: {r['items']:,} items" for n, r in srcs.items()) + ".",
        "",
        "(b') The first rerun after an initial sync is not a no-change run: appointments stored as metadata "
        "only (no customer matched) that the address book's contacts then linked make the engine ask for a "
        f"rescan (`_rescan_withheld`; flag set after the initial run on: {', '.join(rescan) or 'none'}), and "
        "a rescan reads the source again in full, discovery included. "
        "`crm sync` said: `" + " / ".join(l.strip() for l in outputs["rerun"].strip().splitlines()) + "`.",
    ]
    if vx is not None:
        lines += ["", f"vdirsyncer: {vversion}, {how}; two pairs (caldav -> filesystem, carddav -> filesystem) "
                  "against the same collections; `discover` (untimed) before each initial run."]
    lines += ["", "Targets: " + "; ".join(targets) + "."]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
