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

``folders`` entries are folder names or :mod:`fnmatch` globs written with
``/`` as the hierarchy separator, or a special-use flag (``\\Sent``,
``\\Archive``...).  The default is INBOX plus the special-use ``\\Sent``
folder (or a folder called Sent / Sent Items / Sent Messages).  Globs never
pick \\Junk, \\Trash, \\Drafts or \\Noselect folders.

Scopes and ids
--------------
A record's ``Location.scope`` is the folder name with the server's
hierarchy delimiter replaced by ``/`` (``INBOX`` always upper case);
``local_id`` is ``"<UIDVALIDITY>:<UID>"``; ``etag`` is the message's flags,
sorted and space separated (``\\Recent`` left out), so a source without
CONDSTORE can find flag changes by comparing with ``SourceView.known``.

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

New mail is fetched in ascending UID order, ``batch_size`` UIDs per FETCH,
and every batch carries a cursor with ``last_uid`` advanced to its last
UID, so an interrupted first sync resumes where it stopped.  The final
batch of a folder carries flag changes, removals and the new ``modseq`` /
``uidnext`` / ``exists``.  When UIDVALIDITY, UIDNEXT, EXISTS and
HIGHESTMODSEQ all equal the cursor's, the folder is skipped after SELECT.

What is fetched
---------------
First ``UID FLAGS RFC822.SIZE BODY.PEEK[HEADER.FIELDS (...)]`` (the fields
of :data:`connectors.mailparse.HEADER_FIELDS`).  Then, per mail (:class:`_Mail`):

* nothing more for mail the store skips whatever its text says (private,
  blocked, bulk, internal-only, before ``since``: the view's
  :class:`~connectors.base.SkipRule`);
* no text for mail the store keeps as metadata only, known from the header
  (nobody in it is a known contact or at a customer's domain:
  :meth:`~connectors.base.SkipRule.text_unneeded`), only the BODYSTRUCTURE
  of a multipart one (whether it has attachments); the record says
  ``no_text``.  Once such a mail is linked, the store names its location
  (``SourceView.rereads``, :mod:`crm_core.rereads`) and the next pull
  fetches just those UIDs, as new mail is fetched, right after the folder's
  EXAMINE, answering each (read or gone) in ``Batch.rereads``;
* for a single-part mail (Content-Type not multipart, or none) the text part
  is known from the header, read as :func:`~connectors.mailparse.iter_parts`
  reads a file; a multipart mail's ``BODYSTRUCTURE`` is fetched to find it
  (:func:`~connectors.mailparse.choose_text_part`);
* of the text part a prefix ``BODY.PEEK[<section>]<0.N>``: first
  :func:`~connectors.snippet.first_fetch_bytes` (1.5 KiB of text, 2 KiB
  base64 or quoted-printable, 8 KiB HTML), which settles nearly every
  snippet (:func:`~connectors.snippet.prefix_snippet`); where it does not
  (a long style sheet, a quote first), the next bytes up to twice that,
  :func:`~connectors.mailparse.prefix_bytes`, and at most twice
  prefix_bytes: IMAP sends CRLF line ends while Maildir files (Dovecot,
  mbsync) keep LF, so the prefix is normalised to LF and then cut to
  prefix_bytes, which gives the same snippet as
  :func:`~connectors.mailparse.parse_message` on the stored file.

Mails that ask for the same item share one FETCH.  A mail whose header the
server could not split (CR-only line ends of old Mac exports, no known
field) is fetched as a prefix of the whole message instead and read by
``parse_message``.  Folders are opened with EXAMINE and every body fetch
uses ``BODY.PEEK``: the connector never changes the mailbox.

The commands are pipelined (:class:`Fetches`): the header FETCH of the
next two batches is on the wire before a batch is parsed and handed to
the engine, so the server works while this process parses and the store
writes.  A pull stopped half-way drops its connection rather than read
stale answers later.

