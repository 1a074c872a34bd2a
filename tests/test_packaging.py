"""crm-bridge installs as one package, crm_bridge, and shares no top-level name.

The checkout keeps its short folders (connectors/, sync/, crm_core/, cli.py);
installed, they are crm_bridge.connectors, crm_bridge.sync, ... so another
distribution's top-level ``sync`` or ``cli`` module can neither shadow ours
nor be overwritten by ours.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHORT_NAMES = ("cli", "sync", "connectors", "crm_core", "web")


def test_the_wheel_has_one_top_level_package(tmp_path):
    # built from a copy, so the build leaves no build/ or egg-info in the checkout
    source = tmp_path / "src"
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(
        ".git", "build", "*.egg-info", "__pycache__", ".mypy_cache", ".hypothesis", ".pytest_cache", "*.db*", "work"))
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(source)],
        capture_output=True, text=True, timeout=240,
    )
    assert done.returncode == 0, done.stderr
    (wheel,) = tmp_path.glob("crm_bridge-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {name.split("/", 1)[0] for name in names}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"crm_bridge"}
    for module in ("cli.py", "cli_directory.py", "connectors/imap.py", "sync/engine.py", "crm_core/store.py",
                   "crm_core/templates/crm.toml", "crm_core/templates/demo.toml", "crm_core/locale/de.po"):
        assert f"crm_bridge/{module}" in names
    assert not any(name.startswith(("crm_bridge/tests/", "crm_bridge/bench/")) for name in names)
    entry = next(n for n in names if n.endswith("entry_points.txt"))
    assert "crm = crm_bridge.cli:run" in zipfile.ZipFile(wheel).read(entry).decode()


def test_foreign_modules_of_the_same_name_change_nothing(tmp_path):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    for name in SHORT_NAMES:
        (foreign / f"{name}.py").write_text(f"FOREIGN = {name!r}\n")
    probe = (
        "import crm_bridge.cli, crm_bridge.sync.engine, crm_bridge.connectors.imap, crm_bridge.crm_core.store\n"
        "import sys\n"
        "assert not any(name in sys.modules for name in %r), [n for n in %r if n in sys.modules]\n"
        "import sync, cli, connectors\n"
        "assert (sync.FOREIGN, cli.FOREIGN, connectors.FOREIGN) == ('sync', 'cli', 'connectors')\n"
        "crm_bridge.cli.main(['--help'])\n"
    ) % (SHORT_NAMES, SHORT_NAMES)
    # the foreign folder comes first on the path, as a clashing distribution's modules would
    done = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, timeout=60,
                          env={"PYTHONPATH": str(foreign), "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    assert "Usage: " in done.stdout and "sync" in done.stdout
