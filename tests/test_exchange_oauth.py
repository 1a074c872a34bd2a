"""Exchange sources with auth = "oauth2": a bearer token from token_command, renewed once when refused."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from crm_bridge.connectors.base import AuthError, ConfigError, make_connector
from tests.conftest import write_config
from tests.ews_emulator import EwsEmulator
from tests.test_contract import View
from tests.test_exchange import CUSTOMERS, ews, mail, options  # noqa: F401  (ews: fixture)

def token_command(tmp_path: Path, *tokens: str, fail: bool = False) -> list[str]:
    """A command printing ``tokens`` in turn (the last one again and again), counting its runs in ``runs``."""
    script = tmp_path / "print_ews_token.py"
    script.write_text(textwrap.dedent(f"""
        import pathlib, sys
        runs = pathlib.Path({str(tmp_path / "runs")!r})
        n = int(runs.read_text()) if runs.exists() else 0
        runs.write_text(str(n + 1))
        tokens = {list(tokens)!r}
        if {fail!r}:
            print("no refresh token, please sign in again", file=sys.stderr)
            sys.exit(2)
        if tokens:
            print(tokens[min(n, len(tokens) - 1)])
    """), encoding="utf-8")
    return [sys.executable, str(script)]


def runs(tmp_path: Path) -> int:
    path = tmp_path / "runs"
    return int(path.read_text()) if path.exists() else 0


def oauth(ews: EwsEmulator, command: list[str], **extra) -> dict:
    opts = options(ews, auth="oauth2", token_command=command, folders=["inbox"], calendar=False, contacts=False,
                   **extra)
    del opts["password_env"]
    return opts


def test_a_sync_with_an_oauth2_token_sends_it_as_bearer_and_works(tmp_path, ews):
    mail(ews, "mit Token")
    ews.accept_token("tok-1", "svc-crm")
    conn = make_connector("ex", oauth(ews, token_command(tmp_path, "tok-1")))
    try:
        got = list(conn.pull(None, View()))
    finally:
        conn.close()
    assert [r.subject for b in got for r in b.records] == ["mit Token"]
    assert runs(tmp_path) == 1 and ews.refused_tokens == []
    assert {r["user"] for r in ews.requests} == {"svc-crm"}


def test_a_token_the_server_refuses_is_renewed_through_the_command_once(tmp_path, ews):
    mail(ews, "erste")
    ews.accept_token("tok-1", "svc-crm")
    conn = make_connector("ex", oauth(ews, token_command(tmp_path, "tok-1", "tok-2")))
    view = View()
    try:
        for b in conn.pull(None, view):
            view.apply(b)
        # the token expires while the connector (and its HTTP sessions) live on
        ews.expire_token("tok-1")
        ews.accept_token("tok-2", "svc-crm")
        mail(ews, "zweite")
        got = list(conn.pull(None, view))
    finally:
        conn.close()
    assert "zweite" in [r.subject for b in got for r in b.records]
    assert runs(tmp_path) == 2 and ews.refused_tokens == ["tok-1"]


def test_a_first_token_that_is_already_expired_is_renewed_in_a_crm_sync(tmp_path, ews):
    mail(ews, "abgelaufen")
    ews.accept_token("tok-new", "svc-crm")
    config = write_config(tmp_path / "crm.toml", customers=CUSTOMERS,
                          sources={"ex": oauth(ews, token_command(tmp_path, "tok-old", "tok-new"))})
    done = crm(config, "sync", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["results"][0]["status"] == "ok"
    assert runs(tmp_path) == 2 and ews.refused_tokens == ["tok-old"]


def test_a_renewed_token_that_is_refused_too_is_one_line_and_no_loop(tmp_path, ews):
    mail(ews, "nie")
    with pytest.raises(AuthError) as info:
        list(make_connector("ex", oauth(ews, token_command(tmp_path, "bad-1", "bad-2"))).pull(None, View()))
    text = str(info.value)
    assert "\n" not in text and "access token" in text and "bad-" not in text
    assert runs(tmp_path) == 2 and ews.refused_tokens == ["bad-1", "bad-2"]


@pytest.mark.parametrize("fail", [True, False], ids=["command fails", "prints nothing"])
def test_a_bad_token_command_is_one_readable_line(tmp_path, ews, fail):
    with pytest.raises(ConfigError) as info:
        list(make_connector("ex", oauth(ews, token_command(tmp_path, fail=fail))).pull(None, View()))
    assert "\n" not in str(info.value) and "token_command" in str(info.value)
    assert ews.requests == []
    config = write_config(tmp_path / "crm.toml", customers=CUSTOMERS,
                          sources={"ex": oauth(ews, token_command(tmp_path, fail=fail))})
    done = crm(config, "sync")
    assert done.returncode != 0
    lines = [ln for ln in done.stderr.splitlines() if ln.strip()]
    assert "Traceback" not in done.stderr and any("token_command" in ln for ln in lines), done.stderr


def test_a_command_failing_at_renewal_names_its_error(tmp_path, ews):
    ews.accept_token("tok-1", "svc-crm")
    script = token_command(tmp_path, "tok-1")
    conn = make_connector("ex", oauth(ews, script))
    try:
        list(conn.pull(None, View()))
        ews.expire_token("tok-1")
        token_command(tmp_path, fail=True)  # the same file, now failing
        with pytest.raises(AuthError, match="token_command exited with status 2"):
            list(conn.pull(None, View()))
    finally:
        conn.close()


def test_oauth2_needs_a_token_source(ews):
    opts = oauth(ews, ["true"])
    del opts["token_command"]
    with pytest.raises(ConfigError, match="token_command"):
        make_connector("ex", opts)
    with pytest.raises(ConfigError, match="token_command"):
        make_connector("ex", {**opts, "token": "literal"})


def test_the_token_never_reaches_a_log_or_the_store(tmp_path, ews):
    secret = "eyJ0eXAiOiJKV1QiLCJub25jZSI6InNlY3JldCJ9.leak-me-not"
    mail(ews, "vertraulich")
    ews.accept_token(secret, "svc-crm")
    log_file = tmp_path / "crm.log"
    config = write_config(tmp_path / "crm.toml", customers=CUSTOMERS,
                          sources={"ex": oauth(ews, token_command(tmp_path, "expired-" + secret, secret))})
    config.write_text(config.read_text(encoding="utf-8") + f"\n[log]\nfile = {json.dumps(str(log_file))}\n",
                      encoding="utf-8")
    done = crm(config, "-vv", "sync")
    assert done.returncode == 0, done.stderr
    assert runs(tmp_path) == 2  # a renewal happened, with its log lines
    for text in (done.stdout, done.stderr, log_file.read_text(encoding="utf-8")):
        assert "leak-me-not" not in text
    for path in tmp_path.glob("crm.db*"):
        assert b"leak-me-not" not in path.read_bytes()


def crm(config: Path, *args: str) -> subprocess.CompletedProcess:
    """``crm`` in its own process (its own logging set-up, as staff run it)."""
    return subprocess.run([sys.executable, "-m", "crm_bridge.cli", "--config", str(config), *args],
                          cwd=str(config.parent), capture_output=True, text=True, env=dict(os.environ), timeout=120)


def test_autodiscover_sends_the_bearer_token_too(tmp_path, ews):
    mail(ews, "gefunden")
    ews.accept_token("tok-1", "svc-crm")
    opts = oauth(ews, token_command(tmp_path, "tok-1"), autodiscover=True, autodiscover_url=ews.autodiscover_url)
    del opts["server"]
    conn = make_connector("ex", opts)
    try:
        got = list(conn.pull(None, View()))
    finally:
        conn.close()
    assert [r.subject for b in got for r in b.records] == ["gefunden"] and ews.refused_tokens == []
