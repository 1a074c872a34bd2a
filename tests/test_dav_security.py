"""DAV sources: credentials only to their origin, no password in clear text,
fail fast on what retrying cannot fix, and the pushed address book is not
read back as contacts.  Real servers on loopback throughout."""

from __future__ import annotations

import http.client
import http.server
import socket
import ssl
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest

from crm_bridge.connectors.base import AuthError, ConfigError, SourceUnavailable, TransientError
from crm_bridge.connectors.dav import CalDavConnector
from crm_bridge.crm_core.store import Store
from tests.conftest import Crm, write_config
from tests.dav_servers import free_port, radicale, start_radicale  # noqa: F401
from tests.imap_server import _self_signed

PW_ENV = "CRM_TEST_DAV_SEC_PASSWORD"


class EmptyView:
    def known(self, scope):
        return {}

    def scopes(self):
        return []


def pull(options: dict) -> list:
    conn = CalDavConnector("cal", {"type": "caldav", "password_env": PW_ENV, **options})
    try:
        return [r for b in conn.pull(None, EmptyView()) for r in b.records]
    finally:
        conn.close()


class Seen:
    """What a test server received."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, str | None]] = []  # (method, path, Authorization)


@contextmanager
def http_server(handler_body, tls: tuple[Path, Path] | None = None) -> Iterator[tuple[str, Seen]]:
    """A real HTTP(S) server on a free loopback port; ``handler_body(handler, seen)`` answers."""
    seen = Seen()

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def handle_one_request(self):
            try:
                super().handle_one_request()
            except (ConnectionError, ssl.SSLError):
                self.close_connection = True

        def __getattr__(self, name):
            if name.startswith("do_"):
                return self._any
            raise AttributeError(name)

        def _any(self):
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)
            seen.requests.append((self.command, self.path, self.headers.get("Authorization")))
            handler_body(self, seen)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    if tls:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(*tls)
        server.socket = ctx.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"{'https' if tls else 'http'}://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()


def redirect_to(target: str):
    def answer(handler, seen):
        handler.send_response(301)
        handler.send_header("Location", target + handler.path)
        handler.send_header("Content-Length", "0")
        handler.end_headers()
    return answer


def forward_to(origin: str):
    """A reverse proxy: the request as received (headers included) to ``origin``, its answer back."""
    def answer(handler, seen):
        host, port = origin.split("//")[1].split(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=10)
        headers = {k: v for k, v in handler.headers.items() if k.lower() not in ("host", "content-length")}
        conn.request(handler.command, handler.path, body=None, headers=headers)
        resp = conn.getresponse()
        body = resp.read()
        handler.send_response(resp.status)
        for key, value in resp.getheaders():
            if key.lower() not in ("content-length", "transfer-encoding", "connection"):
                handler.send_header(key, value)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)
        conn.close()
    return answer


@pytest.fixture(autouse=True)
def password(monkeypatch):
    monkeypatch.setenv(PW_ENV, "geheim")


@pytest.fixture
def rad(radicale, monkeypatch):  # noqa: F811
    monkeypatch.setenv(PW_ENV, radicale.password)
    return radicale


# ------------------------------------------------------------ redirects


def test_redirect_to_another_port_gets_no_credentials(rad):
    """A 301 from the configured server to another origin (a proxy in front of Radicale on another
    port): the credentials stay home, Radicale says 401 and the error says why."""
    with http_server(forward_to(rad.url.rstrip("/"))) as (proxy, proxied), \
            http_server(redirect_to(proxy)) as (front, fronted):
        with pytest.raises(AuthError, match="redirected to http://127.0.0.1:.*only sent to"):
            pull({"url": front + "/", "username": rad.user, "allow_plaintext": True})
    assert fronted.requests and all(auth for _m, _p, auth in fronted.requests)  # the configured origin: yes
    assert proxied.requests and not any(auth for _m, _p, auth in proxied.requests)  # the other: never
    # the same server configured directly works
    assert pull({"url": rad.url, "username": rad.user, "allow_plaintext": True}) == []


def test_redirect_within_the_origin_keeps_credentials(rad):
    """A redirect to another path of the same origin is followed with the credentials (the
    ``/.well-known/caldav`` redirect of RFC 6764 is one)."""
    rad.make_calendar("secwork")
    rad.put(f"{rad.home}secwork/", "e.ics", (
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//t//EN\r\nBEGIN:VEVENT\r\nUID:sec-1\r\n"
        "DTSTAMP:20260101T000000Z\r\nDTSTART:20260105T100000Z\r\nDURATION:PT1H\r\nSUMMARY:same origin\r\n"
        "END:VEVENT\r\nEND:VCALENDAR\r\n"))
    records = pull({"url": rad.url, "username": rad.user, "allow_plaintext": True, "calendars": ["secwork"]})
    assert [r.summary for r in records] == ["same origin"]


def test_https_to_http_redirect_sends_nothing_in_clear(tmp_path, monkeypatch):
    cert, key = _self_signed(tmp_path)
    monkeypatch.setenv(PW_ENV, "geheim")

    def unauthorized(handler, seen):
        handler.send_response(401)
        handler.send_header("WWW-Authenticate", 'Basic realm="x"')
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    with http_server(unauthorized) as (plain, plain_seen), \
            http_server(redirect_to(plain), tls=(cert, key)) as (front, front_seen):
        assert front.startswith("https://")
        with pytest.raises(AuthError, match="redirected to http://"):
            pull({"url": front + "/dav/", "username": "anna", "verify_tls": str(cert)})
    assert front_seen.requests and all(auth for _m, _p, auth in front_seen.requests)
    assert plain_seen.requests and not any(auth for _m, _p, auth in plain_seen.requests)


# ------------------------------------------------------------ plain text


@pytest.mark.parametrize("options", [
    {"url": "http://dav.example.com/"},
    {"url": "http://dav.example.com/", "allow_plaintext": True},
    {"url": "http://192.168.1.10:5232/", "allow_plaintext": True},
    {"url": "http://127.0.0.1:5232/"},
    {"url": "http://localhost:5232/", "allow_plaintext": False},
])
def test_http_needs_loopback_and_allow_plaintext(options):
    with pytest.raises(ConfigError, match="clear text") as raised:
        CalDavConnector("cal", {"type": "caldav", "username": "anna", "password_env": PW_ENV, **options})
    assert "\n" not in str(raised.value)


@pytest.mark.parametrize("url", ["http://127.0.0.1:5232/", "http://localhost/", "http://[::1]:5232/"])
def test_http_to_loopback_with_allow_plaintext_is_accepted(url):
    CalDavConnector("cal", {"type": "caldav", "url": url, "allow_plaintext": True})
    CalDavConnector("cal", {"type": "caldav", "url": url.replace("http:", "https:")})


def test_allow_plaintext_must_be_a_boolean():
    with pytest.raises(ConfigError, match="allow_plaintext"):
        CalDavConnector("cal", {"type": "caldav", "url": "http://127.0.0.1/", "allow_plaintext": "yes"})


def test_crm_sync_with_a_clear_text_url_sends_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv(PW_ENV, "geheim")
    with http_server(redirect_to("http://127.0.0.1:1")) as (url, seen):
        config = write_config(tmp_path / "crm.toml", sources={"cal": {
            "type": "caldav", "url": url.replace("127.0.0.1", "localhost") + "/", "username": "anna",
            "password_env": PW_ENV}})
        result = Crm(config)("sync", "--json", ok=False)
    assert not seen.requests
    assert result.exit_code == 2
    assert [line for line in result.output.splitlines() if line.strip()] == [
        line for line in result.output.splitlines() if "clear text" in line]
    assert "Traceback" not in result.output


# ------------------------------------------------------------ fail fast


def fails_fast(options: dict, match: str) -> SourceUnavailable:
    started = time.monotonic()
    with pytest.raises(SourceUnavailable, match=match) as raised:
        pull({"timeout": 20, **options})
    assert not isinstance(raised.value, TransientError)  # the engine does not retry it
    assert time.monotonic() - started < 5
    assert "\n" not in str(raised.value)
    return raised.value


def test_tls_against_a_plain_port(rad, tmp_path, caplog):
    fails_fast({"url": rad.url.replace("http://", "https://"), "username": rad.user},
               f"port {rad.port} of 127.0.0.1 speaks plain HTTP, not TLS: use .*allow_plaintext")
    # through `crm sync`: one attempt (no retries with back-off), the cause on one line
    config = write_config(tmp_path / "crm.toml", sources={"cal": {
        "type": "caldav", "url": rad.url.replace("http://", "https://"), "username": rad.user,
        "password_env": PW_ENV}})
    started = time.monotonic()
    result = Crm(config)("sync", ok=False)
    assert time.monotonic() - started < 5
    assert result.exit_code != 0 and "speaks plain HTTP, not TLS" in result.output
    assert "retrying" not in result.output + caplog.text


def test_plain_http_against_a_tls_port(tmp_path, monkeypatch):
    server = start_radicale(tmp_path / "tls", tls=_self_signed(tmp_path))
    try:
        monkeypatch.setenv(PW_ENV, server.password)
        fails_fast({"url": server.url.replace("https://", "http://"), "username": server.user,
                    "allow_plaintext": True}, "does that port speak TLS")
    finally:
        server.stop()


def test_connection_refused():
    port = free_port()
    fails_fast({"url": f"http://127.0.0.1:{port}/", "allow_plaintext": True},
               f"connection refused by 127.0.0.1:{port}: is the server running")


def test_a_web_server_that_is_not_dav():
    def web(handler, seen):
        if handler.command == "PROPFIND":
            handler.send_response(405)
            body = b"<html>Method Not Allowed</html>"
        else:
            handler.send_response(200)
            body = b"<html>hello</html>"
        handler.send_header("Content-Type", "text/html")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    with http_server(web) as (url, _seen):
        fails_fast({"url": url + "/", "allow_plaintext": True}, "does not answer WebDAV")

    def html_everywhere(handler, seen):
        body = b"<!DOCTYPE html><html><body>Welcome to our website</body></html>"
        handler.send_response(200)
        handler.send_header("Content-Type", "text/html")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    with http_server(html_everywhere) as (url, _seen):
        fails_fast({"url": url + "/cal/", "allow_plaintext": True}, "answer is not WebDAV")


def test_a_server_that_is_not_http():
    """An IMAP-like server: it greets first, in its own protocol."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve():
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                conn.sendall(b"* OK [CAPABILITY IMAP4rev1] Dovecot ready.\r\n")
                time.sleep(0.2)

    threading.Thread(target=serve, daemon=True).start()
    try:
        fails_fast({"url": f"http://127.0.0.1:{port}/", "allow_plaintext": True}, "does not speak HTTP")
    finally:
        listener.close()


