"""The one interface every connector implements.

A connector reads one configured *source* (a mailbox, a calendar server, a
folder of files) and yields :class:`~crm_core.records.Batch` objects.  The
sync engine stores each batch together with the batch's cursor in one
transaction; the connector never touches the store.

Exceptions, from the most general::

    ConnectorError            anything a connector raises on purpose
    ├── ConfigError           the source's options are wrong (a user error)
    ├── AuthError             the server refused the credentials
    ├── SourceUnavailable     the server cannot be reached / went away
    │   └── TransientError    worth retrying later (timeout, 5xx, reset)
    ├── CursorInvalid         the stored cursor means nothing any more
    └── PreconditionFailed    a conditional write lost a race (412)

Connectors are looked up by the ``type`` in the config through
:data:`REGISTRY`, imported lazily: a type the config does not use costs
nothing at start-up.
"""

from __future__ import annotations

import importlib
import os
import queue
import shlex
import threading
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, Callable, Generic, Iterator, Mapping, Protocol, TypeVar

from crm_bridge.crm_core.records import Batch, CardPush, Location, MailRecord, PushResult, TaskPush

if TYPE_CHECKING:  # imported when a rule is used: a connector alone starts without them
    from crm_bridge.crm_core.linking import LinkIndex, Linker
    from crm_bridge.crm_core.settings import LinkingSettings, SourcePolicy


class ConnectorError(Exception):
    """Base of every error a connector raises on purpose."""


class ConfigError(ConnectorError):
    """The source's configuration is wrong; the message names the key."""


class AuthError(ConnectorError):
    """The server refused the credentials."""


class SourceUnavailable(ConnectorError):
    """The server could not be reached, or a scope could not be read."""


class TransientError(SourceUnavailable):
    """A timeout, a dropped connection, a 5xx: retrying later may work."""


class CursorInvalid(ConnectorError):
    """The stored cursor is no longer valid; a full comparison is needed."""


class PreconditionFailed(ConnectorError):
    """A conditional write failed because the item changed on the server."""


class SourceView(Protocol):
    """Read-only knowledge the engine shares with a connector.

    ``known(scope)`` maps every local id the store has seen (and not seen
    disappear) under ``scope`` to its etag.  A connector uses it to find
    deletions and changes when an incremental cursor is not available.
    """

    def known(self, scope: str) -> Mapping[str, str]: ...

    def scopes(self) -> list[str]: ...

    # A view may also have ``skip_rule() -> SkipRule | None`` (see :func:`skip_rule`) and
    # ``rereads() -> list[Location]`` (see :func:`rereads`).


class SkipRule:
    """Which mail the store leaves out whatever its text says, known from its header.

    :meth:`crm_core.linking.Linker.skip_reason` with the source's policy: a
    private folder or keyword, a blocked sender, before ``since``, bulk or
    internal-only mail.  The store keeps no text of such mail, so a
    connector that reads the header first fetches no text for it.

    With the store's link ``index`` (its contacts and customer domains) it
    also tells mail the store keeps as metadata only because nobody in it
    is known (:meth:`text_unneeded`): no text is fetched for that either;
    the store asks for it by name once the mail is linked
    (:mod:`crm_core.rereads`).  Picklable: it crosses to the reader process
    once per pull (the index with it: a few hundred kB for thousands of
    contacts).
    """

    def __init__(self, settings: LinkingSettings, policy: SourcePolicy, index: LinkIndex | None = None):
        self.settings = settings
        self.policy = policy
        self.index = index
        self._linker: Linker | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {"settings": self.settings, "policy": self.policy, "index": self.index}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["settings"], state["policy"], state.get("index"))  # type: ignore[misc]

    def _rules(self) -> Linker:
        if self._linker is None:
            from crm_bridge.crm_core.linking import LinkIndex, Linker

            self._linker = Linker(self.settings, self.index if self.index is not None else LinkIndex())
        return self._linker

    def skip_reason(self, rec: MailRecord) -> str:
        """Why the store will not log ``rec`` (read from its header, without text), or ""."""
        return self._rules().skip_reason(rec, rec.location.scope, rec.flags, self.policy)

    def text_unneeded(self, rec: MailRecord) -> bool:
        """Whether the store will keep ``rec`` (not skipped) as metadata only, known from its header:
        unmatched mail is kept so (``unmatched = "metadata"``) or dropped, nobody in it is a known
        contact or at a customer's domain, it is not in the log folder.  A mail without Message-ID
        always gets its text: the store finds it again by the text's hash alone.  Where the store
        links it after all (a contact made since the index was taken) it asks for the text by name.
        """
        if self.index is None or not rec.message_id or self.settings.unmatched not in ("metadata", "drop"):
            return False
        policy = self.policy
        if policy.visibility == "metadata" or policy.logged_anyway(rec.location.scope, rec.flags):
            return False
        # what Linker.match links, without building its Match: a known contact, or a customer's domain
        linker = self._rules()
        contacts = linker.index.contact_by_email
        people = [rec.sender, *rec.to, *rec.cc, *rec.bcc] if rec.sender is not None else [*rec.to, *rec.cc, *rec.bcc]
        for addr in linker.external(people, policy):
            if (addr.email in contacts or linker.customer_for_domain(addr.domain) is not None) \
                    and not linker.is_blocked(addr.email):
                return False
        return True


