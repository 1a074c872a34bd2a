"""For admins: sync status per source, the quarantine, users."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, flash, g, redirect, render_template, request, url_for

from crm_bridge.crm_core import blocks
from crm_bridge.crm_core.store import StoreError
from crm_bridge.crm_core.users import ROLES, Users
from crm_bridge.web.auth import admin_required
from crm_bridge.web.inline import answer, tr

bp = Blueprint("admin", __name__, url_prefix="/admin")


#: the start of a source's last error (sync.engine._describe, the retry loop) -> what it means, in plain words
PLAIN_ERRORS = (
    ("authentication failed", "The server refused the login: check the user name and password of this source."),
    ("connection problem", "The server could not be reached; the next sync tries again by itself."),
    ("unavailable", "The source is not there (server, folder or file): check its address in the config."),
    ("cursor invalid", "The server started its change list afresh: the next sync reads the source again."),
    ("internal error", "crm-bridge failed on this source: the log file has the details for a bug report."),
)


def plain_error(text: str | None) -> str:
    """The plain-words msgid for a source's last error ("" when there is none or it says it itself)."""
    low = (text or "").lower()
    for start, meaning in PLAIN_ERRORS:
        if low.startswith(start):
            return meaning
    if "gave up after" in low:
        return "The server could not be reached; the next sync tries again by itself."
    return ""


@bp.route("/")
@admin_required
def status() -> Any:
    sources = g.store.status()
    for source in sources:
        source["plain_error"] = plain_error(source["last_error"]) if source["last_status"] != "ok" else ""
    return render_template("admin_status.html", sources=sources, quarantine=g.store.quarantine()[:200])


@bp.route("/users")
@admin_required
def users() -> Any:
    return render_template("admin_users.html", users=Users(g.store).list(), roles=ROLES)


@bp.route("/users", methods=["POST"])
@admin_required
def add_user() -> Any:
    role = "admin" if request.form.get("role") == "admin" else "staff"
    try:
        Users(g.store).add(request.form.get("name", "").strip(), request.form.get("password", ""), role)
        flash("User added.", "ok")
    except StoreError as exc:
        flash(str(exc), "error")
    return redirect(url_for("admin.users"))


@bp.route("/users/<name>/change", methods=["POST"])
@admin_required
def change_user(name: str) -> Any:
    """A new password and/or role; an admin cannot take their own admin role away (someone must stay admin)."""
    users = Users(g.store)
    role, password = request.form.get("role", ""), request.form.get("password", "")
    try:
        if role and role != (users.get(name) or {}).get("role"):
            if name.lower() == g.user["name"].lower():
                flash("You cannot take away your own admin role.", "error")
                return redirect(url_for("admin.users"))
            users.set_role(name, role)
        if password:
            users.set_password(name, password)
        flash("User changed.", "ok")
    except StoreError as exc:
        flash(str(exc), "error")
    return redirect(url_for("admin.users"))


@bp.route("/users/<name>/remove", methods=["POST"])
@admin_required
def remove_user(name: str) -> Any:
    if name.lower() == g.user["name"].lower():
        flash("You cannot remove yourself.", "error")
    else:
        try:
            Users(g.store).remove(name)
            flash("User removed.", "ok")
        except StoreError as exc:
            flash(str(exc), "error")
    return redirect(url_for("admin.users"))


@bp.route("/blocks")
@admin_required
def blocked() -> Any:
    """Addresses and domains blocked from the review queue (and the config's blocklist, shown, not changeable)."""
    return render_template("admin_blocks.html", blocks=blocks.listing(g.store))


@bp.route("/blocks/unblock", methods=["POST"])
@admin_required
def unblock() -> Any:
    entry = request.form.get("entry", "")
    back = url_for("admin.blocked")
    try:
        blocks.unblock(g.store, entry)
    except blocks.BlockRefused as exc:
        return answer(tr(exc.msgid, **exc.params), "error", back)
    return answer(tr("Unblocked %(entry)s: the next sync reads the mailboxes again and brings its mail back.",
                     entry=entry.strip().lower()), "ok", back)
