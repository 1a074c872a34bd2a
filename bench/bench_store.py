#!/usr/bin/env python3
"""The store's own cost per mail: :meth:`Store.apply_batch` alone, no connector, no process start.

    python bench/bench_store.py [--sizes 10000,50000] [--rounds 3] [--base DIR] [--profile] [--quick] [--no-write]

N generated mails (bench/mailgen.py) are parsed into MailRecords once
(connectors/mailparse.py, untimed; kept in bench/work/store/) and stored the
way the engine stores a source's batches (sync/engine.py, _store_batch):
pages of 500, each in one transaction with the source's cursor and the
run's progress, into a fresh copy of the realistic store (bench/realistic.py:
300 customers, 2,000 contacts from an address book, a blocklist, internal
domains), then the run's end (``optimize``).  Timed: every page, and the
same mails once more into the same store (a rescan: all of them known).

``--base DIR``: a second crm_bridge package (DIR/crm_bridge, e.g. an
unpacked ``git archive`` of the code before a change) measured in the same
run, rounds interleaved, each in its own process; the two stores' contents
are compared (customers, contacts, interactions, participants, links,
threads, locations, by natural keys, not row ids) and must be identical.

``--profile``: a cProfile of one store of the first size (in-process, the
code on PYTHONPATH), its top functions by own time.

Writes the section "store" of bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import pickle
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
WORK = HERE / "work" / "store"
PAGE = 500
NOW = "2026-11-29T12:00:00+00:00"


#: what the figures stand on (issue 9: the store's share of every connector's first sync)
NOTES = """The run above was recorded while other engineers' test suites and benchmarks ran on the same
2 cores: read its CPU columns as ratios of one run.  The count that other work does not disturb,
instructions of the first store (valgrind --tool=callgrind, the process's set-up counted apart and
taken off; same records, same realistic store; user-space instructions only, so the system time of
the writes to the WAL that the page cache saves at 50,000 is not in it): 10,000 mails 3.50 -> 2.91
billion (**0.83x**), 50,000 mails 18.30 -> 14.63 billion (**0.80x**).

What made a stored mail cheaper this time ("before" above is the code before it; schema 8 -> 9):

- **The full-text rows of a page read back by one statement** (`INSERT INTO interactions_fts ...
  SELECT id, subject, snippet FROM interactions WHERE id BETWEEN ...`): no row through Python and
  the sqlite3 module; still one segment a page.
- **No look by dedup key nor by Message-ID for a mail no thread reference names**: every stored
  mail's Message-ID is in `thread_refs` (written with the mail), and the dedup key hashes the
  Message-ID, so a mail whose Message-ID is not there is new (nearly all of a first sync's mail);
  mail without a Message-ID is looked up by its key as before, and the second look goes through
  `thread_refs` and the thread's mails.
- **Schema 9: no index of interactions by Message-ID** (the look above was its only reader; `crm
  explain` and a mail named by its Message-ID read the table whole either way, an OR with `uid`),
  **and the full-text index without column sizes** (`columnsize=0`: a row fewer a mail; only bm25
  ranking reads them, and searches list the newest first).  `detail=full` stays (phrase search).
  The migration drops the index and rebuilds the full-text index from `interactions` once.
- (Tried and reverted: ANALYZE sampling each index with `analysis_limit` 1,000 saved a tenth of
  the first store's instructions at 10,000 mails. But the sample took the links to customers for 1,000 rows,
  so every later run's follow-up rules walked all of them: 0.15 s of a no-change run at 100,000 mails.
  ANALYZE reads each index whole again, each time the store has doubled.)
- **A page cache of 16 MB**: at 50,000 mails a page's changes (leaf pages all over the indexes
  keyed by random values) outgrew SQLite's 2 MB default, which wrote changed pages to the WAL
  before the commit and read them back (less system time; memory grows by at most as much).
- **Values a page's rows share bound once** (the source, the time: numbered parameters, `$0` in
  `_insert_rows`' row); skipped places and unread texts many to a statement; links of a new mail
  with INSERT OR IGNORE instead of OR REPLACE (a new mail has none to replace).
