"""``crm serve`` under load: a customer page with 10,000 interactions, the search page and the review queue.

    PYTHONPATH=/path/to/link python bench/bench_web.py [--sizes 20000,200000] [--no-write]

For each size a store is generated straight into SQLite (the same schema,
triggers and indexes a sync fills): 2,000 customers with a domain each, one
customer ("Gross AG") with 10,000 mails, all from one contact (Petra Gross,
/contacts/1), the rest spread over the others; a follow-up task every 100
mails (open while less than two weeks overdue, done after: the open ones stay
a few dozen, the done ones grow with the store); the word "Wartungsvertrag"
in 1% of the linked mail (a search finds more in a bigger store);
a tenth of the mail unmatched (metadata only) from 3,000 unknown senders,
for the review queue; one mail every ten minutes back from now, so a bigger
store is a longer history (20,000: 4.6 months; 200,000: 3.8 years).  ``crm serve`` (waitress) is started on it and each
page is fetched 20 times with a plain HTTP client (urllib, one logged-in
session), the sizes' servers asked in turn; the figure is the median round
trip on loopback, an upper bound of the server time.  Writes the section "web" of bench/RESULTS.md.
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
         "contact page (10,000 items)": "/contacts/1", "search": "/search?q=Wartungsvertrag",
         "review queue": "/review", "tasks (mine, open)": "/tasks", "tasks (everyone's, open)": "/tasks?who=all",
         "customers list": "/customers"}


def build(path: Path, size: int, customers: int = 2000) -> None:
    from crm_bridge.crm_core.store import Store
    from crm_bridge.crm_core.users import Users

    store = Store(path)
    Users(store).add("bench", "bench-password", "admin")
    conn = store.conn
    now = datetime.now(timezone.utc)
    conn.execute("BEGIN")
    conn.execute("INSERT INTO contacts(id, name, customer_id, origin, created_at) VALUES (1, 'Petra Gross', 1, 'x', 'x')")
    conn.execute("INSERT INTO contact_addresses VALUES ('petra@kunde1.example', 1)")
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
        # the search word in 1% of the linked mail: more matches in a bigger store
        word = "Wartungsvertrag" if n % 100 == 5 else "Angebot"
        conn.execute(
            "INSERT INTO interactions(id, kind, dedup_key, date, subject, snippet, visibility, created_at, updated_at)"
            " VALUES (?, 'mail', ?, ?, ?, ?, ?, 'x', 'x')",
            (n, f"gen:{n}", date, None if unmatched else f"{word} {n}", None if unmatched else f"Text zu {word} {n}",
             "metadata" if unmatched else "snippet"))
        sender = (f"u{n % 3000}@unbekannt{n % 700}.example" if unmatched else "petra@kunde1.example" if big
                  else f"p{n % 7}@kunde{cid}.example")
        conn.execute("INSERT INTO participants VALUES (?, ?, '', 'from', '')", (n, sender))
        conn.execute("INSERT INTO participants VALUES (?, 'anna@firma.example', '', 'to', '')", (n,))
        conn.execute("INSERT INTO locations VALUES ('mail', 'INBOX', ?, 'interaction', ?, '', '', 'x', NULL)",
                     (str(n), n))
        if not unmatched:
            conn.execute("INSERT INTO links VALUES (?, 'customer', ?, 'domain')", (n, cid))
        if big:
            conn.execute("INSERT INTO links VALUES (?, 'contact', 1, 'address')", (n,))
        if n % 100 == 50:  # a follow-up task every 100 mails, due a week later: done once two weeks past
            due = (now - timedelta(minutes=10 * n) + timedelta(days=7)).strftime("%Y-%m-%d")
            done = due < (now - timedelta(days=14)).strftime("%Y-%m-%d")
            conn.execute(
                "INSERT INTO tasks(uid, title, due, status, customer_id, interaction_id, created_at, updated_at,"
                " assignee) VALUES (?, ?, ?, ?, ?, ?, 'x', 'x', ?)",
                (f"task-{n}", f"Nachfassen {n}", due, "done" if done else "open", cid, n,
                 "bench" if n % 200 == 50 else "other"))
    conn.execute("INSERT INTO interactions_fts(interactions_fts) VALUES ('rebuild')")  # mail's text: by the batch
    conn.execute("COMMIT")
    conn.execute("ANALYZE")
    store.close()


class Server:
    """``crm serve`` on a generated store, with a logged-in HTTP client."""

    def __init__(self, root: Path, size: int, port: int):
        build(root / "crm.db", size)
        (root / "crm.toml").write_text('[store]\npath = "crm.db"\n[company]\ninternal_domains = ["firma.example"]\n')
        self.proc = subprocess.Popen([sys.executable, "-m", "crm_bridge.cli", "--config", str(root / "crm.toml"),
                                      "serve", "--port", str(port)], cwd=root, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        self.base = f"http://127.0.0.1:{port}"
        jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
        for _ in range(100):
            try:
                page = self.get("/login")
                break
            except OSError:
                time.sleep(0.1)
        token = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
        self.opener.open(self.base + "/login", urllib.parse.urlencode(
            {"csrf": token, "name": "bench", "password": "bench-password"}).encode()).read()
        self.urls = dict(PAGES)
        url = "/customers/1"
        for _ in range(49):  # follow "older" to page 50
            url = re.search(r'href="([^"]+)" id="older"', self.get(url)).group(1).replace("&amp;", "&")
        self.urls["customer page, page 50"] = url

    def get(self, url: str) -> str:
        return self.opener.open(self.base + url).read().decode()

    def timed(self, name: str) -> float:
        started = time.perf_counter()
        self.get(self.urls[name])
        return time.perf_counter() - started

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="20000,200000")
    ap.add_argument("--port", type=int, default=18080)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    servers: dict[int, Server] = {}
    try:
        for n, size in enumerate(sizes):
            root = HERE / "work" / f"web-{size}"
            shutil.rmtree(root, ignore_errors=True)
            root.mkdir(parents=True)
            servers[size] = Server(root, size, args.port + n)
        # the sizes side by side: each round asks every server once, so what else the machine does
        # falls on all sizes alike
        times: dict[tuple[int, str], list[float]] = {(s, name): [] for s in sizes for name in PAGES}
        for name in PAGES:
            for size in sizes:
                servers[size].timed(name)  # warm
            for _ in range(20):
                for size in sizes:
                    times[size, name].append(servers[size].timed(name))
    finally:
        for server in servers.values():
            server.stop()
        for size in sizes:
            shutil.rmtree(HERE / "work" / f"web-{size}", ignore_errors=True)
    results = {s: {name: statistics.median(times[s, name]) * 1000 for name in PAGES} for s in sizes}
    head = "| page | " + " | ".join(f"{s:,} interactions" for s in sizes) + " |"
    ratio = len(sizes) == 2
    lines = [head[:-2] + (" | ratio |" if ratio else " |"), "|---|" + "---|" * (len(sizes) + ratio)]
    for name in PAGES:
        lines.append(f"| {name} | " + " | ".join(f"{results[s][name]:.1f} ms" for s in sizes)
                     + (f" | {results[sizes[1]][name] / results[sizes[0]][name]:.2f} |" if ratio else " |"))
    text = ("2,000 customers; one with 10,000 mails, all from one contact; a tenth of the mail unmatched from "
            "3,000 unknown senders; a task every 100 mails (open ones: a few dozen); the search word in 1% of "
            "the linked mail; a mail every 10 minutes back from now (a bigger store: a longer history; the review "
            "queue looks at the last 180 days). Median of 20 requests over loopback (urllib, logged in), waitress, "
            "one request at a time, the two sizes' servers asked in turn.\n\n"
            + "\n".join(lines))
    print(text)
    if not args.no_write:
        write_section("web", f"## crm serve (bench/bench_web.py)\n\n`python bench/bench_web.py --sizes {args.sizes}`"
                             f"\n\n{text}")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
