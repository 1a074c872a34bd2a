"""The Microsoft 365 connector's HTTP client (connectors/graphhttp.py) against real TLS servers on loopback,
and what a run where nothing changed loads and asks for.

The small server here answers by path and counts the TCP connections it accepted, so that keep-alive,
a connection the server gave up, gzip and timeouts are seen from the client's side as Graph would show them.
"""

from __future__ import annotations

import gzip
import json
import socket
import ssl
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

from crm_bridge.connectors.base import ConfigError
from crm_bridge.connectors.graphhttp import HTTPError, Session, TLSError, _proxy_for
from tests.graph_emulator.server import GraphEmulator, _self_signed
from tests.closing_server import ClosingHTTPServer


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.armed = False  # this connection drops the next request without an answer
        with self.server.lock:  # type: ignore[attr-defined]
            self.server.connections += 1  # type: ignore[attr-defined]

    def log_message(self, *args) -> None:
        pass

    def _answer(self, status: int, body: bytes, **headers: str) -> None:
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k.replace("_", "-"), v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _any(self) -> None:
        srv = self.server
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        with srv.lock:  # type: ignore[attr-defined]
            srv.seen.append((self.command, self.path, dict(self.headers), body))  # type: ignore[attr-defined]
        if self.armed:  # as a front end that gave up the idle connection just as the request came
            self.close_connection = True
            return
        path = self.path.split("?")[0]
        if path == "/arm":
            self.armed = True
        if path == "/gzip":
            data = json.dumps({"value": ["ä"] * 50}, ensure_ascii=False).encode()
            self._answer(200, gzip.compress(data), Content_Type="application/json", Content_Encoding="gzip")
            return
        if path in ("/trickle", "/trickle-head"):
            self._trickle(head=path == "/trickle-head")
            return
        if path == "/closing":  # a big answer, and the connection ends with it (said so)
            self._answer(200, json.dumps({"value": ["y" * 1000] * 300}).encode(), Connection="close")
            return
        if path == "/slow":
            time.sleep(3)
        if path == "/bye":  # answers, then closes the connection without saying so
            self.close_connection = True
        self._answer(200, json.dumps({"path": self.path, "method": self.command}).encode(),
                     Content_Type="application/json; charset=utf-8")

    def _trickle(self, head: bool) -> None:
        """An answer that comes a byte at a time, each well within the read timeout (the headers too: ``head``)."""
        body = json.dumps({"value": ["x" * 20] * 10}).encode()
        whole = (f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
                 "X-Padding: " + "p" * 40 + "\r\n\r\n").encode() + body
        start = 12 if head else whole.index(b"\r\n\r\n") + 4
        try:
            self.wfile.write(whole[:start])
            for i in range(start, min(len(whole), start + 60)):  # (at most 60 bytes: a trickle of ~12 s)
                time.sleep(0.2)
                self.wfile.write(whole[i:i + 1])
        except OSError:  # the client gave up
            pass
        self.close_connection = True

    do_GET = do_POST = do_PATCH = _any


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    cert, key = _self_signed(tmp_path_factory.mktemp("tls"))
    srv = ClosingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.daemon_threads = True
    srv.handle_error = lambda request, address: None  # type: ignore[method-assign]  # (a client that gave up)
    srv.lock = threading.Lock()  # type: ignore[attr-defined]
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    srv.ca_file = str(cert)  # type: ignore[attr-defined]
    srv.base = f"https://127.0.0.1:{srv.server_address[1]}"  # type: ignore[attr-defined]
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.fixture
def srv(server):
    server.connections = 0
    server.seen = []
    return server


def test_requests_share_one_kept_alive_connection(srv):
    s = Session(srv.ca_file, timeout=10)
    try:
        for i in range(10):
            r = s.get(f"{srv.base}/page/{i}", headers={"Authorization": "Bearer x"})
            assert r.status_code == 200 and r.json()["path"] == f"/page/{i}"
    finally:
        s.close()
    assert srv.connections == 1


def test_threads_draw_from_one_pool(srv):
    s = Session(srv.ca_file, timeout=10)
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            for i in range(5):
                assert s.get(f"{srv.base}/t{n}/{i}").status_code == 200
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    s.close()
    assert not errors and len(srv.seen) == 10
    assert srv.connections <= 2


def test_a_connection_the_server_closed_while_idle_is_not_used_again(srv):
    s = Session(srv.ca_file, timeout=10)
    assert s.get(f"{srv.base}/bye").status_code == 200
    time.sleep(0.2)  # the server's close has arrived
    assert s.get(f"{srv.base}/ok").status_code == 200
    s.close()
    assert srv.connections == 2 and [p for _m, p, _h, _b in srv.seen] == ["/bye", "/ok"]


def test_a_get_on_a_kept_alive_connection_that_breaks_is_sent_once_more_a_post_is_not(srv):
    s = Session(srv.ca_file, timeout=10)
    s.get(f"{srv.base}/arm")
    assert s.get(f"{srv.base}/again").json()["path"] == "/again"  # dropped on the armed connection, then resent
    assert [p for _m, p, _h, _b in srv.seen] == ["/arm", "/again", "/again"]
    s.get(f"{srv.base}/arm")
    with pytest.raises(HTTPError):
        s.post(f"{srv.base}/create", data={"a": "1"})  # the server may have acted on it: never twice
    s.close()
    assert [m for m, p, _h, _b in srv.seen if p == "/create"] == ["POST"]


