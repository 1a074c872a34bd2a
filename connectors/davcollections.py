"""A CalDAV/CardDAV source's options, its HTTP client and its collections: discovery, the home listing and
the change-marker probe (:class:`_DavCollections`).  :mod:`connectors.davsync` builds the reading and the
conditional writes on it, :mod:`connectors.dav` the two connectors.  Per run:

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

Collections configured by URL (``calendars = ["https://..."]``) skip the
home listing: one probe each per run, and the reading when it moved.

The marker is read before the collection is, so a change landing in
between moves the marker again and is read next run; a ctag changes
whenever a member changes (tests check this on Radicale and Xandikos).
"""

from __future__ import annotations

import copy
import logging
import time
from typing import Any, Iterable, Mapping
from urllib.parse import unquote, urljoin, urlsplit, urlunsplit

from .base import ConfigError, Connector, is_loopback, secret
from .davhttp import (
    CS,
    DAV,
    XML_TYPE,
    _Collection,
    _dir,
    _Http,
    _join,
    _Missing,
    _path,
    _q,
    _Response,
    _responses,
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
#: href and etag of a collection's members (the full listing; also a bare host's /.well-known probe)
_PROPFIND_ETAGS = (
    '<?xml version="1.0" encoding="utf-8"?>'
    '<D:propfind xmlns:D="DAV:"><D:prop><D:resourcetype/><D:getetag/></D:prop></D:propfind>'
)


class _DavCollections(Connector):
    """Options, the HTTP client and the collections of a DAV source; :class:`connectors.davsync._DavConnector`
    reads and writes them."""

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
        for _href, status, props in _responses(root):
            if status in (404, 410):
                raise _Missing(f"{self.name}: PROPFIND {url}: 404 Not Found")  # Xandikos: a 207 saying 404
            for prop in props:
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
        for href, status, props in _responses(root):
            url = _dir(_join(home, href))
            if status in (404, 410):
                if _path(url) == home_path:
                    raise _Missing(f"{self.name}: PROPFIND {home}: 404 Not Found")
                continue
            is_type = False
            name = None
            for prop in props:
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
        for _href, status, props in _responses(root):
            if status in (404, 410):
                col.missing = "404 Not Found"  # Xandikos: a 207 saying 404
                return
            for prop in props:
                value = prop.findtext(_PROBE_TAG[kind])
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
