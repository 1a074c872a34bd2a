"""IMAP mailboxes, read-only, incremental per folder.

Config (``[sources.NAME]`` with ``type = "imap"``)::

    host = "imap.example.com"
    port = 993                      # default: 993 implicit TLS, 143 otherwise
    tls = "implicit"                # "implicit" | "starttls" | "none"
    allow_plaintext = false         # "none" needs this AND a loopback host
    verify_tls = true
    ca_file = "/etc/ssl/my-ca.pem"  # trusted in addition to the system's CAs
    username = "alice@example.com"
    password_env = "ALICE_IMAP"     # or password_command = "pass show imap"
    auth = "password"               # or "xoauth2" with token_command / token_env
    folders = ["INBOX", "\\\\Sent", "Projects/*"]
    timeout = 60                    # seconds, connect and each read
    batch_size = 500                # messages per FETCH and per Batch
    since = "2024-01-01"            # pushed into UID SEARCH SINCE
    use_condstore = true            # false: compare flags instead of CHANGEDSINCE
    empty_guard = 10                # see "Flags and deletions" below
    log_folder = "CRM"              # engine options; the folders are synced too
    private_folder = "Private"

How ``folders`` is resolved (names, globs, special-use flags), the cursor's
format and the missing log/private folder notice: :mod:`connectors.imapfolders`.
Connecting, TLS and how errors are mapped: :mod:`connectors.imapconn`.  What is
fetched of each new mail, and how: :mod:`connectors.imapmail`.  The wire level
(FETCH parsing, pipelined FETCHes, UID sets): :mod:`connectors.imapwire`.
This module: the configuration, the pass over each folder (new mail, flags,
deletions, UIDVALIDITY changes, quarantine), re-reads, and IDLE (``watch``).

Scopes and ids
--------------
A record's ``Location.scope`` is the folder name with the server's
hierarchy delimiter replaced by ``/`` (``INBOX`` always upper case);
``local_id`` is ``"<UIDVALIDITY>:<UID>"``; ``etag`` is the message's flags,
sorted and space separated (``\\Recent`` left out), so a source without
CONDSTORE can find flag changes by comparing with ``SourceView.known``.

The pass over a folder
----------------------
New mail is fetched in ascending UID order, ``batch_size`` UIDs per FETCH,
and every batch carries a cursor with ``last_uid`` advanced to its last
UID, so an interrupted first sync resumes where it stopped.  The final
batch of a folder carries flag changes, removals and the new ``modseq`` /
``uidnext`` / ``exists``; in a pass with no flag change nor removal (a first
sync) the last batch of new mail carries the new state, one transaction less.  When UIDVALIDITY, UIDNEXT, EXISTS and
HIGHESTMODSEQ all equal the cursor's, the folder is skipped after SELECT.
Folders are opened with EXAMINE and every body fetch uses ``BODY.PEEK``:
the connector never changes the mailbox.  Mail the store holds without its
text and wants now (``SourceView.rereads``) is read by UID right after the
folder's EXAMINE (:meth:`ImapConnector._reread`).

The questions to the store (``SourceView.known`` of each folder the pass
will compare: new ones, and those whose STATUS told a change; the store's
``SkipRule``, once a pull) are asked before the pull's first batch: in the
reader process of ``crm sync`` a question asked after a batch waits until
the store has stored that batch (see :mod:`sync.worker`).

The commands are pipelined (:class:`Fetches`): the header FETCH of the
next two batches is on the wire before a batch is parsed and handed to
the engine, so the server works while this process parses and the store
writes.  A pull stopped half-way drops its connection rather than read
stale answers later.

Flags and deletions
-------------------
With CONDSTORE, a folder unchanged since the last complete pass is told by
its STATUS, sent before LIST, and is not EXAMINEd (see
:mod:`connectors.imapfolders`).
With CONDSTORE (``ENABLE CONDSTORE`` before EXAMINE) flag changes come from
``UID FETCH 1:<last_uid> (UID FLAGS) (CHANGEDSINCE <modseq>)``; without it
(or ``use_condstore = false``) from ``UID FETCH 1:<last_uid> (UID FLAGS)``
compared with the known etags.  Expunges are found by comparing ``UID
SEARCH ALL`` with ``view.known(scope)``, except where the counts tell that
none happened (the folder holds as many more mails as UIDs were given out
since the last complete pass): then, with CONDSTORE, only the new UIDs are
searched and the known locations are not read.  Every known id of an older
UIDVALIDITY is reported removed in the last batch of the rescan.  A folder
that comes back empty while the store knows more than ``empty_guard`` of
its mails, or that cannot be selected, or that vanished from the server,
is reported in ``Batch.problems`` and nothing under it is removed.  A
folder whose UIDVALIDITY changed more than three times in 30 days (each
real change counted once) is quarantined: it is not read, and every run
reports it in ``Batch.alerts`` (the run fails) until the admin clears it
with ``crm sources reset NAME --folder F`` (:meth:`ImapConnector.forget`).
"""

