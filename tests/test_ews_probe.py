"""A no-change Exchange run without exchangelib (connectors/ewsprobe.py), against the EWS emulator.

The probe asks SyncFolderItems with ``BaseShape IdOnly`` and nothing else; exchangelib's reads ask for the
item fields the store needs: the emulator's request log tells the two apart.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from crm_bridge.connectors.base import AuthError, ConnectorError, SourceUnavailable, make_connector
from tests.ews_emulator import EwsEmulator
from tests.test_contract import View
from tests.test_exchange import PW_ENV, crm_for, ews, mail, mails, options, pull, tls_emulator  # noqa: F401  (ews: fixture)
from tests.test_exchange_oauth import oauth, token_command

PROBE = ["BaseShape:IdOnly"]


def probes(ews: EwsEmulator) -> list[dict]:
    return [r for r in ews.requests if r["op"] == "SyncFolderItems" and r.get("fields") == PROBE]


def reads(ews: EwsEmulator) -> list[dict]:
    """Every request but the probe's: what exchangelib sent."""
    return [r for r in ews.requests if not (r["op"] == "SyncFolderItems" and r.get("fields") == PROBE)]


def auth_options(ews: EwsEmulator, auth: str, tmp_path) -> dict:
    if auth == "oauth2":
        ews.accept_token("tok-1", "svc-crm")
        return oauth(ews, token_command(tmp_path, "tok-1"))
    opts = options(ews, folders=["inbox"], calendar=False, contacts=False)
    if auth == "ntlm":
        del opts["auth"]  # the default
        opts["username"] = "EXAMPLE\\svc-crm"
    return opts


def crm_sync(config, *flags: str) -> tuple[dict, str]:
    """``crm sync --json`` in its own process: (its result, the modules it imported)."""
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "crm_bridge.cli", "--config", str(config),
                           "sync", "--json"], capture_output=True, text=True, env=dict(os.environ), timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout), done.stderr


@pytest.mark.parametrize("auth", ["basic", "ntlm", "oauth2"])
def test_a_no_change_crm_sync_loads_no_exchangelib_in_each_auth_mode(tmp_path, ews, auth):
    mail(ews, "eins")
    crm = crm_for(tmp_path, ews, {"alice": auth_options(ews, auth, tmp_path)})
    first, imported = crm_sync(crm.config)
    assert first["results"][0]["added"] == 1 and "exchangelib" in imported
    ews.requests.clear()
    again, imported = crm_sync(crm.config)
    assert again["results"][0]["status"] == "ok", again
    assert "exchangelib" not in imported and "requests" not in imported.split()
    assert len(probes(ews)) == 1 and reads(ews) == []  # the Inbox, asked once
    assert {r["user"] for r in ews.requests} == {"svc-crm"}
    assert all(r["impersonating"] and r["mailbox"] == "alice@nordlicht.example" for r in ews.requests)
    # a change: the probe hands over, exchangelib reads from the same stored cursor
    mail(ews, "zwei")
    ews.requests.clear()
    third, imported = crm_sync(crm.config)
    assert third["results"][0]["added"] == 1 and "exchangelib" in imported
    assert len(probes(ews)) == 1 and [r["op"] for r in reads(ews)] == ["SyncFolderItems"]
    assert crm.json("status")["counts"]["mails"] == 2


def test_a_change_in_one_folder_of_several_is_read_and_nothing_is_lost(ews):
    mail(ews, "eins")
    view = View()
    first = pull(ews, view)
    ews.requests.clear()
    assert pull(ews, view, first.cursor).batches == []  # nothing changed, nothing to store
    assert len(probes(ews)) == 4 and reads(ews) == []  # Contacts, Inbox, Sent Items, Calendar
    mail(ews, "gesendet", folder="sentitems")
    ews.requests.clear()
    got = pull(ews, view, first.cursor)
    assert [r.subject for r in mails(got)] == ["gesendet"]
    assert [r["op"] for r in reads(ews)] == ["SyncFolderItems"] * 4
    assert len(probes(ews)) <= 4


