"""The HTTP/WebDAV client of the CalDAV/CardDAV connectors.

A small client on the standard library's :mod:`http.client`
(:class:`_Http`), so the connectors control every header (``If-Match``,
``If-None-Match``, ``Depth``) and every request they send, plus the
helpers that canonicalise hrefs and read ``207 Multi-Status`` answers.

Every HTTP or network failure is mapped in one place,
:meth:`_Http.request`: 401/403 -> :class:`AuthError`; refused connection,
timeout, reset, 429 and 5xx -> :class:`TransientError`; other failures ->
:class:`SourceUnavailable`.
"""

from __future__ import annotations

import functools
import hashlib
import re
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Mapping
from urllib.parse import quote, unquote, urljoin, urlsplit, urlunsplit

from .base import AuthError, SourceUnavailable, TransientError
from .deadline import arm as arm_deadline

DAV = "DAV:"
CALDAV = "urn:ietf:params:xml:ns:caldav"
CARDDAV = "urn:ietf:params:xml:ns:carddav"
CS = "http://calendarserver.org/ns/"
XML_TYPE = "application/xml; charset=utf-8"
_SAFE = "/@:+!$&'()*,;=~"
_NAME_OK = re.compile(r"^[A-Za-z0-9@._+=-]{1,200}$")


def _q(ns: str, name: str) -> str:
    return f"{{{ns}}}{name}"


# ---------------------------------------------------------------------------
# small helpers


def _norm_path(path: str) -> str:
    """The canonical quoting of an href path (servers differ in what they
    escape: ``@`` vs ``%40`` ...)."""
    return quote(unquote(path), safe=_SAFE)


def _join(base: str, href: str) -> str:
    """Absolute URL of ``href`` (a path or a URL) relative to ``base``."""
    parts = urlsplit(urljoin(base, href))
    return urlunsplit((parts.scheme, parts.netloc, _norm_path(parts.path), "", ""))


#: an href path that _norm_path leaves as it is (no escapes, no dot segments)
_PLAIN_PATH = re.compile(r"/[A-Za-z0-9_.~/@:+!$&'()*,;=-]*")


@functools.lru_cache(maxsize=4096)
def _href_path_slow(base: str, href: str) -> str:
    return _path(_join(base, href))


def _href_path(base: str, href: str) -> str:
    """The canonical path of ``href`` (a path or a URL) relative to ``base``;
    what ``_path(_join(base, href))`` gives, without the URL parsing for the
    usual plain absolute path."""
    if _PLAIN_PATH.fullmatch(href) and not href.startswith("//") and "/." not in href:
        return href
    return _href_path_slow(base, href)


def _dir(url: str) -> str:
    return url if url.endswith("/") else url + "/"


def _path(url: str) -> str:
    return urlsplit(url).path


def _item_name(uid: str, ext: str) -> str:
    """A deterministic file name for ``uid``: the UID itself when it is
    URL-safe, else a hash of it."""
    if _NAME_OK.match(uid) and uid not in {".", ".."}:
        return uid + ext
    return hashlib.sha1(uid.encode("utf-8")).hexdigest() + ext


def _xml(content: bytes) -> Any:
    from lxml import etree

    parser = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=True, recover=False)
    start = " ".join(content[:60].decode("utf-8", "replace").split())
    try:
        root = etree.fromstring(content, parser)
    except etree.XMLSyntaxError as exc:
        raise NotDav(f"the server's answer is not WebDAV (not XML: {exc}; it starts {start!r}): "
                     "is the URL that of the CalDAV/CardDAV server?") from None
    if root.tag != "{DAV:}multistatus":  # a web page that happens to be well-formed
        raise NotDav(f"the server's answer is not WebDAV (not a multistatus; it starts {start!r}): "
                     "is the URL that of the CalDAV/CardDAV server?")
    return root


def _status_code(text: str | None) -> int:
    if not text:
        return 200
    parts = text.split()
    try:
        return int(parts[1])
    except (IndexError, ValueError):
        return 0


@dataclass
class _Item:
    href: str  # canonical path
    etag: str
    status: int
    data: str | None = None


@dataclass
class _Collection:
    url: str
    name: str = ""
    token: str | None = None
    ctag: str | None = None
    #: what the depth-0 probe asked: "getctag" | "sync-token" | "" (nothing)
    probed: str = ""
    #: the probe found nothing there (404/410): the reason, else ""
    missing: str = ""


