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

Still one request at a time; the cursor still moves page by page with what
was stored; an answer whose head cannot be read is simply not followed
ahead (the next request then leaves after the parse, as before).
"""

from __future__ import annotations

from typing import Any, NamedTuple

MNS = "http://schemas.microsoft.com/exchange/services/2006/messages"
_MESSAGE = f"{{{MNS}}}SyncFolderItemsResponseMessage"
_CODE, _STATE = f"{{{MNS}}}ResponseCode", f"{{{MNS}}}SyncState"
_LAST, _CHANGES = f"{{{MNS}}}IncludesLastItemInRange", f"{{{MNS}}}Changes"

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
