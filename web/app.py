"""The Flask application behind ``crm serve``, and serving it with waitress.

Why Flask with Jinja2: a small, long-maintained WSGI framework whose
templates escape by default (every subject, name and snippet from mail is
text, never markup), signed-cookie sessions built in, and a test client that
speaks real HTTP semantics; the pages are rendered on the server, with no
JavaScript build chain.  waitress is a production WSGI server in pure Python
(no compiler, runs wherever crm-bridge runs).

Each request opens its own connection to the store (SQLite connections are
not shared between waitress's threads) and writes in short transactions;
reads never wait for a running sync (WAL), writes wait at most for the
batch the sync is storing.
"""

from __future__ import annotations

import secrets
from datetime import timedelta
from pathlib import Path
from typing import Any

from flask import Flask, g, request, session
from markupsafe import Markup

from crm_bridge.crm_core.settings import LinkingSettings, WebSettings
from crm_bridge.crm_core.store import Store
from crm_bridge.web import i18n
from crm_bridge.web.auth import RateLimit, csrf_token, current_user


def create_app(store_path: str | Path, web: WebSettings | None = None,
               linking: LinkingSettings | None = None) -> Flask:
    web = web or WebSettings()
    app = Flask(__name__)
    app.config.update(
        CRM_STORE=str(store_path), CRM_WEB=web, CRM_LINKING=linking or LinkingSettings(),
        CRM_RATE_LIMIT=RateLimit(), SESSION_COOKIE_HTTPONLY=True, SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=web.secure_cookies, SESSION_COOKIE_NAME="crm_session",
        PERMANENT_SESSION_LIFETIME=timedelta(hours=12), MAX_CONTENT_LENGTH=1024 * 1024,
    )
    store = Store(store_path, linking)
    try:
        key = store.meta("web_secret")
        if not key:
            key = secrets.token_hex(32)
            with store.transaction():
                store.set_meta("web_secret", key)
    finally:
        store.close()
    app.secret_key = key
    app.jinja_env.add_extension("jinja2.ext.i18n")
    app.jinja_env.autoescape = True
    tz = app.config["CRM_TZ"] = i18n.zone(web.timezone)
    # the language is looked up per call (g is per request), so threads never mix languages
    app.jinja_env.install_gettext_callables(  # type: ignore[attr-defined]
        lambda text: i18n.gettext(g.get("lang", i18n.DEFAULT), text),
        lambda one, many, n: i18n.gettext(g.get("lang", i18n.DEFAULT), one if n == 1 else many),
        newstyle=True)  # newstyle: Jinja2 fills in %(name)s and escapes the values

    @app.before_request
    def open_store() -> None:
        g.store = Store(app.config["CRM_STORE"], app.config["CRM_LINKING"])
        g.lang = i18n.pick_language(session.get("lang"), web.language, list(request.accept_languages))

    @app.teardown_request
    def close_store(_exc: BaseException | None) -> None:
        store = g.pop("store", None)
        if store is not None:
            store.close()

    @app.after_request
    def headers(response: Any) -> Any:
        response.headers.setdefault("Content-Security-Policy",
                                    "default-src 'self'; img-src 'self' data:; style-src 'self'; "
                                    "script-src 'self'; frame-ancestors 'none'; form-action 'self'")
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        if request.path != "/static/style.css":
            response.headers.setdefault("Cache-Control", "no-store")
        return response

    @app.context_processor
    def globals_() -> dict[str, Any]:
        return {"csrf_token": csrf_token, "user": current_user(), "lang": g.get("lang", i18n.DEFAULT),
                "t": lambda text: i18n.gettext(g.get("lang", i18n.DEFAULT), text)}

    app.jinja_env.filters["localtime"] = lambda value, with_time=True: i18n.local_time(value, tz, with_time)
    app.jinja_env.filters["nl2br"] = lambda text: Markup("<br>").join(str(text or "").splitlines())

    from crm_bridge.web import api, auth, views_admin, views_customers, views_directory, views_tasks
    from crm_bridge.web import api_contacts, views_contacts

    app.register_blueprint(auth.bp)
    app.register_blueprint(views_customers.bp)
    app.register_blueprint(views_tasks.bp)
    app.register_blueprint(views_directory.bp)
    app.register_blueprint(views_admin.bp)
    app.register_blueprint(api.bp)
    app.register_blueprint(views_contacts.bp)
    app.register_blueprint(api_contacts.bp)

    @app.errorhandler(400)
    @app.errorhandler(401)
    @app.errorhandler(403)
    @app.errorhandler(404)
    @app.errorhandler(429)
    def error(exc: Any) -> Any:
        from flask import jsonify, render_template

        code = getattr(exc, "code", 500)
        if request.path.startswith("/api/"):
            return jsonify(error=getattr(exc, "description", "") or str(code)), code
        return render_template("error.html", code=code), code

    return app


def ensure_demo_login(store_path: str | Path, linking: LinkingSettings | None = None) -> tuple[str, str] | None:
    """The demo only: with no users yet, make an admin ``demo`` with a fresh password; (name, password)."""
    from crm_bridge.crm_core.users import Users

    store = Store(store_path, linking)
    try:
        users = Users(store)
        if users.count():
            return None
        password = secrets.token_urlsafe(9)
        users.add("demo", password, "admin")
        return "demo", password
    finally:
        store.close()


def serve(app: Flask, host: str, port: int) -> None:  # pragma: no cover - runs until stopped
    import waitress

    waitress.serve(app, host=host, port=port, threads=8, ident="crm-bridge")