- **Python per mail:** the ids a mail names worked out once, a lone Message-ID looked up without a
  set, participants without a set of their own (INSERT OR IGNORE keeps the first of an address
  named twice, as the set did), `Match` a class with slots.

Measured and left: NULL for an empty text with `ifnull(?, '')` in the row (more instructions, not
fewer); participants by role and links by (target, reason), their shared values bound once (more
statements, no gain); INSERT OR IGNORE for the mail and threads (no statement journal: no gain);
the content hash written out in one function (no gain); `wal_autocheckpoint` 40,000 (no gain);
FTS5 `automerge` 8 or 0 (no clear gain).  What is left, at 50,000 mails: SQLite writing rows
into B-trees (a fifth), the full-text index (tokenising and its segments, a seventh), binding text
parameters (each a copy and two rounds through locks, a twelfth), the commits, and Python (a third
at 10,000, with the dedup key that the reader process works out in `crm sync`).

Round 1 (schema 7 -> 8), 24 % fewer instructions: a page's rows 50 to a statement; the full-text
index last, one segment a page; FTS5 merging by 16; one look at a mail's participants
(`Linker.mail_verdict`); the start of the text cut to letters and digits through its bytes.

Earlier (schema 6): the full-text index by the page instead of an insert trigger per mail; each
address looked up in the blocklist and internal domains once; the content hash at half its cost.

Measured in round 1 and left: `mmap_size` 256 MB (no change); every other index is read by a
query (dedup, thread lookups, the timeline's dates, relinking by address, link targets, the
locations of an item; `thread_refs_thread` only by a thread merge, which without it would read
every reference).  Four indexes keyed by random values are left (dedup key, thread reference,
participant address, link target) and the dates: each page's mail lands on leaf pages all over
them, and every page a commit changed goes to the WAL and later back into the file, which is why
the cost per mail at 50,000 is above that at 10,000.  In `crm sync` the reader process works out
the dedup key (part of the "first store" here)."""


# -- records ----------------------------------------------------------------------------
def records_file(n: int) -> Path:
    """A pickle of N parsed MailRecords (made once; the record types pickle positionally)."""
    path = WORK / f"records-{n}.pickle"
    if path.exists():
        return path
    from crm_bridge.connectors.mailparse import parse_message
    from crm_bridge.crm_core.records import Location
    from bench.mailgen import generate_messages

    WORK.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    recs = []
    for i, raw in enumerate(generate_messages(n, seed=1)):
        seen = i % 3 != 0
        recs.append(parse_message(raw, Location("INBOX", f"{i:07d}.bench", "flags:S" if seen else "flags:"),
                                  ("\\Seen",) if seen else ()))
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(pickle.dumps(recs, protocol=pickle.HIGHEST_PROTOCOL))
    tmp.replace(path)
    print(f"parsed {n:,} generated mails in {time.perf_counter() - t:.1f} s", file=sys.stderr)
    return path


def kit(seeded: bool = True):
    """The realistic store's configs; ``seeded``: its template was made by the driver (one for every variant)."""
    from bench.realistic import StoreKit

    k = StoreKit(WORK / "kit", {"alice": {"type": "maildir", "path": str(WORK / "no-such-maildir")}})
    k._seeded = seeded and k.template.exists()
    return k


