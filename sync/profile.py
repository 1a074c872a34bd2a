"""``crm sync --profile FILE``: where a slow sync spends its time.

An admin whose import is slow runs ``crm sync --profile sync-profile.txt``
and sends us two files:

* ``FILE``: readable text.  Per source, the wall time and how it splits
  into phases, then the functions that took the most time;
* ``FILE.pstats``: the raw cProfile data of the whole run, for
  ``python -m pstats FILE.pstats`` or snakeviz.

Phases (taken from the profile, so no phase needs its own timer in the
engine or the connectors):

``fetch``
    waiting for the server: socket and TLS reads inside the connector;
``parse``
    the rest of the connector's time (reading files, parsing headers,
    iCalendar, vCards; building records);
``link``
    matching participants to customers and contacts (crm_core/linking.py);
``store``
    the rest of storing a batch: SQLite writes, deduplication, threads,
    the full-text index, the commit;
``other``
    the source's set-up and wrap-up (cursor, run record, removals found
    at the end are in ``store``).

While profiling, each source is read in the sync process itself (no reader
process, see :mod:`sync.worker`), so one profile holds all of it.  Times
under the profiler are longer than in a normal run (every Python call is
counted); the shares are what tell where the time goes.
"""

from __future__ import annotations

import cProfile
import io
import os
import platform
import pstats
import re
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from crm_bridge.sync.engine import Engine, SourceResult

_ROOT = Path(__file__).resolve().parent.parent
_CONNECTORS = str(_ROOT / "connectors") + os.sep
_LINKING = str(_ROOT / "crm_core" / "linking.py")
_ENGINE = str(_ROOT / "sync" / "engine.py")
#: builtins that block on the network (their own time is time spent waiting for the server)
_NETWORK_WAIT = re.compile(
    r"<(method '(recv|recv_into|read|connect|do_handshake|poll|select)' of '(_socket\.socket|_ssl\._SSLSocket|select\.\w+)'"
    r" objects|built-in method (select\.select|_socket\.getaddrinfo))>")

Key = tuple[str, int, str]


def _is_connector(key: Key) -> bool:
    return key[0].startswith(_CONNECTORS)


def _is_network_wait(key: Key) -> bool:
    return key[0] == "~" and _NETWORK_WAIT.fullmatch(key[2]) is not None


def phase_seconds(stats: pstats.Stats) -> dict[str, float]:
    """fetch / parse / link / store seconds of one source's profile."""
    raw: dict[Key, Any] = stats.stats  # type: ignore[attr-defined]
    connector = store = link = fetch = 0.0
    for key, (_cc, _nc, tt, _ct, callers) in raw.items():
        if key[2] == "commit_held" and key[0].endswith("storebase.py"):  # batches held, committed together
            store += sum(edge[3] for edge in callers.values())
        for caller, edge in callers.items():
            if caller[0] != _ENGINE or caller[2] not in ("_pull", "store_one"):
                continue
            # what Engine._pull spends outside storing: building the connector and
            # resuming its generator (directly or through next())
            if _is_connector(key) or key[2] in ("<built-in method builtins.next>", "connector", "_start_pull"):
                connector += edge[3]
            elif key[0] == _ENGINE and key[2] == "_store_batch":
                store += edge[3]
        if key[0] == _LINKING:
            link += sum(edge[3] for caller, edge in callers.items() if caller[0] != _LINKING)
        if _is_network_wait(key):
            fetch += tt
    fetch = min(fetch, connector)
    return {"fetch": fetch, "parse": connector - fetch, "link": min(link, store), "store": max(0.0, store - link)}


class ProfilingEngine(Engine):
    """An Engine that profiles each source on its own and writes the report at :meth:`write`."""

    def __init__(self, *args: Any, **kwargs: Any):
        kwargs["parallel"] = False  # one process: the profile sees the connector too
        super().__init__(*args, **kwargs)
        self.started = time.perf_counter()
        self.outer = cProfile.Profile()
        self.sources: list[tuple[SourceResult, cProfile.Profile]] = []
        self.outer.enable()

    def sync_source(self, name: str, now: datetime | None = None) -> SourceResult:
        self.outer.disable()
        profile = cProfile.Profile()
        profile.enable()
        try:
            result = super().sync_source(name, now)
        finally:
            profile.disable()
            self.outer.enable()
        self.sources.append((result, profile))
        return result

    def write(self, path: Path, argv: list[str]) -> None:
        """Write the text report to ``path`` and the cProfile data to ``path.pstats``."""
        self.outer.disable()
        wall = time.perf_counter() - self.started
        out = io.StringIO()
        out.write(f"crm sync profile, {datetime.now().astimezone():%Y-%m-%d %H:%M %Z}\n")
        out.write(f"command: {' '.join(argv)}\n")
        out.write(f"machine: {platform.python_implementation()} {platform.python_version()}, "
                  f"{os.cpu_count()} cores, {platform.system()} {platform.machine()}\n")
        out.write(f"wall time {wall:.2f} s under the profiler (a normal run is faster; the shares tell where "
                  "the time goes). Sources were read in this process (no reader process).\n\n")
        total = pstats.Stats(self.outer, stream=out)
        for result, profile in self.sources:
            stats = pstats.Stats(profile)
            total.add(stats)
            phases = phase_seconds(stats)
            phases["other"] = max(0.0, result.seconds - sum(phases.values()))
            items = result.stats.added + result.stats.updated + result.stats.seen + result.stats.skipped
            out.write(f"source {result.name} ({result.type}): {result.status}, {result.seconds:.2f} s, "
                      f"{result.stats.added} added, {result.stats.updated} updated, {result.stats.seen} seen, "
                      f"{result.stats.skipped} not logged, {result.stats.quarantined} quarantined\n")
            out.write(f"  {'phase':<8} {'seconds':>9} {'share':>6} {'ms/item':>8}\n")
            for phase in ("fetch", "parse", "link", "store", "other"):
                seconds = phases[phase]
                share = seconds / result.seconds if result.seconds else 0.0
                per = f"{seconds * 1000 / items:8.3f}" if items else f"{'-':>8}"
                out.write(f"  {phase:<8} {seconds:9.3f} {share:6.1%} {per}\n")
            out.write("\n")
        out.write("costliest functions, whole run (own time):\n")
        total.sort_stats("tottime").print_stats(30)
        out.write("costliest functions, whole run (cumulative):\n")
        total.sort_stats("cumulative").print_stats(30)
        path.write_text(out.getvalue(), encoding="utf-8")
        total.dump_stats(str(path) + ".pstats")
