"""The HTTP side of the Graph emulator: HTTPS on loopback, OAuth2 + OpenID metadata, Graph v1.0.

MSAL only accepts an https authority, so the emulator speaks TLS with a
self-signed certificate (``emulator.ca_file``) and serves both the
"login.microsoftonline.com" part (``/{tenant}/v2.0/.well-known/openid-configuration``,
``/{tenant}/oauth2/v2.0/token``) and the Graph part (``/v1.0/...``).

Fault switches (server-side, as Microsoft's service shows them)::

    emulator.fail(429, "TooManyRequests", retry_after=1, match="messages/delta", after=2)
    emulator.fail(503, "ServiceUnavailable", retry_after=1)
    emulator.store.invalidate_tokens()      # 410 SyncStateNotFound for old delta/skip tokens
    emulator.expire_access_tokens()         # 401 InvalidAuthenticationToken for issued tokens
    emulator.store.mailbox(x).denied = True # 403 ErrorAccessDenied; an unknown mailbox: 404
"""

from __future__ import annotations

import json
import secrets
import ssl
import subprocess
import tempfile
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

from tests.graph_emulator.model import GraphError, Store, decode_token, encode_token
from tests.graph_emulator.routes import route

GRAPH_SCOPE = "https://graph.microsoft.com/.default"


@dataclass
class Fault:
    status: int
    code: str
    match: str = ""
    after: int = 0  # matching requests let through first
    times: int = 1
    retry_after: int | None = None
    seen: int = 0


def _self_signed(directory: Path) -> tuple[Path, Path]:
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    return cert, key


