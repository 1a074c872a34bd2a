"""Shared helpers: write configs and mail, run the `crm` command."""

from __future__ import annotations

import json
import os
import sysconfig
import textwrap
from email.utils import format_datetime
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from crm_bridge import cli

CPYTHON_EMAIL_DATA = Path(sysconfig.get_paths()["stdlib"]) / "test" / "test_email" / "data"


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return json.dumps(str(value))


def write_config(path: Path, *, internal=("nordlicht.example",), customers=(), sources=None,
                 linking=None, followup=None, push=None, store="crm.db", company=None, web=None) -> Path:
    """A crm.toml; ``sources`` maps name -> option dict; ``company`` and ``web``: more keys of those tables."""
    lines = [f"[store]\npath = {toml_value(store)}\n", f"[company]\ninternal_domains = {toml_value(list(internal))}\n"
             + "".join(f"{k} = {toml_value(v)}\n" for k, v in (company or {}).items())]
    if web:
        lines.append("[web]\n" + "".join(f"{k} = {toml_value(v)}\n" for k, v in web.items()))
    if linking:
        lines.append("[linking]\n" + "".join(f"{k} = {toml_value(v)}\n" for k, v in linking.items()))
    if followup:
        lines.append("[followup]\n" + "".join(f"{k} = {toml_value(v)}\n" for k, v in followup.items()))
    if push:
        lines.append("[push]\n" + "".join(f"{k} = {toml_value(v)}\n" for k, v in push.items()))
    for name, domains in customers:
        lines.append(f"[[customers]]\nname = {toml_value(name)}\ndomains = {toml_value(list(domains))}\n")
    for name, options in (sources or {}).items():
        lines.append(f"[sources.{name}]\n" + "".join(f"{k} = {toml_value(v)}\n" for k, v in options.items()))
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def one_source_engine(tmp: Path, name: str, options: dict, **engine_options: Any):
    """An Engine over a store in ``tmp`` with one customer (kunde.example), the internal domain
    nordlicht.example and the one source ``name`` (owned by anna@nordlicht.example)."""
    from crm_bridge.sync.config import parse_config
    from crm_bridge.sync.engine import Engine

    config = parse_config({
        "store": {"path": str(tmp / "crm.db")},
        "company": {"internal_domains": ["nordlicht.example"]},
        "customers": [{"name": "Kunde", "domains": ["kunde.example"]}],
        "sources": {name: {"owner": ["anna@nordlicht.example"], **options}},
    }, tmp / "crm.toml")
    return Engine(config, **engine_options)


def make_mail(*, sender="Kim Kunde <kim@kunde.example>", to="Anna <anna@nordlicht.example>", subject="Angebot",
              body="Guten Tag, anbei die Anfrage.", message_id=None, date=None, in_reply_to=None,
              references=None, cc=None, extra_headers=(), content_type="text/plain; charset=utf-8") -> bytes:
    date = date or datetime(2026, 10, 1, 9, 30, tzinfo=timezone.utc)
    headers = [f"From: {sender}", f"To: {to}", f"Subject: {subject}", f"Date: {format_datetime(date)}"]
    if cc:
        headers.append(f"Cc: {cc}")
    if message_id:
        headers.append(f"Message-ID: <{message_id}>")
    if in_reply_to:
        headers.append(f"In-Reply-To: <{in_reply_to}>")
    if references:
        headers.append("References: " + " ".join(f"<{r}>" for r in references))
    headers.extend(extra_headers)
    headers += ["MIME-Version: 1.0", f"Content-Type: {content_type}", "Content-Transfer-Encoding: 8bit"]
    return ("\r\n".join(headers) + "\r\n\r\n" + body + "\r\n").encode("utf-8")


class Maildir:
    """A Maildir folder the tests write into."""

    def __init__(self, root: Path):
        self.root = root
        self.counter = 0
        for sub in ("cur", "new", "tmp"):
            (root / sub).mkdir(parents=True, exist_ok=True)

    def add(self, raw: bytes, flags: str = "S", folder: str | None = None) -> Path:
        base = self.root if folder is None else self.root / ("." + folder.replace("/", "."))
        for sub in ("cur", "new", "tmp"):
            (base / sub).mkdir(parents=True, exist_ok=True)
        self.counter += 1
        name = f"17000{self.counter:05d}.M{self.counter}P1.test"
        path = base / "cur" / f"{name}:2,{flags}"
        path.write_bytes(raw)
        return path


class Crm:
    """Runs `crm` in-process against one config."""

    def __init__(self, config: Path):
        self.config = config
        self.runner = CliRunner()

    def __call__(self, *args: str, ok: bool = True, input: str | None = None):
        result = self.runner.invoke(cli.main, ["--config", str(self.config), *args], catch_exceptions=False,
                                    input=input)
        if ok:
            assert result.exit_code == 0, f"crm {' '.join(args)} -> {result.exit_code}: {result.output}"
        return result

    def json(self, *args: str) -> Any:
        return json.loads(self(*args, "--json").stdout)


@pytest.fixture
def maildir(tmp_path: Path) -> Maildir:
    return Maildir(tmp_path / "mail")


@pytest.fixture
def crm_env(tmp_path: Path, maildir: Maildir):
    """A config with one Maildir source and one customer, plus a runner."""

    def setup(**kwargs) -> Crm:
        sources = kwargs.pop("sources", None) or {
            "anna": {"type": "maildir", "path": str(maildir.root), "owner": ["anna@nordlicht.example"]}
        }
        customers = kwargs.pop("customers", (("Kunde GmbH", ["kunde.example"]),))
        return Crm(write_config(tmp_path / "crm.toml", customers=customers, sources=sources, **kwargs))

    return setup


def dedent(text: str) -> str:
    return textwrap.dedent(text).lstrip()


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def readme_config(source_type: str):
    """The README's example config (a ```toml block) with a source of ``source_type``, parsed as crm reads it."""
    import re
    import tomllib

    from crm_bridge.sync.config import parse_config

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    block = next(b for b in re.findall(r"```toml\n(.*?)```", readme, re.S) if f'type = "{source_type}"' in b)
    return parse_config(tomllib.loads(re.sub(r"^  ", "", block, flags=re.M)), Path("/srv/crm/crm.toml"))