Flags and deletions
-------------------
With CONDSTORE (``ENABLE CONDSTORE`` before EXAMINE) flag changes come from
``UID FETCH 1:<last_uid> (UID FLAGS) (CHANGEDSINCE <modseq>)``; without it
(or ``use_condstore = false``) from ``UID FETCH 1:<last_uid> (UID FLAGS)``
compared with the known etags.  Expunges are found by comparing ``UID
SEARCH ALL`` with ``view.known(scope)``; every known id of an older
UIDVALIDITY is reported removed in the last batch of the rescan.  A folder
that comes back empty while the store knows more than ``empty_guard`` of
its mails, or that cannot be selected, or that vanished from the server,
is reported in ``Batch.problems`` and nothing under it is removed.  A
folder whose UIDVALIDITY changed more than three times in 30 days (each
real change counted once) is quarantined: it is not read, and every run
reports it in ``Batch.alerts`` (the run fails) until the admin clears it
with ``crm sources reset NAME --folder F`` (:meth:`ImapConnector.forget`).
A ``log_folder`` or ``private_folder`` that does not exist yet is reported
once, with how to create it; the cursor's ``"told"`` list remembers that.

Errors
------
All library errors are mapped in :meth:`ImapConnector._errors`: a refused
login -> ``AuthError``; an untrusted certificate -> ``SourceUnavailable``;
timeouts, resets, BYE and other aborts -> ``TransientError``; any other
protocol error -> ``SourceUnavailable``.  Credentials never appear in
messages.
"""

from __future__ import annotations

import contextlib
import copy
import fnmatch
import imaplib
import logging
import socket
import ssl
import time
from array import array
from datetime import date, datetime
from typing import Any, Iterator, Mapping, Sequence

from crm_bridge.connectors.base import (
    AuthError,
    ConfigError,
    Connector,
    ConnectorError,
    CursorInvalid,
    SkipRule,
    SourceUnavailable,
    SourceView,
    TransientError,
    is_loopback,
    rereads,
    secret,
    skip_rule,
)
from crm_bridge.connectors.mailparse import (
    HEADER_FIELDS,
    MAX_MESSAGE_BYTES,
    MailParseError,
    Part,
    bare_cr_lines,
    choose_text_part,
    parse_header_block,
    parse_message,
    part_snippet,
    prefix_bytes,
    record_from_headers,
    single_part,
)
from crm_bridge.connectors.imapwire import (
    Fetches,
    _flags,
    _s,
    body_parts,
    flags_key,
    uid_fetch,
    uid_search_all,
    uid_set,
)
from crm_bridge.connectors.snippet import first_fetch_bytes, prefix_snippet
from crm_bridge.crm_core.records import Batch, Failure, FlagChange, Location, MailRecord

log = logging.getLogger("crm.imap")

CURSOR_VERSION = 1
#: marks a missing log/private folder among _resolve's problems
MISSING_MARK = "\0missing:"
#: seconds to wait for a server's greeting (at most ``timeout``)
GREETING_TIMEOUT = 15
#: UIDVALIDITY changes tolerated within RESET_WINDOW before a folder is skipped
MAX_RESETS = 3
RESET_WINDOW = 30 * 24 * 3600
_SKIP_SPECIAL = (b"\\junk", b"\\trash", b"\\drafts")
_SENT_NAMES = ("sent", "sent items", "sent messages", "sent mail", "gesendet", "gesendete objekte")
_HEADER_ITEM = "BODY.PEEK[HEADER.FIELDS (" + " ".join(f.upper() for f in HEADER_FIELDS) + ")]"
#: the first FETCH of new mail; BODYSTRUCTURE follows only for multipart mail (see _Mail)
_FETCH_ITEMS = ["UID", "FLAGS", "RFC822.SIZE", _HEADER_ITEM]


class _Mail:
    """A new mail between its header FETCH and its record: what is known, what to ask for next."""

    __slots__ = ("uid", "location", "flags", "size", "record", "part", "structure", "raw", "asked", "snippet",
                 "failed", "textless", "idle")

    def __init__(self, uid: int, location: Location, flags: tuple[str, ...], size: int):
        self.uid = uid
        self.location = location
        self.flags = flags
        self.size = size
        self.record: MailRecord | None = None  # None: read from ``raw`` by the file parser
        self.part: Part | None = None  # the text part to fetch, once known
        self.structure = False  # the BODYSTRUCTURE is to be fetched first
        self.raw = b""  # the part's first bytes as fetched
        self.asked = 0  # bytes asked for so far (from offset 0)
        self.snippet: str | None = None  # settled
        self.failed = ""
        self.textless = False  # metadata only: the BODYSTRUCTURE (for has_attachments), no text
        self.idle = False  # next_item() said None and nothing came since: it says None again

    def next_item(self) -> tuple[str, ...] | None:
        """The FETCH item this mail needs next, None when it needs nothing more."""
        if self.structure:
            return ("BODYSTRUCTURE",)
        part = self.part
        if part is None or self.snippet is not None:
            return None
        if not part.section:  # the whole message, for a mail only the file parser can read (CR line ends)
            return (f"BODY.PEEK[]<0.{MAX_MESSAGE_BYTES}>",) if not self.asked else None
        # the first bytes, twice as many, then up to prefix_bytes (enough unless the server's
        # CRLF line ends were many), then up to the 2 * prefix_bytes that part_snippet reads at most
        n = prefix_bytes(part.ctype, part.cte)
        first = first_fetch_bytes(part.ctype, part.cte)
        size = next((t for t in (first, 2 * first, n, 2 * n) if t > self.asked), 0) - self.asked
        if size <= 0:
            return None
        item = f"BODY.PEEK[{part.section}]<{self.asked}.{size}>"
        self.asked += size
        return (item,)

    def take(self, data: dict[bytes, Any]) -> None:
        """What a FETCH brought for this mail."""
        if self.structure:
            self.structure = False
            self.part, attachments = choose_text_part(body_parts(data.get(b"BODYSTRUCTURE")))
            if self.record is not None:
                self.record.has_attachments = attachments
            if self.textless:
                self.part = None
            return
        part = self.part
        if part is None:
            return
        offset = len(self.raw)
        found = data.get(f"BODY[{part.section}]<{offset}>".encode())
        if found is None:  # a server that names the item otherwise: the one body item there is
            found = next((v for k, v in data.items() if k.startswith(b"BODY[") and not k.startswith(b"BODY[HEADER")),
                         b"")
        self.raw += found or b""
        if not part.section:
            self.snippet = ""  # read with the whole message in _add_records
            return
        complete = len(self.raw) < self.asked  # the server sent less than asked: that is the whole part
        self.snippet = prefix_snippet(self.raw, part, complete)
        if self.snippet is None and self.asked >= 2 * prefix_bytes(part.ctype, part.cte):
            self.snippet = part_snippet(self.raw, part)  # all that part_snippet reads is here


#: batches of new mail whose text FETCHes may be under way at once (see _pull_folder)
_TEXTS_IN_FLIGHT = 3


class _Texts:
    """A batch of new mail between its header FETCH and its records: the text FETCHes still under way."""

    __slots__ = ("batch", "mails", "uids", "asked")

    def __init__(self, batch: Batch, mails: list[_Mail], uids: Sequence[int], asked: list[bytes]):
        self.batch = batch
        self.mails = mails
        self.uids = uids
        self.asked = asked  # tags of the round of FETCHes on the wire

    def next_round(self, conn: "ImapConnector", fetches: Fetches) -> None:
        """Take in the round on the wire (mostly answered by now) and send the next one."""
        if self.asked:
            fetches.wait(*self.asked)
            self.asked = conn._ask_texts(fetches, self.mails, fetches.take(self.uids))


def _excerpt_of(record: MailRecord | None) -> str:
    if record is None:
        return ""
    sender = record.sender.email if record.sender else ""
    return f"from: {sender}; subject: {record.subject[:80]}; message-id: {record.message_id[:80]}"


def _still_there(local_id: str, prefix: str, uids: set[int]) -> bool:
    """Whether ``local_id`` ("uidvalidity:uid") names one of ``uids`` under the current UIDVALIDITY."""
    if not local_id.startswith(prefix):
        return False
    tail = local_id[len(prefix):]
    return tail.isdigit() and int(tail) in uids


def _peer_closed(sock: socket.socket) -> bool:
    """True when the other end hung up (works under TLS too: it asks the TCP socket)."""
    import select

    poller = select.poll()
    poller.register(sock.fileno(), select.POLLIN | getattr(select, "POLLRDHUP", 0))
    for _fd, events in poller.poll(0):
        if events & (select.POLLHUP | select.POLLERR | getattr(select, "POLLRDHUP", 0)):
            return True
    return False


class ImapConnector(Connector):
    """Read mail from IMAP folders (see the module docstring)."""

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
        self._condstore = False
        self._esearch = False
        self._delimiter = "/"
        self._told: set[str] = set()  # missing log/private folders already reported (kept in the cursor)

    # -- errors ---------------------------------------------------------------
    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        """Map library errors to the connector error tree (the only place)."""
        from imapclient import exceptions as imx

        where = f"imap source {self.name} ({self.host}:{self.port})"
        try:
            yield
        except ConnectorError:
            raise
        except imx.LoginError as exc:
            self._drop()
            if _lost_connection(exc):  # imapclient turns a cut during LOGIN into LoginError too
                raise TransientError(f"{where}: connection lost during login: {exc}") from None
            if "UNAVAILABLE" in str(exc).upper():  # RFC 5530: the auth backend is down, not the password wrong
                raise TransientError(f"{where}: login temporarily unavailable") from None
            raise AuthError(f"{where}: the server refused the login of {self.username}") from None
        except ssl.SSLCertVerificationError as exc:
            self._drop()
            reason = getattr(exc, "verify_message", "") or exc.reason or "verification failed"
            raise SourceUnavailable(
                f"{where}: TLS certificate not trusted ({reason}); set ca_file to the CA "
                "that signed it, or verify_tls = false for a test server"
            ) from None
        except (ssl.SSLError, socket.timeout, TimeoutError, OSError, EOFError) as exc:
            self._drop()
            raise TransientError(f"{where}: connection failed: {type(exc).__name__}: {exc}") from exc
        except imaplib.IMAP4.abort as exc:  # BYE, EOF, socket trouble inside imaplib
            self._drop()
            raise TransientError(f"{where}: connection lost: {exc}") from exc
        except imaplib.IMAP4.error as exc:
            self._drop()
            raise SourceUnavailable(f"{where}: server error: {exc}") from exc

    def _drop(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):
                client.shutdown()

    # -- connection -----------------------------------------------------------
    def _ssl_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context()
        if self.ca_file:
            try:
                ctx.load_verify_locations(cafile=self.ca_file)  # in addition to the system's CAs
            except (OSError, ssl.SSLError) as exc:
                raise ConfigError(f"sources.{self.name}.ca_file {self.ca_file!r} cannot be used: {exc}") from None
        if not self.verify_tls:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        return ctx

    def _connect(self) -> Any:
        from imapclient import IMAPClient, SocketTimeout

        if self._client is not None:
            return self._client
        ctx = self._ssl_context() if self.tls != "none" else None
        try:
            # the greeting comes at once from an IMAP server: waiting long for it helps no one
            client = IMAPClient(self.host, self.port, ssl=self.tls == "implicit", ssl_context=ctx,
                                timeout=SocketTimeout(min(self.timeout, GREETING_TIMEOUT), self.timeout))
        except ssl.SSLCertVerificationError:
            raise
        except (ConnectionRefusedError, ssl.SSLError, socket.timeout, TimeoutError, EOFError,
                imaplib.IMAP4.abort) as exc:
            raise self._diagnose(exc) from None
        try:
            if self.tls == "starttls":
                client.starttls(ctx)
            if self.auth == "xoauth2":
                token = secret(self.name, self.options, "token")
                client.oauth2_login(self.username, token or "")
            else:
                password = secret(self.name, self.options, "password")
                client.login(self.username, password or "")
            caps = {c.upper() for c in client.capabilities()}
            self._condstore = self.use_condstore and b"CONDSTORE" in caps
            self._esearch = b"ESEARCH" in caps
            if self._condstore:
                client.enable("CONDSTORE")
        except BaseException:
            with contextlib.suppress(Exception):
                client.shutdown()
            raise
        # imapclient sets imaplib's debug level to 5, which formats every
        # response line for its logger: costly for a 20,000-mail FETCH
        client._imap.debug = 0
        self._client = client
        return client

    def _diagnose(self, exc: BaseException) -> ConnectorError:
        """A failed connect: errors that retrying cannot fix become one line with the likely cause."""
        where = f"imap source {self.name} ({self.host}:{self.port})"
        if isinstance(exc, ConnectionRefusedError):
            return SourceUnavailable(f"{where}: connection refused: nothing listens there (check host and port; "
                                     "IMAP is port 993 with tls = \"implicit\", 143 with tls = \"starttls\")")
        peer = probe(str(self.host), self.port)
        if peer in ("http", "https"):
            return SourceUnavailable(f"{where} is a web server ({peer.upper()}), not an IMAP server: check host and "
                                     "port (IMAP is port 993 with tls = \"implicit\", 143 with tls = \"starttls\")")
        if self.tls == "implicit" and peer == "imap":
            return SourceUnavailable(f"{where}: port {self.port} speaks plain IMAP, not TLS: use tls = \"starttls\" "
                                     "(or the server's TLS port, usually 993)")
        if self.tls != "implicit" and peer == "imap-tls":
            return SourceUnavailable(f"{where}: port {self.port} speaks IMAP over TLS: use tls = \"implicit\"")
        if isinstance(exc, ssl.SSLError):
            return SourceUnavailable(f"{where}: TLS handshake failed ({exc.reason or exc}): the port does not "
                                     "seem to speak TLS; check port and tls")
        if peer == "imap" or peer == "imap-tls":  # an IMAP server that was slow or went away: try again
            return TransientError(f"{where}: connection failed: {type(exc).__name__}: {exc}")
        if isinstance(exc, (socket.timeout, TimeoutError)) and peer:
            return SourceUnavailable(f"{where}: no IMAP greeting within {min(self.timeout, GREETING_TIMEOUT):.0f} s "
                                     f"(it answers {peer}, not IMAP): check host and port")
        return TransientError(f"{where}: connection failed: {type(exc).__name__}: {exc}")

    def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):
                client.logout()
            with contextlib.suppress(Exception):
                client.shutdown()

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

    # -- pull -----------------------------------------------------------------
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
            except (KeyError, TypeError, ValueError):
                raise CursorInvalid(f"imap source {self.name}: cursor of folder {scope!r} is damaged") from None
        return out

    def forget(self, cursor: dict | None, scope: str | None = None) -> dict | None:
        """The cursor without what it holds on folder ``scope`` (None: on every folder).

        The folder is then read as new: its quarantine (see ``MAX_RESETS``)
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

    def pull(self, cursor: dict | None, view: SourceView) -> Iterator[Batch]:
        states = self._load_cursor(cursor)
        self._told = set(cursor.get("told", [])) if isinstance(cursor, dict) else set()
        with self._errors():
            client = self._connect()
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
            if problems or self._told != told:
                yield Batch(problems=problems, cursor=self._cursor(states) if cursor is not None else None)
            wanted: dict[str, list[Location]] = {}
            for loc in rereads(view):
                wanted.setdefault(loc.scope, []).append(loc)
            for server_name, scope in folders:
                yield from self._pull_folder(client, server_name, scope, states, view, wanted.get(scope, []))

    def _cursor(self, states: dict[str, dict]) -> dict:
        out: dict[str, Any] = {"version": CURSOR_VERSION, "folders": copy.deepcopy(states)}
        if self._told:
            out["told"] = sorted(self._told)
        return out

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

    def _pull_folder(self, client: Any, server_name: str, scope: str, states: dict[str, dict],
                     view: SourceView, rereading: Sequence[Location] = ()) -> Iterator[Batch]:
        try:
            info = client.select_folder(server_name, readonly=True)
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
        states[scope] = state
        if rereading:  # the store's wish first: the folder may be unchanged otherwise
            yield from self._reread(client, scope, uidvalidity, rereading)
        # same UIDNEXT and EXISTS as after the last complete pass: no mail came or went
        same_mail = prev is not None and state["uidnext"] == uidnext and state["exists"] == exists and uidnext > 0
        if same_mail and self._condstore and state["modseq"] == highest:
            return  # nothing at all changed, flags included
        known = view.known(scope)
        prefix = f"{uidvalidity}:"
        last_uid = state["last_uid"]
        if same_mail:
            all_uids = None
            new_uids: Sequence[int] = ()
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
        rule = skip_rule(view)
        done = 0
        # batches whose texts are on the way, oldest first: each round of FETCHes (BODYSTRUCTURE, a text
        # prefix, more of it) is answered while the next batch's headers are parsed, not waited for
        pending: list[_Texts] = []
        try:
            for k, chunk in enumerate(chunks):
                fetches.wait(heads[k])
                batch, mails = self._parse_new(fetches.take(chunk), scope, uidvalidity, list(chunk), rule)
                asked = self._ask_texts(fetches, mails)
                if k + 2 < len(chunks):
                    heads.append(fetches.send(uid_set(chunks[k + 2]), _FETCH_ITEMS))
                for texts in pending:
                    texts.next_round(self, fetches)
                pending.append(_Texts(batch, mails, chunk, asked))
                while pending and (not pending[0].asked or len(pending) > _TEXTS_IN_FLIGHT or k + 1 == len(chunks)):
                    texts = pending.pop(0)
                    while texts.asked:
                        texts.next_round(self, fetches)
                    batch, chunk = texts.batch, texts.uids
                    self._add_records(batch, texts.mails)
                    done += len(chunk)
                    state["last_uid"] = max(state["last_uid"], chunk[-1])
                    state["uidnext"] = state["exists"] = 0  # a pass is running
                    batch.cursor = self._cursor(states)
                    batch.done, batch.total = done, len(new_uids)
                    yield batch
        finally:
            if fetches.busy:  # stopped half-way: responses still on the wire
                self._drop()
        # -- flags, deletions ----------------------------------------------------
        final = Batch()
        if last_uid:
            final.changes = self._flag_changes(client, scope, prefix, last_uid, prev, highest, known)
        if all_uids is None or not known:
            gone = []
        else:  # a set of the UIDs, not of "uidvalidity:uid" strings: memory stays small for big folders
            current = set(all_uids)
            gone = [lid for lid in known if not _still_there(lid, prefix, current)]
        if gone:
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
                batch, mails = self._parse_new(fetches.take(chunk), scope, uidvalidity, chunk)
                asked = self._ask_texts(fetches, mails)
                while asked:
                    fetches.wait(*asked)
                    asked = self._ask_texts(fetches, mails, fetches.take(chunk))
            finally:
                if fetches.busy:
                    self._drop()
            self._add_records(batch, mails)
            for failure in batch.failures:
                log.warning("%s: %s %s could not be read again: %s", self.name, scope, failure.location.local_id,
                            failure.reason)
            batch.failures = []
            batch.rereads = [Location(scope, f"{prefix}{uid}") for uid in chunk]
            yield batch

    def _flag_changes(self, client: Any, scope: str, prefix: str, last_uid: int, prev: dict | None,
                      highest: int, known: Mapping[str, str]) -> list[FlagChange]:
        if self._condstore and prev is not None and prev["modseq"]:
            if prev["modseq"] == highest:
                return []
            resp = uid_fetch(client, f"1:{last_uid}", ["UID", "FLAGS"], f"CHANGEDSINCE {prev['modseq']}")
        else:
            resp = uid_fetch(client, f"1:{last_uid}", ["UID", "FLAGS"])
        changes = []
        for uid, data in resp.items():
            lid = f"{prefix}{uid}"
            if lid not in known or b"FLAGS" not in data:
                continue
            flags = _flags(data[b"FLAGS"])
            etag = flags_key(flags)
            if known[lid] != etag:
                changes.append(FlagChange(Location(scope, lid, etag), flags))
        return changes

    def _parse_new(self, resp: dict[int, dict], scope: str, uidvalidity: int, uids: list[int],
                   rule: SkipRule | None = None) -> tuple[Batch, list[_Mail]]:
        """The header FETCH of new mail -> (batch with failures, the mails with what to fetch next).

        A mail whose header the server could not split (no wanted field, or
        CR-only line ends, which the server reads as one long line) gets no
        record yet and the section "": the prefix of the whole message is
        fetched and read by the file parser.  A single-part mail's text part
        is known from its Content-Type (read as the file parser reads it),
        a multipart mail's from its BODYSTRUCTURE, fetched next.  Mail the
        store will skip whatever its text (``rule``) gets no text.
        """
        batch = Batch()
        mails: list[_Mail] = []
        for uid in uids:
            data = resp.get(uid)
            if data is None:  # expunged between SEARCH and FETCH
                continue
            location = Location(scope, f"{uidvalidity}:{uid}")
            header = b""
            h: dict[str, str] | None = None
            try:
                for key, value in data.items():
                    if key.startswith(b"BODY[HEADER"):
                        header = value or b""
                        break
                h = parse_header_block(header)
                flags = _flags(data.get(b"FLAGS", ()))
                location = Location(scope, location.local_id, flags_key(flags))
                size = int(data.get(b"RFC822.SIZE", 0) or 0)
                mail = _Mail(uid, location, flags, size)
                if not h or bare_cr_lines(header):
                    mail.part = Part("message/raw", "", "", False, b"", "")
                    h = None
                else:
                    mail.record = record_from_headers(h, location, flags=flags, size=size)
                    if rule is not None and rule.skip_reason(mail.record):
                        pass  # no text: the store keeps none of it
                    elif (single := single_part(h)) is None:
                        mail.structure = True
                    else:  # one part, the whole body: as the file parser sees it
                        mail.part, mail.record.has_attachments = single
                    if mail.record is not None and rule is not None and (mail.structure or mail.part) \
                            and rule.text_unneeded(mail.record):
                        # metadata only (nobody known in it): no text; the store asks for it by name
                        # once the mail is linked (crm_core.rereads)
                        mail.record.no_text = mail.textless = True
                        mail.part = None
            except MailParseError as exc:
                batch.failures.append(Failure(location, str(exc), _excerpt(h) if h else _s(header[:300])))
                continue
            except Exception as exc:  # a mail this code did not foresee: quarantine, go on
                batch.failures.append(Failure(location, f"unexpected {type(exc).__name__}: {exc}"))
                continue
            mails.append(mail)
        return batch, mails

    def _ask_texts(self, fetches: Fetches, mails: list[_Mail],
                   resp: dict[int, dict] | None = None) -> list[bytes]:
        """Take in what the last round of FETCHes brought (``resp``), send the next round; its tags.

        A round asks for the BODYSTRUCTURE of multipart mails, the first
        :func:`~connectors.snippet.first_fetch_bytes` of a text part, or the
        rest of its ``2 * prefix_bytes`` (CRLF from the server, cut after
        CRLF became LF, as :func:`~connectors.mailparse.part_snippet` does)
        where the first bytes did not settle the snippet
        (:func:`~connectors.snippet.prefix_snippet`).  Mails that ask for the
        same thing go in one FETCH.
        """
        wanted: dict[tuple[str, ...], list[int]] = {}
        for mail in mails:
            if mail.failed:
                continue
            data = resp.get(mail.uid) if resp is not None else None
            if data is None and mail.idle:
                continue
            try:
                if data is not None:
                    mail.take(data)
                item = mail.next_item()
                mail.idle = item is None
            except Exception as exc:  # a BODYSTRUCTURE or text this code did not foresee: quarantine, go on
                mail.failed = f"unexpected {type(exc).__name__}: {exc}"
                continue
            if item is not None:
                wanted.setdefault(item, []).append(mail.uid)
        return [fetches.send(uid_set(uids), list(items)) for items, uids in wanted.items()]

    def _add_records(self, batch: Batch, mails: list[_Mail]) -> None:
        """Records of the mails, with the snippets from their text-part prefixes."""
        for mail in mails:
            location = mail.location
            record = mail.record
            try:
                if mail.failed:
                    raise MailParseError(mail.failed)
                if record is None:  # the whole message's prefix, read as a file would be
                    record = parse_message(mail.raw, location, mail.flags, mail.size or None)
                elif mail.snippet:
                    record.snippet = mail.snippet
            except MailParseError as exc:
                batch.failures.append(Failure(location, str(exc), _excerpt_of(record) or _s(mail.raw[:300])))
                continue
            except Exception as exc:
                batch.failures.append(Failure(location, f"unexpected {type(exc).__name__}: {exc}",
                                              _excerpt_of(record) or _s(mail.raw[:300])))
                continue
            batch.records.append(record)

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
            info = client.select_folder(server_name, readonly=True)
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