def skip_rule(view: SourceView) -> SkipRule | None:
    """The view's :class:`SkipRule`; None from a view without one (every mail then gets its text)."""
    ask = getattr(view, "skip_rule", None)
    return ask() if ask is not None else None


def rereads(view: SourceView) -> list[Location]:
    """Locations of mail the store holds without its text and now wants it (:mod:`crm_core.rereads`);
    a connector that can read single items answers them in ``Batch.rereads``.  [] from a view without."""
    ask = getattr(view, "rereads", None)
    return list(ask()) if ask is not None else []


class Connector(ABC):
    """A configured source.

    ``name`` is the source's name in the config, ``options`` its table.
    Subclasses validate ``options`` in ``__init__`` and raise
    :class:`ConfigError` naming the key; they do no network I/O there.
    """

    #: the config ``type`` this class serves
    type: str = ""
    #: capabilities: "tasks" (push_tasks) and/or "cards" (push_cards)
    can_push: frozenset[str] = frozenset()
    #: sources with a lower number sync first; address books (10) go before
    #: mail and calendars (50) so that a first run links by their contacts
    priority: int = 50
    #: the source options this class reads, besides ``type``, ``enabled`` and
    #: the keys every source has (crm_core.settings.SourcePolicy.KEYS); the
    #: config check (sync/config.py) refuses any other key, and reading an
    #: undeclared key is a programming error (see :class:`Options`)
    option_keys: frozenset[str] = frozenset()
    #: push capability -> the option that names where pushed items go
    #: (e.g. {"tasks": "tasks_calendar"}); a source named under ``[push]``
    #: needs that option
    push_options: Mapping[str, str] = {}
    #: whether ``crm sync`` may run :meth:`pull` in a reader process
    #: (sync/worker.py) so that parsing overlaps with storing; False for a
    #: connector that mostly waits for its server and overlaps its own work
    pull_in_reader: bool = True

    def __init__(self, name: str, options: Mapping[str, Any]):
        self.name = name
        self.options = Options(options, self.accepted_keys(), type(self).__name__)

    @classmethod
    def accepted_keys(cls) -> frozenset[str]:
        """Every key a source of this class may have in the config."""
        from crm_bridge.crm_core.settings import SourcePolicy

        return COMMON_KEYS | SourcePolicy.KEYS | cls.option_keys

    # -- typed options, each a ConfigError line naming the key when wrong
    def _bool(self, key: str, default: bool) -> bool:
        value = self.options.get(key, default)
        if not isinstance(value, bool):
            raise ConfigError(f"sources.{self.name}.{key} must be true or false")
        return value

    def _int(self, key: str, default: int, low: int, high: int) -> int:
        value = self.options.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ConfigError(f"sources.{self.name}.{key} must be a whole number from {low} to {high}")
        return value

    def _str(self, key: str, default: str) -> str:
        value = self.options.get(key, default)
        if not isinstance(value, str):
            raise ConfigError(f"sources.{self.name}.{key} must be a string")
        return value.strip()

    def _folder_names(self, key: str, default: list[str]) -> list[str]:
        """A folder name or a list of them, each without surrounding blanks and slashes."""
        folders = self.options.get(key, default)
        if isinstance(folders, str):
            folders = [folders]
        if not isinstance(folders, list) or not all(isinstance(f, str) and f.strip() for f in folders):
            raise ConfigError(f"sources.{self.name}.{key} must be a list of folder names")
        return [f.strip().strip("/") for f in folders]

    def _optional_name(self, key: str, what: str) -> str | None:
        """A non-empty name, or None where the key is not set; ``what`` says what it must be."""
        value = self.options.get(key)
        if value is not None and (not isinstance(value, str) or not value.strip()):
            raise ConfigError(f"sources.{self.name}.{key} must be {what}")
        return value.strip() if isinstance(value, str) else None

    @abstractmethod
    def pull(self, cursor: dict | None, view: SourceView) -> Iterator[Batch]:
        """Yield batches of what changed since ``cursor`` (None: everything).

        Each batch carries the cursor that is valid once the batch is
        stored.  Raise :class:`CursorInvalid` only before yielding anything;
        the engine then calls ``pull(None, view)``.
        """

    def forget(self, cursor: dict | None, scope: str | None = None) -> dict | None:
        """``cursor`` without what it knows of ``scope`` (``crm sources reset``); None: start over.

        The default forgets everything; a connector with per-scope cursors
        may forget one scope and raise :class:`ConfigError` for an unknown one.
        """
        return None

    def push_tasks(self, tasks: list[TaskPush], view: SourceView) -> list[PushResult]:
        raise NotImplementedError(f"{self.type} sources cannot store tasks")

    def push_cards(self, cards: list[CardPush], view: SourceView) -> list[PushResult]:
        raise NotImplementedError(f"{self.type} sources cannot store contacts")

    def watch(self, cursor: dict | None, view: SourceView, timeout: float) -> bool:
        """Block until the source reports a change, ``timeout`` passes or
        :meth:`wake` is called (from another thread).

        Returns True when something may have changed.  The default polls.
        """
        self._wake_event().wait(timeout)
        return True

    def wake(self) -> None:
        """End a :meth:`watch` that another thread is blocked in."""
        self._wake_event().set()

    def _wake_event(self):
        import threading

        event = self.__dict__.get("_wakeup")
        if event is None:
            event = self.__dict__["_wakeup"] = threading.Event()
        return event

    def close(self) -> None:
        """Release connections; called once after the run."""