def test_an_answer_that_never_ends_is_cut(monkeypatch):
    """Each socket read has its timeout; a server dripping a byte at a time is cut off as a whole."""
    def drip(handler, seen):
        handler.send_response(207)
        handler.send_header("Content-Type", "application/xml")
        handler.send_header("Content-Length", "100000")
        handler.end_headers()
        try:
            for _ in range(200):
                handler.wfile.write(b" ")
                handler.wfile.flush()
                time.sleep(0.05)
        except OSError:
            pass

    from crm_bridge.connectors.davhttp import _Http

    monkeypatch.setattr(_Http, "ANSWER_TIMEOUTS", 2)
    with http_server(drip) as (url, _seen):
        started = time.monotonic()
        with pytest.raises(TransientError, match="longer than"):
            pull({"url": url + "/", "allow_plaintext": True, "timeout": 0.5})
        assert time.monotonic() - started < 4


def test_an_answer_whose_headers_never_end_is_cut(monkeypatch):
    """The same for a server that drips its status line and headers: the deadline is the whole answer's."""
    def drip_head(handler, seen):
        try:
            handler.wfile.write(b"HTTP/1.1 207 Multi-Status\r\n")
            for _ in range(200):
                handler.wfile.write(b"X")
                handler.wfile.flush()
                time.sleep(0.05)
        except OSError:
            pass
        handler.close_connection = True

    from crm_bridge.connectors.davhttp import _Http

    monkeypatch.setattr(_Http, "ANSWER_TIMEOUTS", 2)
    with http_server(drip_head) as (url, _seen):
        started = time.monotonic()
        with pytest.raises(TransientError, match="longer than 1 s"):
            pull({"url": url + "/", "allow_plaintext": True, "timeout": 0.5})
        assert time.monotonic() - started < 4


