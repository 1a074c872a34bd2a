"""The HTTP side: EWS at /EWS/Exchange.asmx, POX Autodiscover, Basic auth, fault switches.

Like IIS in front of Exchange, an unauthenticated request gets 401 with
``WWW-Authenticate: Basic realm="..."`` (and ``NTLM`` when offered), a
wrong password gets 401 again; connections are kept alive (HTTP/1.1).

OAuth (switch :meth:`EwsEmulator.accept_token`): ``Authorization: Bearer
TOKEN`` is accepted for the tokens the emulator was given; any other
(expired, revoked, unknown) is answered 401 with the ``Bearer`` challenge
Exchange sends under hybrid modern authentication (``client_id`` of
Exchange, ``authorization_uri``, ``error="invalid_token"``).

Fault switches (:meth:`EwsEmulator.fail`) act on the next N EWS requests,
optionally only those of one operation:

``busy``     SOAP fault ErrorServerBusy with MessageXml BackOffMilliseconds
``http``     a bare HTTP status (401, 500, 503) with an IIS error page
``drop``     the status line, headers and half the body, then the socket closes
``slow``     the right answer after ``delay`` seconds
``trickle``  the right answer, its body a byte every ``delay`` seconds

Connection switches (attributes, for every request from then on):

``keep_alive = False``   IIS with "HTTP keep-alive" switched off: every answer
                         says ``Connection: close`` and the connection ends
                         with it.  An NTLM handshake belongs to its connection
                         (as in IIS), so it cannot complete: the AUTHENTICATE
                         leg arrives on a new connection that never saw the
                         NEGOTIATE, and is answered 401 with the challenge.
``http_version = "HTTP/1.0"``  answers as an HTTP/1.0 server (or a proxy of
                         that kind in front of IIS): no ``Connection`` header,
                         the connection ends after each answer.
"""

from __future__ import annotations

import base64
import logging
import os
import socket
import tempfile
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import Any

from lxml import etree

from tests.closing_server import ClosingHTTPServer
from tests.ews_emulator.model import EwsError, Store
from tests.ews_emulator.operations import OPERATIONS, Context, Fault
from tests.ews_emulator.soap import SOAP, fault, to_bytes

log = logging.getLogger("ews_emulator")

TNS = "http://schemas.microsoft.com/exchange/services/2006/types"
AD_REQUEST = "http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006"
AD_RESPONSE = "http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006"
AD_OUTLOOK = "http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a"
#: Exchange's answer to a missing or refused OAuth token (hybrid modern authentication)
BEARER_CHALLENGE = ('Bearer client_id="00000002-0000-0ff1-ce00-000000000000", '
                    'trusted_issuers="00000001-0000-0000-c000-000000000000@*", '
                    'token_types="app_asserted_user_v1 service_asserted_app_v1", '
                    'authorization_uri="https://login.microsoftonline.com/common/oauth2/authorize"')
_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=True)


@dataclass
class FaultRule:
    kind: str  # busy | http | drop | slow | trickle
    count: int
    operation: str | None = None
    status: int = 503
    back_off_ms: int = 1000
    delay: float = 1.0


