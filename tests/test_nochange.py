"""A sync that finds nothing new does a fixed amount of store work.

Counted in SQL statements (not seconds): the statements a no-change run
sends to the store do not grow with the number of customers in the config
or of mails in the store, the store is not analysed again, and the one
walk over the source's locations (its item count for ``crm status``) runs
while the reader process works, not after it.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from datetime import datetime, timedelta, timezone

import pytest

from crm_bridge.crm_core.store import Store
from crm_bridge.sync import worker
from crm_bridge.sync.config import load_config
from crm_bridge.sync.engine import Engine
from tests.conftest import Maildir, make_mail, write_config

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the reader process is Linux only")

COUNT_LOCATIONS = "SELECT COUNT(*) FROM locations"


def _setup(tmp: Path, customers: int, mails: int) -> Path:
    md = Maildir(tmp / "mail")
    for n in range(mails):
        md.add(make_mail(sender=f"kim@kunde{n % 7}.example", message_id=f"m{n}@x", subject=f"Mail {n}"),
               folder=None if n % 2 else "Archiv")
    return write_config(tmp / "crm.toml", customers=[(f"Kunde {k}", [f"kunde{k}.example"]) for k in range(customers)],
                        sources={"anna": {"type": "maildir", "path": str(md.root), "owner": ["anna@nordlicht.example"]}},
                        store=str(tmp / "crm.db"))


def _run(config: Path, monkeypatch: pytest.MonkeyPatch | None = None) -> tuple[list[str], list[int], Engine]:
    """Statements of one sync run in the main process (traced when ``monkeypatch`` is given), and how many
    had run when the reader process said it was done."""
    engine = Engine(load_config(str(config)), parallel=True)
    statements: list[str] = []
    ends: list[int] = []
    if monkeypatch is not None:
        engine.store.conn.set_trace_callback(statements.append)
        pull = worker.pull

        def noted(*args, **kwargs):
            yield from pull(*args, **kwargs)
            ends.append(len(statements))

        monkeypatch.setattr(worker, "pull", noted)
    try:
        [result] = [r for r in engine.run() if r.name == "anna"]
        assert result.status == "ok", result.message
    finally:
        engine.close()
    return statements, ends, engine


def _items(engine: Engine) -> int:
    [row] = [r for r in engine.store.status() if r["name"] == "anna"]
    return row["items"]


def _nochange_statements(tmp: Path, customers: int, mails: int, monkeypatch) -> tuple[list[str], list[int], Engine]:
    config = _setup(tmp, customers, mails)
    _run(config)
    with monkeypatch.context() as patch:
        return _run(config, patch)


def test_a_no_change_run_does_the_same_store_work_whatever_the_store_holds(tmp_path, monkeypatch):
    if not worker.available():
        pytest.skip("no reader process here")
    small, _, _ = _nochange_statements(tmp_path / "small", 3, 4, monkeypatch)
    big, ends, engine = _nochange_statements(tmp_path / "big", 120, 60, monkeypatch)
    assert len(big) == len(small), "a no-change run's statements grow with the customers or mails"
    assert not [s for s in big if "ANALYZE" in s.upper() or "PRAGMA OPTIMIZE" in s.upper()]
    counts = [k for k, s in enumerate(big) if COUNT_LOCATIONS in s]
    assert len(counts) == 1 and counts[0] < ends[0], "the item count ran after the reader was done"
    assert _items(engine) == 60


def test_the_item_count_stays_true_when_a_run_stores_something(tmp_path):
    config = _setup(tmp_path, customers=3, mails=6)
    _, _, engine = _run(config)
    assert _items(engine) == 6
    mail = next((tmp_path / "mail" / "cur").iterdir())
    os.unlink(mail)
    _, _, engine = _run(config)
    assert _items(engine) == 5
    _, _, engine = _run(config)  # no change
    assert _items(engine) == 5


def test_customers_are_current_answers_as_each_one_asked_alone(tmp_path):
    """The two-query check of the config's customers agrees with the one-by-one check."""
    from crm_bridge.crm_core.domains import AddressSet
    from crm_bridge.crm_core.settings import LinkingSettings
    from crm_bridge.crm_core.store import Store

    store = Store(tmp_path / "crm.db", LinkingSettings(internal_domains=AddressSet(["nordlicht.example"])))
    with store.transaction():
        store.add_customer("Müller Bau", ["mueller-bau.de", "mb.example"], origin="config", account_owner="anna")
        store.add_customer("Kunde GmbH", ["kunde.example"], origin="config")
    cases = [
        [("Müller Bau", ["mueller-bau.de"], "anna")],
        [("müller bau", ["mueller-bau.de"], None)],  # the same name to SQLite's NOCASE
        [("MÜLLER BAU", ["MB.example"], None)],  # NOCASE folds ASCII letters only: another name
        [("Müller BAU ", ["mb.example"], "anna")],
        [("Müller Bau", ["neu.example"], None)],  # a new domain
        [("Müller Bau", [], "jonas")],  # another owner
        [("Kunde GmbH", ["kunde.example"], None), ("Neu AG", [], None)],  # a new customer
        [("kunde gmbh", ["kunde.example"], ""), ("Müller Bau", ["mb.example"], None)],
    ]
    for customers in cases:
        one_by_one = all(store.customer_is_current(*c) for c in customers)
        assert store.customers_are_current(customers) == one_by_one, customers
    assert store.customers_are_current(cases[0]) and not store.customers_are_current(cases[4])


