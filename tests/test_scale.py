"""The per-batch work of the store does not grow with the store.

Work is counted in SQLite virtual-machine steps (a progress handler called
every ``STEP`` instructions), not in seconds, so the test is stable on a
busy machine.  Two stores are grown the way a first sync grows them (the
store's own ``apply_batch``, 5,000 mails a batch): 10,000 and 100,000 mails,
300 customers whose domains match about 70 % of the mail, contacts created
from it, threads whose replies arrive batches later.  Then the same kind of
batch is applied to each, in a transaction that is rolled back, and the
work is compared:

- normal ingest: 500 new mails, a third of them replies into older threads;
- a UIDVALIDITY rescan: 500 known mails under new local ids, and the 500
  old locations removed;
- a folder moved back: every location of the folder is gone (it was moved
  to another folder, which has all of them), and 500 mails come back to
  their old places while leaving the other folder.
"""

from __future__ import annotations

import random
import sqlite3
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable

import pytest

from crm_bridge.crm_core.domains import AddressSet
from crm_bridge.crm_core.records import Address, Batch, Location, MailRecord
from crm_bridge.crm_core.settings import LinkingSettings, SourcePolicy
from crm_bridge.crm_core.store import Store

OWNER = "anna@nordlicht.example"
CUSTOMERS = 300
PEOPLE_PER_DOMAIN = 7  # ~2,100 contacts at customers once the mail has named them
BATCH = 5000
MEASURED = 500
STEP = 100
#: allowed growth of the per-batch work from 10,000 to 100,000 mails
GROWTH = 1.3
BASE = datetime(2025, 1, 1, tzinfo=timezone.utc)
POLICY = SourcePolicy(name="mail", owner=frozenset({OWNER}))
WORDS = ("Angebot Wartung Rechnung Termin Heizung Störung Lieferung Abnahme Protokoll Rückfrage Bestellung "
         "Zählerstand Besichtigung Einweisung Nachtrag Gewährleistung Ersatzteil Vertrag").split()


def _person(rng: random.Random) -> Address:
    if rng.random() < 0.7:  # someone at a customer
        d, p = rng.randrange(CUSTOMERS), rng.randrange(PEOPLE_PER_DOMAIN)
        sub = "mail." if p == 6 else ""
        return Address(f"p{p}@{sub}kunde{d}.example", f"Person {p} Kunde {d}")
    if rng.random() < 0.5:
        return Address(f"x{rng.randrange(3000)}@andere{rng.randrange(500)}.example", "Jemand Anders")
    return Address(f"f{rng.randrange(2000)}@gmail.com", "Privat")


def _parent(i: int) -> int | None:
    rng = random.Random(-1 - i)
    if i > 0 and rng.random() < 0.35:
        return i - rng.randrange(1, min(i, 3000) + 1)
    return None


_roots: dict[int, int] = {}


def _root(i: int) -> int:
    """The first mail of mail ``i``'s thread."""
    path = []
    while i not in _roots:
        parent = _parent(i)
        if parent is None:
            _roots[i] = i
            break
        path.append(i)
        i = parent
    for j in path:
        _roots[j] = _roots[i]
    return _roots[i]


def mail(i: int, scope: str = "INBOX", local_id: str | None = None) -> MailRecord:
    """Mail number ``i``: the same record every time it is asked for."""
    rng = random.Random(i)
    other = _person(rng)
    outbound = rng.random() < 0.35
    in_reply_to: tuple[str, ...] = ()
    references: tuple[str, ...] = ()
    parent = _parent(i)
    if parent is not None:  # a reply, up to 3,000 mails (batches) later
        in_reply_to = (f"m{parent}@mail.example",)
        references = tuple(dict.fromkeys((f"m{_root(parent)}@mail.example", in_reply_to[0])))
    cc = (_person(rng),) if rng.random() < 0.2 else ()
    subject = " ".join(rng.choice(WORDS) for _ in range(3)) + f" {i % 97}"
    return MailRecord(
        location=Location(scope, local_id or f"1:{i}", "\\Seen"),
        message_id=f"m{i}@mail.example",
        in_reply_to=in_reply_to,
        references=references,
        sender=Address(OWNER, "Anna") if outbound else other,
        to=(other,) if outbound else (Address(OWNER, "Anna"),),
        cc=cc,
        date=BASE + timedelta(minutes=7 * i),
        subject=subject,
        snippet=f"Guten Tag, {subject} – Nachricht {i}. " + " ".join(rng.choice(WORDS) for _ in range(30)),
        flags=("\\Seen",),
    )


