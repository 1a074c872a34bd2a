#!/usr/bin/env python3
"""The IMAP reader's records and CPU, one code tree against another, on the same Dovecot.

    python bench/reader_identity.py --trees OLD,NEW [--mails 22000] [--rounds 3] [--profile DIR]

``OLD`` and ``NEW`` are directories that each hold a ``crm_bridge`` package
(e.g. ``git archive main | tar -x -C /tmp/old/crm_bridge``, and the link of a
worktree).  One Dovecot gets the generated mail (bench/mailgen.py: INBOX and
Sent, 10:1) and a folder "Hostile" of the hostile corpus below (broken MIME,
charsets, encoded words, missing headers, HTML-only, huge headers, CR-only
lines ...).  Each tree then runs the connector's pull in a child process,
as the reader process of ``crm sync`` does (sync/worker.py: the dedup key
worked out, each batch pickled), twice: with the realistic store's view
(bench/realistic.py: its skip rule decides which mail gets no text) and
with a view that knows nothing (every mail's text is read).

Every record's fields (``key`` included, compared through ``repr`` so a
datetime's zone or a str subclass counts), every failure and problem must
be identical between the trees; the process's CPU time of each pull is
reported per round, the trees alternating, with medians and the ratio.
Exit status 1 when anything differs.
"""

from __future__ import annotations

import argparse
import os
import pickle
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FOLDERS = ["INBOX", "\\Sent", "Hostile"]


