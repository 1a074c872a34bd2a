"""``crm sync --profile FILE``: a readable phase breakdown plus cProfile data.

Runs ``crm`` as its own process (as an admin would) against a Maildir and a
real Dovecot, with customers that match the mail, and reads what it wrote.
"""

from __future__ import annotations

import json
import os
import pstats
import re
import subprocess
import sys
from pathlib import Path

from bench.mailgen import customer_domains, generate_messages
from tests.conftest import Maildir, write_config
from tests.imap_server import dovecot  # noqa: F401  (fixture)

REPO = Path(__file__).resolve().parents[1]
PHASES = ("fetch", "parse", "link", "store", "other")


def crm(config: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "crm_bridge.cli", "--config", str(config), *args], cwd=REPO,
                          capture_output=True, text=True, timeout=300, env={**os.environ, **(env or {})})


def phases_of(text: str, source: str) -> dict[str, float]:
    block = text.split(f"source {source} ", 1)[1].split("\n\n", 1)[0]
    found = {m.group(1): float(m.group(2)) for m in re.finditer(r"^\s+(\w+)\s+([0-9.]+)\s+[0-9.]+%", block, re.M)}
    return found


def test_profile_writes_phase_breakdown_and_pstats(tmp_path: Path, dovecot) -> None:  # noqa: F811
    box = Maildir(tmp_path / "mail")
    for raw in generate_messages(300, seed=3):
        box.add(raw)
    dovecot.drop("alice", "INBOX", generate_messages(300, seed=4))
    customers = [(f"Kunde {i}", [d]) for i, d in enumerate(sorted(set(customer_domains(3) + customer_domains(4))))]
    config = write_config(tmp_path / "crm.toml", customers=customers, sources={
        "files": {"type": "maildir", "path": str(box.root), "owner": ["anna.weber@nordlicht-haustechnik.de"]},
        "imap": {"type": "imap", "host": "127.0.0.1", "port": dovecot.port, "tls": "none", "allow_plaintext": True,
                 "username": "alice", "password_env": "PROFILE_TEST_PW", "folders": ["INBOX"],
                 "owner": ["anna.weber@nordlicht-haustechnik.de"]},
    }, internal=("nordlicht-haustechnik.de",))
    out = tmp_path / "profile.txt"
    done = crm(config, "sync", "--profile", str(out), env={"PROFILE_TEST_PW": dovecot.users["alice"]})
    assert done.returncode == 0, done.stderr
    assert f"profile written to {out}" in done.stderr
    text = out.read_text(encoding="utf-8")
    for source in ("files", "imap"):
        phases = phases_of(text, source)
        assert set(phases) == set(PHASES), (source, text[:2000])
        assert phases["parse"] > 0 and phases["store"] > 0 and phases["link"] > 0, phases
    assert phases_of(text, "imap")["fetch"] > 0  # time waiting for Dovecot is counted as fetch
    counts = re.search(r"(\d+) added, 0 updated, 0 seen, (\d+) not logged", text.split("source imap ", 1)[1])
    assert counts and int(counts.group(1)) + int(counts.group(2)) == 300 and int(counts.group(1)) > 150
    assert "costliest functions" in text
    stats = pstats.Stats(str(out) + ".pstats")
    files = {key[0] for key in stats.stats}  # type: ignore[attr-defined]
    assert str(REPO / "connectors" / "imap.py") in files and str(REPO / "crm_core" / "linking.py") in files
    # the store the profiled run wrote is a normal one: a rerun finds nothing new
    again = crm(config, "sync", "--json", env={"PROFILE_TEST_PW": dovecot.users["alice"]})
    assert again.returncode == 0, again.stderr
    assert [r["added"] for r in json.loads(again.stdout)["results"] if r["type"] != "rules"] == [0, 0], again.stdout


def test_profile_with_watch_is_a_user_error(tmp_path: Path) -> None:
    config = write_config(tmp_path / "crm.toml", sources={})
    done = crm(config, "sync", "--watch", "--profile", str(tmp_path / "p.txt"))
    assert done.returncode == 2
    assert "cannot be combined with --watch" in done.stderr and "Traceback" not in done.stderr


def test_profile_that_cannot_be_written_is_one_line_and_the_sync_counts(tmp_path: Path) -> None:
    box = Maildir(tmp_path / "mail")
    for raw in generate_messages(20, seed=5):
        box.add(raw)
    config = write_config(tmp_path / "crm.toml", sources={
        "files": {"type": "maildir", "path": str(box.root), "owner": ["anna.weber@nordlicht-haustechnik.de"]}})
    done = crm(config, "sync", "--profile", str(tmp_path / "no-such-dir" / "p.txt"))
    assert done.returncode == 0, done.stderr
    assert "cannot write the profile" in done.stderr and "Traceback" not in done.stderr
    assert "files: ok:" in done.stdout and "added" in done.stdout
