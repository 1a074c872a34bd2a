"""The connector contract: every connector, against its real backend, behaves alike.

Each backend class below supplies a fresh source and a way to add and delete
items in it behind the connector's back (a file written, an APPEND, a PUT);
the tests in :class:`ConnectorContract` then hold for all of them, the way
the sync engine relies on them.
"""

from __future__ import annotations

import json
import mailbox
import os
from pathlib import Path

import pytest

from crm_bridge.connectors.base import make_connector
from crm_bridge.crm_core.records import AppointmentRecord, Batch, ContactCard, MailRecord
from tests.conftest import Maildir, make_mail
from tests.dav_servers import radicale  # noqa: F401  (fixture)
from tests.imap_server import dovecot  # noqa: F401  (fixture)


class View:
    """What the engine would know: scope -> {local id: etag}, kept up to date from batches."""

    def __init__(self) -> None:
        self.items: dict[str, dict[str, str]] = {}

    def known(self, scope):
        return dict(self.items.get(scope, {}))

    def scopes(self):
        return [s for s, v in self.items.items() if v]

    def apply(self, batch: Batch) -> None:
        for rec in batch.records:
            self.items.setdefault(rec.location.scope, {})[rec.location.local_id] = rec.location.etag
        for change in batch.changes:
            self.items.setdefault(change.location.scope, {})[change.location.local_id] = change.location.etag
        for failure in batch.failures:
            self.items.setdefault(failure.location.scope, {})[failure.location.local_id] = failure.location.etag
        for loc in batch.removed:
            self.items.get(loc.scope, {}).pop(loc.local_id, None)


def title(rec) -> str:
    if isinstance(rec, MailRecord):
        return rec.subject
    if isinstance(rec, AppointmentRecord):
        return rec.summary
    if isinstance(rec, ContactCard):
        return rec.full_name
    return ""


class Pulled:
    def __init__(self, batches: list[Batch]):
        self.batches = batches
        self.records = [r for b in batches for r in b.records]
        self.removed = [loc for b in batches for loc in b.removed]
        self.failures = [f for b in batches for f in b.failures]
        self.problems = [p for b in batches for p in b.problems]
        cursors = [b.cursor for b in batches if b.cursor is not None]
        self.cursor = cursors[-1] if cursors else None

    @property
    def titles(self) -> set[str]:
        return {title(r) for r in self.records}


class ConnectorContract:
    """Subclasses provide ``backend`` (a fixture) with ``connector()``, ``add(key)`` and ``delete(key)``."""

    def pull(self, backend, view: View, cursor):
        conn = backend.connector()
        try:
            batches = list(conn.pull(cursor, view))
        finally:
            conn.close()
        for batch in batches:
            view.apply(batch)
        return Pulled(batches)

    def test_first_pull_yields_every_item_once(self, backend):
        for key in ("alpha", "beta", "gamma"):
            backend.add(key)
        got = self.pull(backend, View(), None)
        assert sorted(title(r) for r in got.records) == ["alpha", "beta", "gamma"]
        assert not got.failures and not got.removed and not got.problems

    def test_cursor_is_plain_json(self, backend):
        backend.add("alpha")
        got = self.pull(backend, View(), None)
        assert got.cursor is not None
        assert json.loads(json.dumps(got.cursor)) == got.cursor

    def test_rerun_with_the_cursor_brings_nothing_new(self, backend):
        backend.add("alpha")
        backend.add("beta")
        view = View()
        first = self.pull(backend, view, None)
        again = self.pull(backend, view, first.cursor)
        assert again.records == [] and again.removed == [] and again.failures == []

    def test_only_what_is_new_comes_after_the_cursor(self, backend):
        backend.add("alpha")
        view = View()
        first = self.pull(backend, view, None)
        backend.add("delta")
        second = self.pull(backend, view, first.cursor)
        assert second.titles == {"delta"}

    def test_a_deleted_item_is_reported_removed_and_nothing_else(self, backend):
        backend.add("alpha")
        backend.add("beta")
        view = View()
        first = self.pull(backend, view, None)
        where = {title(r): (r.location.scope, r.location.local_id) for r in first.records}
        backend.delete("beta")
        second = self.pull(backend, view, first.cursor)
        assert [(loc.scope, loc.local_id) for loc in second.removed] == [where["beta"]]
        assert second.records == []

    def test_what_the_view_knows_is_what_the_source_holds(self, backend):
        for key in ("alpha", "beta", "gamma"):
            backend.add(key)
        view = View()
        cursor = self.pull(backend, view, None).cursor
        backend.delete("alpha")
        backend.add("delta")
        cursor = self.pull(backend, view, cursor).cursor or cursor
        fresh = View()
        self.pull(backend, fresh, None)
        assert {s: v for s, v in view.items.items() if v} == {s: v for s, v in fresh.items.items() if v}


# -- files ---------------------------------------------------------------------


