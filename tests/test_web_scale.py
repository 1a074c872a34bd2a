"""The pages' work follows what they show, not the size of the store (issue 10's performance goal).

Two stores that differ only in how much *other* history they hold: the same
customer with the same 400 newest mails, the same contact, the same unknown
senders in the review queue's window, the same open tasks; the bigger one
has ten times the interactions, links, participants and (done) tasks, all
older or of other customers.  Each page is requested on both, counting the
SQLite virtual machine's steps (``set_progress_handler``), which, unlike
seconds, do not depend on what else the machine does.  A query that scans
all interactions, links, participants or tasks, or counts over the whole
store, makes the bigger store's count grow and fails the test.

Each pair is measured twice: without ``ANALYZE`` (a store before its first
sync run ends: the plans must not depend on statistics) and with it.
"""

from __future__ import annotations

import sqlite3
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from crm_bridge.crm_core.store import Store
from crm_bridge.crm_core.users import Users
from crm_bridge.web import app as app_module
from tests.web_fixtures import PASSWORD, login

SMALL, BIG = 3000, 30000
BIG_CUSTOMER_ITEMS = 400
CUSTOMERS = 50

PAGES = {
    "customer page": "/customers/1",
    "customer page, filtered": "/customers/1?kind=mail&period=365d",
    "contact page": "/contacts/1",
    "review queue": "/review",
    "search": "/search?q=Wartungsvertrag",
    "search matching customers": "/search?q=Kunde",
    "my tasks": "/tasks",
    "everyone's tasks": "/tasks?who=all",
}


def build(path: Path, size: int, analyse: bool = False) -> None:
    """One mail every two hours back from now (3,000: 250 days, more than the review queue's 180)."""
    store = Store(path)
    Users(store).add("anna", PASSWORD, "admin")
    conn = store.conn
    now = datetime.now(timezone.utc)
    conn.execute("BEGIN")
    conn.execute("INSERT INTO contacts(id, name, customer_id, origin, created_at) VALUES (1, 'Petra Gross', 1, 'x', 'x')")
    conn.execute("INSERT INTO contact_addresses VALUES ('petra@kunde1.example', 1)")
    for n in range(1, CUSTOMERS + 1):
        conn.execute("INSERT INTO customers(id, name, created_at) VALUES (?, ?, 'x')", (n, f"Kunde {n} GmbH"))
        conn.execute("INSERT INTO customer_domains VALUES (?, ?)", (f"kunde{n}.example", n))
    for n in range(1, size + 1):
        big = n <= BIG_CUSTOMER_ITEMS
        unmatched = not big and n % 10 == 0
        cid = 1 if big else 2 + n % (CUSTOMERS - 1)
        date = now - timedelta(hours=2 * n)
        word = "Wartungsvertrag" if big and n % 20 == 0 else "Angebot"
        conn.execute(
            "INSERT INTO interactions(id, kind, dedup_key, date, subject, snippet, visibility, created_at, updated_at)"
            " VALUES (?, 'mail', ?, ?, ?, ?, ?, 'x', 'x')",
            (n, f"gen:{n}", date.strftime("%Y-%m-%dT%H:%M:%SZ"), None if unmatched else f"{word} {n}",
             None if unmatched else f"Text zu {word} {n}", "metadata" if unmatched else "snippet"))
        sender = (f"u{n % 300}@unbekannt{n % 70}.example" if unmatched else "petra@kunde1.example" if big
                  else f"p{n % 7}@kunde{cid}.example")
        conn.execute("INSERT INTO participants VALUES (?, ?, '', 'from', '')", (n, sender))
        conn.execute("INSERT INTO participants VALUES (?, 'anna@firma.example', '', 'to', '')", (n,))
        conn.execute("INSERT INTO locations VALUES ('mail', 'INBOX', ?, 'interaction', ?, '', '', 'x', NULL)",
                     (str(n), n))
        if not unmatched:
            conn.execute("INSERT INTO links VALUES (?, 'customer', ?, 'domain')", (n, cid))
        if big:
            conn.execute("INSERT INTO links VALUES (?, 'contact', 1, 'address')", (n,))
        if n % 50 == 25:  # a follow-up every 50 mails, due three days later; done once it is a month past
            due = date + timedelta(days=3)
            conn.execute(
                "INSERT INTO tasks(uid, title, due, status, customer_id, contact_id, created_at, updated_at, assignee)"
                " VALUES (?, ?, ?, ?, ?, ?, 'x', 'x', ?)",
                (f"t{n}", f"Nachfassen {n}", due.strftime("%Y-%m-%d"),
                 "done" if due < now - timedelta(days=30) else "open", cid, 1 if big else None,
                 "anna" if n % 100 == 25 else "bob"))
    conn.execute("COMMIT")
    if analyse:
        conn.execute("ANALYZE")
    assert conn.execute("SELECT COUNT(*) FROM sqlite_master WHERE name = 'sqlite_stat1'").fetchone()[0] == analyse
    store.close()


