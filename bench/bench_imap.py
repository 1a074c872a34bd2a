#!/usr/bin/env python3
"""IMAP sync speed and memory against a local Dovecot.

    python bench/bench_imap.py [--n 20000] [--rss-scale] [--no-write]

Starts its own Dovecot (tests/imap_server.py), loads N generated mails
(bench/mailgen.py) into alice's INBOX (and N/10 into Sent) by writing
Maildir files and running ``doveadm force-resync``, then measures:

(a) bare imaplib ``UID FETCH 1:* (UID FLAGS BODY.PEEK[HEADER])``;
(b) parsing those header blocks with ``email`` policy.default versus
    compat32 + getaddresses (for reference; mailparse is what we use);
(c) our connector's full pull with no store, then the whole ``crm sync``
    process into a fresh database, with its reader process (the default)
    and without (``CRM_PARALLEL_PULL=0``), three of each, alternating ->
    mails/s and the ratio to (a), peak memory of the process tree, and the
    CPU the run and Dovecot used against the cores the machine has;
(d) a no-change rerun of ``crm sync`` (INBOX + Sent) versus a no-change
    ``mbsync`` run of the same folders, and the bare interpreter start;
(e) with ``--rss-scale``: peak memory of ``crm sync`` at 100,000 mails.

Figures are printed and written to bench/RESULTS.md (section "imap").
"""

from __future__ import annotations

import argparse
import imaplib
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._results import TreeMemory, like_an_installation, process_tree, write_section  # noqa: E402
from tests.imap_server import running_dovecot  # noqa: E402

try:
    from bench.mailgen import generate_messages  # noqa: E402
except ImportError:  # pragma: no cover - the generator is another engineer's file
    generate_messages = None

def timed_run(argv: list[str], cwd: Path, env: dict | None = None) -> tuple[float, int, int, str, float]:
    """(seconds, peak summed PSS in MB, peak summed RSS in MB, stdout, CPU seconds) of a
    child process and its descendants (the sync and its reader process; bench/_results.TreeMemory)."""
    out_f = tempfile.TemporaryFile()
    err_f = tempfile.TemporaryFile()
    t = time.perf_counter()
    proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=out_f, stderr=err_f, stdin=subprocess.DEVNULL)
    memory = TreeMemory(proc.pid)
    _, status, usage = os.wait4(proc.pid, 0)  # CPU times include the reaped reader process
    seconds = time.perf_counter() - t
    pss_mb, rss_mb = memory.stop()
    proc.returncode = os.waitstatus_to_exitcode(status)
    out_f.seek(0)
    err_f.seek(0)
    stdout, stderr = out_f.read().decode("utf-8", "replace"), err_f.read().decode("utf-8", "replace")
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({proc.returncode}):\n{stdout[-2000:]}\n{stderr[-2000:]}")
    return seconds, pss_mb, rss_mb, stdout, usage.ru_utime + usage.ru_stime