def test_a_get_that_timed_out_on_a_kept_alive_connection_is_not_sent_again(srv):
    """A timeout is a slow server, not one that gave up the connection: one wait, one request."""
    s = Session(srv.ca_file, timeout=0.5)
    assert s.get(f"{srv.base}/ok").status_code == 200  # the connection is kept alive
    with pytest.raises(HTTPError, match="timed out"):
        s.get(f"{srv.base}/slow")
    s.close()
    assert [p for _m, p, _h, _b in srv.seen] == ["/ok", "/slow"]


@pytest.mark.parametrize("path", ["/trickle", "/trickle-head"])
def test_an_answer_that_trickles_in_ends_at_the_deadline_as_a_timeout_and_a_post_is_not_sent_again(srv, path):
    """A byte every 0.2 s passes a read timeout of 1 s for ever; the deadline of the whole answer ends it with the
    client's timeout error (in the status line and headers as in the body). A GET that timed out is not sent
    again (a slow server, see above), a POST never is."""
    s = Session(srv.ca_file, timeout=1, deadline=1.5)
    for method in ("GET", "POST"):
        started = time.monotonic()
        with pytest.raises(HTTPError, match="timed out") as err:
            s.request(method, f"{srv.base}{path}", data={"a": "1"} if method == "POST" else None)
        assert time.monotonic() - started < 3.5, method
        assert "the answer took longer than 1.5 s" in str(err.value)
    s.close()
    assert [(m, p) for m, p, _h, _b in srv.seen] == [("GET", path), ("POST", path)]


def test_an_answer_on_a_connection_the_server_closes_with_it_is_read_whole(srv):
    s = Session(srv.ca_file, timeout=5)
    assert s.get(f"{srv.base}/closing").json() == {"value": ["y" * 1000] * 300}
    assert s.get(f"{srv.base}/ok").status_code == 200
    s.close()
    assert srv.connections == 2


def test_the_deadline_of_an_answer_is_never_shorter_than_the_read_timeout(srv):
    s = Session(srv.ca_file, timeout=4, deadline=0.5)
    assert s.get(f"{srv.base}/slow").status_code == 200  # 3 s: within the read timeout, so within the answer's
    s.close()


def test_the_proxy_port_and_scheme_are_read_as_niquests_reads_them(monkeypatch):
    """No port in the proxy URL: 80, as niquests/urllib3 take it; a proxy this client cannot speak to
    (https://, socks5://) is one readable line naming the scheme, never the proxy's password."""
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.setenv("https_proxy", "http://proxy.example")
    assert _proxy_for("graph.microsoft.com") == ("proxy.example", 80, {})
    monkeypatch.setenv("https_proxy", "socks5://crm:geheim@proxy.example:1080")
    with pytest.raises(HTTPError, match="socks5") as err:
        Session(True, timeout=5).get("https://graph.microsoft.com/v1.0/me")
    assert "geheim" not in str(err.value) and "\n" not in str(err.value)


def test_forms_json_and_query_parameters_as_msal_and_graph_send_them(srv):
    s = Session(srv.ca_file, timeout=10)
    s.post(f"{srv.base}/token", params={"x": "1 2"}, data={"grant_type": "client_credentials", "scope": "a b"})
    s.request("PATCH", f"{srv.base}/task", json={"status": "completed"})
    s.close()
    (m1, p1, h1, b1), (m2, _p2, h2, b2) = srv.seen
    assert (m1, p1) == ("POST", "/token?x=1+2") and h1["Content-Type"] == "application/x-www-form-urlencoded"
    assert b1 == b"grant_type=client_credentials&scope=a+b"
    assert m2 == "PATCH" and h2["Content-Type"] == "application/json" and json.loads(b2) == {"status": "completed"}


def test_a_gzip_answer_is_decoded(srv):
    s = Session(srv.ca_file, timeout=10)
    r = s.get(f"{srv.base}/gzip")
    s.close()
    assert srv.seen[0][2]["Accept-Encoding"] == "gzip"
    assert r.json() == {"value": ["ä"] * 50} and "ä" in r.text


def test_a_server_that_does_not_answer_in_time_is_an_error_naming_the_host_not_the_token(srv):
    s = Session(srv.ca_file, timeout=0.5)
    started = time.monotonic()
    with pytest.raises(HTTPError, match="timed out") as err:
        s.get(f"{srv.base}/slow", headers={"Authorization": "Bearer sekret-token"})
    s.close()
    assert time.monotonic() - started < 2.5
    assert "127.0.0.1" in str(err.value) and "sekret" not in str(err.value)


