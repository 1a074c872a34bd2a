"""``crm serve`` under load: a customer page with 10,000 interactions, the search page and the review queue.

    PYTHONPATH=/path/to/link python bench/bench_web.py [--sizes 20000,200000] [--no-write]

For each size a store is generated straight into SQLite (the same schema,
triggers and indexes a sync fills): 2,000 customers with a domain each, one
customer ("Gross AG") with 10,000 mails, the rest spread over the others;
a tenth of the mail unmatched (metadata only) from 3,000 unknown senders,
for the review queue; one mail every ten minutes back from now, so a bigger
store is a longer history (20,000: 4.6 months; 200,000: 3.8 years).  ``crm serve`` (waitress) is started on it and each
page is fetched 20 times with a plain HTTP client (urllib, one logged-in
session); the figure is the median round trip on loopback, an upper bound of
the server time.  Writes the section "web" of bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import http.cookiejar
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
import urllib.parse
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from bench._results import write_section  # noqa: E402

PAGES = {"customer page (10,000 items)": "/customers/1", "customer page, page 50": None,
         "search": "/search?q=Wartungsvertrag", "review queue": "/review"}


def build(path: Path, size: int, customers: int = 2000) -> None:
    from crm_bridge.crm_core.store import Store
    from crm_bridge.crm_core.users import Users

    store = Store(path)
    Users(store).add("bench", "bench-password", "admin")
    conn = store.conn
    now = datetime.now(timezone.utc)
    conn.execute("BEGIN")
    for n in range(1, customers + 1):
        conn.execute("INSERT INTO customers(id, name, created_at) VALUES (?, ?, 'x')",
                     (n, "Gross AG" if n == 1 else f"Kunde {n} GmbH"))
        conn.execute("INSERT INTO customer_domains VALUES (?, ?)", (f"kunde{n}.example", n))
    for n in range(1, size + 1):
        big = n <= 10000
        unmatched = not big and n % 10 == 0
        cid = 1 if big else 2 + n % (customers - 1)
        # one mail every ten minutes going back from now: a bigger store has a longer history
        date = (now - timedelta(minutes=10 * n)).strftime("%Y-%m-%dT%H:%M:%SZ")
        word = "Wartungsvertrag" if n % 100 == 0 else "Angebot"
        conn.execute(
            "INSERT INTO interactions(id, kind, dedup_key, date, subject, snippet, visibility, created_at, updated_at)"
            " VALUES (?, 'mail', ?, ?, ?, ?, ?, 'x', 'x')",
            (n, f"gen:{n}", date, None if unmatched else f"{word} {n}", None if unmatched else f"Text zu {word} {n}",
             "metadata" if unmatched else "snippet"))
        sender = f"u{n % 3000}@unbekannt{n % 700}.example" if unmatched else f"p{n % 7}@kunde{cid}.example"
        conn.execute("INSERT INTO participants VALUES (?, ?, '', 'from', '')", (n, sender))
        conn.execute("INSERT INTO participants VALUES (?, 'anna@firma.example', '', 'to', '')", (n,))
        conn.execute("INSERT INTO locations VALUES ('mail', 'INBOX', ?, 'interaction', ?, '', '', 'x', NULL)",
                     (str(n), n))
        if not unmatched:
            conn.execute("INSERT INTO links VALUES (?, 'customer', ?, 'domain')", (n, cid))
    conn.execute("INSERT INTO interactions_fts(interactions_fts) VALUES ('rebuild')")  # mail's text: by the batch
    conn.execute("COMMIT")
    conn.execute("ANALYZE")
    store.close()


def measure(root: Path, size: int, port: int) -> dict[str, float]:
    db = root / "crm.db"
    build(db, size)
    (root / "crm.toml").write_text('[store]\npath = "crm.db"\n[company]\ninternal_domains = ["firma.example"]\n')
    proc = subprocess.Popen([sys.executable, "-m", "crm_bridge.cli", "--config", str(root / "crm.toml"), "serve",
                             "--port", str(port)], cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        jar = http.cookiejar.CookieJar()
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
        for _ in range(100):
            try:
                page = opener.open(base + "/login").read().decode()
                break
            except OSError:
                time.sleep(0.1)
        token = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
        opener.open(base + "/login", urllib.parse.urlencode(
            {"csrf": token, "name": "bench", "password": "bench-password"}).encode()).read()
        urls = dict(PAGES)
        url = "/customers/1"
        for _ in range(49):  # follow "older" to page 50
            html = opener.open(base + url).read().decode()
            url = re.search(r'href="([^"]+)" id="older"', html).group(1).replace("&amp;", "&")
        urls["customer page, page 50"] = url
        out = {}
        for name, url in urls.items():
            assert url is not None
            opener.open(base + url).read()  # warm
            times = []
            for _ in range(20):
                started = time.perf_counter()
                opener.open(base + url).read()
                times.append(time.perf_counter() - started)
            out[name] = statistics.median(times) * 1000
        return out
    finally:
        proc.terminate()
        proc.wait(10)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="20000,200000")
    ap.add_argument("--port", type=int, default=18080)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    results = {}
    for size in sizes:
        root = HERE / "work" / f"web-{size}"
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True)
        results[size] = measure(root, size, args.port)
        shutil.rmtree(root, ignore_errors=True)
        print(size, {k: f"{v:.1f} ms" for k, v in results[size].items()}, flush=True)
    head = "| page | " + " | ".join(f"{s:,} interactions" for s in sizes) + " |"
    lines = [head, "|---|" + "---|" * len(sizes)]
    for name in PAGES:
        lines.append(f"| {name} | " + " | ".join(f"{results[s][name]:.1f} ms" for s in sizes) + " |")
    text = ("2,000 customers; one with 10,000 mails; a tenth of the mail unmatched from 3,000 unknown senders; "
            "a mail every 10 minutes back from now (a bigger store: a longer history; the review queue "
            "looks at the last 180 days). "
            "Median of 20 requests over loopback (urllib, logged in), waitress, one request at a time.\n\n"
            + "\n".join(lines))
    print(text)
    if not args.no_write:
        write_section("web", f"## crm serve (bench/bench_web.py)\n\n`python bench/bench_web.py --sizes {args.sizes}`"
                             f"\n\n{text}")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
