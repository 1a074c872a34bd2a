"""CalDAV and CardDAV sources.

The two connectors differ only in class attributes (which home set, which
resource type, which multiget, which parser), the way vdirsyncer's
storages do; what they share is :class:`connectors.davsync._DavConnector`
(reading and writing), built on
:class:`connectors.davcollections._DavCollections` (options, finding the
collections and whether they moved); the HTTP client they talk through is
:mod:`connectors.davhttp`.
"""

from __future__ import annotations

from urllib.parse import quote
from xml.sax.saxutils import escape as xml_escape

from crm_bridge.crm_core.records import CardPush, Location, PushResult, TaskPush, TaskState

from .base import SourceView
from .davhttp import CALDAV, CARDDAV, XML_TYPE, _NAME_OK, _dir, _item_name, _join, _q
from .davsync import _DavConnector

__all__ = ["CalDavConnector", "CardDavConnector"]


class CalDavConnector(_DavConnector):
    """A CalDAV account or calendar: events become appointments, VTODOs
    come back as :class:`TaskState`; CRM tasks are written as VTODOs into
    ``tasks_calendar``.

    Options: ``url``, ``username``, ``password_env``/``password_command``,
    ``calendars`` (names or URLs; default all), ``verify_tls``, ``timeout``,
    ``allow_plaintext`` (an ``http://`` url: loopback hosts only),
    ``window_past_days`` (730), ``window_future_days`` (365),
    ``tasks_calendar`` (name or URL; created when missing).
    """

    type = "caldav"
    select_key = "calendars"
    push_key = "tasks_calendar"
    _push_capability = "tasks"
    option_keys = _DavConnector._dav_keys | {select_key, push_key}
    push_options = {"tasks": push_key}
    home_set = _q(CALDAV, "calendar-home-set")
    collection_type = _q(CALDAV, "calendar")
    well_known = "/.well-known/caldav"
    multiget = "C:calendar-multiget"
    data_prop = _q(CALDAV, "calendar-data")
    data_elem = "C:calendar-data"
    ns_decl = 'xmlns:C="urn:ietf:params:xml:ns:caldav"'
    item_ext = ".ics"
    content_type = "text/calendar"

    def _parse(self, text, location, window):
        from .ical import parse_calendar

        return parse_calendar(text, location, window)

    def push_tasks(self, tasks: list[TaskPush], view: SourceView) -> list[PushResult]:
        """Write each task as one VTODO, conditionally.

        * new (no href/etag): PUT ``If-None-Match: *`` to
          ``<tasks calendar>/<uid>.ics``; a 412 means it is already there:
          the same content (DTSTAMP aside) is success, other content comes
          back as ``conflict`` (the server's :class:`TaskState`);
        * known: PUT ``If-Match: <etag>``; 412 -> ``conflict`` (or success
          when the server already has this content), 404 -> ``gone``.

        Nothing is ever overwritten blindly.  :class:`AuthError` and
        :class:`TransientError` propagate; a retry is safe.
        """
        from .ical import build_vtodo, parse_calendar

        window = self._window()

        def conflict(text: str, location: Location) -> TaskState | None:
            records, _ = parse_calendar(text, location, window)
            for record in records:
                if isinstance(record, TaskState):
                    return record
            return None

        results = []
        for task in tasks:
            results.append(self._put(task.uid, build_vtodo(task), task.href, task.etag, task.scope, conflict))
        return results

    def _create_push_collection(self, home: str, name: str) -> str:
        url = _dir(_join(home, quote(name if _NAME_OK.match(name) else _item_name(name, ""), safe="")))
        body = (
            '<?xml version="1.0" encoding="utf-8"?>'
            '<C:mkcalendar xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav"><D:set><D:prop>'
            f"<D:displayname>{xml_escape(name)}</D:displayname>"
            '<C:supported-calendar-component-set><C:comp name="VTODO"/></C:supported-calendar-component-set>'
            "</D:prop></D:set></C:mkcalendar>"
        )
        self.http.request("MKCALENDAR", url, body, {"Content-Type": XML_TYPE}, allow=(405,))
        return url


class CardDavConnector(_DavConnector):
    """A CardDAV account or address book: vCards become :class:`ContactCard`;
    customers and contacts are written into ``cards_addressbook``.

    Options: ``url``, ``username``, ``password_env``/``password_command``,
    ``addressbooks`` (names or URLs; default all), ``verify_tls``,
    ``timeout``, ``allow_plaintext`` (an ``http://`` url: loopback hosts
    only), ``cards_addressbook`` (name or URL; created when missing; the
    cards crm writes there are not read back as contacts).
    """

    type = "carddav"
    priority = 10  # contacts first: a first run then links appointments and mail by them
    select_key = "addressbooks"
    push_key = "cards_addressbook"
    _push_capability = "cards"
    option_keys = _DavConnector._dav_keys | {select_key, push_key}
    push_options = {"cards": push_key}
    home_set = _q(CARDDAV, "addressbook-home-set")
    collection_type = _q(CARDDAV, "addressbook")
    well_known = "/.well-known/carddav"
    multiget = "CR:addressbook-multiget"
    data_prop = _q(CARDDAV, "address-data")
    data_elem = "CR:address-data"
    ns_decl = 'xmlns:CR="urn:ietf:params:xml:ns:carddav"'
    item_ext = ".vcf"
    content_type = "text/vcard"
    #: the cards crm pushes (crm_core/cards.py: UIDs ``crm-bridge-customer-N``
    #: and ``crm-bridge-contact-N``) are the CRM's own view: read back, every
    #: customer came back as a phantom contact and every push as "updated"
    own_item_prefix = "crm-bridge-"

    def _parse(self, text, location, window):
        from .vcard import parse_vcards

        records, failures = parse_vcards(text, location)
        # a server that named the file itself: know the card by its UID
        return [r for r in records if not getattr(r, "uid", "").startswith(self.own_item_prefix)], failures

    def push_cards(self, cards: list[CardPush], view: SourceView) -> list[PushResult]:
        """Write each card conditionally (``If-None-Match: *`` when new,
        ``If-Match`` when known).  A 412 with other content on the server is
        reported as ``ok=False, error="conflict: ..."`` with the server's
        etag; the card is never overwritten blindly."""
        return [self._put(c.uid, c.vcard, c.href, c.etag, c.scope, lambda text, loc: None) for c in cards]

    def _create_push_collection(self, home: str, name: str) -> str:
        url = _dir(_join(home, quote(name if _NAME_OK.match(name) else _item_name(name, ""), safe="")))
        body = (
            '<?xml version="1.0" encoding="utf-8"?>'
            '<D:mkcol xmlns:D="DAV:" xmlns:CR="urn:ietf:params:xml:ns:carddav"><D:set><D:prop>'
            "<D:resourcetype><D:collection/><CR:addressbook/></D:resourcetype>"
            f"<D:displayname>{xml_escape(name)}</D:displayname></D:prop></D:set></D:mkcol>"
        )
        self.http.request("MKCOL", url, body, {"Content-Type": XML_TYPE}, allow=(405,))
        return url
