"""What CalDAV and CardDAV sources share: discovery, change detection,
reading and conditional writes (the protocol specifics are class
attributes of the subclasses in :mod:`connectors.dav`, the HTTP client is
:mod:`connectors.davhttp`).  Per run:

* discovery, once: ``/.well-known/caldav`` (RFC 6764) for a bare host,
  ``current-user-principal`` -> ``calendar-home-set``; the result is kept in
  the cursor;
* the home (``PROPFIND Depth: 1``, resource type and display name only)
  is listed on the first run, again every :attr:`REDISCOVER_SECONDS` to
  find new collections that match the selection, on every run while a
  configured name matches nothing, and when a known collection answers 404;
* each run, each collection to read: one ``PROPFIND Depth: 0`` asking for
  ONE change marker, ``CS:getctag`` (``DAV:sync-token`` on a server without
  getctag); a collection whose marker did not move costs nothing more.
  (Token properties are what servers spend their time on: Radicale hashes
  every member for each, so asking both, or asking them for every
  collection in the home, multiplies the cost of a no-change run.)
* a collection that moved: ``REPORT sync-collection`` (RFC 6578) with the
  stored token, then ``calendar-multiget``/``addressbook-multiget`` in
  batches of :attr:`MULTIGET_BATCH` for the changed hrefs;
* a server without sync-collection, or one that forgot the token: a full
  listing (``PROPFIND Depth: 1``, href + etag) compared with
  ``view.known(collection_url)``; vanished hrefs are reported removed.

Collections configured by URL (``calendars = ["https://..."]``) skip the
home listing: one probe each per run, and the reading when it moved.

Cursor (JSON-able)::

    {
      "v": 1,
      "url": "<configured url>",          # a change of url drops the rest
      "select": [...],                    # the configured calendars/addressbooks
      "home": "<home collection url>",    # "" when only URLs are configured
      "home_is_collection": bool,         # the url names one collection
      "listed": <epoch seconds>,          # the last home listing
      "from_home": [<collection url>...], # what it picked, probed until the next
      "missing": [<name>...],             # names it did not find (list again)
      "push": "<push target>", "push_url": "<its url>",
      "collections": {
        "<collection url>": {"token": "<sync-token>" | "", "ctag": "<getctag>" | "",
                             "mode": "sync" | "list",
                             "probe": "getctag" | "sync-token" | ""}
      }
    }

The marker is read before the collection is, so a change landing in
between moves the marker again and is read next run; a ctag changes
whenever a member changes (tests check this on Radicale and Xandikos).

``scope`` of every record is the collection URL (absolute, trailing
slash), ``local_id`` the item's href path, ``etag`` the server's etag as
sent (quotes included).

Network failures are mapped to connector errors in one place,
:meth:`connectors.davhttp._Http.request`.
"""

from __future__ import annotations

import copy
import logging
import time
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Iterable, Iterator, Mapping
from urllib.parse import unquote, urljoin, urlsplit, urlunsplit
from xml.sax.saxutils import escape as xml_escape

from crm_bridge.crm_core.records import Batch, Failure, Location, PushResult, TaskState

from .base import AuthError, ConfigError, Connector, SourceView, is_loopback, secret
from .davhttp import (
    CS,
    DAV,
    XML_TYPE,
    _Collection,
    _dir,
    _Http,
    _item_name,
    _join,
    _Missing,
    _parse_multistatus,
    _path,
    _q,
    _Response,
    _status_code,
    _xml,
)

log = logging.getLogger("crm_bridge.connectors.dav")


_PROPFIND_HOME = (
    '<?xml version="1.0" encoding="utf-8"?>'
    '<D:propfind xmlns:D="DAV:"><D:prop><D:resourcetype/><D:displayname/></D:prop></D:propfind>'
)
#: the depth-0 change-marker probes, one property each
_PROBE = {
    "getctag": '<?xml version="1.0" encoding="utf-8"?><D:propfind xmlns:D="DAV:" '
               'xmlns:CS="http://calendarserver.org/ns/"><D:prop><CS:getctag/></D:prop></D:propfind>',
    "sync-token": '<?xml version="1.0" encoding="utf-8"?><D:propfind xmlns:D="DAV:">'
                  "<D:prop><D:sync-token/></D:prop></D:propfind>",
}
_PROBE_TAG = {"getctag": _q(CS, "getctag"), "sync-token": _q(DAV, "sync-token")}

