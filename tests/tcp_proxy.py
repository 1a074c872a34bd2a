"""A small threaded TCP proxy on loopback for fault-injection tests.

::

    with TcpProxy(("127.0.0.1", server.port)) as proxy:
        proxy.cut_after(50_000)          # every new connection dies after 50 kB
        connect_to(proxy.port)
        proxy.cut_random(seed=3, low=2_000, high=400_000)
        proxy.cut_all()                  # drop whatever is open right now
        proxy.passthrough()

Bytes are counted in both directions together.  A cut closes both sockets
with SO_LINGER 0 so the client sees a reset, the way a dropped NAT entry
or a crashed middlebox looks.
"""

from __future__ import annotations

import random
import select
import socket
import struct
import threading
from typing import Callable


class TcpProxy:
    def __init__(self, target: tuple[str, int], host: str = "127.0.0.1"):
        self.target = target
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind((host, 0))
        self._listener.listen(64)
        self._listener.settimeout(0.5)  # so close() ends the accept loop
        self.host, self.port = self._listener.getsockname()
        self._lock = threading.Lock()
        self._conns: set[tuple[socket.socket, socket.socket]] = set()
        self._limit_fn: Callable[[], int | None] = lambda: None
        self._cut_reset = True
        self._stop = threading.Event()
        self.connections = 0  # accepted so far
        self.cuts = 0  # connections cut by a limit or cut_all()
        self._thread = threading.Thread(target=self._accept_loop, name="tcp-proxy", daemon=True)
        self._thread.start()

    # -- fault control ------------------------------------------------------
    def passthrough(self) -> None:
        """New connections are forwarded untouched."""
        self._limit_fn = lambda: None

    def cut_after(self, nbytes: int, reset: bool = True) -> None:
        """Every new connection is cut after ``nbytes`` bytes (``reset=False``: closed cleanly, FIN not RST)."""
        self._limit_fn = lambda: nbytes
        self._cut_reset = reset

    def cut_first_after(self, nbytes: int, reset: bool = True) -> None:
        """Only the next new connection is cut after ``nbytes`` bytes; later ones pass."""
        limits = iter([nbytes])
        self._limit_fn = lambda: next(limits, None)
        self._cut_reset = reset

    def cut_random(self, seed: int, low: int = 500, high: int = 200_000) -> None:
        """Every new connection is cut at a random byte count in [low, high]."""
        rng = random.Random(seed)
        self._limit_fn = lambda: rng.randint(low, high)

    def cut_all(self) -> None:
        """Cut every open connection now."""
        with self._lock:
            conns = list(self._conns)
        for pair in conns:
            self._close(pair, reset=True)
            self.cuts += 1

    # -- machinery ----------------------------------------------------------
    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            client.settimeout(None)
            try:
                upstream = socket.create_connection(self.target, timeout=10)
                upstream.settimeout(None)
            except OSError:
                self._reset(client)
                continue
            pair = (client, upstream)
            with self._lock:
                self._conns.add(pair)
                self.connections += 1
            limit = self._limit_fn()
            threading.Thread(target=self._pump, args=(pair, limit), daemon=True).start()

    def _pump(self, pair: tuple[socket.socket, socket.socket], limit: int | None) -> None:
        client, upstream = pair
        other = {client: upstream, upstream: client}
        passed = 0
        try:
            while True:
                readable, _, _ = select.select([client, upstream], [], [], 0.5)
                if self._stop.is_set():
                    break
                with self._lock:
                    if pair not in self._conns:
                        return
                for sock in readable:
                    data = sock.recv(65536)
                    if not data:
                        raise EOFError
                    if limit is not None and passed + len(data) >= limit:
                        keep = limit - passed
                        if keep > 0:
                            other[sock].sendall(data[:keep])
                        self.cuts += 1
                        self._close(pair, reset=self._cut_reset)
                        return
                    other[sock].sendall(data)
                    passed += len(data)
        except (OSError, EOFError, ValueError):
            pass
        self._close(pair, reset=False)

    @staticmethod
    def _reset(sock: socket.socket) -> None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        try:
            sock.close()
        except OSError:
            pass

    def _close(self, pair: tuple[socket.socket, socket.socket], reset: bool) -> None:
        with self._lock:
            self._conns.discard(pair)
        for sock in pair:
            if reset:
                self._reset(sock)
            else:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                try:
                    sock.close()
                except OSError:
                    pass

    def close(self) -> None:
        self._stop.set()
        try:
            self._listener.close()
        except OSError:
            pass
        self.cut_all()

    def __enter__(self) -> "TcpProxy":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
