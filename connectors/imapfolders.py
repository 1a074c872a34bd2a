"""Which folders an IMAP source reads, and its cursor: the LIST, the configured folders resolved
against it (names, globs, special-use flags), STATUS of a folder the last complete pass saw,
EXAMINE, and the cursor read, written and forgotten per folder, for
:class:`~connectors.imap.ImapConnector`.

Folders
-------
``folders`` entries are folder names or :mod:`fnmatch` globs written with
``/`` as the hierarchy separator, or a special-use flag (``\\Sent``,
``\\Archive``...).  The default is INBOX plus the special-use ``\\Sent``
folder (or a folder called Sent / Sent Items / Sent Messages).  Globs never
pick \\Junk, \\Trash, \\Drafts or \\Noselect folders.
A ``log_folder`` or ``private_folder`` that does not exist yet is reported
once, with how to create it; the cursor's ``"told"`` list remembers that.

With CONDSTORE, a folder whose STATUS (UIDVALIDITY UIDNEXT MESSAGES
HIGHESTMODSEQ) equals what the last complete pass saw is not EXAMINEd at
all; those STATUS commands go before LIST, for the folders the cursor
names (see :meth:`ImapFolders._status`).

Cursor
------
A JSON-able dict::

    {"version": 1,
     "folders": {
        "INBOX": {"uidvalidity": 1700000000,  # of the pass in progress / done
                  "last_uid": 20000,          # every UID <= this is stored
                  "modseq": 40211,            # HIGHESTMODSEQ at the start of the
                                              # last complete pass, 0 = none
                  "uidnext": 20001,           # UIDNEXT / EXISTS seen by the last
                  "exists": 20000,            # complete pass, 0 while one runs
                  "resets": [1700000000.0]},  # times UIDVALIDITY changed (30 days)
        ...}}
"""

from __future__ import annotations

import copy
import fnmatch
import imaplib
import logging
from typing import Any

from crm_bridge.connectors.base import ConfigError, CursorInvalid
from crm_bridge.connectors.imapconn import ImapConnection
from crm_bridge.connectors.imapwire import _s

log = logging.getLogger("crm.imap")

CURSOR_VERSION = 1
#: marks a missing log/private folder among _resolve's problems
MISSING_MARK = "\0missing:"
_SKIP_SPECIAL = (b"\\junk", b"\\trash", b"\\drafts")
_SENT_NAMES = ("sent", "sent items", "sent messages", "sent mail", "gesendet", "gesendete objekte")
_STATUS_ITEMS = ["UIDVALIDITY", "UIDNEXT", "MESSAGES", "HIGHESTMODSEQ"]


