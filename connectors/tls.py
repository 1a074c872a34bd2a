"""Which certificates a client trusts: the TLS context of the HTTP clients and of IMAP, in one place.

:func:`context` is what :mod:`connectors.graphhttp`, :mod:`connectors.davhttp`,
:mod:`connectors.ewsprobe` and the IMAP connector build their connections
with:

- no CA configured: the system's trust store (``ssl.create_default_context``,
  which honours ``SSL_CERT_FILE`` / ``SSL_CERT_DIR``, as OpenSSL does);
- a CA file (PEM) or a CA directory (hashed names, as ``openssl rehash``
  makes them): that CA only, as ``requests``' ``verify=path`` did (Graph,
  DAV, the EWS probe), or in addition to the system's store (``system=True``:
  IMAP's ``ca_file``);
- ``verify=False``: no verification at all, only where the source's config
  says so (``verify_tls = false``); a CA named besides is then not read.

What differs between the clients stays with them: the EWS probe trusts
what ``requests`` would (``REQUESTS_CA_BUNDLE``, ``CURL_CA_BUNDLE``, else
certifi's bundle, see :mod:`connectors.ewsprobe`), Graph's client loads the
context once per session, DAV's once per client.

A CA that cannot serve is one line naming it (:class:`ConfigError`), not a
TLS verification error later or a traceback: a file that is missing or
unreadable, one that holds no certificate (empty, a private key, a
certificate in DER form), a directory without hashed certificate names.
"""

from __future__ import annotations

import os
import re
import ssl

from crm_bridge.connectors.base import ConfigError

_HASHED = re.compile(r"[0-9a-f]{8}\.r?\d+")  # OpenSSL's names in a CA directory (subject hash . n)


def context(ca: str | None = None, *, verify: bool = True, system: bool = False,
            label: str = "the CA file") -> ssl.SSLContext:
    """A client context: host names checked, certificates verified against ``ca`` (a file or a directory)
    and/or the system's store (see the module docstring); ``label`` names the CA's setting in messages."""
    if not verify:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        return ctx
    if not ca:
        return ssl.create_default_context()
    path = os.path.expanduser(ca)
    is_dir = os.path.isdir(path)
    if is_dir:
        _check_dir(path, label)
    cafile, capath = (None, path) if is_dir else (path, None)
    before = 0
    try:
        if system:
            ctx = ssl.create_default_context()
            before = ctx.cert_store_stats()["x509"]
            ctx.load_verify_locations(cafile=cafile, capath=capath)
        else:  # that CA only: the system's store is not loaded
            ctx = ssl.create_default_context(cafile=cafile, capath=capath)
    except ssl.SSLError as exc:
        raise ConfigError(_unusable(path, label, exc)) from None
    except OSError as exc:
        what = "no such file" if isinstance(exc, FileNotFoundError) else f"cannot be read ({type(exc).__name__})"
        raise ConfigError(f"{label} {path}: {what}") from None
    if not is_dir and ctx.cert_store_stats()["x509"] == before and not _pem_certificate(_head(path)):
        # (a file of CRLs only loads without error; a file of certificates the system's store has already
        # adds nothing to the count either, hence the look at the text)
        raise ConfigError(f"{label} {path} holds no certificate{_hint(path)}")
    return ctx


def _check_dir(path: str, label: str) -> None:
    try:
        names = os.listdir(path)
    except OSError as exc:
        raise ConfigError(f"{label} {path}: cannot be read ({type(exc).__name__})") from None
    if not any(_HASHED.fullmatch(n) for n in names):
        raise ConfigError(f"{label} {path} holds no certificate under a hashed name (OpenSSL looks them up as "
                          "<hash>.0: run `openssl rehash` on the directory, or name a PEM file)")


def _head(path: str, size: int = 1 << 20) -> bytes:
    try:
        with open(path, "rb") as fh:
            return fh.read(size)
    except OSError:
        return b""


def _pem_certificate(head: bytes) -> bool:
    return b"-----BEGIN CERTIFICATE-----" in head or b"-----BEGIN TRUSTED CERTIFICATE-----" in head


def _unusable(path: str, label: str, exc: ssl.SSLError) -> str:
    """The line for a file OpenSSL refused: no certificate in it at all, or one it cannot read."""
    if not _pem_certificate(_head(path)):
        return f"{label} {path} holds no certificate{_hint(path)}"
    return f"{label} {path}: a certificate in it cannot be read ({exc.reason or exc})"


def _hint(path: str) -> str:
    head = _head(path, 4096)
    if head[:1] == b"\x30":  # an ASN.1 SEQUENCE: DER
        return " in PEM form (it looks like DER: `openssl x509 -inform der -in FILE -out FILE.pem` converts it)"
    if b"PRIVATE KEY-----" in head:
        return " (it holds a private key: name the CA's certificate, a PEM file with -----BEGIN CERTIFICATE-----)"
    return " (a PEM file with -----BEGIN CERTIFICATE----- blocks is needed)"
