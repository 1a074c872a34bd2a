"""The HTTP side of the Graph emulator: HTTPS on loopback, OAuth2 + OpenID metadata, Graph v1.0.

MSAL only accepts an https authority, so the emulator speaks TLS with a
self-signed certificate (``emulator.ca_file``) and serves both the
"login.microsoftonline.com" part (``/{tenant}/v2.0/.well-known/openid-configuration``,
``/{tenant}/oauth2/v2.0/token``) and the Graph part (``/v1.0/...``).

Fault switches (server-side, as Microsoft's service shows them)::

    emulator.fail(429, "TooManyRequests", retry_after=1, match="messages/delta", after=2)
    emulator.fail(503, "ServiceUnavailable", retry_after=1)
    emulator.fail(502, "BadGateway", retry_after=1, method="POST", done=True)  # carried out, answer lost
    emulator.store.invalidate_tokens()      # 410 SyncStateNotFound for old delta/skip tokens
    emulator.expire_access_tokens()         # 401 InvalidAuthenticationToken for issued tokens
    emulator.store.mailbox(x).denied = True # 403 ErrorAccessDenied; an unknown mailbox: 404

A single user's sign-in (device authorization grant, as Microsoft's identity
platform documents it: ``/oauth2/v2.0/devicecode``, then the token endpoint
with ``urn:ietf:params:oauth:grant-type:device_code`` answering
``authorization_pending`` until the user acts, and ``refresh_token``)::

    emulator.add_public_app(client_id)      # "Allow public client flows: Yes"
    emulator.approve("anna@firma.de")        # the user enters the pending code and signs in
    emulator.decline()                       # ... or declines
    emulator.revoke("anna@firma.de")         # refresh tokens revoked (AADSTS50173); reason="consent": AADSTS65001

A delegated token reads only its user's mailbox (403 ErrorAccessDenied otherwise).
"""

from __future__ import annotations

import base64
import json
import secrets
import time
import uuid
import ssl
import subprocess
import tempfile
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

from tests.graph_emulator.model import GraphError, Store, decode_token, encode_token
from tests.graph_emulator.routes import route
from tests.closing_server import ClosingHTTPServer

GRAPH_SCOPE = "https://graph.microsoft.com/.default"
DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
VERIFICATION_URI = "https://microsoft.com/devicelogin"
_OIDC = {"openid", "profile", "offline_access", "email"}


def _b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data, separators=(",", ":")).encode()).decode().rstrip("=")


def _aad_error(error: str, code: int, text: str, **extra: Any) -> dict:
    """An error body of the identity platform's token endpoints."""
    trace, corr = str(uuid.uuid4()), str(uuid.uuid4())
    stamp = time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime())
    return {"error": error, "error_description": f"AADSTS{code}: {text} Trace ID: {trace} Correlation ID: {corr} "
            f"Timestamp: {stamp}", "error_codes": [code], "timestamp": stamp, "trace_id": trace,
            "correlation_id": corr, "error_uri": "https://login.microsoftonline.com/error?code=" + str(code), **extra}


