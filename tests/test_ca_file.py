"""A CA file that exists but holds no certificate: one line naming it, from each client (connectors/tls.py).

Each client against its real server over TLS: the Graph emulator (m365), Radicale (CalDAV), the EWS emulator
(the no-change probe of the Exchange connector), Dovecot (IMAP). Before, the same file was a TLS verification
error, an SSL error with OpenSSL's words ("[X509] PEM lib"), or an exchangelib message naming no file.
"""

from __future__ import annotations

import pytest

from crm_bridge.connectors.base import ConfigError, make_connector
from crm_bridge.connectors.tls import context
from tests.dav_servers import start_radicale
from tests.imap_server import _self_signed, dovecot_tls  # noqa: F401  (fixture)
from tests.test_contract import View
from tests.test_dav_tls import pull as dav_pull
from tests.test_exchange import mail as ews_mail, pull as ews_pull, tls_emulator
from tests.test_imap import MemoryView, connector as imap_connector, mail as imap_mail
from tests.test_m365 import _server, graph, options as m365_options  # noqa: F401  (fixtures)


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory) -> dict[str, str]:
    """Files that exist and hold no certificate: empty, a private key, a certificate in DER form, text."""
    import subprocess

    root = tmp_path_factory.mktemp("bad-ca")
    cert, key = _self_signed(root)
    der = root / "cert.der"
    subprocess.run(["openssl", "x509", "-in", str(cert), "-outform", "der", "-out", str(der)], check=True)
    (root / "empty.pem").write_bytes(b"")
    (root / "notes.txt").write_text("the CA is on the intranet\n")
    return {"empty": str(root / "empty.pem"), "key": str(key), "der": str(der), "text": str(root / "notes.txt")}


def one_line(err: BaseException, path: str) -> None:
    text = str(err)
    assert isinstance(err, ConfigError), repr(err)
    assert path in text and "holds no certificate" in text and "\n" not in text, text


def test_the_helper_says_which_file_holds_no_certificate_and_why(bad_files, tmp_path):
    for kind, path in bad_files.items():
        for system in (False, True):
            with pytest.raises(ConfigError) as err:
                context(path, system=system, label="sources.x.ca_file")
            one_line(err.value, path)
            assert str(err.value).startswith(f"sources.x.ca_file {path} holds no certificate")
    with pytest.raises(ConfigError, match="private key"):
        context(bad_files["key"])
    with pytest.raises(ConfigError, match="DER"):
        context(bad_files["der"])
    (tmp_path / "plain").mkdir()  # a directory without OpenSSL's hashed names finds nothing
    with pytest.raises(ConfigError, match="hashed name"):
        context(str(tmp_path / "plain"))
    assert context(bad_files["key"], verify=False).verify_mode.name == "CERT_NONE"  # not read when not verifying


def test_graph(graph, bad_files):
    for path in bad_files.values():
        graph.requests.clear()
        graph.token_requests = 0
        conn = make_connector("m365", m365_options(graph, ca_file=path))
        try:
            with pytest.raises(ConfigError) as err:
                list(conn.pull(None, View()))
        finally:
            conn.close()
        one_line(err.value, path)
        assert graph.requests == [] and graph.token_requests == 0


@pytest.fixture(scope="module")
def https_radicale(tmp_path_factory):
    root = tmp_path_factory.mktemp("radicale-ca")
    server = start_radicale(root / "server", tls=_self_signed(root))
    server.make_calendar("work")
    yield server
    server.stop()


def test_dav(https_radicale, bad_files, monkeypatch):
    assert dav_pull(https_radicale, monkeypatch, verify_tls=str(https_radicale.cert)) == []  # the right CA: fine
    for path in bad_files.values():
        with pytest.raises(ConfigError) as err:
            dav_pull(https_radicale, monkeypatch, verify_tls=path)
        one_line(err.value, path)
        assert str(err.value).startswith("sources.cal.verify_tls ")


def test_exchange_the_probe_and_exchangelibs_path(tmp_path, monkeypatch, bad_files):
    emulator, cert, _key = tls_emulator(tmp_path, monkeypatch)
    with emulator:
        ews_mail(emulator, "verschlüsselt")
        opts = dict(folders=["inbox"], calendar=False, contacts=False, allow_plaintext=False)
        first = ews_pull(emulator, ca_file=str(cert), **opts)  # exchangelib's path, with the right CA
        for path in bad_files.values():
            emulator.requests.clear()
            before = emulator.connections
            with pytest.raises(ConfigError) as err:  # nothing changed: the probe asks, and says it
                ews_pull(emulator, cursor=first.cursor, ca_file=path, **opts)
            one_line(err.value, path)
            assert emulator.requests == [] and emulator.connections == before
            with pytest.raises(ConfigError) as err:  # a first run: exchangelib's path says the same
                ews_pull(emulator, ca_file=path, **opts)
            one_line(err.value, path)
            assert emulator.requests == [] and emulator.connections == before


def test_imap(dovecot_tls, bad_files):  # noqa: F811
    dovecot_tls.append("alice", "INBOX", imap_mail(1))
    for path in bad_files.values():
        with pytest.raises(ConfigError) as err:
            list(imap_connector(dovecot_tls, port=dovecot_tls.ssl_port, tls="implicit", ca_file=path)
                 .pull(None, MemoryView()))
        one_line(err.value, path)
        assert str(err.value).startswith("sources.alice-imap.ca_file ")
