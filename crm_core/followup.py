"""Follow-up rules: tasks the CRM creates by itself.

* **after an appointment** with a customer has ended: a follow-up due
  ``after_appointment_days`` later (single appointments only; a weekly
  jour fixe does not need a follow-up every week);
* **an unanswered customer mail**: an inbound, non-bulk mail linked to a
  customer that got no outbound mail in its thread within
  ``unanswered_days``.

Items older than ``lookback_days`` (counted back from the run, by the mail's
date or the appointment's start) never get a task, so a first import of
years of history does not flood anyone's task list.  A task whose due date
has already passed when it is made (a first import, or a sync that did not
run for a while) is due *today* instead: it is still an open loop inside the
lookback the admin chose, so it is not dropped, but it does not arrive
overdue either.  Each rule-made task has a ``rule_key`` and is created once,
whatever happens to it later.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

from crm_bridge.crm_core.settings import FollowupSettings
from crm_bridge.crm_core.store import Store, utc_iso


def _parse(ts: str) -> datetime:
    return datetime.strptime(ts, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)


def apply_rules(store: Store, settings: FollowupSettings, now: datetime | None = None) -> int:
    """Create the tasks the rules call for; returns how many are new."""
    now = now or datetime.now(timezone.utc)
    today = now.astimezone().date()  # the staff's day, not UTC's
    oldest = utc_iso(now - timedelta(days=settings.lookback_days))
    created = 0
    with store.transaction():
        if settings.after_appointment_days:
            rows = store.conn.execute(
                """SELECT i.id, i.subject, i."end", i.start, i.date, l.target_id FROM interactions i
                   JOIN links l ON l.interaction_id=i.id AND l.target='customer'
                   WHERE i.kind='appointment' AND i.rrule='' AND i.status != 'CANCELLED' AND i.deleted=0
                   AND i.date >= ? AND i.date <= ?
                   GROUP BY i.id""",
                (oldest, utc_iso(now)),
            ).fetchall()
            for iid, subject, end, start, day, customer_id in rows:
                ended = _ended(end or start, day)
                if ended is None or ended > now:
                    continue
                due = (ended + timedelta(days=settings.after_appointment_days)).date()
                if store.add_task(
                    f"Follow up: {subject or 'appointment'}",
                    due=max(due, today),
                    customer_id=customer_id,
                    interaction_id=iid,
                    description="Created after the appointment ended." + _late(due, today),
                    rule_key=f"after-appointment:{iid}",
                ):
                    created += 1
        if settings.unanswered_days:
            limit = utc_iso(now - timedelta(days=settings.unanswered_days))
            rows = store.conn.execute(
                """SELECT i.id, i.subject, i.date, l.target_id,
                   (SELECT p.email FROM participants p WHERE p.interaction_id=i.id AND p.role='from') FROM interactions i
                   JOIN links l ON l.interaction_id=i.id AND l.target='customer'
                   WHERE i.kind='mail' AND i.direction='in' AND i.bulk='' AND i.deleted=0
                   AND i.date >= ? AND i.date <= ?
                   AND NOT EXISTS (SELECT 1 FROM interactions r WHERE r.thread_id=i.thread_id
                                   AND r.direction='out' AND r.date > i.date)
                   GROUP BY i.id""",
                (oldest, limit),
            ).fetchall()
            for iid, subject, day, customer_id, sender in rows:
                due = (_parse(day) + timedelta(days=settings.unanswered_days)).date()
                if store.add_task(
                    f"Reply to {sender or 'customer'}: {subject or '(no subject)'}",
                    due=max(due, today),
                    customer_id=customer_id,
                    interaction_id=iid,
                    description="Inbound customer mail without a reply from us." + _late(due, today),
                    rule_key=f"unanswered:{iid}",
                ):
                    created += 1
    return created


def _late(due: date, today: date) -> str:
    """A note on a task made after its rule's due date had passed."""
    if due >= today:
        return ""
    return f" The rule's due date, {due.isoformat()}, had passed when the task was made: due the day it was made."


def _ended(end: str | None, day: str | None) -> datetime | None:
    if end:
        try:
            value = datetime.fromisoformat(end)
        except ValueError:
            value = None
        if value is not None:
            if value.tzinfo is None:
                # an all-day end date is exclusive: the event ended at its start
                value = value.replace(tzinfo=timezone.utc)
            return value.astimezone(timezone.utc)
    return _parse(day) if day else None