@dataclass
class Fault:
    status: int
    code: str
    match: str = ""
    after: int = 0  # matching requests let through first
    times: int = 1
    retry_after: int | None = None
    seen: int = 0
    method: str = ""  # only requests of this method match ("" = any)
    done: bool = False  # the request is carried out first, then answered with the fault (a lost answer)


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
        self.grants: list[str] = []  # grant_type of every token request
        self.page_default = 10
        self.tenant_id = str(uuid.uuid4())
        self.public_apps: set[str] = set()
        self.device_flows: list[dict] = []  # every device code handed out, newest last
        self.device_interval = 5  # seconds between polls, as the devicecode answer says
        self.device_expires = 900
        self.refresh_tokens: dict[str, dict] = {}  # refresh token -> {"client", "user", "scopes"}
        self.token_users: dict[str, str] = {}  # delegated access token -> its user's address
        self._dir = Path(tempfile.mkdtemp(prefix="graph-emu-"))
        self.ca_file, self._key = _self_signed(self._dir)
        self._server: ClosingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.lock = threading.Lock()

    # -- set-up ----------------------------------------------------------------------
    def add_app(self, client_id: str, secret: str) -> None:
        self.apps[client_id] = secret

    def fail(self, status: int, code: str, *, match: str = "", after: int = 0, times: int = 1,
             retry_after: int | None = None, method: str = "", done: bool = False) -> Fault:
        fault = Fault(status, code, match, after, times, retry_after, method=method.upper(), done=done)
        with self.lock:
            self.faults.append(fault)
        return fault

    def expire_access_tokens(self) -> None:
        with self.lock:
            self.tokens.clear()
            self.token_users.clear()

    def add_public_app(self, client_id: str) -> None:
        self.public_apps.add(client_id)

    def _pending(self, user_code: str | None) -> dict:
        with self.lock:
            for flow in reversed(self.device_flows):
                if flow["state"] == "pending" and user_code in (None, flow["user_code"]):
                    return flow
        raise LookupError("no device code is waiting for a user")

    def approve(self, user: str, user_code: str | None = None) -> None:
        """The user opens the verification page, enters the (newest pending) code and signs in."""
        flow = self._pending(user_code)
        with self.lock:
            flow["state"], flow["user"] = "approved", user.lower()

    def decline(self, user_code: str | None = None) -> None:
        flow = self._pending(user_code)
        with self.lock:
            flow["state"] = "declined"

    def revoke(self, user: str, reason: str = "revoked") -> None:
        """The user's refresh tokens stop working: "revoked" (AADSTS50173) or "consent" (AADSTS65001)."""
        with self.lock:
            for rt in self.refresh_tokens.values():
                if rt["user"] == user.lower():
                    rt["revoked"] = reason
            for access in [a for a, u in self.token_users.items() if u == user.lower()]:
                self.tokens.pop(access, None)
                self.token_users.pop(access, None)

    def devicecode(self, form: dict[str, str]) -> tuple[int, dict]:
        client = form.get("client_id", "")
        if client not in self.apps and client not in self.public_apps:
            return 400, _aad_error("unauthorized_client", 700016, f"Application with identifier '{client}' was "
                                   "not found in the directory.")
        scopes = form.get("scope", "").split()
        if not [s for s in scopes if s not in _OIDC]:
            return 400, _aad_error("invalid_scope", 70011, "The provided request must include a 'scope' input parameter.")
        user_code = "".join(secrets.choice("ABCDEFGHJKLMNPQRSTUVWXYZ23456789") for _ in range(9))
        flow = {"device_code": secrets.token_urlsafe(48), "user_code": user_code, "client": client, "scopes": scopes,
                "state": "pending", "user": "", "expires_at": time.time() + self.device_expires}
        with self.lock:
            self.device_flows.append(flow)
        return 200, {"user_code": user_code, "device_code": flow["device_code"], "verification_uri": VERIFICATION_URI,
                     "expires_in": self.device_expires, "interval": self.device_interval,
                     "message": f"To sign in, use a web browser to open the page {VERIFICATION_URI} and enter the code "
                                f"{user_code} to authenticate."}

    def _user_tokens(self, client: str, user: str, scopes: list[str]) -> dict:
        granted = [s for s in scopes if s not in _OIDC]
        access, refresh = secrets.token_urlsafe(32), secrets.token_urlsafe(48)
        mb = self.store.mailboxes.get(user)
        oid = mb.user_id if mb is not None else str(uuid.uuid5(uuid.NAMESPACE_URL, user))
        now = int(time.time())
        claims = {"aud": client, "iss": f"{self.base}/{self.tenant_id}/v2.0", "iat": now, "nbf": now, "exp": now + 3600,
                  "name": mb.name if mb is not None else user, "oid": oid, "preferred_username": user,
                  "sub": secrets.token_urlsafe(24), "tid": self.tenant_id, "ver": "2.0"}
        id_token = f"{_b64({'typ': 'JWT', 'alg': 'RS256', 'kid': 'emulator'})}.{_b64(claims)}.{secrets.token_urlsafe(64)}"
        with self.lock:
            self.tokens[access] = client
            self.token_users[access] = user
            self.refresh_tokens[refresh] = {"client": client, "user": user, "scopes": scopes, "revoked": ""}
        return {"token_type": "Bearer", "scope": " ".join(granted + ["profile", "openid", "email"]),
                "expires_in": 3599, "ext_expires_in": 3599, "access_token": access, "refresh_token": refresh,
                "id_token": id_token, "client_info": _b64({"uid": oid, "utid": self.tenant_id})}

    def _device_grant(self, form: dict[str, str]) -> tuple[int, dict]:
        client = form.get("client_id", "")
        if client not in self.public_apps:
            return 401, _aad_error("invalid_client", 7000218, "The request body must contain the following parameter: "
                                   "'client_assertion' or 'client_secret'.")
        with self.lock:
            flow = next((f for f in self.device_flows if f["device_code"] == form.get("device_code")), None)
        if flow is None or flow["client"] != client or flow["state"] == "redeemed":
            return 400, _aad_error("bad_verification_code", 70019, "Verification code expired.")
        if time.time() > flow["expires_at"]:
            return 400, _aad_error("expired_token", 70020, "The provided value for the input parameter 'device_code' "
                                   "is not valid. This device code has expired.")
        if flow["state"] == "pending":
            return 400, _aad_error("authorization_pending", 70016, "OAuth 2.0 device flow error. Authorization is "
                                   "pending. Continue polling.")
        if flow["state"] == "declined":
            return 400, _aad_error("authorization_declined", 70000, "The user declined the authorization request.")
        with self.lock:
            flow["state"] = "redeemed"
        return 200, self._user_tokens(client, flow["user"], flow["scopes"])

    def _refresh_grant(self, form: dict[str, str]) -> tuple[int, dict]:
        client = form.get("client_id", "")
        with self.lock:
            rt = self.refresh_tokens.get(form.get("refresh_token", ""))
        if rt is None or rt["client"] != client:
            return 400, _aad_error("invalid_grant", 9002313, "Invalid request. Request is malformed or invalid.")
        if rt["revoked"] == "consent":
            return 400, _aad_error("invalid_grant", 65001, f"The user or administrator has not consented to use the "
                                   f"application with ID '{client}'. Send an interactive authorization request for "
                                   "this user and resource.", suberror="consent_required")
        if rt["revoked"]:
            return 400, _aad_error("invalid_grant", 50173, "The provided grant has expired due to it being revoked, "
                                   "a fresh auth token is needed. The user might have changed or reset their "
                                   "password.")
        wanted = form.get("scope", "").split()
        if [s for s in wanted if s not in _OIDC and s not in rt["scopes"]]:
            return 400, _aad_error("invalid_grant", 65001, f"The user or administrator has not consented to use the "
                                   f"application with ID '{client}'. Send an interactive authorization request for "
                                   "this user and resource.", suberror="consent_required")
        return 200, self._user_tokens(client, rt["user"], rt["scopes"])

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
        self._server = ClosingHTTPServer((self.host, self.port), handler)
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
        self.grants.append(str(grant))
        if grant == DEVICE_GRANT:
            return self._device_grant(form)
        if grant == "refresh_token":
            return self._refresh_grant(form)
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

    def fault_for(self, path: str, method: str = "GET") -> Fault | None:
        with self.lock:
            for fault in self.faults:
                if fault.times > 0 and fault.match in path and fault.method in ("", method):
                    fault.seen += 1
                    if fault.seen > fault.after:
                        fault.times -= 1
                        return fault
        return None