def test_a_wrong_password_at_the_probe_is_the_same_one_line_and_not_repeated(ews, monkeypatch, tmp_path):
    for auth in ("basic", "ntlm"):
        ews.requests.clear()
        opts = auth_options(ews, auth, tmp_path)
        first = pull(ews, View(), **{k: v for k, v in opts.items() if k not in options(ews)} | {
            "auth": opts.get("auth", "ntlm"), "username": opts["username"]})
        monkeypatch.setenv(PW_ENV, "wrong")
        conn = make_connector("ex", opts)
        with pytest.raises(AuthError) as info:
            list(conn.pull(first.cursor, View()))
        assert str(info.value) == f"the server refused the password of {opts['username']} (HTTP 401)"
        with pytest.raises(AuthError) as plain:
            list(make_connector("ex", opts).pull(None, View()))  # the exchangelib path says the same
        assert str(plain.value) == str(info.value)
        monkeypatch.setenv(PW_ENV, "service-pw")


def test_an_invalid_sync_state_at_the_probe_means_the_full_comparison(tmp_path, ews):
    items = [mail(ews, f"Mail {n}") for n in range(3)]
    crm = crm_for(tmp_path, ews, {"alice": options(ews, folders=["inbox"], calendar=False, contacts=False)})
    crm("sync")
    ews.invalidate_sync_states()
    ews.store.delete(items[0])  # no new mail: only the comparison can find this
    ews.requests.clear()
    result = crm.json("sync")["results"]
    assert result[0]["status"] == "ok", result
    assert ews.requests[0]["fields"] == PROBE  # asked first; its ErrorInvalidSyncStateData handed over
    assert [r["op"] for r in ews.requests].count("FindItem") == 1
    assert crm.json("status")["counts"]["mails"] == 3  # none twice
    [gone] = crm.json("explain", "Mail-0@kunde.example")
    assert all(p.get("gone") for p in gone["seen_in"])


def test_server_busy_or_503_at_the_probe_hands_over_to_exchangelib(ews):
    mail(ews, "eins")
    view = View()
    first = pull(ews, view, folders=["inbox"], calendar=False, contacts=False)
    mail(ews, "zwei")
    ews.fail("busy", operation="SyncFolderItems", back_off_ms=10)
    got = pull(ews, view, first.cursor, folders=["inbox"], calendar=False, contacts=False)
    assert [r.subject for r in mails(got)] == ["zwei"]
    ews.fail("http", operation="SyncFolderItems", status=503)
    with pytest.raises(SourceUnavailable):  # the probe hands over; exchangelib's path meets the next 503 alike
        ews.fail("http", operation="SyncFolderItems", status=503)
        pull(ews, view, got.cursor, folders=["inbox"], calendar=False, contacts=False)


def test_autodiscover_result_in_the_cursor_spares_autodiscover_and_a_dead_one_is_looked_up_again(ews):
    mail(ews, "über Autodiscover")
    opts = {k: v for k, v in options(ews).items() if k != "server"}
    opts.update(autodiscover=True, autodiscover_url=ews.autodiscover_url, folders=["inbox"], calendar=False,
                contacts=False)

    def run(cursor):
        conn = make_connector("ex", opts)
        try:
            return list(conn.pull(cursor, View()))
        finally:
            conn.close()

    first = run(None)
    cursor = first[-1].cursor
    ews.autodiscover_fails = True  # not asked: the stored URL answers
    ews.requests.clear()
    assert run(cursor) == [] and len(probes(ews)) == 1 and reads(ews) == []
    ews.autodiscover_fails = False
    moved = dict(cursor, server=dict(cursor["server"], url="http://127.0.0.1:9/EWS/Exchange.asmx"))
    again = run(moved)  # nothing listens there: exchangelib's path discovers the URL again
    assert again and again[-1].cursor["server"]["url"] == ews.url


def test_the_probe_sends_no_password_to_a_plain_http_url_of_the_cursor_that_the_source_does_not_allow(ews):
    """The cursor's URL (autodiscover's answer of an earlier run) meets the rule of the configured URLs: http://
    only to a loopback host with allow_plaintext = true; else the probe stays quiet and exchangelib's path decides."""
    mail(ews, "im Klartext?")
    first = pull(ews, folders=["inbox"], calendar=False, contacts=False)  # http:// allowed: the cursor names it
    opts = {k: v for k, v in options(ews).items() if k != "server"}
    opts.update(autodiscover=True, autodiscover_url="https://127.0.0.1:1/autodiscover/autodiscover.xml",
                allow_plaintext=False, folders=["inbox"], calendar=False, contacts=False)
    ews.requests.clear()
    conn = make_connector("ex", opts)
    try:
        with pytest.raises(SourceUnavailable, match="autodiscover"):  # nothing answers there
            list(conn.pull(first.cursor, View()))
    finally:
        conn.close()
    assert ews.requests == []  # the password did not go out in clear text


