"""The HTTP client of the Microsoft 365 connector: one pool of kept-alive HTTPS connections on the standard library.

Why not niquests (used before): in a run where nothing changed, the whole
process does one delta request per folder, and niquests' import (~85 ms on
the benchmark machine) plus its lazy set-up on the first request (h11, the
system trust store through wassima, ~20 ms) were more than the rest of the
run; ``http.client`` and ``ssl`` cost ~11 ms to import and ~5 ms for the
first request over TLS.  (Measured in bench/RESULTS.md, section
"Microsoft 365 / Graph".)  Graph answers each request on its own; HTTP/2
would only multiplex what the connector does not do (one request at a time
per folder, the next page asked for while the current one is stored).

What it keeps of a requests-like session:

- one pool: idle connections per host are kept alive and reused, by any
  thread (the read-ahead thread and the main thread may hold one each);
  an idle connection the server has closed is dropped before use, and a
  kept-alive connection that fails before an answer arrives (not a
  timeout) is retried once on a fresh one for GET (never for POST/PATCH:
  the server may have acted on it);
- TLS verified by default (:func:`connectors.tls.context`): the configured
  ``ca_file`` only (as ``verify=path`` did), else the system's trust store
  (which honours SSL_CERT_FILE / SSL_CERT_DIR); host names checked;
- a timeout per connect and per read (``timeout`` of the source), and one
  for the whole answer (``deadline``, :data:`ANSWER_DEADLINE` by default,
  never less than ``timeout``): a server that trickles a byte every few
  seconds passes every read timeout, but not this one (status line,
  headers and body each read within what is left of it, see
  :mod:`connectors.deadline`);
- gzip-encoded answers (``Accept-Encoding: gzip``, as Graph offers);
- ``https_proxy`` / ``no_proxy`` from the environment, CONNECT tunnel,
  user:password of the proxy URL as Basic auth (an http:// proxy only; its
  port 80 when the URL names none, as niquests took it);
- :meth:`Session.get` / :meth:`Session.post` in the shape MSAL's
  ``http_client`` takes (``params``, ``data`` as a dict or a string,
  answers with ``status_code``, ``text``, ``headers``, ``raise_for_status``).

Errors: :class:`TLSError` (the certificate is not trusted, or the handshake
fails) and :class:`HTTPError` (connect, read, timeout, a broken answer), both
``OSError``; the message names the host, never a header (so no token).  A
``ca_file`` that cannot serve (missing, holding no certificate) is a
:class:`connectors.base.ConfigError` naming it, raised by the first request.
"""

from __future__ import annotations

import base64
import http.client
import json as _json
import os
import select
import socket
import ssl
import threading
import zlib
from typing import Any, Mapping
from urllib.parse import unquote, urlencode, urlsplit

from crm_bridge.connectors.deadline import arm as arm_deadline

USER_AGENT = "crm-bridge (m365)"
_RETRYABLE = ("GET", "HEAD", "OPTIONS")
#: seconds one request may take in all, from sending it to the last byte of the answer (a page of 1,000
#: items is a few MB: well within it on a slow line); a ``timeout`` above it raises it
ANSWER_DEADLINE = 300.0


class HTTPError(OSError):
    """The request did not get an answer (connection, timeout, a broken answer)."""


class TLSError(HTTPError):
    """TLS failed: the server's certificate is not trusted, or the handshake broke."""


class Response:
    """An answer: ``status_code``, ``headers`` (case-insensitive ``get``), ``content`` (bytes)."""

    def __init__(self, status_code: int, headers: Any, content: bytes, url: str):
        self.status_code, self.headers, self.content, self.url = status_code, headers, content, url

    @property
    def text(self) -> str:
        charset = self.headers.get_content_charset() if hasattr(self.headers, "get_content_charset") else None
        return self.content.decode(charset or "utf-8", "replace")

    def json(self) -> Any:
        return _json.loads(self.content)

    def raise_for_status(self) -> None:
        if self.status_code >= 400:
            raise HTTPError(f"HTTP {self.status_code} from {self.url.split('?')[0]}")


def _proxy_for(host: str) -> tuple[str, int, dict[str, str]] | None:
    """The https proxy the environment names for ``host`` (host, port, headers of CONNECT), if any."""
    env = os.environ
    proxy = env.get("https_proxy") or env.get("HTTPS_PROXY") or env.get("all_proxy") or env.get("ALL_PROXY")
    if not proxy:
        return None
    no_proxy = env.get("no_proxy") or env.get("NO_PROXY") or ""
    for entry in (e.strip().lower().lstrip(".") for e in no_proxy.split(",")):
        if entry == "*" or (entry and (host.lower() == entry or host.lower().endswith("." + entry))):
            return None
    parts = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
    if not parts.hostname:
        return None
    if parts.scheme.lower() != "http":  # (TLS to the proxy or SOCKS: niquests needs extras for those too)
        raise HTTPError(f"the proxy of the environment (https_proxy / all_proxy) is a {parts.scheme}:// one; "
                        "only an http:// proxy (CONNECT) is supported")
    headers = {}
    if parts.username is not None:
        pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
        headers["Proxy-Authorization"] = "Basic " + base64.b64encode(pair).decode()
    return parts.hostname, parts.port or 80, headers  # (niquests/urllib3: the scheme's port)


def _dropped(conn: http.client.HTTPConnection) -> bool:
    """Whether the server has closed an idle connection (readable: EOF, or bytes nobody asked for)."""
    sock = conn.sock
    if sock is None:
        return True
    try:
        if hasattr(select, "poll"):  # (select.select fails for descriptors above FD_SETSIZE)
            poller = select.poll()
            poller.register(sock, select.POLLIN)
            return bool(poller.poll(0))
        return bool(select.select([sock], [], [], 0)[0])
    except (OSError, ValueError):
        return True


