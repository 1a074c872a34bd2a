"""Tasks: mine and everyone's, create, mark done (the calendar follows at the next sync)."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any

from flask import Blueprint, abort, flash, g, redirect, render_template, request, url_for

from crm_bridge.crm_core.pages import PageReads
from crm_bridge.web import i18n
from crm_bridge.web.auth import login_required, safe_path
from crm_bridge.web.inline import answer, tr

bp = Blueprint("tasks", __name__)
#: the due filters of the list: due today, overdue, due in the next seven days (after today)
DUE_FILTERS = ("today", "overdue", "next")


def office_today() -> str:
    """Today's date where the office is ([company] timezone, else the system's), YYYY-MM-DD."""
    return datetime.now(i18n.office_zone()).date().isoformat()


def parse_due(value: str) -> date | None:
    """YYYY-MM-DD (a date field), +N days, or empty; ValueError otherwise."""
    value = value.strip()
    if not value:
        return None
    if value.startswith("+") and value[1:].isdigit():
        return date.today() + timedelta(days=int(value[1:]))
    return datetime.strptime(value, "%Y-%m-%d").date()


@bp.route("/tasks")
@login_required
def index() -> Any:
    who = request.args.get("who", "mine")
    status = "done" if request.args.get("status") == "done" else "open"
    rows = PageReads(g.store).tasks(g.user["name"] if who == "mine" else None, status)
    today = office_today()
    for row in rows:
        due = (row["due"] or "")[:10]
        row["state"] = "overdue" if due and due < today else "today" if due == today else ""
    when = request.args.get("due", "")
    if when in DUE_FILTERS:
        week = (date.fromisoformat(today) + timedelta(days=7)).isoformat()
        keep = {"today": lambda d: d == today, "overdue": lambda d: bool(d) and d < today,
                "next": lambda d: today < d <= week}[when]
        rows = [r for r in rows if keep((r["due"] or "")[:10])]
    customers = [{"id": i, "name": n} for i, n in g.store.conn.execute(
        "SELECT id, name FROM customers ORDER BY name COLLATE NOCASE")]
    return render_template("tasks.html", tasks=rows, who=who, status=status, customers=customers, due=when,
                           chosen_customer=request.args.get("customer", ""))


@bp.route("/tasks", methods=["POST"])
@login_required
def create() -> Any:
    title = request.form.get("title", "").strip()
    customer = request.form.get("customer", "")
    back = request.form.get("back", "")
    try:
        due = parse_due(request.form.get("due", ""))
    except ValueError:
        flash("A due date is a date like 2026-12-01.", "error")
        return redirect(url_for("tasks.index"))
    if not title:
        flash("A task needs a title.", "error")
        return redirect(url_for("tasks.index"))
    customer_id = int(customer) if customer.isdigit() else None
    if customer_id is not None and PageReads(g.store).customer(customer_id) is None:
        abort(404)
    assignee = request.form.get("assignee", g.user["name"]).strip()
    g.store.add_task(title, due=due, customer_id=customer_id, assignee=assignee)
    flash("Task added.", "ok")
    if safe_path(back):
        return redirect(back)
    return redirect(url_for("tasks.index"))


@bp.route("/tasks/<int:task_id>/done", methods=["POST"])
@login_required
def done(task_id: int) -> Any:
    if g.store._one("SELECT id FROM tasks WHERE id=?", (task_id,)) is None:
        abort(404)
    g.store.update_task(task_id, status="done")
    return answer(tr("Task done."), "ok", safe_path(request.form.get("back", "")) or url_for("tasks.index"))


@bp.route("/tasks/<int:task_id>/edit", methods=["POST"])
@login_required
def edit(task_id: int) -> Any:
    """A new title and/or due date; the calendar follows at the next sync."""
    if g.store._one("SELECT id FROM tasks WHERE id=?", (task_id,)) is None:
        abort(404)
    changes: dict[str, Any] = {}
    title = request.form.get("title", "").strip()
    if title:
        changes["title"] = title
    if "due" in request.form:
        try:
            changes["due"] = parse_due(request.form.get("due", ""))
        except ValueError:
            flash("A due date is a date like 2026-12-01.", "error")
            return redirect(url_for("tasks.index"))
    if changes:
        g.store.update_task(task_id, **changes)
        flash("Task changed.", "ok")
    return redirect(safe_path(request.form.get("back")) or url_for("tasks.index"))
