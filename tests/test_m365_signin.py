"""A single user's sign-in by device code for m365 sources, against the Graph emulator.

MSAL runs unmodified: the emulator serves the identity platform's devicecode
endpoint and the token endpoint's device_code and refresh_token grants; a test
thread plays the user who enters the code and signs in (an emulator switch).
"""

from __future__ import annotations

import json
import os
import stat
import threading
import time

import pytest

from crm_bridge.connectors.base import AuthError, make_connector
from tests.graph_emulator import GraphEmulator
from tests.graph_emulator.server import DEVICE_GRANT, VERIFICATION_URI
from tests.test_m365 import _server, crm_for, graph, mail, mails, options, pull  # noqa: F401 - fixtures
from tests.test_contract import View

PUBLIC = "99999999-8888-7777-6666-555555555555"


def user_options(graph: GraphEmulator, tmp_path, **extra) -> dict:
    opts = {k: v for k, v in options(graph, **extra).items() if k != "client_secret_env"}
    opts.setdefault("token_cache", str(tmp_path / "state" / "anna.tokens.json"))
    return {**opts, "client_id": PUBLIC, "auth": "device_code"}


def the_user(graph: GraphEmulator, user: str = "anna@firma.de", action: str = "approve") -> threading.Thread:
    """Waits until MSAL polls a pending code at least once, then signs in (or declines)."""

    def act() -> None:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if graph.device_flows and graph.grants.count(DEVICE_GRANT) >= 1:
                if action == "approve":
                    graph.approve(user)
                elif action == "decline":
                    graph.decline()
                return
            time.sleep(0.05)

    thread = threading.Thread(target=act, daemon=True)
    thread.start()
    return thread


def test_device_code_sign_in_then_each_run_is_silent(graph, tmp_path):
    graph.add_public_app(PUBLIC)
    mail(graph, "Hallo")
    opts = user_options(graph, tmp_path, calendar=False, contacts=False)
    conn = make_connector("m365", opts)
    said: list[str] = []
    user = the_user(graph)
    assert conn.login(said.append) == "anna@firma.de"
    conn.close()
    user.join()
    [flow] = graph.device_flows
    assert len(said) == 1 and VERIFICATION_URI in said[0] and flow["user_code"] in said[0]
    assert graph.grants.count(DEVICE_GRANT) >= 2  # authorization_pending, then the tokens
    assert set(flow["scopes"]) >= {"Mail.Read", "Contacts.Read", "offline_access"}
    cache = tmp_path / "state" / "anna.tokens.json"
    assert stat.S_IMODE(os.stat(cache).st_mode) == 0o600 and stat.S_IMODE(os.stat(cache.parent).st_mode) == 0o700
    assert set(json.loads(cache.read_text())["RefreshToken"])
    # a sync: the cached access token, no request to the sign-in service at all
    graph.grants.clear()
    graph.requests.clear()
    view = View()
    first = pull(graph, view, **opts)
    assert [r.subject for r in mails(first)] == ["Hallo"]
    assert graph.grants == [] and not [p for _m, p, _h in graph.requests if not p.startswith("/v1.0/")]
    # the access token expires: renewed silently with the refresh token, in the middle of the run
    graph.expire_access_tokens()
    mail(graph, "Noch eine")
    second = pull(graph, view, first.cursor, **opts)
    assert [r.subject for r in mails(second)] == ["Noch eine"] and graph.grants == ["refresh_token"]
    # the next run takes the renewed token from the file
    third = pull(graph, view, second.cursor, **opts)
    assert third.records == [] and graph.grants == ["refresh_token"]


@pytest.mark.parametrize("reason,code", [("revoked", "AADSTS50173"), ("consent", "AADSTS65001")])
def test_a_revoked_sign_in_is_one_line_naming_the_login_command(graph, tmp_path, reason, code):
    graph.add_public_app(PUBLIC)
    opts = user_options(graph, tmp_path, calendar=False, contacts=False)
    conn = make_connector("m365", opts)
    the_user(graph)
    conn.login(lambda _t: None)
    conn.close()
    graph.revoke("anna@firma.de", reason)
    started = time.monotonic()
    with pytest.raises(AuthError) as err:
        pull(graph, **opts)
    text = str(err.value)
    assert "\n" not in text and code in text and "run python -m crm_bridge.cli sources login m365" in text
    assert time.monotonic() - started < 10 and graph.device_flows[1:] == []  # no new code asked for, nobody waited


def test_no_sign_in_yet_is_one_line_and_never_starts_a_device_flow(graph, tmp_path):
    graph.add_public_app(PUBLIC)
    with pytest.raises(AuthError) as err:
        pull(graph, **user_options(graph, tmp_path))
    assert "nobody has signed in to anna@firma.de" in str(err.value) and "sources login" in str(err.value)
    assert graph.device_flows == [] and not (tmp_path / "state" / "anna.tokens.json").exists()


def test_declined_expired_and_not_public_sign_ins_are_one_line(graph, tmp_path):
    graph.add_public_app(PUBLIC)
    conn = make_connector("m365", user_options(graph, tmp_path))
    the_user(graph, action="decline")
    with pytest.raises(AuthError, match="declined"):
        conn.login(lambda _t: None)
    graph.device_expires = 2  # nobody enters the code
    with pytest.raises(AuthError, match="code expired"):
        conn.login(lambda _t: None)
    conn.close()
    graph.public_apps.clear()  # the app registration does not allow public client flows
    graph.add_app(PUBLIC, "a-secret")
    graph.device_expires = 900
    conn = make_connector("m365", user_options(graph, tmp_path))
    the_user(graph)
    with pytest.raises(AuthError) as err:
        conn.login(lambda _t: None)
    conn.close()
    assert "Allow public client flows" in str(err.value) and "\n" not in str(err.value)


