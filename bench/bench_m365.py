"""Microsoft 365 (Graph) import against the Graph emulator: `crm sync` of an N-mail mailbox.

The emulator (tests/graph_emulator) runs as its own process on loopback (HTTPS, its own CA).
Measured in one run, against the same emulator:
  (a) a bare loop of the delta requests the connector sends (same $select/$expand, same
      page size, plain niquests, the JSON parsed and counted): the server's and the network's share;
  (b) the whole `crm sync` process into a fresh store (every sender a customer, so every mail is
      stored and linked): mails/s, ratio to (a), peak memory;
  (c) a no-change rerun of `crm sync` (one delta request per folder);
  (d) beside it, the no-change `crm sync` of an IMAP source of the same size (a local Dovecot
      loaded as bench/bench_imap.py does: the same number of mails in INBOX and Sent), runs
      interleaved, and where the m365 run's time goes (imports, requests by kind).

Usage: python bench/bench_m365.py [--mails 20000] [--runs 3] [--no-imap] [--no-write]
Writes the section "m365" of bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import resource
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO.parent))
sys.path.insert(1, str(REPO))  # bench.bench_imap and tests.imap_server, for the IMAP side

from crm_bridge.bench._results import TreeMemory, like_an_installation, write_section  # noqa: E402

CLIENT, SECRET, MAILBOX = "00000000-0000-0000-0000-0000000c7e57", "secret", "anna@firma.example"
PAGE = 100


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_emulator(n: int) -> tuple[subprocess.Popen, dict[str, str]]:
    proc = subprocess.Popen([sys.executable, "-m", "tests.graph_emulator", "--port", str(free_port()), "--mailbox",
                             MAILBOX, "--mails", str(n), "--events", "0", "--contacts", "0", "--client-id", CLIENT,
                             "--client-secret", SECRET], cwd=REPO, stdout=subprocess.PIPE, text=True)
    info = {}
    for _ in range(4):
        key, _, value = proc.stdout.readline().partition(":")  # type: ignore[union-attr]
        info[key.strip()] = value.strip().split()[0] if value.strip() else ""
    if "Graph" not in info:
        raise SystemExit(f"the emulator did not start: {info}")
    return proc, info


def bare_loop(info: dict[str, str]) -> tuple[float, int, int]:
    """(seconds, items, requests) of the delta loop over Inbox and Sent Items with plain niquests."""
    import niquests

    from crm_bridge.connectors.graphitems import MAIL_EXPAND, MAIL_SELECT

    session = niquests.Session()
    verify = info["CA file"]
    token = session.post(f"{info['Authority']}/oauth2/v2.0/token", verify=verify, data={
        "grant_type": "client_credentials", "client_id": CLIENT, "client_secret": SECRET,
        "scope": "https://graph.microsoft.com/.default"}).json()["access_token"]
    headers = {"Authorization": f"Bearer {token}", "Prefer": f'IdType="ImmutableId", odata.maxpagesize={PAGE}'}
    started, items, calls = time.perf_counter(), 0, 0
    for folder in ("inbox", "sentitems"):
        fid = session.get(f"{info['Graph']}/users/{quote(MAILBOX)}/mailFolders/{folder}", verify=verify,
                          headers=headers).json()["id"]
        url: str | None = (f"{info['Graph']}/users/{quote(MAILBOX)}/mailFolders/{fid}/messages/delta"
                           f"?$select={MAIL_SELECT}&$expand={quote(MAIL_EXPAND)}")
        while url:
            page = session.get(url, verify=verify, headers=headers).json()
            calls += 1
            items += len(page["value"])
            url = page.get("@odata.nextLink")
    return time.perf_counter() - started, items, calls


def write_config(path: Path, info: dict[str, str]) -> None:
    domains = ", ".join(f'"kunde{i}.example"' for i in range(7))
    path.write_text(f"""[store]
path = "crm.db"

[company]
internal_domains = ["firma.example"]

[[customers]]
name = "Kunden"
domains = [{domains}]

[sources.anna]
type = "m365"
tenant = "firma.onmicrosoft.com"
client_id = "{CLIENT}"
client_secret_env = "CRM_BENCH_M365_SECRET"
authority = "{info['Authority']}"
graph_url = "{info['Graph']}"
ca_file = "{info['CA file']}"
mailbox = "{MAILBOX}"
owner = ["{MAILBOX}"]
calendar = false
contacts = false
page_size = {PAGE}
""")


IMAP_SOURCE = """
[sources.alice]
type = "imap"
host = "127.0.0.1"
port = {port}
tls = "none"
allow_plaintext = true
username = "alice"
password_env = "BENCH_IMAP_PW"
folders = ["INBOX", "\\\\Sent"]
owner = ["alice@nordlicht.example"]
"""

BREAKDOWN = r"""
import sys, time
started = time.perf_counter()
import niquests
calls = []
original = niquests.Session.request
def request(self, method, url, *a, **kw):
    t = time.perf_counter()
    try:
        return original(self, method, url, *a, **kw)
    finally:
        kind = ("discovery" if "well-known" in url else "token" if "/oauth2/" in url
                else "delta" if "/delta" in url else "other Graph")
        calls.append((kind, time.perf_counter() - t))
