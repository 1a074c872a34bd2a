"""People who use the web front end: accounts, roles, passwords, API tokens.

Passwords are stored as salted scrypt hashes (``hashlib.scrypt``, the
standard library's binding of OpenSSL); API tokens as their SHA-256 (a token
is 32 random bytes, so a fast hash is enough).  Neither is ever logged.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from typing import Any

from crm_bridge.crm_core.storebase import StoreBase, StoreError, iso, utcnow

ROLES = ("admin", "staff")
#: scrypt cost: n=2**15, r=8, p=1 (about 50 ms and 32 MiB per check, RFC 7914's interactive setting doubled)
_N, _R, _P = 2 ** 15, 8, 1
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
MIN_PASSWORD = 8


def hash_password(password: str, n: int = _N, r: int = _R, p: int = _P) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, maxmem=128 * 1024 * 1024, dklen=32)
    b64 = base64.b64encode
    return f"scrypt${n}${r}${p}${b64(salt).decode()}${b64(digest).decode()}"


def check_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        found = hashlib.scrypt(password.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p),
                               maxmem=128 * 1024 * 1024, dklen=32)
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(found, base64.b64decode(digest))


#: checked when the name is unknown, so that a wrong name costs as long as a wrong password
_DUMMY = hash_password("not a password")


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Users:
    """The ``users`` table of a store."""

    def __init__(self, store: StoreBase):
        self.store = store

    def add(self, name: str, password: str, role: str = "staff") -> None:
        if not _NAME.match(name):
            raise StoreError(f"{name!r} is not a user name (letters, digits, '.', '_', '-', '@'; up to 64)")
        if role not in ROLES:
            raise StoreError(f"a role is one of {', '.join(ROLES)}")
        if len(password) < MIN_PASSWORD:
            raise StoreError(f"a password has at least {MIN_PASSWORD} characters")
        hashed = hash_password(password)
        with self.store.transaction():
            if self.store._one("SELECT name FROM users WHERE name=?", (name,)) is not None:
                raise StoreError(f"there is a user {name!r} already")
            self.store._x("INSERT INTO users(name, role, password, created_at) VALUES (?, ?, ?, ?)",
                          (name, role, hashed, iso(utcnow())))

    def set_password(self, name: str, password: str) -> None:
        if len(password) < MIN_PASSWORD:
            raise StoreError(f"a password has at least {MIN_PASSWORD} characters")
        self._require(name)
        with self.store.transaction():
            self.store._x("UPDATE users SET password=? WHERE name=?", (hash_password(password), name))

    def set_role(self, name: str, role: str) -> None:
        if role not in ROLES:
            raise StoreError(f"a role is one of {', '.join(ROLES)}")
        self._require(name)
        with self.store.transaction():
            self.store._x("UPDATE users SET role=? WHERE name=?", (role, name))

    def remove(self, name: str) -> None:
        self._require(name)
        with self.store.transaction():
            self.store._x("DELETE FROM users WHERE name=?", (name,))

    def new_token(self, name: str) -> str:
        """A new API token for ``name`` (replaces the old one); shown once, stored as its hash."""
        self._require(name)
        token = "crm_" + secrets.token_urlsafe(32)
        with self.store.transaction():
            self.store._x("UPDATE users SET token_hash=? WHERE name=?", (_token_hash(token), name))
        return token

    def verify(self, name: str, password: str) -> dict[str, Any] | None:
        """The user, when the password is right; None otherwise (in about the same time either way)."""
        user = self.get(name)
        stored = self.store._one("SELECT password FROM users WHERE name=?", (name,)) if user else None
        ok = check_password(password, stored or _DUMMY)
        return user if user and stored and ok else None

    def by_token(self, token: str) -> dict[str, Any] | None:
        if not token:
            return None
        row = self.store._x("SELECT name, role FROM users WHERE token_hash=?", (_token_hash(token),)).fetchone()
        return {"name": row[0], "role": row[1]} if row else None

    def get(self, name: str) -> dict[str, Any] | None:
        row = self.store._x("SELECT name, role FROM users WHERE name=?", (name,)).fetchone()
        return {"name": row[0], "role": row[1]} if row else None

    def list(self) -> list[dict[str, Any]]:
        return [{"name": n, "role": r, "created_at": c, "has_token": bool(t)} for n, r, c, t in self.store._x(
            "SELECT name, role, created_at, token_hash FROM users ORDER BY name COLLATE NOCASE")]

    def count(self) -> int:
        return int(self.store._one("SELECT COUNT(*) FROM users") or 0)

    def _require(self, name: str) -> None:
        if self.get(name) is None:
            raise StoreError(f"no user {name!r}")
