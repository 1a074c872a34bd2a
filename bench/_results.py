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