def _responses(root: Any) -> Iterator[tuple[str, int, list[Any]]]:
    """Each DAV:response of a 207 (its root element) with an href: the href, the response's own status
    (200 when it names none), and the DAV:prop of each of its propstats answered 200."""
    for response in root.iterchildren(_q(DAV, "response")):
        href = response.findtext(_q(DAV, "href"))
        if not href:
            continue
        props = []
        for propstat in response.iterchildren(_q(DAV, "propstat")):
            if _status_code(propstat.findtext(_q(DAV, "status"))) == 200:
                prop = propstat.find(_q(DAV, "prop"))
                if prop is not None:
                    props.append(prop)
        yield href.strip(), _status_code(response.findtext(_q(DAV, "status"))), props


def _parse_multistatus(content: bytes, base: str, data_tag: str | None = None) -> tuple[list[_Item], str | None]:
    """Items (href, etag, status, data) and the DAV:sync-token of a 207."""
    root = _xml(content)
    items: list[_Item] = []
    for href, status, props in _responses(root):
        path = _href_path(base, href)
        etag = ""
        data = None
        is_collection = False
        for prop in props:
            etag = prop.findtext(_q(DAV, "getetag")) or etag
            rtype = prop.find(_q(DAV, "resourcetype"))
            if rtype is not None and rtype.find(_q(DAV, "collection")) is not None:
                is_collection = True
            if data_tag is not None:
                node = prop.find(data_tag)
                if node is not None and node.text is not None:
                    data = node.text
        if is_collection:
            continue
        items.append(_Item(path, etag.strip(), status, data))
    token = root.findtext(_q(DAV, "sync-token"))
    return items, token.strip() if token else token


# ---------------------------------------------------------------------------
# HTTP: the one place where errors are mapped


class NotDav(SourceUnavailable):
    """The server answered, but not as a WebDAV server does (retrying cannot help)."""


class _Missing(SourceUnavailable):
    """404/410: the URL names nothing (a scope problem, not a server one)."""


class _Response:
    __slots__ = ("status", "headers", "content", "url")

    def __init__(self, status: int, headers: Mapping[str, str], content: bytes, url: str):
        self.status = status
        self.headers = headers
        self.content = content
        self.url = url

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")