def _rules_steps(tmp_path, name: str, old: int) -> int:
    """SQLite VM steps (per 100) of the follow-up rules on a store with ``old`` customer mails older than
    their lookback window and a few recent ones, after the end-of-run statistics."""
    from crm_bridge.crm_core import followup
    from crm_bridge.crm_core.domains import AddressSet
    from crm_bridge.crm_core.records import Address, Batch, Location, MailRecord
    from crm_bridge.crm_core.settings import FollowupSettings, LinkingSettings, SourcePolicy

    owner = "anna@nordlicht.example"
    now = datetime(2026, 11, 30, 9, 0, tzinfo=timezone.utc)
    store = Store(tmp_path / f"{name}.db", LinkingSettings(internal_domains=AddressSet(["nordlicht.example"])))
    with store.transaction():
        for c in range(20):
            store.add_customer(f"Kunde {c} GmbH", [f"kunde{c}.example"])

    def mail(i: int, when: datetime) -> MailRecord:
        return MailRecord(location=Location("INBOX", f"1:{i}", ""), message_id=f"m{i}@x",
                          sender=Address(f"p{i % 97}@kunde{i % 20}.example", "Kim"), to=(Address(owner, "Anna"),),
                          date=when, subject=f"Anfrage {i}", snippet="Guten Tag")

    records = [mail(i, now - timedelta(days=400, minutes=i)) for i in range(old)]
    records += [mail(old + i, now - timedelta(days=10, minutes=i)) for i in range(30)]
    with store.transaction():
        for start in range(0, len(records), 500):
            store.apply_batch(SourcePolicy(name="mail", owner=frozenset({owner})), Batch(records=records[start:start + 500]))
    store.optimize()
    # the statistics a sampled ANALYZE (analysis_limit 1,000) left in a 100,000-mail store: the links to
    # customers taken for 1,001 rows
    store.conn.execute("DELETE FROM sqlite_stat1 WHERE tbl IN ('links', 'interactions')")
    store.conn.executemany("INSERT INTO sqlite_stat1(tbl, idx, stat) VALUES (?, ?, ?)", [
        ("links", "links_target", "136960 1001 72"), ("links", "links", "137088 3 2 1"),
        ("interactions", "interactions_date", "81200 1"), ("interactions", "interactions_thread", "55806 2"),
        ("interactions", "sqlite_autoindex_interactions_1", "86904 1")])
    store.conn.commit()
    store.close()
    store = Store(tmp_path / f"{name}.db", LinkingSettings(internal_domains=AddressSet(["nordlicht.example"])))
    steps = [0]

    def count() -> int:
        steps[0] += 1
        return 0

    settings = FollowupSettings(after_appointment_days=1, unanswered_days=3)
    followup.apply_rules(store, settings, now=now)  # the tasks made once; a run later makes none
    store.conn.set_progress_handler(count, 100)
    assert followup.apply_rules(store, settings, now=now) == 0
    store.conn.set_progress_handler(None, 0)
    store.close()
    return steps[0]


def test_the_follow_up_rules_of_a_no_change_run_walk_only_their_lookback_window(tmp_path):
    """Mail older than the rules' window is not walked, whatever the statistics say (statistics that took
    the customers' links for few made them walk all of those links: 0.15 s of every run at 100,000 mails)."""
    small = _rules_steps(tmp_path, "small", 300)
    big = _rules_steps(tmp_path, "big", 6000)
    assert big < 1.5 * small + 20, (small, big)