# -- one measured store (a child process) -----------------------------------------------
def child(n: int, tag: str, dump: Path | None, profile: Path | None) -> dict:
    from datetime import datetime

    from crm_bridge.crm_core.records import Batch
    from crm_bridge.crm_core.store import Store
    from crm_bridge.sync.config import load_config
    from crm_bridge.sync.engine import Engine

    recs = pickle.loads(records_file(n).read_bytes())
    cfg = load_config(str(kit().config(f"{tag}-{n}", realistic=True)))
    store = Store(cfg.store_path, cfg.linking)
    for pragma in os.environ.get("BENCH_STORE_PRAGMAS", "").split(";"):  # experiments: "cache_size=-16000;..."
        if pragma.strip():
            store.conn.execute(f"PRAGMA {pragma.strip()}")
    Engine(cfg, store).prepare()  # customers and blocklist, as every sync does first
    policy = cfg.policies["alice"]
    now = datetime.fromisoformat(NOW)
    pages = [recs[i:i + PAGE] for i in range(0, len(recs), PAGE)]

    def one_pass(label: str, pages: list[list] = pages) -> tuple[float, float, dict]:
        from crm_bridge.crm_core.store import Stats

        with store.transaction():
            store.register_source("alice", "maildir")
            store.remember_policy(policy)
            run_id = store.start_run("alice", now)
        total = Stats()
        started, cpu = time.perf_counter(), time.process_time()
        for k, page in enumerate(pages):
            with store.transaction():
                stats = store.apply_batch(policy, Batch(records=page, cursor={"INBOX": [k]}), now)
                store.save_cursor("alice", {"INBOX": [k]})
                store.note_run_progress(run_id, total, stats)
            total.merge(stats)
        with store.transaction():
            store.finish_run(run_id, "alice", "ok", total, "")
        store.optimize()
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
        return elapsed, cpu, {k: v for k, v in total.as_dict().items() if v and k != "problems"}

    prof = None
    if profile is not None:
        import cProfile

        prof = cProfile.Profile()
        prof.enable()
    first_s, first_cpu, first_stats = one_pass("first")
    if prof is not None:
        prof.disable()
        prof.dump_stats(str(profile))
    again_s, again_cpu, again_stats = one_pass("again")
    from crm_bridge.crm_core.records import Location

    for rec in recs:  # the folder's UIDVALIDITY changed: every mail at a new place
        loc = rec.location
        rec.location = Location(loc.scope, "2:" + loc.local_id, loc.etag)
    moved_s, moved_cpu, moved_stats = one_pass("moved", [recs[i:i + PAGE] for i in range(0, len(recs), PAGE)])
    out = {"first_s": first_s, "again_s": again_s, "first_cpu": first_cpu, "again_cpu": again_cpu,
           "moved_s": moved_s, "moved_cpu": moved_cpu, "moved": moved_stats, "first": first_stats, "again": again_stats,
           "summary": kit().summary(cfg.store_path)}
    if dump is not None:
        text = dump_store(store.conn)
        dump.write_text(text)
        out["digest"] = hashlib.sha1(text.encode()).hexdigest()
    store.close()
    for f in cfg.store_path.parent.glob(cfg.store_path.name + "*"):
        f.unlink()
    return out


def dump_store(conn) -> str:
    """What the store holds after a sync, by natural keys (row ids left out), one line per row, sorted."""
    one = conn.execute
    customer = {cid: name for cid, name in one("SELECT id, name FROM customers")}
    emails: dict[int, list[str]] = {}
    for email, cid in one("SELECT email, contact_id FROM contact_addresses"):
        emails.setdefault(cid, []).append(email)
    contact = {cid: f"{name}<{','.join(sorted(emails.get(cid, [])))}>" for cid, name in one("SELECT id, name FROM contacts")}
    key = {iid: k for iid, k in one("SELECT id, dedup_key FROM interactions")}
    members: dict[int, list[str]] = {}
    for iid, tid in one("SELECT id, thread_id FROM interactions WHERE thread_id IS NOT NULL"):
        members.setdefault(tid, []).append(key[iid])
    thread = {tid: min(ks) for tid, ks in members.items()}  # a thread is named by its first member
    lines = []
    for cid, name, cust, uid, origin in one("SELECT id, name, customer_id, uid, origin FROM contacts"):
        lines.append(f"contact {contact[cid]} customer={customer.get(cust)} uid={uid} origin={origin}")
    for row in one("""SELECT id, kind, message_id, content_hash, thread_id, date, subject, snippet, direction,
                      visibility, bulk, has_attachments, logged_by, deleted, created_at, updated_at, warnings
                      FROM interactions"""):
        iid, tid = row[0], row[4]
        lines.append(f"item {key[iid]} {row[1:4]} thread={thread.get(tid, tid)} {row[5:]}")
    for iid, email, name, role, status in one("SELECT * FROM participants"):
        lines.append(f"participant {key[iid]} {email} {name!r} {role} {status}")
    for iid, target, tid, reason in one("SELECT interaction_id, target, target_id, reason FROM links"):
        who = customer.get(tid) if target == "customer" else contact.get(tid)
        lines.append(f"link {key[iid]} {target} {who} {reason}")
    for mid, tid in one("SELECT message_id, thread_id FROM thread_refs"):
        lines.append(f"ref {mid} thread={thread.get(tid, f'empty:{tid}')}")
    for tid, subject in one("SELECT id, subject FROM threads"):
        lines.append(f"thread {thread.get(tid, f'empty:{tid}')} {subject!r}")
    for row in one("SELECT source, scope, local_id, kind, item_id, etag, flags, seen_at, gone_at FROM locations"):
        lines.append(f"location {row[:4]} {key.get(row[4], row[4]) if row[3] == 'interaction' else row[4]} {row[5:]}")
    for row in one("SELECT * FROM skipped"):
        lines.append(f"skipped {row}")
    for row in one("SELECT name, type, cursor, rescan FROM sources"):
        lines.append(f"source {row}")
    for (stats,) in one("SELECT stats FROM runs"):
        lines.append(f"run {stats}")
    # the full-text index: every term of every item (its column and offset), and FTS5's own check
    one("INSERT INTO interactions_fts(interactions_fts) VALUES ('integrity-check')")
    one("CREATE VIRTUAL TABLE IF NOT EXISTS temp.bench_vocab USING fts5vocab(main, interactions_fts, 'instance')")
    terms = hashlib.sha1()
    for term, doc, col, offset in one("SELECT term, doc, col, offset FROM temp.bench_vocab ORDER BY term, doc, col, offset"):
        terms.update(f"{term} {key.get(doc, doc)} {col} {offset}\n".encode())
    lines.append(f"fts terms {terms.hexdigest()}")
    lines.sort()
    return "\n".join(lines) + "\n"


