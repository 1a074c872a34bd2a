"""The Exchange connector's credentials on exchangelib's transport: per-source TLS, and OAuth 2.0 tokens renewed.

Moved out of connectors/exchange.py unchanged (that module is the connector's reading and writing):
:class:`_Transport` is the HTTP adapter exchangelib uses for every source of the process,
:class:`_CommandToken` a source's access token from ``token_command`` / ``token_env``.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Mapping
from urllib.parse import urlsplit

from crm_bridge.connectors.base import ConfigError, secret

log = logging.getLogger("crm.exchange")


class _Transport:
    """Per-origin certificate verification and bearer-token renewal for exchangelib's HTTP sessions.

    exchangelib takes one HTTP adapter class for the whole process; this
    one looks up each request's origin, so that each source keeps its own
    ``verify_tls`` / ``ca_file``.  A request refused with HTTP 401 whose
    bearer token came from a source's ``token_command`` gets the token
    renewed (:class:`_CommandToken`) and is sent once more.
    """

    lock = threading.Lock()
    verify: dict[str, Any] = {}
    tokens: dict[str, "_CommandToken"] = {}  # every token handed out -> whose it is
    installed = False

    @classmethod
    def install(cls, url: str, verify: Any) -> None:
        import requests.adapters
        from exchangelib.protocol import BaseProtocol

        parts = urlsplit(url)
        with cls.lock:
            cls.verify[f"{parts.scheme}://{parts.netloc}".lower()] = verify
            if cls.installed:
                return

            class Adapter(requests.adapters.HTTPAdapter):
                def send(self, request, **kwargs):
                    p = urlsplit(request.url)
                    origin = f"{p.scheme}://{p.netloc}".lower()
                    if origin in cls.verify:
                        kwargs["verify"] = cls.verify[origin]
                    response = super().send(request, **kwargs)
                    scheme, _, token = (request.headers.get("Authorization") or "").partition(" ")
                    owner = cls.tokens.get(token) if scheme == "Bearer" else None
                    if owner is None:
                        return response
                    if response.status_code != 401:
                        owner.proven(token)
                        return response
                    fresh = owner.renew(token)
                    if fresh is None:
                        return response
                    response.close()
                    request.headers["Authorization"] = "Bearer " + fresh
                    return super().send(request, **kwargs)

            BaseProtocol.HTTP_ADAPTER_CLS = Adapter
            cls.installed = True


class _CommandToken:
    """A source's OAuth 2.0 access token: from ``token_command`` / ``token_env``, run again when refused.

    A token the server refuses is renewed once; if the renewed token is
    refused before any request succeeded with it, renewal stops and the
    request fails (an ``AuthError``).  A run longer than a token's life
    renews as often as it needs, each time after a success.  ``failure``
    keeps why a renewal could not be had (the command's own error line),
    for the connector's error message.
    """

    def __init__(self, name: str, options: Mapping[str, Any]) -> None:
        self.name, self.options = name, options
        self.lock = threading.Lock()
        self.credentials: Any = None  # exchangelib's credentials, which hold the current token
        self.unproven = False  # renewed and not yet accepted once
        self.failure: str | None = None
        self.current = self._fetch()

    def _fetch(self) -> str:
        value = secret(self.name, self.options, "token")
        if value is None:
            raise ConfigError(f"sources.{self.name}: auth = \"oauth2\" needs token_command or token_env")
        value = value.strip()
        if value.lower().startswith("bearer "):
            value = value[7:].strip()
        if not value or any(ch.isspace() for ch in value):
            raise ConfigError(f"sources.{self.name}.token_command printed no access token")
        with _Transport.lock:
            _Transport.tokens[value] = self
        return value

    def proven(self, token: str) -> None:
        if token == self.current and self.unproven:
            self.unproven = False

    def renew(self, refused: str) -> str | None:
        """A token to try instead of ``refused``, or None when there is none worth trying."""
        with self.lock:
            if refused != self.current:
                return self.current  # another request renewed it meanwhile
            if self.unproven or self.failure:
                return None
            try:
                fresh = self._fetch()
            except ConfigError as exc:
                self.failure = str(exc)
                return None
            log.info("%s: the server refused the access token; ran the token command again", self.name)
            self.current, self.unproven = fresh, True
            if self.credentials is not None:
                with self.credentials.lock:
                    self.credentials.access_token = _bearer(fresh)
                    self.credentials.client.populate_token_attributes(_bearer(fresh))
                    self.credentials.client.token = _bearer(fresh)
            return fresh

    def exchangelib_credentials(self) -> Any:
        if self.credentials is None:
            from exchangelib.credentials import OAuth2AuthorizationCodeCredentials

            # no client id or secret: exchangelib uses the token as given and never asks a token endpoint
            self.credentials = OAuth2AuthorizationCodeCredentials(access_token=_bearer(self.current))
            self.credentials.source = self.name  # exchangelib shares a Protocol between equal credentials only
        return self.credentials


def _bearer(token: str) -> dict[str, str]:
    return {"access_token": token, "token_type": "Bearer"}
