#!/usr/bin/env python3
"""Maildir and .eml import: `crm sync` of generated mail, realistic store and bare store.

    python bench/bench_maildir.py [--n 50000] [--eml 10000] [--rounds 1] [--quick] [--keep] [--no-write]

One set of N generated mails (bench/mailgen.py) is laid out three ways,
the same files hard-linked:

* one flat Maildir folder (N files in ``cur/``);
* 50 folders: the Maildir root plus 49 Maildir++ subfolders, N/50 each;
* ``--eml`` of them as ``.eml`` files in one folder (an ``eml`` source).

For each layout, ``crm sync`` into a fresh *realistic* store
(bench/realistic.py: 300 customers matching ~70 % of the mail, 2,000
contacts, threads, a blocklist, internal domains) and into a fresh store
with no customers (the figures of before), each followed by a no-change
rerun.  For reference: reading every file (the floor any importer pays)
and parsing every file with the standard library's ``email`` package.

Memory is the peak PSS summed over ``crm sync`` and its reader process.
Everything lives under bench/work/maildir-N/ (removed unless --keep).
Writes the section "maildir" of bench/RESULTS.md.
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
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from bench._results import TreeMemory, like_an_installation, write_section  # noqa: E402
from bench.mailgen import write_maildir  # noqa: E402
from bench.realistic import StoreKit  # noqa: E402

FOLDERS = 50


def run_measured(argv: list[str]) -> tuple[float, int, str]:
    """Wall seconds, peak summed PSS in MB and stdout of one child process and its descendants."""
    started = time.perf_counter()
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    memory = TreeMemory(proc.pid)
    out_b, err_b = proc.communicate()
    elapsed = time.perf_counter() - started
    pss_mb, _rss = memory.stop()
    out, err = out_b.decode(), err_b.decode()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({proc.returncode}):\n{out}\n{err}")
    return elapsed, pss_mb, out


def files_of(maildir: Path) -> list[Path]:
    return sorted(Path(e.path) for sub in ("cur", "new") if (maildir / sub).is_dir() for e in os.scandir(maildir / sub))


def layout(work: Path, n: int, eml: int) -> tuple[Path, Path, Path]:
    """(flat Maildir, 50-folder Maildir, .eml folder), generated once and reused while the size fits."""
    flat, multi, emls = work / "flat", work / "folders", work / "eml"
    if len(files_of(flat)) != n:
        shutil.rmtree(work, ignore_errors=True)
        t = time.perf_counter()
        write_maildir(flat, n, seed=1)
        print(f"generated {n:,} mails in {time.perf_counter() - t:.1f} s", file=sys.stderr)
    paths = files_of(flat)
    if sum(len(files_of(d)) for d in [multi, *multi.glob(".*")] if d.is_dir()) != n:
        shutil.rmtree(multi, ignore_errors=True)
        per = -(-n // FOLDERS)
        for k in range(FOLDERS):
            box = multi if k == 0 else multi / f".Kunden.Ordner{k:02d}"
            for sub in ("cur", "new", "tmp"):
                (box / sub).mkdir(parents=True, exist_ok=True)
            for p in paths[k * per:(k + 1) * per]:
                os.link(p, box / "cur" / p.name)
    if len(list(emls.glob("*.eml"))) != eml:
        shutil.rmtree(emls, ignore_errors=True)
        emls.mkdir(parents=True)
        for i, p in enumerate(paths[:eml]):
            os.link(p, emls / f"{i:06d}.eml")
    return flat, multi, emls


def main() -> None:
    like_an_installation()
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=50_000, help="mails in the Maildir layouts")
    ap.add_argument("--eml", type=int, default=10_000, help=".eml files in one folder")
    ap.add_argument("--rounds", type=int, default=1, help="first syncs per layout and store (median)")
    ap.add_argument("--quick", action="store_true", help="2,000 mails, 1,000 .eml files")
    ap.add_argument("--keep", action="store_true", help="keep the generated mail for the next run")
    ap.add_argument("--no-write", action="store_true", help="do not touch bench/RESULTS.md")
    args = ap.parse_args()
    if args.quick:
        args.n, args.eml = 2_000, 1_000
    work = HERE / "work" / f"maildir-{args.n}"
    flat, multi, emls = layout(work, args.n, args.eml)
    paths = files_of(flat)

    os.sync()  # the generator's writes must not slow the reads that are timed
    read_s = float("inf")
    for _ in range(2):  # the second pass reads from the page cache, as every measurement after it does
        t = time.perf_counter()
        size = sum(len(p.read_bytes()) for p in paths)
        read_s = min(read_s, time.perf_counter() - t)
    t = time.perf_counter()
    for p in paths:
        email.message_from_bytes(p.read_bytes(), policy=email.policy.compat32)
    compat_s = time.perf_counter() - t

    layouts = [("one flat Maildir folder", "maildir", flat, args.n),
               (f"{FOLDERS} Maildir folders", "maildir", multi, args.n),
               (".eml files in one folder", "eml", emls, args.eml)]
    rows = []
    stores = {}
    kits = {label: StoreKit(work / f"stores-{kind}-{path.name}", {"alice": {"type": kind, "path": str(path)}})
            for label, kind, path, _count in layouts}
    cases = [(label, count, realistic) for label, _kind, _path, count in layouts for realistic in (True, False)]

    def crm_argv(cfg: Path) -> list[str]:
        return [sys.executable, "-m", "crm_bridge.cli", "--config", str(cfg), "sync", "--source", "alice"]

    firsts: dict[tuple[str, bool], list[tuple[float, int, str]]] = {(label, real): [] for label, _c, real in cases}
    for r in range(args.rounds):  # interleaved round by round: the machine's other load hits every layout alike
        for label, _count, realistic in cases:
            cfg = kits[label].config(f"run{r}-{int(realistic)}", realistic)
            os.sync()  # no write-back of an earlier store during a timed run
            firsts[(label, realistic)].append(run_measured(crm_argv(cfg)))
        print(f"round {r + 1} of {args.rounds}", file=sys.stderr, flush=True)
    for label, count, realistic in cases:
        runs = firsts[(label, realistic)]
        cfg = kits[label].work / f"run{args.rounds - 1}-{int(realistic)}.toml"
        first_s = sorted(x[0] for x in runs)[len(runs) // 2]
        pss = max(x[1] for x in runs)
        again = [run_measured(crm_argv(cfg))]
        if again[0][0] < 10:  # a slow rerun (the .eml connector before issue 9) is measured once
            again += [run_measured(crm_argv(cfg)) for _ in range(2)]
        again_s = sorted(x[0] for x in again)[len(again) // 2]
        if realistic:
            stores[label] = kits[label].summary(cfg.parent / f"run{args.rounds - 1}-1.db")
        rows.append((label, count, realistic, first_s, pss, again_s, max(x[1] for x in again),
                     runs[-1][2].strip().splitlines()[0]))
        print(f"{label}, {'realistic' if realistic else 'no customers'}: {first_s:.2f} s, "
              f"no-change {again_s:.3f} s", file=sys.stderr, flush=True)
    # 50 folders against one: the ratio within each round (the two ran one after the other), then its median
    pair = [m[0] / f[0] for f, m in zip(firsts[(layouts[0][0], True)], firsts[(layouts[1][0], True)])]
    pair_ratio = sorted(pair)[len(pair) // 2]

    L = [f"{args.n:,} generated mails ({size / 1e6:.0f} MB; bench/mailgen.py), laid out as one flat Maildir "
         f"folder, as {FOLDERS} folders of {args.n // FOLDERS:,} (the same files, hard-linked), and the first "
         f"{args.eml:,} as .eml files in one folder. Realistic store: bench/realistic.py (300 customers matching "
         "~70 % of the mail, 2,000 contacts, a blocklist, internal domains; ~30 % replies form threads). "
         f"First syncs: median of {args.rounds}, each into a fresh store, the layouts interleaved round by round; no-change reruns: median of 3 (one when it takes over 10 s).",
         "",
         "| layout | store | mails | first sync | ms/mail | mails/s | no-change rerun | peak PSS (first / rerun) |",
         "|---|---|---:|---:|---:|---:|---:|---:|"]
    for label, count, realistic, first_s, pss, again_s, again_pss, _out in rows:
        b = "**" if realistic else ""
        L.append(f"| {label} | {b}{'realistic' if realistic else 'no customers'}{b} | {count:,} | "
                 f"{b}{first_s:.2f} s{b} | {first_s * 1000 / count:.3f} | {count / first_s:,.0f} | "
                 f"{again_s:.3f} s | {pss} / {again_pss} MB |")
    L += ["",
          "| reference | seconds | mails/s |", "|---|---:|---:|",
          f"| read every file of the flat folder, from the page cache (floor) | {read_s:.2f} | {args.n / read_s:,.0f} |",
          f"| `email` parse of every file, policy.compat32 | {compat_s:.2f} | {args.n / compat_s:,.0f} |",
          ""]
    for label, summary in stores.items():
        L.append(f"- store after the realistic sync of {label}: " + ", ".join(f"{v:,} {k}" for k, v in summary.items()))
    L.append("")
    flat_real = next(r for r in rows if r[0] == layouts[0][0] and r[2])
    multi_real = next(r for r in rows if r[0] == layouts[1][0] and r[2])
    eml_real = next(r for r in rows if r[0] == layouts[2][0] and r[2])
    L.append(f"Targets (issue 9): {FOLDERS} folders at the speed of one flat folder: "
             f"{pair_ratio:.2f}x its time (median of the {len(pair)} rounds' ratios: "
             f"{', '.join(f'{x:.2f}' for x in pair)}; medians of the times: {multi_real[3] / flat_real[3]:.2f}x)"
             f"; no-change rerun of {args.n:,} files under 1 s: "
             f"{flat_real[5]:.2f} s flat, {multi_real[5]:.2f} s in {FOLDERS} folders; "
             f"{args.eml:,} .eml files: import {eml_real[3]:.2f} s, no-change rerun {eml_real[5]:.2f} s.")
    text = "\n".join(L)
    print(text)
    if not args.no_write:
        cmd = "python bench/bench_maildir.py" + (" --quick" if args.quick else f" --n {args.n} --eml {args.eml}")
        write_section("maildir", f"## Maildir and .eml import (bench/bench_maildir.py)\n\n`{cmd}`\n\n{text}")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