# -- the hostile corpus ------------------------------------------------------------------------
def hostile_corpus() -> list[bytes]:
    """Mails as broken software and the field write them (the cases of tests/test_mailparse*.py and more)."""
    sys.path.insert(0, str(ROOT))
    from tests.test_mailparse_field import OWN, QUOTED, REPLIES, _html, _mail, _padded_qp

    out: list[bytes] = []
    text = OWN + " " + QUOTED + " " + OWN + " " + QUOTED
    out += [_mail(body, mid=f"{p}@x") for p, body in REPLIES.items()]
    out += [_mail(body, mid=f"{p}-crlf@x", nl="\r\n") for p, body in REPLIES.items()]
    out += [
        _mail(_html(20_000), "text/html; charset=utf-8", mid="html-20k@x"),
        _mail(_html(40_000), "text/html; charset=utf-8", mid="html-40k@x"),
        _mail(_html(3_000), "text/html", mid="html-3k-nocharset@x"),
        _mail(_html(20_000).replace("=", "=3D").replace(">", ">=\n"), "text/html; charset=utf-8",
              cte="quoted-printable", mid="html-qp@x"),
        _mail(_padded_qp(text), cte="quoted-printable", mid="qp-padded@x"),
        _mail("Gr=FC=DFe aus K=F6ln, =\nweiter =3D gleich.=\n", "text/plain; charset=iso-8859-1",
              cte="quoted-printable", mid="qp-latin1@x"),
        _mail(("Привет, это текст в KOI8-R. " * 40).encode("koi8-r"), "text/plain; charset=koi8-r", mid="koi8@x"),
        _mail("Grüße mit falschem Zeichensatz".encode(), "text/plain; charset=x-unknown-thing", mid="badcs@x"),
        _mail(b"Caf\xe9 cr\xe8me \xe4rger utf-8 gemischt \xc3\xa4", mid="mixed-body@x"),
        _mail(__import__("base64").encodebytes(("Base64 Text mit Umlauten äöü. " * 80).encode()),
              cte="base64", mid="b64@x"),
        _mail(b"!!!not base64 at all\xff\xfe\n====\n", cte="base64", mid="b64-broken@x"),
        _mail("--b\nContent-Type: text/plain; charset=utf-8\nContent-Disposition: inline; filename=\"m.txt\"\n\n"
              + OWN + "\n--b--\n", 'multipart/mixed; boundary="b"', mid="inline-named@x"),
        _mail("--b\nContent-Type: text/html\n\n<p>Nur HTML " + OWN + "</p>\n--b\nContent-Type: application/pdf\n"
              "Content-Disposition: attachment; filename=\"a.pdf\"\nContent-Transfer-Encoding: base64\n\nJVBERi0=\n"
              "--b--\n", 'multipart/mixed; boundary="b"', mid="html-with-pdf@x"),
        _mail("--o\nContent-Type: multipart/alternative; boundary=i\n\n--i\nContent-Type: text/plain; charset=utf-8\n"
              "\nInnen " + OWN + "\n--i\nContent-Type: text/html\n\n<b>x</b>\n--i--\n--o\n"
              "Content-Type: message/rfc822\n"
              "\nFrom: x@y.example\nSubject: inner\n\nInner body\n--o--\n", 'multipart/mixed; boundary="o"',
              mid="nested@x"),
        _mail("no boundary at all\n", "multipart/mixed", mid="mp-noboundary@x"),
        _mail("--zz\nContent-Type: text/plain\n\nnever closed " + OWN, 'multipart/mixed; boundary="zz"',
              mid="mp-open@x"),
        _mail("\n--d\n\nFrom: a@b.example\nSubject: digest 1\n\nDigest one\n--d--\n", 'multipart/digest; boundary="d"',
              mid="digest@x"),
        _mail("text with a NUL\x00 byte.\n", mid="nul@x"),
        _mail("Hallo Anna,\n\ndas Angebot passt so.\nGruss Kim\n", mid="mac@x", nl="\r"),
        _mail("Text nach dem Kopf.\n", mid="big-header@x",
              headers="".join(f"Received: from relay{i}.example by mx.example; Tue, 12 Mar 2024 10:15:00 +0100\n"
                              for i in range(2_000))),
        _mail("Tief.\n", mid="deep@x", headers="Cc: Anna <anna@nordlicht.example>, " + "(" * 3000 + "x" + ")" * 3000
              + " Bob <bob@kunde.example>\n"),
        _mail("Frage.\n", mid="1234 5678@kunde.example"),
        _mail("Antwort.\n", mid="reply@x", headers="In-Reply-To: <1234\n 5678@kunde.example>\nReferences: <a@x> <b c@x>"
              " <d@x>\n"),
        _mail("Umlaute im Kopf.\n", mid="enc@x", subject="=?utf-8?q?Gr=C3=BC=C3=9Fe?= =?iso-8859-1?b?5HJnZXI=?= Ende",
              headers="Cc: =?utf-8?B?S8O8bmRl?= <kunde@kunde.example>, \"Weber, Anna\" <anna@nordlicht.example>\n"),
        _mail("Kaputt.\n", mid="enc-broken@x", subject="=?utf-8?q?abc=C3?= =?bogus?b?!!!?= =?utf-8?b?w6Q?="),
        _mail("Zwei Jahre.\n", mid="y2@x", date="Tue, 12 Mar 24 10:15:00 +0100"),
        _mail("Drei.\n", mid="y3@x", date="12 Mar 124 10:15 -0000"),
        _mail("Ohne Zone.\n", mid="notz@x", date="Tue, 12 Mar 2024 10:15:00"),
        _mail("Unsinn.\n", mid="baddate@x", date="gestern nachmittag"),
        _mail("Zone Name.\n", mid="tzname@x", date="Tue, 12 Mar 2024 10:15:00 EST"),
        _mail("Komisch.\n", mid="oddday@x", date="Tue, 31 Feb 2024 10:15:00 +0100"),
        _mail("Listen.\n", mid="list@x", headers="List-Id: <x.list.example>\nPrecedence: bulk\n"),
        _mail("Auto.\n", mid="auto@x", headers="Auto-Submitted: auto-replied\n"),
        _mail("Gruppe.\n", mid="group@x", headers="Bcc: undisclosed-recipients:;\nCc: Team: a@kunde.example, "
              "b@kunde.example;, \"Quote \\\"d\\\" Name\" <q@kunde.example>, c@kunde.example (Kommentar)\n"),
        _mail("Zweimal To.\n", mid="twoto@x", headers="To: second@kunde.example\nTO: third@kunde.example\n"),
    ]
    # headers missing or odd
    out += [
        b"Subject: nur ein Betreff\n\nText ohne Absender.\n",
        b"From: noreply@shop.example\nSubject: Ihre Bestellung\n\nDanke.\n",
        b"Date: Tue, 12 Mar 2024 10:15:00 +0100\n\nNur ein Datum.\n",
        b"X-Nothing: here\n\nKein bekanntes Feld.\n",
        b"From: Kim <kim@kunde.example>\nTo: anna@nordlicht.example\nSubject: leer\n\n",
        b"From: =?utf-8?b?S2ltIEvDvG5kZQ==?= <KIM@Kunde.Example>\nTo: <anna@nordlicht.example>\nSubject: "
        b"\xe4rger mit 8bit\nMessage-ID: <8bit@x>\n\nText.\n",
        b"From: Kim <kim@kunde.example>\r\nSubject: very long folded\r\n subject line\r\n\tcontinues\r\n"
        b"Message-ID:   <spaced-field@x>  \r\nContent-Type: text/plain;\r\n charset=\"windows-1252\"\r\n\r\n"
        b"Gr\x9f\xdfe \x80 Euro.\r\n",
        b"From: a@b.example\nContent-Type: text/plain; charset*=utf-8''%C3%A4rger\nMessage-ID: <rfc2231@x>\n\nx\n",
        b"From: anna@nordlicht.example\nTo: kim@kunde.example\nSubject: =?UTF-8?Q?l=C3=A4ngere_Zeile_mit_?=\n"
        b" =?UTF-8?Q?Umbruch?=\nMessage-ID: <folded-enc@x>\nContent-Type: text/html\n\n<html><head><title>t</title>"
        b"<style>p{x}</style></head><body><!-- c --><p>HTML &amp; mehr &uuml;</p><script>x()</script></body>\n",
    ]
    from tests.test_imap import CPYTHON_EMAIL_DATA, _varied_mails

    out += list(_varied_mails(240, seed=7))  # encodings, nesting, long UTF-8 text, HTML only
    out += [p.read_bytes() for p in sorted(CPYTHON_EMAIL_DATA.glob("msg_*.txt"))]  # CPython's email tests
    return out