class MaildirBackend:
    def __init__(self, root: Path):
        self.box = Maildir(root)
        self.paths: dict[str, Path] = {}

    def connector(self):
        return make_connector("md", {"type": "maildir", "path": str(self.box.root)})

    def add(self, key: str) -> None:
        self.paths[key] = self.box.add(make_mail(subject=key, message_id=f"{key}@contract"))

    def delete(self, key: str) -> None:
        self.paths.pop(key).unlink()


class TestMaildir(ConnectorContract):
    @pytest.fixture
    def backend(self, tmp_path):
        return MaildirBackend(tmp_path / "mail")


class EmlBackend:
    def __init__(self, root: Path):
        self.root = root
        root.mkdir()

    def connector(self):
        return make_connector("eml", {"type": "eml", "path": str(self.root)})

    def add(self, key: str) -> None:
        (self.root / f"{key}.eml").write_bytes(make_mail(subject=key, message_id=f"{key}@contract"))

    def delete(self, key: str) -> None:
        (self.root / f"{key}.eml").unlink()


class TestEml(ConnectorContract):
    @pytest.fixture
    def backend(self, tmp_path):
        return EmlBackend(tmp_path / "eml")


class MboxBackend:
    def __init__(self, path: Path):
        self.path = path
        self.keys: dict[str, str] = {}

    def connector(self):
        return make_connector("mbox", {"type": "mbox", "path": str(self.path)})

    def add(self, key: str) -> None:
        box = mailbox.mbox(self.path)
        self.keys[key] = box.add(make_mail(subject=key, message_id=f"{key}@contract"))
        box.flush()
        box.close()

    def delete(self, key: str) -> None:
        box = mailbox.mbox(self.path)
        box.remove(self.keys.pop(key))
        box.flush()
        box.close()


class TestMbox(ConnectorContract):
    @pytest.fixture
    def backend(self, tmp_path):
        return MboxBackend(tmp_path / "archive.mbox")


def _vevent(key: str) -> str:
    return (f"BEGIN:VEVENT\r\nUID:{key}\r\nDTSTAMP:20260101T000000Z\r\nDTSTART:20260105T100000Z\r\n"
            f"DURATION:PT1H\r\nSUMMARY:{key}\r\nEND:VEVENT\r\n")


def _vcard(key: str) -> str:
    return f"BEGIN:VCARD\r\nVERSION:4.0\r\nUID:{key}\r\nFN:{key}\r\nEMAIL:{key}@kunde.example\r\nEND:VCARD\r\n"


class WholeFileBackend:
    """An .ics or .vcf file rewritten on every change (as a calendar export is)."""

    def __init__(self, path: Path, kind: str):
        self.path, self.kind, self.keys = path, kind, []

    def connector(self):
        return make_connector(self.kind, {"type": self.kind, "path": str(self.path)})

    def _write(self) -> None:
        if self.kind == "ics":
            text = "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//contract//EN\r\n" + "".join(
                _vevent(k) for k in self.keys) + "END:VCALENDAR\r\n"
        else:
            text = "".join(_vcard(k) for k in self.keys)
        self.path.write_text(text)
        stamp = self.path.stat().st_mtime_ns + 1_000_000_000 * len(self.keys)  # a new version, even within a tick
        os.utime(self.path, ns=(stamp, stamp))

    def add(self, key: str) -> None:
        self.keys.append(key)
        self._write()

    def delete(self, key: str) -> None:
        self.keys.remove(key)
        self._write()


class TestIcsFile(ConnectorContract):
    @pytest.fixture
    def backend(self, tmp_path):
        return WholeFileBackend(tmp_path / "calendar.ics", "ics")


class TestVcfFile(ConnectorContract):
    @pytest.fixture
    def backend(self, tmp_path):
        return WholeFileBackend(tmp_path / "contacts.vcf", "vcf")


# -- servers -------------------------------------------------------------------


class ImapBackend:
    def __init__(self, server, user: str):
        self.server, self.user, self.uids = server, user, {}
        os.environ[f"CRM_CONTRACT_{user.upper()}"] = server.users[user]

    def connector(self):
        return make_connector("imap", {
            "type": "imap", "host": "127.0.0.1", "port": self.server.port, "tls": "none", "allow_plaintext": True,
            "username": self.user, "password_env": f"CRM_CONTRACT_{self.user.upper()}", "folders": ["INBOX"]})

    def add(self, key: str) -> None:
        [uid] = self.server.append(self.user, "INBOX", make_mail(subject=key, message_id=f"{key}@contract"))
        self.uids[key] = uid

    def delete(self, key: str) -> None:
        with self.server.client(self.user) as client:
            client.select_folder("INBOX")
            client.delete_messages([self.uids.pop(key)])
            client.expunge()


class TestImap(ConnectorContract):
    @pytest.fixture
    def backend(self, dovecot, request):  # noqa: F811
        user = f"c{abs(hash(request.node.name)) % 10**8}"
        dovecot.add_user(user, "contract-pw")
        return ImapBackend(dovecot, user)


