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

from crm_bridge.crm_core.settings import (
    COMPANY_KEYS,
    CUSTOMER_KEYS,
    FOLLOWUP_KEYS,
    LINKING_KEYS,
    FollowupSettings,
    LinkingSettings,
    SettingsError,
    WEB_KEYS,
    SourcePolicy,
    WebSettings,
    domain_problem,
    unknown_keys,
)

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_PATH_KEYS = ("path", "ca_file", "token_cache")
_TOP_KEYS = frozenset({"store", "company", "linking", "followup", "customers", "sources", "push", "log", "web"})
_STORE_KEYS = frozenset({"path"})
_PUSH_KEYS = frozenset({"tasks", "cards"})
_LOG_KEYS = frozenset({"file"})


class ConfigError(Exception):
    """The config is wrong or missing; each of ``problems`` is one line for the user."""

    def __init__(self, message: str, problems: list[str] | None = None):
        super().__init__(message)
        self.problems = problems or [message]


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
    web: WebSettings = field(default_factory=WebSettings)


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


def _table(data: dict, key: str, problems: list[str]) -> dict:
    value = data.get(key, {})
    if not isinstance(value, dict):
        problems.append(f"[{key}] must be a table")
        return {}
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
    """Check the whole config, without network access; every mistake found is
    one line of the :class:`ConfigError` raised at the end."""
    from crm_bridge.connectors.base import ConfigError as SourceConfigError, REFUSED_SECRET_KEYS, connector_class

    problems: list[str] = []
    base = path.parent.resolve()
    problems += [p.replace("[top].", "", 1).replace("unknown key", "unknown top-level key", 1)
                 for p in unknown_keys(data, _TOP_KEYS, "[top]")]
    store = _table(data, "store", problems)
    problems += unknown_keys(store, _STORE_KEYS, "store")
    store_path = store.get("path", "crm.db")
    if not isinstance(store_path, str) or not store_path:
        problems.append("store.path must be a file name")
        store_path = "crm.db"
    company, linking_table = _table(data, "company", problems), _table(data, "linking", problems)
    followup_table = _table(data, "followup", problems)
    problems += unknown_keys(company, COMPANY_KEYS, "company")
    problems += unknown_keys(linking_table, LINKING_KEYS, "linking")
    problems += unknown_keys(followup_table, FOLLOWUP_KEYS, "followup")
    linking, followup = LinkingSettings(), FollowupSettings()
    try:
        linking = LinkingSettings.from_tables(company, linking_table)
    except SettingsError as exc:
        problems.append(str(exc))
    try:
        followup = FollowupSettings.from_table(followup_table)
    except SettingsError as exc:
        problems.append(str(exc))
    customers = _customers(data.get("customers", []), problems)
    web_table = _table(data, "web", problems)
    problems += unknown_keys(web_table, WEB_KEYS, "web")
    web = WebSettings()
    try:
        web = WebSettings.from_tables(company, web_table)
    except SettingsError as exc:
        problems.append(str(exc))

    sources: dict[str, dict[str, Any]] = {}
    policies: dict[str, SourcePolicy] = {}
    classes: dict[str, Any] = {}
    for name, table in _table(data, "sources", problems).items():
        where = f"sources.{name}"
        if not _NAME.match(name):
            problems.append(f"{where}: a source name uses letters, digits, '-', '_' and '.' only")
            continue
        if not isinstance(table, dict):
            problems.append(f"{where} must be a table")
            continue
        type_name = table.get("type")
        if not isinstance(type_name, str):
            problems.append(f"{where}.type is missing")
            continue
        try:
            cls = connector_class(type_name)
        except SourceConfigError as exc:
            problems.append(f"{where}.type: {exc}")
            continue
        classes[name] = cls
        for key in sorted(REFUSED_SECRET_KEYS & set(table)):
            problems.append(
                f"{where}.{key}: put the secret in an environment variable "
                f"({key}_env) or a command ({key}_command), not in the config file"
            )
        problems += unknown_keys({k: v for k, v in table.items() if k not in REFUSED_SECRET_KEYS},
                                 cls.accepted_keys(), where)
        enabled = table.get("enabled", True)
        if not isinstance(enabled, bool):
            problems.append(f"{where}.enabled must be true or false")
        if enabled is False:
            continue
        table = dict(table)
        if "token_cache" in cls.accepted_keys() and not table.get("token_cache"):  # sign-in state, next to the store
            table["token_cache"] = str((base / store_path).parent / f"{name}.tokens.json")
        for key in _PATH_KEYS:
            value = table.get(key)
            if isinstance(value, str) and value and not os.path.isabs(os.path.expanduser(value)):
                table[key] = str(base / value)
            elif isinstance(value, str):
                table[key] = os.path.expanduser(value)
        try:
            policies[name] = SourcePolicy.from_table(name, table)
        except SettingsError as exc:
            problems.append(str(exc))
        try:
            cls(name, table)  # checks the values; a connector does no I/O when it is made
        except SourceConfigError as exc:
            problems.append(str(exc))
        sources[name] = table

    push = _table(data, "push", problems)
    problems += unknown_keys(push, _PUSH_KEYS, "push")
    for key in sorted(_PUSH_KEYS & set(push)):
        target = push[key]
        if not isinstance(target, str) or target not in sources:
            state = " (it is disabled)" if isinstance(target, str) and target in classes else ""
            problems.append(f"push.{key} names {target!r}, which is not a configured source{state}")
            continue
        option = classes[target].push_options.get(key)
        if option is None:
            problems.append(f"push.{key} names {target!r}, a {sources[target]['type']} source, which cannot receive {key}")
        elif not sources[target].get(option):
            problems.append(f"push.{key} names {target!r}, but sources.{target}.{option} is not set "
                            f"(the collection the {key} go to)")
    log = _table(data, "log", problems)
    problems += unknown_keys(log, _LOG_KEYS, "log")
    log_file = log.get("file")
    if log_file is not None and not isinstance(log_file, str):
        problems.append("log.file must be a file name")
    if problems:
        problems = list(dict.fromkeys(problems))
        raise ConfigError(f"{path}: " + "; ".join(problems), [f"{path}: {p}" for p in problems])
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
        web=web,
    )


def _customers(raw: Any, problems: list[str]) -> list[tuple[str, list[str], str | None]]:
    if not isinstance(raw, list):
        problems.append("customers must be an array of tables: [[customers]]")
        return []
    customers = []
    for n, entry in enumerate(raw):
        if not isinstance(entry, dict):
            problems.append(f"customers[{n}] must be a table")
            continue
        label = f"customers[{n}]" + (f" ({entry['name'].strip()})" if isinstance(entry.get("name"), str) else "")
        problems += unknown_keys(entry, CUSTOMER_KEYS, label)
        if not isinstance(entry.get("name"), str) or not entry["name"].strip():
            problems.append(f"customers[{n}].name is missing")
            continue
        domains = entry.get("domains", [])
        if isinstance(domains, str):
            domains = [domains]
        if not isinstance(domains, list) or not all(isinstance(d, str) for d in domains):
            problems.append(f"{label}.domains must be a list of domains")
            continue
        for domain in domains:
            why = domain_problem(domain)
            if why:
                problems.append(f"{label}.domains: {why}")
        owner = entry.get("account_owner")
        if owner is not None and not isinstance(owner, str):
            problems.append(f"{label}.account_owner must be a name or an address")
            owner = None
        customers.append((entry["name"].strip(), domains, owner))
    return customers