from __future__ import annotations

import contextlib
import imaplib
import logging
import socket
import time
from array import array
from datetime import date, datetime
from typing import Any, Iterator, Mapping, Sequence, cast

from crm_bridge.connectors.base import (
    ConfigError,
    CursorInvalid,
    SkipRule,
    SourceView,
    is_loopback,
    rereads,
    secret,
    skip_rule,
)
from crm_bridge.connectors.imapconn import _peer_closed
from crm_bridge.connectors.imapfolders import ImapFolders
from crm_bridge.connectors.imapmail import _FETCH_ITEMS, _Texts, add_records, ask_texts, parse_new
from crm_bridge.connectors.imapwire import (
    Fetches,
    _flags,
    flags_key,
    uid_fetch,
    uid_search_all,
    uid_set,
)
from crm_bridge.crm_core.records import Batch, FlagChange, Location

log = logging.getLogger("crm.imap")
_UNASKED: Any = object()  # a question not asked (yet)

#: UIDVALIDITY changes tolerated within RESET_WINDOW before a folder is skipped
MAX_RESETS = 3
RESET_WINDOW = 30 * 24 * 3600
#: batches of new mail whose text FETCHes may be under way at once (see _pull_folder)
_TEXTS_IN_FLIGHT = 3


def _last_status(prev: dict) -> tuple:
    """The folder's (UIDVALIDITY, UIDNEXT, MESSAGES, HIGHESTMODSEQ) when the pass ``prev`` completed, as
    ImapFolders._status answers them: an equal STATUS means nothing changed."""
    return (prev["uidvalidity"], prev["uidnext"], prev["exists"], prev["modseq"])


def _nothing_expunged(prev: dict, uidnext: int, exists: int) -> bool:
    """Whether no mail left the folder since the pass ``prev`` completed: of the mails counted now, as many
    are new as UIDs were given out since (a mail that came and went, or an old one expunged, breaks it)."""
    return prev["uidnext"] > 0 and uidnext >= prev["uidnext"] and exists - prev["exists"] == uidnext - prev["uidnext"]


def _still_there(local_id: str, prefix: str, uids: set[int]) -> bool:
    """Whether ``local_id`` ("uidvalidity:uid") names one of ``uids`` under the current UIDVALIDITY."""
    if not local_id.startswith(prefix):
        return False
    tail = local_id[len(prefix):]
    return tail.isdigit() and int(tail) in uids


