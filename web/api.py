"""The JSON API under /api/: the same reads and writes as the pages, for scripts and mail-client add-ins.

Auth: ``Authorization: Bearer <token>`` (``crm users token NAME``), or the
browser session plus its CSRF token in ``X-CSRF-Token`` for writes.  Times
are UTC ISO 8601 here (a program converts them); errors are
``{"error": "..."}`` with a 4xx status.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, abort, g, jsonify, request

from crm_bridge.crm_core.notes import add_note
from crm_bridge.crm_core.pages import PageReads, encode_key
from crm_bridge.crm_core.store import StoreError
from crm_bridge.web.auth import login_required
from crm_bridge.web.views_customers import timeline_filters
from crm_bridge.web.views_tasks import parse_due

bp = Blueprint("api", __name__, url_prefix="/api")


def _body() -> dict[str, Any]:
    data = request.get_json(silent=True)
    if data is None:
        data = request.form.to_dict()
    if not isinstance(data, dict):
        abort(400, description="send a JSON object")
    return data


def _customer_or_404(customer_id: int) -> dict[str, Any]:
    info = PageReads(g.store).customer(customer_id)
    if info is None:
        abort(404, description=f"no customer {customer_id}")
    return info


@bp.route("/customers")
@login_required
def customers() -> Any:
    """``?email=a@b.de``: the customer that address belongs to; ``?q=``: customers matching."""
    reads = PageReads(g.store)
    email = request.args.get("email", "")
    if email:
        found = reads.customer_by_email(email)
        if found is None:
            abort(404, description=f"no customer for {email}")
        return jsonify(found)
    return jsonify(reads.customers(request.args.get("q", "")))


@bp.route("/customers/<int:customer_id>")
@login_required
def customer(customer_id: int) -> Any:
    return jsonify(_customer_or_404(customer_id))


@bp.route("/customers/<int:customer_id>/timeline")
@login_required
def timeline(customer_id: int) -> Any:
    _customer_or_404(customer_id)
    limit = min(max(request.args.get("limit", 50, type=int) or 50, 1), 500)
    items, key = PageReads(g.store).timeline(customer_id, limit=limit, **timeline_filters(request.args))
    return jsonify(items=items, next=encode_key(key) or None)


@bp.route("/search")
@login_required
def search() -> Any:
    query = request.args.get("q", "")
    results = g.store.search(query, limit=100) if query.strip() else []
    return jsonify(results)


@bp.route("/tasks")
@login_required
def tasks() -> Any:
    who = request.args.get("who", "mine")
    status = request.args.get("status", "open")
    return jsonify(PageReads(g.store).tasks(g.user["name"] if who == "mine" else None, status))


@bp.route("/tasks", methods=["POST"])
@login_required
def add_task() -> Any:
    data = _body()
    title = str(data.get("title", "")).strip()
    if not title:
        abort(400, description="a task needs a title")
    customer_id = data.get("customer_id")
    if customer_id not in (None, ""):
        if not str(customer_id).isdigit():
            abort(400, description="customer_id is a number")
        customer_id = int(str(customer_id))
        _customer_or_404(customer_id)
    else:
        customer_id = None
    try:
        due = parse_due(str(data.get("due") or ""))
    except ValueError:
        abort(400, description="due is a date like 2026-12-01")
    task_id = g.store.add_task(title, due=due, customer_id=customer_id,
                               assignee=str(data.get("assignee", g.user["name"])))
    return jsonify(id=task_id), 201


@bp.route("/tasks/<int:task_id>", methods=["POST"])
@login_required
def edit_task(task_id: int) -> Any:
    """``{"title": ..., "due": "2026-12-01" or ""}``: either or both."""
    data = _body()
    changes: dict[str, Any] = {}
    if str(data.get("title") or "").strip():
        changes["title"] = str(data["title"]).strip()
    if "due" in data:
        try:
            changes["due"] = parse_due(str(data.get("due") or ""))
        except ValueError:
            abort(400, description="due is a date like 2026-12-01")
    if not changes:
        abort(400, description="give title and/or due")
    try:
        g.store.update_task(task_id, **changes)
    except StoreError as exc:
        abort(404, description=str(exc))
    return jsonify(id=task_id, **{k: str(v) if v is not None else None for k, v in changes.items()})


@bp.route("/tasks/<int:task_id>/done", methods=["POST"])
@login_required
def task_done(task_id: int) -> Any:
    try:
        g.store.update_task(task_id, status="done")
    except StoreError as exc:
        abort(404, description=str(exc))
    return jsonify(id=task_id, status="done")


@bp.route("/customers/<int:customer_id>/notes", methods=["POST"])
@login_required
def note(customer_id: int) -> Any:
    _customer_or_404(customer_id)
    try:
        iid = add_note(g.store, customer_id, str(_body().get("text", "")), author=g.user["name"])
    except StoreError as exc:
        abort(400, description=str(exc))
    return jsonify(id=iid), 201


@bp.route("/interactions/<int:interaction_id>/link", methods=["POST"])
@login_required
def link(interaction_id: int) -> Any:
    """``{"customer_id": 3, "action": "link"|"unlink"}``"""
    data = _body()
    action = data.get("action", "link")
    if action not in ("link", "unlink"):
        abort(400, description="action is link or unlink")
    if g.store._one("SELECT id FROM interactions WHERE id=?", (interaction_id,)) is None:
        abort(404, description=f"no interaction {interaction_id}")
    try:
        customer_id = int(str(data.get("customer_id")))
    except (TypeError, ValueError):
        abort(400, description="customer_id is a number")
    _customer_or_404(customer_id)
    g.store.set_link(interaction_id, "customer", customer_id, action)
    return jsonify(interaction=interaction_id, customer_id=customer_id, action=action)
