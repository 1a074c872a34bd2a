"""The `crm` command: errors, JSON, dry runs, the lock; follow-up rules and tasks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import click
import pytest

from crm_bridge import cli
from crm_bridge.crm_core.followup import apply_rules
from crm_bridge.crm_core.settings import FollowupSettings
from crm_bridge.crm_core.store import Store
from crm_bridge.sync.lock import StoreLock
from tests.conftest import make_mail, write_config


REPO = Path(__file__).resolve().parents[1]


def run_crm(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    # PYTHONPATH: run this checkout's code, not an installed crm-bridge, whatever the working directory
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    return subprocess.run([sys.executable, "-m", "crm_bridge.cli", *args], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": path, **(env or {})}, timeout=120)


@pytest.mark.parametrize("content, expected", [
    ("[store\npath=1", "not valid TOML"),
    ("[sources.x]\npath = 'a'\n", "sources.x.type is missing"),
    ("[sources.x]\ntype = 'pigeon'\n", "unknown source type 'pigeon'"),
    ("[sources.x]\ntype = 'imap'\nhost = 'h'\npassword = 'hunter2'\n", "sources.x.password"),
    ("[linking]\nunmatched = 'maybe'\n", "linking.unmatched must be one of"),
    ("[followup]\nunanswered_days = -3\n", "followup.unanswered_days"),
    ("[sources.x]\ntype = 'maildir'\nsince = 'yesterday'\n", "sources.x.since"),
    ("[push]\ntasks = 'nowhere'\n", "push.tasks names 'nowhere'"),
    ("bogus = 1\n", "bogus: unknown top-level key"),
])
def test_bad_config_is_one_readable_line(tmp_path, content, expected):
    (tmp_path / "crm.toml").write_text(content)
    done = run_crm("--config", str(tmp_path / "crm.toml"), "sync", cwd=tmp_path)
    assert done.returncode == 2, done
    lines = done.stderr.strip().splitlines()
    # every mistake is one line, each once (a source with two mistakes gives two lines)
    assert sum(expected in line for line in lines) == 1 and len(set(lines)) == len(lines), done.stderr
    assert all(line.startswith("crm: ") for line in lines)
    assert "Traceback" not in done.stderr and "hunter2" not in done.stderr + done.stdout


def test_missing_config_and_missing_maildir(tmp_path):
    done = run_crm("status", cwd=tmp_path, env={"CRM_CONFIG": ""})
    assert done.returncode == 2 and "crm.toml not found" in done.stderr and "Traceback" not in done.stderr
    write_config(tmp_path / "crm.toml", sources={"m": {"type": "maildir", "path": "does-not-exist"}})
    done = run_crm("--config", str(tmp_path / "crm.toml"), "sync", cwd=tmp_path)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stdout.startswith("m: error:") and "does-not-exist" not in done.stdout
    assert done.stderr.count("does-not-exist") == 1 and done.stderr.startswith("crm: m: ")  # every problem once
    status = json.loads(run_crm("--config", str(tmp_path / "crm.toml"), "status", "--json", cwd=tmp_path).stdout)
    assert status["sources"][0]["last_status"] == "error" and "not a Maildir" in status["sources"][0]["last_error"]


def test_password_from_env_or_command_never_from_the_file(tmp_path):
    from crm_bridge.connectors.base import ConfigError, secret

    os.environ["CRM_TEST_SECRET"] = "s3cret"
    assert secret("x", {"password_env": "CRM_TEST_SECRET"}) == "s3cret"
    assert secret("x", {"password_command": [sys.executable, "-c", "print('from-cmd')"]}) == "from-cmd"
    with pytest.raises(ConfigError, match="not in the config file"):
        secret("x", {"password": "plain"})
    with pytest.raises(ConfigError, match="exited with status 3"):
        secret("x", {"password_command": [sys.executable, "-c", "import sys; sys.exit(3)"]})
    with pytest.raises(ConfigError, match="NOPE_NOT_SET is not set"):
        secret("x", {"password_env": "NOPE_NOT_SET"})


def test_dry_run_writes_nothing(crm_env, maildir):
    crm = crm_env()
    maildir.add(make_mail(sender="kim@kunde.example", message_id="dry@x"))
    before = crm.json("status")["counts"]
    result = crm.json("sync", "--dry-run")
    assert result["dry_run"] and result["results"][0]["added"] == 1
    assert crm.json("status")["counts"] == before
    crm("sync")
    assert crm.json("status")["counts"]["mails"] == 1


def test_second_sync_waits_for_the_lock(crm_env, maildir, tmp_path):
    crm = crm_env()
    with StoreLock(tmp_path / "crm.db"):
        result = crm("sync", ok=False)
    assert result.exit_code == 75 and "another crm sync" in result.output


def test_every_command_has_help():
    def walk(group: click.Group, prefix: str = ""):
        for name, command in group.commands.items():
            yield prefix + name, command
            if isinstance(command, click.Group):
                yield from walk(command, prefix + name + " ")

    for name, command in walk(cli.main):
        assert command.help and len(command.help) > 20, f"crm {name} has no help text"


def test_search_export_and_customers(crm_env, maildir, tmp_path):
    crm = crm_env()
    maildir.add(make_mail(sender="Kim <kim@kunde.example>", message_id="s@x", subject="Wartungsvertrag Heizung",
                          body="Bitte um Rückruf wegen der Wärmepumpe"))
    crm("sync")
    hits = crm.json("search", "Wärmepumpe")
    assert [h["subject"] for h in hits] == ["Wartungsvertrag Heizung"] and hits[0]["customers"] == "Kunde GmbH"
    assert crm.json("search", "Ölheizung") == []
    exported = json.loads(crm("export", "--format", "json").stdout)
    assert {c["name"] for c in exported["customers"]} == {"Kunde GmbH"}
    csv_text = crm("export", "--format", "csv", "--table", "contacts").stdout
    assert csv_text.splitlines()[0].startswith("id,name") and "Kim" in csv_text
    [customer] = crm.json("customers", "list")
    assert customer["interactions"] == 1 and customer["contacts"] == 1


def _store_with_history(tmp_path: Path, now: datetime) -> Store:
    from crm_bridge.crm_core.records import Address, AppointmentRecord, Attendee, Batch, Location, MailRecord
    from crm_bridge.crm_core.settings import LinkingSettings, SourcePolicy
    from crm_bridge.crm_core.domains import AddressSet

    store = Store(tmp_path / "rules.db", LinkingSettings(internal_domains=AddressSet(["nordlicht.example"])))
    store.add_customer("Kunde GmbH", ["kunde.example"])
    policy = SourcePolicy("anna", owner=frozenset({"anna@nordlicht.example"}))
    kim, anna = Address("kim@kunde.example", "Kim"), Address("anna@nordlicht.example", "Anna")
    recs = [
        MailRecord(Location("INBOX", "1"), "q1@x", sender=kim, to=(anna,), date=now - timedelta(days=5), subject="Frage offen"),
        MailRecord(Location("INBOX", "2"), "q2@x", sender=kim, to=(anna,), date=now - timedelta(days=5), subject="Frage beantwortet"),
        MailRecord(Location("Sent", "3"), "a2@x", in_reply_to=("q2@x",), sender=anna, to=(kim,), date=now - timedelta(days=4), subject="Re: Frage beantwortet"),
        MailRecord(Location("INBOX", "4"), "q3@x", sender=kim, to=(anna,), date=now - timedelta(days=1), subject="Frage frisch"),
        MailRecord(Location("INBOX", "5"), "q4@x", sender=kim, to=(anna,), date=now - timedelta(days=90), subject="Frage uralt"),
        AppointmentRecord(Location("cal", "e1"), "e1", start=now - timedelta(days=2, hours=2), end=now - timedelta(days=2),
                          organizer=Attendee(anna, "organizer"), attendees=(Attendee(kim),), summary="Begehung"),
        AppointmentRecord(Location("cal", "e2"), "e2", start=now + timedelta(days=2), end=now + timedelta(days=2, hours=1),
                          organizer=Attendee(anna, "organizer"), attendees=(Attendee(kim),), summary="Zukunft"),
        AppointmentRecord(Location("cal", "e3"), "e3", start=now - timedelta(days=3), end=now - timedelta(days=3),
                          organizer=Attendee(anna, "organizer"), attendees=(Attendee(kim),), summary="Abgesagt", status="CANCELLED"),
    ]
    with store.transaction():
        store.apply_batch(policy, Batch(records=recs), now)
    return store


def test_follow_up_rules_create_each_task_once(tmp_path):
    now = datetime(2026, 11, 20, 12, tzinfo=timezone.utc)
    store = _store_with_history(tmp_path, now)
    settings = FollowupSettings(after_appointment_days=1, unanswered_days=3, lookback_days=30)
    assert apply_rules(store, settings, now) == 2
    titles = sorted(t["title"] for t in store.tasks())
    assert titles == ["Follow up: Begehung", "Reply to kim@kunde.example: Frage offen"]
    due = {t["title"]: t["due"] for t in store.tasks()}
    # the rules would make both due in the past (2026-11-19 and -18): a task never arrives overdue
    assert due == {"Follow up: Begehung": "2026-11-20", "Reply to kim@kunde.example: Frage offen": "2026-11-20"}
    for _ in range(3):
        assert apply_rules(store, settings, now) == 0
    # a task that was done stays done and is not created again
    [first] = [t for t in store.tasks() if t["title"].startswith("Follow up")]
    store.update_task(first["id"], status="done")
    assert apply_rules(store, settings, now + timedelta(days=1)) == 0
    assert len(store.tasks()) == 2


def test_a_due_date_in_days_counts_from_the_offices_today(crm_env):
    """``--due +N`` is N days after the office's date ([company] timezone), not the server's."""
    from datetime import date
    from zoneinfo import ZoneInfo

    # UTC+14 and UTC-11 are 25 hours apart: one of them is on another date than this machine
    zone = next(z for z in ("Pacific/Kiritimati", "Pacific/Pago_Pago") if datetime.now(ZoneInfo(z)).date() != date.today())
    crm = crm_env(company={"timezone": zone})
    crm("tasks", "add", "Rückruf", "--customer", "Kunde GmbH", "--due", "+2")
    [task] = crm.json("tasks", "list")
    assert task["due"] == (datetime.now(ZoneInfo(zone)).date() + timedelta(days=2)).isoformat()
    crm("tasks", "edit", str(task["id"]), "--due", "+0")
    assert crm.json("tasks", "list")[0]["due"] == datetime.now(ZoneInfo(zone)).date().isoformat()


def test_tasks_cli(crm_env, maildir):
    crm = crm_env()
    crm("tasks", "add", "Angebot nachfassen", "--customer", "Kunde GmbH", "--due", "2026-12-01")
    [task] = crm.json("tasks", "list")
    assert task["title"] == "Angebot nachfassen" and task["due"] == "2026-12-01" and task["customer"] == "Kunde GmbH"
    crm("tasks", "done", str(task["id"]))
    assert crm.json("tasks", "list") == []
    assert [t["status"] for t in crm.json("tasks", "list", "--all")] == ["done"]
    bad = crm("tasks", "add", "x", "--due", "someday", ok=False)
    assert bad.exit_code == 2 and "YYYY-MM-DD" in bad.output
    missing = crm("tasks", "add", "x", "--customer", "Niemand", ok=False)
    assert missing.exit_code == 1 and "no customer named 'Niemand'" in missing.output