def _lost_connection(exc: BaseException) -> bool:
    """Whether an imapclient error came from a dropped connection rather than a NO/BAD answer."""
    seen: BaseException | None = exc
    for _ in range(5):
        seen = seen.__cause__ or seen.__context__ if seen is not None else None
        if seen is None:
            return False
        if isinstance(seen, (imaplib.IMAP4.abort, OSError, EOFError)):
            return True
    return False


def probe(host: str, port: int, wait: float = 1.5) -> str:
    """What answers on ``host:port``: "imap", "imap-tls", "http", "https", "tls" or "" (nothing we know).

    Used only after a connect failed, to say why in one line.
    """
    def ask(sock: socket.socket) -> str:
        sock.settimeout(wait)
        try:
            first = sock.recv(64)
        except (socket.timeout, TimeoutError):
            first = b""
        if first.startswith(b"* "):
            return "imap"
        if not first:  # a web server waits for a request
            with contextlib.suppress(OSError):
                sock.sendall(b"HEAD / HTTP/1.0\r\nHost: " + host.encode("ascii", "replace") + b"\r\n\r\n")
                first = sock.recv(64)
        return "http" if first.startswith(b"HTTP/") else ""

    try:
        with socket.create_connection((host, port), timeout=wait) as sock:
            plain = ask(sock)
    except OSError:
        return ""
    if plain:
        return plain
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # only asks whether the port speaks TLS; nothing is sent but HEAD
    try:
        with socket.create_connection((host, port), timeout=wait) as raw, \
                ctx.wrap_socket(raw, server_hostname=host) as tls:
            over_tls = ask(tls)
    except (OSError, ValueError):
        return ""
    return {"imap": "imap-tls", "http": "https"}.get(over_tls, "tls")


def _excerpt(h: Mapping[str, str]) -> str:
    return "; ".join(f"{k}: {v[:80]}" for k, v in list(h.items())[:4])