class ImapConnector(ImapFolders):
    """Read mail from IMAP folders (see the module docstring); the connection is
    :class:`~connectors.imapconn.ImapConnection`, the folders and the cursor
    :class:`~connectors.imapfolders.ImapFolders`."""

    type = "imap"
    option_keys = frozenset({
        "host", "port", "tls", "allow_plaintext", "verify_tls", "ca_file", "username", "auth",
        "password_env", "password_command", "token_env", "token_command", "folders", "timeout",
        "batch_size", "since", "use_condstore", "empty_guard", "log_folder", "private_folder",
    })

    def __init__(self, name: str, options: Mapping[str, Any]):
        super().__init__(name, options)
        o = self.options
        self.host = o.get("host")
        if not isinstance(self.host, str) or not self.host:
            raise ConfigError(f"sources.{name}.host is missing")
        self.tls = o.get("tls", "implicit")
        if self.tls not in ("implicit", "starttls", "none"):
            raise ConfigError(f"sources.{name}.tls must be implicit, starttls or none")
        if self.tls == "none" and not (o.get("allow_plaintext") is True and is_loopback(self.host)):
            raise ConfigError(
                f"sources.{name}.tls = \"none\" sends the password in clear text; it is only "
                "allowed for a loopback host together with allow_plaintext = true"
            )
        port = o.get("port", 993 if self.tls == "implicit" else 143)
        if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
            raise ConfigError(f"sources.{name}.port must be a port number")
        self.port = port
        self.verify_tls = o.get("verify_tls", True)
        if not isinstance(self.verify_tls, bool):
            raise ConfigError(f"sources.{name}.verify_tls must be true or false")
        self.ca_file = o.get("ca_file")
        if self.ca_file is not None and not isinstance(self.ca_file, str):
            raise ConfigError(f"sources.{name}.ca_file must be a path")
        self.username = o.get("username")
        if not isinstance(self.username, str) or not self.username:
            raise ConfigError(f"sources.{name}.username is missing")
        self.auth = o.get("auth", "password")
        if self.auth not in ("password", "xoauth2"):
            raise ConfigError(f"sources.{name}.auth must be password or xoauth2")
        cred_key = "token" if self.auth == "xoauth2" else "password"
        if cred_key in o:  # refuse a literal secret early, without network I/O
            secret(name, o, cred_key)
        if f"{cred_key}_env" not in o and f"{cred_key}_command" not in o:
            raise ConfigError(f"sources.{name}: set {cred_key}_env or {cred_key}_command")
        folders = o.get("folders", ["INBOX", "\\Sent"])
        if isinstance(folders, str):
            folders = [folders]
        if not isinstance(folders, list) or not all(isinstance(f, str) and f for f in folders):
            raise ConfigError(f"sources.{name}.folders must be a list of folder names or globs")
        self.folder_specs = list(folders)
        self.explicit_folders = "folders" in o
        self.extra_folders: dict[str, str] = {}  # log/private folder -> its option
        for key in ("log_folder", "private_folder"):
            extra = o.get(key)
            if extra is not None and extra != "":
                if not isinstance(extra, str):
                    raise ConfigError(f"sources.{name}.{key} must be a folder name")
                extra = extra.strip("/")
                self.extra_folders.setdefault(extra, key)
                if extra not in self.folder_specs:
                    self.folder_specs.append(extra)
        self.timeout = o.get("timeout", 60)
        if not isinstance(self.timeout, (int, float)) or self.timeout <= 0:
            raise ConfigError(f"sources.{name}.timeout must be a positive number of seconds")
        self.batch_size = o.get("batch_size", 500)
        if not isinstance(self.batch_size, int) or not 1 <= self.batch_size <= 5000:
            raise ConfigError(f"sources.{name}.batch_size must be between 1 and 5000")
        since = o.get("since")
        self.since: date | None = None
        if since is not None:
            try:
                if isinstance(since, datetime):
                    self.since = since.date()
                elif isinstance(since, date):
                    self.since = since
                else:
                    self.since = date.fromisoformat(str(since)[:10])
            except ValueError:
                raise ConfigError(f"sources.{name}.since must be an ISO date (YYYY-MM-DD)") from None
        self.use_condstore = o.get("use_condstore", True)
        if not isinstance(self.use_condstore, bool):
            raise ConfigError(f"sources.{name}.use_condstore must be true or false")
        self.empty_guard = o.get("empty_guard", 10)
        if not isinstance(self.empty_guard, int) or self.empty_guard < 0:
            raise ConfigError(f"sources.{name}.empty_guard must be a number >= 0")
        self._client: Any = None
        self._selected: str | None = None  # the mailbox this connection has EXAMINEd
        self._condstore = False
        self._esearch = False
        self._delimiter = "/"
        self._told: set[str] = set()  # missing log/private folders already reported (kept in the cursor)
        self._rule: Any = _UNASKED  # the store's SkipRule, asked once a pull

    # -- pull -----------------------------------------------------------------
    def pull(self, cursor: dict | None, view: SourceView) -> Iterator[Batch]:
        states = self._load_cursor(cursor)
        self._told = set(cursor.get("told", [])) if isinstance(cursor, dict) else set()
        with self._errors():
            client = self._connect()
            # before LIST: Dovecot answers STATUS from its mailbox list then, but opens the mailbox once
            # LIST has run (35-40 ms for a 90,000-mail Maildir INBOX, measured); the answer is used only
            # where LIST resolves the folder to the same server name
            ahead = {st["name"]: self._status(client, st["name"], st) for st in states.values() if "name" in st}
            listed = self._list(client)
            folders, problems = self._resolve(listed)
            told = set(self._told)
            problems = self._missing_once(problems)
            on_server = {s for _n, s, _f in listed}
            for scope in sorted(set(view.scopes()) - {s for _n, s in folders}):
                if scope not in on_server and view.known(scope):
                    problems.append(
                        f"folder {scope!r} is gone from the server (deleted or renamed?); "
                        f"keeping its {len(view.known(scope))} mails"
                    )
            wanted: dict[str, list[Location]] = {}
            for loc in rereads(view):
                wanted.setdefault(loc.scope, []).append(loc)
            # every question to the store before the first batch: asked after one, it is answered once the
            # store has caught up with every batch before it, and the reader waits (with 50 folders of a
            # first sync, about as long as it worked); a folder's batches touch no other folder's locations
            knowns = {scope: view.known(scope) for server_name, scope in folders
                      if scope not in wanted and self._compares(states.get(scope), ahead.get(server_name, _UNASKED))}
            self._rule = skip_rule(view) if knowns else _UNASKED
            if problems or self._told != told:
                yield Batch(problems=problems, cursor=self._cursor(states) if cursor is not None else None)
            for server_name, scope in folders:
                yield from self._pull_folder(client, server_name, scope, states, view, wanted.get(scope, []), ahead,
                                             knowns.pop(scope, None))

    def _compares(self, prev: dict | None, status: tuple | None | object) -> bool:
        """Whether the pass over a folder will compare the server with what the store knows of it
        (``SourceView.known``): a new folder, or one whose STATUS before LIST told a change, or every
        folder without CONDSTORE.  Other folders are asked when their pass gets there (most are
        unchanged, and a big folder's known locations cost time and memory)."""
        if prev is not None and prev.get("quarantined"):
            return False
        if prev is None or not self._condstore:
            return True
        if not isinstance(status, tuple) or status == _last_status(prev):
            return False
        uidvalidity, uidnext, messages, _modseq = status
        # new mail or flags only, nothing expunged: the pass does not compare (see _pull_folder)
        return not (uidvalidity == prev["uidvalidity"] and isinstance(uidnext, int) and isinstance(messages, int)
                    and _nothing_expunged(prev, uidnext, messages))

    def _pull_folder(self, client: Any, server_name: str, scope: str, states: dict[str, dict],
                     view: SourceView, rereading: Sequence[Location] = (),
                     statuses: Mapping[str, tuple | None] | None = None,
                     known: Mapping[str, str] | None = None) -> Iterator[Batch]:
        """``statuses``: the STATUS answers taken before LIST, by server name (a folder not in it is asked now);
        ``known``: ``view.known(scope)`` asked before the pull's first batch (None: asked here)."""
        prev = states.get(scope)
        if not rereading and prev is not None:
            if statuses is not None and server_name in statuses:
                status = statuses[server_name]  # None: refused or not telling; not asked twice
            else:
                status = self._status(client, server_name, prev)
            if status == _last_status(prev):
                if prev.get("name") != server_name:  # remembered for the STATUS before LIST next time
                    prev["name"] = server_name
                    yield Batch(cursor=self._cursor(states))
                return  # nothing at all changed, flags included
        try:
            info = self._select(client, server_name)
        except imaplib.IMAP4.abort:
            raise
        except imaplib.IMAP4.error as exc:
            yield Batch(problems=[f"folder {scope!r} cannot be read: {exc}; nothing removed"])
            return
        uidvalidity = int(info.get(b"UIDVALIDITY", 0))
        uidnext = int(info.get(b"UIDNEXT", 0))
        exists = int(info.get(b"EXISTS", 0))
        highest = int(info.get(b"HIGHESTMODSEQ", 0)) if self._condstore else 0
        prev = states.get(scope)
        now = time.time()
        changed = prev is not None and prev["uidvalidity"] != uidvalidity
        resets = [t for t in prev["resets"] if now - t < RESET_WINDOW] if prev else []
        if changed:
            resets.append(now)  # a real change: counted once, the new value is remembered below
        if prev is not None and (prev.get("quarantined") or len(resets) > MAX_RESETS):
            # the server keeps renumbering the folder: reading it again and again helps no one
            states[scope] = {"uidvalidity": uidvalidity, "last_uid": 0, "modseq": 0, "uidnext": 0, "exists": 0,
                             "resets": resets[-(MAX_RESETS + 5):], "quarantined": True}
            yield Batch(
                alerts=[f"folder {scope!r} is quarantined: its UIDVALIDITY changed {len(resets)} times in 30 days "
                        "(the server keeps renumbering it), so its new mail is not read; once the server is "
                        f"stable (e.g. after a migration) run: crm sources reset {self.name} --folder {scope}"],
                cursor=self._cursor(states),
            )
            return
        if changed:
            prev = None
        state: dict[str, Any]
        if prev is None:
            state = {"uidvalidity": uidvalidity, "last_uid": 0, "modseq": 0, "uidnext": 0, "exists": 0, "resets": resets}
        else:
            state = prev
        state["name"] = server_name
        states[scope] = state
        if rereading:  # the store's wish first: the folder may be unchanged otherwise
            yield from self._reread(client, scope, uidvalidity, rereading)
        # same UIDNEXT and EXISTS as after the last complete pass: no mail came or went
        same_mail = prev is not None and state["uidnext"] == uidnext and state["exists"] == exists and uidnext > 0
        if same_mail and self._condstore and state["modseq"] == highest:
            return  # nothing at all changed, flags included
        # nothing expunged since the last complete pass (every UID given out since is there, and the count
        # grew by as many): with CONDSTORE's flag changes nothing needs the store's known locations, whose
        # reading and comparing cost about 0.1 s a run at 90,000 mails in the folder
        kept = prev is not None and _nothing_expunged(prev, uidnext, exists) and self._condstore
        if known is None and not kept:
            known = view.known(scope)
        prefix = f"{uidvalidity}:"
        last_uid = state["last_uid"]
        if same_mail:
            all_uids = None
            new_uids: Sequence[int] = ()
        elif kept:
            all_uids = None  # only the new ones are asked for
            new_uids = array("Q", (u for u in uid_search_all(client, self._esearch, f"{last_uid + 1}:*")
                                   if u > last_uid))
        else:
            all_uids = uid_search_all(client, self._esearch) if exists else []
            # UIDs as 8-byte machine integers, not Python ints: a big folder's list stays small
            new_uids = array("Q", (u for u in all_uids if u > last_uid))
        if not known and all_uids:
            all_uids = []  # nothing known that could be gone: the full list is not needed again
        if new_uids and self.since is not None:
            wanted = set(client.search(["UID", f"{last_uid + 1}:*", "SINCE", self.since]))
            new_uids = array("Q", (u for u in new_uids if u in wanted))
        # -- new mail, in ascending UID batches ---------------------------------
        # Pipelined: the headers of the next two batches are asked for before
        # a batch is parsed and handed on, so the server is never idle while
        # this process parses or the store writes.
        size = self.batch_size
        chunks = [new_uids[i:i + size] for i in range(0, len(new_uids), size)]  # slices of the array
        fetches = Fetches(client)
        heads = [fetches.send(uid_set(c), _FETCH_ITEMS) for c in chunks[:2]]
        if self._rule is _UNASKED:  # once a pull, as a question after a batch waits for the store
            self._rule = skip_rule(view)
        rule = cast("SkipRule | None", self._rule)
        done = 0
        # batches whose texts are on the way, oldest first: each round of FETCHes (BODYSTRUCTURE, a text
        # prefix, more of it) is answered while the next batch's headers are parsed, not waited for
        pending: list[_Texts] = []
        last: Batch | None = None  # the folder's last batch of new mail, held back
        try:
            for k, chunk in enumerate(chunks):
                fetches.wait(heads[k])
                batch, mails = parse_new(fetches.take(chunk), scope, uidvalidity, list(chunk), rule)
                asked = ask_texts(fetches, mails)
                if k + 2 < len(chunks):
                    heads.append(fetches.send(uid_set(chunks[k + 2]), _FETCH_ITEMS))
                for texts in pending:
                    texts.next_round(fetches)
                pending.append(_Texts(batch, mails, chunk, asked))
                while pending and (not pending[0].asked or len(pending) > _TEXTS_IN_FLIGHT or k + 1 == len(chunks)):
                    texts = pending.pop(0)
                    while texts.asked:
                        texts.next_round(fetches)
                    batch, chunk = texts.batch, texts.uids
                    add_records(batch, texts.mails)
                    done += len(chunk)
                    state["last_uid"] = max(state["last_uid"], chunk[-1])
                    state["uidnext"] = state["exists"] = 0  # a pass is running
                    batch.cursor = self._cursor(states)
                    batch.done, batch.total = done, len(new_uids)
                    if k + 1 == len(chunks) and not pending:
                        last = batch  # the folder's end may go with it (below)
                    else:
                        yield batch
        finally:
            if fetches.busy:  # stopped half-way: responses still on the wire
                self._drop()
        # -- flags, deletions ----------------------------------------------------
        final = Batch()
        if last_uid:
            final.changes = self._flag_changes(client, scope, prefix, last_uid, prev, highest, known)
        gone: list[str] = []
        if all_uids is not None and known:  # (known None: nothing was expunged)
            current = set(all_uids)  # of the UIDs, not of "uidvalidity:uid" strings: memory stays small
            gone = [lid for lid in known if not _still_there(lid, prefix, current)]
        if gone and known is not None:
            if not all_uids and len(known) > self.empty_guard:
                final.problems.append(
                    f"folder {scope!r} is empty on the server but {len(known)} mails were seen in it; "
                    f"nothing removed (if it was emptied on purpose, set empty_guard >= {len(known)} for one run)"
                )
            else:
                final.removed = [Location(scope, lid) for lid in gone]
        state["last_uid"] = max([state["last_uid"], *new_uids[-1:]])
        state["modseq"] = highest
        state["uidnext"], state["exists"] = uidnext, exists
        final.cursor = self._cursor(states)
        final.done = final.total = len(new_uids)
        if last is not None:
            if not (final.changes or final.removed or final.problems):
                # nothing but the folder's new state: one transaction less a folder (a first sync of 50 folders)
                last.cursor = final.cursor
                yield last
                return
            yield last
        yield final

    def _reread(self, client: Any, scope: str, uidvalidity: int, wanted: Sequence[Location]) -> Iterator[Batch]:
        """The mails the store wants the text of (stored without it, linked since), fetched by UID as new
        mail is (header, BODYSTRUCTURE where needed, text prefix), so their records are what a fresh sync
        reads.  Each batch answers its locations in ``Batch.rereads``: a UID that is gone, or of an older
        UIDVALIDITY (the folder's rescan reads that mail again under its new UID), is answered too, so
        nothing is asked for twice.  A mail that cannot be read is logged, not quarantined: its stored
        metadata stays.
        """
        prefix = f"{uidvalidity}:"
        current: list[int] = []
        stale: list[Location] = []
        for loc in wanted:
            tail = loc.local_id[len(prefix):] if loc.local_id.startswith(prefix) else ""
            if tail.isdigit():
                current.append(int(tail))
            else:
                stale.append(loc)
        current = sorted(set(current))
        if stale:
            yield Batch(rereads=stale)
        size = self.batch_size
        for start in range(0, len(current), size):
            chunk = current[start:start + size]
            fetches = Fetches(client)
            try:
                fetches.wait(fetches.send(uid_set(chunk), _FETCH_ITEMS))
                batch, mails = parse_new(fetches.take(chunk), scope, uidvalidity, chunk)
                asked = ask_texts(fetches, mails)
                while asked:
                    fetches.wait(*asked)
                    asked = ask_texts(fetches, mails, fetches.take(chunk))
            finally:
                if fetches.busy:
                    self._drop()
            add_records(batch, mails)
            for failure in batch.failures:
                log.warning("%s: %s %s could not be read again: %s", self.name, scope, failure.location.local_id,
                            failure.reason)
            batch.failures = []
            batch.rereads = [Location(scope, f"{prefix}{uid}") for uid in chunk]
            yield batch

    def _flag_changes(self, client: Any, scope: str, prefix: str, last_uid: int, prev: dict | None,
                      highest: int, known: Mapping[str, str] | None) -> list[FlagChange]:
        """The flags changed since the last pass; ``known`` None (not read: CONDSTORE told what changed)
        hands on each change as it is, the store leaves alone what it already has."""
        if self._condstore and prev is not None and prev["modseq"]:
            if prev["modseq"] == highest:
                return []
            resp = uid_fetch(client, f"1:{last_uid}", ["UID", "FLAGS"], f"CHANGEDSINCE {prev['modseq']}")
        else:
            resp = uid_fetch(client, f"1:{last_uid}", ["UID", "FLAGS"])
        changes = []
        for uid, data in resp.items():
            lid = f"{prefix}{uid}"
            if b"FLAGS" not in data or (known is not None and lid not in known) or int(uid) > last_uid:
                continue
            flags = _flags(data[b"FLAGS"])
            etag = flags_key(flags)
            if known is None or known[lid] != etag:
                changes.append(FlagChange(Location(scope, lid, etag), flags))
        return changes

    # -- watch ----------------------------------------------------------------
    def wake(self) -> None:
        """End a watch() blocked in IDLE: shut the socket down under it."""
        super().wake()
        client = self._client
        if client is not None:
            with contextlib.suppress(Exception):
                client.socket().shutdown(socket.SHUT_RDWR)

    def watch(self, cursor: dict | None, view: SourceView, timeout: float) -> bool:
        """IDLE on INBOX (or the first configured folder) until it changes or ``timeout`` passes."""
        with self._errors():
            client = self._connect()
            listed = self._list(client)
            folders, _problems = self._resolve(listed)
            if not folders:
                time.sleep(timeout)
                return True
            server_name, scope = next(((n, s) for n, s in folders if s == "INBOX"), folders[0])
            info = self._select(client, server_name)
            try:
                st = (self._load_cursor(cursor) or {}).get(scope)
            except CursorInvalid:
                st = None
            if st is None or st["uidvalidity"] != int(info.get(b"UIDVALIDITY", 0)) \
                    or st["uidnext"] != int(info.get(b"UIDNEXT", 0)) or st["exists"] != int(info.get(b"EXISTS", 0)) \
                    or (self._condstore and st["modseq"] != int(info.get(b"HIGHESTMODSEQ", 0))):
                return True  # changed since the cursor was written
            if b"IDLE" not in {c.upper() for c in client.capabilities()}:
                time.sleep(timeout)
                return True
            deadline = time.monotonic() + timeout
            client.idle()
            changed = False
            try:
                while not changed:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    responses = client.idle_check(timeout=min(left, 60))
                    for resp in responses:
                        if len(resp) >= 2 and resp[1] in (b"EXISTS", b"EXPUNGE", b"FETCH", b"VANISHED"):
                            changed = True
                        elif resp and resp[0] == b"BYE":
                            raise imaplib.IMAP4.abort("server said BYE during IDLE")
                    # imapclient's idle_check swallows EOF and returns nothing: look at the socket
                    if not responses and _peer_closed(client.socket()):
                        raise imaplib.IMAP4.abort("the server closed the connection during IDLE")
            finally:
                if self._client is not None:
                    client.idle_done()
            return changed
