"""The settings the domain rules read, validated from the config tables.

Every ``from_table`` raises :class:`SettingsError` with the dotted key in the
message, so the CLI can print one readable line.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from typing import Any, Mapping

from crm_bridge.crm_core.domains import AddressSet, normalise_domain

VISIBILITY = ("metadata", "subject", "snippet")
UNMATCHED = ("keep", "metadata", "drop")


class SettingsError(ValueError):
    """A config value is wrong; the message names the key."""


#: the keys each settings table accepts (config.example.toml documents every one)
COMPANY_KEYS = frozenset({"internal_domains", "timezone", "language"})
LINKING_KEYS = frozenset({"create_contacts", "log_bulk", "unmatched", "on_delete", "blocklist", "freemail_domains"})
FOLLOWUP_KEYS = frozenset({"after_appointment_days", "unanswered_days", "lookback_days"})
CUSTOMER_KEYS = frozenset({"name", "domains", "account_owner"})
WEB_KEYS = frozenset({"trusted_header", "demo_login", "secure_cookies", "base_url"})
LANGUAGES = ("de", "en")


def unknown_keys(table: Mapping[str, Any], allowed: frozenset[str] | set[str], where: str) -> list[str]:
    """One readable line per key of ``table`` that is not in ``allowed``, with a "did you mean"."""
    problems = []
    for key in table:
        if key in allowed:
            continue
        import difflib  # here: only a config mistake needs it

        close = difflib.get_close_matches(key, sorted(allowed), n=1, cutoff=0.6)
        hint = f" (did you mean {close[0]}?)" if close else f" (known: {', '.join(sorted(allowed))})"
        problems.append(f"{where}.{key}: unknown key{hint}")
    return problems


_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")


def domain_problem(value: str) -> str | None:
    """Why ``value`` is not a mail domain a customer can own, or None.

    ``mueller-bau.de`` and ``@mueller-bau.de`` are fine; an address
    (``info@mueller-bau.de``), a URL or a bare word is not.
    """
    text = value.strip()
    if "@" in text.lstrip("@"):
        return f"{text!r} is an address, not a domain (write {text.rpartition('@')[2]!r}, or add the person as a contact)"
    domain = text.lstrip("@").strip(".").lower()
    if "://" in domain or "/" in domain:
        return f"{text!r} is a URL, not a domain"
    try:
        ascii_domain = domain.encode("idna").decode("ascii") if not domain.isascii() else domain
    except UnicodeError:
        return f"{text!r} is not a domain"
    labels = ascii_domain.split(".")
    if len(labels) < 2 or not all(_LABEL.match(label) for label in labels) or labels[-1].isdigit():
        return f"{text!r} is not a domain (like mueller-bau.de)"
    return None


def _list(table: Mapping[str, Any], key: str, where: str) -> list[str]:
    value = table.get(key, [])
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise SettingsError(f"{where}.{key} must be a list of strings")
    return [v.strip() for v in value if v.strip()]


def _bool(table: Mapping[str, Any], key: str, where: str, default: bool) -> bool:
    value = table.get(key, default)
    if not isinstance(value, bool):
        raise SettingsError(f"{where}.{key} must be true or false")
    return value


def _int(table: Mapping[str, Any], key: str, where: str, default: int, low: int = 0, high: int = 36500) -> int:
    value = table.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise SettingsError(f"{where}.{key} must be a whole number from {low} to {high}")
    return value


def _choice(table: Mapping[str, Any], key: str, where: str, choices: tuple[str, ...], default: str) -> str:
    value = table.get(key, default)
    if value not in choices:
        raise SettingsError(f"{where}.{key} must be one of {', '.join(choices)}")
    return value


def _date(table: Mapping[str, Any], key: str, where: str) -> datetime | None:
    value = table.get(key)
    if value is None:
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=timezone.utc)
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            raise SettingsError(f"{where}.{key} must be a date like 2025-01-31") from None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)
    raise SettingsError(f"{where}.{key} must be a date like 2025-01-31")


@dataclass(frozen=True)
class LinkingSettings:
    internal_domains: AddressSet = field(default_factory=AddressSet)
    extra_freemail: frozenset[str] = frozenset()
    blocklist: AddressSet = field(default_factory=AddressSet)
    create_contacts: bool = True  # unknown sender at a customer's domain -> new contact
    log_bulk: bool = False  # newsletters / automatic mail become interactions
    unmatched: str = "metadata"  # mail with no customer or contact: keep | metadata | drop
    on_delete: str = "mark"  # deleted on the server: mark | erase

    @classmethod
    def from_tables(cls, company: Mapping[str, Any], linking: Mapping[str, Any]) -> "LinkingSettings":
        return cls(
            internal_domains=AddressSet(_list(company, "internal_domains", "company")),
            extra_freemail=frozenset(normalise_domain(d) for d in _list(linking, "freemail_domains", "linking")),
            blocklist=AddressSet(_list(linking, "blocklist", "linking")),
            create_contacts=_bool(linking, "create_contacts", "linking", True),
            log_bulk=_bool(linking, "log_bulk", "linking", False),
            unmatched=_choice(linking, "unmatched", "linking", UNMATCHED, "metadata"),
            on_delete=_choice(linking, "on_delete", "linking", ("mark", "erase"), "mark"),
        )


@dataclass(frozen=True)
class FollowupSettings:
    after_appointment_days: int = 1  # 0 switches the rule off
    unanswered_days: int = 3  # 0 switches the rule off
    lookback_days: int = 30  # older items never get a rule-made task

    @classmethod
    def from_table(cls, table: Mapping[str, Any]) -> "FollowupSettings":
        return cls(
            after_appointment_days=_int(table, "after_appointment_days", "followup", 1),
            unanswered_days=_int(table, "unanswered_days", "followup", 3),
            lookback_days=_int(table, "lookback_days", "followup", 30),
        )


@dataclass(frozen=True)
class SourcePolicy:
    """What the rules need to know about the source a record came from."""

    #: the source keys read here, for every source type (a connector declares its own on top)
    KEYS = frozenset({"owner", "visibility", "since", "log_folder", "private_folder", "private_keyword",
                      "log_keyword", "create_customers"})

    name: str
    owner: frozenset[str] = frozenset()  # the mailbox owner's addresses
    visibility: str = "snippet"  # metadata | subject | snippet
    since: datetime | None = None
    log_folder: str = ""  # scope whose mail is always logged
    private_folder: str = ""  # scope whose items are never logged
    private_keyword: str = "$Private"
    log_keyword: str = "$CRM"  # a flag (IMAP keyword, the Exchange connector's log category) that logs a mail
    create_customers: bool = False  # address books: ORG may create customers

    @classmethod
    def from_table(cls, name: str, table: Mapping[str, Any]) -> "SourcePolicy":
        where = f"sources.{name}"
        log_folder = table.get("log_folder", "")
        private_folder = table.get("private_folder", "")
        keyword = table.get("private_keyword", "$Private")
        log_keyword = table.get("log_keyword", "$CRM")
        for key, value in (("log_folder", log_folder), ("private_folder", private_folder), ("private_keyword", keyword),
                           ("log_keyword", log_keyword)):
            if not isinstance(value, str):
                raise SettingsError(f"{where}.{key} must be a string")
        return cls(
            name=name,
            owner=frozenset(a.lower() for a in _list(table, "owner", where)),
            visibility=_choice(table, "visibility", where, VISIBILITY, "snippet"),
            since=_date(table, "since", where),
            log_folder=log_folder.strip("/"),
            private_folder=private_folder.strip("/"),
            private_keyword=keyword,
            log_keyword=log_keyword,
            create_customers=_bool(table, "create_customers", where, False),
        )

    def fingerprint(self) -> str:
        """Changes when a setting changed that decides what gets stored."""
        data = [self.visibility, self.since.isoformat() if self.since else "", self.log_folder,
                self.private_folder, self.private_keyword, sorted(self.owner), self.create_customers]
        if self.log_keyword != "$CRM":  # appended only when set, so that older stores keep their fingerprint
            data.append(self.log_keyword)
        return hashlib.sha1(json.dumps(data).encode()).hexdigest()[:16]

    def logged_anyway(self, scope: str, flags) -> bool:
        """Whether a mail is logged even from an unknown sender: in the log folder, or flagged with the log keyword."""
        return self.in_folder(scope, self.log_folder) or bool(self.log_keyword and self.log_keyword in flags)

    def in_folder(self, scope: str, folder: str) -> bool:
        if not folder:
            return False
        scope = scope.strip("/")
        return scope == folder or scope.endswith("/" + folder) or scope.lower() == folder.lower()


@dataclass(frozen=True)
class WebSettings:
    """``[company] timezone, language`` and the ``[web]`` table: what ``crm serve`` reads."""

    timezone: str = ""  # an IANA zone (Europe/Berlin); empty: the system's
    language: str = ""  # de | en; empty: the browser's Accept-Language
    trusted_header: str = ""  # a reverse proxy's authenticated-user header (X-Remote-User); empty: off
    demo_login: bool = False  # the demo only: make and print a login on the first start
    secure_cookies: bool = False  # cookies only over HTTPS (set it behind a TLS proxy)
    base_url: str = ""  # where staff open crm serve (https://crm.example.com): pushed tasks and cards link there

    @classmethod
    def from_tables(cls, company: Mapping[str, Any], web: Mapping[str, Any]) -> "WebSettings":
        zone = company.get("timezone", "")
        if not isinstance(zone, str):
            raise SettingsError("company.timezone must be a time zone name like Europe/Berlin")
        if zone:
            from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

            try:
                ZoneInfo(zone)
            except (ZoneInfoNotFoundError, ValueError):
                raise SettingsError(f"company.timezone: {zone!r} is not a time zone (like Europe/Berlin)") from None
        language = company.get("language", "")
        if language and language not in LANGUAGES:
            raise SettingsError(f"company.language must be one of {', '.join(LANGUAGES)}")
        header = web.get("trusted_header", "")
        if not isinstance(header, str) or (header and not re.match(r"^[A-Za-z0-9-]+$", header)):
            raise SettingsError("web.trusted_header must be a header name like X-Remote-User")
        return cls(timezone=zone, language=language, trusted_header=header,
                   demo_login=_bool(web, "demo_login", "web", False),
                   secure_cookies=_bool(web, "secure_cookies", "web", False),
                   base_url=base_url(web.get("base_url", "")))


def base_url(value: Any) -> str:
    """``[web] base_url``: an http(s) address with a host, no query or fragment; without its trailing slash."""
    from urllib.parse import urlsplit

    problem = "web.base_url must be the address staff open crm serve at, like https://crm.example.com"
    if not isinstance(value, str):
        raise SettingsError(problem)
    text = value.strip()
    if not text:
        return ""
    if "@" in text.partition("://")[2].partition("/")[0]:  # not echoed: it may hold a password
        raise SettingsError(f"{problem}, without a user name or password")
    try:
        parts = urlsplit(text)
        parts.port  # a port that is not a number raises here
    except ValueError:
        raise SettingsError(f"{problem} (not {text!r})") from None
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment or \
            any(c.isspace() for c in text):
        raise SettingsError(f"{problem} (not {text!r})")
    return text.rstrip("/")
