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


@bp.route("/")
@admin_required
def status() -> Any:
    return render_template("admin_status.html", sources=g.store.status(), quarantine=g.store.quarantine()[:200])


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
