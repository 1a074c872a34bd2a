"""A contact's page: who they are, their timeline, notes on them; edit, attach/detach, merge.

The contacts list and attaching an address from it are in views_directory.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, abort, flash, g, redirect, render_template, request, url_for

from crm_bridge.crm_core import contacts as contacts_core
from crm_bridge.crm_core import directory
from crm_bridge.crm_core.contacts import ContactReads
from crm_bridge.crm_core.notes import add_contact_note
from crm_bridge.crm_core.pages import KINDS, encode_key
from crm_bridge.crm_core.store import StoreError
from crm_bridge.web.auth import login_required
from crm_bridge.web.views_customers import PAGE, _multi, timeline_filters

bp = Blueprint("contacts", __name__)


def contact_or_404(contact_id: int) -> dict[str, Any]:
    info = ContactReads(g.store).contact(contact_id)
    if info is None:
        abort(404)
    return info


def _back(contact_id: int) -> Any:
    return redirect(url_for("contacts.contact", contact_id=contact_id))


@bp.route("/contacts/<int:contact_id>")
@login_required
def contact(contact_id: int) -> Any:
    reads = ContactReads(g.store)
    info = contact_or_404(contact_id)
    filters = dict(timeline_filters(request.args), contact_id=None)
    items, next_key = reads.timeline(contact_id, limit=PAGE, **filters)
    args = {k: v for k, v in request.args.items(multi=True) if k != "after"}
    next_url = None
    if next_key:
        next_url = url_for("contacts.contact", contact_id=contact_id,
                           **_multi(request.args, after=encode_key(next_key)))
    return render_template("contact.html", k=info, items=items, next_url=next_url, kinds=KINDS,
                           chosen=filters["kinds"], args=args, period=request.args.get("period", ""),
                           paged=filters["after"] is not None, others=reads.others(contact_id),
                           from_address_book=info["origin"].startswith("address book"))


@bp.route("/contacts/<int:contact_id>/edit", methods=["POST"])
@login_required
def edit(contact_id: int) -> Any:
    contact_or_404(contact_id)
    try:
        contacts_core.edit_contact(g.store, contact_id, name=request.form.get("name", ""),
                                   title=request.form.get("title", ""),
                                   phones=contacts_core.parse_phones(request.form.get("phones", "")))
        flash("Saved.", "ok")
    except StoreError as exc:
        flash(str(exc), "error")
    return _back(contact_id)


@bp.route("/contacts/<int:contact_id>/customer", methods=["POST"])
@login_required
def customer(contact_id: int) -> Any:
    """Attach the contact to a customer (``customer``: name or id), or detach it (``action=detach``)."""
    contact_or_404(contact_id)
    try:
        if request.form.get("action") == "detach":
            directory.detach(g.store, contact_id)
            flash("Detached.", "ok")
        else:
            contacts_core.attach_contact(g.store, contact_id,
                                         directory.find_customer(g.store, request.form.get("customer", "")))
            flash("Attached; their mail is on the customer's timeline.", "ok")
    except StoreError as exc:
        flash(str(exc), "error")
    return _back(contact_id)


@bp.route("/contacts/<int:contact_id>/merge", methods=["POST"])
@login_required
def merge(contact_id: int) -> Any:
    """Merge another contact (``other``: id or address) into this one: everything of theirs moves here."""
    contact_or_404(contact_id)
    try:
        try:
            other = directory.find_contact(g.store, request.form.get("other", ""))
        except StoreError:
            flash("No such contact.", "error")
            return _back(contact_id)
        directory.merge_contacts(g.store, contact_id, other)
        flash("Merged.", "ok")
    except StoreError as exc:
        flash(str(exc), "error")
    return _back(contact_id)


@bp.route("/contacts/<int:contact_id>/notes", methods=["POST"])
@login_required
def note(contact_id: int) -> Any:
    contact_or_404(contact_id)
    try:
        add_contact_note(g.store, contact_id, request.form.get("text", ""), author=g.user["name"])
    except StoreError as exc:
        flash(str(exc), "error")
    return _back(contact_id)