def grow(path: Path, size: int) -> Store:
    store = Store(path, LinkingSettings(internal_domains=AddressSet(["nordlicht.example"])))
    with store.transaction():
        for d in range(CUSTOMERS):
            store.add_customer(f"Kunde {d}", [f"kunde{d}.example"])
    for start in range(0, size, BATCH):
        with store.transaction():
            store.apply_batch(POLICY, Batch(records=[mail(i) for i in range(start, min(size, start + BATCH))]))
    return store


def steps(store: Store, setup: Callable[[], None], work: Callable[[], None]) -> int:
    """VM steps (in units of ``STEP``) of ``work``, after ``setup``, all rolled back."""
    count = [0]

    def tick() -> int:
        count[0] += 1
        return 0

    with store.rolled_back():
        setup()
        store.conn.set_progress_handler(tick, STEP)
        try:
            work()
        finally:
            store.conn.set_progress_handler(None, STEP)
    return count[0]


def scenarios(store: Store, size: int) -> dict[str, int]:
    fresh = range(size, size + MEASURED)
    known = range(size - 3000, size - 3000 + MEASURED)  # threads with replies before and after them

    def ingest() -> None:
        store.apply_batch(POLICY, Batch(records=[mail(i) for i in fresh]))

    def uidvalidity_rescan() -> None:
        store.apply_batch(POLICY, Batch(records=[mail(i, local_id=f"2:{i}") for i in known]))
        store.apply_batch(POLICY, Batch(removed=[Location("INBOX", f"1:{i}") for i in known]))

    def moved_away() -> None:  # the whole folder went to "Moved": seen there, gone here
        store.conn.execute(
            """INSERT INTO locations(source, scope, local_id, kind, item_id, etag, flags, seen_at)
               SELECT source, 'Moved', local_id, kind, item_id, etag, flags, seen_at FROM locations
               WHERE source='mail' AND scope='INBOX'""")
        store.conn.execute("UPDATE locations SET gone_at='2026-01-01' WHERE source='mail' AND scope='INBOX'")

    def moved_back() -> None:
        store.apply_batch(POLICY, Batch(records=[mail(i) for i in known],
                                        removed=[Location("Moved", f"1:{i}") for i in known]))

    return {
        "ingest": steps(store, lambda: None, ingest),
        "uidvalidity rescan": steps(store, lambda: None, uidvalidity_rescan),
        "folder moved back": steps(store, moved_away, moved_back),
    }


@pytest.fixture(scope="module")
def measured(tmp_path_factory) -> dict[tuple[int, bool], dict[str, int]]:
    """Steps per scenario, by store size and whether the planner has statistics
    (none during a first sync; ``Store.optimize`` after a sync run makes them)."""
    out = {}
    for size in (10_000, 100_000):
        store = grow(tmp_path_factory.mktemp("scale") / f"crm-{size}.db", size)
        try:
            out[size, False] = scenarios(store, size)
            store.optimize()
            out[size, True] = scenarios(store, size)
        finally:
            store.close()
    return out


@pytest.mark.parametrize("analysed", [False, True], ids=["no statistics", "analysed"])
@pytest.mark.parametrize("scenario", ["ingest", "uidvalidity rescan", "folder moved back"])
def test_per_batch_work_does_not_grow_with_the_store(measured, scenario, analysed):
    small, big = measured[10_000, analysed][scenario], measured[100_000, analysed][scenario]
    assert small > 0
    assert big <= GROWTH * small, (
        f"{scenario}: {big * STEP:,} VM steps per batch at 100,000 mails, {small * STEP:,} at 10,000 "
        f"({big / small:.2f}x, allowed {GROWTH}x)"
    )