class _Http:
    """HTTP/1.1 with keep-alive on the standard library's :mod:`http.client`.

    One connection per thread and origin (the multiget prefetch runs in a
    thread of its own); Basic authentication, with Digest when the server
    asks for it; redirects followed for reads.  Importing a full HTTP
    library cost a no-change run more than the requests themselves.

    Credentials go only to ``origin`` (scheme, host and port of the
    configured URL): a redirect to another host, port or scheme (https ->
    http included) is followed without them, and a 401 there says why.

    Time is bounded twice: every socket operation by ``timeout``, and the
    whole answer to one request by :attr:`ANSWER_TIMEOUTS` times it (a
    server that drips a byte now and then, in the headers or the body,
    cannot hold a run for ever: :mod:`connectors.deadline`).
    """

    MAX_REDIRECTS = 5
    #: one answer may take at most this many times ``timeout`` in all
    ANSWER_TIMEOUTS = 10

    def __init__(self, source: str, username: str | None, password: str | None,
                 verify: bool | str, timeout: float, origin: str = ""):
        import threading

        self.source = source
        #: (scheme, host, port) that credentials may be sent to
        self.origin = _origin(origin) if origin else None
        #: an answer came from the server on this client: a refused connection now is the server going away
        self.answered = False
        self.username = username
        self.password = password
        self.verify = verify
        self.timeout = timeout
        self.count = 0  # requests sent, for tests and benchmarks
        self._local = threading.local()
        self._all: list[Any] = []
        self._digest: dict[str, str] | None = None
        self._nc = 0
        self._ssl: Any = None

    def close(self) -> None:
        for conn in self._all:
            try:
                conn.close()
            except Exception:  # noqa: BLE001
                pass
        self._all.clear()
        self._local = __import__("threading").local()

    def _context(self) -> Any:
        if self._ssl is None:  # (a CA that cannot serve: ConfigError, one line naming it)
            from .tls import context

            ca = self.verify if isinstance(self.verify, str) else None
            self._ssl = context(ca, verify=self.verify is not False, label=f"sources.{self.source}.verify_tls")
        return self._ssl

    def _connection(self, scheme: str, netloc: str) -> Any:
        import http.client

        pool = getattr(self._local, "pool", None)
        if pool is None:
            pool = self._local.pool = {}
        conn = pool.get((scheme, netloc))
        if conn is None:
            if scheme == "https":
                conn = http.client.HTTPSConnection(netloc, timeout=self.timeout, context=self._context())
            else:
                conn = http.client.HTTPConnection(netloc, timeout=self.timeout)
            pool[(scheme, netloc)] = conn
            self._all.append(conn)
        return conn

    def _authorization(self, method: str, path: str) -> str | None:
        import base64

        if not self.username:
            return None
        if self._digest is None:
            token = base64.b64encode(f"{self.username}:{self.password or ''}".encode()).decode()
            return f"Basic {token}"
        return self._digest_header(method, path)

    def _digest_header(self, method: str, path: str, cnonce: str | None = None) -> str:
        """RFC 7616 Digest (MD5 or SHA-256, qop=auth)."""
        import os as _os

        ch = self._digest or {}
        algorithm = ch.get("algorithm", "MD5").upper()
        h = hashlib.sha256 if algorithm.startswith("SHA-256") else hashlib.md5

        def hx(text: str) -> str:
            return h(text.encode()).hexdigest()

        realm, nonce = ch.get("realm", ""), ch.get("nonce", "")
        ha1 = hx(f"{self.username}:{realm}:{self.password or ''}")
        ha2 = hx(f"{method}:{path}")
        fields = [f'username="{self.username}"', f'realm="{realm}"', f'nonce="{nonce}"', f'uri="{path}"',
                  f"algorithm={algorithm}"]
        if "auth" in [q.strip() for q in ch.get("qop", "").split(",")]:
            self._nc += 1
            nc, cnonce = f"{self._nc:08x}", cnonce or _os.urandom(8).hex()
            fields += ["qop=auth", f"nc={nc}", f'cnonce="{cnonce}"',
                       f'response="{hx(f"{ha1}:{nonce}:{nc}:{cnonce}:auth:{ha2}")}"']
        else:
            fields.append(f'response="{hx(f"{ha1}:{nonce}:{ha2}")}"')
        if "opaque" in ch:
            fields.append(f'opaque="{ch["opaque"]}"')
        return "Digest " + ", ".join(fields)

    def _send(self, method: str, url: str, data: bytes | None, headers: dict[str, str]) -> tuple[int, Any, bytes]:
        import http.client
        import socket
        import ssl

        parts = urlsplit(url)
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        hdrs = {"User-Agent": "crm-bridge", **headers}
        auth = self._authorization(method, path) if self._may_authenticate(url) else None
        if auth:
            hdrs["Authorization"] = auth
        limit = self.ANSWER_TIMEOUTS * self.timeout
        for attempt in range(2):  # a kept-alive connection the server closed meanwhile: once more, fresh
            conn = self._connection(parts.scheme, parts.netloc)
            self.count += 1
            arm_deadline(conn, self.timeout, limit)  # status line, headers and body: all within limit
            try:
                conn.request(method, path, body=data, headers=hdrs)
                raw = conn.getresponse()
                content = raw.read()
            except ssl.SSLError as exc:
                conn.close()
                if "WRONG_VERSION_NUMBER" in str(exc) or "record layer failure" in str(exc):
                    raise SourceUnavailable(
                        f"{self.source}: port {_port(parts)} of {parts.hostname} speaks plain HTTP, not TLS: "
                        "use the server's TLS port, or http:// with allow_plaintext = true "
                        "(a server on this machine only)") from exc
                raise SourceUnavailable(f"{self.source}: TLS error talking to {url}: {exc}") from exc
            except ConnectionRefusedError as exc:
                conn.close()
                where = f"{parts.hostname}:{_port(parts)}"
                if self.answered:  # it answered a moment ago: going away or restarting
                    raise TransientError(f"{self.source}: {method} {url}: connection refused") from exc
                raise SourceUnavailable(f"{self.source}: connection refused by {where}: "
                                        "is the server running, and is that its port?") from exc
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as exc:
                conn.close()
                if attempt == 0:
                    continue
                if not self.answered and parts.scheme == "http":
                    raise SourceUnavailable(
                        f"{self.source}: {parts.hostname}:{_port(parts)} closed the connection without an "
                        "answer: does that port speak TLS (use https://)?") from exc
                raise TransientError(f"{self.source}: {method} {url}: {type(exc).__name__}: {exc}") from exc
            except http.client.BadStatusLine as exc:
                conn.close()
                raise SourceUnavailable(
                    f"{self.source}: port {_port(parts)} of {parts.hostname} does not speak HTTP "
                    f"(it answered {' '.join(str(exc).split())[:60]!r}): is the URL that of the "
                    "CalDAV/CardDAV server?") from exc
            except (OSError, socket.timeout, http.client.HTTPException) as exc:
                conn.close()
                raise TransientError(f"{self.source}: {method} {url}: {type(exc).__name__}: {exc}") from exc
            self.answered = True
            if raw.will_close:
                conn.close()
            return raw.status, raw.headers, content
        raise TransientError(f"{self.source}: {method} {url}: connection closed")  # pragma: no cover

    def _may_authenticate(self, url: str) -> bool:
        return self.origin is None or _origin(url) == self.origin

    def request(
        self,
        method: str,
        url: str,
        body: str | bytes | None = None,
        headers: Mapping[str, str] | None = None,
        allow: Iterable[int] = (),
        redirects: bool = True,
    ) -> _Response:
        """Send one request; statuses in ``allow`` (and 2xx) come back, every
        other outcome is raised as a connector error."""
        hdrs = dict(headers or {})
        data = body.encode("utf-8") if isinstance(body, str) else body
        for _hop in range(self.MAX_REDIRECTS + 1):
            status, raw_headers, content = self._send(method, url, data, hdrs)
            challenge = raw_headers.get("WWW-Authenticate", "") or ""
            if status == 401 and self.username and self._digest is None and challenge.lower().startswith("digest"):
                self._digest = _parse_challenge(challenge)
                status, raw_headers, content = self._send(method, url, data, hdrs)
            if redirects and status in (301, 302, 303, 307, 308) and raw_headers.get("Location"):
                url = urljoin(url, raw_headers["Location"])
                if status == 303:
                    method, data = "GET", None
                continue
            break
        response = _Response(status, raw_headers, content, url)
        if 200 <= status < 300 or status in allow or (not redirects and 300 <= status < 400):
            return response
        what = f"{self.source}: {method} {url}: HTTP {status}"
        if status == 401 and self.username and not self._may_authenticate(url):
            raise AuthError(f"{self.source}: redirected to {_origin_text(url)}, which asks for credentials; they "
                            f"are only sent to {_origin_text(self.origin)}, the configured url: if that server "
                            "is yours, configure its address as the url")
        if status == 401:
            raise AuthError(f"{self.source}: the server refused the credentials (HTTP 401 on {url})")
        if status == 403:
            raise AuthError(f"{self.source}: access denied (HTTP 403 on {method} {url})")
        if status in (404, 410):
            raise _Missing(what)
        if status in (405, 501) and method in ("PROPFIND", "REPORT"):
            raise NotDav(f"{what}: the server does not answer WebDAV there: "
                         "is the URL that of the CalDAV/CardDAV server?")
        if status == 429 or status >= 500:
            raise TransientError(what)
        raise SourceUnavailable(what + (f": {response.text[:200]}" if response.content else ""))


def _port(parts: Any) -> int:
    return parts.port or (443 if parts.scheme == "https" else 80)


def _origin(url: str) -> tuple[str, str, int]:
    """(scheme, host, port) of ``url``, the unit credentials are bound to."""
    parts = urlsplit(url)
    return parts.scheme.lower(), (parts.hostname or "").lower(), _port(parts)


def _origin_text(origin: str | tuple[str, str, int] | None) -> str:
    scheme, host, port = _origin(origin) if isinstance(origin, str) else (origin or ("", "", 0))
    return f"{scheme}://{host}:{port}"


def _parse_challenge(header: str) -> dict[str, str]:
    """``Digest realm="x", nonce="y", qop="auth"`` -> {"realm": "x", ...}."""
    out = {}
    for key, quoted, bare in re.findall(r'(\w+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]+))', header.partition(" ")[2]):
        out[key.lower()] = quoted if quoted else bare
    return out

