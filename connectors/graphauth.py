"""Signing in to Microsoft Graph with MSAL, and the file MSAL's state is kept in.

Two ways (``auth`` of an m365 source):

- ``client_secret`` (default): the app signs in as itself (client
  credentials, application permissions); unattended, many mailboxes.
- ``device_code``: one user signs in once, as the admin runs
  ``crm sources login NAME``: MSAL asks Entra ID for a code, the command
  prints Microsoft's message (a URL and the code) and waits while the user
  signs in on any device with a browser.  From then on each sync takes the
  cached access token, or renews it silently with the refresh token
  (``acquire_token_silent``); nothing in ``crm sync`` ever waits for a
  person.  A sign-in that is missing, expired or revoked (``invalid_grant``,
  ``interaction_required``) is one line telling the admin to run the login
  command again.

:class:`TokenFile` keeps MSAL's token cache and its HTTP metadata cache
(``http_cache``: the OpenID configuration of the authority) in one JSON
file, created readable only by its owner (0600, in a directory created
0700), so a run while the token is valid makes no request to the sign-in
service at all.  The metadata is kept as JSON (status, text, headers of
successful GETs only), never pickled.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import os
import stat
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, MutableMapping

from crm_bridge.connectors.base import AuthError, ConfigError, SourceUnavailable, TransientError, secret

if TYPE_CHECKING:
    from crm_bridge.connectors.m365 import M365Connector

log = logging.getLogger("crm.m365")

APP_SCOPE = "https://graph.microsoft.com/.default"
AUTH_MODES = ("client_secret", "device_code")
_HTTP_KEY = "CrmBridgeHttpCache"  # beside MSAL's own top-level keys (AccessToken, RefreshToken, ...)
_TOKENS_KEY = "CrmBridgeAccessTokens"
_INDEX = "_index_"  # msal.individual_cache's bookkeeping entry


class _Cached:
    """A cached HTTP answer, in the shape MSAL reads (status_code, text, headers)."""

    def __init__(self, status_code: int, text: str, headers: dict[str, str]):
        self.status_code, self.text, self.headers = status_code, text, headers

    def raise_for_status(self) -> None:
        if self.status_code >= 400:
            raise ValueError(f"HTTP {self.status_code}")


def _http_from_json(data: Any) -> dict:
    out: dict = {}
    if not isinstance(data, dict):
        return out
    for key, value in data.items():
        if key == _INDEX or not isinstance(value, dict):
            continue
        if isinstance(value.get("status_code"), int) and isinstance(value.get("text"), str):
            out[key] = _Cached(value["status_code"], value["text"], dict(value.get("headers") or {}))
    index = data.get(_INDEX)
    if isinstance(index, list) and len(index) == 2 and isinstance(index[0], list) and isinstance(index[1], dict):
        seq = [list(e) for e in index[0] if isinstance(e, list) and len(e) == 3 and e[2] in out]
        stamps = {k: list(v) for k, v in index[1].items() if k in out and isinstance(v, list) and len(v) == 2}
        out[_INDEX] = (seq, stamps)
    else:
        out.clear()
    return out


def _http_to_json(http: MutableMapping) -> dict:
    """Only answers to GETs that succeeded (discovery): no token answers, no throttled errors."""
    keep = {k: v for k, v in http.items() if k != _INDEX and isinstance(k, str) and k.startswith("GET ")
            and 200 <= int(getattr(v, "status_code", 0) or 0) < 300}
    out: dict[str, Any] = {k: {"status_code": int(v.status_code), "text": str(v.text),
                               "headers": {str(a): str(b) for a, b in dict(v.headers).items()}} for k, v in keep.items()}
    index = http.get(_INDEX)
    if out and isinstance(index, (tuple, list)) and len(index) == 2:
        seq, stamps = index
        out[_INDEX] = [[list(e) for e in seq if e[2] in keep], {k: list(v) for k, v in stamps.items() if k in keep}]
    elif out:
        return {}
    return out


class TokenFile:
    """MSAL's token cache, its HTTP metadata cache and the access tokens in use, in an owner-only file.

    The file is MSAL's serialized cache with two more top-level keys: the
    discovery metadata (``http_cache``) and, per sign-in, the access token
    MSAL last handed out with its expiry, so that a run within the token's
    lifetime neither asks the sign-in service nor loads MSAL.  MSAL's part
    is read by MSAL (``SerializableTokenCache``), only when MSAL is needed.
    """

    def __init__(self, path: Path | None):
        self.path = path
        self._cache: Any = None
        self._state: dict = {}  # MSAL's part, as read
        self._http_saved: dict = {}
        self.tokens: dict[str, dict] = {}  # sign-in key -> {"token", "expires_at"}
        self._tokens_saved: dict[str, dict] = {}
        self.http: dict = {}
        if path is None:
            return
        try:
            if path.is_file():
                self._tighten()
                data = json.loads(path.read_text(encoding="utf-8"))
                if isinstance(data, dict):
                    http, tokens = data.pop(_HTTP_KEY, {}), data.pop(_TOKENS_KEY, {})
                    self._http_saved = http if isinstance(http, dict) else {}
                    self.http = _http_from_json(self._http_saved)
                    if isinstance(tokens, dict):
                        self.tokens = {k: dict(v) for k, v in tokens.items() if isinstance(v, dict)
                                       and isinstance(v.get("token"), str) and isinstance(v.get("expires_at"), (int, float))}
                        self._tokens_saved = copy.deepcopy(self.tokens)
                    self._state = data
        except (OSError, ValueError) as exc:  # unreadable or damaged: start afresh (a new sign-in may be needed)
            log.warning("the token cache %s could not be read (%s); starting without it", path, type(exc).__name__)

    @property
    def cache(self) -> Any:
        """MSAL's SerializableTokenCache, loaded on first use."""
        if self._cache is None:
            import msal

            self._cache = msal.SerializableTokenCache()
            if self._state:
                self._cache.deserialize(json.dumps(self._state))
        return self._cache

    def valid_token(self, key: str, margin: float = 300.0) -> str | None:
        entry = self.tokens.get(key)
        if entry is not None and float(entry["expires_at"]) - margin > time.time():
            return str(entry["token"])
        return None

    def remember(self, key: str, result: dict) -> None:
        try:
            expires_in = int(result.get("expires_in") or 0)
        except (TypeError, ValueError):
            expires_in = 0
        if expires_in > 0:
            self.tokens[key] = {"token": str(result["access_token"]), "expires_at": int(time.time()) + expires_in}
        else:
            self.tokens.pop(key, None)

    def forget(self, key: str) -> None:
        self.tokens.pop(key, None)

    def _tighten(self) -> None:
        assert self.path is not None
        mode = stat.S_IMODE(os.stat(self.path).st_mode)
        if mode & 0o077:
            log.warning("the token cache %s was readable by others; now readable only by its owner", self.path)
            os.chmod(self.path, 0o600)

    def save(self) -> None:
        if self.path is None:
            return
        http = _http_to_json(self.http)
        now = time.time()
        tokens = {k: v for k, v in self.tokens.items() if float(v["expires_at"]) > now}
        changed = self._cache is not None and self._cache.has_state_changed
        if not changed and http == self._http_saved and tokens == self._tokens_saved:
            return
        data = json.loads(self._cache.serialize()) if changed else dict(self._state)
        if http:
            data[_HTTP_KEY] = http
        if tokens:
            data[_TOKENS_KEY] = tokens
        parent = self.path.parent
        if not parent.is_dir():
            parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=parent)  # created 0600
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(data, fh)
            os.chmod(tmp, 0o600)
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        if self._cache is not None:
            self._cache.has_state_changed = False
        self._state = {k: v for k, v in data.items() if k not in (_HTTP_KEY, _TOKENS_KEY)}
        self._http_saved, self._tokens_saved = http, copy.deepcopy(tokens)


