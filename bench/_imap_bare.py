"""Bare IMAP yardsticks for bench_imap.py: crm's own request replayed, and a header-only fetch.

``record_session`` runs the connector's pull (a first sync, nothing known;
with the realistic store's view for bench_imap's yardstick) through a loopback proxy that keeps every byte the client sends.
``replay`` then sends those same bytes, byte for byte, over a plain socket
(all at once, so the server never waits for the client) and reads every
response until the server closes the connection after LOGOUT: the cost of
exactly the request ``crm sync`` makes, without any of our parsing,
linking or storing.
"""

from __future__ import annotations

import imaplib
import os
import re
import socket
import threading
import time


class Recorder:
    """A loopback TCP proxy that records what clients send (one connection at a time is enough here)."""

    def __init__(self, port: int):
        self.target = ("127.0.0.1", port)
        self.sent = bytearray()
        self.received = 0
        self._listener = socket.socket()
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(4)
        self.port = self._listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.target)
            threading.Thread(target=self._pump, args=(client, server, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, False), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, record: bool) -> None:
        try:
            while True:
                data = src.recv(262144)
                if not data:
                    break
                if record:
                    self.sent += data
                else:
                    self.received += len(data)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self._listener.close()


class NullView:
    def known(self, scope: str) -> dict:
        return {}

    def scopes(self) -> list:
        return []


def record_session(port: int, password: str, folders: list[str], view=None) -> tuple[bytes, int]:
    """(the bytes the connector sends in a first sync of ``folders``, the bytes it received).

    ``view``: the store's view the connector asks (which mail gets no text: skipped, or metadata only
    because nobody in it is known); None: a view that knows nothing, so every mail's text is fetched.
    """
    from crm_bridge.connectors.imap import ImapConnector

    os.environ["BENCH_IMAP_PW"] = password
    rec = Recorder(port)
    conn = ImapConnector("bench", {"type": "imap", "host": "127.0.0.1", "port": rec.port, "tls": "none",
                                   "allow_plaintext": True, "username": "alice", "password_env": "BENCH_IMAP_PW",
                                   "folders": folders})
    for _batch in conn.pull(None, view if view is not None else NullView()):
        pass
    conn.close()
    time.sleep(0.2)  # let the proxy pass on the LOGOUT answer
    rec.close()
    sent = bytes(rec.sent)
    if not re.search(rb"(^|\r\n)\S+ LOGOUT\r\n", sent):
        sent += b"ZZ99 LOGOUT\r\n"
    return sent, rec.received


_SET = re.compile(rb"(?<=UID FETCH )[0-9:,*]+")
_TAG = re.compile(rb"^\S+ ")


def command_shapes(session: bytes) -> list[tuple[str, int]]:
    """The commands of a session with their UID sets elided, and how often each was sent (LOGIN hidden)."""
    counts: dict[str, int] = {}
    for line in session.split(b"\r\n"):
        if not line:
            continue
        shape = _SET.sub(b"<uids>", _TAG.sub(b"", line, count=1))
        if shape.upper().startswith(b"LOGIN "):
            shape = b"LOGIN <user> <password>"
        text = shape.decode("ascii", "replace")
        counts[text] = counts.get(text, 0) + 1
    return list(counts.items())


def replay(port: int, session: bytes) -> tuple[float, int]:
    """(seconds, bytes received) of sending ``session`` and reading until the server closes."""
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    errors: list[BaseException] = []

    def send() -> None:
        try:
            sock.sendall(session)
        except OSError as exc:
            errors.append(exc)

    # Dovecot's login process holds only a few KB of input: the commands up to
    # LOGIN go first, the rest once LOGIN is answered (then all at once)
    m = re.search(rb"(?:^|\r\n)(\S+) LOGIN [^\r]*\r\n", session, re.I)
    if m is None:
        raise RuntimeError("the recorded session has no LOGIN")
    login_end, login_tag = m.end(), m.group(1)
    t = time.perf_counter()
    sock.sendall(session[:login_end])
    got = 0
    tail = b""
    buf = bytearray(1 << 20)
    while not re.search(rb"(?:^|\r\n)" + re.escape(login_tag) + rb" OK", tail):
        n = sock.recv_into(buf)
        if n == 0:
            raise RuntimeError(f"the server closed the connection before LOGIN was answered: {tail[-300:]!r}")
        got += n
        tail = (tail + bytes(buf[:n]))[-4096:]
    session = session[login_end:]
    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    while True:
        try:
            n = sock.recv_into(buf)
        except ConnectionResetError:
            if b"LOGOUT" in tail.upper() or b"* BYE" in tail:
                break  # closed after its LOGOUT answer, with our last bytes unread
            raise RuntimeError(f"connection reset after {got:,} bytes; last ones: {tail[-300:]!r}") from None
        if n == 0:
            break
        got += n
        tail = (tail + bytes(buf[:n]))[-4096:]
        if b"BAD " in buf[:n] or b" NO " in buf[:n]:
            _check(bytes(buf[:n]))
    seconds = time.perf_counter() - t
    sender.join()
    sock.close()
    if errors:
        raise errors[0]
    if b"LOGOUT" not in tail.upper() and b"BYE" not in tail:
        raise RuntimeError(f"the replayed session did not end with LOGOUT: {tail[-300:]!r}")
    return seconds, got


def _check(chunk: bytes) -> None:
    """A tagged NO/BAD answer means the replay is not the request crm made."""
    for line in chunk.split(b"\r\n"):
        m = re.match(rb"^([A-Za-z0-9]+) (NO|BAD) ", line)
        if m and not line.startswith(b"* "):
            raise RuntimeError(f"the server refused a replayed command: {line[:200]!r}")


def header_fetch(port: int, password: str, folders: list[str]) -> tuple[float, int]:
    """(seconds, mails) of ``UID FETCH 1:* (UID FLAGS BODY.PEEK[HEADER])`` per folder, login included."""
    t = time.perf_counter()
    m = imaplib.IMAP4("127.0.0.1", port)
    m.login("alice", password)
    n = 0
    for folder in folders:
        m.select(folder, readonly=True)
        _typ, data = m.uid("FETCH", "1:*", "(UID FLAGS BODY.PEEK[HEADER])")
        n += sum(1 for item in data if isinstance(item, tuple))
    m.logout()
    return time.perf_counter() - t, n


def resolve_sent(port: int, password: str) -> str:
    """The server name of the \\Sent folder (for the header-only fetch)."""
    m = imaplib.IMAP4("127.0.0.1", port)
    m.login("alice", password)
    _typ, data = m.list()
    m.logout()
    for item in data:
        line = item.decode() if isinstance(item, bytes) else str(item)
        if "\\Sent" in line or line.rstrip('"').endswith("Sent"):
            return line.rsplit(" ", 1)[1].strip('"')
    return "Sent"


def shapes_markdown(shapes: list[tuple[str, int]]) -> list[str]:
    out = []
    for shape, count in shapes:
        text = shape if len(shape) <= 160 else shape[:150] + " ...)"
        out.append(f"- `{text}` x{count}")
    return out

