"""Reading ``crm.toml``: one readable error line per mistake, never a traceback.

Lookup order: ``--config PATH``, then ``$CRM_CONFIG``, then ``./crm.toml``.
Relative paths inside the file are relative to the file.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from crm_core.settings import FollowupSettings, LinkingSettings, SettingsError, SourcePolicy

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_PATH_KEYS = ("path", "ca_file")
_SECRET_KEYS = {"password", "token", "secret", "client_secret"}
_TOP_KEYS = {"store", "company", "linking", "followup", "customers", "sources", "push", "log"}


class ConfigError(Exception):
    """The config is wrong or missing; the message is one line for the user."""


@dataclass
class Config:
    path: Path
    store_path: Path
    linking: LinkingSettings
    followup: FollowupSettings
    customers: list[tuple[str, list[str], str | None]] = field(default_factory=list)
    sources: dict[str, dict[str, Any]] = field(default_factory=dict)
    policies: dict[str, SourcePolicy] = field(default_factory=dict)
    push_tasks: str | None = None
    push_cards: str | None = None
    log_file: Path | None = None


def find_config(explicit: str | None) -> Path:
    if explicit:
        path = Path(explicit)
    elif os.environ.get("CRM_CONFIG"):
        path = Path(os.environ["CRM_CONFIG"])
    else:
        path = Path("crm.toml")
    if not path.is_file():
        hint = "" if explicit or os.environ.get("CRM_CONFIG") else " (give --config PATH or set CRM_CONFIG; `crm init` writes one)"
        raise ConfigError(f"config file {path} not found{hint}")
    return path


def _table(data: dict, key: str) -> dict:
    value = data.get(key, {})
    if not isinstance(value, dict):
        raise ConfigError(f"[{key}] must be a table")
    return value


def load_config(explicit: str | None = None) -> Config:
    path = find_config(explicit)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc.__class__.__name__}: {exc}") from None
    return parse_config(data, path)


def parse_config(data: dict[str, Any], path: Path) -> Config:
    base = path.parent.resolve()
    unknown = set(data) - _TOP_KEYS
    if unknown:
        raise ConfigError(f"{path}: unknown top-level key {sorted(unknown)[0]!r}")
    store = _table(data, "store")
    store_path = store.get("path", "crm.db")
    if not isinstance(store_path, str) or not store_path:
        raise ConfigError("store.path must be a file name")
    try:
        linking = LinkingSettings.from_tables(_table(data, "company"), _table(data, "linking"))
        followup = FollowupSettings.from_table(_table(data, "followup"))
    except SettingsError as exc:
        raise ConfigError(str(exc)) from None
    customers = []
    raw_customers = data.get("customers", [])
    if not isinstance(raw_customers, list):
        raise ConfigError("customers must be an array of tables: [[customers]]")
    for n, entry in enumerate(raw_customers):
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str) or not entry["name"].strip():
            raise ConfigError(f"customers[{n}].name is missing")
        domains = entry.get("domains", [])
        if isinstance(domains, str):
            domains = [domains]
        if not isinstance(domains, list) or not all(isinstance(d, str) for d in domains):
            raise ConfigError(f"customers[{n}].domains must be a list of domains")
        owner = entry.get("account_owner")
        if owner is not None and not isinstance(owner, str):
            raise ConfigError(f"customers[{n}].account_owner must be a name or an address")
        customers.append((entry["name"].strip(), domains, owner))
    sources: dict[str, dict[str, Any]] = {}
    policies: dict[str, SourcePolicy] = {}
    for name, table in _table(data, "sources").items():
        if not _NAME.match(name):
            raise ConfigError(f"sources.{name}: a source name uses letters, digits, '-', '_' and '.' only")
        if not isinstance(table, dict):
            raise ConfigError(f"sources.{name} must be a table")
        if not isinstance(table.get("type"), str):
            raise ConfigError(f"sources.{name}.type is missing")
        for key in _SECRET_KEYS & set(table):
            raise ConfigError(
                f"sources.{name}.{key}: put the secret in an environment variable ({key}_env) "
                f"or a command ({key}_command), not in the config file"
            )
        table = dict(table)
        for key in _PATH_KEYS:
            value = table.get(key)
            if isinstance(value, str) and value and not os.path.isabs(os.path.expanduser(value)):
                table[key] = str(base / value)
            elif isinstance(value, str):
                table[key] = os.path.expanduser(value)
        if table.get("enabled", True) is False:
            continue
        try:
            policies[name] = SourcePolicy.from_table(name, table)
        except SettingsError as exc:
            raise ConfigError(str(exc)) from None
        sources[name] = table
    push = _table(data, "push")
    for key in ("tasks", "cards"):
        target = push.get(key)
        if target is not None and target not in sources:
            raise ConfigError(f"push.{key} names {target!r}, which is not a configured source")
    log = _table(data, "log")
    log_file = log.get("file")
    return Config(
        path=path,
        store_path=(base / store_path) if not os.path.isabs(store_path) else Path(store_path),
        linking=linking,
        followup=followup,
        customers=customers,
        sources=sources,
        policies=policies,
        push_tasks=push.get("tasks"),
        push_cards=push.get("cards"),
        log_file=(base / log_file) if isinstance(log_file, str) else None,
    )
