"""A connector's pull in a forked child, so reading and storing overlap.

Reading a source is CPU work (parsing headers, iCalendar, vCards), and so
is storing what was read (SQLite, linking, full-text index).  In one
CPython process the two take turns.  Here the connector runs in a child
process made with ``fork`` and sends each :class:`~crm_core.records.Batch`
over a socketpair while the parent stores the batch before it; on two
cores a first sync of 20,000 IMAP mails takes about a quarter less time
(bench/RESULTS.md).

Nothing about the engine's guarantees changes:

* The parent stores batches in the order the connector yielded them, each
  with its cursor in one transaction, exactly as in-process.
* The child answers :class:`~connectors.base.SourceView` questions by
  asking the parent, which answers after storing every batch sent before
  the question, so a connector sees what it would see in-process.
* Exceptions come back as themselves (``CursorInvalid``, ``AuthError``...)
  so retries and error lines are the same; a bug's traceback text from the
  child rides along as a note.
* The child never touches the store: it runs a fresh connector built from
  the config, and leaves with ``os._exit`` so no inherited object (SQLite
  connection, lock, buffered output) is closed or flushed twice.  On Linux
  it dies with its parent (``PR_SET_PDEATHSIG``), so a killed ``crm sync``
  leaves no reader behind holding the store lock.
* At most a few batches wait in the socket (its buffer, :data:`_PIPE_BYTES`):
  the child blocks when the parent has not caught up, so memory stays flat.
  With the default buffer (about 200 KB, less than one batch) the child
  waited for the parent after every batch; a buffer of a few batches lets
  each side run ahead of the other's slow moments (a first sync of 22,000
  IMAP mails: the reader's waits 0.3 s -> 0.03 s, about 7 % of the time).

It is used on Linux when the process runs no other thread (fork copies
only the calling thread), for connectors that do not say otherwise
(``Connector.pull_in_reader``; the DAV ones mostly wait for their server),
and can be switched off with ``CRM_PARALLEL_PULL=0``.
"""

from __future__ import annotations

import logging
import os
import pickle
import select
import signal
import socket
import struct
import sys
import threading
import traceback
from typing import Any, Callable, Generator, Iterator, Mapping

from crm_bridge.connectors.base import (
    Connector,
    ConnectorError,
    SkipRule,
    SourceView,
    TransientError,
    rereads,
    skip_rule,
)
from crm_bridge.crm_core.records import Batch, Location, MailRecord
from crm_bridge.crm_core.storebase import mail_key

log = logging.getLogger("crm.sync")

_HEADER = struct.Struct("!Q")
#: bytes that may wait between the processes (the kernel caps it at net.core.wmem_max/rmem_max)
_PIPE_BYTES = 4 << 20


def available() -> bool:
    """Whether a pull can run in a child here and now."""
    if os.environ.get("CRM_PARALLEL_PULL", "1").strip().lower() in ("0", "false", "no", "off"):
        return False
    # Linux only: on macOS a forked child that touches system frameworks
    # (proxy settings, keychain) can crash, which is why multiprocessing
    # stopped forking there
    return sys.platform.startswith("linux") and threading.active_count() == 1


class ReaderPull:
    """The batches of a pull run in a reader process (an iterator; :func:`pull`), and :meth:`waiting`."""

    def __init__(self, make: Callable[[], Connector], cursor: dict | None, view: SourceView,
                 meanwhile: Callable[[], None] | None):
        self._sock: socket.socket | None = None  # this end of the socketpair, once the child runs
        self._batches = _pull(make, cursor, view, meanwhile, self)

    def __iter__(self) -> "ReaderPull":
        return self

    def __next__(self) -> Batch:
        return next(self._batches)

    def close(self) -> None:
        self._batches.close()

    def waiting(self) -> bool:
        """Whether the reader has sent more than this process has taken: the store is the slower side,
        so the engine holds its commit (sync/engine.py)."""
        sock = self._sock
        if sock is None or sock.fileno() < 0:
            return False
        try:
            ready, _, _ = select.select([sock], [], [], 0)
        except (OSError, ValueError):
            return False
        return bool(ready)


def pull(make: Callable[[], Connector], cursor: dict | None, view: SourceView,
         meanwhile: Callable[[], None] | None = None) -> ReaderPull:
    """``make().pull(cursor, view)``, run in a child process; an iterator of its batches here.

    ``meanwhile`` runs here right after the child started, while it connects
    and reads (work of this process that would otherwise wait for it).
    """
    return ReaderPull(make, cursor, view, meanwhile)


