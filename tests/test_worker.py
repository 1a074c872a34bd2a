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
from crm_bridge.sync.config import load_config
from crm_bridge.sync.engine import Engine
from crm_bridge.sync.lock import StoreLock
from tests.conftest import one_source_engine, write_config


@pytest.fixture(autouse=True)
def no_thread_of_an_earlier_test():
    """The reader process is forked only where no other thread runs (worker.available): a thread an
    earlier test left behind (a server's kept-alive connection, an HTTP pool's watcher) is given a
    moment to end, and named if it does not, instead of failing these tests in a way that hides why."""
    import gc
    import threading

    deadline = time.monotonic() + 10
    while threading.active_count() > 1 and time.monotonic() < deadline:
        gc.collect()
        time.sleep(0.05)
    others = [t.name for t in threading.enumerate() if t is not threading.main_thread()]
    assert not others, f"threads left behind by earlier tests: {others}"


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
    return one_source_engine(tmp, "probe", {"type": "probe", "out": str(tmp / "probe.log"), **options},
                             retries=0, parallel=parallel)


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


class _CountingView:
    """A store view that counts the questions a pull asks after it has handed on a batch.

    In the reader process every such question waits until the store has
    stored each batch sent before it: the reader idles, then the store
    does, once per question (issue 9: 50 Maildir folders took 1.3x one).
    """

    def __init__(self, known: dict[str, dict[str, str]]):
        self._known = known
        self.batches = 0
        self.late: list[str] = []

    def known(self, scope: str) -> dict[str, str]:
        if self.batches:
            self.late.append(f"known({scope})")
        return dict(self._known.get(scope, {}))

    def scopes(self) -> list[str]:
        if self.batches:
            self.late.append("scopes()")
        return sorted(self._known)


def _file_sources(tmp: Path) -> dict[str, dict]:
    from tests.conftest import Maildir, make_mail

    md = Maildir(tmp / "maildir")
    emls, mboxes, cards = tmp / "eml", tmp / "mbox", tmp / "vcf"
    for d in (emls, mboxes, cards):
        d.mkdir()
    for f in range(6):
        folder = None if f == 0 else f"Ordner{f}"
        (emls / f"ordner{f}").mkdir()
        mbox = b""
        for n in range(7):
            raw = make_mail(sender="kim@kunde.example", subject=f"Mail {f}/{n}", message_id=f"m{f}.{n}@x")
            md.add(raw, folder=folder)
            (emls / f"ordner{f}" / f"{n}.eml").write_bytes(raw)
            mbox += b"From kim@kunde.example Mon Jan  1 00:00:00 2026\n" + raw.replace(b"\r\n", b"\n") + b"\n"
        (mboxes / f"ordner{f}").write_bytes(mbox)
        (cards / f"book{f}.vcf").write_text("".join(
            f"BEGIN:VCARD\r\nVERSION:3.0\r\nUID:c{f}.{n}\r\nFN:Kim {f} {n}\r\nEMAIL:kim{f}.{n}@kunde.example\r\n"
            "END:VCARD\r\n" for n in range(3)), encoding="utf-8")
    return {"maildir": {"type": "maildir", "path": str(md.root)}, "eml": {"type": "eml", "path": str(emls)},
            "mbox": {"type": "mbox", "path": str(mboxes)}, "vcf": {"type": "vcf", "path": str(cards)}}


@pytest.mark.parametrize("kind", ["maildir", "eml", "mbox", "vcf"])
def test_file_sources_ask_the_store_nothing_between_batches(tmp_path, kind):
    """Six folders (files), cut into many batches: every question to the store comes before the first batch,
    so the reader never waits for the store at a folder boundary; with or without known locations."""
    from crm_bridge.connectors.base import make_connector

    options = {**_file_sources(tmp_path)[kind], "batch_size": 3}
    learned: dict[str, dict[str, str]] = {}
    for run in ("first", "the store knows a location in every folder"):
        view = _CountingView(learned)
        batches = []
        for batch in make_connector(kind, options).pull(None, view):
            view.batches += 1
            batches.append(batch)
        assert len({r.location.scope for b in batches for r in b.records}) == 6, run
        assert view.batches > 6, run
        assert view.late == [], run
        learned = {r.location.scope: {"gone-meanwhile": "e"} for b in batches for r in b.records}
    assert len({loc.scope for b in batches for loc in b.removed}) == 6  # the known maps were read and used


def test_the_reader_works_out_each_mails_dedup_key_and_the_store_uses_it(tmp_path):
    """The store process, the busier one in a first sync, is spared what a record alone decides."""
    from crm_bridge.connectors.base import make_connector
    from crm_bridge.crm_core.storebase import mail_key
    from crm_bridge.sync.engine import _NullView

    options = {**_file_sources(tmp_path)["maildir"], "batch_size": 5}
    mails = [r for b in worker.pull(lambda: make_connector("maildir", options), None, _NullView()) for r in b.records]
    assert len(mails) == 42
    assert all(rec.key is not None and rec.key == mail_key(rec) for rec in mails)

    engine = probe_engine(tmp_path, parallel=False)
    rec = mails[0]
    rec.key = ("m:worked-out-elsewhere", "c" * 40)
    with engine.store.transaction():
        engine.store.apply_batch(engine.config.policies["probe"], Batch(records=[rec]))
    assert engine.store.conn.execute("SELECT dedup_key, content_hash FROM interactions").fetchall() == [
        ("m:worked-out-elsewhere", "c" * 40)]


class _BulkyConnector(Connector):
    """Ten batches of about 300 KB each; notes in ``out`` how many it has handed on."""

    type = "bulky"
    option_keys = frozenset({"out"})

    def pull(self, cursor, view) -> Iterator[Batch]:
        for n in range(10):
            yield Batch(problems=[f"{n}" * 300_000])
            Path(self.options["out"]).write_text(str(n + 1))


def test_the_reader_runs_ahead_of_a_busy_store_by_a_few_batches(tmp_path):
    """While the store works on one batch, the reader reads on (up to a bounded buffer), so neither
    waits for the other after every batch; the default socket buffer (~200 KB) held less than one."""
    from crm_bridge.sync.engine import _NullView

    probe, peer = socket.socketpair()
    with probe, peer:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
        capped = probe.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) < 2 * 1024 * 1024
    if capped:
        pytest.skip("the kernel caps socket buffers below 2 MB here (net.core.wmem_max)")
    out = tmp_path / "sent"
    batches = worker.pull(lambda: _BulkyConnector("bulky", {"type": "bulky", "out": str(out)}), None, _NullView())
    first = next(batches)
    time.sleep(1.5)  # the store "works" on the first batch
    sent = int(out.read_text())
    assert sent >= 4, f"the reader handed on {sent} batches while the store worked on one"
    assert len(first.problems[0]) == 300_000 and len(list(batches)) == 9
