"""The realistic store every benchmark runs against (issue 9).

A real office has hundreds of customers and most of its mail links; a store
without customers stores every mail as metadata only and links nothing,
which hides every cost that grows with links.  So each benchmark measures
``crm sync`` twice: into a *realistic* store and, as a second line, into the
*bare* store of before (no customers, no contacts).

The realistic store, for the mail of :mod:`bench.mailgen` with seed ``s``:

* 300 customers (``[[customers]]`` in the config): the first 300 of the
  generator's 370 organisation domains, 30 of them with a second domain;
  about 70 % of the generated mail has a participant at one of them
  (the rest: the other 70 firms, freemail, newsletters, colleagues);
* 2,000 contacts from an address book (a ``vcf`` source synced before the
  clock starts): 1,500 of the people who write the mail plus 500 more at
  customer domains who do not, so some senders match by address, some by
  domain (creating contacts), some not at all;
* threads: about 30 % of the generated mail are replies (In-Reply-To and
  References), so threads form and propagate as the mail arrives;
* a blocklist of 40 addresses (30 people who write the mail, 10 newsletter
  senders) and one newsletter domain;
* internal domains: the mailbox owner's and a second one.

:func:`seed_store` syncs the address book once into a template database;
each measured run starts from a copy of it (:func:`fresh_store`).
"""

from __future__ import annotations

import functools
import json
import random
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Mapping

from bench.mailgen import INTERNAL, LISTS, OWNER, correspondents, customer_domains

CUSTOMERS = 300
CONTACTS = 2000
ROOT = Path(__file__).resolve().parent.parent


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return json.dumps(str(value), ensure_ascii=False)


@functools.lru_cache(maxsize=None)
def customers(seed: int = 1) -> list[tuple[str, list[str]]]:
    """(name, domains) of the 300 customers."""
    domains = customer_domains(seed)
    extra = domains[CUSTOMERS:]
    out = []
    for i, dom in enumerate(domains[:CUSTOMERS]):
        name = " ".join(w.title() for w in dom.split(".", 1)[0].split("-")) + f" ({dom.split('.', 1)[1]}, {i})"
        doms = [dom]
        if i % 10 == 0:  # a second domain that no mail comes from (a brand, an old name)
            doms.append(dom.split(".", 1)[0] + "-gruppe.eu")
        out.append((name, doms))
    assert not set(extra) & {d for _n, ds in out for d in ds}
    return out


@functools.lru_cache(maxsize=None)
def _people_at_customers(seed: int) -> list[tuple[str, str, str]]:
    custs = set(customer_domains(seed)[:CUSTOMERS])
    return [p for p in correspondents(seed) if p[2] in custs]


@functools.lru_cache(maxsize=None)
def blocklist(seed: int = 1) -> list[str]:
    people = _people_at_customers(seed)
    rng = random.Random(seed * 31 + 5)
    blocked = [email for _n, email, _d in rng.sample(people, 30)]
    blocked += [f"newsletter@{lst}.de" for lst in LISTS]
    return blocked + [f"{LISTS[0]}.example"]


def address_book(seed: int = 1) -> str:
    """A .vcf with CONTACTS vCards (see the module docstring)."""
    custs = customer_domains(seed)[:CUSTOMERS]
    people = _people_at_customers(seed)
    rng = random.Random(seed * 17 + 3)
    chosen = rng.sample(people, min(1500, len(people)))
    cards = []
    for i, (name, email, dom) in enumerate(chosen):
        first, _, last = name.partition(" ")
        cards.append(_card(f"bench-{i}", first, last, email, dom))
    i = len(cards)
    while len(cards) < CONTACTS:
        dom = custs[i % len(custs)]
        cards.append(_card(f"bench-{i}", "Kontakt", f"Nummer{i}", f"kontakt.{i}@{dom}", dom))
        i += 1
    return "".join(cards)


def _card(uid: str, first: str, last: str, email: str, dom: str) -> str:
    return ("BEGIN:VCARD\r\nVERSION:3.0\r\n"
            f"UID:{uid}\r\nFN:{first} {last}\r\nN:{last};{first};;;\r\nORG:{dom}\r\n"
            f"EMAIL;TYPE=WORK:{email}\r\nTEL;TYPE=WORK:+49 431 {abs(hash(uid)) % 1000000:06d}\r\n"
            "END:VCARD\r\n")


