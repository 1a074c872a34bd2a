"""A run where nothing changed, without exchangelib: one SyncFolderItems per folder over the standard library.

Loading exchangelib (with requests, urllib3, spnego, dnspython, pygments...)
costs a no-change ``crm sync`` more than everything else together.  When the
cursor already knows everything a run needs -- the EWS URL (the configured
``server``, or the autodiscover result stored with the cursor), the server's
version, and the FolderId and SyncState of every folder -- this module asks
the server once per folder, with the stored SyncState, ``BaseShape IdOnly``
and ``MaxChangesReturned 1``, over :mod:`http.client`.

The answer decides:

* no change in any folder (``Changes`` empty, ``IncludesLastItemInRange``
  true): the run is over; a SyncState the server sent anew is stored
  (:meth:`Probe.run` returns the new states);
* a change anywhere, or anything this module does not handle itself
  (an error response such as ``ErrorInvalidSyncStateData`` or
  ``ErrorServerBusy``, HTTP 5xx, a dropped connection, a TLS failure, an
  answer not complete within :data:`ANSWER_DEADLINE`, a proxy in the
  environment, a token refused twice over...): ``None``, and
  the connector reads every folder through exchangelib from the same
  stored cursor.  The probe's answer is thrown away, so nothing it saw is
  lost; exchangelib's path handles every error as before;
* a server that ends the connection after the NTLM challenge (``Connection:
  close``, HTTP/1.0): ``None`` (the handshake cannot complete on one
  connection; a password is not called wrong for that);
* HTTP 401 to a password (Basic or NTLM): :class:`~connectors.base.AuthError`
  at once, with the connector's own line; a wrong password is not sent
  again.  An OAuth token refused once is renewed as exchangelib's path does
  (``token.renew``), and the request repeated once.

The request carries what exchangelib's would: ``RequestServerVersion``,
``ExchangeImpersonation`` with ``access = "impersonation"``, the same
``Authorization`` (Basic, NTLM through spnego, Bearer), the source's
``verify_tls`` / ``ca_file`` (else the CA bundle requests would use), the
source's ``timeout``.  A CA file that cannot serve (missing, holding no
certificate) is :class:`~connectors.base.ConfigError`, one line naming it
(:mod:`connectors.tls`).
"""

from __future__ import annotations

import base64
import os
import re
from typing import Any, Callable
from urllib.parse import urlsplit

from crm_bridge.connectors.base import AuthError
from crm_bridge.connectors.deadline import arm as arm_deadline

SOAP = "http://schemas.xmlsoap.org/soap/envelope/"
M = "http://schemas.microsoft.com/exchange/services/2006/messages"
T = "http://schemas.microsoft.com/exchange/services/2006/types"
_PROXY_VARS = ("http_proxy", "https_proxy", "all_proxy")
#: seconds one answer may take in all (never less than the source's timeout): see connectors/deadline.py
ANSWER_DEADLINE = 300.0