#: keys of every source table, read by the engine
COMMON_KEYS = frozenset({"type", "enabled"})
#: keys that would hold a secret in the file: refused with a hint, so they may be looked at
REFUSED_SECRET_KEYS = frozenset({"password", "token", "secret", "client_secret"})


class UndeclaredOption(AssertionError):
    """A connector read an option its class does not declare in ``option_keys``."""


class Options(dict):
    """A source's options that only lets a connector read the keys it declares.

    The config check accepts exactly the declared keys, so a key read here
    but not declared could never be set: that is a bug, raised at once.
    """

    def __init__(self, data: Mapping[str, Any], allowed: frozenset[str], owner: str):
        super().__init__(data)
        self._allowed = allowed | REFUSED_SECRET_KEYS
        self._owner = owner

    def _check(self, key: object) -> None:
        if key not in self._allowed:
            raise UndeclaredOption(f"{self._owner} reads option {key!r}; add it to {self._owner}.option_keys")

    def __getitem__(self, key: str) -> Any:
        self._check(key)
        return super().__getitem__(key)

    def get(self, key: str, default: Any = None) -> Any:
        self._check(key)
        return super().get(key, default)

    def __contains__(self, key: object) -> bool:
        self._check(key)
        return super().__contains__(key)

    def __reduce__(self):
        return (Options, (dict(self), self._allowed, self._owner))


#: config ``type`` -> "module:Class", imported only when used
REGISTRY: dict[str, str] = {
    "maildir": "crm_bridge.connectors.files:MaildirConnector",
    "mbox": "crm_bridge.connectors.files:MboxConnector",
    "eml": "crm_bridge.connectors.files:EmlConnector",
    "ics": "crm_bridge.connectors.files:IcsConnector",
    "vcf": "crm_bridge.connectors.files:VcfConnector",
    "imap": "crm_bridge.connectors.imap:ImapConnector",
    "caldav": "crm_bridge.connectors.dav:CalDavConnector",
    "carddav": "crm_bridge.connectors.dav:CardDavConnector",
    "exchange": "crm_bridge.connectors.exchange:ExchangeConnector",
    "m365": "crm_bridge.connectors.m365:M365Connector",
}


def connector_class(type_name: str) -> type[Connector]:
    try:
        target = REGISTRY[type_name]
    except KeyError:
        known = ", ".join(sorted(REGISTRY))
        raise ConfigError(f"unknown source type {type_name!r} (known: {known})") from None
    module_name, _, cls_name = target.partition(":")
    module = importlib.import_module(module_name)
    return getattr(module, cls_name)