class CountingStore(Store):
    """The store each request opens, counting its connection's VM steps."""

    steps = 0

    def _open(self) -> None:
        super()._open()

        def step() -> int:
            CountingStore.steps += 1
            return 0

        self.conn.set_progress_handler(step, 1)


@pytest.fixture(scope="module", params=[False, True], ids=["no statistics", "analysed"])
def stores(request, tmp_path_factory) -> dict[int, Path]:
    root = tmp_path_factory.mktemp("scale")
    out = {}
    for size in (SMALL, BIG):
        out[size] = root / f"crm-{size}.db"
        build(out[size], size, analyse=request.param)
    return out


@pytest.fixture(scope="module")
def steps(stores) -> dict[str, dict[int, int]]:
    """VM steps of each page at both sizes (the second request of each: the first warms up)."""
    patch = pytest.MonkeyPatch()
    patch.setattr(app_module, "Store", CountingStore)
    out: dict[str, dict[int, int]] = {name: {} for name in PAGES}
    try:
        for size, path in stores.items():
            app = app_module.create_app(path)
            app.testing = True
            client = app.test_client()
            login(client)
            for name, url in PAGES.items():
                assert client.get(url).status_code == 200, url
                CountingStore.steps = 0
                page = client.get(url)
                assert page.status_code == 200, url
                out[name][size] = CountingStore.steps
    finally:
        patch.undo()
    return out


def test_the_stores_differ_tenfold_and_show_the_same(stores):
    for path in stores.values():
        conn = sqlite3.connect(path)
        assert conn.execute("SELECT COUNT(*) FROM links WHERE target = 'customer' AND target_id = 1").fetchone()[0] \
            == BIG_CUSTOMER_ITEMS
        conn.close()


@pytest.mark.parametrize("page", list(PAGES))
def test_a_pages_work_does_not_grow_with_the_store(steps, page):
    small, big = steps[page][SMALL], steps[page][BIG]
    assert small > 300, steps  # the counter counts
    # the same work up to a few steps (B-tree seeks are one step however deep the tree); a full-text
    # search reads a term in each segment of the FTS5 index, and a bigger index has a few more segments
    slack = 1.1 if page.startswith("search") else 1.02
    assert big <= small * slack + 50, f"{page}: {small} VM steps at {SMALL:,} interactions, {big} at {BIG:,}"



def test_a_store_of_version_4_gets_the_read_indexes(tmp_path):
    from crm_bridge.crm_core.schema import MIGRATIONS, READ_INDEXES, SCHEMA_VERSION

    names = [statement.split(" IF NOT EXISTS ")[1].split()[0] for statement in READ_INDEXES]
    store = Store(tmp_path / "old.db")
    for name in names:
        store.conn.execute(f"DROP INDEX {name}")
    store.conn.execute("UPDATE meta SET value='4' WHERE key='schema_version'")
    store.close()
    store = Store(tmp_path / "old.db")
    assert store.schema_version() == SCHEMA_VERSION >= 5
    present = {name for (name,) in store.conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert set(names) <= present
    with store.transaction():
        MIGRATIONS[5](store)  # idempotent
    store.close()