class ImapFolders(ImapConnection):
    """The folder half of :class:`~connectors.imap.ImapConnector` (which reads the options into
    these attributes)."""

    folder_specs: list[str]
    explicit_folders: bool
    extra_folders: dict[str, str]  # log/private folder -> its option
    _delimiter: str
    _told: set[str]  # missing log/private folders already reported (kept in the cursor)

    # -- folders --------------------------------------------------------------
    def _scope(self, name: str, delimiter: str) -> str:
        if name.upper() == "INBOX":
            return "INBOX"
        if delimiter and delimiter != "/":
            return name.replace(delimiter, "/")
        return name

    def _list(self, client: Any) -> list[tuple[str, str, tuple[bytes, ...]]]:
        """(server name, scope, lower-cased flags) of every folder."""
        out = []
        for flags, delim, name in client.list_folders():
            d = _s(delim) if delim else "/"
            self._delimiter = d
            out.append((name, self._scope(name, d), tuple(f.lower() for f in flags)))
        return out

    def _resolve(self, folders: list[tuple[str, str, tuple[bytes, ...]]]) -> tuple[list[tuple[str, str]], list[str]]:
        """Configured folders -> [(server name, scope)], problems."""
        chosen: dict[str, str] = {}
        problems: list[str] = []
        selectable = [(n, s, f) for n, s, f in folders if b"\\noselect" not in f and b"\\nonexistent" not in f]
        for spec in self.folder_specs:
            found = []
            if spec.startswith("\\"):
                flag = spec.lower().encode()
                found = [(n, s) for n, s, f in selectable if flag in f]
                if not found and spec.lower() == "\\sent":
                    found = [(n, s) for n, s, f in selectable if s.lower() in _SENT_NAMES][:1]
                if not found and self.explicit_folders:
                    problems.append(f"no folder is marked {spec} on the server")
            elif any(ch in spec for ch in "*?["):
                found = [(n, s) for n, s, f in selectable
                         if fnmatch.fnmatchcase(s, spec) and not any(x in f for x in _SKIP_SPECIAL)]
            else:
                want = "INBOX" if spec.upper() == "INBOX" else spec.strip("/")
                found = [(n, s) for n, s, f in selectable if s == want]
                if not found:  # "CRM" may live as "INBOX/CRM" (Courier, Cyrus); the engine matches it so
                    found = [(n, s) for n, s, f in selectable
                             if s.lower() == want.lower() or s.endswith("/" + want)][:1]
                if not found and spec.strip("/") in self.extra_folders:
                    problems.append(f"{MISSING_MARK}{spec.strip('/')}")
                elif not found:
                    problems.append(f"folder {want!r} does not exist on the server (deleted or renamed?)")
            for n, s in found:
                chosen.setdefault(s, n)
        return [(n, s) for s, n in chosen.items()], problems

    def _missing_once(self, problems: list[str]) -> list[str]:
        """A log or private folder that does not exist yet: say how to create it, once (not on every run)."""
        out = []
        missing = set()
        for problem in problems:
            if not problem.startswith(MISSING_MARK):
                out.append(problem)
                continue
            folder = problem[len(MISSING_MARK):]
            missing.add(folder)
            if folder in self._told:
                log.info("%s: %s %r does not exist yet (reported before)", self.name, self.extra_folders[folder], folder)
                continue
            self._told.add(folder)
            d = self._delimiter
            out.append(f"{self.extra_folders[folder]} {folder!r} does not exist yet: create folder "
                       f"{folder.replace('/', d)!r} (separator {d!r}) to use it")
        self._told &= missing  # created since: if it goes missing again, that is news
        return out

    def _status(self, client: Any, server_name: str, prev: dict | None) -> tuple | None:
        """The folder's STATUS (UIDVALIDITY, UIDNEXT, MESSAGES, HIGHESTMODSEQ) where it can tell that the
        folder is exactly as the last complete pass left it: with CONDSTORE every change, flags included,
        raises HIGHESTMODSEQ (RFC 7162 3.1.1), so an equal STATUS needs no EXAMINE, which makes the
        server open the mailbox.  Dovecot's STATUS notices outside changes to the mail files too (tested).
        None without CONDSTORE, without a cursor of a complete pass, or when the server refuses it."""
        if (not self._condstore or prev is None or prev.get("quarantined") or not prev["uidnext"]
                or not prev["modseq"] or server_name == self._selected):
            return None  # STATUS of the selected mailbox may tell what this session saw last (RFC 3501 6.3.10)
        try:
            st = client.folder_status(server_name, _STATUS_ITEMS)
        except imaplib.IMAP4.abort:
            raise
        except imaplib.IMAP4.error:
            return None
        return (st.get(b"UIDVALIDITY"), st.get(b"UIDNEXT"), st.get(b"MESSAGES"), st.get(b"HIGHESTMODSEQ"))

    def _select(self, client: Any, server_name: str) -> dict:
        self._selected = None
        info = client.select_folder(server_name, readonly=True)
        self._selected = server_name
        return info

    # -- cursor ---------------------------------------------------------------
    def _load_cursor(self, cursor: dict | None) -> dict[str, dict]:
        if cursor is None:
            return {}
        if not isinstance(cursor, dict) or cursor.get("version") != CURSOR_VERSION or not isinstance(cursor.get("folders"), dict):
            raise CursorInvalid(f"imap source {self.name}: cursor format not understood")
        out = {}
        for scope, st in cursor["folders"].items():
            try:
                out[scope] = {
                    "uidvalidity": int(st["uidvalidity"]),
                    "last_uid": int(st["last_uid"]),
                    "modseq": int(st.get("modseq", 0)),
                    "uidnext": int(st.get("uidnext", 0)),
                    "exists": int(st.get("exists", 0)),
                    "resets": [float(t) for t in st.get("resets", [])],
                }
                if st.get("quarantined"):
                    out[scope]["quarantined"] = True
                if isinstance(st.get("name"), str):
                    out[scope]["name"] = st["name"]
            except (KeyError, TypeError, ValueError):
                raise CursorInvalid(f"imap source {self.name}: cursor of folder {scope!r} is damaged") from None
        return out

    def forget(self, cursor: dict | None, scope: str | None = None) -> dict | None:
        """The cursor without what it holds on folder ``scope`` (None: on every folder).

        The folder is then read as new: its quarantine (see ``imap.MAX_RESETS``)
        ends, mails of an older UIDVALIDITY are reported removed, and the
        store's deduplication keeps the mails it has from being doubled.
        """
        if scope is None or cursor is None:
            return None
        states = self._load_cursor(cursor)
        self._told = set(cursor.get("told", []))
        want = "INBOX" if scope.strip("/").upper() == "INBOX" else scope.strip("/")
        if want not in states:
            known = ", ".join(sorted(states)) or "none"
            raise ConfigError(f"imap source {self.name} has no folder {want!r} (folders: {known})")
        del states[want]
        return self._cursor(states)

    def _cursor(self, states: dict[str, dict]) -> dict:
        out: dict[str, Any] = {"version": CURSOR_VERSION, "folders": copy.deepcopy(states)}
        if self._told:
            out["told"] = sorted(self._told)
        return out
