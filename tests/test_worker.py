"""Pulls in a child process (sync/worker.py): same store, same errors, no orphans."""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

import pytest

from crm_bridge.connectors import base
from crm_bridge.connectors.base import AuthError, Connector, CursorInvalid
from crm_bridge.crm_core.records import Address, Batch, Location, MailRecord
from crm_bridge.sync import worker
from crm_bridge.sync.config import load_config, parse_config
from crm_bridge.sync.engine import Engine
from crm_bridge.sync.lock import StoreLock
from tests.conftest import write_config

REPO = Path(__file__).resolve().parents[1]
base.REGISTRY.setdefault("probe", f"{__name__}:ProbeConnector")  # the name pytest imported this file by

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the reader process is Linux only")


class ProbeConnector(Connector):
    """Writes where it ran and what the view told it; fails on request.

    Options: ``out`` (a file it appends lines to), ``fail`` ("auth",
    "bug", "invalid" = CursorInvalid when given a cursor), ``items``.
    """

    type = "probe"
    option_keys = frozenset({"out", "fail", "items"})

    def _say(self, line: str) -> None:
        with open(self.options["out"], "a") as fh:
            fh.write(line + "\n")

    def pull(self, cursor, view) -> Iterator[Batch]:
        self._say(f"pid {os.getpid()} cursor {cursor}")
        fail = self.options.get("fail", "")
        if fail == "auth":
            raise AuthError("probe: the server refused the login of kim")
        if fail == "invalid" and cursor is not None:
            raise CursorInvalid("probe: token expired")
        if fail == "bug":
            {}["no such key"]
        if fail == "oserror":
            open(Path(self.options["out"]).parent / "no" / "such" / "file")
        if fail == "die":
            os._exit(3)
        self._say(f"before known {sorted(view.known('box'))} scopes {view.scopes()}")
        for n in range(int(self.options.get("items", 4))):
            rec = MailRecord(Location("box", f"i{n}", "e"), message_id=f"p{n}@kunde.example",
                             sender=Address("kim@kunde.example"), to=(Address("anna@nordlicht.example"),),
                             date=datetime(2026, 9, 1, n, tzinfo=timezone.utc), subject=f"Probe {n}", snippet="text")
            yield Batch(records=[rec], cursor={"upto": n})
            # the parent answers after storing the batch above
            self._say(f"after {n} known {sorted(view.known('box'))}")


def probe_engine(tmp: Path, parallel: bool, **options) -> Engine:
    config = parse_config({
        "store": {"path": str(tmp / "crm.db")},
        "company": {"internal_domains": ["nordlicht.example"]},
        "customers": [{"name": "Kunde", "domains": ["kunde.example"]}],
        "sources": {"probe": {"type": "probe", "owner": ["anna@nordlicht.example"], "out": str(tmp / "probe.log"),
                              **options}},
    }, tmp / "crm.toml")
    return Engine(config, retries=0, parallel=parallel)


def test_pull_runs_in_a_child_and_the_view_sees_every_stored_batch(tmp_path):
    assert worker.available()
    engine = probe_engine(tmp_path, parallel=True)
    [result] = [r for r in engine.run() if r.name == "probe"]
    assert result.status == "ok" and result.stats.added == 4
    lines = (tmp_path / "probe.log").read_text().splitlines()
    assert lines[0].startswith("pid ") and int(lines[0].split()[1]) != os.getpid()
    assert lines[1] == "before known [] scopes []"
    assert lines[2:] == [f"after {n} known {[f'i{k}' for k in range(n + 1)]}" for n in range(4)]
    assert engine.store.source_state("probe")["cursor"] == {"upto": 3}
    # a second run hands the child the stored cursor and the stored locations
    engine.run()
    lines = (tmp_path / "probe.log").read_text().splitlines()
    again = lines.index(next(line for line in lines[1:] if line.startswith("pid ")))
    assert lines[again].endswith("cursor {'upto': 3}")
    assert lines[again + 1] == "before known ['i0', 'i1', 'i2', 'i3'] scopes ['box']"
    engine.store.close()


def test_a_connector_can_keep_its_pull_in_process(tmp_path, monkeypatch):
    monkeypatch.setattr(ProbeConnector, "pull_in_reader", False)
    engine = probe_engine(tmp_path, parallel=True)
    engine.run()
    first = (tmp_path / "probe.log").read_text().splitlines()[0]
    assert int(first.split()[1]) == os.getpid()
    engine.store.close()