def test_a_signed_in_user_may_not_read_another_mailbox(graph, tmp_path):
    from crm_bridge.connectors.base import ConnectorError

    graph.add_public_app(PUBLIC)
    conn = make_connector("m365", user_options(graph, tmp_path))
    the_user(graph, user="bob@firma.de")
    said: list[str] = []
    assert conn.login(said.append) == "bob@firma.de"
    assert "sign in as anna@firma.de" in said[-1]
    conn.close()
    with pytest.raises(ConnectorError, match="signed-in user may not read the mailbox anna@firma.de"):
        pull(graph, **user_options(graph, tmp_path))


def test_crm_sources_login_and_sync_through_the_command(graph, tmp_path):
    graph.add_public_app(PUBLIC)
    mail(graph, "Angebot", message_id="<a@kunde.example>")
    opts = {k: v for k, v in user_options(graph, tmp_path).items() if k != "token_cache"}
    crm = crm_for(tmp_path, {"anna": opts})
    before = crm("sync", ok=False)
    assert before.exit_code != 0 and "crm_bridge.cli sources login anna" in before.output
    the_user(graph)
    result = crm("sources", "login", "anna")
    assert graph.device_flows[0]["user_code"] in result.output and "signed in as anna@firma.de" in result.output
    cache = tmp_path / "anna.tokens.json"  # the default: next to the store
    assert stat.S_IMODE(os.stat(cache).st_mode) == 0o600
    crm("sync")
    assert crm.json("status")["counts"]["mails"] == 1
    (tmp_path / "app").mkdir()
    app = crm_for(tmp_path / "app", {"office": options(graph)})
    refused = app("sources", "login", "office", ok=False)
    assert refused.exit_code != 0 and 'set auth = "device_code"' in refused.output and graph.device_flows[1:] == []


def test_app_only_runs_reuse_the_cached_token_and_discovery(graph, tmp_path):
    cache = tmp_path / "app.tokens.json"
    mail(graph, "Eins")
    view = View()
    first = pull(graph, view, calendar=False, contacts=False, token_cache=str(cache))
    assert graph.grants == ["client_credentials"]
    graph.requests.clear()
    again = pull(graph, view, first.cursor, calendar=False, contacts=False, token_cache=str(cache))
    assert again.records == [] and graph.grants == ["client_credentials"]
    assert [p for _m, p, _h in graph.requests if not p.startswith("/v1.0/")] == []  # no discovery, no token
    assert len(graph.requests) == 2  # one delta request per folder
    data = json.loads(cache.read_text())
    assert "app-secret" not in cache.read_text() and data["CrmBridgeHttpCache"]
    # within the token's lifetime MSAL is not even set up; past it, MSAL renews it
    conn = make_connector("m365", options(graph, calendar=False, contacts=False, token_cache=str(cache)))
    assert list(conn.pull(again.cursor, view)) and conn._signin.app is None
    conn.close()
    for entry in data["CrmBridgeAccessTokens"].values():
        entry["expires_at"] = 0
    cache.write_text(json.dumps(data))
    graph.expire_access_tokens()
    last = pull(graph, view, again.cursor, calendar=False, contacts=False, token_cache=str(cache))
    assert last.records == [] and graph.grants == ["client_credentials", "client_credentials"]


def test_a_token_cache_readable_by_others_is_made_owner_only(graph, tmp_path):
    cache = tmp_path / "app.tokens.json"
    cache.write_text("{}")
    os.chmod(cache, 0o644)
    pull(graph, calendar=False, contacts=False, token_cache=str(cache))
    assert stat.S_IMODE(os.stat(cache).st_mode) == 0o600


def test_the_devicecode_answers_have_the_identity_platforms_shape(graph):
    import niquests

    graph.add_public_app(PUBLIC)
    base = f"{graph.authority}/oauth2/v2.0"
    code = niquests.post(f"{base}/devicecode", data={"client_id": PUBLIC, "scope": "Mail.Read offline_access"},
                         verify=str(graph.ca_file)).json()
    assert set(code) == {"device_code", "user_code", "verification_uri", "expires_in", "interval", "message"}
    pending = niquests.post(f"{base}/token", data={"grant_type": DEVICE_GRANT, "client_id": PUBLIC,
                                                   "device_code": code["device_code"]}, verify=str(graph.ca_file))
    body = pending.json()
    assert pending.status_code == 400 and body["error"] == "authorization_pending" and body["error_codes"] == [70016]
    assert {"error_description", "timestamp", "trace_id", "correlation_id", "error_uri"} <= set(body)
    graph.approve("anna@firma.de")
    tokens = niquests.post(f"{base}/token", data={"grant_type": DEVICE_GRANT, "client_id": PUBLIC,
                                                  "device_code": code["device_code"]}, verify=str(graph.ca_file)).json()
    assert {"token_type", "scope", "expires_in", "access_token", "refresh_token", "id_token"} <= set(tokens)


def test_sources_login_of_a_source_without_a_users_sign_in_is_one_line(tmp_path, graph):
    for sub in ("cur", "new", "tmp"):
        (tmp_path / "mail" / sub).mkdir(parents=True)
    crm = crm_for(tmp_path, {"box": {"type": "maildir", "path": str(tmp_path / "mail")}})
    result = crm("sources", "login", "box", ok=False)
    assert result.exit_code != 0 and "has no sign-in of a user" in result.output and "Traceback" not in result.output
    missing = crm("sources", "login", "nobody", ok=False)
    assert missing.exit_code != 0 and "no source named 'nobody'" in missing.output
