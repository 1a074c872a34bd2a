"""Exchange (EWS) import against the EWS emulator: `crm sync` of an N-mail Inbox.

The emulator (tests/ews_emulator) runs as its own process on loopback.
Measured in one run, against the same emulator:
  (a) a bare loop of the SyncFolderItems requests the connector sends (the
      same SOAP bodies, built by exchangelib once), posted with plain
      `requests` until IncludesLastItemInRange: what the server and the
      network cost, the floor of any EWS client;
  (b) the whole `crm sync` process into a fresh store: mails/s, ratio to (a),
      peak memory (summed PSS, bench/_results.TreeMemory);
  (c) a no-change rerun of `crm sync` (one SyncFolderItems per folder, without
      exchangelib: connectors/ewsprobe.py);
  (d) beside (c), interleaved: a no-change `crm sync` of an IMAP source
      (Dovecot on loopback, tests/imap_server.py) whose INBOX holds as many
      generated mails (bench/mailgen.py), into its own store of the same
      kind.
Each size in --sizes gets its own emulator, so peak memory can be compared.

Usage: python bench/bench_exchange.py [--sizes 20000,100000] [--no-write]
Writes the section "exchange" of bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))

from bench._results import TreeMemory, like_an_installation, write_section  # noqa: E402

PASSWORD = "secret"
MAILBOX = "alice@example.com"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_of(pid: int) -> float:
    """CPU seconds (user + system) a running process has used so far (Linux /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def load_average() -> str:
    try:
        return " / ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def start_emulator(n_inbox: int) -> tuple[subprocess.Popen, str, float]:
    port = free_port()
    started = time.perf_counter()
    # every fifth generated mail is an answer in Sent Items: ask for enough that the Inbox holds n_inbox
    proc = subprocess.Popen([sys.executable, "-m", "tests.ews_emulator", "--port", str(port), "--mailbox", MAILBOX,
                             "--mails", str(n_inbox * 5 // 4), "--events", "0", "--contacts", "0",
                             "--password", PASSWORD], cwd=REPO, stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()  # type: ignore[union-attr]
    if "EWS:" not in line:
        raise SystemExit(f"the emulator did not start: {line!r}")
    return proc, line.split()[-1], time.perf_counter() - started


def options(url: str) -> dict:
    return {"type": "exchange", "server": url, "allow_plaintext": True, "username": "svc-crm",
            "password_env": "CRM_BENCH_EWS_PW", "auth": "basic", "mailbox": MAILBOX, "access": "impersonation",
            "owner": [MAILBOX], "folders": ["inbox"], "calendar": False, "contacts": False, "page_size": 512}


def bare_loop(url: str) -> tuple[float, int, int]:
    """(seconds, changes, requests) of the SyncFolderItems loop over plain HTTP."""
    import requests

    from crm_bridge.connectors.base import make_connector

    conn = make_connector("bench", options(url))
    account = conn._connect()
    folder = conn._distinguished(account, "inbox")
    fields = conn._fields(folder, "mail")
    from exchangelib.services import SyncFolderItems

    svc = SyncFolderItems(account=account)

    def body(state: str | None) -> bytes:
        payload = svc.get_payload(folder=folder, shape="IdOnly", additional_fields=fields, sync_state=state,
                                  ignore=None, max_changes_returned=512, sync_scope=None)
        return svc.wrap(content=payload, api_version=account.version.api_version)

    state_re = re.compile(rb"<m:SyncState>([^<]*)</m:SyncState>")
    session = requests.Session()
    session.auth = ("svc-crm", PASSWORD)
    headers = {"Content-Type": "text/xml; charset=utf-8"}
    started = time.perf_counter()
    state, changes, calls = None, 0, 0
    while True:
        resp = session.post(url, data=body(state), headers=headers)
        calls += 1
        content = resp.content
        changes += content.count(b"<t:Create>")
        found = state_re.search(content)
        state = found.group(1).decode() if found else None
        if b"<m:IncludesLastItemInRange>true<" in content:
            break
    elapsed = time.perf_counter() - started
    conn.close()
    return elapsed, changes, calls


LAST_CPU: list[float] = []  # CPU seconds (user + system) of each crm_run, in order


def crm_run(config: Path, env: dict) -> tuple[float, int, str]:
    import resource

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "crm_bridge.cli", "--config", str(config), "sync", "--json"], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    memory = TreeMemory(proc.pid)
    out, err = proc.communicate()
    peak_mb, _ = memory.stop()
    elapsed = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    LAST_CPU.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    if proc.returncode != 0:
        raise SystemExit(f"crm sync failed ({proc.returncode}): {err.decode()[-2000:]}")
    return elapsed, peak_mb, out.decode()


def write_config(path: Path, url: str) -> None:
    lines = ['[store]\npath = "crm.db"\n', '[company]\ninternal_domains = ["example.com"]\n',
             '[[customers]]\nname = "Stadtwerke Lindenau GmbH"\ndomains = ["stadtwerke-lindenau.de"]\n',
             "[sources.alice]\n"]
    for key, value in options(url).items():
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, int):
            text = str(value)
        elif isinstance(value, list):
            text = "[" + ", ".join(f'"{v}"' for v in value) + "]"
        else:
            text = f'"{value}"'
        lines.append(f"{key} = {text}\n")
    path.write_text("".join(lines[:3]) + "\n" + "".join(lines[3:]))


def imap_folder(work: Path, n: int):
    """A running Dovecot whose INBOX holds ``n`` generated mails, and a synced crm config for it (a context)."""
    from bench.mailgen import generate_messages
    from tests.imap_server import running_dovecot

    @contextlib.contextmanager
    def run():
        with running_dovecot() as server:
            server.drop("alice", "INBOX", generate_messages(n, 7))
            folder = work / f"imap-{n}"
            folder.mkdir(parents=True, exist_ok=True)
            for f in folder.glob("crm.db*"):
                f.unlink()
            os.environ["CRM_BENCH_IMAP_PW"] = server.users["alice"]
            (folder / "crm.toml").write_text(
                '[store]\npath = "crm.db"\n[company]\ninternal_domains = ["example.com"]\n'
                '[[customers]]\nname = "Stadtwerke Lindenau GmbH"\ndomains = ["stadtwerke-lindenau.de"]\n\n'
                f'[sources.alice]\ntype = "imap"\nhost = "127.0.0.1"\nport = {server.port}\ntls = "none"\n'
                'allow_plaintext = true\nusername = "alice"\npassword_env = "CRM_BENCH_IMAP_PW"\n'
                'folders = ["INBOX"]\nowner = ["alice@example.com"]\n')
            crm_run(folder / "crm.toml", dict(os.environ))  # the first sync, untimed
            yield folder / "crm.toml"

    return run()


def bench_size(n: int, work: Path, runs: int, imap_max: int) -> dict:
    proc, url, load_s = start_emulator(n)
    try:
        env = dict(os.environ, CRM_BENCH_EWS_PW=PASSWORD)
        os.environ["CRM_BENCH_EWS_PW"] = PASSWORD
        bare = [bare_loop(url) for _ in range(runs)]
        loads = [load_average()]
        first, peaks, again, cpu, server_cpu = [], [], [], [], []
        for _ in range(runs):
            folder = work / f"ews-{n}"
            folder.mkdir(parents=True, exist_ok=True)
            for f in folder.glob("crm.db*"):
                f.unlink()
            write_config(folder / "crm.toml", url)
            server_before = cpu_of(proc.pid)
            seconds, peak, _out = crm_run(folder / "crm.toml", env)
            server_cpu.append(cpu_of(proc.pid) - server_before)
            first.append(seconds)
            cpu.append(LAST_CPU[-1])
            peaks.append(peak)
            again.append(crm_run(folder / "crm.toml", env)[0])
        imap_again = []
        with imap_folder(work, n) if n <= imap_max else contextlib.nullcontext() as imap_config:
            for _ in range(5 if imap_config else 0):  # interleaved: the machine's other load hits both alike
                again.append(crm_run(work / f"ews-{n}" / "crm.toml", env)[0])
                imap_again.append(crm_run(imap_config, dict(os.environ))[0])
        loads.append(load_average())
        return {"n": n, "load_s": load_s, "server_cpu_s": statistics.median(server_cpu), "loads": loads, "bare_s": statistics.median(b[0] for b in bare), "changes": bare[0][1],
                "calls": bare[0][2], "sync_s": statistics.median(first), "peak_mb": max(peaks),
                "again_s": statistics.median(again), "cpu_s": statistics.median(cpu),
                "imap_again_s": statistics.median(imap_again) if imap_again else None}
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def main() -> None:
    like_an_installation()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="20000,100000")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--work", type=Path, default=HERE / "work")
    parser.add_argument("--imap-max", type=int, default=20000, help="compare with IMAP up to this size")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    results = [bench_size(int(n), args.work, args.runs if int(n) <= 20000 else 1, args.imap_max)
               for n in args.sizes.split(",")]
    rows = ["| Inbox | (a) bare SyncFolderItems loop | (b) `crm sync`, fresh store | CPU of (b) | server CPU during (b) "
            "| mails/s | (b)/(a) | (c) no-change rerun | (d) IMAP no-change, same size | (c)/(d) | peak memory of (b) |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        imap = (f"{r['imap_again_s']:.3f} s | {r['again_s'] / r['imap_again_s']:.2f}x" if r["imap_again_s"]
                else "– | –")
        rows.append(f"| {r['n']:,} | {r['bare_s']:.2f} s ({r['calls']} requests) | **{r['sync_s']:.2f} s** "
                    f"| {r['cpu_s']:.2f} s | {r['server_cpu_s']:.2f} s | {r['n'] / r['sync_s']:,.0f} | {r['sync_s'] / r['bare_s']:.2f}x "
                    f"| {r['again_s']:.3f} s | {imap} | {r['peak_mb']} MB |")
    body = "\n".join([
        "## Exchange / EWS (bench/bench_exchange.py)",
        "",
        f"`python bench/bench_exchange.py --sizes {args.sizes}`: the EWS emulator (tests/ews_emulator, its own "
        "process, loopback, Basic auth, no TLS) with generated mail; SyncFolderItems pages of 512 changes; "
        f"medians of {args.runs} runs for 20,000 (one run for larger sizes).",
        "",
        *rows,
        "",
        "Machine load (1/5/15-minute load average at the start and end of each size; 2 cores shared with other "
        "engineers' builds and benchmarks): " + "; ".join(f"{r['n']:,}: {' -> '.join(r['loads'])}" for r in results)
        + ".",
        "",
        "(a) posts the SOAP bodies exchangelib builds for the connector with plain `requests` and only counts "
        "the answers: the server's and the network's share.  (b) is the whole `python -m crm_bridge.cli sync` process: "
        "exchangelib (auth, SOAP, errors), the connector, the store; its CPU (user + system) is the figure the "
        "machine's other load moves least.  (c) asks the server once per folder.  (d) is a no-change `crm sync` "
        "of an IMAP source (Dovecot on loopback, an INBOX of as many generated mails, a store of the same kind), "
        "run alternately with (c); IMAP only up to --imap-max mails.",
        "",
        "The first sync pipelines the pages (connectors/ewspages.py): as soon as the SyncState at the head of "
        "page k's answer is read, a thread posts the request for page k+1, takes in its answer, reads its "
        "SyncState and asks for the next page itself, up to 3 pages ahead, while the "
        "connector parses page k and the engine stores it (one request at a time, cursors still committed page "
        "by page; parsing stays in one thread: parsing threads fought the store over the GIL); mail is read from "
        "the XML in one pass over each item (connectors/ewsitems.py, XmlMessage).  So the server does not wait "
        "for crm's parsing; what is left is CPU: (b) cannot end before crm's own CPU (one core, the GIL) nor "
        "before the server's chain of answers (a), and with both processes busy on a 2-core machine that others "
        "load too, (b) comes near (CPU of (b) + server CPU) / the cores free.  crm's CPU: about 0.35 s "
        "interpreter start and imports (exchangelib alone 0.2-0.3 s), about 1.0 s the store (0.05 ms a mail, "
        "crm_core), about 0.75 s reading the pages (HTTP 0.15 s, XML parse 0.13 s, XmlMessage 0.3 s, "
        "exchangelib's response handling), about "
        "0.2 s making records.",
        "",
        "(c) loads no exchangelib: with every folder a well-known one the cursor knows, connectors/ewsprobe.py "
        "asks SyncFolderItems (IdOnly, MaxChangesReturned 1, the stored SyncState) per folder over http.client "
        "with the source's auth, TLS and impersonation; only when a folder has changes (or anything goes wrong) "
        "does exchangelib read, from the same cursor.",
    ])
    print(body)
    if not args.no_write:
        write_section("exchange", body)


if __name__ == "__main__":
    main()
