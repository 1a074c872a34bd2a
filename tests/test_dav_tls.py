"""CalDAV over HTTPS: certificates are verified unless the config says otherwise."""

from __future__ import annotations

import pytest

from crm_bridge.connectors.base import SourceUnavailable
from crm_bridge.connectors.dav import CalDavConnector
from tests.dav_servers import start_radicale
from tests.imap_server import _self_signed

PW_ENV = "CRM_TEST_DAV_TLS_PASSWORD"


class EmptyView:
    def known(self, scope):
        return {}

    def scopes(self):
        return []


@pytest.fixture(scope="module")
def https_radicale(tmp_path_factory):
    root = tmp_path_factory.mktemp("radicale-tls")
    server = start_radicale(root / "server", tls=_self_signed(root))
    server.make_calendar("work")
    server.put(f"{server.home}work/", "e1.ics", (
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//t//EN\r\nBEGIN:VEVENT\r\nUID:tls-1\r\n"
        "DTSTAMP:20260101T000000Z\r\nDTSTART:20260105T100000Z\r\nDURATION:PT1H\r\nSUMMARY:over TLS\r\n"
        "END:VEVENT\r\nEND:VCALENDAR\r\n"))
    yield server
    server.stop()


def pull(server, monkeypatch, **options):
    monkeypatch.setenv(PW_ENV, server.password)
    conn = CalDavConnector("cal", {"type": "caldav", "url": server.url, "username": server.user,
                                   "password_env": PW_ENV, "calendars": ["work"], **options})
    try:
        return [r.summary for b in conn.pull(None, EmptyView()) for r in b.records]
    finally:
        conn.close()


def test_untrusted_certificate_is_refused_by_default(https_radicale, monkeypatch):
    assert https_radicale.url.startswith("https://")
    with pytest.raises(SourceUnavailable, match="TLS"):
        pull(https_radicale, monkeypatch)


def test_private_ca_file_is_trusted(https_radicale, monkeypatch):
    assert pull(https_radicale, monkeypatch, verify_tls=str(https_radicale.cert)) == ["over TLS"]


def test_verification_can_be_switched_off_explicitly(https_radicale, monkeypatch):
    assert pull(https_radicale, monkeypatch, verify_tls=False) == ["over TLS"]


def test_digest_authorization_matches_the_rfc_example():
    """RFC 2617 section 3.5: the request digest for Mufasa's GET of /dir/index.html."""
    from crm_bridge.connectors.davhttp import _Http, _parse_challenge

    http = _Http("src", "Mufasa", "Circle Of Life", True, 5)
    http._digest = _parse_challenge(
        'Digest realm="testrealm@host.com", qop="auth,auth-int", '
        'nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", opaque="5ccc069c403ebaf9f0171e9517f40e41"')
    header = http._digest_header("GET", "/dir/index.html", cnonce="0a4f113b")
    assert 'response="6629fae49393a05397450978507c4ef1"' in header
    assert "nc=00000001" in header and 'opaque="5ccc069c403ebaf9f0171e9517f40e41"' in header
