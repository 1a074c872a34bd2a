"""The ``crm`` command leaves quickly (cli.run: no interpreter teardown) and still
as a normal exit would: exit status, every line of output and of the log file
written, the store closed (its write-ahead log folded back into the file)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import Maildir, make_mail, write_config

REPO = Path(__file__).resolve().parents[1]


def crm(config: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "CRM_CONFIG"}
    return subprocess.run([sys.executable, "-m", "crm_bridge.cli", "--config", str(config), *args],
                          capture_output=True, text=True, env=env, timeout=120)


def test_the_quick_exit_keeps_status_output_log_and_store(tmp_path):
    md = Maildir(tmp_path / "mail")
    for n in range(30):
        md.add(make_mail(sender="kim@kunde.example", message_id=f"m{n}@x", subject=f"Mail {n}"))
    config = write_config(tmp_path / "crm.toml", customers=(("Kunde GmbH", ["kunde.example"]),), sources={
        "anna": {"type": "maildir", "path": str(md.root), "owner": ["anna@nordlicht.example"]},
        "gone": {"type": "maildir", "path": str(tmp_path / "no-such-folder"), "owner": ["anna@nordlicht.example"]},
    }, store=str(tmp_path / "crm.db"))
    config.write_text(config.read_text() + f'\n[log]\nfile = "{tmp_path / "crm.log"}"\n')
    done = crm(config, "-v", "sync", "--json")
    assert done.returncode == 1, done.stderr  # one source failed: the others ran
    assert '"source": "anna"' in done.stdout and done.stdout.rstrip().endswith("}")
    assert "gone" in (tmp_path / "crm.log").read_text()
    # closed: the write-ahead log was folded back into the store and removed
    assert not (tmp_path / "crm.db-wal").exists()
    assert [r["status"] for r in json.loads(done.stdout)["results"]] == ["ok", "error"]
    assert crm(config, "status").returncode == 0
    bad = crm(tmp_path / "missing.toml", "status")
    assert bad.returncode == 2 and bad.stderr.startswith("crm: ") and not bad.stdout


def test_the_crm_command_is_the_quick_exit():
    text = (REPO / "pyproject.toml").read_text()
    assert 'crm = "crm_bridge.cli:run"' in text
    assert (REPO / "cli.py").read_text().rstrip().endswith("if __name__ == \"__main__\":\n    run()")
