"""SyncFolderItems pages: the next request leaves as soon as this page's SyncState is read (connectors/ewspages.py)."""

from __future__ import annotations

import time

from crm_bridge.connectors import ewsitems, ewspages
from crm_bridge.connectors.ewspages import peek
from tests.ews_emulator.soap import to_bytes
from tests.test_exchange import ews, mail, pull  # noqa: F401  (ews: fixture)

OPTS = dict(page_size=3, calendar=False, contacts=False, folders=["inbox"])


def arrivals(ews) -> list[float]:
    """Records when each SyncFolderItems request reaches the emulator."""
    seen: list[float] = []
    original = ews.take_fault

    def take(operation):
        if operation == "SyncFolderItems":
            seen.append(time.monotonic())
        return original(operation)

    ews.take_fault = take
    return seen


def pulled_slowly(ews, monkeypatch, n: int):
    """``n`` mails pulled as they are, then again with each mail's parsing 0.1 s slower (0.3 s a page of three):
    (the plain pull, the slow pull, when each SyncFolderItems request of the slow one arrived)."""
    for k in range(n):
        mail(ews, f"Mail {k}")
    plain = pull(ews, **OPTS)
    parse = ewsitems.XmlMessage.__init__

    def slow_parse(self, elem):
        time.sleep(0.1)
        parse(self, elem)

    monkeypatch.setattr(ewsitems.XmlMessage, "__init__", slow_parse)
    seen = arrivals(ews)
    return plain, pull(ews, **OPTS), seen


def same_pages(got, plain) -> bool:
    """The same pages with the same mails and cursors, in order."""
    return ([[r.subject for r in b.records] for b in got.batches] == [[r.subject for r in b.records] for b in plain.batches]
            and [b.cursor for b in got.batches] == [b.cursor for b in plain.batches])


def test_the_next_page_is_asked_for_before_this_one_is_parsed(ews, monkeypatch):
    plain, got, seen = pulled_slowly(ews, monkeypatch, 9)
    assert len(seen) == 3
    gaps = [b - a for a, b in zip(seen, seen[1:])]
    assert gaps[0] < 0.2, gaps  # the second request left before the first page was parsed (that takes 0.3 s)
    assert same_pages(got, plain)


def test_the_page_thread_follows_the_chain_several_pages_ahead(ews, monkeypatch):
    """The thread asks for page k+2 as soon as page k+1's answer is in, not when the connector takes that answer up
    (after the engine stored page k): the server never waits for the store while pages are left."""
    plain, got, seen = pulled_slowly(ews, monkeypatch, 12)
    assert len(seen) == 4
    assert ewspages.READ_AHEAD >= 3
    assert seen[3] - seen[0] < 0.25, seen  # pages 2-4 were asked for while page 1 was parsed (0.3 s)
    assert same_pages(got, plain)


def test_an_answer_peek_cannot_read_still_gets_its_next_page(ews, monkeypatch):
    for n in range(7):
        mail(ews, f"Mail {n}")
    plain = pull(ews, **OPTS)
    monkeypatch.setattr(ewspages, "peek", lambda content: None)
    got = pull(ews, **OPTS)
    assert [b.cursor for b in got.batches] == [b.cursor for b in plain.batches]
    assert sum(len(b.records) for b in got.batches) == 7


def test_peek_reads_only_a_successful_answer():
    from tests.ews_emulator.soap import fault

    ok = (b'<?xml version="1.0" encoding="utf-8"?><s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/">'
          b'<s:Body><m:SyncFolderItemsResponse xmlns:m="http://schemas.microsoft.com/exchange/services/2006/messages"'
          b' xmlns:t="http://schemas.microsoft.com/exchange/services/2006/types"><m:ResponseMessages>'
          b'<m:SyncFolderItemsResponseMessage ResponseClass="%s"><m:ResponseCode>%s</m:ResponseCode>'
          b'<m:SyncState>H4sIAAA=</m:SyncState><m:IncludesLastItemInRange>%s</m:IncludesLastItemInRange>'
          b'<m:Changes><t:Create/></m:Changes></m:SyncFolderItemsResponseMessage></m:ResponseMessages>'
          b'</m:SyncFolderItemsResponse></s:Body></s:Envelope>')
    assert peek(ok % (b"Success", b"NoError", b"false")) == ("H4sIAAA=", False)
    assert peek(ok % (b"Success", b"NoError", b"true")) == ("H4sIAAA=", True)
    assert peek(ok % (b"Error", b"ErrorInvalidSyncStateData", b"false")) is None
    assert peek(ok % (b"Warning", b"NoError", b"false")) is None
    assert peek(to_bytes(fault("ErrorServerBusy", "busy", {"BackOffMilliseconds": "100"}))) is None
    assert peek(b"<html>503</html>") is None and peek(b"not xml") is None


def test_a_fault_on_the_page_asked_for_ahead_is_met_where_the_request_would_have_met_it(ews):
    """ErrorServerBusy on the request posted ahead: backed off and asked again, the same pages and cursors; a
    dropped connection there: a TransientError after the pages before it, whose cursors were handed out."""
    import pytest

    from crm_bridge.connectors.base import TransientError
    from crm_bridge.connectors.base import make_connector
    from tests.test_contract import View
    from tests.test_exchange import options

    for n in range(9):
        mail(ews, f"Mail {n}")
    plain = pull(ews, **OPTS)
    original = ews.take_fault

    def second_fails(kind, **params):
        asked = []

        def take(operation):
            if operation == "SyncFolderItems":
                asked.append(operation)
                if len(asked) == 2:
                    ews.fail(kind, operation="SyncFolderItems", **params)
            return original(operation)

        ews.take_fault = take

    second_fails("busy", back_off_ms=200)
    got = pull(ews, **OPTS)
    assert [b.cursor for b in got.batches] == [b.cursor for b in plain.batches]
    assert sum(len(b.records) for b in got.batches) == 9
    second_fails("drop")
    conn = make_connector("ex", options(ews, **OPTS))
    batches = []
    try:
        with pytest.raises(TransientError):
            for b in conn.pull(None, View()):
                batches.append(b)
    finally:
        conn.close()
    assert [b.cursor for b in batches] == [b.cursor for b in plain.batches][:len(batches)]
    assert sum(len(b.records) for b in batches) == 3
