"""The sync engine: one algorithm for every source.

For each configured source: take the store lock, read the source's cursor,
pull batches from its connector, store each batch and the cursor that comes
with it in one transaction, retry transient failures from the last committed
cursor, and record the run.  Then apply the follow-up rules and push tasks
and customer cards to the sources named under ``[push]``.

The engine knows connectors only through :mod:`connectors.base`; it never
asks which protocol a source speaks.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sqlite3
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import Any, Callable, Iterator, Mapping

from crm_bridge.connectors.base import (
    AuthError,
    ConfigError as SourceConfigError,
    Connector,
    ConnectorError,
    CursorInvalid,
    SkipRule,
    SourceUnavailable,
    TransientError,
    make_connector,
)
from crm_bridge.crm_core import followup
from crm_bridge.crm_core.i18n import Office
from crm_bridge.crm_core.records import Batch, Location, PushResult, TaskPush
from crm_bridge.crm_core.settings import SourcePolicy
from crm_bridge.crm_core.cards import USER_EDITED
from crm_bridge.crm_core.store import Stats, Store
from crm_bridge.sync import worker
from crm_bridge.sync.config import Config
from crm_bridge.sync.lock import StoreLock

log = logging.getLogger("crm.sync")

Progress = Callable[[str, int, "int | None"], None]


@dataclass
class SourceResult:
    name: str
    type: str
    status: str = "ok"  # ok | warning | error | interrupted
    message: str = ""
    stats: Stats = field(default_factory=Stats)
    seconds: float = 0.0
    alerts: list[str] = field(default_factory=list)
    run_id: int | None = None
    batches: int = 0  # batches stored that carried items (not just a cursor or problems)
    items: int | None = None  # the source's items, counted while its reader process worked

    def as_dict(self) -> dict[str, Any]:
        return {"source": self.name, "type": self.type, "status": self.status, "message": self.message,
                "seconds": round(self.seconds, 3), **self.stats.as_dict()}


#: the longest a pull holds stored batches before it commits them (see Store.holding_commits)
HOLD_COMMIT_SECONDS = 0.5


class Interrupted(Exception):
    """The run was stopped (Ctrl-C); what was stored until then stays, the next sync goes on from there."""

    def __init__(self, stored: int):
        super().__init__(f"interrupted: {stored} items stored, the next sync goes on from there")
        self.stored = stored


class StoreView:
    """What a connector may know of the store: its own locations.

    A *blind* view knows nothing, so a rescan reads every item again
    (deduplication keeps that free of duplicates) and removes nothing.
    """

    def __init__(self, store: Store, source: str, blind: bool = False, policy: SourcePolicy | None = None):
        self.store = store
        self.source = source
        self.blind = blind
        self.policy = policy
        self._rereads: list[Location] | None = None  # read ahead (read_ahead), valid until a batch is stored

    def known(self, scope: str) -> Mapping[str, str]:
        return {} if self.blind else self.store.known_locations(self.source, scope)

    def scopes(self) -> list[str]:
        return [] if self.blind else self.store.known_scopes(self.source)

    def skip_rule(self) -> SkipRule | None:
        """The rule the store skips mail by (apply_batch gets the same policy)."""
        return SkipRule(self.store.settings, self.policy, self.store.index) if self.policy is not None else None

    def rereads(self) -> list[Location]:
        """Mail of this source stored without its text that the store wants now (crm_core.rereads);
        asked also by a blind view: a rescan reads no text for mail the header says is unlinked."""
        if self._rereads is not None:
            ahead, self._rereads = self._rereads, None
            return ahead
        return self.store.wanted_texts(self.source)

    def read_ahead(self) -> None:
        """Answer :meth:`rereads` now, while a reader process starts (a walk over the mail stored without
        its text: about 10 ms at 100,000 mails); the answer holds until :meth:`stale`."""
        self._rereads = self.store.wanted_texts(self.source)

    def stale(self) -> None:
        """A batch is being stored: an answer read ahead may no longer be what the store says."""
        self._rereads = None


class Engine:
    def __init__(self, config: Config, store: Store | None = None, progress: Progress | None = None,
                 retries: int = 3, backoff: float = 1.0, parallel: bool = False):
        """``parallel``: run each pull in a child process (:mod:`sync.worker`) where that is possible."""
        self.config = config
        self.parallel = parallel
        self.store = store or Store(config.store_path, config.linking)
        self.progress = progress
        self.retries = retries
        self.backoff = backoff
        self._connectors: dict[str, Connector] = {}
        self.stored = 0  # items added or updated by this engine so far
        self._storing = False  # a batch is being stored and counted: Ctrl-C waits for it
        self._interrupt_pending = False

    # -- set-up -------------------------------------------------------------
    def connector(self, name: str) -> Connector:
        if name not in self._connectors:
            self._connectors[name] = make_connector(name, self.config.sources[name])
        return self._connectors[name]

    def close(self) -> None:
        for conn in self._connectors.values():
            try:
                conn.close()
            except Exception:  # closing is best effort
                log.debug("closing %s failed", conn.name, exc_info=True)
        self._connectors.clear()

    def prepare(self) -> None:
        """Bring config-level facts into the store: customers, blocklist changes."""
        store = self.store
        load_customers(store, self.config)
        with store.transaction():
            blocked = json.dumps(self.config.linking.blocklist.entries())
            stored = store.meta("blocklist")
            before = json.loads(stored or "[]")
            if set(before) - set(json.loads(blocked)):
                log.info("addresses were unblocked: every source reads everything again once")
                store.request_rescan()
            if blocked != stored:
                store.set_meta("blocklist", blocked)
        store.apply_blocklist()

    # -- running ------------------------------------------------------------
    def run(self, names: list[str] | None = None, dry_run: bool = False, now: datetime | None = None,
            push: bool = True) -> list[SourceResult]:
        names = self._select(names)
        with StoreLock(self.config.store_path), self._deferred_interrupt():
            with self.store.transaction():  # we hold the lock: a run still "running" was killed or crashed
                self.store.close_stale_runs()
            try:
                if dry_run:
                    with self.store.rolled_back():
                        results = self._run(names, now, push=False)
                else:
                    results = self._run(names, now, push=push)
            except KeyboardInterrupt:
                raise Interrupted(0 if dry_run else self.stored) from None
        return results

    @contextmanager
    def _deferred_interrupt(self) -> Iterator[None]:
        """Ctrl-C stops the run at once, except while a batch is committed and counted: then right after,
        so the count the user is told is what the store holds."""
        if threading.current_thread() is not threading.main_thread() \
                or signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
            yield
            return

        def on_sigint(signum: int, frame: Any) -> None:
            if self._storing:
                self._interrupt_pending = True
            else:
                raise KeyboardInterrupt

        signal.signal(signal.SIGINT, on_sigint)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, signal.default_int_handler)

    def _select(self, names: list[str] | None) -> list[str]:
        if not names:
            order = list(self.config.sources)
            return sorted(order, key=lambda n: (self.connector(n).priority, order.index(n)))
        unknown = [n for n in names if n not in self.config.sources]
        if unknown:
            raise SourceConfigError(f"no source named {unknown[0]!r} in {self.config.path}")
        return names

    def _run(self, names: list[str], now: datetime | None, push: bool) -> list[SourceResult]:
        for name in {*names, *(n for n in (self.config.push_tasks, self.config.push_cards) if n)}:
            self.connector(name)  # a config mistake stops the run before anything is read
        self.prepare()
        results = [self.sync_source(name, now) for name in names]
        if any(r.batches for r in results):  # nothing stored, nothing new for the planner's statistics
            self.store.optimize()  # statistics for the planner where the store grew
        created = followup.apply_rules(self.store, self.config.followup, now, Office.of(self.config.web))
        if created:
            results.append(SourceResult("follow-up rules", "rules", stats=Stats(tasks_created=created)))
        if push and self.config.push_tasks:
            results.append(self.push_tasks(self.config.push_tasks))
        if push and self.config.push_cards:
            results.append(self.push_cards(self.config.push_cards))
        return results

    def sync_source(self, name: str, now: datetime | None = None) -> SourceResult:
        options = self.config.sources[name]
        policy = self.config.policies[name]
        result = SourceResult(name, str(options.get("type")))
        store = self.store
        started = time.monotonic()
        with store.transaction():
            store.register_source(name, result.type)
            store.remember_policy(policy)
            run_id = result.run_id = store.start_run(name, now)
        attempt = 0
        while True:
            try:
                self._pull(name, policy, result, now)
                break
            except KeyboardInterrupt:
                result.seconds = time.monotonic() - started
                with store.transaction():
                    store.finish_run(run_id, name, "interrupted", result.stats, "interrupted (Ctrl-C); "
                                     "the next sync goes on from there")
                raise
            except sqlite3.Error:
                raise  # the store itself failed: nothing else can work, the command says what to do
            except TransientError as exc:
                attempt += 1
                if attempt > self.retries:
                    result.status, result.message = "error", f"{_describe(exc)} (gave up after {attempt} tries)"
                    break
                delay = self.backoff * 2 ** (attempt - 1)
                log.warning("%s: %s; retrying in %.0f s", name, _describe(exc), delay)
                self._connectors.pop(name, None)
                try:
                    time.sleep(delay)
                except KeyboardInterrupt:
                    with store.transaction():
                        store.finish_run(run_id, name, "interrupted", result.stats, "interrupted (Ctrl-C)")
                    raise
            except (AuthError, SourceUnavailable, SourceConfigError, ConnectorError) as exc:
                result.status, result.message = "error", _describe(exc)
                break
            except Exception as exc:  # a bug: keep the other sources going, keep the traceback in the log
                log.exception("%s: unexpected error", name)
                result.status, result.message = "error", f"internal error: {exc.__class__.__name__}: {exc}"
                break
        if result.alerts:  # the admin must act: the run fails until then (see ``crm sources reset``)
            result.status = "error"
            result.message = "; ".join([*result.alerts, *([result.message] if result.message else [])])
        if result.stats.problems and result.status == "ok":
            result.status = "warning"
            result.message = "; ".join(result.stats.problems[:3])
        result.seconds = time.monotonic() - started
        # counted while the reader worked, and still true when no batch was stored since
        items = result.items if result.batches == 0 else None
        with store.transaction():
            store.finish_run(run_id, name, result.status, result.stats, result.message, items=items)
        if result.status != "ok":  # the command prints the result; this is for the log file (and -v)
            log.info("%s: %s", name, result.message)
        return result

    def _pull(self, name: str, policy, result: SourceResult, now: datetime | None) -> None:
        store = self.store
        state = store.source_state(name) or {}
        fingerprint = policy.fingerprint()
        cursor = state.get("cursor")
        rescan = bool(state.get("rescan")) or (bool(state.get("fingerprint")) and state.get("fingerprint") != fingerprint)
        if rescan:
            log.info("%s: settings changed or a rescan was asked for; reading everything again", name)
            cursor = None
        connector = self.connector(name)
        view = StoreView(store, name, blind=rescan, policy=policy)

        def meanwhile() -> None:  # the reader process connects and reads: this process would only wait
            result.items = store.count_items(name)
            view.read_ahead()

        try:
            batches = iter(self._start_pull(name, connector, cursor, view, meanwhile))
            first = next(batches, None)
        except CursorInvalid as exc:
            log.info("%s: %s; comparing everything", name, exc)
            batches = iter(self._start_pull(name, connector, None, view, meanwhile))
            first = next(batches, None)
        # a pull whose next batch already waits when one is stored (the store is the slower side) commits
        # every half second, not once a batch; other pulls (in this process: the connector waits for its
        # server between batches, and a transaction left open would hold the store's lock) once a batch
        waiting = getattr(batches, "waiting", None)

        def committed() -> tuple[Stats, int, int]:  # what the run has counted, as of a commit
            return replace(result.stats, problems=list(result.stats.problems)), result.batches, self.stored

        counted = committed()

        def store_one(batch: Batch) -> None:
            nonlocal counted
            view.stale()
            try:
                self._store_batch(name, policy, batch, result, now)
            except BaseException:
                if not store.conn.in_transaction:  # rolled back with the batches held since the last commit
                    result.stats, result.batches, self.stored = counted
                raise
            held = store.held_since
            if waiting is None or held is None or time.monotonic() - held >= HOLD_COMMIT_SECONDS or not waiting():
                store.commit_held()
                counted = committed()

        try:
            with store.holding_commits():
                if first is not None:
                    store_one(first)
                    for batch in batches:
                        store_one(batch)
        finally:  # stopped by a failure here: end the pull now (its connection, its reader process)
            close = getattr(batches, "close", None)
            if close is not None:
                close()
        with store.transaction():
            store.set_fingerprint(name, fingerprint)

    def _start_pull(self, name: str, connector: Connector, cursor: dict | None, view: StoreView,
                    meanwhile: Callable[[], None] | None = None) -> Iterator[Batch]:
        """The connector's batches; read in a reader process where possible, which calls ``meanwhile``
        in this process while the reader starts."""
        if self.parallel and connector.pull_in_reader and worker.available():
            options = self.config.sources[name]
            return worker.pull(lambda: make_connector(name, options), cursor, view, meanwhile)
        return connector.pull(cursor, view)

    def _store_batch(self, name: str, policy, batch: Batch, result: SourceResult, now: datetime | None) -> None:
        """A batch and the cursor that comes with it: one transaction."""
        store = self.store
        self._storing = True
        try:
            with store.transaction():
                stats = store.apply_batch(policy, batch, now)
                if batch.cursor is not None:
                    store.save_cursor(name, batch.cursor)
                if result.run_id is not None:  # what a run stored shows even when it is killed later
                    store.note_run_progress(result.run_id, result.stats, stats)
            result.stats.merge(stats)
            if batch.records or batch.changes or batch.failures or batch.removed:
                result.batches += 1
            self.stored += stats.added + stats.updated
        finally:
            self._storing = False
        if self._interrupt_pending:
            self._interrupt_pending = False
            raise KeyboardInterrupt
        result.alerts.extend(a for a in batch.alerts if a not in result.alerts)
        if self.progress is not None:
            self.progress(name, batch.done, batch.total)

    def reset(self, name: str, scope: str | None = None) -> None:
        """Forget where source ``name`` (or one of its scopes) stood: the next sync reads it as new.

        For the admin after a server migration (a quarantined folder); the
        store keeps everything, deduplication keeps the rereading free of doubles.
        """
        self._select([name])
        with StoreLock(self.config.store_path):
            state = self.store.source_state(name)
            if state is None:
                raise SourceConfigError(f"source {name!r} has not been synced yet: nothing to reset")
            cursor = self.connector(name).forget(state.get("cursor"), scope)
            with self.store.transaction():
                self.store.save_cursor(name, cursor)

    # -- push ---------------------------------------------------------------
    def push_tasks(self, name: str) -> SourceResult:
        result = SourceResult(f"{name} (tasks)", str(self.config.sources[name].get("type")))
        store = self.store
        try:
            connector = self.connector(name)
            pending = store.tasks_to_push()
            if not pending:
                return result
            pushes = [self._task_push(t) for t in pending]
            with store.transaction():  # what we are about to write, before writing it
                for task in pending:
                    store.note_sending(task)
            results = connector.push_tasks(pushes, StoreView(store, name))
            _crash_point("after-task-push")
            retry: list[tuple[dict, TaskPush]] = []
            with store.transaction():
                for task, push, res in zip(pending, pushes, results):
                    if self._record_task_result(name, task, res, result, push=push):
                        retry.append((task, push))
            if retry:  # deleted in the client but edited in the CRM (edit beats delete), or our own lost write
                again = connector.push_tasks([p for _, p in retry], StoreView(store, name))
                with store.transaction():
                    for (task, _), res in zip(retry, again):
                        self._record_task_result(name, task, res, result, retrying=True)
        except ConnectorError as exc:
            result.status, result.message = "error", _describe(exc)
        except NotImplementedError as exc:
            result.status, result.message = "error", str(exc)
        if result.stats.problems and result.status == "ok":
            result.status, result.message = "warning", "; ".join(result.stats.problems[:3])
        return result

    def _task_push(self, task: dict) -> TaskPush:
        status = {"done": "COMPLETED", "cancelled": "CANCELLED"}.get(task["status"], "NEEDS-ACTION")
        return TaskPush(
            uid=task["uid"], summary=task["title"],
            description=self.store.task_description(task, Office.of(self.config.web)),
            due=_date_or_none(task.get("due")), status=status,
            completed=_dt_or_none(task.get("completed_at")) if status == "COMPLETED" else None,
            href=task.get("remote_href") or "", etag=task.get("remote_etag") or "", scope=task.get("remote_scope") or "",
        )

    def _record_task_result(self, name: str, task: dict, res: PushResult, result: SourceResult,
                            retrying: bool = False, push: TaskPush | None = None) -> bool:
        """Store one push outcome; True when ``push`` (changed here) must be uploaded again."""
        store = self.store
        policy = self.config.policies[name]
        if res.ok:
            store.record_push(task["id"], task["version"], name, res.scope, res.href, res.etag)
            result.stats.tasks_updated += 1
            return False
        if res.conflict is not None and not retrying and push is not None and store.is_own_write(task, res.conflict):
            # the server holds what an earlier push wrote before a crash lost its record: not the
            # client's change, so the CRM's current version goes over it
            push.href, push.etag, push.scope = res.href, res.etag, res.scope
            return True
        if res.conflict is not None:
            store.log_conflict("task", task["uid"], "the client changed it too: the client's version wins")
            result.stats.problems.append(f"task {task['id']}: changed in the calendar too; the calendar's version wins")
            store.apply_batch(policy, Batch(records=[res.conflict]))
            return False
        if res.gone and not retrying:
            if task["version"] > task["pushed_version"] and task.get("remote_href"):
                store.log_conflict("task", task["uid"], "deleted in the client but edited in the CRM: uploaded again")
                result.stats.problems.append(f"task {task['id']}: deleted in the calendar but edited in the CRM; "
                                             "written again")
                if push is None:
                    return False
                push.href = push.etag = push.scope = ""
                return True
            if task.get("remote_href"):
                store.log_conflict("task", task["uid"], "deleted in the client: cancelled in the CRM")
                result.stats.problems.append(f"task {task['id']}: deleted in the calendar; cancelled in the CRM")
                store.cancel_task(task["id"])
                return False
            if push is None:
                return False
            push.href = push.etag = push.scope = ""
            return True
        result.status = "error"
        result.stats.problems.append(f"task {task['id']}: {res.error or 'not stored'}")
        result.message = "; ".join(result.stats.problems[:3])
        return False

    def push_cards(self, name: str) -> SourceResult:
        from crm_bridge.crm_core.cards import customer_cards

        result = SourceResult(f"{name} (cards)", str(self.config.sources[name].get("type")))
        store = self.store
        try:
            connector = self.connector(name)
            cards = customer_cards(store, Office.of(self.config.web))
            if not cards:
                return result
            pushes = [c for c, _ in cards]
            outcomes = connector.push_cards(pushes, StoreView(store, name))
            with store.transaction():
                for (push, digest), res in zip(cards, outcomes):
                    if res.ok:
                        store.record_card_push(push.uid, digest, name, res.scope, res.href, res.etag)
                        result.stats.updated += 1
                    elif res.conflict is not None or res.error.startswith("conflict"):
                        # the user edited the card: from now on it is theirs, and it says so once
                        store.record_card_push(push.uid, USER_EDITED, name, res.scope or push.scope,
                                               res.href or push.href, res.etag)
                        store.log_conflict("card", push.uid, "edited in the address book: not overwritten, no longer updated")
                        result.stats.problems.append(f"card {push.uid}: edited in the address book, not overwritten")
                    else:
                        result.stats.problems.append(f"card {push.uid}: {res.error or 'not stored'}")
        except ConnectorError as exc:
            result.status, result.message = "error", _describe(exc)
        except NotImplementedError as exc:
            result.status, result.message = "error", str(exc)
        if result.stats.problems and result.status == "ok":
            result.status, result.message = "warning", "; ".join(result.stats.problems[:3])
        return result

    # -- watching -----------------------------------------------------------
    def watch(self, names: list[str] | None = None, interval: float = 300.0,
              on_result: Callable[[list[SourceResult]], None] | None = None,
              stop: threading.Event | None = None) -> None:
        """Sync, then wait for news, again and again until ``stop`` is set.

        Each source waits in its connector's :meth:`~connectors.base.Connector.watch`
        (IMAP IDLE; the others poll every ``interval`` seconds).  The first
        source that reports a change wakes the others, and everything is
        synced again.  A source that keeps failing is retried with
        exponential back-off, up to five minutes apart.
        """
        names = self._select(names)
        stop = stop or threading.Event()
        failures: dict[str, int] = {}
        while not stop.is_set():
            results = self.run(names)
            if on_result:
                on_result(results)
            for r in results:
                if r.name in names:
                    failures[r.name] = failures.get(r.name, 0) + 1 if r.status == "error" else 0
            self._wait_for_news(names, failures, interval, stop)

    def _wait_for_news(self, names: list[str], failures: dict[str, int], interval: float,
                       stop: threading.Event) -> None:
        changed = threading.Event()
        finished = threading.Event()
        deadline = time.monotonic() + interval
        watchers: list[tuple[Connector, threading.Thread]] = []

        def wait(name: str, connector: Connector, cursor: dict | None) -> None:
            try:
                if connector.watch(cursor, _NullView(), interval):
                    changed.set()
            except ConnectorError as exc:
                if not finished.is_set():
                    log.warning("%s: watching failed: %s", name, _describe(exc))
                    failures[name] = failures.get(name, 0) + 1
                    changed.set()
            except Exception:
                if not finished.is_set():
                    log.exception("%s: watching failed", name)
                    changed.set()

        for name in names:
            errors = failures.get(name, 0)
            if errors:  # no watching a failing source: back off, then sync everything again
                deadline = min(deadline, time.monotonic() + min(300.0, 2.0 ** errors))
                continue
            connector = make_connector(name, self.config.sources[name])
            cursor = (self.store.source_state(name) or {}).get("cursor")
            thread = threading.Thread(target=wait, args=(name, connector, cursor), name=f"watch-{name}", daemon=True)
            watchers.append((connector, thread))
            thread.start()
        try:
            while not stop.is_set() and not changed.is_set() and time.monotonic() < deadline:
                changed.wait(min(0.5, max(0.0, deadline - time.monotonic())))
        finally:
            finished.set()
            for connector, _ in watchers:
                connector.wake()
            for connector, thread in watchers:
                thread.join(timeout=10)
                connector.close()


def _crash_point(name: str) -> None:
    """Fault injection for the crash tests: ``CRM_FAULT_KILL_AT=<name>`` kills the process here (SIGKILL)."""
    if os.environ.get("CRM_FAULT_KILL_AT") == name:
        os.kill(os.getpid(), signal.SIGKILL)


def load_customers(store: Store, config: Config) -> None:
    """The ``[[customers]]`` of the config, into the store (idempotent).

    Only reads when the store has them already: every command calls this,
    and a read-only one must never wait for the writer's lock.
    """
    if store.customers_are_current(config.customers):
        return
    with store.transaction():
        for name, domains, owner in config.customers:
            store.add_customer(name, domains, origin="config", account_owner=owner)


class _NullView:
    def known(self, scope: str) -> Mapping[str, str]:
        return {}

    def scopes(self) -> list[str]:
        return []


def _describe(exc: BaseException) -> str:
    text = str(exc).strip() or exc.__class__.__name__
    kinds: dict[type[BaseException], str] = {AuthError: "authentication failed", TransientError: "connection problem",
                                             SourceUnavailable: "unavailable", CursorInvalid: "cursor invalid"}
    kind = kinds.get(type(exc))
    return f"{kind}: {text}" if kind and kind not in text else text


def _date_or_none(value: str | None):
    if not value:
        return None
    try:
        return datetime.fromisoformat(value) if "T" in value else datetime.fromisoformat(value).date()
    except ValueError:
        return None


def _dt_or_none(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)