def test_tls_is_verified_by_default_and_against_the_configured_ca_file(srv, tmp_path):
    with pytest.raises(TLSError):  # the system's trust store does not know the server's own certificate
        Session(True, timeout=5).get(f"{srv.base}/ok")
    other, _key = _self_signed(tmp_path)
    with pytest.raises(TLSError):  # a CA file, but not the one that signed the server's certificate
        Session(str(other), timeout=5).get(f"{srv.base}/ok")
    with pytest.raises(ConfigError, match="missing.pem: no such file"):
        Session(str(tmp_path / "missing.pem"), timeout=5).get(f"{srv.base}/ok")
    assert Session(srv.ca_file, timeout=5).get(f"{srv.base}/ok").status_code == 200
    assert [p for _m, p, _h, _b in srv.seen] == ["/ok"]


def test_the_connection_goes_through_the_https_proxy_of_the_environment(srv, monkeypatch):
    """A CONNECT tunnel with the proxy URL's user:password as Basic auth; no_proxy is respected."""
    listener = socket.create_server(("127.0.0.1", 0))
    asked: list[bytes] = []

    def proxy() -> None:
        client, _ = listener.accept()
        head = b""
        while b"\r\n\r\n" not in head:
            head += client.recv(4096)
        asked.append(head)
        upstream = socket.create_connection(("127.0.0.1", srv.server_address[1]))
        client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")

        def pipe(a: socket.socket, b: socket.socket) -> None:
            try:
                while data := a.recv(65536):
                    b.sendall(data)
            except OSError:
                pass
            finally:
                try:  # (wakes the other direction's recv on this socket: close alone does not)
                    b.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                b.close()

        back = threading.Thread(target=pipe, args=(upstream, client), daemon=True)
        threads.append(back)
        back.start()
        pipe(client, upstream)

    threads: list[threading.Thread] = [threading.Thread(target=proxy, daemon=True)]
    threads[0].start()
    monkeypatch.setenv("https_proxy", f"http://crm:pa%20ss@127.0.0.1:{listener.getsockname()[1]}")
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    s = Session(srv.ca_file, timeout=10)
    assert s.get(f"{srv.base}/via-proxy").status_code == 200
    s.close()
    listener.close()
    for t in list(threads):  # the proxy ends with the tunnel (no thread left behind to keep later forks away)
        t.join(10)
        assert not t.is_alive()
    assert asked and asked[0].startswith(f"CONNECT 127.0.0.1:{srv.server_address[1]} HTTP/1.".encode())
    assert b"Proxy-Authorization: Basic Y3JtOnBhIHNz" in asked[0]  # crm:pa ss
    monkeypatch.setenv("no_proxy", "localhost,127.0.0.1")
    s = Session(srv.ca_file, timeout=10)
    assert s.get(f"{srv.base}/direct").status_code == 200  # (the proxy is gone: only a direct connection works)
    s.close()


# -- a run where nothing changed ------------------------------------------------------------------

PROBE = """
import sys, time
from crm_bridge import cli
try:
    cli.main(["--config", sys.argv[1], "sync"], standalone_mode=False)
except SystemExit:
    pass
heavy = ("niquests", "urllib3", "h11", "msal", "requests", "crm_bridge.connectors.graphitems",
         "crm_bridge.connectors.ewsitems")
print(sorted(m for m in heavy if m in sys.modules))
"""


def test_a_run_where_nothing_changed_asks_one_delta_per_folder_and_loads_no_http_library_msal_or_item_reader(tmp_path):
    from tests.conftest import write_config

    with GraphEmulator() as emu:
        emu.apps["c1"] = "app-secret"
        mb = emu.store.add_mailbox("anna@firma.de", "Anna Adler")
        from tests.graph_emulator.seed import make_message

        from datetime import datetime, timezone

        for i in range(3):
            emu.store.put(mb.folder("inbox"), make_message(f"m{i}", ("Kim", "kim@kunde.example"),
                                                           [("Anna", "anna@firma.de")],
                                                           datetime(2026, 10, 1, 9, i, tzinfo=timezone.utc),
                                                           f"<m{i}@kunde.example>"))
        source = {"type": "m365", "tenant": emu.tenant, "client_id": "c1", "client_secret_env": "CRM_T_SECRET",
                  "authority": emu.authority, "graph_url": emu.graph_url, "ca_file": str(emu.ca_file),
                  "mailbox": "anna@firma.de", "owner": ["anna@firma.de"], "folders": ["inbox", "sentitems"]}
        config = write_config(tmp_path / "crm.toml", customers=(("Kunde GmbH", ["kunde.example"]),),
                              internal=("firma.de",), sources={"anna": source})
        env = {**__import__("os").environ, "CRM_T_SECRET": "app-secret"}

        def run() -> list[str]:
            done = subprocess.run([sys.executable, "-c", PROBE, str(config)], capture_output=True, text=True,
                                  timeout=120, env=env, cwd=tmp_path)
            assert done.returncode == 0, done.stderr
            return json.loads(done.stdout.strip().splitlines()[-1].replace("'", '"'))

        first = run()
        assert "crm_bridge.connectors.graphitems" in first  # it read the three mails
        emu.requests.clear()
        assert run() == []
        graph = [p for _m, p, _h in emu.requests]
        assert len(graph) == 4 and all("/delta" in p for p in graph), graph  # inbox, sent, calendar, contacts
