"""Write one benchmark's section of bench/RESULTS.md, leaving the others alone."""

from __future__ import annotations

import platform
import re
import time
from pathlib import Path

RESULTS = Path(__file__).with_name("RESULTS.md")
HEADER = "# Benchmark results\n\nEach section is rewritten by the script named in it; run it again to refresh.\n"


def like_an_installation() -> None:
    """Let the ``crm`` processes a benchmark starts write and reuse bytecode,
    as an installed crm-bridge does (a developer shell may forbid it, which
    makes every start compile the sources again)."""
    import os

    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    os.environ.pop("PYTHONPYCACHEPREFIX", None)


def machine() -> str:
    import os

    return f"{platform.python_implementation()} {platform.python_version()}, {os.cpu_count()} cores, {platform.machine()}"


def write_section(name: str, body: str) -> None:
    """Replace the section ``name`` (between its markers) with ``body``."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    block = f"{start}\n{body.rstrip()}\n\n_Recorded {stamp} on {machine()}._\n{end}"
    text = RESULTS.read_text() if RESULTS.exists() else HEADER
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
    text = pattern.sub(lambda _m: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block + "\n"
    RESULTS.write_text(text)


class TreeMemory:
    """Peak memory of a process and all its descendants, summed (Linux).

    ``crm sync`` reads each source in a forked reader process
    (sync/worker.py), so one process's peak RSS no longer tells the
    footprint.  This samples, every ``interval`` seconds, the process and
    its descendants and keeps two peaks: the summed PSS (proportional set
    size: pages shared between processes, such as the copy-on-write pages
    of the fork, are split between them, so nothing counts twice) and the
    summed RSS (shared pages count in full in every process: an upper
    bound).  A peak shorter than the interval can be missed.

    (os.wait4's ru_maxrss is not used: Linux carries the RSS of the
    forking benchmark process over into the child's maximum.)
    """

    def __init__(self, pid: int, interval: float = 0.02):
        import threading

        self.pid = pid
        self.interval = interval
        self.peak_pss_kb = 0
        self.peak_rss_kb = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def stop(self) -> tuple[int, int]:
        """Stop sampling; (peak summed PSS, peak summed RSS) in MB."""
        self._stop.set()
        self._thread.join()
        return self.peak_pss_kb // 1024, self.peak_rss_kb // 1024

    def _run(self) -> None:
        while not self._stop.is_set():
            pss = rss = 0
            for p in process_tree(self.pid):
                a, b = _pss_rss_kb(p)
                pss += a
                rss += b
            self.peak_pss_kb = max(self.peak_pss_kb, pss)
            self.peak_rss_kb = max(self.peak_rss_kb, rss)
            self._stop.wait(self.interval)


def process_tree(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for task in Path(f"/proc/{p}/task").iterdir():
                todo.extend(int(c) for c in (task / "children").read_text().split())
        except OSError:
            continue
    return out


def _pss_rss_kb(pid: int) -> tuple[int, int]:
    pss = rss = 0
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                pss = int(line.split()[1])
            elif line.startswith("Rss:"):
                rss = int(line.split()[1])
    except (OSError, ValueError):
        pass
    return pss, rss