# -- child: one pull ---------------------------------------------------------------------------
class _View:
    def __init__(self, rule):
        self.rule = rule

    def known(self, scope: str) -> dict:
        return {}

    def scopes(self) -> list:
        return []

    def skip_rule(self):
        return self.rule

    def rereads(self) -> list:
        return []


def _field_reprs(rec) -> tuple:
    import dataclasses

    return tuple((f.name, type(getattr(rec, f.name)).__name__, repr(getattr(rec, f.name)))
                 for f in dataclasses.fields(rec))


def child(port: int, rule_file: str, out_file: str, profile: str) -> None:
    from crm_bridge.connectors.imap import ImapConnector
    from crm_bridge.sync import worker

    rule = pickle.loads(Path(rule_file).read_bytes()) if rule_file else None
    conn = ImapConnector("bench", {"type": "imap", "host": "127.0.0.1", "port": port, "tls": "none",
                                   "allow_plaintext": True, "username": "alice", "password_env": "BENCH_IMAP_PW",
                                   "folders": FOLDERS})
    records, other = [], []
    prof = None
    if profile:
        import cProfile

        prof = cProfile.Profile()
        prof.enable()
    t0 = resource.getrusage(resource.RUSAGE_SELF)
    w0 = time.perf_counter()
    size = 0
    for batch in conn.pull(None, _View(rule)):
        worker._prepare(batch)
        size += len(pickle.dumps(("batch", batch), protocol=pickle.HIGHEST_PROTOCOL))
        records += batch.records
        other.append((batch.failures, batch.problems, batch.alerts, batch.removed, batch.changes, batch.rereads,
                      batch.done, batch.total, batch.cursor and {k: v for k, v in batch.cursor.items()}))
    t1 = resource.getrusage(resource.RUSAGE_SELF)
    wall = time.perf_counter() - w0
    if prof is not None:
        prof.disable()
        prof.dump_stats(profile)
    conn.close()
    cpu = (t1.ru_utime - t0.ru_utime) + (t1.ru_stime - t0.ru_stime)
    if out_file:
        # cursors hold time.time() of UIDVALIDITY resets: none in a first sync, so they compare as they are
        Path(out_file).write_bytes(pickle.dumps(([_field_reprs(r) for r in records], repr(other))))
    print(f"{cpu:.4f} {wall:.4f} {len(records)} {size}")


# -- parent ------------------------------------------------------------------------------------
def run_child(tree: str, port: int, rule_file: str, out_file: str = "",
              profile: str = "") -> tuple[float, float, int, int]:
    env = dict(os.environ, PYTHONPATH=tree)
    done = subprocess.run([sys.executable, __file__, "--child", str(port), "--rule", rule_file, "--out", out_file,
                           "--profile", profile], env=env, capture_output=True, text=True, cwd="/")
    if done.returncode != 0:
        raise RuntimeError(f"{tree}: {done.stderr[-3000:]}")
    cpu, wall, n, size = done.stdout.split()[-4:]
    return float(cpu), float(wall), int(n), int(size)


