"""The IMAP reader asks the store its questions before its first batch (against Dovecot).

In ``crm sync`` the connector runs in a reader process, and a question it
asks the store (``SourceView.known``, ``skip_rule``) after handing on a batch
is answered once the store has stored every batch before it: the reader
waits, then the store does.  Asked per folder, that made a first sync of
22,000 mails in 50 folders take 1.7x the time of the same mail in two.
"""

from __future__ import annotations

import pytest

from tests.imap_server import dovecot  # noqa: F401  (fixture)
from tests.test_imap import MemoryView, connector, mail

FOLDERS = ["INBOX", "Alpha", "Beta", "Gamma", "Delta", "Epsilon"]


class AskingView(MemoryView):
    """A MemoryView that notes each question, and which came after a batch of the same pull."""

    def __init__(self) -> None:
        super().__init__()
        self.handed = 0
        self.asked: list[str] = []
        self.late: list[str] = []

    def _note(self, what: str) -> None:
        self.asked.append(what)
        if self.handed:
            self.late.append(what)

    def known(self, scope: str) -> dict[str, str]:
        self._note(f"known({scope})")
        return dict(super().known(scope))

    def scopes(self) -> list[str]:
        self._note("scopes()")
        return super().scopes()

    def skip_rule(self):
        self._note("skip_rule()")
        return None

    def sync(self, conn) -> list:
        self.handed = 0
        self.asked, self.late = [], []
        batches = []
        for batch in conn.pull(self.cursor, self):
            self.apply(batch)
            self.handed += 1
            batches.append(batch)
        return batches


def _fill(server, per_folder: int, start: int = 0) -> None:
    for f, folder in enumerate(FOLDERS):
        server.append("alice", folder, [mail(1000 * f + start + i) for i in range(per_folder)])


def _reader(server):
    return connector(server, folders=FOLDERS, batch_size=2)


def test_a_first_sync_of_many_folders_asks_everything_before_its_first_batch(dovecot):
    _fill(dovecot, 5)
    view = AskingView()
    batches = view.sync(_reader(dovecot))
    assert {scope for scope, _ in view.records} == set(FOLDERS) and len(view.records) == 30
    assert sum(1 for b in batches if b.records) >= 3 * len(FOLDERS)  # several batches a folder
    assert view.late == []
    assert view.asked.count("skip_rule()") == 1
    assert sorted(q for q in view.asked if q.startswith("known")) == sorted(f"known({f})" for f in FOLDERS)


@pytest.mark.parametrize("reuse", [False, True], ids=["new connection", "kept connection"])
def test_changes_in_every_folder_are_read_with_the_questions_asked_first(dovecot, reuse):
    """New mail in each folder and a deletion in two: all of it found; the known locations read only for
    the two (the others' STATUS tells that nothing left them), before the first batch; on a kept connection
    (``--watch``) the open folder is asked in its turn."""
    _fill(dovecot, 4)
    view = AskingView()
    conn = _reader(dovecot)
    view.sync(conn)
    assert len(view.records) == 24
    _fill(dovecot, 2, start=100)
    for folder in ("Beta", "Epsilon"):
        with dovecot.client("alice") as c:
            c.select_folder(folder)
            c.delete_messages([c.search("ALL")[0]])
            c.expunge()
    batches = view.sync(conn if reuse else _reader(dovecot))
    assert len(view.records) == 24 + 12 - 2
    assert sorted(loc.scope for loc in view.removed) == ["Beta", "Epsilon"]
    assert sum(len(b.records) for b in batches) == 12
    assert sorted(q for q in view.asked if q.startswith("known")) == ["known(Beta)", "known(Epsilon)"]
    selected = [] if not reuse else [f"known({FOLDERS[-1]})"]  # the folder the kept connection has open
    assert view.late == selected
    assert view.asked.count("skip_rule()") == 1


def test_known_locations_are_read_only_where_mail_may_have_left(dovecot):
    """A folder STATUS calls unchanged, or one that only got new mail (as many more mails as UIDs given
    out) is not compared: its known locations are not read (a big folder's cost time and memory); one
    that lost a mail is."""
    _fill(dovecot, 3)
    view = AskingView()
    view.sync(_reader(dovecot))
    view.sync(_reader(dovecot))  # learns the server names the STATUS before LIST needs
    dovecot.append("alice", "Gamma", [mail(9999)])
    batches = view.sync(_reader(dovecot))
    assert [r.message_id for b in batches for r in b.records] == ["m9999@kunde.example"]
    assert [q for q in view.asked if q.startswith("known")] == []
    with dovecot.client("alice") as c:  # one came and went (UIDNEXT moved by two, the count by one)
        c.select_folder("Gamma")
        c.append("Gamma", mail(9998))
        c.delete_messages([max(c.search("ALL"))])
        c.expunge()
    with dovecot.client("alice") as c:  # and an old one went
        c.select_folder("Alpha")
        c.delete_messages([min(c.search("ALL"))])
        c.expunge()
    view.sync(_reader(dovecot))
    assert sorted(q for q in view.asked if q.startswith("known")) == ["known(Alpha)", "known(Gamma)"]
    assert [loc.scope for loc in view.removed] == ["Alpha"] and len(view.records) == 18
    view.sync(_reader(dovecot))
    assert [q for q in view.asked if q.startswith("known")] == []


def test_a_folders_end_rides_with_its_last_batch_of_new_mail(dovecot):
    """A first sync: a folder's last batch carries its complete-pass cursor (no batch, so no transaction,
    of its own); when the end has something to say (a removal), it still comes in a batch after the mail."""
    _fill(dovecot, 5)
    view = AskingView()
    batches = view.sync(_reader(dovecot))
    per_folder = {f: [b for b in batches if b.records and b.records[0].location.scope == f] for f in FOLDERS}
    assert all(len(bs) == 3 for bs in per_folder.values())  # 5 mails, 2 a batch
    assert len(batches) == 3 * len(FOLDERS)
    for f, bs in per_folder.items():
        state = bs[-1].cursor["folders"][f]
        assert state["uidnext"] and state["exists"] == 5 and state["last_uid"] == 5, f
        assert all(b.cursor["folders"][f]["uidnext"] == 0 for b in bs[:-1])  # a pass still running
    assert view.sync(_reader(dovecot)) == []  # the state was complete: STATUS tells nothing changed
    assert [q for q in view.asked if q.startswith("known")] == []

    with dovecot.client("alice") as c:
        c.select_folder("Beta")
        c.delete_messages([c.search("ALL")[0]])
        c.expunge()
    dovecot.append("alice", "Beta", [mail(5555)])
    batches = view.sync(_reader(dovecot))
    assert [(len(b.records), len(b.removed)) for b in batches if b.records or b.removed] == [(1, 0), (0, 1)]