def _fault_error(fault: Fault) -> GraphError:
    headers = {"Retry-After": str(fault.retry_after)} if fault.retry_after is not None else {}
    messages = {429: "Application is over its MailboxConcurrency limit.",
                503: "The service is temporarily unavailable.",
                401: "Lifetime validation failed, the token is expired."}
    return GraphError(fault.status, fault.code, messages.get(fault.status, fault.code), headers)


class _Handler(BaseHTTPRequestHandler):
    emulator: GraphEmulator
    protocol_version = "HTTP/1.1"
    # headers and body leave in two writes: without TCP_NODELAY, Nagle's algorithm and the client's delayed
    # ACK hold the body ~40 ms on every keep-alive request, a stall Microsoft's front ends do not have
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def _send(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        data = b"" if body is None else json.dumps(body).encode()
        self.send_response(status)
        if body is not None:
            # as graph.microsoft.com sends it
            self.send_header("Content-Type", "application/json;odata.metadata=minimal;odata.streaming=true;"
                             "IEEE754Compatible=false;charset=utf-8")
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
            if segs[1:] == ["oauth2", "v2.0", "devicecode"] and method == "POST":
                form = {k: v[-1] for k, v in parse_qs(body.decode()).items()}
                status, answer = emu.devicecode(form)
                return self._send(status, answer)
            return self._send(404, {"error": "not_found", "error_description": path})
        # -- Graph ---------------------------------------------------------------------
        try:
            fault = emu.fault_for(self.path, method)
            if fault is not None and not fault.done:
                raise _fault_error(fault)
            auth = self.headers.get("Authorization", "")
            if not auth.startswith("Bearer ") or auth[7:] not in emu.tokens:
                raise GraphError(401, "InvalidAuthenticationToken",
                                 "Access token has expired or is not yet valid." if auth else
                                 "Access token is empty.")
            user = emu.token_users.get(auth[7:])
            if user and len(segs) > 2 and segs[1] == "users" and emu.store.mailboxes.get(segs[2].lower()) is not None \
                    and segs[2].lower() != user:
                raise GraphError(403, "ErrorAccessDenied", "Access is denied. Check credentials and try again.")
            payload = json.loads(body) if body else None
            prefer = [p.strip() for p in ",".join(self.headers.get_all("Prefer") or []).split(",") if p.strip()]
            status, answer, headers = route(emu, method, segs[1:], query, payload, prefer)
            if fault is not None:  # carried out, but the client hears the fault
                raise _fault_error(fault)
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