def test_the_probe_verifies_tls_as_the_source_says(tmp_path, monkeypatch):
    emulator, cert, key = tls_emulator(tmp_path, monkeypatch)
    with emulator:
        mail(emulator, "verschlüsselt")
        opts = dict(folders=["inbox"], calendar=False, contacts=False, allow_plaintext=False)
        first = pull(emulator, ca_file=str(cert), **opts)
        emulator.requests.clear()
        assert pull(emulator, cursor=first.cursor, ca_file=str(cert), **opts).batches == []
        assert len(probes(emulator)) == 1 and reads(emulator) == []
        with pytest.raises(SourceUnavailable, match="TLS"):  # not trusted: handed over, and refused there too
            pull(emulator, cursor=first.cursor, **opts)
        for bad in (tmp_path / "gone.pem", key):  # a CA file that is missing, one that holds no certificate
            emulator.requests.clear()
            with pytest.raises(ConnectorError) as err:  # exchangelib's path says it, in one line
                pull(emulator, cursor=first.cursor, ca_file=str(bad), **opts)
            assert "\n" not in str(err.value) and emulator.requests == []


@pytest.mark.parametrize("switch", ["connection-close", "http-1.0"])
def test_an_ntlm_probe_on_a_server_that_ends_each_connection_hands_over_and_calls_no_password_wrong(
        ews, tmp_path, switch):
    """NTLM authenticates a connection: where the server ends it after the challenge (IIS with keep-alive off:
    ``Connection: close``; an HTTP/1.0 server or proxy: no header at all), the AUTHENTICATE leg would go out on a
    new connection and be refused. The probe hands over to exchangelib's path instead of calling the password
    wrong itself; a run then ends as a first run (exchangelib's path from the start) does."""
    from crm_bridge.connectors.ewsprobe import HandOver, Probe

    mail(ews, "eins")
    opts = auth_options(ews, "ntlm", tmp_path)
    conn = make_connector("ex", opts)
    try:
        cursor = [b.cursor for b in conn.pull(None, View()) if b.cursor][-1]
    finally:
        conn.close()
    [(folder_id, state)] = [(e["id"], e["state"]) for e in cursor["folders"].values()]
    probe = Probe(ews.url, verify=True, timeout=10, auth="ntlm", username=opts["username"],
                  password=lambda: "service-pw")
    assert probe.unchanged(cursor["server"]["api"], "alice@nordlicht.example", True, folder_id, state)
    probe.close()
    if switch == "connection-close":
        ews.keep_alive = False
    else:
        ews.http_version = "HTTP/1.0"
    before = ews.connections
    with pytest.raises(HandOver, match="ends the connection"):
        probe.unchanged(cursor["server"]["api"], "alice@nordlicht.example", True, folder_id, state)
    probe.close()
    assert ews.connections == before + 1  # the NEGOTIATE leg only: no AUTHENTICATE on a connection of its own

    def outcome(start) -> str:
        conn = make_connector("ex", opts)
        try:
            list(conn.pull(start, View()))
            return "ok"
        except ConnectorError as exc:
            return f"{type(exc).__name__}: {exc}"
        finally:
            conn.close()

    assert outcome(cursor) == outcome(None)  # (exchangelib's own words: not this module's to change)


def test_a_probe_answer_that_trickles_in_is_handed_over_at_the_deadline(ews):
    """A byte of the answer every 0.2 s passes a read timeout of 1 s for ever; the deadline of the whole answer
    ends it, and the probe hands over (exchangelib's path asks again)."""
    from crm_bridge.connectors.ewsprobe import HandOver, Probe

    mail(ews, "eins")
    first = pull(ews, folders=["inbox"], calendar=False, contacts=False)
    [(folder_id, state)] = [(e["id"], e["state"]) for e in first.cursor["folders"].values()]
    probe = Probe(ews.url, verify=True, timeout=1, auth="basic", username="svc-crm", password=lambda: "service-pw",
                  deadline=1.5)
    ews.fail("trickle", operation="SyncFolderItems", delay=0.2)
    started = time.monotonic()
    try:
        with pytest.raises(HandOver, match="connection problem"):
            probe.unchanged(first.cursor["server"]["api"], "alice@nordlicht.example", True, folder_id, state)
    finally:
        probe.close()
    assert time.monotonic() - started < 3.5
    assert probe.unchanged(first.cursor["server"]["api"], "alice@nordlicht.example", True, folder_id, state)
    probe.close()