def test_parallel_and_in_process_runs_store_the_same(tmp_path):
    """The bundled example data (Maildir, .ics, .vcf), synced both ways."""
    shutil.copytree(REPO / "examples", tmp_path / "examples")
    shutil.copy(REPO / "config.example.toml", tmp_path / "crm.toml")
    stores = []
    for parallel in (False, True):
        for leftover in tmp_path.glob("crm.db*"):
            leftover.unlink()
        engine = Engine(load_config(str(tmp_path / "crm.toml")), parallel=parallel)
        first = {r.name: r.stats.added for r in engine.run()}
        again = {r.name: r.stats.added for r in engine.run()}
        assert first["anna-mail"] > 100 and set(again.values()) == {0}
        stores.append(engine.store.snapshot())
        engine.store.close()
    assert stores[0] == stores[1]


def test_batches_of_every_file_source_cross_a_process_boundary_unchanged():
    """Mail, appointments, contacts, failures and locations pickle to equal copies."""
    import pickle

    from crm_bridge.connectors.base import make_connector
    from crm_bridge.sync.engine import _NullView

    config = load_config(str(REPO / "config.example.toml"))
    seen = set()
    for name, options in config.sources.items():
        for batch in make_connector(name, options).pull(None, _NullView()):
            copy = pickle.loads(pickle.dumps(batch, protocol=pickle.HIGHEST_PROTOCOL))
            assert copy == batch
            seen |= {type(x).__name__ for x in (*batch.records, *batch.failures)}
    assert {"MailRecord", "AppointmentRecord", "ContactCard", "Failure"} <= seen


def test_errors_come_back_as_themselves(tmp_path, caplog):
    engine = probe_engine(tmp_path, parallel=True, fail="auth")
    [result] = [r for r in engine.run() if r.name == "probe"]
    assert result.status == "error" and result.message.startswith("authentication failed")
    engine.store.close()

    (tmp_path / "bug").mkdir()
    engine = probe_engine(tmp_path / "bug", parallel=True, fail="bug")
    with caplog.at_level(logging.ERROR, logger="crm.sync"):
        [result] = [r for r in engine.run() if r.name == "probe"]
    assert result.message == "internal error: KeyError: 'no such key'"
    assert "in the reader process" in caplog.text and "test_worker.py" in caplog.text  # the child's traceback
    engine.store.close()


def test_a_bug_raising_oserror_is_not_mistaken_for_a_lost_reader(tmp_path):
    engine = probe_engine(tmp_path, parallel=True, fail="oserror")
    [result] = [r for r in engine.run() if r.name == "probe"]
    assert result.message.startswith("internal error: FileNotFoundError")
    engine.store.close()


def test_a_reader_that_dies_is_a_transient_error_and_nothing_is_stored(tmp_path):
    engine = probe_engine(tmp_path, parallel=True, fail="die")
    [result] = [r for r in engine.run() if r.name == "probe"]
    assert result.status == "error" and "the reader process ended unexpectedly" in result.message
    assert engine.store.source_state("probe").get("cursor") is None
    engine.store.close()


def test_invalid_cursor_in_the_child_makes_the_engine_start_over(tmp_path):
    engine = probe_engine(tmp_path, parallel=True, fail="invalid")
    engine.run()  # no cursor yet: a full pull
    [result] = [r for r in engine.run() if r.name == "probe"]
    assert result.status == "ok"
    pulls = [line for line in (tmp_path / "probe.log").read_text().splitlines() if line.startswith("pid ")]
    assert [p.split(" cursor ")[1] for p in pulls] == ["None", "{'upto': 3}", "None"]
    engine.store.close()


def _children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(entry.name))
    return out


def test_killed_sync_leaves_no_reader_behind(tmp_path):
    # an "IMAP server" that accepts and never says a word: the reader waits for its greeting
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen()
    config = write_config(tmp_path / "crm.toml", sources={"slow": {
        "type": "imap", "host": "127.0.0.1", "port": silent.getsockname()[1], "tls": "none",
        "allow_plaintext": True, "username": "kim", "password_env": "CRM_TEST_SILENT", "timeout": 120}})
    env = {**os.environ, "CRM_TEST_SILENT": "x", "PYTHONPATH": str(REPO)}  # this checkout's cli
    sync = subprocess.Popen([sys.executable, "-m", "crm_bridge.cli", "--config", str(config), "sync"], cwd=tmp_path, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        conn, _ = silent.accept()  # the reader connected
        readers = _children(sync.pid)
        assert len(readers) == 1
        sync.kill()
        sync.wait()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and Path(f"/proc/{readers[0]}").exists() \
                and "Z" not in Path(f"/proc/{readers[0]}/stat").read_text().rsplit(")", 1)[1].split()[0]:
            time.sleep(0.05)
        state = Path(f"/proc/{readers[0]}/stat").read_text().rsplit(")", 1)[1].split()[0] \
            if Path(f"/proc/{readers[0]}").exists() else "gone"
        assert state in ("Z", "gone")  # dead (a zombie until init reaps it)
        conn.close()
        with StoreLock(load_config(str(config)).store_path):  # and the store lock is free again
            pass
    finally:
        if sync.poll() is None:
            sync.kill()
        silent.close()
