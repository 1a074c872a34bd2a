"""`crm sync` of a 2,000-item Microsoft 365 mailbox killed with SIGKILL, then run again, ends as a clean run ends.

The Graph emulator runs in the test process; `python -m crm_bridge.cli sync`
runs as its own process against it with small delta pages (many commit
points).  It is killed after a random time and right after a number of
commits (``CRM_FAULT_KILL_AFTER_COMMITS``); the rerun must leave the store
equal, table by table, to an uninterrupted run.
"""

from __future__ import annotations


import pytest

from tests.conftest import write_config
from tests.crash_run import kill_and_rerun
from tests.graph_emulator import GraphEmulator, populate

SECRET_ENV = "CRM_TEST_M365_CRASH_SECRET"


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("m365-crash")
    emulator = GraphEmulator()
    emulator.add_app("crash-app", "crash-secret")
    mb = emulator.store.add_mailbox("anna@stadtwerke-kunde.example", "Anna")
    populate(mb, mails=1800, events=100, contacts=100)
    with emulator:
        write_config(root / "crm.toml", internal=("stadtwerke-kunde.example",),
                     customers=(("Kunde Null GmbH", ["kunde0.example"]), ("Kunde Drei KG", ["kunde3.example"])),
                     sources={"anna": {"type": "m365", "tenant": emulator.tenant, "client_id": "crash-app",
                                       "client_secret_env": SECRET_ENV, "authority": emulator.authority,
                                       "graph_url": emulator.graph_url, "ca_file": str(emulator.ca_file),
                                       "mailbox": "anna@stadtwerke-kunde.example",
                                       "owner": ["anna@stadtwerke-kunde.example"], "page_size": 50}})
        yield root


@pytest.mark.slow
def test_killed_m365_sync_then_rerun_equals_clean_run(setup):
    expected, killed, timed_kills = kill_and_rerun(setup, {SECRET_ENV: "crash-secret"}, seed=12, timed_runs=3,
                                                   commits=(1, 2, 5, 13, 30))
    assert len(expected["interactions"]) >= 1900 and expected["links"]
    assert killed >= 4 and timed_kills >= 1, (killed, timed_kills)
