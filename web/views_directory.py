"""Keeping the directory by hand: the review queue, customers (create, rename, merge, remove) and their domains."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, abort, flash, g, redirect, render_template, request, url_for

from crm_bridge.crm_core import blocks, directory, review
from crm_bridge.crm_core.pages import PageReads
from crm_bridge.crm_core.store import StoreError
from crm_bridge.web.auth import login_required, safe_path
from crm_bridge.web.inline import answer, tr

bp = Blueprint("directory", __name__)

IN_CONFIG = "This customer is listed under [[customers]] in the config: change it there."


def _customer(customer_id: int) -> dict[str, Any]:
    info = PageReads(g.store).customer(customer_id)
    if info is None:
        abort(404)
    return info


def _back(customer_id: int | None = None) -> Any:
    return redirect(url_for("customers.customer", customer_id=customer_id) if customer_id
                    else url_for("customers.index"))


# -- the review queue -----------------------------------------------------------------
@bp.route("/review")
@login_required
def queue() -> Any:
    names = [{"name": n} for (n,) in g.store.conn.execute("SELECT name FROM customers ORDER BY name COLLATE NOCASE")]
    return render_template("review.html", entries=review.review_queue(g.store), customers=names)


@bp.route("/review", methods=["POST"])
@login_required
def resolve() -> Any:
    email = request.form.get("email", "").strip().lower()
    action = request.form.get("action", "")
    back = url_for("directory.queue")
    try:
        if action == "contact":
            target = request.form.get("customer", "")
            directory.attach(g.store, email, directory.find_customer(g.store, target))
            flash("Made a contact; their mail is on the customer's timeline.", "ok")
        elif action == "customer":
            review.customer_from_domain(g.store, email, request.form.get("name", ""))
            flash("Customer created; their domain's mail is on its timeline.", "ok")
        elif action == "dismiss":
            review.dismiss(g.store, email)
            return answer(tr("Dismissed."), "ok", back)
        elif action == "block":
            entry = email.rpartition("@")[2] if request.form.get("scope") == "domain" else email
            removed = blocks.block(g.store, entry, g.user["name"])
            return answer(tr("Blocked %(entry)s: %(count)s stored mails from it left the CRM (the mailboxes keep "
                             "them), and its new mail is not logged.", entry=entry, count=removed), "ok", back)
        else:
            abort(400)
    except blocks.BlockRefused as exc:
        return answer(tr(exc.msgid, **exc.params), "error", back)
    except StoreError as exc:
        return answer(tr(str(exc)), "error", back)  # translated here: inline.js shows it as it comes
    return redirect(back)


# -- customers --------------------------------------------------------------------------
@bp.route("/customers", methods=["POST"])
@login_required
def create() -> Any:
    name = request.form.get("name", "").strip()
    domains = [d for d in request.form.get("domains", "").replace(",", " ").split() if d]
    if g.store._one("SELECT id FROM customers WHERE name=? COLLATE NOCASE", (name,)) is not None:
        flash("There is a customer with that name already.", "error")
        return _back()
    try:
        cid = g.store.add_customer(name, domains, account_owner=request.form.get("owner") or None)
    except StoreError as exc:
        flash(str(exc), "error")
        return _back()
    flash("Customer created.", "ok")
    return _back(cid)


@bp.route("/customers/<int:customer_id>/rename", methods=["POST"])
@login_required
def rename(customer_id: int) -> Any:
    if _customer(customer_id)["origin"] == "config":
        flash(IN_CONFIG, "error")
        return _back(customer_id)
    try:
        directory.rename_customer(g.store, customer_id, request.form.get("name", ""))
        flash("Renamed.", "ok")
    except StoreError as exc:
        flash(str(exc), "error")
    return _back(customer_id)


@bp.route("/customers/<int:customer_id>/owner", methods=["POST"])
@login_required
def owner(customer_id: int) -> Any:
    """Who looks after the customer ("my tasks" counts its unassigned tasks as theirs); empty: nobody."""
    if _customer(customer_id)["origin"] == "config":
        flash(IN_CONFIG, "error")
        return _back(customer_id)
    name = " ".join(request.form.get("owner", "").split())[:100]
    g.store.add_customer(_customer(customer_id)["name"], [], account_owner=name)
    flash("Account owner changed.", "ok")
    return _back(customer_id)


@bp.route("/customers/<int:customer_id>/merge", methods=["POST"])
@login_required
def merge(customer_id: int) -> Any:
    """Merge another customer into this one: its contacts, domains, links and tasks move here."""
    _customer(customer_id)
    try:
        other = directory.find_customer(g.store, request.form.get("other", ""))
        if _customer(other)["origin"] == "config":
            flash(IN_CONFIG, "error")
            return _back(customer_id)
        directory.merge_customers(g.store, customer_id, other)
        flash("Merged.", "ok")
    except StoreError as exc:
        flash(str(exc), "error")
    return _back(customer_id)


@bp.route("/customers/<int:customer_id>/remove", methods=["GET", "POST"])
@login_required
def remove(customer_id: int) -> Any:
    info = _customer(customer_id)
    if info["origin"] == "config":
        flash(IN_CONFIG, "error")
        return _back(customer_id)
    if request.method == "GET":
        return render_template("customer_remove.html", c=info,
                               gone=directory.customer_footprint(g.store, customer_id))
    directory.remove_customer(g.store, customer_id)
    flash("Customer removed; its mails, appointments, contacts and tasks stay.", "ok")
    return _back()


@bp.route("/customers/<int:customer_id>/domains", methods=["POST"])
@login_required
def domains(customer_id: int) -> Any:
    _customer(customer_id)
    domain = request.form.get("domain", "").strip()
    try:
        if request.form.get("action") == "remove":
            review.remove_domain(g.store, customer_id, domain)
            flash("Domain removed.", "ok")
        else:
            g.store.add_customer(_customer(customer_id)["name"], [domain])
            flash("Domain added; its past mail is linked.", "ok")
    except StoreError as exc:
        flash(str(exc), "error")
    return _back(customer_id)


# -- contacts -----------------------------------------------------------------------------
@bp.route("/contacts")
@login_required
def contacts() -> Any:
    query = request.args.get("q", "").strip().lower()
    rows = directory.contacts(g.store, unattached=request.args.get("unattached") == "1", query=query)
    return render_template("contacts.html", contacts=rows[:500], more=len(rows) > 500, q=query,
                           unattached=request.args.get("unattached") == "1")


@bp.route("/contacts", methods=["POST"])
@login_required
def contact_change() -> Any:
    """Attach an address (a contact's, or any, a freemail one too) to a customer, or detach a contact."""
    try:
        if request.form.get("action") == "detach":
            directory.detach(g.store, directory.find_contact(g.store, request.form.get("contact", "")))
            flash("Detached.", "ok")
        else:
            customer_id = directory.find_customer(g.store, request.form.get("customer", ""))
            directory.attach(g.store, request.form.get("email", ""), customer_id,
                             request.form.get("name", "").strip() or None)
            flash("Attached; their mail is on the customer's timeline.", "ok")
    except StoreError as exc:
        flash(str(exc), "error")
    return redirect(safe_path(request.form.get("back")) or url_for("directory.contacts"))
