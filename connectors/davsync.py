"""What CalDAV and CardDAV sources share: change detection, reading and
conditional writes (the protocol specifics are class attributes of the
subclasses in :mod:`connectors.dav`, the HTTP client is
:mod:`connectors.davhttp`, the options and finding the collections and
whether they moved are :mod:`connectors.davcollections`).  Per run:

* discovery and one change-marker probe per collection
  (:class:`connectors.davcollections._DavCollections`); a collection whose
  marker did not move costs nothing more;
* a collection that moved: ``REPORT sync-collection`` (RFC 6578) with the
  stored token, then ``calendar-multiget``/``addressbook-multiget`` in
  batches of :attr:`MULTIGET_BATCH` for the changed hrefs;
* a server without sync-collection, or one that forgot the token: a full
  listing (``PROPFIND Depth: 1``, href + etag) compared with
  ``view.known(collection_url)``; vanished hrefs are reported removed.

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
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Iterator, Mapping
from urllib.parse import unquote
from xml.sax.saxutils import escape as xml_escape

from crm_bridge.crm_core.records import Batch, Failure, Location, PushResult, TaskState

from .base import AuthError, ConfigError, SourceView
from .davcollections import _PROPFIND_ETAGS, _DavCollections
from .davhttp import (
    XML_TYPE,
    _Collection,
    _dir,
    _item_name,
    _join,
    _Missing,
    _parse_multistatus,
    _path,
    _Response,
)

log = logging.getLogger("crm_bridge.connectors.dav")

_SYNC = (
    '<?xml version="1.0" encoding="utf-8"?>'
    '<D:sync-collection xmlns:D="DAV:"><D:sync-token>{token}</D:sync-token>'
    "<D:sync-level>1</D:sync-level><D:prop><D:getetag/></D:prop></D:sync-collection>"
)


class _DavConnector(_DavCollections):
    # A DAV pull mostly waits for the server and already parses one multiget
    # behind the next (see pull); a reader process only adds a third busy
    # process: bench/bench_dav.py took 3.25 s with one and 2.99 s without.
    pull_in_reader = False

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

    # ----------------------------------------------------------------- pull

    def _window(self) -> tuple[datetime, datetime]:
        now = datetime.now(timezone.utc)
        return now - timedelta(days=self.window_past_days), now + timedelta(days=self.window_future_days)

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

