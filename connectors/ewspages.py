"""A folder's SyncFolderItems pages, the next one asked for as soon as the SyncState of this one is read.

SyncFolderItems pages form a chain: the request for page k+1 carries the
SyncState of page k.  Reading page k whole (the SOAP parse of up to 512
items) before asking for page k+1 left the server idle for that time on
every page.  The SyncState and ``IncludesLastItemInRange`` come before the
``Changes`` in the answer (the schema's order), so :func:`peek` reads them
from the answer's first bytes, checks that the message is a success
(``ResponseClass="Success"``, ``ResponseCode`` NoError) and
:class:`Pages` sends the request for page k+1 while page k is parsed.

Still one request at a time (the next leaves once this one's answer has
fully arrived), pages are handed out in order, and at most ``window``
pages are read ahead of the caller; the cursor still moves page by page
with what was stored.  A page whose full parse fails raises in
:meth:`Pages.get` as before; the request asked for after it is waited for
and dropped by :meth:`Pages.close`.
"""

from __future__ import annotations

import queue
import threading
from typing import Any, Callable

MNS = "http://schemas.microsoft.com/exchange/services/2006/messages"
_MESSAGE = f"{{{MNS}}}SyncFolderItemsResponseMessage"
_CODE, _STATE = f"{{{MNS}}}ResponseCode", f"{{{MNS}}}SyncState"
_LAST, _CHANGES = f"{{{MNS}}}IncludesLastItemInRange", f"{{{MNS}}}Changes"

#: (page's SyncState, whether it is the last page) -> None, called from the thread that reads the page
OnState = Callable[[str, bool], None]


def peek(content: bytes) -> tuple[str, bool] | None:
    """(SyncState, IncludesLastItemInRange) of a successful SyncFolderItems answer, read from its start; None
    when the answer is anything else (an error, a fault, something unreadable)."""
    from lxml import etree

    parser = etree.XMLPullParser(events=("start", "end"), resolve_entities=False, no_network=True)
    ok, state, last = False, None, None
    step = 4096
    try:
        for at in range(0, len(content), step):
            parser.feed(content[at:at + step])
            for event, elem in parser.read_events():
                tag = elem.tag
                if event == "start":
                    if tag == _MESSAGE:
                        ok = elem.get("ResponseClass") == "Success"
                        if not ok:
                            return None
                    elif tag == _CHANGES:
                        return (state, last) if ok and state and last is not None else None
                    continue
                if tag == _CODE and (elem.text or "").strip() != "NoError":
                    return None
                if tag == _STATE:
                    state = elem.text
                elif tag == _LAST:
                    last = (elem.text or "").strip() == "true"
                if ok and state and last is not None:
                    return state, last
    except etree.XMLSyntaxError:
        return None
    return None


class Pages:
    """Pages of one folder from ``fetch(sync_state, on_state)``, read by ``window`` threads in turn.

    ``fetch`` returns ``(changes, sync state, last)``; it reads one page (exchangelib's SyncFolderItems) and calls
    ``on_state`` with the page's SyncState as soon as it is known, before
    parsing the items; this asks for the next page (unless it was the last,
    or ``window`` pages wait already).  :meth:`get` hands out page 0, 1, ...
    in order, raising a page's error there.
    """

    def __init__(self, fetch: Callable[[str | None, OnState], Any], state: str | None, window: int = 3,
                 name: str = "ews-pages") -> None:
        self._fetch = fetch
        self._window = window
        self._lock = threading.Lock()
        self._asks: queue.SimpleQueue[tuple[int, str | None] | None] = queue.SimpleQueue()
        self._ready: dict[int, tuple[bool, Any]] = {}
        self._cond = threading.Condition(self._lock)
        self._next = 0  # the page get() hands out next
        self._asked = 0  # pages asked for so far
        self._deferred: tuple[int, str] | None = None  # the next ask, waiting for room in the window
        self._stopped = False
        self._threads = [threading.Thread(target=self._run, daemon=True, name=name) for _ in range(window)]
        for t in self._threads:
            t.start()
        self._ask(0, state)

    def _ask(self, index: int, state: str | None) -> None:
        self._asked = index + 1
        self._asks.put((index, state))

    def _on_state(self, index: int) -> OnState:
        def seen(state: str, last: bool) -> None:
            with self._lock:
                if last or not state or self._stopped or self._asked > index + 1:
                    return
                if index + 1 - self._next < self._window:
                    self._ask(index + 1, state)
                else:
                    self._deferred = (index + 1, state)

        return seen

    def _run(self) -> None:
        while True:
            what = self._asks.get()
            if what is None:
                return
            index, state = what
            seen = self._on_state(index)
            try:
                page = self._fetch(state, seen)
                result: tuple[bool, Any] = (True, page)
                seen(page[1], page[2])  # when peek() could not tell: the next page is asked for now
            except BaseException as exc:  # noqa: BLE001 - handed to the caller in get()
                result = (False, exc)
            with self._cond:
                self._ready[index] = result
                self._cond.notify_all()

    def get(self) -> Any:
        with self._cond:
            index = self._next
            self._cond.wait_for(lambda: index in self._ready)
            ok, value = self._ready.pop(index)
            self._next = index + 1
            if self._deferred is not None and self._deferred[0] - self._next < self._window:
                self._ask(*self._deferred)
                self._deferred = None
        if not ok:
            raise value
        return value

    def close(self) -> None:
        """End both threads; a request under way is waited for (its timeout bounds it) and its page dropped."""
        with self._lock:
            self._stopped = True
            self._deferred = None
        for _ in self._threads:
            self._asks.put(None)
        for t in self._threads:
            t.join()
        self._threads = []
