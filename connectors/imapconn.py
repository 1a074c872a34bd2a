"""The connection of an IMAP source (:class:`~connectors.imap.ImapConnector`): connecting
(implicit TLS, STARTTLS or plain text to a loopback host; password or XOAUTH2 login; ENABLE
CONDSTORE; whether the server has ESEARCH), the TLS context (``ca_file`` trusted in addition
to the system's CAs, ``verify_tls``), the one place library errors are mapped, dropping and
closing the connection, and the one-line diagnosis of a connect that failed (:func:`probe`:
nothing listening, a web server, plain IMAP on a TLS port or TLS on a plain one).

Errors
------
All library errors are mapped in :meth:`ImapConnection._errors`: a refused
login -> ``AuthError``; an untrusted certificate -> ``SourceUnavailable``;
timeouts, resets, BYE and other aborts -> ``TransientError``; any other
protocol error -> ``SourceUnavailable``.  Credentials never appear in
messages.
"""

from __future__ import annotations

import contextlib
import imaplib
import socket
import ssl
from typing import Any, Iterator

from crm_bridge.connectors.base import (
    AuthError,
    Connector,
    ConnectorError,
    SourceUnavailable,
    TransientError,
    secret,
)

#: seconds to wait for a server's greeting (at most ``timeout``)
GREETING_TIMEOUT = 15


def _peer_closed(sock: socket.socket) -> bool:
    """True when the other end hung up (works under TLS too: it asks the TCP socket)."""
    import select

    poller = select.poll()
    poller.register(sock.fileno(), select.POLLIN | getattr(select, "POLLRDHUP", 0))
    for _fd, events in poller.poll(0):
        if events & (select.POLLHUP | select.POLLERR | getattr(select, "POLLRDHUP", 0)):
            return True
    return False


class ImapConnection(Connector):
    """The connection half of :class:`~connectors.imap.ImapConnector` (which reads the options into
    these attributes): one IMAPClient at a time, opened on first use, dropped when a library error is mapped."""

    host: str
    port: int
    tls: str
    verify_tls: bool
    ca_file: str | None
    username: str
    auth: str
    timeout: float
    use_condstore: bool
    _client: Any
    _selected: str | None  # the mailbox this connection has EXAMINEd
    _condstore: bool
    _esearch: bool

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

    def _drop(self, logout: bool = False) -> None:
        """Forget the connection and close its socket (after a LOGOUT with ``logout``); errors are ignored."""
        client, self._client = self._client, None
        self._selected = None
        if client is not None:
            if logout:
                with contextlib.suppress(Exception):
                    client.logout()
            with contextlib.suppress(Exception):
                client.shutdown()

    # -- connection -----------------------------------------------------------
    def _ssl_context(self) -> ssl.SSLContext:
        from crm_bridge.connectors.tls import context  # (a ca_file that cannot serve: one line naming it)

        # ca_file: trusted in addition to the system's CAs
        return context(self.ca_file, verify=self.verify_tls, system=True, label=f"sources.{self.name}.ca_file")

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
        self._drop(logout=True)


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
