"""A folder's SyncFolderItems pages: the request for the next one leaves as soon as this one's SyncState is read.

SyncFolderItems pages form a chain: the request for page k+1 carries the
SyncState of page k.  Reading page k whole (the SOAP parse of up to 512
items) before asking for page k+1 left the server idle for that time on
every page.  The SyncState and ``IncludesLastItemInRange`` come before the
``Changes`` in the answer (the schema's order), so :func:`peek` reads them
from the answer's first bytes, checks that the message is a success
(``ResponseClass="Success"``, ``ResponseCode`` NoError), and the connector
(exchange.py, ``_pull_folder``) has a thread post the request for page
k+1 and take in its answer (:class:`Prefetched`) while it parses page k
and the engine stores it.  Parsing stays in one thread: with the pages
parsed in threads of their own, they and the store fought over the GIL
(a 100,000-mail Inbox took twice as long).

:func:`sync_service` is exchangelib's SyncFolderItems as the connector
uses it: the answer handed to the parser whole, its head peeked first, a
request posted ahead taken in place of its own.

Still one request at a time; the cursor still moves page by page with what
was stored; an answer whose head cannot be read is simply not followed
ahead (the next request then leaves after the parse, as before).

The thread (:func:`page_chain`) follows the chain itself, up to
:data:`READ_AHEAD` pages ahead of the page being stored: it peeks each
answer as it arrives and posts the next request at once.  With only one
page ahead, the next request left when the connector took that answer up,
i.e. after the engine had stored the page before: the server and crm
waited for each other in turn (a 20,000-mail first sync: the emulator idle
about a third of the run, bench/bench_exchange.py).  The same thread
(connectors/base.py :class:`PageChain`) reads the Microsoft 365 connector's
delta pages ahead.
"""

from __future__ import annotations

import queue
import threading
from typing import Any, Callable, NamedTuple

from crm_bridge.connectors.base import PageChain

MNS = "http://schemas.microsoft.com/exchange/services/2006/messages"
_MESSAGE = f"{{{MNS}}}SyncFolderItemsResponseMessage"
_CODE, _STATE = f"{{{MNS}}}ResponseCode", f"{{{MNS}}}SyncState"
_LAST, _CHANGES = f"{{{MNS}}}IncludesLastItemInRange", f"{{{MNS}}}Changes"
READ_AHEAD = 3  # SyncFolderItems answers asked for ahead of the page being stored (up to 512 items each)

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


class Prefetched(NamedTuple):
    """The answer to the SyncFolderItems request for the page after ``state``, posted ahead; or its error."""

    state: str
    api: str  # the API version it was asked with ("" after an error: raised whatever the version)
    response: Any
    error: BaseException | None


def page_chain(fetch: Callable[[str, str], Prefetched], state: str, api: str, depth: int = READ_AHEAD,
               name: str = "ews-pages") -> PageChain[tuple[str, str], Prefetched]:
    """The SyncFolderItems pages after ``state``, posted in a thread up to ``depth`` pages ahead of the reader.

    ``fetch(state, api)`` posts the request for the page after ``state`` and
    takes in its answer; an error it raises comes back as a
    :class:`Prefetched` carrying it.  The thread reads each answer's
    SyncState with :func:`peek` and asks for the next page at once; it stops
    after an error, the last page, an answer :func:`peek` cannot read or a
    SyncState that did not move (connectors/base.py :class:`PageChain`).
    """

    def ask(key: tuple[str, str]) -> Prefetched:
        try:
            return fetch(*key)
        except BaseException as exc:  # noqa: BLE001 - handed to the reader, where the request would raise
            return Prefetched(key[0], "", None, exc)

    def next_key(got: Prefetched) -> tuple[str, str] | None:
        if got.error is not None or got.response is None:
            return None
        seen = peek(got.response.content)
        if seen is None or seen[1] or seen[0] == got.state:
            return None
        return seen[0], api

    return PageChain(ask, (state, api), next_key, depth, name)


_SYNC_SERVICE: Any = None


def sync_service() -> Any:
    """exchangelib's SyncFolderItems, reading the answer's bytes at once.

    exchangelib parses an answer it did not stream through
    ``response.iter_content()``, whose default chunk is one byte: that took
    half of a first sync's time.  The body is in memory already; this
    subclass hands it to the same parser (``exchangelib.util.to_xml``) whole.
    """
    global _SYNC_SERVICE
    if _SYNC_SERVICE is None:
        from exchangelib.errors import MalformedResponseError, SOAPError
        from exchangelib.services import SyncFolderItems
        from exchangelib.util import SOAPNS, ParseError, to_xml

        from crm_bridge.connectors.ewsitems import XmlMessage

        class _SyncFolderItems(SyncFolderItems):
            raw_items = False  # True: created and updated items stay XML elements (see ewsitems.XmlMessage)
            on_state: Any = None  # called with (SyncState, last page, api version) before the answer is parsed
            prefetched: Any = None  # a Prefetched answer to this very request, posted ahead (see exchange.py, _pull_folder)

            def post(self, payload: Any, api_version: str) -> Any:
                """The request, posted as exchangelib posts it."""
                return super()._get_response(payload=payload, api_version=api_version)

            def _get_response(self, payload: Any, api_version: str) -> Any:
                pre, self.prefetched = self.prefetched, None
                if pre is not None and pre.api in (api_version, ""):
                    if pre.error is not None:
                        raise pre.error
                    self._api_version = api_version
                    return pre.response
                self._api_version = api_version
                return self.post(payload, api_version)

            def _elem_to_obj(self, elem: Any) -> Any:
                change = self.change_types_map[elem.tag]
                if self.raw_items and change in (self.CREATE, self.UPDATE):
                    return change, XmlMessage(elem[0])
                return super()._elem_to_obj(elem)

            def _get_soap_parts(self, response: Any) -> tuple[Any, Any]:
                content = response.content
                if self.on_state is not None:
                    seen = peek(content)
                    if seen is not None:
                        self.on_state(*seen, getattr(self, "_api_version", ""))
                try:
                    root = to_xml(content)
                except ParseError as exc:
                    raise SOAPError(f"Bad SOAP response: {exc}") from None
                body = root.find(f"{{{SOAPNS}}}Body")
                if body is None:
                    raise MalformedResponseError("No Body element in SOAP response")
                return root.find(f"{{{SOAPNS}}}Header"), body

        _SYNC_SERVICE = _SyncFolderItems
    return _SYNC_SERVICE
