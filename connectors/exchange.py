"""Exchange Server (on-premises) mailboxes through EWS, with exchangelib.

Config (``[sources.NAME]`` with ``type = "exchange"``)::

    server = "https://mail.example.com/EWS/Exchange.asmx"   # or autodiscover = true
    autodiscover_url = "https://autodiscover.example.com/autodiscover/autodiscover.xml"  # optional
    username = "EXAMPLE\\svc-crm"     # or svc-crm@example.com
    password_env = "CRM_EXCHANGE_PW"  # or password_command = "pass show exchange"
    auth = "ntlm"                     # "ntlm" (default) | "basic" | "oauth2"
    token_command = "get-ews-token"   # with oauth2: prints an access token (or token_env)
    verify_tls = true                 # or false, or the path of a CA file
    ca_file = "/etc/ssl/our-ca.pem"   # trusted for this source
    allow_plaintext = false           # http:// only to a loopback host with this
    mailbox = "anna@example.com"      # the primary SMTP address to read
    access = "delegate"               # "delegate" (own mailbox or delegate rights) | "impersonation"
    folders = ["inbox", "sentitems", "Inbox/Projects/*"]  # distinguished ids, paths, globs
    calendar = true                   # the Calendar folder
    contacts = true                   # the Contacts folder
    tasks_folder = "tasks"            # where pushed tasks go (and are read back from)
    cards_folder = "CRM"              # contacts folder for [push] cards (below Contacts, created when missing)
    page_size = 256                   # MaxChangesReturned per SyncFolderItems (1-512)
    max_connections = 2               # concurrent requests to the server for this mailbox
    timeout = 120                     # seconds per request
    max_backoff = 300                 # longest ErrorServerBusy back-off honoured in place
    log_category = "CRM"              # Outlook category: log this mail even from an unknown sender
    private_category = "Private"      # Outlook category: never log this item
    window_past_days = 730            # occurrences of recurring meetings kept on the timeline
    window_future_days = 365

Scopes and ids
--------------
A record's scope is the folder's path below the top of the mailbox
("Inbox", "Sent Items", "Inbox/Projects", "Calendar"); its local id is the
EWS ItemId, its etag the ChangeKey.  A mail moved to another folder gets a
new ItemId there (as Exchange does it) and is the same interaction by its
Message-ID and content.

Cursor
------
``{"version": 1, "folders": {scope: {"id": FolderId, "state": SyncState, "full": bool, "dist": "inbox",
"more": true}}, "server": {"url": ..., "build": "15.2.1118.7", "api": "Exchange2016"}}`` (``more``: only
while a folder has pages left to read).
With it a run asks neither the server's version nor the well-known folders'
ids again: a run where nothing changed is one SyncFolderItems per folder.
When every folder is a well-known one the cursor knows, that run does not
even load exchangelib: :mod:`connectors.ewsprobe` asks each folder for its
changes over the standard library's HTTP client, and only when one has
changes (or anything goes wrong) does exchangelib read, from the same
stored cursor.  With autodiscover the URL stored in the cursor is used
until a request to it fails.
Each SyncFolderItems page (``page_size`` changes) is one Batch carrying the
sync state after it, so a run that is cut goes on from the last stored page.
A folder whose sync state the server refuses (``ErrorInvalidSyncStateData``)
or whose FolderId changed is read again from the start (``full``); at the end
of such a pass the ItemIds in the folder (FindItem, ids only) are compared
with what the store knows, and what is gone is reported removed.

What is fetched
---------------
``BaseShape IdOnly`` plus the fields of :mod:`connectors.ewsitems` (no MIME
content, no attachments; the plain-text body for the snippet).  The
connector only reads: no request it makes while pulling changes the
mailbox (no read flags, no moves, no categories).

Outlook categories
------------------
A mail with the category ``log_category`` carries the source's log keyword
(``log_keyword``, default ``$CRM``) and is logged even from an unknown
sender; the category ``private_category`` or sensitivity Private /
Confidential gives it the private keyword (``private_keyword``) and it is
never logged.  The categories themselves are the record's flags.

OAuth 2.0
---------
With ``auth = "oauth2"`` exchangelib sends ``Authorization: Bearer`` with
the access token ``token_command`` prints (or ``token_env`` holds); the
connector never asks a token endpoint itself.  When the server refuses the
token (HTTP 401) the command is run once more and the request repeated
with the new token (:class:`connectors.ewsauth._Transport`); a new token that is refused as
well is an ``AuthError``.  The token is never logged or stored.

Errors
------
Mapped in one place, :meth:`ExchangeConnector._errors`: HTTP 401 ->
``AuthError`` (one line, no retries but one token renewal); ``ErrorImpersonateUserDenied``,
``ErrorNonExistentMailbox``, ``ErrorAccessDenied`` -> a ``ConnectorError``
naming the mailbox; ``ErrorServerBusy`` with ``BackOffMilliseconds`` -> wait
that long and repeat the request (at most ``max_backoff`` seconds, five
times), else ``TransientError``; HTTP 5xx, dropped connections, timeouts ->
``TransientError`` (the engine retries from the last stored page); TLS
failures -> ``SourceUnavailable``; a folder that vanished -> a problem, and
nothing under it is removed; an item that cannot be read -> quarantine.
"""

