"""Microsoft 365 (Graph) import against the Graph emulator: `crm sync` of an N-mail mailbox.

The emulator (tests/graph_emulator) runs as its own process on loopback (HTTPS, its own CA).
Measured in one run, against the same emulator:
  (a) a bare loop of the delta requests the connector sends (same $select/$expand, same
      page size, plain niquests, the JSON parsed and counted): the server's and the network's share;
      (a') the same loop on the standard library (http.client, one kept-alive connection), the
      client the connector uses (connectors/graphhttp.py);
  (b) the whole `crm sync` process into a fresh store (every sender a customer, so every mail is
      stored and linked): mails/s, ratio to (a), peak memory;
  (c) a no-change rerun of `crm sync` (one delta request per folder);
  (d) beside it, the no-change `crm sync` of an IMAP source of the same size (a local Dovecot
      loaded as bench/bench_imap.py does: the same number of mails in INBOX and Sent), runs
      interleaved, and where the m365 run's time goes (imports, requests by kind); and, labelled
      apart, the same IMAP source over implicit TLS (imaps on loopback, a second Dovecot).

Usage: python bench/bench_m365.py [--mails 20000] [--runs 3] [--no-imap] [--no-imap-tls] [--no-write]
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


def bare_loop_stdlib(info: dict[str, str]) -> tuple[float, int, int]:
    """(a'): the same requests as :func:`bare_loop` with http.client over one kept-alive TLS connection."""
    import http.client
    import json
    import ssl
    from urllib.parse import urlsplit

    from crm_bridge.connectors.graphitems import MAIL_EXPAND, MAIL_SELECT

    graph = urlsplit(info["Graph"])
    conn = http.client.HTTPSConnection(graph.hostname, graph.port,
                                       context=ssl.create_default_context(cafile=info["CA file"]))

    def get(url: str, headers: dict[str, str]) -> dict:
        parts = urlsplit(url)
        conn.request("GET", parts.path + (f"?{parts.query}" if parts.query else ""), headers=headers)
        return json.loads(conn.getresponse().read())

    import niquests  # (the token only, as crm's cache has it; not timed)

    token = niquests.post(f"{info['Authority']}/oauth2/v2.0/token", verify=info["CA file"], data={
        "grant_type": "client_credentials", "client_id": CLIENT, "client_secret": SECRET,
        "scope": "https://graph.microsoft.com/.default"}).json()["access_token"]
    headers = {"Authorization": f"Bearer {token}", "Prefer": f'IdType="ImmutableId", odata.maxpagesize={PAGE}'}
    started, items, calls = time.perf_counter(), 0, 0
    for folder in ("inbox", "sentitems"):
        fid = get(f"{info['Graph']}/users/{quote(MAILBOX)}/mailFolders/{folder}", headers)["id"]
        url: str | None = (f"{info['Graph']}/users/{quote(MAILBOX)}/mailFolders/{fid}/messages/delta"
                           f"?$select={MAIL_SELECT}&$expand={quote(MAIL_EXPAND)}")
        while url:
            page = get(url, headers)
            calls += 1
            items += len(page["value"])
            url = page.get("@odata.nextLink")
    seconds = time.perf_counter() - started
    conn.close()
    return seconds, items, calls


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
from crm_bridge.connectors import graphhttp
calls = []
original = graphhttp.Session.request
def request(self, method, url, *a, **kw):
    t = time.perf_counter()
    try:
        return original(self, method, url, *a, **kw)
    finally:
        kind = ("discovery" if "well-known" in url else "token" if "/oauth2/" in url
                else "delta" if "/delta" in url else "other Graph")
        calls.append((kind, time.perf_counter() - t))
graphhttp.Session.request = request
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
print(repr({"total": total, "msal": "msal" in sys.modules, "niquests": "niquests" in sys.modules, "kinds": kinds}))
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
    # in one process (no reader process), so that the patched client counts the requests
    env = dict(os.environ, CRM_BENCH_M365_SECRET=SECRET, CRM_PARALLEL_PULL="0")
    out = subprocess.run([sys.executable, "-c", BREAKDOWN, str(config)], cwd=REPO.parent, env=env, check=True,
                         capture_output=True, text=True).stdout.strip().splitlines()[-1]
    import ast

    return ast.literal_eval(out)


IMAP_TLS_SOURCE = """
[sources.alice]
type = "imap"
host = "127.0.0.1"
port = {port}
tls = "implicit"
ca_file = "{ca}"
username = "alice"
password_env = "BENCH_IMAP_PW"
folders = ["INBOX", "\\\\Sent"]
owner = ["alice@nordlicht.example"]
"""


def imap_nochange(n: int, runs: int, folder: Path, m365_config: Path, tls: bool = False) -> dict:
    """No-change runs of an IMAP source of n mails and of the m365 source, interleaved; ``tls``: the IMAP
    source over implicit TLS (imaps) on a Dovecot with its own certificate."""
    from bench.bench_imap import crm_sync, load
    from tests.imap_server import running_dovecot

    r: dict = {}
    with running_dovecot(tls=tls) as server:
        r["inbox"], r["sent"] = load(server, n, 1)
        os.environ["BENCH_IMAP_PW"] = server.users["alice"]
        imap = folder / ("imaps" if tls else "imap")
        imap.mkdir(parents=True, exist_ok=True)
        for f in imap.glob("crm.db*"):
            f.unlink()
        text = (folder / "crm.toml").read_text().split("[sources.anna]")[0]
        source = IMAP_TLS_SOURCE.format(port=server.ssl_port, ca=server.cert) if tls else IMAP_SOURCE.format(
            port=server.port)
        (imap / "crm.toml").write_text(text + source)
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
    parser.add_argument("--no-imap-tls", action="store_true", help="leave out the IMAP-over-TLS line of (d)")
    parser.add_argument("--before", type=Path, metavar="DIR", help="a directory holding an earlier crm_bridge "
                        "(git archive of a commit): its first sync and this one's, alternately, --runs times each")
    args = parser.parse_args()
    load_before = os.getloadavg()
    proc, info = start_emulator(args.mails)
    try:
        bare, bare2, first, peaks, again, cpus, loads = [], [], [], [], [], [], []
        folder = args.work / f"m365-{args.mails}"
        folder.mkdir(parents=True, exist_ok=True)
        write_config(folder / "crm.toml", info)
        bare_loop(info)  # warm: niquests imported, the token fetched once, as crm's cache has it
        bare_loop_stdlib(info)
        for _ in range(args.runs):  # (a), (a') and (b) alternately: the machine's other load hits them alike
            cpu = _own_cpu()
            bare.append(bare_loop(info) + (_own_cpu() - cpu,))
            cpu = _own_cpu()
            bare2.append(bare_loop_stdlib(info) + (_own_cpu() - cpu,))
            for f in folder.glob("crm.db*"):
                f.unlink()
            seconds, peak, cpu = crm_run(folder / "crm.toml")
            first.append(seconds)
            peaks.append(peak)
            cpus.append(cpu)
            again.append(crm_run(folder / "crm.toml")[0])
            loads.append(os.getloadavg()[0])
        versus = before_after(folder / "crm.toml", args.before, max(args.runs, 5), info) if args.before else None
        compare = None if args.no_imap else imap_nochange(args.mails, args.runs, folder, folder / "crm.toml")
        compare_tls = None if args.no_imap or args.no_imap_tls else imap_nochange(
            args.mails, args.runs, folder, folder / "crm.toml", tls=True)
        parts = breakdown(folder / "crm.toml")
        imports = {m: import_cost(m) for m in ("crm_bridge.connectors.graphhttp", "niquests", "msal",
                                               "crm_bridge.cli")}
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    load_after = os.getloadavg()
    bare_s, items, calls = statistics.median(b[0] for b in bare), bare[0][1], bare[0][2]
    bare2_s = statistics.median(b[0] for b in bare2)
    bare_cpu_s, bare2_cpu_s = statistics.median(b[3] for b in bare), statistics.median(b[3] for b in bare2)
    sync_cpu = statistics.median(cpus)
    sync_s, again_s = statistics.median(first), statistics.median(again)
    ratios = [f / b[0] for f, b in zip(first, bare)]
    ratios2 = [f / b[0] for f, b in zip(first, bare2)]
    body = "\n".join([
        "## Microsoft 365 / Graph (bench/bench_m365.py)",
        "",
        f"`python bench/bench_m365.py --mails {args.mails} --runs {args.runs}`: the Graph emulator "
        "(tests/graph_emulator, its own process, HTTPS on loopback) with generated mail in Inbox and Sent "
        f"Items, every sender's domain a customer; delta pages of {PAGE}; medians of {args.runs} runs.  "
        f"Machine load (1-minute load average, 2 cores, shared with other engineers' work): "
        f"{load_before[0]:.1f} before, {load_after[0]:.1f} after.",
        "",
        "| mails | (a) bare delta loop, niquests | CPU of (a) | (a') bare loop, http.client | CPU of (a') "
        "| (b) `crm sync`, fresh store | CPU of (b) | mails/s | (b)/(a) | (b)/(a') | (c) no-change rerun "
        "| peak memory of (b) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        f"| {items:,} | {bare_s:.2f} s ({calls} requests) | {bare_cpu_s:.2f} s | {bare2_s:.2f} s | {bare2_cpu_s:.2f} s "
        f"| **{sync_s:.2f} s** | {sync_cpu:.2f} s | {items / sync_s:,.0f} | **{sync_s / bare_s:.2f}x** "
        f"| {sync_s / bare2_s:.2f}x | {again_s:.3f} s | {max(peaks)} MB |",
        "",
        f"(a), (a') and (b) ran alternately; (b)/(a) of each round, in order: "
        f"{', '.join(f'{r:.2f}x' for r in ratios)}; (b)/(a'): {', '.join(f'{r:.2f}x' for r in ratios2)}; "
        f"load average after each round: {', '.join(f'{x:.1f}' for x in loads)}.  "
        + ("Within the target of 1.5x." if sync_s / bare_s <= 1.5 else "Over the target of 1.5x."),
        "",
        "(a) sends the connector's delta requests (same `$select`, `$expand`, page size) with plain niquests and "
        "only parses and counts the JSON; (a') sends the same requests with the standard library's http.client, "
        "which the connector now uses (connectors/graphhttp.py), so neither baseline is slowed by a client the "
        "connector does not pay.  (b) is the whole `python -m crm_bridge.cli sync` process: start-up, the "
        "connector, the store (the token comes from the token cache, as in any run within the token's hour).  "
        f"(c) is one delta request per folder.  The emulator is a Python server ({bare_s / calls * 1000:.0f} ms "
        f"a page of {PAGE} in (a)), so the bare loops are the server's time: (b)/(a) is what the client side "
        "adds on top of it: the process start, and whatever of parsing, linking and storing does not overlap "
        "with the server's work.",
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
        "Where the first sync's time goes, and what changed (measured on this machine, 2026-11-29 evening): "
        "the pages are fetched by one thread per folder that follows the `@odata.nextLink`s itself, up to "
        "3 pages ahead of the page being stored (connectors/m365.py `_Pages`); before, one page was asked for "
        "at a time and only when the engine took the page before: the emulator's idle time between a page's "
        "answer and the next request fell from ~0.28 s to ~0.15 s of the 20,000-mail sync (in-process timing "
        "of the 200 requests), and in 10 alternating first syncs the deeper read-ahead was faster in 7 "
        "(median 0.92x).  The HTTP client is the standard library's (connectors/graphhttp.py: a pool of "
        "kept-alive TLS connections), not niquests.  "
        f"crm's CPU for {items:,} mails is {sync_cpu:.2f} s (above); of it, measured apart: the HTTP client "
        "~0.35 ms a page (~0.07 s), `json.loads` ~0.5 ms a page of 100 (~73 kB; ~0.1 s; orjson would save "
        "~0.1 ms a page, not worth a dependency), `graphitems.mail_of` ~8 us a mail (~0.16 s); the rest is the "
        "start-up (~0.25 s) and the store and the linking (crm_core, being cut separately, ~1 s).  The page "
        "thread and the store share one interpreter (the GIL), and on 2 cores the emulator and crm compete "
        "with the machine's other load: (b) needs ~1.6 s of CPU beside the emulator's, (a) ~0.3 s, so (b)/(a) "
        "grows with the load (see the load average per round).  Tried and dropped: a shorter interpreter "
        "switch interval while pages are read (median 0.96x in 10 pairs; a process-wide setting, not worth "
        "it); before this work, the pull in the engine's reader process (`pull_in_reader`), slower on this "
        "shared machine.  Page size stays 100 by default (configurable `page_size`, 1-1000): Microsoft's "
        "message delta documentation gives no upper bound for `odata.maxpagesize`, and the emulator honours "
        "what is asked as Graph does.",
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
        lines = [
            "| mails | m365 no-change `crm sync` (HTTPS) | IMAP no-change `crm sync` (Dovecot) | m365 / IMAP |",
            "|---:|---:|---:|---:|",
            f"| {items:,} m365, {compare['inbox'] + compare['sent']:,} IMAP, IMAP without TLS (the target's "
            f"comparison) | **{compare['m365_s']:.3f} s** | {compare['imap_s']:.3f} s | **{ratio:.2f}x** |",
        ]
        if compare_tls is not None:
            lines.append(f"| the same, IMAP over implicit TLS (imaps on loopback, its own CA file; for information) "
                         f"| {compare_tls['m365_s']:.3f} s | {compare_tls['imap_s']:.3f} s "
                         f"| {compare_tls['m365_s'] / compare_tls['imap_s']:.2f}x |")
        body += "\n".join(lines + [
            "",
            f"Medians of {max(args.runs, 5)} runs each, interleaved; the IMAP source is a local Dovecot loaded as "
            "bench/bench_imap.py loads it (INBOX and Sent, 10:1), synced once before.  "
            + ("Within the target." if ratio <= 1.2 else "Over the target."),
            "",
            "",
        ])
    body += "\n".join([
        f"Where a no-change m365 run goes (one in-process run, {parts['total'] * 1000:.0f} ms in all): requests "
        f"{spent}; MSAL imported: {'yes' if parts['msal'] else 'no'}; niquests imported: "
        f"{'yes' if parts['niquests'] else 'no'}.  Import costs in a fresh interpreter: "
        + ", ".join(f"`{m}` {t * 1000:.0f} ms" for m, t in imports.items()) + ".  The access token and MSAL's "
        "discovery metadata come from the owner-only token cache next to the store, so a run within the token's "
        "hour asks the sign-in service nothing and does not load MSAL.  What changed: the HTTP client "
        "(niquests' import was ~85 ms and its lazy set-up on the first request, h11 and the system trust store "
        "through wassima, ~20 ms more; http.client + ssl ~11 ms and ~5 ms for the first request over TLS with "
        "the configured `ca_file`), and the item readers (connectors/graphitems.py, and through it ewsitems and "
        "mailparse, ~14 ms) are imported only when a page holds items.  Without `ca_file` the system's trust "
        "store is loaded (`ssl.create_default_context()`, ~16 ms here, as the IMAP source over TLS pays too).",
    ])
    print(body)
    if not args.no_write:
        write_section("m365", body)


if __name__ == "__main__":
    main()