# -- the whole process: `crm sync` of a Maildir folder ------------------------------------------
def whole_process(n: int, variants: list[tuple[str, Path]], rounds: int) -> dict[str, list[tuple[float, float]]]:
    """(wall s, CPU s of `crm sync` and its reader process) per variant: a flat Maildir folder of N
    generated mails (bench/bench_maildir.py's layout) into a fresh realistic store, rounds interleaved."""
    from bench.bench_maildir import layout
    from bench.realistic import StoreKit

    flat, _folders, _eml = layout(HERE / "work" / f"maildir-{n}", n, 0)
    k = StoreKit(WORK / f"whole-{n}", {"alice": {"type": "maildir", "path": str(flat)}})
    with_path(variants[-1][1], k._seed)
    out: dict[str, list[tuple[float, float]]] = {}
    for r in range(rounds):
        for name, pkg in (variants if r % 2 == 0 else variants[::-1]):
            cfg = k.config(f"{name}", realistic=True)
            argv = [sys.executable, "-m", "crm_bridge.cli", "--config", str(cfg), "sync", "--source", "alice"]
            os.sync()
            started = time.perf_counter()
            proc = subprocess.Popen(argv, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(pkg)},
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            _pid, status, usage = os.wait4(proc.pid, 0)
            wall = time.perf_counter() - started
            if status != 0:
                raise SystemExit(f"crm sync ({name}) failed: {proc.stderr.read().decode() if proc.stderr else ''}")
            out.setdefault(name, []).append((wall, usage.ru_utime + usage.ru_stime))
            print(f"whole process {name} {n:,} round {r + 1}: {wall:.2f} s (CPU {out[name][-1][1]:.2f} s)",
                  file=sys.stderr, flush=True)
    return out


def with_path(pkg: Path, work):
    """Run ``work`` with PYTHONPATH=pkg (what the processes it starts import)."""
    before = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = str(pkg)
    try:
        return work()
    finally:
        if before is None:
            del os.environ["PYTHONPATH"]
        else:
            os.environ["PYTHONPATH"] = before