def _pull(make: Callable[[], Connector], cursor: dict | None, view: SourceView,
          meanwhile: Callable[[], None] | None, holder: ReaderPull) -> Generator[Batch, None, None]:
    ours, theirs = socket.socketpair()
    holder._sock = ours
    for sock, option in ((theirs, socket.SO_SNDBUF), (ours, socket.SO_RCVBUF)):
        try:
            sock.setsockopt(socket.SOL_SOCKET, option, _PIPE_BYTES)
        except OSError:  # the default buffer works, only with more waiting
            pass
    sys.stdout.flush()
    sys.stderr.flush()
    parent = os.getpid()
    pid = os.fork()
    if pid == 0:  # the child
        code = 0
        try:
            ours.close()
            _child(make, cursor, theirs, parent)
        except BaseException:
            code = 1
        finally:
            os._exit(code)
    theirs.close()
    finished = False
    try:
        if meanwhile is not None:
            meanwhile()
        while True:
            kind, payload = _talk(ours)
            if kind == "batch":
                yield payload
            elif kind == "known":
                _talk(ours, ("answer", dict(view.known(payload))))
            elif kind == "scopes":
                _talk(ours, ("answer", list(view.scopes())))
            elif kind == "skip_rule":
                _talk(ours, ("answer", skip_rule(view)))
            elif kind == "rereads":
                _talk(ours, ("answer", rereads(view)))
            elif kind == "error":
                finished = True
                raise payload
            elif kind == "end":
                finished = True
                return
            else:
                raise TransientError(f"the reader process sent {kind!r}")
    finally:
        ours.close()
        if not finished:  # the engine stopped early, or the child died: make sure it is gone
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        _reap(pid)


def _talk(sock: socket.socket, message: tuple[str, Any] | None = None) -> tuple[str, Any]:
    """Send ``message``, or receive one; a lost reader process is a transient error."""
    try:
        if message is not None:
            _send(sock, message)
            return message
        return _recv(sock)
    except (EOFError, OSError) as exc:
        raise TransientError(f"the reader process ended unexpectedly ({type(exc).__name__}: {exc})") from None


def _reap(pid: int) -> None:
    try:
        _, status = os.waitpid(pid, 0)
    except ChildProcessError:
        return
    if os.WIFSIGNALED(status) and os.WTERMSIG(status) != signal.SIGKILL:
        log.warning("the reader process died of signal %d", os.WTERMSIG(status))


# -- child ----------------------------------------------------------------
class _RemoteView:
    """A SourceView whose answers come from the parent's store."""

    def __init__(self, sock: socket.socket):
        self.sock = sock

    def known(self, scope: str) -> Mapping[str, str]:
        _send(self.sock, ("known", scope))
        return self._answer()

    def scopes(self) -> list[str]:
        _send(self.sock, ("scopes", None))
        return self._answer()

    def skip_rule(self) -> SkipRule | None:
        _send(self.sock, ("skip_rule", None))
        return self._answer()

    def rereads(self) -> list[Location]:
        _send(self.sock, ("rereads", None))
        return self._answer()

    def _answer(self) -> Any:
        kind, payload = _recv(self.sock)
        if kind != "answer":
            raise TransientError(f"the sync process sent {kind!r} instead of an answer")
        return payload


def _child(make: Callable[[], Connector], cursor: dict | None, sock: socket.socket, parent: int) -> None:
    _die_with_parent(parent)
    # Ctrl-C reaches the whole process group: the parent stops the pull (and kills this child)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    connector = None
    try:
        connector = make()
        for batch in connector.pull(cursor, _RemoteView(sock)):
            _prepare(batch)
            _send(sock, ("batch", batch))
        _send(sock, ("end", None))
    except (BrokenPipeError, ConnectionResetError):
        return  # the parent stopped listening: nothing to tell it
    except BaseException as exc:
        _send(sock, ("error", _portable(exc)))
    finally:
        if connector is not None:
            try:
                connector.close()
            except Exception:  # closing is best effort
                pass


def _prepare(batch: Batch) -> None:
    """Work out here what the store would work out from each record alone (a mail's dedup key),
    so the store process, the busier one in a first sync, need not."""
    for rec in batch.records:
        if isinstance(rec, MailRecord):
            rec.key = mail_key(rec)


def _portable(exc: BaseException) -> BaseException:
    """``exc`` as it can cross to the parent: itself when it pickles, else a ConnectorError saying what it was."""
    if not isinstance(exc, ConnectorError):
        exc.add_note("in the reader process:\n" + "".join(traceback.format_exception(exc)).rstrip())
    try:
        pickle.loads(pickle.dumps(exc, protocol=pickle.HIGHEST_PROTOCOL))
        return exc
    except Exception:
        return ConnectorError(f"{type(exc).__name__}: {exc}")


def _die_with_parent(parent: int) -> None:
    """SIGKILL this process when the parent dies (Linux's PR_SET_PDEATHSIG)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the parent died before the line above
        os._exit(1)


# -- framing ----------------------------------------------------------------
def _send(sock: socket.socket, message: tuple[str, Any]) -> None:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    if len(data) < 65536:
        sock.sendall(_HEADER.pack(len(data)) + data)
    else:  # no copy of a big batch just to put eight bytes in front
        sock.sendall(_HEADER.pack(len(data)))
        sock.sendall(data)


def _recv(sock: socket.socket) -> tuple[str, Any]:
    (size,) = _HEADER.unpack(_exact(sock, _HEADER.size))
    message: tuple[str, Any] = pickle.loads(_exact(sock, size))
    return message


def _exact(sock: socket.socket, size: int) -> bytearray:
    buf = bytearray(size)
    view = memoryview(buf)
    got = 0
    while got < size:
        n = sock.recv_into(view[got:], size - got)
        if n == 0:
            raise EOFError("the other process closed the connection")
        got += n
    return buf