from __future__ import annotations

import contextlib
import copy
import fnmatch
import logging
import os
import time
from datetime import datetime, timedelta, timezone
from typing import Any, Iterator, Mapping

from crm_bridge.connectors.base import (
    AuthError,
    ConfigError,
    Connector,
    ConnectorError,
    PageChain,
    SourceUnavailable,
    SourceView,
    TransientError,
    secret,
)
from crm_bridge.connectors.ewsauth import _CommandToken, _Transport
from crm_bridge.connectors.ewsdiscover import _plain_allowed
from crm_bridge.connectors.ewspages import Prefetched, page_chain
from crm_bridge.connectors.ewspages import sync_service as _sync_service
from crm_bridge.crm_core.records import Batch, CardPush, Failure, Location, PushResult, TaskPush
from crm_bridge.crm_core.settings import SourcePolicy

log = logging.getLogger("crm.exchange")

CURSOR_VERSION = 1
MAX_PAGE = 512  # the EWS schema's bound of MaxChangesReturned
_DISTINGUISHED = {"inbox": "inbox", "sentitems": "sentitems", "sent": "sentitems", "calendar": "calendar",
                  "contacts": "contacts", "tasks": "tasks", "drafts": "drafts", "deleteditems": "deleteditems",
                  "junkemail": "junkemail"}
_SKIP_GLOB = ("IPF.Note.OutlookHomepage",)
#: the CRM task uid on pushed Task items (a named property in PublicStrings)
TASK_PROPERTY = "crm-bridge-task-uid"
#: the CRM card uid on pushed Contact items
CARD_PROPERTY = "crm-bridge-card-uid"