def compare(a: Path, b: Path, label: str) -> int:
    ra, oa = pickle.loads(a.read_bytes())
    rb, ob = pickle.loads(b.read_bytes())
    bad = 0
    if len(ra) != len(rb):
        print(f"  {label}: {len(ra)} records against {len(rb)}")
        bad += 1
    for x, y in zip(ra, rb):
        if x != y:
            bad += 1
            if bad <= 10:
                diff = [(fx, fy) for fx, fy in zip(x, y) if fx != fy]
                print(f"  {label}: record differs: {diff[:3]}")
    if oa != ob:
        bad += 1
        print(f"  {label}: failures/problems/cursors differ")
    print(f"  {label}: {len(ra)} records, {'identical' if not bad else f'{bad} differences'}")
    return bad


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--child", type=int)
    ap.add_argument("--rule", default="")
    ap.add_argument("--out", default="")
    ap.add_argument("--profile", default="")
    ap.add_argument("--trees", help="OLD,NEW: directories holding a crm_bridge package")
    ap.add_argument("--mails", type=int, default=22000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--keep-server", action="store_true", help="wait for Enter before stopping Dovecot")
    args = ap.parse_args()
    if args.child is not None:
        child(args.child, args.rule, args.out, args.profile)
        return 0
    sys.path.insert(0, str(ROOT))
    from bench.mailgen import generate_messages
    from bench.realistic import StoreKit
    from crm_bridge.connectors.base import skip_rule
    from tests.imap_server import running_dovecot

    trees = args.trees.split(",")
    tmp = Path(tempfile.mkdtemp(prefix="reader-identity-"))
    bad = 0
    with running_dovecot() as server:
        inbox = args.mails * 10 // 11
        server.drop("alice", "INBOX", generate_messages(inbox, args.seed))
        server.drop("alice", "Sent", generate_messages(args.mails - inbox, args.seed + 1000))
        server.drop("alice", "Hostile", hostile_corpus())
        pw = server.users["alice"]
        os.environ["BENCH_IMAP_PW"] = pw
        kit = StoreKit(tmp / "stores", {"alice": {
            "type": "imap", "host": "127.0.0.1", "port": server.port, "tls": "none", "allow_plaintext": True,
            "username": "alice", "password_env": "BENCH_IMAP_PW", "folders": FOLDERS}}, args.seed)
        from bench.bench_imap import realistic_view

        rule_file = tmp / "rule.pickle"
        rule_file.write_bytes(pickle.dumps(skip_rule(realistic_view(kit))))
        for view, rule in (("realistic", str(rule_file)), ("know-nothing", "")):
            outs = [tmp / f"{view}-{k}.pickle" for k in range(len(trees))]
            for tree, out in zip(trees, outs):
                run_child(tree, server.port, rule, str(out))  # also warms Dovecot's cache
            for out in outs[1:]:
                bad += compare(outs[0], out, f"{view} view, {Path(trees[0]).name} vs {out.stem}")
        times: dict[str, list[tuple[float, float]]] = {t: [] for t in trees}
        for r in range(args.rounds):
            for tree in (trees if r % 2 == 0 else trees[::-1]):
                prof = str(Path(args.profile) / f"{Path(tree).name}.prof") if args.profile and r == 0 else ""
                cpu, wall, n, size = run_child(tree, server.port, str(rule_file), profile=prof)
                times[tree].append((cpu, wall))
                print(f"round {r + 1} {tree}: reader CPU {cpu:.3f} s, wall {wall:.3f} s, {n} records, "
                      f"{size / max(n, 1):.0f} pickled bytes a record", flush=True)
        if args.keep_server:
            input(f"Dovecot on port {server.port}, password {pw}; Enter stops it")
    shutil.rmtree(tmp, ignore_errors=True)
    med = {t: sorted(x[0] for x in v)[len(v) // 2] for t, v in times.items()}
    for t in trees:
        print(f"median reader CPU {t}: {med[t]:.3f} s ({med[t] / args.mails * 1e6:.1f} us a mail)")
    if len(trees) > 1:
        print(f"ratio {trees[1]} / {trees[0]}: {med[trees[1]] / med[trees[0]]:.3f}")
    print("IDENTICAL" if not bad else f"DIFFERENT ({bad})")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