class DavBackend:
    def __init__(self, server, kind: str):
        self.server, self.kind = server, kind
        os.environ["CRM_CONTRACT_DAV"] = server.password
        self.name = server.unique("contract")
        self.url = server.make_calendar(self.name) if kind == "caldav" else server.make_addressbook(self.name)

    def connector(self):
        select = "calendars" if self.kind == "caldav" else "addressbooks"
        return make_connector("dav", {"type": self.kind, "url": self.server.url, "username": self.server.user,
                                      "password_env": "CRM_CONTRACT_DAV", "allow_plaintext": True, select: [self.name]})

    def add(self, key: str) -> None:
        if self.kind == "caldav":
            text = "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//contract//EN\r\n" + _vevent(key) + "END:VCALENDAR\r\n"
            resp = self.server.put(self.url, f"{key}.ics", text)
        else:
            resp = self.server.put(self.url, f"{key}.vcf", _vcard(key))
        assert resp.status in (201, 204), resp.status

    def delete(self, key: str) -> None:
        ext = ".ics" if self.kind == "caldav" else ".vcf"
        assert self.server.delete(f"{self.url.rstrip('/')}/{key}{ext}").status in (200, 204)


class TestCalDav(ConnectorContract):
    @pytest.fixture
    def backend(self, radicale):  # noqa: F811
        return DavBackend(radicale, "caldav")


class TestCardDav(ConnectorContract):
    @pytest.fixture
    def backend(self, radicale):  # noqa: F811
        return DavBackend(radicale, "carddav")


class ExchangeBackend:
    """A mailbox on the EWS emulator (tests/ews_emulator), read through impersonation."""

    def __init__(self, emulator):
        from tests.ews_emulator import make_message

        self.emulator, self.make_message, self.items = emulator, make_message, {}
        os.environ["CRM_CONTRACT_EWS"] = "contract-pw"

    def connector(self):
        return make_connector("ex", {
            "type": "exchange", "server": self.emulator.url, "allow_plaintext": True, "username": "svc",
            "password_env": "CRM_CONTRACT_EWS", "auth": "basic", "mailbox": "anna@contract.example",
            "access": "impersonation", "folders": ["inbox"], "calendar": False, "contacts": False})

    def add(self, key: str) -> None:
        from datetime import datetime, timezone

        store = self.emulator.store
        elem = self.make_message(subject=key, sender=("Kim", "kim@kunde.example"), to=[("Anna", "anna@contract.example")],
                                 date=datetime(2026, 10, 1, 9, 30, tzinfo=timezone.utc), message_id=f"<{key}@contract>")
        self.items[key] = store.create(store.folder("anna@contract.example", "inbox"), elem)

    def delete(self, key: str) -> None:
        self.emulator.store.delete(self.items.pop(key))


class TestExchange(ConnectorContract):
    @pytest.fixture
    def backend(self):
        from tests.ews_emulator import EwsEmulator

        emulator = EwsEmulator()
        emulator.store.add_user("svc", "contract-pw", impersonation=True)
        emulator.store.add_user("anna", "anna-pw", mailbox="anna@contract.example")
        with emulator:
            yield ExchangeBackend(emulator)


class M365Backend:
    """A mailbox on the Graph emulator (tests/graph_emulator), read with the app's client secret."""

    def __init__(self, emulator):
        from tests.graph_emulator import make_message

        self.emulator, self.make_message, self.items = emulator, make_message, {}
        self.mailbox = emulator.store.add_mailbox("anna@contract.example")
        os.environ["CRM_CONTRACT_M365"] = "contract-secret"

    def connector(self):
        e = self.emulator
        return make_connector("m365", {
            "type": "m365", "tenant": e.tenant, "client_id": "contract-app", "client_secret_env": "CRM_CONTRACT_M365",
            "authority": e.authority, "graph_url": e.graph_url, "ca_file": str(e.ca_file),
            "mailbox": "anna@contract.example", "folders": ["inbox"], "calendar": False, "contacts": False,
            "page_size": 2})

    def add(self, key: str) -> None:
        from datetime import datetime, timezone

        msg = self.make_message(key, ("Kim", "kim@kunde.example"), [("Anna", "anna@contract.example")],
                                datetime(2026, 10, 1, 9, 30, tzinfo=timezone.utc), f"<{key}@contract>")
        self.items[key] = self.emulator.store.put(self.mailbox.folder("inbox"), msg)["id"]

    def delete(self, key: str) -> None:
        self.emulator.store.delete(self.items.pop(key), self.mailbox)


class TestM365(ConnectorContract):
    @pytest.fixture
    def backend(self):
        from tests.graph_emulator import GraphEmulator

        emulator = GraphEmulator()
        emulator.add_app("contract-app", "contract-secret")
        with emulator:
            yield M365Backend(emulator)