def config_text(store: Path, sources: Mapping[str, Mapping[str, Any]], realistic: bool, seed: int = 1,
                book: Path | None = None) -> str:
    """A crm.toml: the realistic store's settings (or the bare ones) plus ``sources``."""
    lines = [f"[store]\npath = {_toml(str(store))}\n"]
    if realistic:
        lines.append(f"[company]\ninternal_domains = {_toml([INTERNAL, 'nordlicht-service.de'])}\n")
        lines.append(f"[linking]\nblocklist = {_toml(blocklist(seed))}\n")
        for name, domains in customers(seed):
            lines.append(f"[[customers]]\nname = {_toml(name)}\ndomains = {_toml(domains)}\n")
        if book is not None:
            lines.append(f"[sources.addressbook]\ntype = \"vcf\"\npath = {_toml(str(book))}\n")
    else:
        lines.append(f"[company]\ninternal_domains = {_toml([INTERNAL])}\n")
    for name, options in sources.items():
        opts = {"owner": [OWNER], **options}
        lines.append(f"[sources.{name}]\n" + "".join(f"{k} = {_toml(v)}\n" for k, v in opts.items()))
    return "\n".join(lines)


class StoreKit:
    """Configs and fresh stores, realistic or bare, for one benchmark's sources."""

    def __init__(self, work: Path, sources: Mapping[str, Mapping[str, Any]], seed: int = 1):
        self.work = work
        self.sources = sources
        self.seed = seed
        self.book = work / "addressbook.vcf"
        self.template = work / "template-realistic.db"
        self._seeded = False

    def config(self, name: str, realistic: bool) -> Path:
        """A config whose store is ``work/<name>.db`` (removed: each call gives a fresh store)."""
        db = self.work / f"{name}.db"
        for f in self.work.glob(f"{name}.db*"):
            f.unlink()
        if realistic:
            self._seed()
            shutil.copyfile(self.template, db)
        path = self.work / f"{name}.toml"
        path.write_text(config_text(db, self.sources, realistic, self.seed, self.book if realistic else None),
                        encoding="utf-8")
        return path

    def _seed(self) -> None:
        if self._seeded:
            return
        self.work.mkdir(parents=True, exist_ok=True)
        self.book.write_text(address_book(self.seed), encoding="utf-8")
        for f in self.work.glob("template-realistic.db*"):
            f.unlink()
        cfg = self.work / "template.toml"
        cfg.write_text(config_text(self.template, self.sources, True, self.seed, self.book), encoding="utf-8")
        done = subprocess.run([sys.executable, "-m", "crm_bridge.cli", "--config", str(cfg), "sync", "--source", "addressbook"],
                              cwd=ROOT, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"seeding the realistic store failed:\n{done.stdout}\n{done.stderr}")
        # one file: no WAL left beside the template
        import sqlite3

        con = sqlite3.connect(self.template)
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        con.execute("PRAGMA journal_mode=DELETE")
        con.close()
        self._seeded = True

    def summary(self, db: Path) -> dict[str, int]:
        """Counts of a store after a run: customers, contacts, interactions, linked, threads."""
        import sqlite3

        con = sqlite3.connect(db)
        try:
            one = lambda sql: con.execute(sql).fetchone()[0]  # noqa: E731
            tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            out = {"customers": one("SELECT count(*) FROM customers"), "contacts": one("SELECT count(*) FROM contacts"),
                   "interactions": one("SELECT count(*) FROM interactions")}
            if "links" in tables:
                cols = {r[1] for r in con.execute("PRAGMA table_info(links)")}
                if {"interaction_id", "target"} <= cols:
                    out["linked to a customer"] = one(
                        "SELECT count(DISTINCT interaction_id) FROM links WHERE target = 'customer'")
            out["threads of 2 or more"] = one(
                "SELECT count(*) FROM (SELECT thread_id FROM interactions WHERE thread_id IS NOT NULL"
                " GROUP BY thread_id HAVING count(*) > 1)")
            return out
        finally:
            con.close()