def delegated_scopes(conn: "M365Connector") -> list[str]:
    """The narrowest delegated permissions this source needs (Graph's short names)."""
    scopes = ["Mail.Read"]
    if conn.want_calendar:
        scopes.append("Calendars.Read")
    scopes.append("Contacts.ReadWrite" if conn.cards_folder else "Contacts.Read")
    if conn.tasks_list:
        scopes.append("Tasks.ReadWrite")
    return scopes


class SignIn:
    """One connector's MSAL application, token cache and current access token."""

    def __init__(self, conn: "M365Connector"):
        self.conn = conn
        self.file: TokenFile | None = None
        self.app: Any = None
        self.token: str | None = None

    @property
    def login_command(self) -> str:
        return f"python -m crm_bridge.cli sources login {self.conn.name}"

    @contextlib.contextmanager
    def errors(self) -> Iterator[None]:
        """MSAL's requests go through the connector's session: its transport errors, as for Graph."""
        from crm_bridge.connectors.graphhttp import TLSError

        host = self.conn.authority.split("/")[2]
        try:
            yield
        except TLSError as exc:
            raise SourceUnavailable(f"TLS: the certificate of {host} is not trusted ({str(exc)[:160]}); "
                                    "set ca_file") from None
        except OSError as exc:  # graphhttp.HTTPError and what else the socket raises
            raise TransientError(f"the sign-in service {host} could not be reached: {type(exc).__name__}") from None

    def token_file(self) -> TokenFile:
        if self.file is None:
            self.file = TokenFile(self.conn.token_cache)
        return self.file

    @property
    def key(self) -> str:
        """Which sign-in an access token in the file belongs to."""
        conn = self.conn
        who = f"{conn.auth}:{conn.mailbox}:{' '.join(delegated_scopes(conn))}" if conn.auth == "device_code" \
            else f"{conn.auth}:{APP_SCOPE}"
        return f"{conn.authority} {conn.client_id} {who}"

    def application(self) -> Any:
        if self.app is not None:
            return self.app
        import msal

        conn = self.conn
        self.token_file()
        assert self.file is not None
        common = dict(authority=conn.authority, token_cache=self.file.cache, http_client=conn._http(),
                      http_cache=self.file.http, instance_discovery=False)
        with self.errors():
            try:
                if conn.auth == "device_code":
                    self.app = msal.PublicClientApplication(conn.client_id, **common)
                else:
                    client_secret = secret(conn.name, conn.options, "client_secret")
                    if client_secret is None:
                        raise ConfigError(f"sources.{conn.name}: set client_secret_env or client_secret_command")
                    self.app = msal.ConfidentialClientApplication(conn.client_id, client_credential=client_secret,
                                                                  **common)
            except ValueError as exc:
                raise SourceUnavailable(f"the sign-in authority {conn.authority} did not answer as Entra ID "
                                        f"does: {str(exc).splitlines()[0][:200]}") from None
        return self.app

    def save(self) -> None:
        if self.file is not None:
            self.file.save()

    def access_token(self, fresh: bool = False) -> str:
        if self.token is not None and not fresh:
            return self.token
        held = self.token_file()
        if fresh:
            held.forget(self.key)
        else:
            cached = held.valid_token(self.key)
            if cached is not None:  # what MSAL handed out last run, still valid: MSAL is not needed
                self.token = cached
                return cached
        app = self.application()
        assert self.file is not None
        if self.conn.auth == "device_code":
            result = self._silent(app, fresh)
        else:
            if fresh:  # the service refused the cached token: drop it, so MSAL asks for a new one
                for at in list(self.file.cache.search(self.file.cache.CredentialType.ACCESS_TOKEN)):
                    self.file.cache.remove_at(at)
            with self.errors():
                result = app.acquire_token_for_client(scopes=[APP_SCOPE])
            if "access_token" not in result:
                raise AuthError(self._app_refused(result))
        self.file.remember(self.key, result)
        self.save()
        self.token = str(result["access_token"])
        return self.token

    def _account(self, app: Any) -> Any:
        accounts = app.get_accounts()
        mine = [a for a in accounts if str(a.get("username", "")).lower() == self.conn.mailbox]
        if mine:
            return mine[0]
        return accounts[0] if len(accounts) == 1 else None

    def _silent(self, app: Any, fresh: bool) -> dict:
        conn = self.conn
        account = self._account(app)
        if account is None:
            raise AuthError(f"nobody has signed in to {conn.mailbox} for source {conn.name} yet (auth = "
                            f"\"device_code\"): run {self.login_command}")
        with self.errors():
            result = app.acquire_token_silent_with_error(delegated_scopes(conn), account, force_refresh=fresh)
        if result and "access_token" in result:
            return result
        if not result:
            raise AuthError(f"the sign-in of {account.get('username') or conn.mailbox} does not cover what source "
                            f"{conn.name} needs (or it was removed): run {self.login_command}")
        error = str(result.get("error") or "?")
        code = _aadsts(result)
        why = {"invalid_grant": "has expired or was revoked", "interaction_required": "needs the user again",
               "consent_required": "lacks consent"}.get(str(result.get("suberror") or error), "was refused")
        raise AuthError(f"the sign-in of {account.get('username') or conn.mailbox} {why} ({error}"
                        f"{', ' + code if code else ''}): run {self.login_command}")

    def _app_refused(self, result: dict) -> str:
        error = result.get("error", "?")
        text = (result.get("error_description") or "").splitlines()
        hint = {"invalid_client": "the client secret is wrong or expired: create a new one in the app "
                                  "registration (Certificates & secrets) and update client_secret_env",
                "unauthorized_client": "no app with this client_id in the tenant: check client_id and tenant",
                "invalid_scope": "the app's Graph permissions are missing: grant admin consent"}.get(error, "")
        return f"Entra ID refused the sign-in of app {self.conn.client_id} ({error}): {hint or (text[0][:200] if text else '')}"

    def login(self, say: Callable[[str], None]) -> str:
        """The device code flow: ``say`` Microsoft's message, wait for the user; the signed-in user's name."""
        conn = self.conn
        if conn.auth != "device_code":
            raise ConfigError(f"sources.{conn.name} signs in as an app (client secret); set auth = \"device_code\" "
                              "for a user's sign-in")
        app = self.application()
        with self.errors():
            flow = app.initiate_device_flow(scopes=delegated_scopes(conn))
        if "user_code" not in flow:
            raise AuthError(f"Entra ID gave no sign-in code for app {conn.client_id} "
                            f"({flow.get('error', '?')}{', ' + _aadsts(flow) if _aadsts(flow) else ''}): "
                            + _login_hint(flow))
        say(str(flow.get("message") or f"Open {flow.get('verification_uri')} and enter the code {flow['user_code']}"))
        with self.errors():
            result = app.acquire_token_by_device_flow(flow)
        if "access_token" not in result:
            error = str(result.get("error") or "?")
            reason = {"authorization_declined": "the user declined the sign-in",
                      "authorization_pending": "the code expired before the sign-in was finished",
                      "expired_token": "the code expired before the sign-in was finished",
                      "bad_verification_code": "Entra ID did not know the code"}.get(error, _login_hint(result))
            raise AuthError(f"no sign-in for source {conn.name} ({error}): {reason}; run {self.login_command} again")
        assert self.file is not None
        self.file.remember(self.key, result)
        self.save()
        self.token = str(result["access_token"])
        claims = result.get("id_token_claims") or {}
        who = str(claims.get("preferred_username") or claims.get("upn") or conn.mailbox)
        if who.lower() != conn.mailbox:
            say(f"note: {who} signed in, but the source reads the mailbox {conn.mailbox}; with delegated permissions "
                f"a user reads only their own mailbox: sign in as {conn.mailbox} unless that is intended")
        return who


def _aadsts(result: dict) -> str:
    codes = result.get("error_codes")
    if isinstance(codes, list) and codes:
        return f"AADSTS{codes[0]}"
    text = str(result.get("error_description") or "")
    return text.split(":", 1)[0] if text.startswith("AADSTS") else ""


def _login_hint(result: dict) -> str:
    error, code = str(result.get("error") or ""), _aadsts(result)
    if code == "AADSTS7000218" or error == "invalid_client":
        return "the app registration must allow public client flows (Authentication -> Allow public client flows: Yes)"
    if error == "unauthorized_client":
        return "no app with this client_id in the tenant: check client_id and tenant"
    if error == "invalid_scope":
        return "the app's delegated Graph permissions are missing"
    text = str(result.get("error_description") or "").splitlines()
    return text[0][:200] if text else "see the sign-in logs in Entra ID"
