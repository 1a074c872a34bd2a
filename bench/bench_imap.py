#!/usr/bin/env python3
"""IMAP first sync, no-change sync and rescans against a local Dovecot, side by side with mbsync.

    python bench/bench_imap.py [--sizes 10000,22000,100000] [--rounds 3] [--quick] [--no-write]

For each size (mails in INBOX + Sent, 10:1) a fresh Dovecot gets the
generated mail (bench/mailgen.py) written into its Maildir and indexed
(``doveadm force-resync``), then its index and cache are warmed by one
untimed pass of every reader.  Then, per round, side by side:

(a) **crm's own request, bare**: the bytes ``crm sync``'s connector sends
    in a first sync (recorded once through a loopback proxy), replayed over
    a plain socket, every response read (bench/_imap_bare.py);
(b) the header-only fetch ``UID FETCH 1:* (UID FLAGS BODY.PEEK[HEADER])``
    of both folders with imaplib;
(c) ``mbsync`` pulling both folders into a fresh Maildir, ``FSync no``;
(d) ``crm sync`` into a fresh *realistic* store (bench/realistic.py: 300
    customers matching ~70 % of the mail, 2,000 contacts, threads, a
    blocklist, internal domains);
(e) ``crm sync`` into a fresh store with no customers (the figures of before).

Then no-change runs: ``crm sync`` again on the realistic store and
``mbsync`` again, after a pause of 1.5 s (isync sleeps a second when its
Maildir changed within the current second, which would bill the sleep to it);
then three times 20 new mails APPENDed to INBOX, taken in by ``crm sync``
and by ``mbsync`` (after the same pause).

Then, at ``--rescan`` mails (default 20,000) in INBOX alone, with the
realistic store: a fresh sync, a sync after the folder's UIDVALIDITY
changed, and a sync after all its mail was moved to another folder (one
sync) and back (the timed one: every mail comes back under a new UID).

The rescan after a UIDVALIDITY change is timed twice: right after the
change (Dovecot reads and caches every mail again, as it would for any
client) and, the target's figure, once Dovecot's index and cache were
warmed again by the same untimed pass the fresh sync had.

Then, at ``--folders`` mails (default 22,000): the same generated mail in
one folder and spread over 50 folders (two Dovecots), a first ``crm sync``
of each into the realistic store, beside its own request replayed bare.

Before each timed step ``os.sync()`` writes back what earlier steps left
in the page cache (mbsync's copies, the stores), so that no step pays for
another's writes.

Memory is the peak PSS summed over ``crm sync`` and its reader process
(bench/_results.TreeMemory).  Writes the section "imap" of bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import _imap_bare as bare  # noqa: E402
from bench._results import TreeMemory, like_an_installation, process_tree, write_section  # noqa: E402
from bench.mailgen import generate_messages  # noqa: E402
from bench.realistic import StoreKit  # noqa: E402
from tests.imap_server import running_dovecot  # noqa: E402

FOLDERS = ["INBOX", "\\Sent"]


def timed_run(argv: list[str], env: dict | None = None) -> tuple[float, int, str, float]:
    """(seconds, peak summed PSS in MB, stdout, CPU seconds) of a child and its descendants."""
    out_f, err_f = tempfile.TemporaryFile(), tempfile.TemporaryFile()
    t = time.perf_counter()
    proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=out_f, stderr=err_f, stdin=subprocess.DEVNULL)
    memory = TreeMemory(proc.pid)
    _, status, usage = os.wait4(proc.pid, 0)  # CPU times include the reaped reader process
    seconds = time.perf_counter() - t
    pss_mb, _rss_mb = memory.stop()
    out_f.seek(0)
    err_f.seek(0)
    stdout, stderr = out_f.read().decode("utf-8", "replace"), err_f.read().decode("utf-8", "replace")
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{' '.join(argv)} failed:\n{stdout[-2000:]}\n{stderr[-2000:]}")
    return seconds, pss_mb, stdout, usage.ru_utime + usage.ru_stime


def crm_sync(config: Path) -> tuple[float, int, str, float]:
    return timed_run([sys.executable, "-m", "crm_bridge.cli", "--config", str(config), "sync", "--source", "alice"],
                     dict(os.environ))


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


class Mbsync:
    """mbsync pulling INBOX and Sent into a local Maildir, ``FSync no``."""

    def __init__(self, server, tmp: Path):
        self.server, self.tmp = server, tmp
        self.local = tmp / "mbsync-mail"
        self.rc = tmp / "mbsyncrc"

    def reset(self) -> None:
        shutil.rmtree(self.local, ignore_errors=True)
        self.local.mkdir(parents=True)
        self.rc.write_text(textwrap.dedent(f"""\
            FSync no

            IMAPAccount bench
            Host 127.0.0.1
            Port {self.server.port}
            User alice
            Pass {self.server.users['alice']}
            SSLType None
            AuthMechs LOGIN

            IMAPStore bench-far
            Account bench

            MaildirStore bench-near
            Path {self.local}/
            Inbox {self.local}/INBOX
            SubFolders Verbatim

            Channel bench
            Far :bench-far:
            Near :bench-near:
            Patterns INBOX Sent
            Create Near
            Sync Pull
            SyncState *
            """))

    def run(self) -> float:
        t = time.perf_counter()
        done = subprocess.run(["mbsync", "-q", "-c", str(self.rc), "bench"], capture_output=True, text=True)
        seconds = time.perf_counter() - t
        if done.returncode != 0:
            raise RuntimeError(f"mbsync failed: {done.stderr[-1500:]}")
        return seconds


def realistic_view(kit: StoreKit):
    """The view a first ``crm sync`` into a fresh realistic store gives the connector."""
    from crm_bridge.crm_core.store import Store
    from crm_bridge.sync.config import load_config
    from crm_bridge.sync.engine import StoreView

    config = load_config(str(kit.config("record", True)))
    return StoreView(Store(config.store_path, config.linking), "alice", policy=config.policies["alice"])


def median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]


def load(server, total: int, seed: int) -> tuple[int, int]:
    inbox = total * 10 // 11
    server.drop("alice", "INBOX", generate_messages(inbox, seed))
    server.drop("alice", "Sent", generate_messages(total - inbox, seed + 1000))
    return inbox, total - inbox


def step(what: str, started: list[float]) -> None:
    """Progress on stderr: what was done, and how long it took."""
    now = time.perf_counter()
    print(f"  {what}: {now - started[0]:.1f} s", file=sys.stderr, flush=True)
    started[0] = now


def measure_size(total: int, rounds: int, seed: int, tmp: Path, have_mbsync: bool) -> dict:
    """Every measurement at one size; a dict of medians and details."""
    r: dict = {"total": total}
    clock = [time.perf_counter()]
    with running_dovecot() as server:
        t = time.perf_counter()
        r["inbox"], r["sent"] = load(server, total, seed)
        r["load_s"] = time.perf_counter() - t
        r["dovecot"] = server.version
        pw = server.users["alice"]
        os.environ["BENCH_IMAP_PW"] = pw
        sent_name = bare.resolve_sent(server.port, pw)
        bare.record_session(server.port, pw, FOLDERS)  # every text crm may fetch: warms the index cache
        step(f"loaded {total:,} mails, warmed Dovecot's cache", clock)
        bare.header_fetch(server.port, pw, ["INBOX", sent_name])  # warm
        mb = Mbsync(server, tmp) if have_mbsync else None
        if mb:
            mb.reset()
            mb.run()  # warm: every message file read once
        kit = StoreKit(tmp / f"stores-{total}", {"alice": {
            "type": "imap", "host": "127.0.0.1", "port": server.port, "tls": "none", "allow_plaintext": True,
            "username": "alice", "password_env": "BENCH_IMAP_PW", "folders": FOLDERS}}, seed)
        kit.config("warm", True)  # seeds the realistic template (address book), untimed
        # the yardstick is the request crm sync makes into the realistic store: what that store's view
        # says (skipped mail, metadata-only mail) decides which texts are fetched
        session, r["crm_bytes"] = bare.record_session(server.port, pw, FOLDERS, realistic_view(kit))
        r["shapes"] = bare.command_shapes(session)
        step("warmed the readers, seeded the realistic store", clock)
        replay, header, mbs, real, plain = [], [], [], [], []
        for k in range(rounds):  # interleaved: the machine's other load hits all alike
            os.sync()  # no write-back of an earlier run's files (mbsync's copies, stores) during a timed one
            s, r["replay_bytes"] = bare.replay(server.port, session)
            if r["replay_bytes"] < 0.95 * r["crm_bytes"]:
                raise RuntimeError(f"the replay got {r['replay_bytes']:,} bytes, the connector {r['crm_bytes']:,}")
            replay.append(s)
            s, n = bare.header_fetch(server.port, pw, ["INBOX", sent_name])
            assert n == total, (n, total)
            header.append(s)
            if mb:
                mb.reset()
                os.sync()
                mbs.append(mb.run())
            for realistic, into in ((True, real), (False, plain)):
                cfg = kit.config(f"run{k}-{int(realistic)}", realistic)
                os.sync()
                before = server_cpu(server)
                seconds, pss, out, cpu = crm_sync(cfg)
                into.append((seconds, pss, cpu, server_cpu(server) - before))
                if realistic:
                    r["store"] = kit.summary(cfg.parent / f"run{k}-1.db")
                    r["crm_out"] = out.strip().splitlines()[0]
                    last_real = cfg
            step(f"round {k + 1}", clock)
        r["replay_s"], r["header_s"] = median(replay), median(header)
        r["mbsync_s"] = median(mbs) if mbs else None
        for key, runs in (("real", real), ("plain", plain)):
            mid = sorted(runs)[len(runs) // 2]
            r[f"{key}_s"], r[f"{key}_pss"], r[f"{key}_cpu"], r[f"{key}_dovecot_cpu"] = mid
            r[f"{key}_pss_max"] = max(x[1] for x in runs)
        # the store process's time inside SQLite in one more such sync (bench/_sqlite_time.py)
        os.sync()
        _s, _pss, out, _cpu = timed_run([sys.executable, str(ROOT / "bench" / "_sqlite_time.py"),
                                         str(kit.config("sqlite", True)), "alice"], dict(os.environ))
        r["sqlite_s"] = json.loads(out.strip().splitlines()[-1])["sqlite_s"]
        # no-change runs: the realistic store of the last round, mbsync's Maildir of the last round
        os.sync()
        time.sleep(1.5)
        nochange = [crm_sync(last_real) for _ in range(3)]
        r["nochange_s"] = median([x[0] for x in nochange])
        r["nochange_pss"] = max(x[1] for x in nochange)
        r["mbsync_nochange_s"] = median([mb.run() for _ in range(3)]) if mb else None
        step("no-change runs", clock)
        # new mail: 20 mails APPENDed to INBOX, then `crm sync` and mbsync each take them in; three times
        inc: list[float] = []
        mb_inc: list[float] = []
        for k in range(3):
            server.append("alice", "INBOX", list(generate_messages(20, seed * 1000 + 500 + k)))
            os.sync()
            inc.append(crm_sync(last_real)[0])
            if mb:
                time.sleep(1.5)
                mb_inc.append(mb.run())
        r["inc_s"] = median(inc)
        r["mbsync_inc_s"] = median(mb_inc) if mb_inc else None
        step("new-mail runs", clock)
    return r


def measure_rescan(n: int, seed: int, tmp: Path) -> dict:
    """Fresh sync, UIDVALIDITY rescan and moved-away-and-back of one n-mail folder (realistic store)."""
    r: dict = {"n": n}
    with running_dovecot() as server:
        server.drop("alice", "INBOX", generate_messages(n, seed))
        pw = server.users["alice"]
        os.environ["BENCH_IMAP_PW"] = pw
        bare.header_fetch(server.port, pw, ["INBOX"])  # warm
        bare.record_session(server.port, pw, ["INBOX"])  # warm the cache of what crm fetches
        kit = StoreKit(tmp / "stores-rescan", {"alice": {
            "type": "imap", "host": "127.0.0.1", "port": server.port, "tls": "none", "allow_plaintext": True,
            "username": "alice", "password_env": "BENCH_IMAP_PW", "folders": ["INBOX"]}}, seed)
        cfg = kit.config("rescan", True)
        os.sync()
        before = server_cpu(server)
        r["fresh_s"], r["fresh_pss"], _out, r["fresh_cpu"] = crm_sync(cfg)
        r["fresh_server_cpu"] = server_cpu(server) - before
        server.set_uidvalidity("alice", "INBOX")
        r["cold_s"], _pss, _out, r["cold_cpu"] = crm_sync(cfg)  # Dovecot reads every mail again
        server.set_uidvalidity("alice", "INBOX")
        bare.header_fetch(server.port, pw, ["INBOX"])  # warm again, as for the fresh sync
        bare.record_session(server.port, pw, ["INBOX"])
        os.sync()
        before = server_cpu(server)
        r["uidvalidity_s"], r["uidvalidity_pss"], r["uidvalidity_out"], r["uidvalidity_cpu"] = crm_sync(cfg)
        r["uidvalidity_server_cpu"] = server_cpu(server) - before
        server.doveadm("mailbox", "create", "-u", "alice", "Archive")
        server.doveadm("move", "-u", "alice", "Archive", "mailbox", "INBOX", "ALL")
        r["away_s"], _pss, r["away_out"], _cpu = crm_sync(cfg)
        server.doveadm("move", "-u", "alice", "INBOX", "mailbox", "Archive", "ALL")
        before = server_cpu(server)
        r["back_s"], r["back_pss"], r["back_out"], r["back_cpu"] = crm_sync(cfg)
        r["back_server_cpu"] = server_cpu(server) - before
    return r


def measure_folders(total: int, nfolders: int, seed: int, tmp: Path, rounds: int) -> dict:
    """The same ``total`` mails in one folder and spread over ``nfolders``: a first sync of each into the
    realistic store, and its own request replayed bare, interleaved round by round."""
    mails = list(generate_messages(total, seed))
    names = ["INBOX"] + [f"Kunde{i:02d}" for i in range(1, nfolders)]
    r: dict = {"total": total, "folders": nfolders}
    with running_dovecot() as flat, running_dovecot() as spread:
        flat.drop("alice", "INBOX", mails)
        for i, name in enumerate(names):
            spread.drop("alice", name, mails[i::nfolders])
        setups = {}
        for key, server, folders in (("one", flat, ["INBOX"]), ("many", spread, names)):
            pw = server.users["alice"]
            os.environ["BENCH_IMAP_PW"] = pw
            bare.header_fetch(server.port, pw, folders)  # warm
            bare.record_session(server.port, pw, folders)
            kit = StoreKit(tmp / f"stores-folders-{key}", {"alice": {
                "type": "imap", "host": "127.0.0.1", "port": server.port, "tls": "none", "allow_plaintext": True,
                "username": "alice", "password_env": "BENCH_IMAP_PW", "folders": folders}}, seed)
            kit.config("warm", True)
            session, _got = bare.record_session(server.port, pw, folders, realistic_view(kit))
            setups[key] = (server, pw, kit, session)
        runs: dict[str, list] = {"one": [], "many": [], "one_bare": [], "many_bare": []}
        for k in range(rounds):
            for key, (server, pw, kit, session) in setups.items():
                os.sync()
                runs[key + "_bare"].append(bare.replay(server.port, session)[0])
                os.environ["BENCH_IMAP_PW"] = pw
                cfg = kit.config(f"run{k}", True)
                os.sync()
                seconds, pss, out, cpu = crm_sync(cfg)
                runs[key].append((seconds, cpu, pss))
                r[key + "_out"] = out.strip().splitlines()[0]
    for key in ("one", "many"):
        r[key + "_s"], r[key + "_cpu"], r[key + "_pss"] = sorted(runs[key])[len(runs[key]) // 2]
        r[key + "_bare_s"] = median(runs[key + "_bare"])
    return r


def fmt_ms(seconds: float | None, mails: int) -> str:
    return "-" if seconds is None else f"{seconds * 1000 / mails:.3f}"


def report(sizes: list[dict], rescan: dict | None, rounds: int, folders: dict | None = None) -> list[str]:
    L: list[str] = []
    main = next((s for s in sizes if s["total"] == 22_000), sizes[len(sizes) // 2])
    first, last = sizes[0], sizes[-1]
    L.append(f"Dovecot {main['dovecot']} (Maildir, loopback, no TLS), generated mail (bench/mailgen.py), INBOX + Sent "
             "at 10:1. Index and cache warmed by one untimed pass of every reader. Medians of "
             f"{rounds} interleaved rounds (one round at 100,000). mbsync runs with **`FSync no`**; its no-change "
             "runs start after a 1.5 s pause.")
    L.append("")
    store = main.get("store", {})
    L.append("Realistic store (bench/realistic.py): 300 customers (their domains match about 70 % of the mail), "
             "2,000 contacts from an address book synced before the clock starts, a blocklist of 40 addresses and "
             "one domain, two internal domains; ~30 % of the mail are replies, so threads form. After the "
             f"{main['total']:,}-mail sync: " + ", ".join(f"{v:,} {k}" for k, v in store.items()) + ".")
    L.append("")
    L.append(f"### First sync of INBOX + Sent, {main['total']:,} mails")
    L.append("")
    L.append("| measurement | time | mails/s | crm (realistic) takes |")
    L.append("|---|---:|---:|---:|")
    t = main["total"]
    real = main["real_s"]

    def row(name: str, seconds: float | None, bold: bool = False) -> None:
        if seconds is None:
            L.append(f"| {name} | not run | | |")
            return
        b = "**" if bold else ""
        ratio = "1.00" if seconds == real else f"{real / seconds:.2f}x"
        L.append(f"| {b}{name}{b} | {b}{seconds:.2f} s{b} | {t / seconds:,.0f} | {ratio} |")

    row(f"(a) crm's own request into the realistic store, bare: its bytes replayed ({main['replay_bytes'] / 1e6:.0f} MB back)",
        main["replay_s"])
    row("(b) header-only `UID FETCH 1:* (UID FLAGS BODY.PEEK[HEADER])`, both folders", main["header_s"])
    row("(c) `mbsync` initial pull, `FSync no`", main["mbsync_s"])
    row("(d) `crm sync`, realistic store", real, bold=True)
    row("(e) `crm sync`, no customers (the old benchmark)", main["plain_s"])
    L.append("")
    L.append(f"CPU of the median (d): {main['real_cpu']:.2f} s in `crm sync` and its reader process, "
             f"{main['real_dovecot_cpu']:.2f} s in Dovecot ({os.cpu_count()} cores). Peak PSS: realistic "
             f"{main['real_pss_max']} MB, no customers {main['plain_pss_max']} MB.")
    if main.get("sqlite_s"):
        L.append("")
        L.append(f"The floor under (d): in one more such sync the store process spent **{main['sqlite_s']:.2f} s inside "
                 f"SQLite** (bench/_sqlite_time.py: every execute timed, its rows fetched; writing the rows, indexes "
                 f"and full-text index the store keeps, and committing them), {main['sqlite_s'] / main['replay_s']:.2f}x "
                 f"(a) by itself, against the {2 * main['replay_s']:.2f} s that \"2x crm's own request bare\" leaves "
                 "for reading, parsing, linking and storing together.")
    L.append("")
    L.append("What `crm sync` asks the server for in a first sync into the realistic store (the request replayed "
             "in (a); no text for skipped mail nor for mail kept as metadata only, known from the header):")
    L.append("")
    L.extend(bare.shapes_markdown(main["shapes"]))
    L.append("")
    L.append("### Cost per mail as the mailbox grows")
    L.append("")
    head = " | ".join(f"{s['total']:,}" for s in sizes)
    L.append(f"| ms per mail | {head} | {last['total']:,} / {first['total']:,} |")
    L.append("|---|" + "---:|" * (len(sizes) + 1))

    def grow(name: str, key: str, bold: bool = False) -> None:
        vals = [s.get(key) for s in sizes]
        cells = [fmt_ms(v, s["total"]) for v, s in zip(vals, sizes)]
        if vals[0] and vals[-1]:
            g = (vals[-1] / last["total"]) / (vals[0] / first["total"])
            growth = f"{g:.2f}x"
        else:
            growth = "-"
        b = "**" if bold else ""
        L.append(f"| {b}{name}{b} | " + " | ".join(cells) + f" | {b}{growth}{b} |")

    grow("(a) crm's own request, bare", "replay_s")
    grow("(b) header-only fetch", "header_s")
    grow("(c) mbsync initial, `FSync no`", "mbsync_s")
    grow("(d) `crm sync`, realistic store", "real_s", bold=True)
    grow("(e) `crm sync`, no customers", "plain_s")
    grow("(f) the store's time inside SQLite in a sync as (d)", "sqlite_s")
    L.append("| (d) / (c): crm vs mbsync | " + " | ".join(
        f"{s['real_s'] / s['mbsync_s']:.2f}x" if s.get("mbsync_s") else "-" for s in sizes) + " | |")
    L.append("| (d) / (a): crm vs its own request bare | " + " | ".join(
        f"{s['real_s'] / s['replay_s']:.2f}x" for s in sizes) + " | |")
    L.append("| peak PSS of (d), MB | " + " | ".join(f"{s['real_pss_max']}" for s in sizes) + " | |")
    L.append("| peak PSS of (e), MB | " + " | ".join(f"{s['plain_pss_max']}" for s in sizes) + " | |")
    L.append("| no-change `crm sync` (realistic), s | " + " | ".join(f"{s['nochange_s']:.3f}" for s in sizes) + " | |")
    L.append("| no-change `mbsync`, s | " + " | ".join(
        f"{s['mbsync_nochange_s']:.3f}" if s.get("mbsync_nochange_s") else "-" for s in sizes) + " | |")
    L.append("| no-change crm / mbsync | " + " | ".join(
        f"{s['nochange_s'] / s['mbsync_nochange_s']:.2f}x" if s.get("mbsync_nochange_s") else "-"
        for s in sizes) + " | |")
    if all("inc_s" in s for s in sizes):
        L.append("| 20 new mails APPENDed to INBOX: `crm sync` (realistic), s | " + " | ".join(
            f"{s['inc_s']:.3f}" for s in sizes) + " | |")
        L.append("| ... `mbsync`, s | " + " | ".join(
            f"{s['mbsync_inc_s']:.3f}" if s.get("mbsync_inc_s") else "-" for s in sizes) + " | |")
        L.append("| new mail crm / mbsync | " + " | ".join(
            f"{s['inc_s'] / s['mbsync_inc_s']:.2f}x" if s.get("mbsync_inc_s") else "-" for s in sizes) + " | |")
    L.append("")
    if rescan:
        n, fresh = rescan["n"], rescan["fresh_s"]
        L.append(f"### Rescans of a {n:,}-mail INBOX (realistic store)")
        L.append("")
        L.append("| sync | time | vs the fresh sync | CPU of `crm sync` | CPU of Dovecot | peak PSS |")
        L.append("|---|---:|---:|---:|---:|---:|")

        def cpu(key: str) -> str:
            return f"{rescan[key + '_cpu']:.2f} s | {rescan[key + '_server_cpu']:.2f} s"

        L.append(f"| fresh sync, empty store | {fresh:.2f} s | 1.00x | {cpu('fresh')} | {rescan['fresh_pss']} MB |")
        L.append(f"| after the folder's UIDVALIDITY changed, Dovecot's cache warmed again | "
                 f"{rescan['uidvalidity_s']:.2f} s | "
                 f"{rescan['uidvalidity_s'] / fresh:.2f}x | {cpu('uidvalidity')} | {rescan['uidvalidity_pss']} MB |")
        if "cold_s" in rescan:
            L.append(f"| ... right after the change (Dovecot reads every mail again) | {rescan['cold_s']:.2f} s | "
                     f"{rescan['cold_s'] / fresh:.2f}x | {rescan['cold_cpu']:.2f} s | | |")
        L.append(f"| all mail moved to another folder (not synced) | {rescan['away_s']:.2f} s | "
                 f"{rescan['away_s'] / fresh:.2f}x | | | |")
        L.append(f"| ... and moved back: every mail under a new UID | {rescan['back_s']:.2f} s | "
                 f"{rescan['back_s'] / fresh:.2f}x | {cpu('back')} | {rescan['back_pss']} MB |")
        L.append("")
        L.append("The CPU columns tell crm's share from the server's: Dovecot's index and cache are warm for the "
                 "fresh sync, while right after `doveadm mailbox update --uid-validity` it reads and caches every mail "
                 "again (any client pays that), so that rescan's wall time against the fresh one mixes in the server's "
                 "extra work; crm's own CPU for a rescan is the figure the target is about.")
        L.append("")
        for key, what in (("uidvalidity_out", "UIDVALIDITY"), ("away_out", "moved away"), ("back_out", "moved back")):
            L.append(f"- `crm sync` after {what}: `{' / '.join(rescan[key].strip().splitlines())}`")
        L.append("")
    if folders:
        L.extend(report_folders(folders))
    at22 = main
    big = last
    targets = []
    if at22.get("mbsync_s"):
        targets.append(f"first sync of {at22['total']:,} <= 1.5x mbsync: {at22['real_s'] / at22['mbsync_s']:.2f}x")
    targets.append(f"<= 2x crm's own request bare: {at22['real_s'] / at22['replay_s']:.2f}x")
    if len(sizes) > 1:
        g = (big["real_s"] / big["total"]) / (first["real_s"] / first["total"])
        targets.append(f"cost per mail at {big['total']:,} <= 1.2x at {first['total']:,}: {g:.2f}x")
    if big.get("mbsync_nochange_s"):
        targets.append(f"no-change at {big['total']:,} <= 0.8x mbsync: {big['nochange_s'] / big['mbsync_nochange_s']:.2f}x")
    targets.append(f"peak PSS < 150 MB and flat: {', '.join(str(s['real_pss_max']) for s in sizes)} MB")
    if rescan:
        targets.append(f"UIDVALIDITY rescan / moved back <= 1x the fresh sync: "
                       f"{rescan['uidvalidity_s'] / rescan['fresh_s']:.2f}x / {rescan['back_s'] / rescan['fresh_s']:.2f}x "
                       f"wall, {rescan['uidvalidity_cpu'] / rescan['fresh_cpu']:.2f}x / "
                       f"{rescan['back_cpu'] / rescan['fresh_cpu']:.2f}x in crm's CPU")
    if folders:
        targets.append(f"{folders['folders']} folders as fast as one: {folders['many_s'] / folders['one_s']:.2f}x")
    L.append("Targets (issue 9): " + "; ".join(targets) + ".")
    return L


def report_folders(f: dict) -> list[str]:
    """The many-folders comparison (a section of its own)."""
    n, one = f["total"], f["one_s"]
    L = [f"### The same {n:,} mails in one folder and in {f['folders']} (first sync, realistic store)", "",
         "| mailbox | `crm sync` | vs one folder | its own request, bare | crm / bare | CPU of `crm sync` | peak PSS |",
         "|---|---:|---:|---:|---:|---:|---:|"]
    for key, what in (("one", "INBOX alone"), ("many", f"{f['folders']} folders, {n // f['folders']:,} mails each")):
        L.append(f"| {what} | {f[key + '_s']:.2f} s | {f[key + '_s'] / one:.2f}x | {f[key + '_bare_s']:.2f} s | "
                 f"{f[key + '_s'] / f[key + '_bare_s']:.2f}x | {f[key + '_cpu']:.2f} s | {f[key + '_pss']} MB |")
    L.append("")
    L.append(f"- `crm sync`, one folder: `{f['one_out']}`; {f['folders']} folders: `{f['many_out']}`")
    L.append("")
    return L


def main() -> int:
    like_an_installation()
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="10000,22000,100000", help="mails in INBOX + Sent, comma-separated")
    ap.add_argument("--rounds", type=int, default=3, help="rounds per size (sizes over 50,000: one)")
    ap.add_argument("--rescan", type=int, default=20_000, help="mails in the folder of the rescan tests (0: skip)")
    ap.add_argument("--folders", type=int, default=22_000,
                    help="mails of the one-folder / 50-folder comparison (0: skip)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="sizes 1,000 / 2,200 / 5,000, one round, rescan of 2,000")
    ap.add_argument("--no-write", action="store_true", help="do not touch bench/RESULTS.md")
    args = ap.parse_args()
    if args.quick:
        args.sizes, args.rounds, args.rescan, args.folders = "1000,2200,5000", 1, 2000, 2500
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    have_mbsync = shutil.which("mbsync") is not None
    if not have_mbsync:
        print("mbsync not found (apt-get install isync): its rows stay empty", file=sys.stderr)
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-imap-") as tmpdir:
        tmp = Path(tmpdir)
        for total in sizes:
            t = time.perf_counter()
            res = measure_size(total, args.rounds if total <= 50_000 else 1, args.seed, tmp, have_mbsync)
            results.append(res)
            print(f"{total:,} mails: crm realistic {res['real_s']:.2f} s, no customers {res['plain_s']:.2f} s, "
                  f"bare request {res['replay_s']:.2f} s, header-only {res['header_s']:.2f} s, "
                  f"mbsync {res['mbsync_s'] or 0:.2f} s ({time.perf_counter() - t:.0f} s for this size)",
                  file=sys.stderr, flush=True)
        rescan = measure_rescan(args.rescan, args.seed, tmp) if args.rescan else None
        folders = measure_folders(args.folders, 50, args.seed, tmp, args.rounds) if args.folders else None
    lines = report(results, rescan, args.rounds, folders)
    text = "\n".join(lines)
    print(text)
    if not args.no_write:
        cmd = "python bench/bench_imap.py" + (" --quick" if args.quick else f" --sizes {args.sizes}")
        write_section("imap", f"## IMAP (bench/bench_imap.py)\n\n`{cmd}`\n\n" + text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