def test_the_stores_are_realistic(tmp_path):
    """What the scale test grows looks like an office's store: most mail linked, contacts made, threads across batches."""
    store = grow(tmp_path / "crm.db", 10_000)
    linked = store._one("SELECT COUNT(DISTINCT interaction_id) FROM links WHERE target='customer'")
    mails = store._one("SELECT COUNT(*) FROM interactions")
    by_thread = store._one("SELECT COUNT(*) FROM links WHERE reason='thread'")
    assert 0.6 * mails < linked < 0.9 * mails
    assert store._one("SELECT COUNT(*) FROM contacts") > 1500
    assert by_thread > 100
    assert store._one("SELECT COUNT(*) FROM threads") < 0.8 * mails


@pytest.mark.parametrize("analysed", [False, True])
def test_no_statement_of_a_batch_scans_a_table(tmp_path, analysed):
    """Every statement the scenarios run finds its rows through a key or an index,
    with the planner's statistics (after a sync run) and without (during the first one)."""
    store = grow(tmp_path / "crm.db", 4000)
    if analysed:
        store.optimize()
    seen: list[str] = []
    store.conn.set_trace_callback(seen.append)
    scenarios(store, 4000)
    store.conn.set_trace_callback(None)
    scans = set()
    once_a_run = {"SELECT email, contact_id FROM contact_addresses", "SELECT id, customer_id FROM contacts",
                  "SELECT domain, customer_id FROM customer_domains"}  # the link index, read when the store opens
    for sql in dict.fromkeys(seen):
        head = sql.lstrip().split(None, 1)[0].upper()
        if head.startswith("--") or head not in ("SELECT", "INSERT", "UPDATE", "DELETE", "WITH", "REPLACE"):
            continue  # SQLite's own FTS statements, BEGIN, PRAGMA, ...
        if sql in once_a_run:
            continue
        for row in store.conn.execute("EXPLAIN QUERY PLAN " + sql):
            detail = row[3]
            if detail.startswith("SCAN ") and detail.split()[1] in {
                    "interactions", "links", "locations", "participants", "thread_refs", "threads", "contacts",
                    "contact_addresses", "skipped", "quarantine", "link_overrides", "unread_texts", "o", "m", "l", "i", "x", "y", "u"}:
                scans.add(f"{detail}: {' '.join(sql.split())[:200]}")
    store.close()
    assert not scans, "\n".join(sorted(scans))


def test_a_sync_run_leaves_statistics_for_the_planner(crm_env, maildir, tmp_path):
    from tests.conftest import make_mail

    crm = crm_env()
    for n in range(3):
        maildir.add(make_mail(message_id=f"s{n}@x", subject=f"Angebot {n}"))
    crm("sync")
    conn = sqlite3.connect(tmp_path / "crm.db")
    try:
        analysed = {row[0] for row in conn.execute("SELECT tbl FROM sqlite_stat1")}
    finally:
        conn.close()
    assert {"interactions", "links", "locations", "participants", "thread_refs"} <= analysed


def test_an_unchanged_blocklist_is_not_applied_to_the_whole_store_again(tmp_path):
    settings = LinkingSettings(internal_domains=AddressSet(["nordlicht.example"]),
                               blocklist=AddressSet(["betriebsrat@kunde1.example"]))
    store = Store(tmp_path / "crm.db", settings)
    with store.transaction():
        store.apply_batch(POLICY, Batch(records=[mail(i) for i in range(300)]))
    read: list[str] = []
    store.conn.set_trace_callback(read.append)
    store.apply_blocklist()
    assert any("FROM participants" in sql for sql in read)
    read.clear()
    store.apply_blocklist()  # every run does this: it must not cost a pass over the store each time
    assert not any("FROM participants" in sql for sql in read)
    store.close()
    store = Store(tmp_path / "crm.db", LinkingSettings(blocklist=AddressSet(["p1@kunde2.example"])))
    store.conn.set_trace_callback(read.append)
    store.apply_blocklist()  # a changed blocklist is applied
    assert any("FROM participants" in sql for sql in read)
    store.close()
