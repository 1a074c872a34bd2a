"""Maildir import: `crm sync` of N generated mails (default 50,000).

Measures in one run, on the same files:
  * reading every file (the floor any importer pays),
  * parsing every file with the standard library's ``email`` package
    (policy.compat32 and policy.default) for reference,
  * the whole ``crm sync`` process into a fresh store: mails/s and peak RSS,
  * a no-change rerun of ``crm sync``.

Usage: python bench/bench_maildir.py [--n 50000] [--keep]
Writes its section of bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import email
import email.policy
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from bench._results import TreeMemory, like_an_installation, write_section  # noqa: E402
from bench.mailgen import customer_domains, write_maildir  # noqa: E402


def run_measured(argv: list[str], cwd: Path) -> tuple[float, int, str]:
    """Wall seconds, peak memory in MB and stdout of one child process.

    Peak memory: the summed PSS of the process and its reader process
    (bench/_results.TreeMemory; os.wait4's ru_maxrss includes this script's own RSS).
    """
    started = time.perf_counter()
    proc = subprocess.Popen(argv, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    memory = TreeMemory(proc.pid)
    _, status, _usage = os.wait4(proc.pid, 0)
    tree_mb, _rss_sum = memory.stop()
    elapsed = time.perf_counter() - started
    out = proc.stdout.read().decode()
    err = proc.stderr.read().decode()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode not in (0,):
        raise SystemExit(f"{' '.join(argv)} failed ({proc.returncode}):\n{out}\n{err}")
    return elapsed, tree_mb, out


def files_of(maildir: Path) -> list[Path]:
    return [Path(e.path) for sub in ("cur", "new") for e in os.scandir(maildir / sub)]


def main() -> None:
    like_an_installation()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=50_000)
    parser.add_argument("--keep", action="store_true", help="keep the generated Maildir for the next run")
    args = parser.parse_args()

    work = HERE / "work" / f"maildir-{args.n}"
    maildir = work / "mail"
    if not (maildir / "cur").is_dir() or len(files_of(maildir)) != args.n:
        shutil.rmtree(work, ignore_errors=True)
        t = time.perf_counter()
        write_maildir(maildir, args.n, seed=1)
        print(f"generated {args.n} mails in {time.perf_counter() - t:.1f} s")
    paths = files_of(maildir)

    os.sync()  # the generator's writes must not slow the reads that are timed
    read_s = float("inf")
    for _ in range(2):  # the second pass reads from the page cache, as every measurement after it does
        t = time.perf_counter()
        total = sum(len(p.read_bytes()) for p in paths)
        read_s = min(read_s, time.perf_counter() - t)
    t = time.perf_counter()
    for p in paths:
        email.message_from_bytes(p.read_bytes(), policy=email.policy.compat32)
    compat_s = time.perf_counter() - t
    sample = paths[:5000]
    t = time.perf_counter()
    for p in sample:
        msg = email.message_from_bytes(p.read_bytes(), policy=email.policy.default)
        for key in ("from", "to", "cc", "subject", "date", "message-id"):
            msg.get(key)
    default_s = (time.perf_counter() - t) * len(paths) / len(sample)

    (work / "crm.toml").write_text(
        '[store]\npath = "crm.db"\n[company]\ninternal_domains = ["nordlicht.example"]\n'
        + "".join(f'[[customers]]\nname = "Customer {i}"\ndomains = ["{d}"]\n'
                  for i, d in enumerate(customer_domains(1)[::2]))
        + '[sources.bench]\ntype = "maildir"\npath = "mail"\nowner = ["anna@nordlicht.example"]\n',
        encoding="utf-8",
    )
    for f in work.glob("crm.db*"):
        f.unlink()
    crm = [sys.executable, "-m", "cli", "--config", str(work / "crm.toml")]
    env_cwd = HERE.parent
    first_s, first_rss, out = run_measured([*crm, "sync"], env_cwd)
    print(out.strip())
    again_s, again_rss, out2 = run_measured([*crm, "sync"], env_cwd)
    print(out2.strip())
    _, _, status = run_measured([*crm, "status"], env_cwd)
    db_mb = (work / "crm.db").stat().st_size / 1e6

    rate = args.n / first_s
    lines = [
        f"## Maildir import ({args.n:,} generated mails, {total / 1e6:.0f} MB)",
        "",
        "`python bench/bench_maildir.py --n %d`" % args.n,
        "",
        "| what | seconds | mails/s | ratio |",
        "| --- | ---: | ---: | ---: |",
        f"| read every file, from the page cache (floor) | {read_s:.2f} | {args.n / read_s:,.0f} | - |",
        f"| `email` parse, policy.compat32 | {compat_s:.2f} | {args.n / compat_s:,.0f} | - |",
        f"| `email` parse + 6 headers, policy.default (from 5,000) | {default_s:.2f} | {args.n / default_s:,.0f} | - |",
        f"| **`crm sync`, whole process, fresh store** | **{first_s:.2f}** | **{rate:,.0f}** | "
        f"{rate / (args.n / compat_s):.2f}x the compat32 parse alone |",
        f"| `crm sync` again, nothing changed | {again_s:.2f} | - | - |",
        "",
        f"Peak memory of the import (summed PSS of the sync and its reader process; see run_measured): **{first_rss} MB** (no-change rerun: {again_rss} MB). Store size {db_mb:.0f} MB.",
        "",
        "```",
        status.strip(),
        "```",
    ]
    text = "\n".join(lines)
    print(text)
    write_section(f"maildir-{args.n}", text)
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