def escape(text: str) -> str:
    """XML text or attribute value (xml.sax.saxutils would cost the probe more time than the question)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


class HandOver(Exception):
    """The probe cannot tell: read through exchangelib (the reason is for the log)."""


def request_body(api: str, mailbox: str, impersonate: bool, folder_id: str, state: str) -> bytes:
    header = f'<t:RequestServerVersion Version="{escape(api)}"/>'
    if impersonate:
        header += (f"<t:ExchangeImpersonation><t:ConnectingSID><t:PrimarySmtpAddress>{escape(mailbox)}"
                   "</t:PrimarySmtpAddress></t:ConnectingSID></t:ExchangeImpersonation>")
    return (f"<?xml version='1.0' encoding='utf-8'?>\n"
            f'<s:Envelope xmlns:s="{SOAP}" xmlns:m="{M}" xmlns:t="{T}"><s:Header>{header}</s:Header><s:Body>'
            f"<m:SyncFolderItems><m:ItemShape><t:BaseShape>IdOnly</t:BaseShape></m:ItemShape>"
            f'<m:SyncFolderId><t:FolderId Id="{escape(folder_id)}"/></m:SyncFolderId>'
            f"<m:SyncState>{escape(state)}</m:SyncState><m:MaxChangesReturned>1</m:MaxChangesReturned>"
            f"</m:SyncFolderItems></s:Body></s:Envelope>").encode()


def read_answer(body: bytes) -> str:
    """The new SyncState of an answer that reports no change; HandOver for anything else."""
    from xml.etree import ElementTree

    if b"<!DOCTYPE" in body or b"<!ENTITY" in body:
        raise HandOver("a DTD in the answer")
    try:
        root = ElementTree.fromstring(body)
    except ElementTree.ParseError as exc:
        raise HandOver(f"unreadable answer: {exc}") from None
    message = root.find(f"{{{SOAP}}}Body/{{{M}}}SyncFolderItemsResponse/{{{M}}}ResponseMessages/"
                        f"{{{M}}}SyncFolderItemsResponseMessage")
    if message is None:
        raise HandOver("no SyncFolderItemsResponseMessage")
    code = (message.findtext(f"{{{M}}}ResponseCode") or "").strip()
    if message.get("ResponseClass") != "Success" or code != "NoError":
        raise HandOver(code or str(message.get("ResponseClass")))
    changes = message.find(f"{{{M}}}Changes")
    if changes is not None and len(changes):
        raise HandOver("changes")
    if (message.findtext(f"{{{M}}}IncludesLastItemInRange") or "").strip() != "true":
        raise HandOver("more to read")
    state = message.findtext(f"{{{M}}}SyncState")
    if not state:
        raise HandOver("no SyncState")
    return state


class Probe:
    """One HTTP connection to the EWS URL, asking SyncFolderItems per folder.

    ``authorization()`` gives the Authorization header of a request (Basic,
    Bearer) or None for NTLM (a handshake per request on this connection).
    """

    def __init__(self, url: str, *, verify: Any, timeout: int, auth: str, username: str,
                 password: Callable[[], str], token: Any = None, deadline: float = ANSWER_DEADLINE) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise HandOver("not an http(s) URL")
        if any(os.environ.get(v) or os.environ.get(v.upper()) for v in _PROXY_VARS):
            raise HandOver("a proxy is configured in the environment")  # requests would use it
        self.url, self.parts = url, parts
        self.path = parts.path + (f"?{parts.query}" if parts.query else "")
        self.verify, self.timeout = verify, timeout
        self.limit = max(deadline, timeout)  # one answer in all (a server trickling bytes: handed over)
        self.auth, self.username, self.password, self.token = auth, username, password, token
        self.conn: Any = None
        self._ssl: Any = None

    # -- transport -------------------------------------------------------------
    def _context(self) -> Any:
        """The CA the source names, else the bundle requests would use, not the system's store: exchangelib's
        path (requests) trusts REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE, else certifi's bundle, and the probe must
        trust exactly that. A probe that trusted the system's store could pass a server that exchangelib then
        refuses (or refuse one it passes): runs without changes would succeed while runs with changes fail."""
        from crm_bridge.connectors.tls import context

        if self.verify is False:
            return context(verify=False)
        if isinstance(self.verify, str):
            return context(self.verify)
        for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
            if os.environ.get(name):
                return context(os.environ[name], label=name)
        return context(_certifi(), label="certifi's CA bundle")

    def _connection(self) -> Any:
        if self.conn is None:
            import http.client

            host, port = self.parts.hostname or "", self.parts.port
            if self.parts.scheme == "https":
                if self._ssl is None:
                    self._ssl = self._context()
                self.conn = http.client.HTTPSConnection(host, port, timeout=self.timeout, context=self._ssl)
            else:
                self.conn = http.client.HTTPConnection(host, port, timeout=self.timeout)
        return self.conn

    def close(self) -> None:
        conn, self.conn = self.conn, None
        if conn is not None:
            conn.close()

    def _post(self, body: bytes, authorization: str | None) -> tuple[int, Any, bytes]:
        headers = {"Content-Type": "text/xml; charset=utf-8", "Accept": "text/xml",
                   "User-Agent": "crm-bridge (EWS probe)"}
        if authorization:
            headers["Authorization"] = authorization
        for attempt in (0, 1):
            conn = self._connection()  # (a CA file that cannot serve: ConfigError, one line naming it)
            arm_deadline(conn, self.timeout, self.limit)
            try:
                conn.request("POST", self.path, body=body, headers=headers)
                response = conn.getresponse()
                data = response.read()
            except OSError as exc:
                self.close()
                if attempt == 0 and _stale(exc):
                    continue  # a kept-alive connection the server had closed: once more, freshly
                raise HandOver(f"connection problem: {type(exc).__name__}") from None
            except Exception as exc:  # http.client's own (BadStatusLine, RemoteDisconnected...)
                self.close()
                raise HandOver(f"connection problem: {type(exc).__name__}") from None
            if response.will_close:  # "Connection: close", or HTTP/1.0 without keep-alive: http.client has
                self.close()         # closed the socket; the next request goes out on a new connection
            return response.status, response, data
        raise HandOver("connection problem")

    # -- auth ------------------------------------------------------------------
    def _send(self, body: bytes) -> bytes:
        if self.auth == "ntlm":
            status, data = self._ntlm(body)
        elif self.auth == "oauth2":
            token = self.token.current
            status, _r, data = self._post(body, "Bearer " + token)
            if status == 401:
                fresh = self.token.renew(token)
                if fresh is None:
                    raise HandOver("the access token was refused")  # exchangelib's path says it in its words
                status, _r, data = self._post(body, "Bearer " + fresh)
                if status == 401:
                    raise HandOver("the renewed access token was refused")
                self.token.proven(fresh)
            else:
                self.token.proven(token)
        else:
            basic = base64.b64encode(f"{self.username}:{self.password()}".encode()).decode()
            status, _r, data = self._post(body, "Basic " + basic)
        if status == 401:
            raise AuthError(f"the server refused the password of {self.username} (HTTP 401)")
        if status != 200:
            raise HandOver(f"HTTP {status}")
        return data

    def _ntlm(self, body: bytes) -> tuple[int, bytes]:
        import spnego

        ctx = spnego.client(self.username, self.password(), hostname=self.parts.hostname or "unspecified",
                            service="HTTP", protocol="ntlm")
        status, response, data = self._post(body, "NTLM " + base64.b64encode(ctx.step() or b"").decode())
        if status != 401:
            return status, data
        if response.will_close:
            # NTLM authenticates the connection (MS-NLMP): the AUTHENTICATE leg on a new one would be refused and
            # look like a wrong password; exchangelib's path meets the server as a first run does
            raise HandOver("the server ends the connection during the NTLM handshake")
        found = re.search(r"NTLM\s+([A-Za-z0-9+/=]+)", response.getheader("WWW-Authenticate", "") or "")
        if found is None or self.conn is None:
            raise HandOver("no NTLM challenge")
        try:
            answer = ctx.step(base64.b64decode(found.group(1)))
        except Exception as exc:
            raise HandOver(f"NTLM: {type(exc).__name__}") from None
        status, _r, data = self._post(body, "NTLM " + base64.b64encode(answer or b"").decode())
        return status, data

    # -- the question ----------------------------------------------------------
    def unchanged(self, api: str, mailbox: str, impersonate: bool, folder_id: str, state: str) -> str:
        """The folder's SyncState after asking for its changes since ``state``; HandOver when there are any."""
        return read_answer(self._send(request_body(api, mailbox, impersonate, folder_id, state)))


def _stale(exc: OSError) -> bool:
    return isinstance(exc, (ConnectionResetError, BrokenPipeError, ConnectionAbortedError))


def _certifi() -> str | None:
    try:
        import certifi
    except ImportError:
        return None
    return certifi.where()
