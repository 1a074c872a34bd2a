"""Real DAV servers for tests: Radicale and Xandikos as subprocesses.

Import the fixtures into a test module::

    from tests.dav_servers import radicale, xandikos  # noqa: F401

``radicale`` and ``xandikos`` are shared by the tests of a module (each
test makes its own collections with :meth:`DavServer.unique`);
``own_radicale`` is a fresh server for tests that stop or restart it.

The helpers talk plain HTTP through :mod:`http.client`: an independent
"client" writing next to the connector under test.
"""

from __future__ import annotations

import base64
import http.client
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pytest

USER = "alice"
PASSWORD = "s3cret-pw"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    @property
    def etag(self) -> str:
        return self.headers.get("etag", "")


@dataclass
class DavServer:
    """A running server plus a plain HTTP client for it."""

    kind: str  # "radicale" | "xandikos"
    root: Path  # working directory of the server
    port: int
    user: str = USER
    password: str = PASSWORD
    argv: list[str] = field(default_factory=list)
    proc: subprocess.Popen | None = None
    log_path: Path | None = None
    cert: Path | None = None  # set when the server speaks HTTPS with this self-signed certificate

    # ------------------------------------------------------------------ urls

    @property
    def url(self) -> str:
        return f"{'https' if self.cert else 'http'}://127.0.0.1:{self.port}/"

    @property
    def home(self) -> str:
        """Path of the user's calendar home."""
        return f"/{self.user}/" if self.kind == "radicale" else f"/{self.user}/calendars/"

    @property
    def contacts_home(self) -> str:
        return f"/{self.user}/" if self.kind == "radicale" else f"/{self.user}/contacts/"

    def abs(self, path: str) -> str:
        return path if path.startswith("http") else f"{self.url.rstrip('/')}{path}"

    @staticmethod
    def unique(prefix: str = "c") -> str:
        return f"{prefix}-{uuid.uuid4().hex[:10]}"

    # -------------------------------------------------------------- process

    def start(self) -> None:
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        self.proc = subprocess.Popen(
            self.argv, cwd=self.root, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.kind} exited: {self.read_log()[-2000:]}")
            try:
                if self.request("OPTIONS", "/").status < 500:
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"{self.kind} did not answer within 30 s")

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def read_log(self) -> str:
        if self.log_path and self.log_path.exists():
            return self.log_path.read_text("utf-8", "replace")
        return ""

    # ----------------------------------------------------------------- http

    def request(self, method: str, path: str, body: str | bytes = b"",
                headers: dict[str, str] | None = None, auth: bool = True) -> Response:
        target = urlsplit(self.abs(path))
        if self.cert:
            import ssl

            conn = http.client.HTTPSConnection("127.0.0.1", self.port, timeout=30,
                                               context=ssl.create_default_context(cafile=str(self.cert)))
        else:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            hdrs = dict(headers or {})
            if auth:
                token = base64.b64encode(f"{self.user}:{self.password}".encode()).decode()
                hdrs["Authorization"] = f"Basic {token}"
            data = body.encode("utf-8") if isinstance(body, str) else body
            conn.request(method, target.path + (f"?{target.query}" if target.query else ""),
                         body=data, headers=hdrs)
            resp = conn.getresponse()
            return Response(resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read())
        finally:
            conn.close()

    def make_calendar(self, name: str | None = None, components: str = "VEVENT,VTODO") -> str:
        """Create a calendar under the home; returns its absolute URL."""
        name = name or self.unique("cal")
        path = f"{self.home}{name}/"
        comps = "".join(f'<C:comp name="{c}"/>' for c in components.split(","))
        body = (
            '<?xml version="1.0" encoding="utf-8"?>'
            '<C:mkcalendar xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav">'
            f"<D:set><D:prop><D:displayname>{name}</D:displayname>"
            f"<C:supported-calendar-component-set>{comps}</C:supported-calendar-component-set>"
            "</D:prop></D:set></C:mkcalendar>"
        )
        resp = self.request("MKCALENDAR", path, body, {"Content-Type": "application/xml"})
        assert resp.status in (200, 201), (resp.status, resp.text)
        return self.abs(path)

    def make_addressbook(self, name: str | None = None) -> str:
        name = name or self.unique("book")
        path = f"{self.contacts_home}{name}/"
        body = (
            '<?xml version="1.0" encoding="utf-8"?>'
            '<D:mkcol xmlns:D="DAV:" xmlns:CR="urn:ietf:params:xml:ns:carddav">'
            "<D:set><D:prop><D:resourcetype><D:collection/><CR:addressbook/></D:resourcetype>"
            f"<D:displayname>{name}</D:displayname></D:prop></D:set></D:mkcol>"
        )
        resp = self.request("MKCOL", path, body, {"Content-Type": "application/xml"})
        assert resp.status in (200, 201), (resp.status, resp.text)
        return self.abs(path)

    def put(self, collection: str, name: str, text: str, headers: dict[str, str] | None = None,
            content_type: str | None = None) -> Response:
        path = urlsplit(self.abs(collection)).path.rstrip("/") + "/" + name
        ctype = content_type or ("text/vcard" if name.endswith(".vcf") else "text/calendar")
        hdrs = {"Content-Type": f"{ctype}; charset=utf-8"}
        hdrs.update(headers or {})
        return self.request("PUT", path, text, hdrs)

    def get(self, path: str) -> Response:
        return self.request("GET", urlsplit(self.abs(path)).path)

    def delete(self, path: str) -> Response:
        return self.request("DELETE", urlsplit(self.abs(path)).path)

    def hrefs(self, collection: str) -> dict[str, str]:
        """href -> etag of the items in a collection (PROPFIND depth 1)."""
        import xml.etree.ElementTree as ET

        body = '<?xml version="1.0"?><D:propfind xmlns:D="DAV:"><D:prop><D:getetag/><D:resourcetype/></D:prop></D:propfind>'
        path = urlsplit(self.abs(collection)).path
        resp = self.request("PROPFIND", path, body, {"Depth": "1", "Content-Type": "application/xml"})
        assert resp.status == 207, (resp.status, resp.text)
        result = {}
        for node in ET.fromstring(resp.body).iter("{DAV:}response"):
            href = node.findtext("{DAV:}href") or ""
            if node.find(".//{DAV:}resourcetype/{DAV:}collection") is not None:
                continue
            result[urlsplit(href).path] = node.findtext(".//{DAV:}getetag") or ""
        return result

    # ------------------------------------------------------------ radicale

    def storage_dir(self) -> Path:
        return self.root / "collections" / "collection-root"

    def forget_sync_tokens(self) -> int:
        """Make Radicale forget every sync token it handed out.

        Radicale keeps the state behind each token in
        ``<collection>/.Radicale.cache/sync-token/<token>``; without that
        file an old token is answered with 403 + DAV:valid-sync-token (the
        current token, if nothing changed since, stays valid: Radicale
        recomputes it from the items).  Returns how many were deleted.
        """
        assert self.kind == "radicale"
        count = 0
        for folder in self.storage_dir().rglob("sync-token"):
            if folder.is_dir() and folder.parent.name == ".Radicale.cache":
                count += len(list(folder.iterdir()))
                shutil.rmtree(folder)
        return count