class EwsEmulator:
    """One emulated Exchange organisation on a loopback port."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, ntlm: bool = True, domain: str = "EXAMPLE",
                 tls: tuple[str, str] | None = None) -> None:
        """``tls``: (certificate file, key file) to serve https instead of http."""
        self.store = Store()
        self.faults: list[FaultRule] = []
        self.requests: list[dict[str, Any]] = []  # one entry per EWS request: op, user, mailbox, ...
        self.autodiscover_redirect: str | None = None  # an address to redirect POX Autodiscover to
        self.autodiscover_fails = False
        self.autodiscover_ews_url: str | None = None  # the EwsUrl POX Autodiscover hands out (default: self.url)
        self.redirects: dict[str, str] = {}  # request path -> where HTTP 302 sends it
        self.ntlm = ntlm
        self.bearer_tokens: dict[str, str] = {}  # access token -> user (accept_token)
        self.refused_tokens: list[str] = []  # bearer tokens answered with 401, in order
        self.domain = domain  # the NetBIOS domain NTLM clients may name ("EXAMPLE\\user")
        self.keep_alive = True  # False: "Connection: close" on every answer (IIS with keep-alive off)
        self.http_version = "HTTP/1.1"  # "HTTP/1.0": answers as an HTTP/1.0 server does, closing each connection
        self.connections = 0  # TCP connections accepted
        self._lock = threading.Lock()
        handler = type("Handler", (_Handler,), {"emulator": self})
        self.httpd = ClosingHTTPServer((host, port), handler)
        self.httpd.daemon_threads = True
        self.scheme = "http"
        if tls is not None:
            import ssl

            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*tls)
            self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
            self.scheme = "https"
        self.host, self.port = self.httpd.server_address[:2]
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}/EWS/Exchange.asmx"

    @property
    def autodiscover_url(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}/autodiscover/autodiscover.xml"

    def start(self) -> "EwsEmulator":
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="ews-emulator", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        if getattr(self, "_user_file", None):
            os.unlink(self._user_file)

    def __enter__(self) -> "EwsEmulator":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- switches --------------------------------------------------------------
    def accept_token(self, token: str, user: str) -> None:
        """Accept ``Authorization: Bearer token`` as ``user`` from now on."""
        with self._lock:
            self.bearer_tokens[token] = user.lower()

    def expire_token(self, token: str) -> None:
        """The token is no longer accepted (it expired): 401 with error="invalid_token"."""
        with self._lock:
            self.bearer_tokens.pop(token, None)

    def fail(self, kind: str, count: int = 1, operation: str | None = None, **params: Any) -> None:
        with self._lock:
            self.faults.append(FaultRule(kind, count, operation, **params))

    def invalidate_sync_states(self) -> None:
        """Every sync state issued so far becomes ErrorInvalidSyncStateData (as after a mailbox move)."""
        with self.store.lock:
            self.store.generation += 1

    def take_fault(self, operation: str) -> FaultRule | None:
        with self._lock:
            for rule in self.faults:
                if rule.count > 0 and rule.operation in (None, operation):
                    rule.count -= 1
                    if rule.count == 0:
                        self.faults.remove(rule)
                    return rule
        return None

    def _ntlm_user_file(self) -> str:
        """The accounts as pyspnego's acceptor reads them: DOMAIN:USER:PASSWORD, with and without the domain."""
        lines = []
        for user, password in self.store.users.items():
            lines += [f"{self.domain}:{user}:{password}", f":{user}:{password}"]
        if getattr(self, "_user_file", None) is None:
            handle, self._user_file = tempfile.mkstemp(prefix="ews-emulator-ntlm-")
            os.close(handle)
        with open(self._user_file, "w", encoding="utf-8") as fh:
            fh.write("\n".join(lines) + "\n")
        return self._user_file

    def operations(self, write_only: bool = False) -> list[str]:
        ops = [r["op"] for r in self.requests]
        if write_only:
            return [o for o in ops if o in ("CreateItem", "UpdateItem", "DeleteItem", "MoveItem", "SendItem",
                                            "MarkAsJunk", "CopyItem", "CreateFolder")]
        return ops


_NTLM_LOCK = threading.Lock()


