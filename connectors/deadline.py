"""One deadline for a whole HTTP answer read by :mod:`http.client` (Graph, DAV, the EWS probe).

A socket timeout bounds each read; a server that sends a byte every few
seconds passes every one of them and holds a run for ever.  :func:`arm`
gives the next answer on a connection a deadline: the status line, the
headers and the body are each read within what is left of it, and past it
the read raises ``socket.timeout`` (``TimeoutError``), the error of a read
timeout, so each client treats it as it treats a slow server (Graph: a GET
is not sent again, a POST never; DAV: :class:`~connectors.base.TransientError`;
the EWS probe: hands over).
"""

from __future__ import annotations

import functools
import http.client
import io
import socket
import time
from typing import Any


def arm(conn: http.client.HTTPConnection, timeout: float, limit: float) -> None:
    """The next answer on ``conn`` (sent from now on) must be complete within ``limit`` seconds, each read
    within ``timeout``; a kept-alive socket gets ``timeout`` back (an earlier deadline may have cut it)."""
    if conn.sock is not None:
        conn.sock.settimeout(timeout)
    conn.response_class = functools.partial(  # type: ignore[assignment]  # (http.client calls it as a class)
        _TimedResponse, deadline=time.monotonic() + limit, timeout=timeout, limit=limit)


def message(limit: float) -> str:
    return f"the answer took longer than {limit:g} s"


class _Deadline:
    """The socket of one answer as :class:`http.client.HTTPResponse` reads it: each read waits at most for the
    read timeout and for what is left until the deadline; past it, ``socket.timeout`` (as a read timeout).

    Only ``makefile`` / ``recv_into`` are used by the response (through :class:`socket.SocketIO`); the file
    counts as one of the socket's own (``_io_refs``), so a connection closed while its answer is still read
    (``Connection: close``) closes the socket only once the answer is done, as with the socket's ``makefile``.
    """

    def __init__(self, sock: socket.socket, deadline: float, timeout: float, limit: float) -> None:
        self.sock, self.deadline, self.timeout, self.limit = sock, deadline, timeout, limit

    def makefile(self, mode: str = "rb", *_args: Any, **_kwargs: Any) -> Any:
        self.sock._io_refs += 1  # type: ignore[attr-defined]
        return io.BufferedReader(socket.SocketIO(self, "rb"))  # type: ignore[arg-type]

    def _decref_socketios(self) -> None:
        self.sock._decref_socketios()  # type: ignore[attr-defined]

    def fileno(self) -> int:
        return self.sock.fileno()

    def recv_into(self, buffer: Any) -> int:  # (all socket.SocketIO asks)
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise socket.timeout(message(self.limit))
        wait = min(self.timeout, left)
        if self.sock.gettimeout() != wait:
            self.sock.settimeout(wait)
        try:
            return self.sock.recv_into(buffer)
        except socket.timeout:
            if time.monotonic() >= self.deadline:
                raise socket.timeout(message(self.limit)) from None
            raise


class _TimedResponse(http.client.HTTPResponse):
    def __init__(self, sock: socket.socket, *args: Any, deadline: float, timeout: float, limit: float,
                 **kwargs: Any) -> None:
        super().__init__(_Deadline(sock, deadline, timeout, limit), *args, **kwargs)  # type: ignore[arg-type]
