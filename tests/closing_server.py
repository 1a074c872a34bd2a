"""A threading HTTP server for the tests that ends its connections when it is closed.

``http.server.ThreadingHTTPServer`` leaves a thread per kept-alive
connection blocked in ``recv`` after ``shutdown()``/``server_close()``, until
the client hangs up.  Threads left behind by one test change later ones:
``crm sync`` forks its reader process only where no other thread runs
(sync/worker.py ``available``).  This server shuts its open connections
down on close, which ends their threads, and waits for them.
"""

from __future__ import annotations

import socket
import threading
from http.server import ThreadingHTTPServer
from typing import Any


class ClosingHTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._open_lock:
            self._open.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._open_lock:
            self._open.discard(request)
        super().shutdown_request(request)

    def server_close(self) -> None:
        super().server_close()
        with self._open_lock:
            still = list(self._open)
        for sock in still:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for thread in [t for t in threading.enumerate() if t.name.endswith("(process_request_thread)")]:
            if getattr(thread, "_args", (None,))[0] in still:
                thread.join(5)