class GraphEmulator:
    def __init__(self, host: str = "127.0.0.1", port: int = 0, tenant: str = "firma.onmicrosoft.com"):
        self.store = Store()
        self.host, self.port, self.tenant = host, port, tenant
        self.apps: dict[str, str] = {}  # client id -> secret
        self.tokens: dict[str, str] = {}  # access token -> client id
        self.faults: list[Fault] = []
        self.requests: list[tuple[str, str, dict[str, str]]] = []  # (method, path?query, headers)
        self.token_requests = 0
        self.page_default = 10
        self._dir = Path(tempfile.mkdtemp(prefix="graph-emu-"))
        self.ca_file, self._key = _self_signed(self._dir)
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.lock = threading.Lock()

    # -- set-up ----------------------------------------------------------------------
    def add_app(self, client_id: str, secret: str) -> None:
        self.apps[client_id] = secret

    def fail(self, status: int, code: str, *, match: str = "", after: int = 0, times: int = 1,
             retry_after: int | None = None) -> Fault:
        fault = Fault(status, code, match, after, times, retry_after)
        with self.lock:
            self.faults.append(fault)
        return fault

    def expire_access_tokens(self) -> None:
        with self.lock:
            self.tokens.clear()

    @property
    def base(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def authority(self) -> str:
        return f"{self.base}/{self.tenant}"

    @property
    def graph_url(self) -> str:
        return f"{self.base}/v1.0"

    def graph_requests(self, part: str = "") -> list[str]:
        return [p for m, p, _h in self.requests if p.startswith("/v1.0/") and part in p]

    def start(self) -> "GraphEmulator":
        handler = type("Handler", (_Handler,), {"emulator": self})
        self._server = ThreadingHTTPServer((self.host, self.port), handler)
        self._server.daemon_threads = True
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(str(self.ca_file), str(self._key))
        self._server.socket = ctx.wrap_socket(self._server.socket, server_side=True)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> "GraphEmulator":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # -- helpers for the routes ------------------------------------------------------
    def link(self, path: str, state: dict, kind: str) -> str:
        return f"{self.graph_url}{path}?{kind}={quote(encode_token(state))}"

    def openid_configuration(self, tenant: str) -> dict:
        base = f"{self.base}/{tenant}"
        return {
            "token_endpoint": f"{base}/oauth2/v2.0/token",
            "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
            "jwks_uri": f"{self.base}/{tenant}/discovery/v2.0/keys",
            "response_modes_supported": ["query", "fragment", "form_post"],
            "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
            "scopes_supported": ["openid", "profile", "email", "offline_access"],
            "issuer": f"{self.base}/{tenant}/v2.0",
            "request_uri_parameter_supported": False,
            "userinfo_endpoint": f"{self.base}/oidc/userinfo",
            "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
            "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode",
            "http_logout_supported": True,
            "frontchannel_logout_supported": True,
            "end_session_endpoint": f"{base}/oauth2/v2.0/logout",
            "claims_supported": ["sub", "iss", "aud", "exp", "iat", "nonce", "tid", "ver"],
            "kerberos_endpoint": f"{base}/kerberos",
            "tenant_region_scope": "EU",
            "cloud_instance_name": "microsoftonline.com",
            "cloud_graph_host_name": "graph.windows.net",
            "msgraph_host": "graph.microsoft.com",
            "rbac_url": "https://pas.windows.net",
        }

    def token(self, form: dict[str, str]) -> tuple[int, dict]:
        self.token_requests += 1
        grant = form.get("grant_type")
        if grant != "client_credentials":
            return 400, {"error": "unsupported_grant_type",
                         "error_description": f"AADSTS70003: The app requested an unsupported grant type '{grant}'."}
        client = form.get("client_id", "")
        if client not in self.apps:
            return 400, {"error": "unauthorized_client", "error_description":
                         f"AADSTS700016: Application with identifier '{client}' was not found in the directory."}
        if form.get("client_secret") != self.apps[client]:
            return 401, {"error": "invalid_client",
                         "error_description": "AADSTS7000215: Invalid client secret provided.", "error_codes": [7000215]}
        if GRAPH_SCOPE not in form.get("scope", "").split():
            return 400, {"error": "invalid_scope", "error_description": "AADSTS1002012: The provided value for scope "
                         f"{form.get('scope')} is not valid. Client credential flows must have a scope value with "
                         "/.default suffixed to the resource identifier (application ID URI)."}
        access = secrets.token_urlsafe(32)
        with self.lock:
            self.tokens[access] = client
        return 200, {"token_type": "Bearer", "expires_in": 3599, "ext_expires_in": 3599, "access_token": access}

    def fault_for(self, path: str) -> Fault | None:
        with self.lock:
            for fault in self.faults:
                if fault.times > 0 and fault.match in path:
                    fault.seen += 1
                    if fault.seen > fault.after:
                        fault.times -= 1
                        return fault
        return None


class _Handler(BaseHTTPRequestHandler):
    emulator: GraphEmulator
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def _send(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        data = b"" if body is None else json.dumps(body).encode()
        self.send_response(status)
        if body is not None:
            self.send_header("Content-Type", "application/json; odata.metadata=minimal; charset=utf-8")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _error(self, err: GraphError) -> None:
        body = {"error": {"code": err.code, "message": err.message,
                          "innerError": {"date": "2026-11-29T18:00:00", "request-id": secrets.token_hex(8),
                                         "client-request-id": self.headers.get("client-request-id", "")}}}
        self._send(err.status, body, err.headers)

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _handle(self, method: str) -> None:
        emu = self.emulator
        parts = urlsplit(self.path)
        path = unquote(parts.path)
        query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        body = self._body()
        emu.requests.append((method, self.path, {k.lower(): v for k, v in self.headers.items()}))
        segs = [s for s in path.split("/") if s]
        # -- the identity platform ----------------------------------------------------
        if len(segs) >= 2 and segs[0] != "v1.0":
            tenant = segs[0]
            if segs[1:] == ["v2.0", ".well-known", "openid-configuration"] and method == "GET":
                return self._send(200, emu.openid_configuration(tenant))
            if segs[1:] == ["oauth2", "v2.0", "token"] and method == "POST":
                form = {k: v[-1] for k, v in parse_qs(body.decode()).items()}
                status, answer = emu.token(form)
                return self._send(status, answer)
            return self._send(404, {"error": "not_found", "error_description": path})
        # -- Graph ---------------------------------------------------------------------
        try:
            fault = emu.fault_for(self.path)
            if fault is not None:
                headers = {"Retry-After": str(fault.retry_after)} if fault.retry_after is not None else {}
                messages = {429: "Application is over its MailboxConcurrency limit.",
                            503: "The service is temporarily unavailable.",
                            401: "Lifetime validation failed, the token is expired."}
                raise GraphError(fault.status, fault.code, messages.get(fault.status, fault.code), headers)
            auth = self.headers.get("Authorization", "")
            if not auth.startswith("Bearer ") or auth[7:] not in emu.tokens:
                raise GraphError(401, "InvalidAuthenticationToken",
                                 "Access token has expired or is not yet valid." if auth else
                                 "Access token is empty.")
            payload = json.loads(body) if body else None
            prefer = [p.strip() for p in ",".join(self.headers.get_all("Prefer") or []).split(",") if p.strip()]
            status, answer, headers = route(emu, method, segs[1:], query, payload, prefer)
            self._send(status, answer, headers)
        except GraphError as err:
            self._error(err)

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_PATCH(self) -> None:
        self._handle("PATCH")

    def do_DELETE(self) -> None:
        self._handle("DELETE")


__all__ = ["GraphEmulator", "Fault", "decode_token"]
