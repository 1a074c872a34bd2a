"""The demo store with a hostile mail, users, and HTTP clients for the web tests."""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from crm_bridge.crm_core.store import Store
from crm_bridge.crm_core.users import Users
from crm_bridge.sync.config import load_config
from crm_bridge.web.app import create_app
from tests.conftest import Crm

REPO = Path(__file__).resolve().parents[1]

HOSTILE_SUBJECT = "<script>alert(1)</script> Angebot Pumpe"
HOSTILE_MAIL = f"""From: "<b>Evil</b> Brodersen" <k.brodersen@stadtwerke-lindenau.de>
To: anna.weber@nordlicht-haustechnik.de
Subject: {HOSTILE_SUBJECT}
Date: Mon, 02 Nov 2026 10:00:00 +0100
Message-ID: <hostile-1@stadtwerke-lindenau.de>
Content-Type: text/plain; charset=utf-8

<img src=x onerror=alert(2)> Bitte um Rueckruf wegen der Pumpe.
"""
UNKNOWN_MAIL = """From: Martin Jansen <m.jansen@jansen-planung.example>
To: anna.weber@nordlicht-haustechnik.de
Subject: Anfrage Lueftungsplanung
Date: Sun, 01 Nov 2026 09:00:00 +0100
Message-ID: <unknown-1@jansen-planung.example>
Content-Type: text/plain; charset=utf-8

Guten Tag, wir planen einen Neubau.
"""
PASSWORD = "correct-horse-1"


def demo_store(root: Path) -> Path:
    """The README's demo synced into ``root`` (plus one hostile mail), with users anna (admin) and
    bob (staff); returns the config's path."""
    shutil.copytree(REPO / "examples", root / "examples")
    shutil.copy2(REPO / "config.example.toml", root / "crm.toml")
    (root / "examples/mail/new/1762074000.hostile.eml").write_text(HOSTILE_MAIL)
    (root / "examples/mail/new/1761984000.unknown.eml").write_text(UNKNOWN_MAIL)  # for the review queue
    Crm(root / "crm.toml")("sync")
    config = load_config(str(root / "crm.toml"))
    store = Store(config.store_path, config.linking)
    users = Users(store)
    users.add("anna", PASSWORD, "admin")
    users.add("bob", PASSWORD, "staff")
    store.close()
    return root / "crm.toml"


def make_app(config_path: Path, **web_overrides):
    config = load_config(str(config_path))
    web = config.web
    if web_overrides:
        from dataclasses import replace

        web = replace(web, **web_overrides)
    app = create_app(config.store_path, web, config.linking)
    app.testing = True
    return app


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, html[:500]
    return found.group(1)


def login(client, name: str = "anna", password: str = PASSWORD) -> str:
    """Log in through the form; the session's CSRF token."""
    token = csrf_of(client.get("/login").text)
    done = client.post("/login", data={"csrf": token, "name": name, "password": password})
    assert done.status_code == 302, done.text
    return csrf_of(client.get("/customers").text)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(config_path: Path, port: int) -> subprocess.Popen:
    """``crm serve`` as a user starts it; waits until it answers (read its output from ``proc.stdout``)."""
    import os

    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    proc = subprocess.Popen([sys.executable, "-m", "crm_bridge.cli", "--config", str(config_path), "serve",
                             "--port", str(port)], cwd=config_path.parent, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env={**os.environ, "PYTHONPATH": path, "PYTHONUNBUFFERED": "1"})
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/login", timeout=2).read()
            break
        except OSError:
            if proc.poll() is not None:
                raise AssertionError(f"crm serve ended: {proc.stdout.read() if proc.stdout else ''}")
            time.sleep(0.2)
    else:
        proc.kill()
        raise AssertionError("crm serve did not answer within 30 s")
    return proc


# -- fixtures for a module that defines ``config_path`` (its own demo store) --------------------
@pytest.fixture
def app(config_path):
    return make_app(config_path)


@pytest.fixture
def store(config_path):
    config = load_config(str(config_path))
    s = Store(config.store_path, config.linking)
    yield s
    s.close()