class _Handler(BaseHTTPRequestHandler):
    emulator: EwsEmulator
    protocol_version = "HTTP/1.1"
    server_version = "Microsoft-IIS/10.0"
    # TCP_NODELAY, as IIS: with Nagle's algorithm the body of a small answer (written after its headers) waited
    # for the client's delayed ACK of the headers, 40 ms on every GetFolder, ConvertId, ... over keep-alive
    disable_nagle_algorithm = True

    def setup(self) -> None:
        super().setup()
        self.protocol_version = self.emulator.http_version
        with self.emulator._lock:
            self.emulator.connections += 1

    def end_headers(self) -> None:
        if not self.emulator.keep_alive and self.protocol_version >= "HTTP/1.1":
            self.send_header("Connection", "close")  # (send_header also ends the connection after the answer)
        super().end_headers()

    def handle(self) -> None:
        try:
            super().handle()
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (a timeout test): nothing to answer
            pass

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        log.debug("%s " + format, self.address_string(), *args)

    # -- plumbing ---------------------------------------------------------------
    def _send(self, status: int, body: bytes, content_type: str = "text/xml; charset=utf-8",
              headers: dict[str, str] | None = None, drop: bool = False, trickle: float = 0.0) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Powered-By", "ASP.NET")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if trickle:
            for i in range(len(body)):  # (a client that gives up ends it: the next write fails)
                self.wfile.write(body[i:i + 1])
                time.sleep(trickle)
            return
        if drop:
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        self.wfile.write(body)

    def _iis_error(self, status: int) -> None:
        reason = {401: "Unauthorized", 500: "Internal Server Error", 503: "Service Unavailable"}.get(status, "Error")
        page = (f"<!DOCTYPE html><html><head><title>{status} - {reason}</title></head>"
                f"<body><h2>{status} - {reason}</h2></body></html>").encode()
        headers = {}
        if status == 401:
            headers["WWW-Authenticate"] = 'Basic realm="emulated-exchange"'
        self._send(status, page, "text/html", headers)

    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _ntlm(self, token: str) -> str | None:
        """One NTLM leg (MS-NLMP) on this connection: the user once the handshake is complete.

        NEGOTIATE gets a 401 with the CHALLENGE; AUTHENTICATE is checked
        against the accounts' passwords (pyspnego's acceptor, which reads
        them from a credential file).  As with IIS, the connection stays
        authenticated for the requests that follow on it.
        """
        import spnego

        raw = base64.b64decode(token)
        if raw[8:12] == b"\x01\x00\x00\x00":  # NEGOTIATE_MESSAGE
            with _NTLM_LOCK:
                os.environ["NTLM_USER_FILE"] = self.emulator._ntlm_user_file()
                self._ntlm_ctx = spnego.server(protocol="ntlm")
                out = self._ntlm_ctx.step(raw)
            page = b"401 - Unauthorized"
            self.send_response(401)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(page)))
            self.send_header("WWW-Authenticate", "NTLM " + base64.b64encode(out or b"").decode())
            self.end_headers()
            self.wfile.write(page)
            return None
        ctx = getattr(self, "_ntlm_ctx", None)
        if ctx is None:
            return ""
        with _NTLM_LOCK:
            os.environ["NTLM_USER_FILE"] = self.emulator._ntlm_user_file()
            try:
                ctx.step(raw)
            except Exception:  # noqa: BLE001 - a wrong password: the acceptor refuses
                return ""
        self._ntlm_ctx = None
        principal = ctx.client_principal or ""
        user = principal.split("\\")[-1].lower()
        self._ntlm_user = user if user in self.emulator.store.users else ""
        return self._ntlm_user

    def _authenticate(self) -> str | None:
        """The user name, or None after answering 401."""
        store = self.emulator.store
        header = self.headers.get("Authorization", "")
        scheme, _, value = header.partition(" ")
        if self.emulator.ntlm and scheme.lower() in ("ntlm", "negotiate") and value:
            user = self._ntlm(value.strip())
            if user is None:
                return None  # the challenge went out
            if user:
                return user
        elif not header and getattr(self, "_ntlm_user", ""):
            return self._ntlm_user
        if scheme.lower() == "bearer":
            found = self.emulator.bearer_tokens.get(value.strip())
            if found and found in store.users:
                return found
            self.emulator.refused_tokens.append(value.strip())
        if scheme.lower() == "basic":
            try:
                user, _, password = base64.b64decode(value).decode("utf-8").partition(":")
            except (ValueError, UnicodeDecodeError):
                user, password = "", ""
            if "\\" in user:
                user = user.split("\\", 1)[1]
            if store.users.get(user.lower()) == password and password:
                return user.lower()
        challenge = ['Basic realm="emulated-exchange"']
        if self.emulator.ntlm:
            challenge.insert(0, "NTLM")
        if self.emulator.bearer_tokens or scheme.lower() == "bearer":
            challenge.insert(0, BEARER_CHALLENGE + (', error="invalid_token"' if scheme.lower() == "bearer" else ""))
        page = b"<html><head><title>401 - Unauthorized</title></head><body>401 - Unauthorized</body></html>"
        self.send_response(401)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(page)))
        for c in challenge:
            self.send_header("WWW-Authenticate", c)
        self.end_headers()
        self.wfile.write(page)
        return None

    # -- HTTP methods -----------------------------------------------------------
    def do_GET(self) -> None:
        self._read_body()
        if self.path.lower().startswith("/ews/exchange.asmx"):
            if self._authenticate() is None:
                return
            self._send(200, b"<html><body>You have created a service.</body></html>", "text/html")
            return
        self._send(404, b"Not Found", "text/plain")

    def do_HEAD(self) -> None:
        self._send(200, b"", "text/html")

    def do_POST(self) -> None:
        body = self._read_body()
        path = self.path.lower().split("?")[0]
        if path in self.emulator.redirects:
            self._send(302, b"", "text/html", {"Location": self.emulator.redirects[path]})
        elif path == "/autodiscover/autodiscover.xml":
            self._autodiscover(body)
        elif path == "/ews/exchange.asmx":
            self._ews(body)
        else:
            self._send(404, b"Not Found", "text/plain")

    def _autodiscover(self, body: bytes) -> None:
        em = self.emulator
        user = self._authenticate()
        if user is None:
            return
        if em.autodiscover_fails:
            self._iis_error(500)
            return
        try:
            root = etree.fromstring(body, _PARSER)
            address = (root.findtext(f"{{{AD_REQUEST}}}Request/{{{AD_REQUEST}}}EMailAddress") or "").strip().lower()
        except etree.XMLSyntaxError:
            address = ""
        out = etree.Element(f"{{{AD_RESPONSE}}}Autodiscover", nsmap={None: AD_RESPONSE})
        resp = etree.SubElement(out, f"{{{AD_OUTLOOK}}}Response", nsmap={None: AD_OUTLOOK})

        def sub(parent: etree._Element, name: str, text: str | None = None) -> etree._Element:
            e = etree.SubElement(parent, f"{{{AD_OUTLOOK}}}{name}")
            if text is not None:
                e.text = text
            return e

        box = em.store.mailboxes.get(address)
        if em.autodiscover_redirect and address != em.autodiscover_redirect:
            account = sub(resp, "Account")
            sub(account, "AccountType", "email")
            sub(account, "Action", "redirectAddr")
            sub(account, "RedirectAddr", em.autodiscover_redirect)
        elif box is None:
            err = sub(resp, "Error")
            err.set("Time", time.strftime("%H:%M:%S"))
            err.set("Id", "2477272013")
            sub(err, "ErrorCode", "500")
            sub(err, "Message", "The email address can't be found.")
            sub(err, "DebugData", "")
        else:
            u = sub(resp, "User")
            sub(u, "DisplayName", box.name)
            sub(u, "LegacyDN", f"/o=Emulated/ou=Exchange Administrative Group/cn=Recipients/cn={box.name}")
            sub(u, "AutoDiscoverSMTPAddress", box.address)
            sub(u, "DeploymentId", "6e4b4c76-8d1d-4b0e-9d4a-emulated")
            account = sub(resp, "Account")
            sub(account, "AccountType", "email")
            sub(account, "Action", "settings")
            proto = sub(account, "Protocol")
            sub(proto, "Type", "EXCH")
            sub(proto, "Server", f"{em.host}")
            sub(proto, "ASUrl", f"http://{em.host}:{em.port}/EWS/Exchange.asmx")
            sub(proto, "EwsUrl", em.autodiscover_ews_url or em.url)
            sub(proto, "EcpUrl", f"http://{em.host}:{em.port}/ecp/")
            proto2 = sub(account, "Protocol")
            sub(proto2, "Type", "EXPR")
            sub(proto2, "Server", em.host)
            sub(proto2, "EwsUrl", em.autodiscover_ews_url or em.url)
        self._send(200, etree.tostring(out, xml_declaration=True, encoding="utf-8"))

    def _ews(self, body: bytes) -> None:
        em = self.emulator
        user = self._authenticate()
        if user is None:
            return
        try:
            root = etree.fromstring(body, _PARSER)
            op = root.find(f"{{{SOAP}}}Body")[0]  # type: ignore[index]
            operation = etree.QName(op).localname
        except (etree.XMLSyntaxError, TypeError, IndexError):
            self._send(500, to_bytes(fault("ErrorSchemaValidation", "The request failed schema validation.")))
            return
        rule = em.take_fault(operation)
        drop, trickle = False, 0.0
        if rule is not None:
            if rule.kind == "busy":
                self._send(500, to_bytes(fault(
                    "ErrorServerBusy", "The server cannot service this request right now. Try again later.",
                    {"BackOffMilliseconds": str(rule.back_off_ms)})))
                em.requests.append({"op": operation, "user": user, "fault": "busy"})
                return
            if rule.kind == "http":
                em.requests.append({"op": operation, "user": user, "fault": rule.status})
                self._iis_error(rule.status)
                return
            if rule.kind == "slow":
                time.sleep(rule.delay)
            if rule.kind == "drop":
                drop = True
            if rule.kind == "trickle":
                trickle = rule.delay
        store = em.store
        acting = store.user_mailbox.get(user, "")
        impersonating = False
        header = root.find(f"{{{SOAP}}}Header")
        imp = header.find(f"{{{TNS}}}ExchangeImpersonation") if header is not None else None
        try:
            if imp is not None:
                sid = imp.find(f"{{{TNS}}}ConnectingSID")
                target = ""
                for name in ("PrimarySmtpAddress", "SmtpAddress", "PrincipalName"):
                    found = sid.find(f"{{{TNS}}}{name}") if sid is not None else None
                    if found is not None and found.text:
                        target = found.text.strip().lower()
                        break
                if not target:
                    raise Fault("ErrorInvalidExchangeImpersonationHeaderData",
                                "The impersonation header data is invalid.")
                if user not in store.impersonators:
                    raise Fault("ErrorImpersonateUserDenied",
                                "The account does not have permission to impersonate the requested user.")
                if target not in store.mailboxes:
                    raise Fault("ErrorNonExistentMailbox", f"The SMTP address has no mailbox associated with it.")
                acting, impersonating = target, True
            handler = OPERATIONS.get(operation)
            if handler is None:
                raise Fault("ErrorInvalidOperation", f"The operation {operation} is not supported by this server.")
            ctx = Context(store, user, acting, impersonating)
            with store.lock:
                env = handler(ctx, op)
            em.requests.append({"op": operation, "user": user, "mailbox": acting, "impersonating": impersonating,
                                "fields": _requested_fields(op), "log": ctx.log})
            self._send(200, to_bytes(env), drop=drop, trickle=trickle)
        except Fault as exc:
            em.requests.append({"op": operation, "user": user, "fault": exc.code})
            self._send(500, to_bytes(fault(exc.code, exc.text, exc.extra)))
        except EwsError as exc:
            self._send(500, to_bytes(fault(exc.code, exc.text)))


def _requested_fields(op: etree._Element) -> list[str]:
    out = []
    for shape_name in ("ItemShape", "FolderShape"):
        shape = op.find(f"{{http://schemas.microsoft.com/exchange/services/2006/messages}}{shape_name}")
        if shape is None:
            continue
        base = shape.findtext(f"{{{TNS}}}BaseShape")
        out.append(f"BaseShape:{base}")
        mime = shape.findtext(f"{{{TNS}}}IncludeMimeContent")
        if mime == "true":
            out.append("IncludeMimeContent")
        for p in shape.iter(f"{{{TNS}}}FieldURI", f"{{{TNS}}}IndexedFieldURI", f"{{{TNS}}}ExtendedFieldURI"):
            out.append(p.get("FieldURI") or p.get("PropertyName") or p.get("PropertyTag") or p.get("PropertyId") or "?")
    return out


__all__ = ["EwsEmulator", "EwsError"]
