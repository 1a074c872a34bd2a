"""Who is asking: log in and out, sessions, CSRF, the login rate limit, roles.

- Sessions are Flask's signed cookies (HttpOnly, SameSite=Lax, Secure when
  ``[web] secure_cookies``); the key is made once per store and kept in its
  ``meta`` table, so sessions survive a restart and no key is configured.
- Every POST carries the session's CSRF token (a form field ``csrf``, or the
  ``X-CSRF-Token`` header for the API); the API may instead send
  ``Authorization: Bearer <token>`` (``crm users token NAME``), which needs none.
- Five wrong passwords from one address within five minutes lock that
  address out of the login for the rest of the five minutes.
- ``[web] trusted_header``: a reverse proxy that authenticated the person
  names them in that header; the name must be a user in the store.
"""

from __future__ import annotations

import hmac
import secrets
import threading
import time
from collections import defaultdict, deque
from functools import wraps
from typing import Any, Callable

from flask import Blueprint, abort, current_app, g, redirect, render_template, request, session, url_for

from crm_bridge.crm_core.users import Users

bp = Blueprint("auth", __name__)

MAX_FAILURES = 5
WINDOW = 300.0  # seconds


class RateLimit:
    """Failed logins per client address, in memory (one ``crm serve`` process)."""

    def __init__(self, limit: int = MAX_FAILURES, window: float = WINDOW):
        self.limit, self.window = limit, window
        self._failures: dict[str, deque[float]] = defaultdict(deque)
        self._lock = threading.Lock()

    def blocked(self, key: str) -> bool:
        with self._lock:
            times = self._failures[key]
            while times and times[0] < time.monotonic() - self.window:
                times.popleft()
            return len(times) >= self.limit

    def failed(self, key: str) -> None:
        with self._lock:
            self._failures[key].append(time.monotonic())

    def reset(self, key: str) -> None:
        with self._lock:
            self._failures.pop(key, None)


def csrf_token() -> str:
    if "csrf" not in session:
        session["csrf"] = secrets.token_urlsafe(32)
    return session["csrf"]


def current_user() -> dict[str, Any] | None:
    """The person behind this request (cached on ``g``), or None."""
    if "user" in g:
        return g.user
    user = None
    users = Users(g.store)
    settings = current_app.config["CRM_WEB"]
    auth = request.headers.get("Authorization", "")
    if auth.startswith("Bearer "):
        user = users.by_token(auth[7:].strip())
        g.by_token = user is not None
    elif settings.trusted_header and request.headers.get(settings.trusted_header):
        user = users.get(request.headers[settings.trusted_header].strip())
        g.by_header = user is not None
    elif session.get("user"):
        user = users.get(session["user"])
    g.user = user
    return user


def check_csrf() -> None:
    """Refuse a write without this session's token (not needed with an API token)."""
    if g.get("by_token"):
        return
    sent = request.form.get("csrf") or request.headers.get("X-CSRF-Token") or ""
    expected = session.get("csrf", "")
    if not expected or not hmac.compare_digest(sent, expected):
        abort(403, description="csrf")


def login_required(view: Callable) -> Callable:
    @wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if current_user() is None:
            if request.path.startswith("/api/"):
                abort(401)
            return redirect(url_for("auth.login", next=request.full_path.rstrip("?")))
        if request.method == "POST":
            check_csrf()
        return view(*args, **kwargs)

    return wrapper


def admin_required(view: Callable) -> Callable:
    @wraps(view)
    @login_required
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if g.user["role"] != "admin":
            abort(403)
        return view(*args, **kwargs)

    return wrapper


def safe_path(target: str | None) -> str | None:
    """``target`` when it is a path on this site (no //host, no scheme, no backslash), else None."""
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target \
            and not any(ord(ch) < 32 for ch in target):
        return target
    return None


def _safe_next(target: str | None) -> str:
    """Where to go after login or a language switch: never another site (no open redirect)."""
    return safe_path(target) or url_for("customers.index")


@bp.route("/login", methods=["GET", "POST"])
def login() -> Any:
    error = ""
    status = 200
    if request.method == "POST":
        check_csrf()
        limit: RateLimit = current_app.config["CRM_RATE_LIMIT"]
        key = request.remote_addr or "?"
        name = request.form.get("name", "").strip()
        if limit.blocked(key):
            error, status = "Too many failed logins; try again in a few minutes.", 429
        else:
            user = Users(g.store).verify(name, request.form.get("password", ""))
            if user is None:
                limit.failed(key)
                error, status = "Wrong name or password.", 401
            else:
                limit.reset(key)
                language = session.get("lang")
                session.clear()  # a new session (and CSRF token) at login
                if language:
                    session["lang"] = language
                session["user"] = user["name"]
                session.permanent = True
                return redirect(_safe_next(request.form.get("next")))
    return render_template("login.html", error=error, next=request.values.get("next", "")), status


@bp.route("/logout", methods=["POST"])
def logout() -> Any:
    check_csrf()
    language = session.get("lang")
    session.clear()
    if language:
        session["lang"] = language
    return redirect(url_for("auth.login"))


@bp.route("/language", methods=["POST"])
def language() -> Any:
    check_csrf()
    chosen = request.form.get("lang", "")
    if chosen in ("de", "en"):
        session["lang"] = chosen
    return redirect(_safe_next(request.form.get("next")))