def start_radicale(root: Path, htpasswd_lines: list[str] | None = None, log_level: str = "warning",
                   tls: tuple[Path, Path] | None = None) -> DavServer:
    """Radicale on a free loopback port, storage and config under ``root``;
    with ``tls=(cert, key)`` it speaks HTTPS."""
    root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    users = root / "users"
    users.write_text("\n".join(htpasswd_lines or [f"{USER}:{PASSWORD}"]) + "\n")
    config = root / "config"
    config.write_text(
        f"""
[server]
hosts = 127.0.0.1:{port}
max_connections = 20
{f"ssl = True{chr(10)}certificate = {tls[0]}{chr(10)}key = {tls[1]}" if tls else ""}

[auth]
type = htpasswd
htpasswd_filename = {users}
htpasswd_encryption = plain
delay = 0

[rights]
type = owner_only

[storage]
filesystem_folder = {root / 'collections'}

[web]
type = none

[logging]
level = {log_level}
mask_passwords = True
"""
    )
    server = DavServer(
        kind="radicale", root=root, port=port,
        argv=[sys.executable, "-m", "radicale", "--config", str(config)],
        log_path=root / "server.log", cert=tls[0] if tls else None,
    )
    server.start()
    return server


def _xandikos(root: Path) -> DavServer:
    root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    server = DavServer(
        kind="xandikos", root=root, port=port,
        argv=[sys.executable, "-m", "xandikos", "serve", "-d", str(root / "data"), "--defaults",
              "-l", "127.0.0.1", "-p", str(port), "--current-user-principal", f"/{USER}/",
              "--state-dir", str(root / "state"), "--no-detect-systemd"],
        log_path=root / "server.log",
    )
    server.start()
    return server


@pytest.fixture(scope="module")
def radicale(tmp_path_factory):
    server = start_radicale(tmp_path_factory.mktemp("radicale"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def own_radicale(tmp_path):
    """A Radicale of the test's own, free to be stopped and restarted."""
    server = start_radicale(tmp_path / "radicale")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def xandikos(tmp_path_factory):
    server = _xandikos(tmp_path_factory.mktemp("xandikos"))
    try:
        yield server
    finally:
        server.stop()