niquests.Session.request = request
from crm_bridge import cli
try:
    cli.main(["--config", sys.argv[1], "sync"], standalone_mode=False)
except SystemExit:
    pass
total = time.perf_counter() - started
kinds = {}
for kind, seconds in calls:
    n, t = kinds.get(kind, (0, 0.0))
    kinds[kind] = (n + 1, t + seconds)
print(repr({"total": total, "msal": "msal" in sys.modules, "kinds": kinds}))
"""


def import_cost(module: str, runs: int = 5) -> float:
    """Seconds a fresh interpreter needs for ``import module`` beyond starting."""
    def run(code: str) -> float:
        t = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO.parent)
        return time.perf_counter() - t
    return statistics.median(run(f"import {module}") for _ in range(runs)) - statistics.median(
        run("pass") for _ in range(runs))


def breakdown(config: Path) -> dict:
    # in one process (no reader process), so that the patched niquests counts the requests
    env = dict(os.environ, CRM_BENCH_M365_SECRET=SECRET, CRM_PARALLEL_PULL="0")
    out = subprocess.run([sys.executable, "-c", BREAKDOWN, str(config)], cwd=REPO.parent, env=env, check=True,
                         capture_output=True, text=True).stdout.strip().splitlines()[-1]
    import ast

    return ast.literal_eval(out)


def imap_nochange(n: int, runs: int, folder: Path, m365_config: Path) -> dict:
    """No-change runs of an IMAP source of n mails and of the m365 source, interleaved."""
    from bench.bench_imap import crm_sync, load
    from tests.imap_server import running_dovecot

    r: dict = {}
    with running_dovecot() as server:
        r["inbox"], r["sent"] = load(server, n, 1)
        os.environ["BENCH_IMAP_PW"] = server.users["alice"]
        imap = folder / "imap"
        imap.mkdir(parents=True, exist_ok=True)
        for f in imap.glob("crm.db*"):
            f.unlink()
        text = (folder / "crm.toml").read_text().split("[sources.anna]")[0]
        (imap / "crm.toml").write_text(text + IMAP_SOURCE.format(port=server.port))
        crm_sync(imap / "crm.toml")  # the first sync, untimed
        crm_sync(imap / "crm.toml")  # warm
        m365, imap_s = [], []
        for _ in range(max(runs, 5)):  # interleaved: the machine's other load hits both alike
            m365.append(crm_run(m365_config)[0])
            imap_s.append(crm_sync(imap / "crm.toml")[0])
        r["m365_s"], r["imap_s"] = statistics.median(m365), statistics.median(imap_s)
    return r


def crm_run(config: Path, package: Path | None = None) -> tuple[float, int, float]:
    """(seconds, peak MB, CPU seconds of the process and its reader) of one `crm sync`; ``package``: a
    directory holding another crm_bridge to run instead (--before)."""
    env = dict(os.environ, CRM_BENCH_M365_SECRET=SECRET)
    if package is not None:
        env["PYTHONPATH"] = str(package)
    cpu = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "crm_bridge.cli", "--config", str(config), "sync"], cwd=REPO.parent,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    memory = TreeMemory(proc.pid)
    _out, err = proc.communicate()
    peak_mb, _ = memory.stop()
    seconds = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"crm sync failed ({proc.returncode}): {err.decode()[-2000:]}")
    return seconds, peak_mb, after.ru_utime + after.ru_stime - cpu.ru_utime - cpu.ru_stime


def _own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def before_after(config: Path, before: Path, runs: int, info: dict[str, str]) -> dict:
    """First syncs into a fresh store by the ``before`` package and by this one, alternately, beside bare loops."""
    out: dict = {"before": [], "after": [], "bare": []}
    for _ in range(runs):
        for key, package in (("before", before), ("after", None)):
            for f in config.parent.glob("crm.db*"):
                f.unlink()
            out[key].append(crm_run(config, package))
        out["bare"].append(bare_loop(info)[0])
    return out


def main() -> None:
    like_an_installation()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mails", type=int, default=20000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--work", type=Path, default=HERE / "work")
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--no-imap", action="store_true", help="leave out the IMAP comparison (d)")
    parser.add_argument("--before", type=Path, metavar="DIR", help="a directory holding an earlier crm_bridge "
                        "(git archive of a commit): its first sync and this one's, alternately, --runs times each")
    args = parser.parse_args()
    proc, info = start_emulator(args.mails)
    try:
        bare, first, peaks, again, cpus = [], [], [], [], []
        folder = args.work / f"m365-{args.mails}"
        folder.mkdir(parents=True, exist_ok=True)
        write_config(folder / "crm.toml", info)
        bare_loop(info)  # warm: niquests imported, the token fetched once, as crm's cache has it
        for _ in range(args.runs):  # (a) and (b) alternately: the machine's other load hits both alike
            cpu = _own_cpu()
            bare.append(bare_loop(info) + (_own_cpu() - cpu,))
            for f in folder.glob("crm.db*"):
                f.unlink()
            seconds, peak, cpu = crm_run(folder / "crm.toml")
            first.append(seconds)
            peaks.append(peak)
            cpus.append(cpu)
            again.append(crm_run(folder / "crm.toml")[0])
        versus = before_after(folder / "crm.toml", args.before, max(args.runs, 5), info) if args.before else None
        compare = None if args.no_imap else imap_nochange(args.mails, args.runs, folder, folder / "crm.toml")
        parts = breakdown(folder / "crm.toml")
        imports = {m: import_cost(m) for m in ("niquests", "msal", "crm_bridge.cli")}
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    bare_s, items, calls = statistics.median(b[0] for b in bare), bare[0][1], bare[0][2]
    bare_cpu_s, sync_cpu = statistics.median(b[3] for b in bare), statistics.median(cpus)
    sync_s, again_s = statistics.median(first), statistics.median(again)
    ratios = sorted(f / b[0] for f, b in zip(first, bare))
    body = "\n".join([
        "## Microsoft 365 / Graph (bench/bench_m365.py)",
        "",
        f"`python bench/bench_m365.py --mails {args.mails} --runs {args.runs}`: the Graph emulator "
        "(tests/graph_emulator, its own process, HTTPS on loopback) with generated mail in Inbox and Sent "
        f"Items, every sender's domain a customer; delta pages of {PAGE}; medians of {args.runs} runs.",
        "",
        "| mails | (a) bare delta loop | CPU of (a) | (b) `crm sync`, fresh store | CPU of (b) | mails/s | (b)/(a) "
        "| (c) no-change rerun | peak memory of (b) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        f"| {items:,} | {bare_s:.2f} s ({calls} requests) | {bare_cpu_s:.2f} s | **{sync_s:.2f} s** "
        f"| {sync_cpu:.2f} s | {items / sync_s:,.0f} | **{sync_s / bare_s:.2f}x** | {again_s:.3f} s | {max(peaks)} MB |",
        "",
        f"(a) and (b) ran alternately; (b)/(a) of each pair: {', '.join(f'{r:.2f}x' for r in ratios)}.  "
        + ("Within the target of 1.5x." if sync_s / bare_s <= 1.5 else "Over the target of 1.5x."),
        "",
        "(a) sends the connector's delta requests (same `$select`, `$expand`, page size) with plain niquests and "
        "only parses and counts the JSON.  (b) is the whole `python -m crm_bridge.cli sync` process: MSAL "
        "(authority discovery, token), the connector, the store.  (c) is one delta request per folder.  The "
        f"emulator is a Python server ({bare_s / calls * 1000:.0f} ms a page of {PAGE} in (a)); since it sets "
        "TCP_NODELAY (before, Nagle's algorithm against the client's delayed ACK held every answer ~40 ms, which "
        "made (a) as slow as (b) and the ratio look like 0.94x), (b)/(a) shows what the client side costs: "
        "the process start, MSAL, parsing every item into records, linking and storing.",
    ])
    if versus is not None:
        b_s = statistics.median(r[0] for r in versus["before"])
        a_s = statistics.median(r[0] for r in versus["after"])
        b_c = statistics.median(r[2] for r in versus["before"])
        a_c = statistics.median(r[2] for r in versus["after"])
        v_bare = statistics.median(versus["bare"])
        body += "\n".join([
            "",
            "",
            f"**First sync, before and after** (`--before`: {args.before.name}, run alternately with this one and "
            f"a bare loop against one emulator, {args.mails:,} mails, medians of {len(versus['bare'])}): bare loop "
            f"{v_bare:.2f} s; before {b_s:.2f} s ({b_s / v_bare:.2f}x, CPU {b_c:.2f} s); after **{a_s:.2f} s "
            f"({a_s / v_bare:.2f}x, CPU {a_c:.2f} s)**.",
        ])
    body += "\n".join([
        "",
        "",
        "What the client side spent its time on, and what changed (measured on this machine): per request the "
        "connector costs what (a) costs (niquests ~1.8 ms of CPU, `json.loads` 0.2 ms a page of 100, ~72 kB).  "
        "Reading a message's JSON into its MailRecord now takes one pass (connectors/graphitems.py `mail_of`, "
        "held to the EWS rules by tests/test_m365_items.py) instead of the attribute shim plus "
        "`ewsitems.mail_record` (0.74 ms a page of 100 instead of 1.06 ms).  The read-ahead is one thread per "
        "folder fed link by link instead of a thread per page, and `ask` waits until the thread has taken the "
        "link, so the request leaves at once instead of when the reading thread next gives up the GIL.  The JSON "
        "is decoded with `json.loads` from the bytes; niquests did not guess the charset before either (Graph's "
        "and now the emulator's `Content-Type`, `application/json;odata.metadata=minimal;odata.streaming=true;"
        "IEEE754Compatible=false;charset=utf-8`, names UTF-8, and niquests takes UTF-8 for JSON without it).  "
        "Tried and dropped: the pull in the engine's reader process (`pull_in_reader`), so that reading and "
        "storing take a core each: pickling a page of records costs only ~0.3 ms, but on this shared machine it "
        "came out slower, 2.70 s against 2.60 s (medians of 12 alternating pairs), with or without a read-ahead "
        "thread in the reader.  Larger pages were not made the default: Microsoft's message delta documentation "
        "gives no upper bound for `odata.maxpagesize` (its default is 10; `page_size` stays configurable, "
        "default 100).  What is left is mostly the store (about 1.25 s of CPU for 20,000 mails, crm_core, "
        "being cut separately) and the process start; the CPU of (b) against (a) above says the same.  (b)/(a) "
        "moves with the machine's load: runs of this script half an hour apart on 2026-11-29 gave 2.28x and "
        "1.70x for nearly the same code, and the 3.24x recorded before this work was taken under heavier load "
        "(that commit, 1a01c0c, measured 1.5-2.0x beside this one in the same runs).  Honestly: between "
        "1a01c0c and this one the difference is within the machine's noise (the before/after line; 8 "
        "alternating pairs gave this one the faster run in 6, by a median 0.08 s); the cuts above are real "
        "but small against the store's share.",
    ])
    kinds = parts["kinds"]
    spent = ", ".join(f"{kind} {n} x ({t * 1000:.0f} ms)" for kind, (n, t) in sorted(kinds.items())) or "none"
    body += "\n".join([
        "",
        "",
        "**No-change run beside IMAP** (the issue's target: at most 1.2x the IMAP source's no-change run of the "
        "same size).",
        "",
        "",
    ])
    if compare is not None:
        ratio = compare["m365_s"] / compare["imap_s"]
        body += "\n".join([
            "| mails | m365 no-change `crm sync` | IMAP no-change `crm sync` (Dovecot) | m365 / IMAP |",
            "|---:|---:|---:|---:|",
            f"| {items:,} m365, {compare['inbox'] + compare['sent']:,} IMAP | **{compare['m365_s']:.3f} s** "
            f"| {compare['imap_s']:.3f} s | **{ratio:.2f}x** |",
            "",
            f"Medians of {max(args.runs, 5)} runs each, interleaved; the IMAP source is a local Dovecot loaded as "
            "bench/bench_imap.py loads it (INBOX and Sent, 10:1), synced once before.  "
            + ("Within the target." if ratio <= 1.2 else "Over the target."),
            "",
            "",
        ])
    body += "\n".join([
        f"Where a no-change m365 run goes (one in-process run, {parts['total'] * 1000:.0f} ms in all): requests "
        f"{spent}; MSAL imported: {'yes' if parts['msal'] else 'no'}.  Import costs in a fresh interpreter: "
        + ", ".join(f"`{m}` {t * 1000:.0f} ms" for m, t in imports.items()) + ".  The access token and MSAL's "
        "discovery metadata come from the owner-only token cache next to the store, so a run within the token's "
        "hour asks the sign-in service nothing and, with the token still valid, does not load MSAL at all.  "
        "What is left beyond the IMAP run is the HTTP client: niquests' import, and on the first request its "
        "lazy set-up (h11, the CA bundle) and the TLS handshake, which the IMAP source (plaintext on loopback "
        "here, imapclient) does not pay.",
    ])
    print(body)
    if not args.no_write:
        write_section("m365", body)


if __name__ == "__main__":
    main()
