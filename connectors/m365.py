"""Microsoft 365 (Exchange Online) mailboxes through Microsoft Graph, signed in with MSAL.

Config (``[sources.NAME]`` with ``type = "m365"``)::

    tenant = "firma.onmicrosoft.com"          # or the directory (tenant) id
    client_id = "00000000-0000-0000-0000-000000000000"   # the app registration's application id
    client_secret_env = "CRM_M365_SECRET"     # or client_secret_command = "pass show m365"
    mailbox = "anna@firma.de"                 # one source per mailbox, one shared app
    folders = ["inbox", "sentitems", "Inbox/Projekte"]  # well-known names or paths
    calendar = true                           # calendarView/delta over the window
    contacts = true                           # the default contacts folder
    auth = "client_secret"                    # or "device_code": one user signs in (crm sources login NAME)
    token_cache = "~/.cache/crm-bridge/m365-tokens.json"  # default: next to the store; written 0600
    cards_folder = "CRM"                      # contacts folder for [push] cards (created when missing)
    page_size = 100                           # Prefer: odata.maxpagesize (1-1000)
    timeout = 120                             # seconds per request
    max_backoff = 300                         # longest Retry-After honoured in place
    log_category = "CRM"                      # as for Exchange: log this mail from an unknown sender
    private_category = "Private"              # never log this item (as sensitivity private/confidential)
    window_past_days = 730
    window_future_days = 365
    authority = "https://login.microsoftonline.com/firma.onmicrosoft.com"  # only to point elsewhere (tests)
    graph_url = "https://graph.microsoft.com/v1.0"                          # ditto
    ca_file = "/path/ca.pem"                  # a CA to trust for both (tests)

Sign-in (connectors/graphauth.py): MSAL's client-credentials flow
(application permissions Mail.Read, Calendars.Read, Contacts.Read), or a
single user's device-code sign-in (``auth = "device_code"``, delegated
permissions); tokens and MSAL's discovery metadata are cached in
``token_cache``, readable only by its owner, and renewed silently.  One
HTTP session (connectors/graphhttp.py: a pool of kept-alive HTTPS
connections on the standard library, TLS verified against ``ca_file`` or the
system's trust store) serves MSAL and Graph.

Scopes and cursor: a scope is a folder's path ("Inbox", "Sent Items",
"Inbox/Projekte"), "Calendar" or "Contacts"; a local id is the item's
immutable id (``Prefer: IdType="ImmutableId"``), its etag the changeKey.
``{"version": 1, "folders": {scope: {"id", "link", "full", "wk"}}}``: ``link``
is the ``@odata.nextLink`` of the next page while a round is under way, the
``@odata.deltaLink`` after it; it is stored with the page it follows, so a
cut run goes on from the last stored page and a run where nothing changed
is one delta request per folder.  A thread per folder follows the
``@odata.nextLink`` pages up to :data:`READ_AHEAD` pages ahead of the one
being read and stored (connectors/base.py :class:`PageChain`).

Errors are mapped in one place (:meth:`M365Connector._request`): 429/503
with Retry-After -> wait (up to ``max_backoff``) and repeat, else
``TransientError`` (a GET also after 504 and, twice, other 5xx; a POST/PATCH
never after those: perhaps carried out, that item fails, ``WriteUnconfirmed``); 401 InvalidAuthenticationToken -> a fresh token from
MSAL, once, then ``AuthError``; 403 / 404 for the mailbox -> a
``ConnectorError`` naming it; 410 (syncStateNotFound, resyncRequired) -> the
folder is read again from the start and compared with the store, which
reports what is gone; an item that cannot be read -> quarantine.  Pulling
never writes to the mailbox (only GET requests); pushing
(connectors/graphpush.py) writes To Do tasks and the contacts of
``cards_folder``.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import queue
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping
from urllib.parse import quote

from crm_bridge.connectors.base import (
    AuthError,
    ConfigError,
    Connector,
    ConnectorError,
    PageChain,
    SourceUnavailable,
    SourceView,
    TransientError,
)
from crm_bridge.connectors.graphauth import AUTH_MODES, SignIn
from crm_bridge.crm_core.records import Batch, CardPush, Failure, Location, PushResult, TaskPush
from crm_bridge.crm_core.settings import SourcePolicy

log = logging.getLogger("crm.m365")

CURSOR_VERSION = 1
_WELL_KNOWN = {"inbox": "inbox", "sentitems": "sentitems", "sent": "sentitems", "drafts": "drafts",
               "deleteditems": "deleteditems", "junkemail": "junkemail", "archive": "archive"}
READ_AHEAD = 3  # delta pages asked for ahead of the one being stored (each ~72 kB of JSON at 100 mails)
_MAILBOX_CODES = ("ErrorInvalidUser", "MailboxNotEnabledForRESTAPI", "ResourceNotFound", "ErrorMailboxNotFound")


class _Resync(Exception):
    """410: the delta or skip token is no longer valid."""


class _Gone(Exception):
    """404 ErrorItemNotFound: the folder is not there (any more)."""


class WriteUnconfirmed(TransientError):
    """A POST/PATCH answered with a 5xx other than 503: perhaps carried out, so not repeated; that item fails."""


class M365Connector(Connector):
    type = "m365"
    # it mostly waits for the service, and reads ahead in a thread; a reader process (sync/worker.py) was
    # tried and measured slower here (20,000 mails, 12 alternating pairs: 2.70 s against 2.60 s)
    pull_in_reader = False
    option_keys = frozenset({
        "tenant", "client_id", "client_secret_env", "client_secret_command", "authority", "graph_url", "ca_file",
        "mailbox", "folders", "calendar", "contacts", "token_cache", "page_size", "timeout", "max_backoff",
        "log_category", "private_category", "window_past_days", "window_future_days", "tasks_list", "auth",
        "cards_folder",
    })
    can_push = frozenset({"tasks", "cards"})
    push_options = {"tasks": "tasks_list", "cards": "cards_folder"}

    def __init__(self, name: str, options: Mapping[str, Any]):
        super().__init__(name, options)
        o, where = self.options, f"sources.{name}"
        mailbox = o.get("mailbox")
        if not isinstance(mailbox, str) or "@" not in mailbox:
            raise ConfigError(f"{where}.mailbox must be the mailbox's address (anna@firma.de)")
        self.mailbox = mailbox.strip().lower()
        self.tenant = self._str("tenant", "")
        self.client_id = self._str("client_id", "")
        if not self.tenant or not self.client_id:
            raise ConfigError(f"{where}: tenant and client_id (of the Entra ID app registration) are needed")
        self.authority = self._url("authority", f"https://login.microsoftonline.com/{self.tenant}")
        self.graph_url = self._url("graph_url", "https://graph.microsoft.com/v1.0").rstrip("/")
        ca_file = o.get("ca_file")
        if ca_file is not None and (not isinstance(ca_file, str) or not Path(ca_file).expanduser().is_file()):
            raise ConfigError(f"{where}.ca_file must be the path of a CA file")
        self.verify: Any = str(Path(ca_file).expanduser()) if ca_file else True
        self.folders = self._folder_names("folders", ["inbox", "sentitems"])
        self.want_calendar = self._bool("calendar", True)
        self.want_contacts = self._bool("contacts", True)
        cache = o.get("token_cache")
        if cache is not None and not isinstance(cache, str):
            raise ConfigError(f"{where}.token_cache must be a file path")
        self.token_cache = Path(cache).expanduser() if cache else None
        self.auth = self._str("auth", "client_secret")
        if self.auth not in AUTH_MODES:
            raise ConfigError(f"{where}.auth must be one of {', '.join(AUTH_MODES)}")
        if self.auth == "device_code" and self.token_cache is None:
            raise ConfigError(f"{where}: auth = \"device_code\" needs token_cache (the file the user's sign-in is kept in)")
        cards_folder = self._optional_name("cards_folder", "the name of a contacts folder")
        self.cards_folder = cards_folder.strip("/") if cards_folder is not None else None
        if self.cards_folder is not None and ("/" in self.cards_folder or self.cards_folder.lower() == "contacts"):
            raise ConfigError(f"{where}.cards_folder must name a folder below Contacts (created when missing)")
        self.tasks_list = self._optional_name("tasks_list", "the name of a Microsoft To Do list")
        self.page_size = self._int("page_size", 100, 1, 1000)
        self.timeout = self._int("timeout", 120, 1, 3600)
        self.max_backoff = self._int("max_backoff", 300, 0, 3600)
        self.window_past_days = self._int("window_past_days", 730, 0, 36500)
        self.window_future_days = self._int("window_future_days", 365, 0, 36500)
        self.log_category = self._str("log_category", "CRM")
        self.private_category = self._str("private_category", "Private")
        try:
            policy = SourcePolicy.from_table(name, {k: v for k, v in dict(options).items() if k in SourcePolicy.KEYS})
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        self.log_flag, self.private_flag = policy.log_keyword, policy.private_keyword
        self._session: Any = None
        self._signin = SignIn(self)
        self._list_id: str | None = None  # the To Do list's id, once looked up (connectors/graphpush.py)

    def _url(self, key: str, default: str) -> str:
        value = self._str(key, default)
        if not value.startswith("https://"):
            raise ConfigError(f"sources.{self.name}.{key} must be an https:// URL")
        return value

    # -- signing in -----------------------------------------------------------------
    def _http(self) -> Any:
        if self._session is None:
            from crm_bridge.connectors.graphhttp import Session

            self._session = Session(self.verify, self.timeout)
        return self._session

    def _access_token(self, fresh: bool = False) -> str:
        return self._signin.access_token(fresh)

    def login(self, say: Callable[[str], None]) -> str:
        """``crm sources login``: a user's sign-in by device code (auth = "device_code"); who signed in."""
        return self._signin.login(say)

    # -- requests, and every error in one place -------------------------------------------
    def _request(self, url: str, method: str = "GET", body: dict | None = None) -> dict:
        """``method`` ``url`` (Graph): the JSON answer; errors as the module docstring says.

        Pulling only GETs; :mod:`connectors.graphpush` POSTs and PATCHes To Do tasks.
        """
        from crm_bridge.connectors.graphhttp import HTTPError, TLSError

        refreshed = False
        for attempt in range(6):
            headers = {"Authorization": f"Bearer {self._access_token()}", "Accept": "application/json",
                       "Prefer": f'IdType="ImmutableId", odata.maxpagesize={self.page_size}'}
            try:
                resp = self._http().request(method, url, headers=headers, json=body)
            except TLSError as exc:
                raise SourceUnavailable(f"TLS: the certificate of {url.split('/')[2]} is not trusted "
                                        f"({str(exc)[:160]}); set ca_file") from None
            except (HTTPError, OSError) as exc:
                raise TransientError(f"connection problem: {str(exc)[:200]}") from None
            status = resp.status_code or 0
            if 200 <= status < 300:
                if status == 204:
                    return {}
                try:  # Graph's JSON is UTF-8 (RFC 8259); no guessing of the charset, one pass over the bytes
                    data = json.loads(resp.content or b"")
                except ValueError:
                    data = None
                if not isinstance(data, dict):
                    raise SourceUnavailable(f"Graph answered {url.split('?')[0]} with something that is not JSON")
                return data
            code, message = _error_of(resp)
            # a GET may be repeated; a POST/PATCH only where Graph says it was not carried out (429, 503:
            # Microsoft's throttling docs): after a 500/502/504 it may have been, and repeating it would
            # create a second task or contact (the next run's lookup finds one that was made after all)
            if status in (429, 503) or (method == "GET" and (status == 504 or (status >= 500 and attempt < 2))):
                wait = _retry_after(resp.headers.get("Retry-After"))
                if wait is None or wait > self.max_backoff or attempt == 5:
                    raise TransientError(f"Graph is busy (HTTP {status} {code}); try again later")
                log.info("%s: Graph asked to wait %.0f s (HTTP %s %s)", self.name, wait, status, code)
                time.sleep(wait)
                continue
            if status == 401 and not refreshed:
                refreshed = True
                self._access_token(fresh=True)
                continue
            if status == 401:
                raise AuthError(f"Graph refused the app's token for {self.mailbox} ({code}); "
                                "check the app's permissions and admin consent in Entra ID")
            if status == 403 and self.auth == "device_code":
                raise ConnectorError(f"the signed-in user may not read the mailbox {self.mailbox} (HTTP 403 {code}); "
                                     f"sign in as its owner: python -m crm_bridge.cli sources login {self.name}")
            if status == 403:
                raise ConnectorError(f"the app may not read the mailbox {self.mailbox} (HTTP 403 {code}); grant "
                                     "Mail.Read, Calendars.Read and Contacts.Read (application) with admin "
                                     "consent, or widen its application access policy")
            if status == 404 and code in _MAILBOX_CODES:
                raise ConnectorError(f"Microsoft 365 has no mailbox {self.mailbox} (HTTP 404 {code})")
            if status == 404:
                raise _Gone(message)
            if status == 410:
                raise _Resync(code)
            if status >= 500 and method != "GET":
                raise WriteUnconfirmed(f"Graph failed (HTTP {status} {code}) on a {method}; not repeated, "
                                       "the next run looks whether it was stored")
            if status >= 500:
                raise TransientError(f"Graph failed (HTTP {status} {code}); try again later")
            raise SourceUnavailable(f"Graph refused {url.split('?')[0]} (HTTP {status} {code}: {message[:160]})")
        raise AssertionError("unreachable")

    def close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            with contextlib.suppress(Exception):
                session.close()

    # -- folders --------------------------------------------------------------------------
    def _user(self) -> str:
        return f"{self.graph_url}/users/{quote(self.mailbox)}"

    def _children(self, parent: str | None) -> list[dict]:
        url = f"{self._user()}/mailFolders" + (f"/{parent}/childFolders" if parent else "") + "?$top=100"
        out: list[dict] = []
        while url:
            page = self._request(url)
            out += [f for f in page.get("value") or () if isinstance(f, dict)]
            url = page.get("@odata.nextLink") or ""
        return out

    def _resolve(self, states: dict[str, dict]) -> tuple[list[tuple[str, str, str, str]], list[str]]:
        """The folders to read as (scope, id, kind, well-known name), and problems."""
        chosen: dict[str, tuple[str, str, str, str]] = {}
        problems: list[str] = []
        if self.want_contacts:
            chosen["contacts"] = ("Contacts", "contacts", "contacts", "")
        for entry in self.folders:
            wk = _WELL_KNOWN.get(entry.lower())
            if wk is not None:
                known = next(((s, e["id"]) for s, e in states.items() if e.get("wk") == wk and e.get("id")), None)
                if known is None:
                    try:
                        folder = self._request(f"{self._user()}/mailFolders/{wk}?$select=id,displayName")
                    except _Gone:
                        problems.append(f"folder {entry!r} is not in the mailbox {self.mailbox}")
                        continue
                    if not isinstance(folder.get("id"), str):
                        problems.append(f"Graph answered the folder {entry!r} without an id")
                        continue
                    known = (str(folder.get("displayName") or wk), folder["id"])
                chosen.setdefault(known[1], (known[0], known[1], "mail", wk))
                continue
            parent, path = None, []
            for part in entry.split("/"):
                match = next((f for f in self._children(parent) if str(f.get("displayName", "")).lower()
                              == part.lower()), None)
                if match is None:
                    problems.append(f"folder {entry!r} is not in the mailbox {self.mailbox}")
                    break
                parent = str(match["id"])
                path.append(str(match["displayName"]))
            else:
                chosen.setdefault(str(parent), ("/".join(path), str(parent), "mail", ""))
        if self.want_calendar:
            chosen["calendar"] = ("Calendar", "calendar", "calendar", "")
        if self.tasks_list:  # read back what was pushed (completion, edits) through the list's tasks delta
            from crm_bridge.connectors.graphpush import find_list

            list_id = next((e["id"] for s, e in states.items() if s == self.tasks_scope and e.get("id")), None)
            list_id = list_id or find_list(self, create=False)
            if list_id:
                chosen["tasks"] = (self.tasks_scope, list_id, "tasks", "")
        return list(chosen.values()), problems

    @property
    def tasks_scope(self) -> str:
        return f"To Do/{self.tasks_list or 'CRM'}"

    def push_tasks(self, tasks: list[TaskPush], view: SourceView) -> list[PushResult]:
        from crm_bridge.connectors.graphpush import push_tasks

        return push_tasks(self, tasks)

    def push_cards(self, cards: list[CardPush], view: SourceView) -> list[PushResult]:
        from crm_bridge.connectors.graphpush import push_cards

        return push_cards(self, cards)

    # -- pull -------------------------------------------------------------------------------
    def _window(self) -> tuple[datetime, datetime]:
        # whole days: a delta round keeps the window it began with, and a new round the same day asks the same
        now = datetime.now(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
        return now - timedelta(days=self.window_past_days), now + timedelta(days=self.window_future_days)

    def _first_url(self, kind: str, fid: str) -> str:
        from crm_bridge.connectors.graphitems import CONTACT_SELECT, MAIL_EXPAND, MAIL_SELECT

        if kind == "mail":
            return (f"{self._user()}/mailFolders/{fid}/messages/delta?$select={MAIL_SELECT}"
                    f"&$expand={quote(MAIL_EXPAND)}")
        if kind == "contacts":
            return f"{self._user()}/contacts/delta?$select={CONTACT_SELECT}"
        if kind == "tasks":
            return f"{self._user()}/todo/lists/{fid}/tasks/delta"
        lo, hi = self._window()
        return (f"{self._user()}/calendarView/delta?startDateTime={lo:%Y-%m-%dT%H:%M:%SZ}"
                f"&endDateTime={hi:%Y-%m-%dT%H:%M:%SZ}")

    def _ids_url(self, kind: str, fid: str) -> str:
        if kind == "mail":
            return f"{self._user()}/mailFolders/{fid}/messages?$select=id&$top=1000"
        if kind == "contacts":
            return f"{self._user()}/contacts?$select=id&$top=1000"
        if kind == "tasks":
            return f"{self._user()}/todo/lists/{fid}/tasks?$select=id"
        lo, hi = self._window()
        return (f"{self._user()}/calendarView?startDateTime={lo:%Y-%m-%dT%H:%M:%SZ}"
                f"&endDateTime={hi:%Y-%m-%dT%H:%M:%SZ}&$select=id&$top=1000")

    @staticmethod
    def _load_cursor(cursor: dict | None) -> dict[str, dict]:
        if not isinstance(cursor, dict) or cursor.get("version") != CURSOR_VERSION:
            return {}
        folders = cursor.get("folders")
        return {k: dict(v) for k, v in folders.items() if isinstance(v, dict)} if isinstance(folders, dict) else {}

    def pull(self, cursor: dict | None, view: SourceView) -> Iterator[Batch]:
        states = self._load_cursor(cursor)
        folders, problems = self._resolve(states)
        scopes = {scope for scope, _i, _k, _w in folders}
        for scope in sorted(set(view.scopes()) - scopes):
            known = view.known(scope)
            if known:
                problems.append(f"folder {scope!r} is gone from the mailbox or the config; keeping its {len(known)} items")
        if problems:
            yield Batch(problems=problems)
        for scope, fid, kind, wk in folders:
            yield from self._pull_folder(scope, fid, kind, wk, states, view)

    def _pull_folder(self, scope: str, fid: str, kind: str, wk: str, states: dict[str, dict],
                     view: SourceView) -> Iterator[Batch]:
        entry = states.get(scope) or {}
        link = entry.get("link") if entry.get("id") == fid and isinstance(entry.get("link"), str) else None
        window = f"{self._window()[0]:%Y-%m-%d}" if kind == "calendar" else ""
        if link and window and not _recent(entry.get("window"), window):
            # a calendarView delta keeps the window of its first request: a week on, start a new round
            # (appointments that entered the window come, those that left it are compared away)
            link = None
        began = (entry.get("window") or window) if link else window  # the window this round asks for
        full = bool(entry.get("full")) or (link is None and bool(view.known(scope)))
        url = link or self._first_url(kind, fid)
        pager: list[PageChain[str, dict]] = []  # the round's page thread, once started
        try:
            yield from self._pages(scope, fid, kind, wk, states, view, url, link, full, window, began, pager)
        finally:
            for p in pager:
                p.close()

    def _pages(self, scope: str, fid: str, kind: str, wk: str, states: dict[str, dict], view: SourceView,
               url: str, link: str | None, full: bool, window: str, began: str, pager: list[PageChain[str, dict]]) -> Iterator[Batch]:
        done = 0
        while True:
            try:
                if kind == "tasks":  # (reading tasks asks Graph for linked resources meanwhile; a short list)
                    page = self._request(url)
                else:
                    if not pager:
                        pager.append(PageChain(self._request, url, _next_link, READ_AHEAD, f"m365-pages-{scope}"))
                    page = pager[0].get() or {}  # ({}: never, the chain ends with the last page read)
            except _Resync:
                for p in pager:
                    p.close()
                pager.clear()
                if link is None:
                    raise SourceUnavailable(f"Graph refused a fresh delta query of {scope!r} (HTTP 410)") from None
                log.info("%s: Graph no longer knows the delta token of %r; comparing the whole folder", self.name, scope)
                url, link, full, began = self._first_url(kind, fid), None, True, window
                continue
            except _Gone:
                yield Batch(problems=[f"folder {scope!r} is not in the mailbox {self.mailbox} (any more); nothing removed"])
                return
            value = page.get("value")
            next_link, delta_link = page.get("@odata.nextLink"), page.get("@odata.deltaLink")
            if not isinstance(value, list) or not (isinstance(next_link, str) or isinstance(delta_link, str)):
                yield Batch(problems=[f"Graph answered the delta query of {scope!r} without value and links; "
                                      "the folder is read again next run"])
                return
            last = not isinstance(next_link, str)
            batch = Batch()
            if value:
                from crm_bridge.connectors import graphitems  # (not needed by a run where nothing changed)

                for item in value:
                    self._add(batch, scope, kind, item, graphitems)
            if last and full and view.known(scope):
                try:
                    batch.removed.extend(self._vanished(kind, fid, scope, view, batch))
                except _Gone:
                    yield Batch(problems=[f"folder {scope!r} vanished while it was read; nothing removed"])
                    return
            done += len(value)
            states[scope] = {"id": fid, "link": delta_link if last else next_link, "full": full and not last}
            if wk:
                states[scope]["wk"] = wk
            if window:
                states[scope]["window"] = began
            batch.cursor = {"version": CURSOR_VERSION, "folders": copy.deepcopy(states)}
            batch.done = done
            yield batch
            if last:
                return
            url = link = str(next_link)

    def _add(self, batch: Batch, scope: str, kind: str, item: Any, gi: Any) -> None:
        if not isinstance(item, dict) or not isinstance(item.get("id"), str) or not item["id"]:
            batch.failures.append(Failure(Location(scope, f"unreadable-{len(batch.failures)}"),
                                          "an entry of the delta answer without an id", str(item)[:200]))
            return
        if "@removed" in item:
            batch.removed.append(Location(scope, item["id"]))
            return
        location = Location(scope, item["id"], str(item.get("changeKey") or item.get("@odata.etag") or ""))
        kind_of = item.get("@odata.type")
        try:
            if kind == "mail":
                if kind_of is not None and kind_of not in gi.MAIL_TYPES:
                    raise gi.ItemError(f"an item of type {kind_of} in a mail folder")
                batch.records.append(gi.mail_of(item, location, self.mailbox, self.log_category, self.private_category,
                                             self.log_flag, self.private_flag))
            elif kind == "calendar":
                if kind_of not in (None, "#microsoft.graph.event"):
                    raise gi.ItemError(f"an item of type {kind_of} in the calendar")
                batch.records.append(gi.appointment(item, location))
            elif kind == "contacts":
                if kind_of not in (None, "#microsoft.graph.contact"):
                    raise gi.ItemError(f"an item of type {kind_of} among the contacts")
                batch.records.append(gi.contact(item, location))
            elif kind == "tasks":
                from crm_bridge.connectors.graphpush import crm_uid

                uid = crm_uid(self, scope, item)
                if uid:
                    batch.records.append(gi.task(item, uid, Location(scope, item["id"], str(item.get("@odata.etag") or ""))))
        except gi.ItemError as exc:
            batch.failures.append(Failure(location, str(exc), _excerpt(item)))
        except Exception as exc:  # JSON this code did not foresee: quarantine the item, go on
            batch.failures.append(Failure(location, f"unexpected {type(exc).__name__}: {exc}", _excerpt(item)))

    def _vanished(self, kind: str, fid: str, scope: str, view: SourceView, batch: Batch) -> list[Location]:
        """After a full pass: what the store knows in ``scope`` that the folder no longer holds."""
        present = {r.location.local_id for r in batch.records}
        url: str = self._ids_url(kind, fid)
        while url:
            page = self._request(url)
            present.update(str(i.get("id")) for i in page.get("value") or () if isinstance(i, dict))
            url = page.get("@odata.nextLink") or ""
        return [Location(scope, lid) for lid in view.known(scope) if lid not in present]


def _next_link(page: Any) -> str | None:
    """The link a delta page names for the next one (the reader's rule, M365Connector._pages: a page goes on
    only with a value list and a nextLink)."""
    link = page.get("@odata.nextLink") if isinstance(page, dict) else None
    return link if isinstance(link, str) and isinstance(page.get("value"), list) else None


def _recent(began: Any, today: str, days: int = 7) -> bool:
    """Whether the window that began ``began`` (YYYY-MM-DD) is less than ``days`` older than today's."""
    try:
        return (datetime.fromisoformat(today) - datetime.fromisoformat(str(began))).days < days
    except ValueError:
        return False


def _error_of(resp: Any) -> tuple[str, str]:
    try:
        err = resp.json().get("error")
    except (ValueError, AttributeError):
        return "", ""
    if isinstance(err, dict):
        return str(err.get("code") or ""), str(err.get("message") or "")
    return "", ""


def _retry_after(value: Any) -> float | None:
    try:
        return max(0.0, float(value))
    except (TypeError, ValueError):
        return None


def _excerpt(item: dict) -> str:
    parts = []
    for name in ("subject", "internetMessageId", "displayName", "iCalUId", "@odata.type"):
        value = item.get(name)
        if isinstance(value, str) and value:
            parts.append(f"{name}: {value[:80]}")
    return "; ".join(parts)
