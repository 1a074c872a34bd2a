"""A folder that did not change is told by STATUS, without EXAMINE (against Dovecot).

With CONDSTORE, STATUS (UIDVALIDITY UIDNEXT MESSAGES HIGHESTMODSEQ) equal to what the last complete pass
saw means nothing came, went or changed flags, so the connector skips the EXAMINE.  Each run here uses a
new connector, as each ``crm sync`` does, unless the test says otherwise.
"""

from __future__ import annotations

import os
import time

import pytest
from imapclient import IMAPClient

from tests.imap_server import dovecot  # noqa: F401  (fixture)
from tests.test_imap import MemoryView, connector, mail


@pytest.fixture
def calls(monkeypatch):
    """The mailbox commands the connector sends, in order: ("EXAMINE"|"STATUS"|"LIST", folder)."""
    log: list[tuple[str, str]] = []
    select, status, listing = IMAPClient.select_folder, IMAPClient.folder_status, IMAPClient.list_folders

    def select_folder(self, folder, readonly=False):
        log.append(("EXAMINE", folder))
        return select(self, folder, readonly)

    def folder_status(self, folder, what=None):
        log.append(("STATUS", folder))
        return status(self, folder, what)

    def list_folders(self, directory="", pattern="*"):
        log.append(("LIST", pattern))
        return listing(self, directory, pattern)

    monkeypatch.setattr(IMAPClient, "select_folder", select_folder)
    monkeypatch.setattr(IMAPClient, "folder_status", folder_status)
    monkeypatch.setattr(IMAPClient, "list_folders", list_folders)
    return log


def _synced(server) -> MemoryView:
    server.append("alice", "INBOX", [mail(i) for i in range(5)])
    server.append("alice", "Sent", mail(50))
    view = MemoryView()
    view.sync(connector(server))
    assert len(view.records) == 6
    return view


def test_an_unchanged_folder_gets_a_status_before_list_and_no_examine(dovecot, calls):
    view = _synced(dovecot)
    view.sync(connector(dovecot))  # learns the folders' server names (a cursor of an older crm has none)
    calls.clear()
    batches = view.sync(connector(dovecot))
    assert not any(b.records or b.changes or b.removed for b in batches)
    assert calls == [("STATUS", "INBOX"), ("STATUS", "Sent"), ("LIST", "*")]
    assert all(st["name"] for st in view.cursor["folders"].values())


def test_a_cursor_without_server_names_learns_them_on_an_unchanged_run(dovecot, calls):
    view = _synced(dovecot)
    for st in view.cursor["folders"].values():
        st.pop("name")  # as stored by the crm before
    calls.clear()
    batches = view.sync(connector(dovecot))
    assert not any(b.records or b.changes or b.removed for b in batches)
    assert ("EXAMINE", "INBOX") not in calls and calls.index(("LIST", "*")) == 0  # STATUS after LIST, no EXAMINE
    assert {s: st["name"] for s, st in view.cursor["folders"].items()} == {"INBOX": "INBOX", "Sent": "Sent"}


def _drop_outside(server) -> None:
    time.sleep(1.1)  # a new second: the Maildir's mtime moves
    server.drop("alice", "INBOX", [mail(90)], resync=False)


def _flag_by_another_client(server) -> None:
    with server.client("alice") as c:
        c.select_folder("INBOX")
        c.add_flags([2], ["\\Flagged"])


def _delete_outside(server) -> None:
    time.sleep(1.1)
    os.unlink(server.maildir_files("alice")[3])


def _append(server) -> None:
    server.append("alice", "Sent", mail(91))


def _new_uidvalidity(server) -> None:
    server.set_uidvalidity("alice", "INBOX")


@pytest.mark.parametrize("reuse", [False, True], ids=["new-connection", "kept-connection"])
@pytest.mark.parametrize("change", [_drop_outside, _flag_by_another_client, _delete_outside, _append, _new_uidvalidity],
                         ids=["dropped-into-maildir", "flag-by-another-client", "file-deleted", "appended",
                              "uidvalidity"])
def test_every_kind_of_change_between_runs_is_found(dovecot, calls, change, reuse):
    view = _synced(dovecot)
    conn = connector(dovecot)
    view.sync(conn if reuse else connector(dovecot))  # unchanged: the folders' server names learnt
    if reuse:  # as `crm sync --watch` keeps it: INBOX stays EXAMINEd in this session, where a STATUS may be stale
        dovecot.append("alice", "INBOX", mail(80))
        view.sync(conn)
        assert conn._selected == "INBOX"
    before = view.snapshot()
    change(dovecot)
    calls.clear()
    batches = view.sync(conn if reuse else connector(dovecot))
    after = view.snapshot()
    if change is _drop_outside:
        assert len(after["INBOX"]) == len(before["INBOX"]) + 1
    elif change is _flag_by_another_client:
        assert [c.flags for b in batches for c in b.changes] == [("\\Flagged",)]
    elif change is _delete_outside:
        assert len(after["INBOX"]) == len(before["INBOX"]) - 1 and any(b.removed for b in batches)
    elif change is _append:
        assert len(after["Sent"]) == 2 and after["INBOX"] == before["INBOX"]
    else:
        assert set(after["INBOX"]).isdisjoint(before["INBOX"]) and len(after["INBOX"]) == len(before["INBOX"])
    changed = "Sent" if change is _append else "INBOX"
    assert ("EXAMINE", changed) in calls
    other = "INBOX" if changed == "Sent" else "Sent"
    if not (reuse and other == "INBOX"):  # the other one: STATUS only, but for the mailbox this session has open
        assert ("EXAMINE", other) not in calls
    calls.clear()
    batches = view.sync(conn if reuse else connector(dovecot))  # and then quiet again
    assert not any(b.records or b.changes or b.removed for b in batches)
    assert view.snapshot() == after


def test_without_condstore_every_folder_is_examined(dovecot, calls):
    view = _synced(dovecot)
    calls.clear()
    view.sync(connector(dovecot, use_condstore=False))
    assert ("EXAMINE", "INBOX") in calls and ("EXAMINE", "Sent") in calls
    assert not [c for c in calls if c[0] == "STATUS"]
