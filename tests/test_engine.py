"""The engine against an in-memory connector that fails at random.

A Hypothesis state machine adds, changes and deletes items in a source,
runs syncs that break off at random points with transient errors or
invalidate their cursor, and checks after every completed sync that the
store agrees with the source: every present item stored once, every
deleted one marked, nothing duplicated.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Iterator

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, precondition, rule

from crm_bridge.connectors import base
from crm_bridge.connectors.base import Connector, CursorInvalid, TransientError
from crm_bridge.crm_core.records import Address, Batch, FlagChange, Location, MailRecord
from crm_bridge.sync.engine import Engine
from tests.conftest import one_source_engine

base.REGISTRY.setdefault("memory", f"{__name__}:MemoryConnector")  # the name pytest imported this file by

#: the "server": name -> {local id: (subject, flags)}; failure plan per source
SERVERS: dict[str, dict[str, tuple[str, tuple[str, ...]]]] = {}
PLANS: dict[str, list[str]] = {}
T0 = datetime(2026, 9, 1, tzinfo=timezone.utc)


class MemoryConnector(Connector):
    """Items live in SERVERS; the cursor is a change counter, like a sync token."""

    type = "memory"

    def pull(self, cursor: dict | None, view) -> Iterator[Batch]:
        plan = PLANS.get(self.name, [])
        if cursor is not None and plan[:1] == ["invalid"]:
            plan.pop(0)
            raise CursorInvalid("token expired")
        items = SERVERS[self.name]
        known = view.known("box")
        todo = sorted(items)
        batch = Batch()
        for n, local in enumerate(todo):
            subject, flags = items[local]
            etag = f"{subject}|{' '.join(flags)}"
            if known.get(local) == etag:
                continue
            loc = Location("box", local, etag)
            if local in known and known[local].split("|")[0] == subject:
                batch.changes.append(FlagChange(loc, flags))
            else:
                batch.records.append(MailRecord(
                    loc, message_id=f"{subject}@memory", sender=Address("kim@kunde.example"),
                    to=(Address("anna@nordlicht.example"),), date=T0 + timedelta(hours=int(subject[1:])),
                    subject=subject, snippet=f"text of {subject}", flags=flags,
                ))
            if len(batch.records) + len(batch.changes) >= 2:
                if plan[:1] == ["fail"]:
                    plan.pop(0)
                    raise TransientError("connection reset by peer")
                batch.cursor = {"upto": n}
                yield batch
                batch = Batch()
        batch.removed = [Location("box", local) for local in known if local not in items]
        batch.cursor = {"upto": len(todo)}
        yield batch


def make_engine(tmp: Path) -> Engine:
    return one_source_engine(tmp, "mem", {"type": "memory"}, retries=2, backoff=0.0)


class SyncMachine(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        import tempfile

        self.tmp = Path(tempfile.mkdtemp(prefix="crm-engine-"))
        SERVERS["mem"] = {}
        PLANS["mem"] = []
        self.engine = make_engine(self.tmp)
        self.counter = 0
        self.ever: set[str] = set()
        self.synced = False

    def teardown(self):
        self.engine.store.close()

    @rule(n=st.integers(1, 4))
    def add_items(self, n):
        for _ in range(n):
            self.counter += 1
            subject = f"s{self.counter}"
            SERVERS["mem"][f"u{self.counter}"] = (subject, ())
            self.ever.add(subject)

    @precondition(lambda self: SERVERS["mem"])
    @rule(data=st.data())
    def delete_item(self, data):
        local = data.draw(st.sampled_from(sorted(SERVERS["mem"])))
        del SERVERS["mem"][local]

    @precondition(lambda self: SERVERS["mem"])
    @rule(data=st.data(), flags=st.sampled_from([(), ("\\Seen",), ("\\Seen", "\\Answered")]))
    def change_flags(self, data, flags):
        local = data.draw(st.sampled_from(sorted(SERVERS["mem"])))
        SERVERS["mem"][local] = (SERVERS["mem"][local][0], flags)

    @precondition(lambda self: SERVERS["mem"])
    @rule(data=st.data())
    def move_item(self, data):
        """The same mail under a new local id (moved, or a UIDVALIDITY reset)."""
        local = data.draw(st.sampled_from(sorted(SERVERS["mem"])))
        self.counter += 1
        SERVERS["mem"][f"u{self.counter}"] = SERVERS["mem"].pop(local)

    @rule(plan=st.lists(st.sampled_from(["fail", "invalid"]), max_size=3))
    def sync(self, plan):
        PLANS["mem"] = list(plan)
        results = self.engine.run()
        failures = plan.count("fail")
        if failures > self.engine.retries:
            return  # gave up; the next sync must still converge
        assert results[0].status in ("ok", "warning"), results[0].message
        self.synced = True
        self.check_agreement()

    def check_agreement(self):
        store = self.engine.store
        live = store.known_locations("mem", "box")
        server = SERVERS["mem"]
        assert set(live) == set(server)
        for local, (subject, flags) in server.items():
            assert live[local] == f"{subject}|{' '.join(flags)}"
        rows = store.conn.execute("SELECT subject, deleted FROM interactions").fetchall()
        subjects = [r[0] for r in rows]
        assert len(subjects) == len(set(subjects)), "an interaction was stored twice"
        present = {s for s, _ in server.values()}
        for subject, deleted in rows:
            assert deleted == (0 if subject in present else 1), subject
        assert set(subjects) <= self.ever


TestSyncMachine = SyncMachine.TestCase
TestSyncMachine.settings = settings(max_examples=60, stateful_step_count=20, deadline=None,
                                    suppress_health_check=[HealthCheck.too_slow])


def test_cursor_advances_only_with_its_data(tmp_path):
    """A sync that fails for good keeps what it stored and its cursor, and resumes."""
    SERVERS["mem"] = {f"u{i}": (f"s{i}", ()) for i in range(1, 8)}
    PLANS["mem"] = ["fail"] * 5
    engine = make_engine(tmp_path)
    [result] = engine.run()
    assert result.status == "error" and "gave up" in result.message
    stored = engine.store.known_locations("mem", "box")
    assert stored == {}  # the failure came before the first batch every time
    PLANS["mem"] = []
    [result] = engine.run()
    assert result.status == "ok" and result.stats.added == 7
    [result] = engine.run()
    assert result.stats.added == 0 and result.stats.updated == 0


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.sampled_from(["a", "b"]), st.sampled_from(["INBOX", "Sent", "Archiv/2024", "ä", ""]),
                          st.integers(0, 30), st.booleans()), max_size=40))
def test_known_scopes_are_the_scopes_with_a_location_still_there(tmp_path, rows):
    """The skip-scan query answers what SELECT DISTINCT over every location would."""
    from crm_bridge.crm_core.store import Store

    db = tmp_path / f"scopes-{abs(hash(tuple(rows)))}.db"
    store = Store(db)
    with store.transaction():
        for source, scope, n, gone in rows:
            store.conn.execute(
                "INSERT OR REPLACE INTO locations(source, scope, local_id, kind, seen_at, gone_at) "
                "VALUES (?, ?, ?, 'skipped', 'now', ?)", (source, scope, str(n), "then" if gone else None))
    for source in ("a", "b", "c"):
        expected = sorted(r[0] for r in store.conn.execute(
            "SELECT DISTINCT scope FROM locations WHERE source=? AND gone_at IS NULL", (source,)))
        assert store.known_scopes(source) == expected
    store.close()