def load(server, n: int, seed: int) -> None:
    def gen(count, s):
        if generate_messages is None:
            raise SystemExit("bench/mailgen.py is missing")
        return generate_messages(count, s)

    server.drop("alice", "INBOX", gen(n, seed))
    server.drop("alice", "Sent", gen(max(1, n // 10), seed + 1000))


def bare_fetch(server) -> tuple[float, list[bytes]]:
    m = imaplib.IMAP4("127.0.0.1", server.port)
    m.login("alice", server.users["alice"])
    m.select("INBOX", readonly=True)
    t = time.perf_counter()
    typ, data = m.uid("FETCH", "1:*", "(UID FLAGS BODY.PEEK[HEADER])")
    seconds = time.perf_counter() - t
    m.logout()
    headers = [item[1] for item in data if isinstance(item, tuple)]
    return seconds, headers


def header_parse(headers: list[bytes]) -> tuple[float, float, float]:
    """Seconds for policy.default, compat32 + getaddresses, and mailparse."""
    from email import policy
    from email.parser import BytesHeaderParser
    from email.utils import getaddresses

    from connectors.mailparse import parse_header_block, record_from_headers
    from crm_core.records import Location

    sample = headers[:5000]
    scale = len(headers) / max(1, len(sample))
    p = BytesHeaderParser(policy=policy.default)
    t = time.perf_counter()
    for h in sample:
        msg = p.parsebytes(h)
        for f in ("from", "to", "cc", "subject", "date", "message-id"):
            msg.get(f)
        msg.get("to") and msg["to"].addresses
    default = (time.perf_counter() - t) * scale
    p = BytesHeaderParser(policy=policy.compat32)
    t = time.perf_counter()
    for h in sample:
        msg = p.parsebytes(h)
        getaddresses(msg.get_all("to", []) + msg.get_all("cc", []) + msg.get_all("from", []))
        msg.get("subject"), msg.get("date"), msg.get("message-id")
    compat = (time.perf_counter() - t) * scale
    loc = Location("INBOX", "1")
    t = time.perf_counter()
    for h in sample:
        record_from_headers(parse_header_block(h), loc)
    fast = (time.perf_counter() - t) * scale
    return default, compat, fast


class NullView:
    def known(self, scope):
        return {}

    def scopes(self):
        return []


def connector_pull(server, folders: list[str], cursor: dict | None = None) -> tuple[float, int, dict | None]:
    """(seconds, mails, final cursor) of one pull, login included."""
    from connectors.imap import ImapConnector

    os.environ["BENCH_IMAP_PW"] = server.users["alice"]
    conn = ImapConnector("bench", {"type": "imap", "host": "127.0.0.1", "port": server.port, "tls": "none",
                                   "allow_plaintext": True, "username": "alice", "password_env": "BENCH_IMAP_PW",
                                   "folders": folders})
    t = time.perf_counter()
    n = 0
    for batch in conn.pull(cursor, NullView()):
        n += len(batch.records) + len(batch.failures)
        cursor = batch.cursor or cursor
    seconds = time.perf_counter() - t
    conn.close()
    return seconds, n, cursor


def write_config(path: Path, server, db: Path, folders: list[str]) -> Path:
    path.write_text(textwrap.dedent(f"""\
        [store]
        path = "{db}"

        [company]
        internal_domains = ["nordlicht-haustechnik.de"]

        [sources.alice]
        type = "imap"
        host = "127.0.0.1"
        port = {server.port}
        tls = "none"
        allow_plaintext = true
        username = "alice"
        password_env = "BENCH_IMAP_PW"
        folders = {json.dumps(folders)}
        owner = ["anna.weber@nordlicht-haustechnik.de"]
        """))
    return path


def crm_sync(config: Path, parallel: bool = True) -> tuple[float, int, int, str, float]:
    env = dict(os.environ)
    if not parallel:
        env["CRM_PARALLEL_PULL"] = "0"
    return timed_run([sys.executable, "-m", "cli", "--config", str(config), "sync"], ROOT, env)


def mbsync_runs(server, tmp: Path) -> tuple[float, list[float]]:
    """(first run, five no-change runs) of mbsync pulling INBOX and Sent."""
    local = tmp / "mbsync-mail"
    local.mkdir()
    rc = tmp / "mbsyncrc"
    rc.write_text(textwrap.dedent(f"""\
        FSync no

        IMAPAccount bench
        Host 127.0.0.1
        Port {server.port}
        User alice
        Pass {server.users['alice']}
        SSLType None
        AuthMechs LOGIN

        IMAPStore bench-far
        Account bench

        MaildirStore bench-near
        Path {local}/
        Inbox {local}/INBOX
        SubFolders Verbatim

        Channel bench
        Far :bench-far:
        Near :bench-near:
        Patterns INBOX Sent
        Create Near
        Sync Pull
        SyncState *
        """))
    times = []
    for attempt in range(6):
        if attempt == 1:
            time.sleep(1.5)  # isync waits out a maildir touched within the current second
        t = time.perf_counter()
        done = subprocess.run(["mbsync", "-q", "-c", str(rc), "bench"], capture_output=True, text=True)
        times.append(time.perf_counter() - t)
        if done.returncode != 0:
            raise RuntimeError(f"mbsync failed: {done.stderr[-1500:]}")
    return times[0], times[1:]


ROUNDS = 3


def median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]


def server_cpu(server) -> float:
    """CPU seconds Dovecot's processes have used so far (live ones plus the reaped)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in process_tree(server.proc.pid):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += sum(int(f) for f in fields[11:15])  # utime stime cutime cstime
    return total / tick


def python_start() -> float:
    """Median seconds of the interpreter starting and stopping, site-packages' .pth files included."""
    times = []
    for _ in range(9):
        t = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        times.append(time.perf_counter() - t)
    return median(times)


def run(n: int, rss_scale: bool, seed: int) -> str:
    lines = []

    def say(text: str) -> None:
        print(text, flush=True)
        lines.append(text)

    with tempfile.TemporaryDirectory(prefix="bench-imap-") as tmpdir:
        tmp = Path(tmpdir)
        with running_dovecot() as server:
            t = time.perf_counter()
            load(server, n, seed)
            say(f"Loaded {n:,} mails into INBOX and {max(1, n // 10):,} into Sent in {time.perf_counter() - t:.1f} s "
                f"(Dovecot {server.version}, Maildir, loopback, no TLS).")
            say("")
            bare_fetch(server)  # warm Dovecot's index and cache once
            bares = [bare_fetch(server) for _ in range(ROUNDS)]
            bare_s = median([b[0] for b in bares])
            headers = bares[0][1]
            bare_rate = n / bare_s
            d_s, c_s, f_s = header_parse(headers)
            conn_s, conn_n, _cursor = connector_pull(server, ["INBOX"])
            conn_rate = conn_n / conn_s
            _s, _n, cursor = connector_pull(server, ["INBOX", "\\Sent"])
            nochange_s, _n, _c = connector_pull(server, ["INBOX", "\\Sent"], cursor)
            os.environ["BENCH_IMAP_PW"] = server.users["alice"]
            total = n + max(1, n // 10)
            runs: dict[bool, list[tuple[float, int, int]]] = {True: [], False: []}
            for r in range(ROUNDS):  # interleaved: the machine's other load hits both alike
                for parallel in (True, False):
                    db = tmp / f"crm-{r}-{int(parallel)}.db"
                    config = write_config(tmp / "crm.toml", server, db, ["INBOX", "\\Sent"])
                    before = server_cpu(server)
                    seconds, pss, rss, _out, cpu = crm_sync(config, parallel)
                    runs[parallel].append((seconds, pss, rss, cpu, server_cpu(server) - before))
            sync_s = median([x[0] for x in runs[True]])
            inproc_s = median([x[0] for x in runs[False]])
            sync_tree, sync_rss = max(x[1] for x in runs[True]), max(x[2] for x in runs[True])
            inproc_tree = max(x[1] for x in runs[False])
            sync_rate, inproc_rate = total / sync_s, total / inproc_s
            mid = sorted(runs[True])[len(runs[True]) // 2]  # the median run's CPU accounts
            cores = os.cpu_count() or 1
            reruns = [crm_sync(config) for _ in range(5)]
            rerun_s = median([x[0] for x in reruns])
            rerun_tree = max(x[1] for x in reruns)
            mb_first, mb_reruns = mbsync_runs(server, tmp)
            mb_rerun = median(mb_reruns)
            say(f"Medians of {ROUNDS} runs (no-change runs: of 5); the `crm sync` runs with and without the reader "
                "process alternate, each into a fresh store.")
            say("")
            say("| measurement | time | mails/s | ratio to (a) |")
            say("|---|---:|---:|---:|")
            say(f"| (a) bare imaplib `UID FETCH 1:* (UID FLAGS BODY.PEEK[HEADER])`, INBOX | {bare_s:.2f} s | {bare_rate:,.0f} | 1.00 |")
            say(f"| (b) header parse, `email` policy.default | {d_s:.2f} s | {n / d_s:,.0f} | |")
            say(f"| (b) header parse, compat32 + getaddresses | {c_s:.2f} s | {n / c_s:,.0f} | |")
            say(f"| (b) header parse, mailparse (what we use) | {f_s:.2f} s | {n / f_s:,.0f} | |")
            say(f"| (c) ImapConnector.pull, INBOX, no store | {conn_s:.2f} s | {conn_rate:,.0f} | {conn_rate / bare_rate:.2f} |")
            say(f"| **(c) `crm sync` process, INBOX + Sent, fresh DB** | **{sync_s:.2f} s** | **{sync_rate:,.0f}** | **{sync_rate / bare_rate:.2f}** |")
            say(f"| (c) the same with `CRM_PARALLEL_PULL=0` (no reader process) | {inproc_s:.2f} s | {inproc_rate:,.0f} | {inproc_rate / bare_rate:.2f} |")
            say(f"| **(d) `crm sync` no-change rerun, INBOX + Sent** | **{rerun_s:.3f} s** | | |")
            say(f"| (d) ImapConnector.pull no-change (login, LIST, 2x EXAMINE), in-process | {nochange_s:.3f} s | | |")
            say(f"| (d) `{sys.executable.rsplit('/', 1)[-1]} -c pass` (interpreter start, site included) | {python_start():.3f} s | | |")
            say(f"| (d) `mbsync` first run (full bodies), INBOX + Sent | {mb_first:.2f} s | | |")
            say(f"| (d) `mbsync` no-change run, INBOX + Sent | {mb_rerun:.3f} s | | |")
            say("")
            say(f"Memory of `crm sync` at {total:,} mails, peak PSS summed over the sync and its reader process: "
                f"**{sync_tree} MB** (summed RSS, which counts shared pages twice: {sync_rss} MB); without the "
                f"reader process {inproc_tree} MB; no-change rerun {rerun_tree} MB.")
            say("")
            say(f"CPU of the median `crm sync` run: {mid[3]:.2f} s in the sync and its reader process, {mid[4]:.2f} s "
                f"in Dovecot; on {cores} cores that needs at least {(mid[3] + mid[4]) / cores:.2f} s of wall time, "
                f"and the run took {mid[0]:.2f} s (process start included).")
            say("")
            say("Targets: initial sync >= 0.25 of (a): "
                f"{'met' if sync_rate / bare_rate >= 0.25 else 'NOT met'} ({sync_rate / bare_rate:.2f}; "
                f"the brief assumed (a) ~20,000 mails/s and 0.25 of it ~5,000/s; here (a) is {bare_rate:,.0f}/s and "
                f"`crm sync` does {sync_rate:,.0f}/s); no-change rerun <= 0.5x mbsync: "
                f"{'met' if rerun_s <= 0.5 * mb_rerun else 'NOT met'} ({rerun_s / mb_rerun:.2f}x for the `crm` "
                f"process, {nochange_s / mb_rerun:.2f}x for the connector's pull alone); "
                f"peak memory < 150 MB: {'met' if sync_tree < 150 else 'NOT met'}.")
        if rss_scale:
            big = 100_000
            with running_dovecot() as server:
                load(server, big, seed)
                config = write_config(tmp / "big.toml", server, tmp / "big.db", ["INBOX", "\\Sent"])
                os.environ["BENCH_IMAP_PW"] = server.users["alice"]
                big_s, big_tree, big_rss, _out, _cpu = crm_sync(config)
            big_total = big + big // 10
            say("")
            say(f"(e) `crm sync` of {big_total:,} mails: {big_s:.1f} s ({big_total / big_s:,.0f} mails/s), "
                f"peak PSS {big_tree} MB (summed RSS {big_rss} MB) vs {sync_tree} MB at {total:,}: "
                f"{'flat' if big_tree <= sync_tree * 1.2 + 5 else 'GROWS'}.")
    return "\n".join(lines)


def main() -> int:
    like_an_installation()
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=20_000, help="mails in INBOX (Sent gets n/10)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--rss-scale", action="store_true", help="also sync 100,000 mails and compare peak RSS")
    ap.add_argument("--no-write", action="store_true", help="do not touch bench/RESULTS.md")
    args = ap.parse_args()
    body = run(args.n, args.rss_scale, args.seed)
    if not args.no_write:
        write_section("imap", "## IMAP (bench/bench_imap.py)\n\n" + body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
