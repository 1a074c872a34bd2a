"""Autodiscover's EWS URL meets the rule of a configured server URL: no password over plain http
(https://, or http:// only to a loopback host with allow_plaintext = true). Against the EWS emulator."""

from __future__ import annotations

import pytest

from crm_bridge.connectors.base import SourceUnavailable, make_connector
from tests.conftest import Crm, write_config
from tests.ews_emulator import EwsEmulator
from tests.test_contract import View
from tests.test_exchange import PW_ENV, ews, mail, options  # noqa: F401 - fixture


@pytest.fixture
def tls_ews(tmp_path, monkeypatch):
    from tests.imap_server import _self_signed

    cert, key = _self_signed(tmp_path)
    emulator = EwsEmulator(tls=(str(cert), str(key)))
    emulator.store.add_user("svc-crm", "service-pw", impersonation=True)
    emulator.store.add_user("alice", "alice-pw", mailbox="alice@nordlicht.example", name="Alice Adler")
    emulator.ca_file = str(cert)  # type: ignore[attr-defined]
    monkeypatch.setenv(PW_ENV, "service-pw")
    with emulator:
        yield emulator


def discovering(ews: EwsEmulator, **extra) -> dict:
    opts = {k: v for k, v in options(ews).items() if k != "server"}
    opts.update(autodiscover=True, autodiscover_url=ews.autodiscover_url, folders=["inbox"], calendar=False,
                contacts=False, **extra)
    return opts


def pull_subjects(opts: dict) -> list[str]:
    conn = make_connector("ex", opts)
    try:
        return [r.subject for b in conn.pull(None, View()) for r in b.records]
    finally:
        conn.close()


def test_autodiscover_over_https_answering_a_plain_http_ews_url_is_refused_before_the_password_goes_out(tls_ews):
    from crm_bridge.connectors.ewsdiscover import discover

    mail(tls_ews, "verschlüsselt")
    opts = discovering(tls_ews, ca_file=tls_ews.ca_file, allow_plaintext=False)
    assert pull_subjects(opts) == ["verschlüsselt"]  # the https EWS URL it hands out by default
    plain = tls_ews.url.replace("https://", "http://")
    tls_ews.autodiscover_ews_url = plain
    tls_ews.requests.clear()
    with pytest.raises(SourceUnavailable, match=f"EWS URL {plain}, which would send the password in clear text"):
        pull_subjects(opts)
    assert tls_ews.requests == []  # no EWS request went out
    with pytest.raises(SourceUnavailable, match="clear text"):
        discover("alice@nordlicht.example", "svc-crm", "service-pw", tls_ews.autodiscover_url, verify=tls_ews.ca_file)


def test_plain_http_ews_url_only_to_a_loopback_host_with_allow_plaintext(ews):
    from crm_bridge.connectors.ewsdiscover import discover

    mail(ews, "lokal")
    # autodiscover over plain http on loopback, allowed: a loopback http EWS URL is allowed too
    assert pull_subjects(discovering(ews)) == ["lokal"]
    assert discover("alice@nordlicht.example", "svc-crm", "service-pw", ews.autodiscover_url,
                    allow_plaintext=True) == ews.url
    # ... not without allow_plaintext = true
    with pytest.raises(SourceUnavailable, match="clear text"):
        discover("alice@nordlicht.example", "svc-crm", "service-pw", ews.autodiscover_url)
    # ... and never to another host
    ews.autodiscover_ews_url = "http://mail.nordlicht.example/EWS/Exchange.asmx"
    with pytest.raises(SourceUnavailable, match="http://mail.nordlicht.example/EWS/Exchange.asmx, which would send"):
        pull_subjects(discovering(ews))


def test_the_refusal_is_one_readable_line_in_sync(tmp_path, tls_ews):
    tls_ews.autodiscover_ews_url = tls_ews.url.replace("https://", "http://")
    crm = Crm(write_config(tmp_path / "crm.toml", customers=(("Kunde GmbH", ["kunde.example"]),),
                           internal=("nordlicht.example",),
                           sources={"alice": discovering(tls_ews, ca_file=tls_ews.ca_file, allow_plaintext=False)}))
    result = crm("sync", ok=False)
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert "clear text" in result.output and "service-pw" not in result.output
    assert len([line for line in result.output.splitlines() if "clear text" in line]) == 1