def make_connector(name: str, options: Mapping[str, Any]) -> Connector:
    type_name = options.get("type")
    if not isinstance(type_name, str):
        raise ConfigError(f"sources.{name}.type is missing")
    return connector_class(type_name)(name, options)


def secret(name: str, options: Mapping[str, Any], key: str = "password") -> str | None:
    """Resolve a credential from ``<key>_env`` or ``<key>_command``.

    A literal ``<key>`` in the config is refused: secrets do not belong in
    a file that gets copied around.  The value is never logged.
    """
    if key in options:
        raise ConfigError(
            f"sources.{name}.{key}: put the secret in an environment variable "
            f"({key}_env) or a command ({key}_command), not in the config file"
        )
    env = options.get(f"{key}_env")
    if env is not None:
        if not isinstance(env, str) or not env:
            raise ConfigError(f"sources.{name}.{key}_env must name an environment variable")
        value = os.environ.get(env)
        if value is None:
            raise ConfigError(f"sources.{name}.{key}_env: environment variable {env} is not set")
        return value
    command = options.get(f"{key}_command")
    if command is not None:
        argv = shlex.split(command) if isinstance(command, str) else list(command)
        if not argv:
            raise ConfigError(f"sources.{name}.{key}_command is empty")
        import subprocess  # here: most configs run no command, and every command starts with the config

        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise ConfigError(f"sources.{name}.{key}_command could not run: {type(exc).__name__}") from None
        if done.returncode != 0:
            raise ConfigError(f"sources.{name}.{key}_command exited with status {done.returncode}")
        value = done.stdout.splitlines()[0] if done.stdout else ""
        if not value:
            raise ConfigError(f"sources.{name}.{key}_command printed nothing")
        return value
    return None


def is_loopback(host: str) -> bool:
    """Whether ``host`` is this machine (localhost or a loopback address): the only host a password may go to
    in plain text, and only where the source says ``allow_plaintext = true`` (IMAP, DAV, Exchange)."""
    import ipaddress

    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


_Key = TypeVar("_Key")
_Page = TypeVar("_Page")


class PageChain(Generic[_Key, _Page]):
    """The pages of a folder, asked for in a thread up to ``depth`` pages ahead of the caller.

    For the connectors whose next page is named by the page before (a link, a
    sync state): the thread asks ``fetch(key)`` for a page, hands it over and
    asks at once for the page ``next_key(page)`` names, while the caller
    reads and stores the pages before, so the service's time overlaps the
    store's.  One request at a time; the chain ends where ``next_key`` gives
    None (the last page, an answer that names no next one).  The cursor still
    moves page by page with what was stored: pages asked for beyond a cut are
    dropped, and a cut run asks for them again.  An error of ``fetch`` is
    raised by :meth:`get` in its page's place, where the caller would have
    had it, and ends the thread.  :meth:`close` waits for a request under way
    (its timeout bounds it; its answer is unused), so that nothing else uses
    the connection while it is still answered.
    """

    def __init__(self, fetch: Callable[[_Key], _Page], first: _Key, next_key: Callable[[_Page], _Key | None],
                 depth: int = 3, name: str = "pages") -> None:
        self._fetch, self._next_key = fetch, next_key
        self._answers: queue.SimpleQueue[tuple[bool, Any] | None] = queue.SimpleQueue()
        self._room = threading.Semaphore(depth)
        self._stop = threading.Event()
        self._ended = False
        self._thread = threading.Thread(target=self._run, args=(first,), daemon=True, name=name)
        self._thread.start()

    def _run(self, key: _Key | None) -> None:
        try:
            while key is not None:
                self._room.acquire()
                if self._stop.is_set():
                    return
                try:
                    page = self._fetch(key)
                except BaseException as exc:  # noqa: BLE001 - handed to the caller in get()
                    self._answers.put((False, exc))
                    return
                self._answers.put((True, page))
                key = self._next_key(page)
        finally:
            self._answers.put(None)

    def get(self) -> _Page | None:
        """The next page, waiting for it; None once the chain has ended."""
        if self._ended:
            return None
        got = self._answers.get()
        self._room.release()
        if got is None:
            self._ended = True
            return None
        ok, value = got
        if not ok:
            raise value
        return value

    def close(self) -> None:
        self._stop.set()
        self._room.release()  # (a thread waiting for room wakes, sees the stop and ends)
        self._thread.join()


