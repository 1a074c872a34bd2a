"""Customers: the list, a customer's page (timeline, chart, notes, manual links), search."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from typing import Any

from flask import Blueprint, abort, flash, g, redirect, render_template, request, url_for

from crm_bridge.crm_core.contacts import ContactReads
from crm_bridge.crm_core.notes import add_note
from crm_bridge.crm_core.pages import KINDS, PageReads, decode_key, encode_key
from crm_bridge.crm_core.store import StoreError
from crm_bridge.crm_core.users import Users
from crm_bridge.web import i18n
from crm_bridge.web.auth import login_required, safe_path

bp = Blueprint("customers", __name__)
PAGE = 50


@bp.route("/")
@login_required
def home() -> Any:
    return redirect(url_for("customers.index"))


@bp.route("/customers")
@login_required
def index() -> Any:
    query = request.args.get("q", "")
    return render_template("customers.html", customers=PageReads(g.store).customers(query), q=query)


def period(value: str, tz: Any = timezone.utc) -> tuple[str | None, str | None]:
    """A period filter (30d, 90d, 365d, or a year like 2025 of the office's calendar ``tz``) as UTC ISO bounds."""
    now = datetime.now(timezone.utc)
    if value.endswith("d") and value[:-1].isdigit():
        return (now - timedelta(days=int(value[:-1]))).strftime("%Y-%m-%dT%H:%M:%SZ"), None
    if value.isdigit() and len(value) == 4 and 1900 < int(value) < 9999:
        start, end = (datetime(y, 1, 1, tzinfo=tz).astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
                      for y in (int(value), int(value) + 1))
        return start, end
    return None, None


def timeline_filters(args: Any, tz: Any = None) -> dict[str, Any]:
    """The timeline's filters from a request's ``args``; a year is one of the office's calendar."""
    tz = tz or i18n.office_zone()
    kinds = tuple(k for k in args.getlist("kind") if k in KINDS)
    contact = args.get("contact", "")
    since, until = period(args.get("period", ""), tz)
    return {"kinds": kinds, "contact_id": int(contact) if contact.isdigit() else None,
            "since": since, "until": until, "after": decode_key(args.get("after", ""))}


@bp.route("/customers/<int:customer_id>")
@login_required
def customer(customer_id: int) -> Any:
    reads = PageReads(g.store)
    info = reads.customer(customer_id)
    if info is None:
        abort(404)
    tz = i18n.office_zone()
    filters = timeline_filters(request.args, tz)
    items, next_key = reads.timeline(customer_id, limit=PAGE, **filters)
    months = reads.per_month(customer_id, tz)
    args = {k: v for k, v in request.args.items(multi=True) if k != "after"}
    next_url = None
    if next_key:
        next_url = url_for("customers.customer", customer_id=customer_id, **_multi(request.args, after=encode_key(next_key)))
    return render_template("customer.html", c=info, items=items, chart=chart(months, datetime.now(tz).date()), next_url=next_url,
                           kinds=KINDS, chosen=filters["kinds"], args=args,
                           period=request.args.get("period", ""), contact=request.args.get("contact", ""),
                           paged=filters["after"] is not None,
                           user_names=[u["name"] for u in Users(g.store).list()],
                           years=[str(datetime.now(tz).year - n) for n in range(3)])


def _multi(args: Any, **override: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in args:
        if key not in override:
            out[key] = args.getlist(key)
    out.update(override)
    return out


def chart(months: list[tuple[str, int]], today: date, width: int = 480, height: int = 80,
          most: int = 24) -> dict[str, Any]:
    """Bars for an inline SVG: one per month, up to this month (``today``, the office's date), from the first
    month with items but at most ``most`` months back; months without items are zero (a customer drifting
    away shows as empty months at the end)."""
    if not months:
        return {"bars": [], "width": width, "height": height}
    first_y, first_m = (int(x) for x in months[0][0].split("-"))
    start = max(first_y * 12 + first_m - 1, today.year * 12 + today.month - most)
    keys = [f"{k // 12:04d}-{k % 12 + 1:02d}" for k in range(start, today.year * 12 + today.month)]
    counts = dict(months)
    top = max([counts.get(k, 0) for k in keys] + [1])
    step = width / max(len(keys), 1)
    bars = []
    for n, key in enumerate(keys):
        value = counts.get(key, 0)
        h = round((height - 14) * value / top)
        bars.append({"x": round(n * step + 1, 1), "y": height - 12 - h, "w": round(max(step - 2, 1), 1), "h": h,
                     "label": key, "value": value, "tick": key[5:] == "01" or n == 0})
    return {"bars": bars, "width": width, "height": height}


@bp.route("/customers/<int:customer_id>/notes", methods=["POST"])
@login_required
def note(customer_id: int) -> Any:
    if PageReads(g.store).customer(customer_id) is None:
        abort(404)
    try:
        add_note(g.store, customer_id, request.form.get("text", ""), author=g.user["name"])
    except StoreError as exc:
        flash(str(exc), "error")
    return redirect(url_for("customers.customer", customer_id=customer_id))


@bp.route("/interactions/<int:interaction_id>/link", methods=["POST"])
@login_required
def link(interaction_id: int) -> Any:
    """Link a mail or appointment to a customer, or unlink it (``action``); it wins over the rules."""
    action = request.form.get("action", "link")
    target = request.form.get("customer", "").strip()
    back = request.form.get("back", "")
    reads = PageReads(g.store)
    if g.store._one("SELECT id FROM interactions WHERE id=?", (interaction_id,)) is None:
        abort(404)
    customer_id = int(target) if target.isdigit() else None
    if customer_id is None and target:
        found = [c for c in reads.customers(target) if c["name"].lower() == target.lower()] or reads.customers(target)
        customer_id = found[0]["id"] if len(found) == 1 or (found and found[0]["name"].lower() == target.lower()) else None
    if customer_id is None or reads.customer(customer_id) is None:
        flash("No such customer.", "error")
    elif action not in ("link", "unlink"):
        abort(400)
    else:
        g.store.set_link(interaction_id, "customer", customer_id, action)
        flash("Linked." if action == "link" else "Unlinked.", "ok")
    if safe_path(back):
        return redirect(back)
    return redirect(url_for("customers.customer", customer_id=customer_id) if customer_id else url_for("customers.index"))


@bp.route("/search")
@login_required
def search() -> Any:
    query = request.args.get("q", "")
    results = g.store.search(query, limit=100) if query.strip() else []
    for row in results:
        row["linked"] = PageReads(g.store).interaction_customers(row["id"])
        row["contacts"] = ContactReads(g.store).interaction_contacts(row["id"])
    customers = PageReads(g.store).customers(query, details=False) if query.strip() else []
    return render_template("search.html", q=query, results=results, customers=customers)