class Session:
    """A pool of kept-alive HTTPS connections, shared by threads."""

    def __init__(self, verify: bool | str = True, timeout: float = 120.0, max_idle: int = 4,
                 deadline: float = ANSWER_DEADLINE):
        self.verify, self.timeout, self.max_idle, self.deadline = verify, timeout, max_idle, deadline
        self._ctx: ssl.SSLContext | None = None
        self._idle: dict[tuple[str, int], list[http.client.HTTPSConnection]] = {}
        self._lock = threading.Lock()
        self._closed = False

    def _context(self) -> ssl.SSLContext:
        if self._ctx is None:  # (a CA file that cannot serve: ConfigError, one line naming it)
            from crm_bridge.connectors.tls import context

            ca = self.verify if isinstance(self.verify, str) else None
            self._ctx = context(ca, verify=self.verify is not False, label="ca_file")
        return self._ctx

    def _take(self, key: tuple[str, int]) -> http.client.HTTPSConnection | None:
        with self._lock:
            idle = self._idle.get(key)
            while idle:
                conn = idle.pop()
                if not _dropped(conn):
                    return conn
                conn.close()
        return None

    def _give(self, key: tuple[str, int], conn: http.client.HTTPSConnection) -> None:
        with self._lock:
            idle = self._idle.setdefault(key, [])
            if not self._closed and len(idle) < self.max_idle:
                idle.append(conn)
                return
        conn.close()

    def _new(self, host: str, port: int, timeout: float) -> http.client.HTTPSConnection:
        proxy = _proxy_for(host)
        if proxy is None:
            return http.client.HTTPSConnection(host, port, timeout=timeout, context=self._context())
        conn = http.client.HTTPSConnection(proxy[0], proxy[1], timeout=timeout, context=self._context())
        conn.set_tunnel(host, port, headers=proxy[2])
        return conn

    def request(self, method: str, url: str, headers: Mapping[str, str] | None = None, json: Any = None,
                data: Any = None, params: Mapping[str, Any] | None = None, timeout: float | None = None,
                **_ignored: Any) -> Response:
        parts = urlsplit(url)
        if parts.scheme != "https" or not parts.hostname:
            raise HTTPError(f"not an https:// URL: {url.split('?')[0][:200]}")
        host, port = parts.hostname, parts.port or 443
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        if params:
            target += ("&" if "?" in target else "?") + urlencode(params)
        send = {"User-Agent": USER_AGENT, "Accept-Encoding": "gzip", "Accept": "*/*"}
        send.update(headers or {})
        body: bytes | None = None
        if json is not None:
            body = _json.dumps(json).encode()
            send.setdefault("Content-Type", "application/json")
        elif data is not None:
            raw = urlencode(data) if isinstance(data, Mapping) else data
            body = raw.encode() if isinstance(raw, str) else bytes(raw)
            send.setdefault("Content-Type", "application/x-www-form-urlencoded")
        elif method in ("POST", "PUT", "PATCH"):
            body = b""
        key = (host, port)
        wait = self.timeout if timeout is None else float(timeout)
        where = f"{host}:{port}" if port != 443 else host
        limit = max(self.deadline, wait)
        for attempt in (0, 1):
            conn = self._take(key)
            reused = conn is not None
            if conn is None:
                conn = self._new(host, port, wait)
            arm_deadline(conn, wait, limit)  # (the whole answer within limit, each read within wait)
            answered = False
            try:
                conn.request(method, target, body=body, headers=send)
                resp = conn.getresponse()
                answered = True
                content = resp.read()
            except ssl.SSLError as exc:
                conn.close()
                raise TLSError(f"TLS with {where} failed: {exc.reason or exc}") from None
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                timed_out = isinstance(exc, (socket.timeout, TimeoutError))
                if reused and not answered and not timed_out and attempt == 0 and method in _RETRYABLE:
                    # a kept-alive connection the server had given up: once more on a fresh one (a timeout is
                    # a slow server, not a closed connection: asking again would only double the wait)
                    continue
                what = "timed out" if timed_out else f"{type(exc).__name__}"
                raise HTTPError(f"{method} to {where}: {what}{': ' + str(exc)[:120] if str(exc) else ''}") from None
            if resp.will_close:
                conn.close()
            else:
                self._give(key, conn)
            if (resp.getheader("Content-Encoding") or "").strip().lower() == "gzip":
                try:
                    content = zlib.decompress(content, 16 + zlib.MAX_WBITS)
                except zlib.error:
                    raise HTTPError(f"{method} to {where}: a broken gzip answer") from None
            return Response(resp.status, resp.msg, content, url)
        raise AssertionError("unreachable")

    # MSAL's http_client (msal.oauth2cli.http.HttpClient)
    def get(self, url: str, params: Mapping[str, Any] | None = None, headers: Mapping[str, str] | None = None,
            **kwargs: Any) -> Response:
        return self.request("GET", url, headers=headers, params=params, timeout=kwargs.get("timeout"))

    def post(self, url: str, params: Mapping[str, Any] | None = None, data: Any = None,
             headers: Mapping[str, str] | None = None, **kwargs: Any) -> Response:
        return self.request("POST", url, headers=headers, data=data, params=params, json=kwargs.get("json"),
                            timeout=kwargs.get("timeout"))

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, {}
        for conns in idle.values():
            for conn in conns:
                conn.close()