# ------------------------------------------------------------ the pushed address book


def test_pushed_cards_are_not_read_back_and_keep_phone_numbers(rad, tmp_path):
    """One carddav source reads every address book and pushes customers into one of them."""
    people = rad.unique("kontakte")
    crm_book = rad.unique("crm")
    people_url = rad.make_addressbook(people)
    rad.put(people_url, "kim.vcf", (
        "BEGIN:VCARD\r\nVERSION:3.0\r\nUID:kim-1\r\nFN:Kim Kunde\r\nORG:Kunde GmbH\r\n"
        "EMAIL:kim@kunde.example\r\nTEL;TYPE=work:+49 30 1234567\r\nEND:VCARD\r\n"))
    config = write_config(
        tmp_path / "crm.toml", customers=(("Kunde GmbH", ["kunde.example"]),), store=str(tmp_path / "crm.db"),
        push={"cards": "book"},
        sources={"book": {"type": "carddav", "url": rad.url, "username": rad.user, "password_env": PW_ENV,
                          "allow_plaintext": True, "cards_addressbook": crm_book}})
    crm = Crm(config)
    crm("sync")
    contacts_after_first = crm.json("status")["counts"]["contacts"]
    pushed = {h: rad.get(h).text.replace("\r\n ", "") for h in rad.hrefs(f"{rad.contacts_home}{crm_book}/")}
    kim_card = [t for t in pushed.values() if "kim@kunde.example" in t]
    assert len(pushed) == 2 and len(kim_card) == 1
    assert "TEL:+49 30 1234567" in kim_card[0]  # pushed cards keep phone numbers
    for _ in range(2):
        result = crm.json("sync")
    by_source = {r["source"]: r for r in result["results"]}
    assert by_source["book (cards)"]["updated"] == 0, by_source  # nothing changed: nothing pushed
    assert by_source["book"]["updated"] == 0 and by_source["book"]["added"] == 0, by_source
    assert crm.json("status")["counts"]["contacts"] == contacts_after_first == 1  # no phantom contacts
    store = Store(tmp_path / "crm.db")
    assert store.conn.execute("SELECT name, phones FROM contacts").fetchall() == [("Kim Kunde", '["+49 30 1234567"]')]
