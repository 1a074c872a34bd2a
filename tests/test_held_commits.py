"""Batches that wait for the store are committed together (sync/engine.py, Store.holding_commits).

Each batch is one unit with its cursor, as before; what changes is when the
units are committed: every half second, or when the reader has nothing more
waiting, instead of once a batch.  A unit that fails rolls back the units
held with it, cursors included, so a retry or the next run reads them
again: nothing is lost, nothing is stored twice.
"""

from __future__ import annotations

import sqlite3
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

import pytest

from crm_bridge.connectors import base
from crm_bridge.connectors.base import Connector
from crm_bridge.crm_core.records import Address, Batch, Location, MailRecord
from crm_bridge.crm_core.store import Store
from crm_bridge.sync import engine as engine_module
from crm_bridge.sync.engine import Engine
from tests.conftest import one_source_engine

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the reader process is Linux only")

base.REGISTRY.setdefault("steady", f"{__name__}:SteadyConnector")
BATCHES = 30


class SteadyConnector(Connector):
    """``BATCHES`` batches of two mails each, with a cursor; from ``after`` (the cursor) on."""

    type = "steady"
    option_keys = frozenset()

    def pull(self, cursor, view) -> Iterator[Batch]:
        start = cursor["upto"] + 1 if cursor else 0
        for n in range(start, BATCHES):
            recs = [MailRecord(Location("box", f"i{n}-{k}", "e"), message_id=f"s{n}-{k}@kunde.example",
                               sender=Address("kim@kunde.example"), to=(Address("anna@nordlicht.example"),),
                               date=datetime(2026, 9, 1, 8, n, k, tzinfo=timezone.utc), subject=f"Anfrage {n}/{k}",
                               snippet="text") for k in range(2)]
            yield Batch(records=recs, cursor={"upto": n}, done=n + 1, total=BATCHES)


def steady_engine(tmp: Path, parallel: bool = True) -> Engine:
    return one_source_engine(tmp, "steady", {"type": "steady"}, retries=0, parallel=parallel)


@pytest.fixture
def slow_store(monkeypatch):
    """A store that takes 20 ms a batch: the reader process runs ahead, its batches wait."""
    apply = Store.apply_batch

    def slow(self, *args, **kwargs):
        time.sleep(0.02)
        return apply(self, *args, **kwargs)

    monkeypatch.setattr(Store, "apply_batch", slow)


def commits(engine: Engine) -> list[str]:
    seen: list[str] = []
    engine.store.conn.set_trace_callback(lambda sql: seen.append(sql) if sql.strip().upper() == "COMMIT" else None)
    return seen


def stored(engine: Engine) -> tuple[int, int, dict | None]:
    store = engine.store
    return (store._one("SELECT COUNT(*) FROM interactions"),
            store._one("SELECT COUNT(DISTINCT message_id) FROM interactions"),
            (store.source_state("steady") or {}).get("cursor"))


def test_batches_that_wait_for_the_store_are_committed_together(tmp_path, slow_store):
    engine = steady_engine(tmp_path)
    done = commits(engine)
    [result] = engine.run()
    assert result.status == "ok" and result.stats.added == 2 * BATCHES and result.batches == BATCHES
    assert stored(engine) == (2 * BATCHES, 2 * BATCHES, {"upto": BATCHES - 1})
    # the run's own bookkeeping commits too (start, fingerprint, finish, follow-up rules): a handful
    assert len(done) < BATCHES // 2, len(done)
    engine.store.close()


def test_held_batches_are_committed_within_the_engines_hold_time(tmp_path, slow_store, monkeypatch):
    monkeypatch.setattr(engine_module, "HOLD_COMMIT_SECONDS", 0.0)
    engine = steady_engine(tmp_path)
    done = commits(engine)
    engine.run()
    assert len(done) >= BATCHES
    engine.store.close()


def test_a_pull_in_this_process_commits_each_batch(tmp_path, slow_store):
    """The connector waits for its server between batches here: no transaction is left open meanwhile."""
    engine = steady_engine(tmp_path, parallel=False)
    done = commits(engine)
    engine.run()
    assert len(done) >= BATCHES
    assert stored(engine) == (2 * BATCHES, 2 * BATCHES, {"upto": BATCHES - 1})
    engine.store.close()


def test_a_failing_batch_rolls_back_the_batches_held_with_it_and_the_next_run_stores_each_once(tmp_path, slow_store,
                                                                                              monkeypatch):
    apply = Store.apply_batch

    def failing(self, policy, batch, now=None):
        if batch.cursor == {"upto": 20}:
            raise RuntimeError("a bug in the store")
        return apply(self, policy, batch, now)

    monkeypatch.setattr(Store, "apply_batch", failing)
    engine = steady_engine(tmp_path)
    [result] = engine.run()
    assert result.status == "error" and "a bug in the store" in result.message
    rows, distinct, cursor = stored(engine)
    # at most half a second of batches before the failing one was held: those went back with it
    assert rows == distinct == (2 * (cursor["upto"] + 1) if cursor else 0) < 2 * 20
    assert result.stats.added == rows  # what the run says it stored is what it stored
    run = engine.store.conn.execute("SELECT stats FROM runs ORDER BY id DESC LIMIT 1").fetchone()[0]
    assert f'"added": {rows}' in run

    monkeypatch.setattr(Store, "apply_batch", apply)
    [again] = engine.run()
    assert again.status == "ok" and again.stats.added == 2 * BATCHES - rows
    assert stored(engine) == (2 * BATCHES, 2 * BATCHES, {"upto": BATCHES - 1})
    engine.store.close()


def test_units_held_when_an_interrupt_cut_their_commit_short_are_committed_by_the_next_transaction(tmp_path):
    """Ctrl-C can land in holding_commits' closing commit before the COMMIT ran: the run's next write
    (noting it interrupted) commits the held units, each whole, instead of failing to begin."""
    engine = steady_engine(tmp_path)
    store = engine.store
    policy = engine.config.policies["steady"]
    [batch] = list(SteadyConnector("steady", {"type": "steady"}).pull({"upto": BATCHES - 2}, None))
    store._holding = True  # inside holding_commits ...
    with store.transaction():
        store.apply_batch(policy, batch)
    store._holding = False  # ... whose commit_held was cut short
    assert store.conn.in_transaction
    with store.transaction():
        store.conn.execute("INSERT INTO meta(key, value) VALUES ('probe', 'x')")
    assert not store.conn.in_transaction
    other = sqlite3.connect(tmp_path / "crm.db")  # another process's view: committed
    assert other.execute("SELECT COUNT(*) FROM interactions").fetchone() == (2,)
    assert other.execute("SELECT value FROM meta WHERE key='probe'").fetchone() == ("x",)
    other.close()
    store.close()