# -- the driver ---------------------------------------------------------------------------
def run_child(pkg: Path, n: int, tag: str, dump: Path | None = None, profile: Path | None = None) -> dict:
    argv = [sys.executable, str(Path(__file__).resolve()), "--child", "--n", str(n), "--tag", tag]
    if dump is not None:
        argv += ["--dump", str(dump)]
    if profile is not None:
        argv += ["--profile-to", str(profile)]
    env = {**os.environ, "PYTHONPATH": str(pkg)}
    done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} (PYTHONPATH={pkg}) failed:\n{done.stdout}\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def profile_top(path: Path, count: int = 25) -> list[tuple[str, int, float, float]]:
    """(function, calls, own seconds, cumulative seconds), by own time."""
    import pstats

    st = pstats.Stats(str(path))
    rows = []
    for (file, line, func), (_cc, ncalls, tt, ct, _callers) in st.stats.items():  # type: ignore[attr-defined]
        short = file
        for cut in ("crm_bridge/", "storecpu/", "lib/python3"):
            if cut in file:
                short = file.split(cut, 1)[1]
                break
        rows.append((f"{short}:{line}({func})" if line else func, ncalls, tt, ct))
    rows.sort(key=lambda r: -r[2])
    return rows[:count]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="10000,50000")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--base", type=Path, help="a folder holding the crm_bridge package to compare with")
    ap.add_argument("--profile", action="store_true", help="cProfile one store of the first size")
    ap.add_argument("--whole", type=int, default=0, metavar="N",
                    help="also `crm sync` of a flat Maildir folder of N mails, whole process (with --base: both)")
    ap.add_argument("--quick", action="store_true", help="2,000 mails, one round")
    ap.add_argument("--no-write", action="store_true", help="do not touch bench/RESULTS.md")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--n", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--tag", default="run", help=argparse.SUPPRESS)
    ap.add_argument("--dump", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--profile-to", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    if args.child:
        print(json.dumps(child(args.n, args.tag, args.dump, args.profile_to)))
        return
    import crm_bridge

    here = Path(crm_bridge.__file__).resolve().parent.parent
    current = Path(os.environ.get("PYTHONPATH", "").split(os.pathsep)[0] or here)
    sizes = [2000] if args.quick else [int(s) for s in args.sizes.split(",")]
    rounds = 1 if args.quick else args.rounds
    variants = [("current", current)] + ([("base", args.base)] if args.base else [])
    for n in sizes:
        records_file(n)
    # the realistic template is written by the code before (this code migrates it, as it would an office's store)
    with_path(variants[-1][1], kit(seeded=False)._seed)
    results: dict[tuple[str, int], list[dict]] = {}
    digests: dict[tuple[str, int], str] = {}
    for n in sizes:
        for r in range(rounds):
            for name, pkg in (variants if r % 2 == 0 else variants[::-1]):
                dump = WORK / f"dump-{name}-{n}.txt" if r == 0 else None
                out = run_child(pkg, n, name, dump)
                results.setdefault((name, n), []).append(out)
                if "digest" in out:
                    digests[(name, n)] = out["digest"]
                print(f"{name} {n:,} round {r + 1}: {out['first_s']:.2f} s (CPU {out['first_cpu']:.2f} s), "
                      f"again {out['again_s']:.2f} s (CPU {out['again_cpu']:.2f} s), "
                      f"new places {out['moved_s']:.2f} s (CPU {out['moved_cpu']:.2f} s)",
                      file=sys.stderr, flush=True)

    def med(xs: list[float]) -> float:
        return sorted(xs)[len(xs) // 2]

    L = [f"Generated mail (bench/mailgen.py, seed 1), parsed once into MailRecords (untimed), stored as the engine "
         f"stores a source's batches: pages of {PAGE}, each with its cursor and the run's progress in one transaction, "
         "then the run's end (`optimize`); into a fresh copy of the realistic store (bench/realistic.py: 300 customers, "
         "2,000 contacts, a blocklist, internal domains). \"again\": the same mails once more into the same store "
         "(every one known: a rescan); \"new places\": then once more with every mail under a new local id (a "
         "folder's UIDVALIDITY changed). Wall time, and the process's CPU time (user + system: what other work on the "
         "shared machine disturbs least) per mail. Each measurement in its own process; "
         f"median of {rounds} round(s){', the variants interleaved' if args.base else ''}.",
         ""]
    head = "| mails | code | first store | mails/s | CPU ms per mail | again | CPU ms per mail | new places | CPU ms per mail |"
    if args.base:
        head += " first store, CPU vs before |"
    L += [head, "|" + "---|" + "---:|" * (head.count("|") - 2)]
    for n in sizes:
        for name, _pkg in variants:
            rs = results[(name, n)]
            first, again = med([x["first_s"] for x in rs]), med([x["again_s"] for x in rs])
            first_cpu, again_cpu = med([x["first_cpu"] for x in rs]), med([x["again_cpu"] for x in rs])
            moved, moved_cpu = med([x["moved_s"] for x in rs]), med([x["moved_cpu"] for x in rs])
            row = (f"| {n:,} | {'before' if name == 'base' else 'this code'} | {first:.2f} s | {n / first:,.0f} | "
                   f"{first_cpu * 1000 / n:.3f} | {again:.2f} s | {again_cpu * 1000 / n:.3f} | "
                   f"{moved:.2f} s | {moved_cpu * 1000 / n:.3f} |")
            if args.base:
                b = med([x["first_cpu"] for x in results[("base", n)]])
                row += f" {first_cpu / b:.2f}x |"
            L.append(row)
    L.append("")
    for n in sizes:
        out = results[(variants[0][0], n)][0]
        L.append(f"- {n:,} mails: first {json.dumps(out['first'])}, again {json.dumps(out['again'])}, new places "
                 f"{json.dumps(out['moved'])}; store after: "
                 + ", ".join(f"{v:,} {k}" for k, v in out["summary"].items()))
    if args.base:
        same = all(digests.get(("current", n)) == digests.get(("base", n)) for n in sizes)
        L.append("- store contents (customers, contacts, interactions, participants, links, threads, locations, "
                 f"skipped, runs, every term of the full-text index; by natural keys) after the three passes, this code vs before: "
                 f"**{'identical' if same else 'DIFFERENT'}** at " + ", ".join(f"{n:,}" for n in sizes))
        if not same:
            print("store contents differ: compare bench/work/store/dump-*.txt", file=sys.stderr)
    if args.whole:
        runs = whole_process(args.whole, variants, rounds)
        L += ["", f"The whole process: `crm sync` of one flat Maildir folder of {args.whole:,} generated mails "
              "(bench/bench_maildir.py's layout) into a fresh realistic store: parsing, linking, storing; "
              f"median of {rounds}, wall time and the CPU time of `crm sync` and its reader process.", "",
              "| code | first sync | ms per mail | CPU | CPU ms per mail |", "|---|---:|---:|---:|---:|"]
        for name, _pkg in variants:
            wall, cpu = med([w for w, _ in runs[name]]), med([c for _, c in runs[name]])
            L.append(f"| {'before' if name == 'base' else 'this code'} | {wall:.2f} s | {wall * 1000 / args.whole:.3f} | "
                     f"{cpu:.2f} s | {cpu * 1000 / args.whole:.3f} |")
        if args.base:
            b = med([c for _, c in runs["base"]])
            L.append(f"\nCPU of the whole process, this code vs before: {med([c for _, c in runs['current']]) / b:.2f}x.")
    if args.profile:
        n = sizes[0]
        prof = WORK / f"profile-{n}.pstats"
        run_child(current, n, "profile", profile=prof)
        L += ["", f"cProfile of the first store of {n:,} mails (this code; the profiler's own cost inflates "
              "Python calls), top functions by own time:", "",
              "| function | calls | own s | cumulative s |", "|---|---:|---:|---:|"]
        for func, calls, tt, ct in profile_top(prof, 20):
            L.append(f"| `{func}` | {calls:,} | {tt:.3f} | {ct:.3f} |")
    if args.base:
        L += ["", NOTES]
    text = "\n".join(L)
    print(text)
    if not args.no_write:
        from bench._results import write_section

        cmd = "python bench/bench_store.py" + (" --quick" if args.quick else f" --sizes {args.sizes}") \
            + (f" --whole {args.whole}" if args.whole else "") + (" --base DIR" if args.base else "")
        write_section("store", f"## Store (bench/bench_store.py)\n\n`{cmd}`\n\n{text}")


if __name__ == "__main__":
    main()