class ExchangeConnector(Connector):
    type = "exchange"
    can_push = frozenset({"tasks", "cards"})
    push_options = {"tasks": "tasks_folder", "cards": "cards_folder"}
    # a reader process was slower here (4.4 s -> 5.8 s for 20,000 mails): pickling costs more than it overlaps;
    # again with the pages pipelined (ewspages): CPU 2.52 s against 2.34 s in-process, the same wall time
    pull_in_reader = False
    option_keys = frozenset({
        "server", "autodiscover", "autodiscover_url", "username", "password_env", "password_command", "auth",
        "token_env", "token_command", "verify_tls", "ca_file", "allow_plaintext", "mailbox", "access", "folders",
        "calendar", "contacts", "tasks_folder", "cards_folder", "page_size", "max_connections", "timeout", "max_backoff",
        "log_category", "private_category", "window_past_days", "window_future_days",
    })

    def __init__(self, name: str, options: Mapping[str, Any]):
        super().__init__(name, options)
        o = self.options
        where = f"sources.{name}"
        self.mailbox = o.get("mailbox")
        if not isinstance(self.mailbox, str) or "@" not in self.mailbox:
            raise ConfigError(f"{where}.mailbox must be the mailbox's primary SMTP address")
        self.mailbox = self.mailbox.strip().lower()
        self.server = o.get("server")
        self.autodiscover = o.get("autodiscover", False)
        self.autodiscover_url = o.get("autodiscover_url")
        if not isinstance(self.autodiscover, bool):
            raise ConfigError(f"{where}.autodiscover must be true or false")
        if self.server is None and not self.autodiscover:
            raise ConfigError(f"{where}: give server (the EWS URL) or autodiscover = true")
        allow_plain = o.get("allow_plaintext", False)
        self.allow_plaintext = allow_plain is True
        for key in ("server", "autodiscover_url"):
            url = o.get(key)
            if url is None:
                continue
            if not isinstance(url, str) or not url.startswith(("https://", "http://")):
                raise ConfigError(f"{where}.{key} must be an https:// URL")
            if url.startswith("http://") and not _plain_allowed(url, allow_plain is True):
                raise ConfigError(f"{where}.{key}: http:// sends the password in clear text; use https:// "
                                  "(plain http only to a loopback host with allow_plaintext = true)")
        self.auth = o.get("auth", "ntlm")
        if self.auth not in ("ntlm", "basic", "oauth2"):
            raise ConfigError(f"{where}.auth must be ntlm, basic or oauth2")
        self.username = o.get("username", self.mailbox if self.auth == "oauth2" else None)
        if not isinstance(self.username, str) or not self.username:
            raise ConfigError(f"{where}.username is missing")
        if self.auth == "oauth2" and not any(k in o for k in ("token_command", "token_env")):
            raise ConfigError(f"{where}: auth = \"oauth2\" needs token_command (a command that prints an "
                              "access token) or token_env")
        self.access = o.get("access", "delegate")
        if self.access not in ("delegate", "impersonation"):
            raise ConfigError(f"{where}.access must be delegate or impersonation")
        self.folders = self._folder_names("folders", ["inbox", "sentitems"])
        self.want_calendar = self._bool("calendar", True)
        self.want_contacts = self._bool("contacts", True)
        tasks_folder = self._optional_name("tasks_folder", "a folder name")
        self.tasks_folder = tasks_folder.strip("/") if tasks_folder is not None else None
        cards_folder = self._optional_name("cards_folder", "a folder name")
        self.cards_folder = cards_folder.strip("/") if cards_folder is not None else None
        self.page_size = self._int("page_size", 256, 1, MAX_PAGE)
        self.max_connections = self._int("max_connections", 2, 1, 16)
        self.timeout = self._int("timeout", 120, 1, 3600)
        self.max_backoff = self._int("max_backoff", 300, 0, 3600)
        self.window_past_days = self._int("window_past_days", 730, 0, 36500)
        self.window_future_days = self._int("window_future_days", 365, 0, 36500)
        self.log_category = self._str("log_category", "CRM")
        self.private_category = self._str("private_category", "Private")
        verify = o.get("verify_tls", True)
        ca_file = o.get("ca_file")
        if not isinstance(verify, (bool, str)):
            raise ConfigError(f"{where}.verify_tls must be true, false or the path of a CA file")
        if ca_file is not None:
            if not isinstance(ca_file, str):
                raise ConfigError(f"{where}.ca_file must be a file path")
            verify = ca_file if verify is not False else False
        self.verify = verify
        try:
            policy = SourcePolicy.from_table(name, {k: v for k, v in dict(options).items()
                                                    if k in SourcePolicy.KEYS})
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        self.log_flag, self.private_flag = policy.log_keyword, policy.private_keyword
        self._password: str | None = None
        self._token: _CommandToken | None = None
        self._account: Any = None
        self._server: dict[str, str] = {}

    # -- errors ---------------------------------------------------------------
    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        """Every exchangelib / transport error, as the connector exception tree says."""
        from exchangelib import errors as e

        who = f"{self.username} for {self.mailbox}"
        try:
            yield
        except ConnectorError:
            raise
        except e.UnauthorizedError:
            if self._token is not None:
                raise AuthError(self._token.failure or f"the server refused the access token of token_command for "
                                f"{self.mailbox} (HTTP 401), also after running the command again") from None
            raise AuthError(f"the server refused the password of {self.username} (HTTP 401)") from None
        except e.ErrorImpersonateUserDenied:
            raise ConnectorError(f"{self.username} may not impersonate {self.mailbox} (ErrorImpersonateUserDenied); "
                                 "grant it the ApplicationImpersonation role") from None
        except e.ErrorNonExistentMailbox:
            raise ConnectorError(f"the server has no mailbox {self.mailbox} (ErrorNonExistentMailbox)") from None
        except (e.ErrorAccessDenied, e.ErrorItemNotFound) as exc:
            if isinstance(exc, e.ErrorAccessDenied):
                raise ConnectorError(f"{self.username} has no access to {self.mailbox} (ErrorAccessDenied); "
                                     "grant delegate rights or use access = \"impersonation\"") from None
            raise SourceUnavailable(f"{who}: {exc}") from None
        except e.ErrorServerBusy as exc:
            raise TransientError(f"the server is busy (ErrorServerBusy): {exc}") from None
        except (e.ErrorInternalServerTransientError, e.ErrorTimeoutExpired, e.MalformedResponseError,
                e.ErrorInternalServerError, e.RateLimitError) as exc:
            raise TransientError(f"{type(exc).__name__}: {_short(exc)}") from None
        except e.AutoDiscoverFailed as exc:
            raise SourceUnavailable(f"autodiscover found no EWS server for {self.mailbox}: {_short(exc)}") from None
        except e.TransportError as exc:
            text = str(exc)
            if "SSL" in text or "certificate" in text.lower():
                raise SourceUnavailable(f"TLS: the server's certificate is not trusted ({_short(exc)}); "
                                        "set ca_file or verify_tls") from None
            raise TransientError(f"connection problem: {_short(exc)}") from None
        except (e.ErrorInvalidServerVersion, e.SOAPError, e.ResponseMessageError) as exc:
            raise SourceUnavailable(f"{type(exc).__name__}: {_short(exc)}") from None
        except OSError as exc:
            raise TransientError(f"connection problem: {type(exc).__name__}: {_short(exc)}") from None

    def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """Run one request; ErrorServerBusy with a back-off the server asked for: wait, then repeat it."""
        from exchangelib.errors import ErrorServerBusy

        for attempt in range(6):
            try:
                return fn(*args, **kwargs)
            except ErrorServerBusy as exc:
                back_off = exc.back_off
                told = not str(exc).startswith(("Reraised from", "Caused by"))  # the server's own BackOffMilliseconds
                if not told or back_off is None or back_off > self.max_backoff or attempt == 5:
                    raise
                log.info("%s: the server asked to back off %.1f s (ErrorServerBusy)", self.name, back_off)
                time.sleep(back_off)
        raise AssertionError("unreachable")

    # -- connecting -----------------------------------------------------------
    def _credentials(self) -> Any:
        from exchangelib import Credentials

        if self.auth == "oauth2":
            if self._token is None:
                self._token = _CommandToken(self.name, self.options)
            return self._token.exchangelib_credentials()
        return Credentials(self.username, self._secret_password())

    def _discover(self) -> str:
        """The EWS URL from POX Autodiscover (following redirects), or the configured server."""
        if self.server:
            return self.server
        from crm_bridge.connectors.ewsdiscover import discover

        credentials = self._credentials()
        password = self._token.current if self._token is not None else credentials.password
        return discover(self.mailbox, self.username, password, self.autodiscover_url,
                        verify=self.verify, timeout=self.timeout, auth=self.auth, allow_plaintext=self.allow_plaintext)

    def _connect(self, server: dict | None = None) -> Any:
        """The exchangelib Account; ``server`` (from the cursor) spares the request that asks the server's version."""
        if self._account is not None:
            return self._account
        from exchangelib import BASIC, DELEGATE, IMPERSONATION, NTLM, OAUTH2, Account, Configuration, FailFast
        from exchangelib.version import Build, Version

        if isinstance(self.verify, str):  # a CA that cannot serve: the probe's line naming it, not requests' error
            from crm_bridge.connectors.tls import context

            context(self.verify)
        url = self._discover()
        _Transport.install(url, self.verify)
        if self.auth == "oauth2" and url.startswith("http://"):
            # plain http passed the checks above (a loopback host, allow_plaintext = true); requests-oauthlib
            # refuses it unless told so, process-wide
            os.environ.setdefault("OAUTHLIB_INSECURE_TRANSPORT", "1")
        version = None
        if isinstance(server, dict) and server.get("url") == url:
            try:
                parts = [int(x) for x in str(server["build"]).split(".")]
                version = Version(build=Build(*parts[:4]), api_version=str(server["api"]))
            except (KeyError, TypeError, ValueError):
                version = None
        config = Configuration(service_endpoint=url, credentials=self._credentials(),
                               auth_type={"ntlm": NTLM, "basic": BASIC, "oauth2": OAUTH2}[self.auth],
                               retry_policy=FailFast(),
                               max_connections=self.max_connections, version=version)
        account = Account(self.mailbox, config=config, autodiscover=False,
                          access_type=IMPERSONATION if self.access == "impersonation" else DELEGATE,
                          default_timezone=_utc_zone())
        account.protocol.TIMEOUT = self.timeout
        self._account = account
        return account

    def close(self) -> None:
        account, self._account = self._account, None
        if account is not None:
            with contextlib.suppress(Exception):
                account.protocol.close()

    # -- folders --------------------------------------------------------------
    def _distinguished(self, account: Any, key: str) -> Any:
        from exchangelib.folders import Calendar, Contacts, DeletedItems, Drafts, Inbox, JunkEmail, SentItems, Tasks

        cls = {"inbox": Inbox, "sentitems": SentItems, "calendar": Calendar, "contacts": Contacts, "tasks": Tasks,
               "drafts": Drafts, "deleteditems": DeletedItems, "junkemail": JunkEmail}[key]
        return self._call(cls.get_distinguished, account.root)

    def _tree(self, account: Any) -> list[tuple[str, Any]]:
        """(path, folder) of every folder below the top of the mailbox."""
        top = self._call(lambda: account.msg_folder_root)
        found = list(self._call(lambda: list(top.walk())))
        by_id = {f.id: f for f in found}
        out = []
        for f in found:
            parts, cur, hops = [f.name], f, 0
            while cur.parent_folder_id is not None and cur.parent_folder_id.id in by_id and hops < 64:
                cur = by_id[cur.parent_folder_id.id]
                parts.append(cur.name)
                hops += 1
            out.append(("/".join(reversed(parts)), f))
        return out

    def _known_distinguished(self, account: Any, key: str, states: dict[str, dict]) -> Any:
        """A distinguished folder as the cursor remembers it (no GetFolder), or None."""
        for scope, entry in states.items():
            if entry.get("dist") == key and isinstance(entry.get("id"), str):
                from exchangelib.folders import Root

                cls = type(self._folder_class(key))
                return cls(root=Root(account=account), id=entry["id"], name=scope)
        return None

    @staticmethod
    def _folder_class(key: str) -> Any:
        from exchangelib.folders import Calendar, Contacts, DeletedItems, Drafts, Inbox, JunkEmail, SentItems, Tasks

        return {"inbox": Inbox, "sentitems": SentItems, "calendar": Calendar, "contacts": Contacts, "tasks": Tasks,
                "drafts": Drafts, "deleteditems": DeletedItems, "junkemail": JunkEmail}[key]()

    def _resolve(self, account: Any, states: dict[str, dict] | None = None
                 ) -> tuple[list[tuple[str, Any, str, str]], list[str]]:
        """The folders to read as (scope, folder, kind, distinguished id or ""), and problems."""
        chosen: dict[str, tuple[str, Any, str, str]] = {}
        problems: list[str] = []
        tree: list[tuple[str, Any]] | None = None
        for entry, kind in self._wanted():
            key = _DISTINGUISHED.get(entry.lower())
            if key is not None:
                folder = self._known_distinguished(account, key, states or {}) or self._distinguished(account, key)
                chosen.setdefault(folder.id, (folder.name, folder, kind, key))
                continue
            if tree is None:
                tree = self._tree(account)
            hits = [(p, f) for p, f in tree
                    if fnmatch.fnmatchcase(p.lower(), entry.lower()) and (f.folder_class or "") not in _SKIP_GLOB]
            if not hits and not any(ch in entry for ch in "*?["):
                problems.append(f"folder {entry!r} is not in the mailbox {self.mailbox}")
            for path, folder in hits:
                chosen.setdefault(folder.id, (path, folder, kind, ""))
        return list(chosen.values()), problems

    # -- pull -----------------------------------------------------------------
    def _window(self) -> tuple[datetime, datetime]:
        now = datetime.now(timezone.utc)
        return now - timedelta(days=self.window_past_days), now + timedelta(days=self.window_future_days)

    @staticmethod
    def _load_cursor(cursor: dict | None) -> dict[str, dict]:
        if not isinstance(cursor, dict) or cursor.get("version") != CURSOR_VERSION:
            return {}
        folders = cursor.get("folders")
        if not isinstance(folders, dict):
            return {}
        return {k: dict(v) for k, v in folders.items() if isinstance(v, dict)}

    def pull(self, cursor: dict | None, view: SourceView) -> Iterator[Batch]:
        states = self._load_cursor(cursor)
        unchanged = self._probe(cursor, states, view)
        if unchanged is not None:  # nothing changed: exchangelib was not even loaded
            yield from unchanged
            return
        with self._errors():
            account = self._connect(cursor.get("server") if isinstance(cursor, dict) else None)
            self._server = {"url": account.protocol.service_endpoint, "build": str(account.version.build),
                            "api": account.version.api_version}
            folders, problems = self._resolve(account, states)
            scopes = {scope for scope, _f, _k, _d in folders}
            for scope in sorted(set(view.scopes()) - scopes):
                known = view.known(scope)
                if known:
                    problems.append(f"folder {scope!r} is gone from the mailbox (deleted or renamed?); "
                                    f"keeping its {len(known)} items")
            if problems:
                yield Batch(problems=problems)
            for scope, folder, kind, dist in folders:
                yield from self._pull_folder(account, scope, folder, kind, dist, states, view)

    def _wanted(self) -> list[tuple[str, str]]:
        """(folder entry, kind) in the order they are read; the Contacts folder first, as the engine syncs
        address books first: mail and appointments stored after it link by its contacts at once"""
        wanted: list[tuple[str, str]] = [("contacts", "contacts")] if self.want_contacts else []
        wanted += [(f, "mail") for f in self.folders]
        if self.want_calendar:
            wanted.append(("calendar", "calendar"))
        if self.tasks_folder:
            wanted.append((self.tasks_folder, "tasks"))
        return wanted

    def _probe(self, cursor: dict | None, states: dict[str, dict], view: SourceView) -> list[Batch] | None:
        """The batches of a run in which nothing changed, found without exchangelib (connectors/ewsprobe.py);
        None when something changed or the cursor does not say enough: then exchangelib reads."""
        server = cursor.get("server") if isinstance(cursor, dict) else None
        if not isinstance(server, dict) or not isinstance(server.get("url"), str) or not server.get("api"):
            return None
        url = server["url"]
        if self.server and url != self.server:
            return None  # the configured URL changed
        if not url.startswith("https://") and not _plain_allowed(url, self.allow_plaintext):
            return None  # the configured URLs' rule: no password in clear text (allow_plaintext may be off now)
        folders: dict[str, tuple[str, dict]] = {}  # FolderId -> (scope, cursor entry), as _resolve dedups
        for entry, kind in self._wanted():
            key = _DISTINGUISHED.get(entry.lower())
            if key is None:
                return None  # a path or a glob: the folder tree is asked every run
            found = [(scope, e) for scope, e in states.items() if e.get("dist") == key]
            if len(found) != 1:
                return None
            scope, e = found[0]
            if (not isinstance(e.get("id"), str) or not isinstance(e.get("state"), str) or e.get("full") or e.get("more")
                    or (kind == "tasks" and view.known(scope))):  # the task folder is compared every run
                return None
            folders.setdefault(e["id"], (scope, e))
        from crm_bridge.connectors.ewsprobe import HandOver, Probe

        try:
            if self.auth == "oauth2" and self._token is None:
                self._token = _CommandToken(self.name, self.options)
            probe = Probe(url, verify=self.verify, timeout=self.timeout, auth=self.auth, username=self.username,
                          password=self._secret_password, token=self._token)
        except HandOver as exc:
            log.debug("%s: reading through exchangelib (%s)", self.name, exc)
            return None
        new_states = copy.deepcopy(states)
        try:
            for folder_id, (scope, e) in folders.items():
                new_states[scope]["state"] = probe.unchanged(str(server["api"]), self.mailbox,
                                                             self.access == "impersonation", folder_id, e["state"])
        except HandOver as exc:
            log.debug("%s: reading through exchangelib (%s)", self.name, exc)
            return None
        finally:
            probe.close()
        batches: list[Batch] = []
        scopes = {scope for scope, _e in folders.values()}
        problems = [f"folder {scope!r} is gone from the mailbox (deleted or renamed?); keeping its {len(known)} items"
                    for scope in sorted(set(view.scopes()) - scopes) if (known := view.known(scope))]
        if problems:
            batches.append(Batch(problems=problems))
        if new_states != states:
            batches.append(Batch(cursor={"version": CURSOR_VERSION, "folders": new_states, "server": dict(server)}))
        self._server = dict(server)
        return batches

    def _secret_password(self) -> str:
        if self._password is None:
            password = secret(self.name, self.options)
            if password is None:
                raise ConfigError(f"sources.{self.name}: set password_env or password_command")
            self._password = password
        return self._password

    def _fields(self, folder: Any, kind: str) -> set:
        from crm_bridge.connectors.ewsitems import CALENDAR_FIELDS, CONTACT_FIELDS, MAIL_FIELDS, TASK_FIELDS

        names = {"mail": MAIL_FIELDS, "calendar": CALENDAR_FIELDS, "contacts": CONTACT_FIELDS, "tasks": TASK_FIELDS}[kind]
        names = tuple(names) + {"tasks": ("crm_task_uid",), "contacts": ("crm_card_uid",)}.get(kind, ())
        _register_properties()
        for n in names:
            folder.validate_item_field(field=n, version=folder.account.version)
        return {f for f in folder.normalize_fields(fields=list(names)) if not f.field.is_attribute}

    def _sync_page(self, folder: Any, fields: set, state: str | None = None, raw: bool = False,
                   on_state: Any = None, prefetched: "Prefetched | None" = None) -> tuple[list, str, bool]:
        ready = [prefetched] if prefetched is not None else []

        def page() -> tuple[list, str, bool]:
            svc = _sync_service()(account=folder.account)
            svc.raw_items = raw
            svc.on_state = on_state
            svc.prefetched = ready.pop() if ready else None  # a repeated request (ErrorServerBusy) posts anew
            changes = list(svc.call(folder=folder, shape="IdOnly", additional_fields=fields, sync_state=state,
                                    ignore=None, max_changes_returned=self.page_size, sync_scope=None))
            for change in changes:
                if isinstance(change, Exception):
                    raise change
            return changes, svc.sync_state, bool(svc.includes_last_item_in_range)

        return self._call(page)

    def _pull_folder(self, account: Any, scope: str, folder: Any, kind: str, dist: str, states: dict[str, dict],
                     view: SourceView) -> Iterator[Batch]:
        from exchangelib.errors import ErrorFolderNotFound, ErrorInvalidSyncStateData

        entry = states.get(scope) or {}
        state = entry.get("state") if entry.get("id") == folder.id else None
        # a full pass: compare with what the store knows at its end (not needed when the store knows nothing)
        full = bool(entry.get("full")) or (state is None and bool(view.known(scope)))
        fields = self._fields(folder, kind)
        window = self._window()
        done = 0
        raw = kind == "mail"
        # the request for the next page leaves as soon as this page's SyncState is read (ewspages.peek), in a
        # thread that only posts requests and takes in the answers, following the chain itself up to
        # ewspages.READ_AHEAD pages ahead, while this thread parses this page and the engine stores it; parsing
        # stays here, in one thread (parsing threads fought the store over the GIL)
        chain: list[PageChain[tuple[str, str], Prefetched]] = []  # at most one

        def seen(next_state: str, last: bool, api: str) -> None:
            if not last and next_state and not chain:
                chain.append(page_chain(lambda at, version: self._prefetch(folder, fields, at, version), next_state, api))

        def stop_chain() -> None:
            if chain:
                chain.pop().close()

        def take_prefetched(at: str | None) -> Prefetched | None:
            got = chain[0].get() if chain and at is not None else None
            if got is None or got.state != at or got.error is not None:
                stop_chain()  # (after an error the thread has stopped; a repeated request starts a new chain)
            return got if got is not None and got.state == at else None

        try:
            while True:
                try:
                    changes, new_state, last = self._sync_page(folder, fields, state, raw=raw, on_state=seen,
                                                               prefetched=take_prefetched(state))
                except ErrorInvalidSyncStateData:
                    if state is None:
                        raise
                    log.info("%s: the server no longer knows the sync state of %r; comparing the whole folder",
                             self.name, scope)
                    state, full = None, True
                    continue
                except ErrorFolderNotFound:
                    take_prefetched(None)
                    if dist and not entry.get("checked"):
                        # the remembered id of a well-known folder no longer holds: ask the server once
                        fresh = self._distinguished(account, dist)
                        entry = {"checked": True}
                        if fresh.id != folder.id:
                            folder, state, full = fresh, None, True
                            continue
                    yield Batch(problems=[f"folder {scope!r} vanished while it was read; nothing removed"])
                    return
                more = not (last or (new_state == state and not changes))
                batch = Batch()
                for change, item in changes:
                    self._add_change(batch, scope, kind, change, item, window)
                # after a full pass, and always in the (small) task folder: the CRM's own pushes are not in the
                # sync state it holds, so one created and deleted in Outlook between two runs shows up only here
                if last and (full or kind == "tasks") and view.known(scope):
                    stop_chain()  # no request under way beside this one's
                    batch.removed.extend(self._vanished(folder, scope, view, batch))
                done += len(changes)
                states[scope] = {"id": folder.id, "state": new_state, "full": full and not last}
                if more:  # a cut run goes on with the next page at once, without a probe (see _probe)
                    states[scope]["more"] = True
                if dist:
                    states[scope]["dist"] = dist
                batch.cursor = {"version": CURSOR_VERSION, "folders": copy.deepcopy(states),
                                "server": dict(self._server)}
                batch.done = done
                yield batch
                if not more:
                    return
                state = new_state
        finally:
            stop_chain()

    def _prefetch(self, folder: Any, fields: set, state: str, api: str) -> "Prefetched":
        """Post the SyncFolderItems request for the page after ``state`` and take in its answer (no parsing):
        exchangelib's own request (the same body, session, auth and errors), for :meth:`_sync_page` to use."""
        svc = _sync_service()(account=folder.account)
        payload = svc.get_payload(folder=folder, shape="IdOnly", additional_fields=fields, sync_state=state,
                                  ignore=None, max_changes_returned=self.page_size, sync_scope=None)
        try:
            response = svc.post(payload, api)
            response.content  # read here, beside the parsing of the page before
        except Exception as exc:  # raised where the request would have raised it, by the service
            return Prefetched(state, api, None, exc)
        return Prefetched(state, api, response, None)

    def _add_change(self, batch: Batch, scope: str, kind: str, change: str, item: Any,
                    window: tuple[datetime, datetime]) -> None:
        if change == "delete":
            batch.removed.append(Location(scope, item.id))
            return
        if change == "read_flag_change":
            return  # the connector does not keep read state
        from crm_bridge.connectors.ewsitems import (ItemError, appointment_record, contact_card, flags_of,
                                                    mail_record, task_state)

        location = Location(scope, item.id, getattr(item, "changekey", "") or "")
        try:
            if kind == "mail":
                flags = flags_of(item, self.log_category, self.private_category, self.log_flag, self.private_flag)
                batch.records.append(mail_record(item, location, flags, self.mailbox))
            elif kind == "calendar":
                from exchangelib.items import CalendarItem

                if isinstance(item, CalendarItem):
                    batch.records.append(appointment_record(item, location, window))
            elif kind == "contacts":
                from exchangelib.items import Contact

                if isinstance(item, Contact) and not getattr(item, "crm_card_uid", None):  # not the CRM's own cards
                    batch.records.append(contact_card(item, location))
            elif kind == "tasks":
                uid = getattr(item, "crm_task_uid", None)
                if uid:
                    batch.records.append(task_state(item, uid, location))
        except ItemError as exc:
            batch.failures.append(Failure(location, str(exc), _excerpt(item)))
        except Exception as exc:  # an item this code did not foresee: quarantine it, go on
            batch.failures.append(Failure(location, f"unexpected {type(exc).__name__}: {exc}", _excerpt(item)))

    def _vanished(self, folder: Any, scope: str, view: SourceView, batch: Batch) -> list[Location]:
        """After a full pass: what the store knows in ``scope`` that the folder no longer holds."""
        present = {i.id for i in self._call(lambda: list(folder.all().only("id")))}
        present.update(r.location.local_id for r in batch.records)
        return [Location(scope, lid) for lid in view.known(scope) if lid not in present]

    # -- push -----------------------------------------------------------------
    def _task_folder(self, account: Any) -> tuple[str, Any]:
        target = self.tasks_folder or "tasks"
        key = _DISTINGUISHED.get(target.lower())
        if key is not None:
            folder = self._distinguished(account, key)
            return folder.name, folder
        for path, folder in self._tree(account):
            if path.lower() == target.lower():
                return path, folder
        raise ConnectorError(f"sources.{self.name}.tasks_folder: no folder {target!r} in {self.mailbox}")

    def push_tasks(self, tasks: list[TaskPush], view: SourceView) -> list[PushResult]:
        from crm_bridge.connectors.ewspush import push_tasks

        with self._errors():
            account = self._connect()
            scope, folder = self._task_folder(account)
            _register_properties()
            return push_tasks(self, folder, scope, tasks)

    def _cards_folder(self, account: Any) -> tuple[str, Any]:
        """The contacts folder pushed cards go to: a path, or a name below Contacts (created when missing)."""
        target = self.cards_folder or "CRM"
        parent = self._distinguished(account, "contacts")
        wanted = {target.lower(), f"{parent.name}/{target}".lower()}
        for path, folder in self._tree(account):
            if path.lower() in wanted:
                return path, folder
        if "/" in target:
            raise ConnectorError(f"sources.{self.name}.cards_folder: no folder {target!r} in {self.mailbox}")
        from exchangelib.folders import Contacts

        folder = Contacts(parent=parent, name=target)
        self._call(folder.save)
        return f"{parent.name}/{target}", folder

    def push_cards(self, cards: list[CardPush], view: SourceView) -> list[PushResult]:
        from crm_bridge.connectors.ewspush import push_cards

        with self._errors():
            account = self._connect()
            _register_properties()
            scope, folder = self._cards_folder(account)
            return push_cards(self, folder, scope, cards)


def _register_properties() -> None:
    """The CRM's ids as extended properties of Task and Contact items (registered once per process)."""
    from exchangelib import ExtendedProperty
    from exchangelib.items import Contact, Task

    if "crm_task_uid" not in {f.name for f in Task.FIELDS}:
        class CrmTaskUid(ExtendedProperty):
            distinguished_property_set_id = "PublicStrings"
            property_name = TASK_PROPERTY
            property_type = "String"

        Task.register("crm_task_uid", CrmTaskUid)
    if "crm_card_uid" not in {f.name for f in Contact.FIELDS}:
        class CrmCardUid(ExtendedProperty):
            distinguished_property_set_id = "PublicStrings"
            property_name = CARD_PROPERTY
            property_type = "String"

        Contact.register("crm_card_uid", CrmCardUid)


def _utc_zone() -> Any:
    from exchangelib import EWSTimeZone

    return EWSTimeZone("UTC")


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:300] if text else type(exc).__name__


def _excerpt(item: Any) -> str:
    parts = []
    for name in ("subject", "message_id", "display_name", "uid"):
        value = getattr(item, name, None)
        if value:
            parts.append(f"{name}: {str(value)[:80]}")
    return "; ".join(parts)
