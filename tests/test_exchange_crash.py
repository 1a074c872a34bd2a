"""`crm sync` of a 2,000-item Exchange mailbox killed with SIGKILL, then run again, ends as a clean run ends.

The emulator runs in the test process; `python -m crm_bridge.cli sync` runs as its own
process against it with small SyncFolderItems pages, so there are many
commit points.  It is killed after a random time, and right after a
sequence of commits (the store's ``CRM_FAULT_KILL_AFTER_COMMITS``); the
rerun must leave the store equal, table by table, to an uninterrupted run.
"""

from __future__ import annotations


import pytest

from tests.conftest import write_config
from tests.crash_run import kill_and_rerun
from tests.ews_emulator import EwsEmulator, populate

PW_ENV = "CRM_TEST_EWS_CRASH_PW"


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("ews-crash")
    emulator = EwsEmulator()
    emulator.store.add_user("svc-crm", "crash-pw", impersonation=True)
    emulator.store.add_user("anna", "anna-pw", mailbox="anna@stadtwerke-kunde.example")
    populate(emulator.store, "anna@stadtwerke-kunde.example", mails=1800, events=100, contacts=100)
    write_config(root / "crm.toml", internal=("stadtwerke-kunde.example",),
                 customers=(("Stadtwerke Lindenau GmbH", ["stadtwerke-lindenau.de"]),
                            ("Bauhaus Kramer KG", ["bauhaus-kramer.de"])),
                 sources={"anna": {"type": "exchange", "server": emulator.url, "allow_plaintext": True,
                                   "username": "svc-crm", "password_env": PW_ENV, "auth": "basic",
                                   "access": "impersonation", "mailbox": "anna@stadtwerke-kunde.example",
                                   "owner": ["anna@stadtwerke-kunde.example"], "page_size": 50}})
    with emulator:
        yield root


@pytest.mark.slow
def test_killed_exchange_sync_then_rerun_equals_clean_run(setup):
    # commit kills: the first pages of each folder and points across the mail
    expected, killed, timed_kills = kill_and_rerun(setup, {PW_ENV: "crash-pw"}, seed=11, timed_runs=4,
                                                   commits=(1, 2, 3, 7, 13, 21, 34))
    assert len(expected["interactions"]) >= 1900 and expected["links"]
    assert killed >= 5 and timed_kills >= 2, (killed, timed_kills)
