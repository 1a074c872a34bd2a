"""The README's demo: config.example.toml over examples/, as a newcomer runs it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from crm_bridge.crm_core import storebase as store_module  # where Store.migrate reads SCHEMA_VERSION
from crm_bridge.crm_core.store import Store, StoreError
from tests.conftest import Crm

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Crm:
    root = tmp_path_factory.mktemp("demo")
    shutil.copytree(REPO / "examples", root / "examples")
    shutil.copy2(REPO / "config.example.toml", root / "crm.toml")
    crm = Crm(root / "crm.toml")
    crm("sync")
    return crm


def test_sync_twice_leaves_the_same_counts(demo):
    before = demo.json("status")["counts"]
    again = demo.json("sync")
    assert all(r["added"] == 0 and r["status"] == "ok" for r in again["results"])
    assert demo.json("status")["counts"] == before


def test_every_customer_has_a_linked_timeline(demo):
    customers = demo.json("customers", "list")
    assert len(customers) == 6
    for c in customers:
        assert c["interactions"] >= 10 and c["contacts"] >= 2, c
        items = demo.json("timeline", c["name"], "--limit", "0")
        assert {i["kind"] for i in items} == {"mail", "appointment"}, c["name"]


def test_subdomain_customer_and_co_uk_customer(demo):
    kramer = demo.json("customers", "show", "Bauhaus Kramer GmbH & Co. KG")
    emails = " ".join(k["emails"] or "" for k in kramer["contacts_list"])
    assert "@einkauf.bauhaus-kramer.de" in emails
    thornbury = demo.json("timeline", "Thornbury Facilities Ltd", "--limit", "0")
    assert any(i["direction"] == "out" for i in thornbury) and any(i["direction"] == "in" for i in thornbury)


def test_demo_quarantines_the_broken_items_with_reasons(demo):
    entries = demo.json("quarantine", "list")
    by_source = {e["source"]: e for e in entries}
    assert set(by_source) == {"anna-mail"}
    assert "header" in by_source["anna-mail"]["reason"]
    # the card with a broken TEL line is kept without that line (a warning, not a quarantine)
    stadtwerke = demo.json("customers", "show", "Stadtwerke Lindenau GmbH")
    assert "k.brodersen@stadtwerke-lindenau.de" in " ".join(k["emails"] or "" for k in stadtwerke["contacts_list"])


def test_demo_leaves_out_newsletters_internal_mail_and_the_blocked_address(demo):
    store = Store(Path(demo.config).parent / "crm.db")
    reasons = {r for (r,) in store.conn.execute("SELECT DISTINCT reason FROM skipped")}
    assert any(r.startswith("bulk") for r in reasons)
    assert any(r.startswith("internal only") for r in reasons)
    assert "private appointment" in reasons
    bulk = store.conn.execute("SELECT COUNT(*) FROM interactions WHERE bulk != ''").fetchone()[0]
    assert bulk == 0


def test_recurring_appointment_shows_occurrences_with_the_moved_one(demo):
    items = demo.json("timeline", "Stadtwerke Lindenau GmbH", "--limit", "0")
    # the series' occurrences and its moved occurrence (an override: its own row, without the rule)
    jour_fixe = [i for i in items if i["kind"] == "appointment" and i["subject"].startswith("Jour fixe")]
    assert len(jour_fixe) >= 10
    days = {i["date"][:10] for i in jour_fixe}
    assert "2026-04-07" not in days  # EXDATE
    assert "2026-05-13" in days and "2026-05-12" not in days  # moved occurrence


def test_rule_tasks_exist_once(demo):
    tasks = demo.json("tasks", "list", "--all")
    keys = [t["rule_key"] for t in tasks if t["rule_key"]]
    assert keys and len(keys) == len(set(keys))
    demo("sync")
    assert len(demo.json("tasks", "list", "--all")) == len(tasks)


def test_the_demo_office_writes_its_tasks_in_german(demo):
    rule_made = [t for t in demo.json("tasks", "list", "--all") if t["rule_key"]]
    after = [t for t in rule_made if t["rule_key"].startswith("after-appointment:")]
    unanswered = [t for t in rule_made if t["rule_key"].startswith("unanswered:")]
    assert after and all(t["title"].startswith("Nachfassen: ") for t in after)
    assert unanswered and all(t["title"].startswith("Antworten an ") for t in unanswered)
    assert all(t["description"].startswith(("Nach dem Ende des Termins", "Eine E-Mail des Kunden")) for t in rule_made)


def test_init_writes_a_config_and_a_store(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    crm = Crm(tmp_path / "crm.toml")
    result = crm("init", "--demo")
    assert (tmp_path / "crm.toml").exists() and "store ready" in result.output
    assert (tmp_path / "crm.toml").read_text() == (REPO / "config.example.toml").read_text()


def test_schema_is_versioned_and_migrated_forward(tmp_path, monkeypatch):
    path = tmp_path / "crm.db"
    Store(path).close()
    monkeypatch.setattr(store_module, "SCHEMA_VERSION", store_module.SCHEMA_VERSION + 1)
    monkeypatch.setitem(store_module.MIGRATIONS, store_module.SCHEMA_VERSION,
                        lambda s: s.conn.execute("ALTER TABLE customers ADD COLUMN note TEXT"))
    migrated = Store(path)
    assert migrated.schema_version() == store_module.SCHEMA_VERSION
    assert "note" in migrated.db["customers"].columns_dict
    migrated.close()
    monkeypatch.setattr(store_module, "SCHEMA_VERSION", store_module.SCHEMA_VERSION - 1)
    with pytest.raises(StoreError, match="newer crm-bridge"):
        Store(path)


def test_a_first_import_makes_no_overdue_task(demo):
    from datetime import date

    rule_made = [t for t in demo.json("tasks", "list", "--all") if t["rule_key"]]
    assert rule_made and all(t["due"] >= date.today().isoformat() for t in rule_made), rule_made