_PROPFIND_ETAGS = (
    '<?xml version="1.0" encoding="utf-8"?>'
    '<D:propfind xmlns:D="DAV:"><D:prop><D:resourcetype/><D:getetag/></D:prop></D:propfind>'
)

_SYNC = (
    '<?xml version="1.0" encoding="utf-8"?>'
    '<D:sync-collection xmlns:D="DAV:"><D:sync-token>{token}</D:sync-token>'
    "<D:sync-level>1</D:sync-level><D:prop><D:getetag/></D:prop></D:sync-collection>"
)


class _DavConnector(Connector):
    # A DAV pull mostly waits for the server and already parses one multiget
    # behind the next (see pull); a reader process only adds a third busy
    # process: bench/bench_dav.py took 3.25 s with one and 2.99 s without.
    pull_in_reader = False

    # --- what differs between CalDAV and CardDAV
    select_key = ""  # "calendars" | "addressbooks"
    push_key = ""  # "tasks_calendar" | "cards_addressbook"
    #: options of both kinds; each subclass adds its select_key and push_key
    _dav_keys = frozenset({"url", "username", "password_env", "password_command", "verify_tls", "timeout",
                           "allow_plaintext", "window_past_days", "window_future_days"})
    home_set = ""  # clark name of the home-set property
    collection_type = ""  # clark name of the resource type
    well_known = ""
    multiget = ""  # the report element, with namespace prefix
    data_prop = ""  # clark name of the data property
    data_elem = ""  # prefixed name of the data property
    ns_decl = ""
    item_ext = ""
    content_type = ""

    #: the name (and UID) prefix of items this program writes that a pull
    #: must not read back as the user's (CardDAV: the customer cards of
    #: crm_core/cards.py); "" reads everything (CalDAV reads its pushed
    #: VTODOs back on purpose: that is how a completion comes home)
    own_item_prefix = ""

    #: hrefs per multiget
    MULTIGET_BATCH = 500
    #: a full listing that comes back empty while at least this many items
    #: are known is reported as a problem instead of deleting them
    EMPTY_GUARD = 3
    #: a source that finds its collections under the home lists the home
    #: again after this many seconds, to find collections that are new
    REDISCOVER_SECONDS = 3600.0

    def __init__(self, name: str, options: Mapping[str, Any]):
        super().__init__(name, options)
        opts = self.options
        url = opts.get("url")
        if not isinstance(url, str) or not url.strip():
            raise ConfigError(f"sources.{name}.url is missing")
        url = url.strip()
        if "://" not in url:
            url = "https://" + url
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ConfigError(f"sources.{name}.url must be an http(s) URL")
        if parts.username or parts.password:
            raise ConfigError(f"sources.{name}.url must not contain credentials")
        self.url = urlunsplit((parts.scheme, parts.netloc, parts.path or "/", parts.query, ""))
        plaintext = opts.get("allow_plaintext", False)
        if not isinstance(plaintext, bool):
            raise ConfigError(f"sources.{name}.allow_plaintext must be true or false")
        if parts.scheme == "http" and not (plaintext and is_loopback(parts.hostname or "")):
            raise ConfigError(
                f"sources.{name}.url is http://, which sends the password in clear text: use https://; "
                "plain HTTP is only allowed for a loopback host (a server on this machine) together with "
                "allow_plaintext = true")
        username = opts.get("username")
        if username is not None and not isinstance(username, str):
            raise ConfigError(f"sources.{name}.username must be a string")
        self.username = username
        self._password_resolved = False
        self._password: str | None = None
        select = opts.get(self.select_key)
        if select is None:
            select = []
        elif isinstance(select, str):
            select = [select]
        if not isinstance(select, list) or not all(isinstance(s, str) and s for s in select):
            raise ConfigError(f"sources.{name}.{self.select_key} must be a list of names or URLs")
        self.select: list[str] = list(select)
        verify = opts.get("verify_tls", True)
        if not isinstance(verify, (bool, str)):
            raise ConfigError(f"sources.{name}.verify_tls must be true, false or a CA bundle path")
        self.verify = verify
        timeout = opts.get("timeout", 30)
        if not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or timeout <= 0:
            raise ConfigError(f"sources.{name}.timeout must be a positive number of seconds")
        self.timeout = float(timeout)
        days = {}
        for key, default in (("window_past_days", 730), ("window_future_days", 365)):
            value = opts.get(key, default)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ConfigError(f"sources.{name}.{key} must be a whole number of days")
            days[key] = value
        self.window_past_days: int = days["window_past_days"]
        self.window_future_days: int = days["window_future_days"]
        push = opts.get(self.push_key)
        if push is not None and (not isinstance(push, str) or not push.strip()):
            raise ConfigError(f"sources.{name}.{self.push_key} must name a collection")
        self.push_target: str | None = push.strip() if push else None
        self.can_push = frozenset({self._push_capability}) if self.push_target else frozenset()
        self._http: _Http | None = None
        self._home: str | None = None
        self._push_url: str | None = None

    _push_capability = ""

    # ------------------------------------------------------------ plumbing

    @property
    def http(self) -> _Http:
        if self._http is None:
            if not self._password_resolved:
                self._password = secret(self.name, self.options)
                self._password_resolved = True
            self._http = _Http(self.name, self.username, self._password, self.verify, self.timeout, origin=self.url)
        return self._http

    @property
    def request_count(self) -> int:
        """HTTP requests sent so far (benchmarks and tests read it)."""
        return self._http.count if self._http else 0

    def close(self) -> None:
        if self._http is not None:
            self._http.close()
            self._http = None

    def _propfind(self, url: str, body: str, depth: str, allow: Iterable[int] = ()) -> _Response:
        return self.http.request(
            "PROPFIND", url, body, {"Depth": depth, "Content-Type": XML_TYPE}, allow=allow
        )

    def _window(self) -> tuple[datetime, datetime]:
        now = datetime.now(timezone.utc)
        return now - timedelta(days=self.window_past_days), now + timedelta(days=self.window_future_days)

    # ----------------------------------------------------------- discovery

    def _props_of(self, url: str) -> tuple[Any, str]:
        """PROPFIND depth 0 of the discovery properties; (prop element, final url)."""
        body = (
            '<?xml version="1.0" encoding="utf-8"?>'
            '<D:propfind xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav" '
            'xmlns:CR="urn:ietf:params:xml:ns:carddav"><D:prop><D:resourcetype/>'
            "<D:current-user-principal/><C:calendar-home-set/><CR:addressbook-home-set/>"
            "</D:prop></D:propfind>"
        )
        from lxml import etree

        resp = self._propfind(url, body, "0")
        root = _xml(resp.content)
        merged = etree.Element(_q(DAV, "prop"))
        for response in root.iterchildren(_q(DAV, "response")):
            if _status_code(response.findtext(_q(DAV, "status"))) in (404, 410):
                raise _Missing(f"{self.name}: PROPFIND {url}: 404 Not Found")  # Xandikos: a 207 saying 404
            for propstat in response.iterchildren(_q(DAV, "propstat")):
                if _status_code(propstat.findtext(_q(DAV, "status"))) != 200:
                    continue
                prop = propstat.find(_q(DAV, "prop"))
                if prop is not None:
                    for child in prop:
                        merged.append(copy.deepcopy(child))
            break
        return merged, resp.url

    def _discover_home(self) -> tuple[str, bool]:
        """(URL, is_collection): the home set to list, or the collection the
        configured URL names."""
        url = self.url
        if _path(url) in ("", "/"):
            # RFC 6764: a bare host; ask /.well-known first
            try:
                resp = self.http.request(
                    "PROPFIND", urljoin(url, self.well_known), _PROPFIND_ETAGS,
                    {"Depth": "0", "Content-Type": XML_TYPE}, allow=(404, 405, 501), redirects=False,
                )
                location = resp.headers.get("Location")
                if 300 <= resp.status < 400 and location:
                    url = _dir(urljoin(url, location))
                elif resp.status == 207:
                    url = urljoin(url, self.well_known)
            except _Missing:
                pass
        prop, _ = self._props_of(url)
        rtype = prop.find(_q(DAV, "resourcetype"))
        if rtype is not None and rtype.find(self.collection_type) is not None:
            return _dir(_join(url, _path(url))), True
        home = prop.findtext(f"{self.home_set}/{_q(DAV, 'href')}")
        if home:
            return _dir(_join(url, home.strip())), False
        principal = prop.findtext(f"{_q(DAV, 'current-user-principal')}/{_q(DAV, 'href')}")
        if principal:
            principal_url = _dir(_join(url, principal.strip()))
            pprop, _ = self._props_of(principal_url)
            home = pprop.findtext(f"{self.home_set}/{_q(DAV, 'href')}")
            if home:
                return _dir(_join(url, home.strip())), False
            return principal_url, False
        return _dir(_join(url, _path(url))), False

    def _list_home(self, home: str) -> list[_Collection]:
        """The collections under ``home`` (resource type and display name
        only: the change markers are asked of each wanted collection on its
        own, see :meth:`_probe`; on Radicale a listing with tokens costs a
        token computation for every collection in the home, wanted or not)."""
        resp = self._propfind(home, _PROPFIND_HOME, "1")
        root = _xml(resp.content)
        found = []
        home_path = _path(_dir(_join(home, _path(home))))
        for response in root.iterchildren(_q(DAV, "response")):
            href = response.findtext(_q(DAV, "href"))
            if not href:
                continue
            url = _dir(_join(home, href.strip()))
            if _status_code(response.findtext(_q(DAV, "status"))) in (404, 410):
                if _path(url) == home_path:
                    raise _Missing(f"{self.name}: PROPFIND {home}: 404 Not Found")
                continue
            is_type = False
            name = None
            for propstat in response.iterchildren(_q(DAV, "propstat")):
                if _status_code(propstat.findtext(_q(DAV, "status"))) != 200:
                    continue
                prop = propstat.find(_q(DAV, "prop"))
                if prop is None:
                    continue
                rtype = prop.find(_q(DAV, "resourcetype"))
                if rtype is not None and rtype.find(self.collection_type) is not None:
                    is_type = True
                name = prop.findtext(_q(DAV, "displayname")) or name
            if is_type:
                last = unquote(_path(url).rstrip("/").rsplit("/", 1)[-1])
                found.append(_Collection(url, (name or last).strip()))
        return found

    def _probe(self, col: _Collection, entry: Mapping[str, Any]) -> None:
        """Ask ``col`` (depth 0) for ONE change marker and note it in ``col``.

        The marker is ``CS:getctag`` unless an earlier probe found the
        server has none (``entry["probe"]``); then ``DAV:sync-token``, and
        nothing at all for a server with neither.  A getctag changes
        whenever a member changes (Radicale: a hash of the members' hrefs
        and etags; Xandikos: the git tree id), and it is read *before* the
        collection is, so a change that lands in between is seen next time.
        A 404/410 sets ``col.missing``.
        """
        kind = entry.get("probe", "getctag") if entry else "getctag"
        if kind not in ("getctag", "sync-token"):
            col.probed = ""
            return
        resp = self._propfind(col.url, _PROBE[kind], "0", allow=(404, 410))
        col.probed = kind
        if resp.status in (404, 410):
            col.missing = f"HTTP {resp.status}"
            return
        root = _xml(resp.content)
        for response in root.iterchildren(_q(DAV, "response")):
            if _status_code(response.findtext(_q(DAV, "status"))) in (404, 410):
                col.missing = "404 Not Found"  # Xandikos: a 207 saying 404
                return
            for propstat in response.iterchildren(_q(DAV, "propstat")):
                if _status_code(propstat.findtext(_q(DAV, "status"))) != 200:
                    continue
                value = propstat.findtext(f"{_q(DAV, 'prop')}/{_PROBE_TAG[kind]}")
                if value and value.strip():
                    if kind == "getctag":
                        col.ctag = value.strip()
                    else:
                        col.token = value.strip()
            break

    @staticmethod
    def _unchanged(col: _Collection, entry: Mapping[str, Any]) -> bool:
        """The probe says nothing moved since ``entry`` was stored."""
        if col.probed == "getctag":
            return bool(col.ctag) and entry.get("ctag") == col.ctag
        if col.probed == "sync-token":
            return bool(col.token) and entry.get("token") == col.token
        return False

    @staticmethod
    def _matches(col: _Collection, wanted: str) -> bool:
        last = unquote(_path(col.url).rstrip("/").rsplit("/", 1)[-1])
        return wanted in (col.name, last)

    def _is_url(self, value: str) -> bool:
        return value.startswith(("http://", "https://", "/"))

    def _listing_due(self, state: dict, now: float) -> bool:
        """Whether this run lists the home to find (new) collections by name,
        instead of probing the ones the last listing found."""
        if not state.get("home") or not state.get("listed"):
            return True
        if state.get("home_is_collection"):
            return False
        if state.get("missing") or state.get("push") != self.push_target:
            return True  # a wanted name had no collection: look again every run
        if not state.get("from_home"):
            return True  # nothing was found last time: nothing to probe
        return abs(now - float(state["listed"])) >= self.REDISCOVER_SECONDS

    def _collections(self, state: dict, problems: list[str], probe: bool = True) -> list[_Collection]:
        """The collections to read this run (uses and updates ``state``),
        each probed for its change marker when ``probe``.

        The home is listed on the first run, then again every
        :attr:`REDISCOVER_SECONDS` (new collections matching the selection
        are found then), on every run while a configured name matches
        nothing, and whenever a collection the last listing found is gone
        (404); between those runs each known collection costs one depth-0
        PROPFIND.
        """
        explicit = [_dir(_join(self.url, s)) for s in self.select if self._is_url(s)]
        names = [s for s in self.select if not self._is_url(s)]
        push = self.push_target
        need_home = not self.select or bool(names) or (push is not None and not self._is_url(push))
        stored: dict = state.get("collections") or {}
        result: dict[str, _Collection] = {u: _Collection(u) for u in explicit}
        if push is not None and self._is_url(push):
            url = _dir(_join(self.url, push))
            result.setdefault(url, _Collection(url))
        if not need_home:
            state["home"] = ""
            return self._probed(list(result.values()), stored, probe)
        now = time.time()
        home = state.get("home") or ""
        if not self._listing_due(state, now):
            if state.get("home_is_collection"):
                self._home = None
                result.setdefault(home, _Collection(home))
                return self._probed(list(result.values()), stored, probe)
            self._home = home
            if state.get("push_url"):
                self._push_url = state["push_url"]
            from_home = [_Collection(u) for u in state.get("from_home") or () if u not in result]
            cols = self._probed(list(result.values()) + from_home, stored, probe)
            if not any(c.missing for c in from_home):
                return cols
            # a collection the last listing found is gone: list again
            log.info("%s: a known collection is gone; listing %s again", self.name, home)
            result = {c.url: c for c in cols if c.url in result}
            reuse = {c.url: c for c in cols if c.url not in result and not c.missing}
        else:
            reuse = {}
        listed: list[_Collection] | None = None
        if home:
            try:
                listed = [_Collection(home)] if state.get("home_is_collection") else self._list_home(home)
            except _Missing:
                listed = None
        if listed is None:
            home, is_collection = self._discover_home()
            state["home"] = home
            state["home_is_collection"] = is_collection
            listed = [_Collection(home)] if is_collection else self._list_home(home)
        state["listed"] = now
        state["push"] = push
        state.pop("push_url", None)
        state["missing"] = []
        self._home = None if state.get("home_is_collection") else home
        picked: dict[str, _Collection] = {}
        if state.get("home_is_collection"):
            for col in listed:
                picked.setdefault(col.url, col)
        else:
            for wanted in names:
                hits = [c for c in listed if self._matches(c, wanted)]
                if not hits:
                    problems.append(f"{self.name}: no {self.select_key[:-1]} named {wanted!r} under {home}")
                    state["missing"].append(wanted)
                for col in hits:
                    picked[col.url] = col
            if not self.select:
                for col in listed:
                    picked[col.url] = col
            if push is not None and not self._is_url(push):
                for col in listed:
                    if self._matches(col, push):
                        picked[col.url] = col
                        self._push_url = state["push_url"] = col.url
                if not state.get("push_url"):
                    state["missing"].append(push)  # a push creates it: look again next run
        state["from_home"] = [u for u in picked if u not in result]
        fresh = [reuse.get(u, c) for u, c in picked.items() if u not in result]
        return list(result.values()) + self._probed(fresh, stored, probe)

    def _probed(self, cols: list[_Collection], stored: Mapping[str, Any], probe: bool) -> list[_Collection]:
        if probe:
            for col in cols:
                if not col.probed and not col.missing:
                    self._probe(col, stored.get(col.url) or {})
        return cols

    # ----------------------------------------------------------------- pull

    def pull(self, cursor: dict | None, view: SourceView) -> Iterator[Batch]:
        state: dict = copy.deepcopy(cursor) if isinstance(cursor, dict) else {}
        if state.get("v") != 1 or state.get("url") != self.url or state.get("select") != self.select:
            state = {"v": 1, "url": self.url, "select": list(self.select), "home": "", "collections": {}}
        start = copy.deepcopy(state)
        problems: list[str] = []
        try:
            collections = self._collections(state, problems)
        except _Missing as exc:
            yield Batch(problems=[f"{self.name}: {self.url} cannot be read ({exc}); nothing is removed"])
            return
        if problems:
            yield Batch(problems=problems)
        window = self._window()
        stored: dict = state.setdefault("collections", {})
        done = 0
        current = {c.url for c in collections}
        for col in collections:
            entry = stored.get(col.url) or {}
            if col.missing:
                yield Batch(problems=[f"{self.name}: collection {col.url} cannot be read "
                                      f"({col.missing}); nothing under it is removed"])
                continue
            if self._unchanged(col, entry):
                continue  # the probe says: nothing moved
            try:
                for batch in self._pull_collection(col, entry, view, window, stored, state, done):
                    done = batch.done
                    if batch.cursor is not None:
                        start = batch.cursor
                    yield batch
            except _Missing as exc:
                yield Batch(problems=[f"{self.name}: collection {col.url} cannot be read ({exc}); "
                                      "nothing under it is removed"])
        # collections that vanished from the listing: say so, remove nothing
        if state.get("home") and not state.get("home_is_collection") and not self.select:
            for scope in view.scopes():
                if not scope.startswith(state["home"]) or scope in current:
                    continue
                kept = len(view.known(scope))
                if kept:
                    yield Batch(problems=[f"{self.name}: collection {scope} is no longer listed on the server; "
                                          f"its {kept} items are kept"])
        for url in list(stored):
            if url not in current:
                del stored[url]
        if state != start:
            yield Batch(cursor=copy.deepcopy(state), done=done)

    def _pull_collection(
        self, col: _Collection, entry: dict, view: SourceView, window, stored: dict, state: dict, done: int,
    ) -> Iterator[Batch]:
        known = dict(view.known(col.url))
        listing, removed, token, mode = self._changes(col, entry, known)
        if self.own_item_prefix:
            own = [h for h in listing if self._is_own(h)]
            for href in own:
                del listing[href]
            # an echo an older version read back is forgotten (its location, not the contact)
            removed = [*removed, *(h for h in own if h in known and h not in removed)]
        changed = [href for href, etag in listing.items() if known.get(href) != etag or not etag]
        remaining = (set(known) - set(removed)) | set(listing)
        if col.probed == "getctag" and col.ctag:
            probe = "getctag"
        elif col.probed and mode == "sync" and token:
            probe = "sync-token"  # no getctag here: the token is the marker
        else:
            probe = ""  # neither: every run reads the collection
        new_entry = {"token": token or "", "ctag": col.ctag or "", "mode": mode, "probe": probe}
        if not remaining and len(known) >= self.EMPTY_GUARD:
            yield Batch(problems=[
                f"{self.name}: collection {col.url} lists no items while {len(known)} are known; "
                "nothing is removed (a server or permission problem?)"])
            return
        batches = [changed[i : i + self.MULTIGET_BATCH] for i in range(0, len(changed), self.MULTIGET_BATCH)]
        total = done + len(changed)
        if not batches:
            stored[col.url] = new_entry
            yield Batch(removed=[Location(col.url, h, known.get(h, "")) for h in removed],
                        cursor=copy.deepcopy(state), done=done, total=total)
            return
        # the next multiget is on its way while this one is parsed and
        # stored: the server works while we do (one batch ahead, so at most
        # two answers are held)
        pool = None
        if len(batches) > 1:
            from concurrent.futures import ThreadPoolExecutor

            pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dav-prefetch")
        ahead = None
        try:
            for index, hrefs in enumerate(batches):
                if ahead is None:
                    resp = self._multiget(col.url, hrefs)
                else:
                    resp, ahead = ahead.result(), None
                if pool is not None and index + 1 < len(batches):
                    ahead = pool.submit(self._multiget, col.url, batches[index + 1])
                records, failures, gone = self._read_multiget(col.url, resp, window)
                del resp
                done += len(hrefs)
                last = index == len(batches) - 1
                batch = Batch(records=records, failures=failures, done=done, total=total,
                              removed=[Location(col.url, h, known.get(h, "")) for h in gone if h in known])
                if last:
                    stored[col.url] = new_entry
                    batch.removed.extend(Location(col.url, h, known.get(h, "")) for h in removed)
                    batch.cursor = copy.deepcopy(state)
                yield batch
        finally:
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)

    def _changes(self, col: _Collection, entry: dict, known: Mapping[str, str]
                 ) -> tuple[dict[str, str], list[str], str | None, str]:
        """(changed-or-listed href -> etag, removed hrefs, new token, mode)."""
        if entry.get("mode") != "list":
            old = entry.get("token") or ""
            result = self._sync_report(col.url, old)
            if result is not None and old and result[2] is None:
                # the token is no longer valid: list everything
                old = ""
                result = self._sync_report(col.url, "")
            if result is not None and result[2] is not None:
                present, deleted, token = result
                if old:
                    return present, deleted, token, "sync"
                removed = [h for h in known if h not in present]
                return present, removed, token, "sync"
        # no sync-collection: a full listing
        resp = self._propfind(col.url, _PROPFIND_ETAGS, "1")
        items, _ = _parse_multistatus(resp.content, col.url)
        if any(i.href == _path(col.url) and i.status in (404, 410) for i in items):
            raise _Missing(f"{self.name}: PROPFIND {col.url}: 404 Not Found")
        present = {i.href: i.etag for i in items if i.status == 200 and i.href != _path(col.url)}
        removed = [h for h in known if h not in present]
        return present, removed, None, "list"

    def _sync_report(self, url: str, token: str) -> tuple[dict[str, str], list[str], str | None] | None:
        """sync-collection; None when the server has no such report,
        (.., .., None) when it refused the token."""
        body = _SYNC.format(token=xml_escape(token))
        resp = self.http.request(
            "REPORT", url, body, {"Depth": "0", "Content-Type": XML_TYPE},
            allow=(400, 403, 405, 409, 412, 415, 422, 501),
        )
        if resp.status == 207:
            items, new_token = _parse_multistatus(resp.content, url)
            if new_token is None:
                return None
            present: dict[str, str] = {}
            deleted: list[str] = []
            for item in items:
                if item.href == _path(url):
                    continue
                if item.status in (404, 410):
                    deleted.append(item.href)
                else:
                    present[item.href] = item.etag
            return present, deleted, new_token
        text = resp.text
        if "valid-sync-token" in text and token:
            log.info("%s: server refused the sync token for %s; listing everything", self.name, url)
            return {}, [], None
        if resp.status == 403 and not any(
            marker in text for marker in ("supported-report", "sync-traversal", "valid-sync-token")
        ):
            raise AuthError(f"{self.name}: access denied (HTTP 403 on REPORT {url})")
        if resp.status == 400 and token:
            # some servers answer an unknown token with a plain 400
            return {}, [], None
        log.info("%s: no sync-collection on %s (HTTP %s); listing instead", self.name, url, resp.status)
        return None

    def _multiget_body(self, hrefs: list[str]) -> str:
        parts = [
            f'<?xml version="1.0" encoding="utf-8"?><{self.multiget} xmlns:D="DAV:" {self.ns_decl}>',
            f"<D:prop><D:getetag/><{self.data_elem}/></D:prop>",
        ]
        parts.extend(f"<D:href>{xml_escape(h)}</D:href>" for h in hrefs)
        parts.append(f"</{self.multiget}>")
        return "".join(parts)

    def _multiget(self, url: str, hrefs: list[str]) -> _Response:
        return self.http.request(
            "REPORT", url, self._multiget_body(hrefs), {"Depth": "1", "Content-Type": XML_TYPE}
        )

    def _fetch(self, url: str, hrefs: list[str], window) -> tuple[list, list[Failure], list[str]]:
        return self._read_multiget(url, self._multiget(url, hrefs), window)

    def _read_multiget(self, url: str, resp: _Response, window) -> tuple[list, list[Failure], list[str]]:
        items, _ = _parse_multistatus(resp.content, url, self.data_prop)
        records: list = []
        failures: list[Failure] = []
        gone: list[str] = []
        parse = self._parse
        for item in items:
            location = Location(url, item.href, item.etag)
            if item.status in (404, 410):
                gone.append(item.href)
                continue
            if item.status != 200 or item.data is None:
                failures.append(Failure(location, f"the server sent no data (status {item.status})"))
                continue
            recs, fails = parse(item.data, location, window)
            records.extend(recs)
            if fails:
                failures.extend(fails)
        return records, failures, gone

    def _is_own(self, href: str) -> bool:
        """An item this program wrote (see :attr:`own_item_prefix`): pushes name
        it ``<uid><ext>`` (:func:`connectors.davhttp._item_name`)."""
        name = unquote(href.rsplit("/", 1)[-1])
        return name.startswith(self.own_item_prefix) and name.endswith(self.item_ext)

    def _parse(self, text: str, location: Location, window) -> tuple[list, list[Failure]]:
        raise NotImplementedError

    def _parse_one(self, text: str, location: Location) -> Any:
        raise NotImplementedError

    # ----------------------------------------------------------------- push

    def _push_collection(self) -> str:
        if self._push_url:
            return self._push_url
        if self.push_target is None:
            raise ConfigError(f"sources.{self.name}.{self.push_key} is not set: nowhere to write")
        if self._is_url(self.push_target):
            self._push_url = _dir(_join(self.url, self.push_target))
            return self._push_url
        state: dict = {"home": ""}
        self._collections(state, [], probe=False)
        if self._push_url:
            return self._push_url
        if state.get("home_is_collection") or not state.get("home"):
            raise ConfigError(f"sources.{self.name}.{self.push_key}: no collection named "
                              f"{self.push_target!r} and no home to create it in")
        self._push_url = self._create_push_collection(state["home"], self.push_target)
        return self._push_url

    def _create_push_collection(self, home: str, name: str) -> str:
        raise NotImplementedError

    def _get(self, url: str) -> _Response:
        return self.http.request("GET", url, None, {"Accept": self.content_type}, allow=(404, 410))

    def _etag_of(self, url: str) -> str:
        resp = self._propfind(url, _PROPFIND_ETAGS, "0", allow=(404, 410))
        if resp.status != 207:
            return ""
        items, _ = _parse_multistatus(resp.content, url)
        return items[0].etag if items else ""

    def _put(self, uid: str, text: str, href: str, etag: str, scope: str,
             conflict: Callable[[str, Location], TaskState | None]) -> PushResult:
        """One conditional write; see push_tasks for the outcomes."""
        from .ical import normalised_hash

        if href and etag:
            target = _join(scope or self._push_collection(), href)
            headers = {"If-Match": etag}
        else:
            scope = self._push_collection()
            target = _join(scope, _item_name(uid, self.item_ext))
            headers = {"If-None-Match": "*"}
            etag = ""
        scope = scope or _dir(target.rsplit("/", 1)[0])
        path = _path(target)
        headers["Content-Type"] = f"{self.content_type}; charset=utf-8"
        resp = self.http.request("PUT", target, text, headers, allow=(404, 409, 410, 412, 415, 400, 422))
        if 200 <= resp.status < 300:
            new_etag = resp.headers.get("ETag") or self._etag_of(target)
            return PushResult(uid, True, scope=scope, href=path, etag=new_etag)
        if resp.status in (404, 410):
            return PushResult(uid, False, scope=scope, href=path, gone=True,
                              error="the item is gone from the server")
        if resp.status == 412:
            current = self._get(target)
            if current.status in (404, 410):
                if etag:
                    return PushResult(uid, False, scope=scope, href=path, gone=True,
                                      error="the item is gone from the server")
                return PushResult(uid, False, scope=scope, href=path,
                                  error="412 on create but nothing there; retry later")
            server_etag = current.headers.get("ETag") or self._etag_of(target)
            if normalised_hash(current.content) == normalised_hash(text):
                # what we meant to write is already there (a retry after a crash)
                return PushResult(uid, True, scope=scope, href=path, etag=server_etag)
            location = Location(scope, path, server_etag)
            return PushResult(uid, False, scope=scope, href=path, etag=server_etag,
                              conflict=conflict(current.text, location),
                              error="conflict: the server has another version")
        return PushResult(uid, False, scope=scope, href=path,
                          error=f"the server refused the item (HTTP {resp.status}): {resp.text[:200]}")

