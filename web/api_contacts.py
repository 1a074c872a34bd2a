"""The JSON API's contacts under /api/contacts: by address, one contact, their timeline, notes on them.

Same auth and CSRF rules as web/api.py (a bearer token, or the session plus
``X-CSRF-Token`` for writes); times are UTC ISO 8601; errors ``{"error": ...}``.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, abort, g, jsonify, request

from crm_bridge.crm_core import directory
from crm_bridge.crm_core.contacts import ContactReads
from crm_bridge.crm_core.notes import add_contact_note
from crm_bridge.crm_core.pages import encode_key
from crm_bridge.crm_core.store import StoreError
from crm_bridge.web.api import _body
from crm_bridge.web.auth import login_required
from crm_bridge.web.views_customers import timeline_filters

bp = Blueprint("api_contacts", __name__, url_prefix="/api")


def _contact_or_404(contact_id: int) -> dict[str, Any]:
    info = ContactReads(g.store).contact(contact_id)
    if info is None:
        abort(404, description=f"no contact {contact_id}")
    return info


@bp.route("/contacts")
@login_required
def contacts() -> Any:
    """``?email=a@b.de``: the contact with that address and their customer; ``?q=``: contacts matching
    name, address or customer (the first 500); ``?customer_id=``: a customer's contacts."""
    email = request.args.get("email", "")
    if email:
        found = ContactReads(g.store).contact_by_email(email)
        if found is None:
            abort(404, description=f"no contact with the address {email}")
        return jsonify(found)
    customer = request.args.get("customer_id", "")
    if customer and not customer.isdigit():
        abort(400, description="customer_id is a number")
    rows = directory.contacts(g.store, int(customer) if customer else None, query=request.args.get("q", ""))
    return jsonify([dict(r, emails=(r["emails"] or "").split()) for r in rows[:500]])


@bp.route("/contacts/<int:contact_id>")
@login_required
def contact(contact_id: int) -> Any:
    return jsonify(_contact_or_404(contact_id))


@bp.route("/contacts/<int:contact_id>/timeline")
@login_required
def timeline(contact_id: int) -> Any:
    """Newest first, ``limit`` (1-500, default 50) at a time; pass ``next`` back as ``after``."""
    _contact_or_404(contact_id)
    limit = min(max(request.args.get("limit", 50, type=int) or 50, 1), 500)
    filters = dict(timeline_filters(request.args), contact_id=None)
    items, key = ContactReads(g.store).timeline(contact_id, limit=limit, **filters)
    return jsonify(items=items, next=encode_key(key) or None)


@bp.route("/contacts/<int:contact_id>/notes", methods=["POST"])
@login_required
def note(contact_id: int) -> Any:
    """``{"text": "..."}``: a note on the contact (and on their customer's timeline)."""
    _contact_or_404(contact_id)
    try:
        iid = add_contact_note(g.store, contact_id, str(_body().get("text", "")), author=g.user["name"])
    except StoreError as exc:
        abort(400, description=str(exc))
    return jsonify(id=iid), 201
