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

Titles and descriptions are written in the office's language, with dates in
the office's zone (:class:`~crm_core.i18n.Office`), when the task is made,
and stored: a title is never written again, so a title staff changed (in the
CRM or in their calendar) stays theirs, and a task made before a change of
``[company] language`` keeps its words.  "Today" and the due dates are days
in the office's zone too.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone, tzinfo

from crm_bridge.crm_core.i18n import Office
from crm_bridge.crm_core.settings import FollowupSettings
from crm_bridge.crm_core.store import Store, utc_iso


def _parse(ts: str) -> datetime:
    return datetime.strptime(ts, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)


def apply_rules(store: Store, settings: FollowupSettings, now: datetime | None = None,
                office: Office | None = None) -> int:
    """Create the tasks the rules call for; returns how many are new."""
    office = office or Office()
    now = now or datetime.now(timezone.utc)
    tz = office.tz
    today = office.today(now)  # the staff's day, not UTC's
    oldest = utc_iso(now - timedelta(days=settings.lookback_days))
    created = 0
    # CROSS JOIN: SQLite walks the interactions of the window by their date first, then their links,
    # whatever the statistics say (walking the links to customers first grows with the store)
    with store.transaction():
        if settings.after_appointment_days:
            rows = store.conn.execute(
                """SELECT i.id, i.subject, i."end", i.start, i.date, l.target_id FROM interactions i
                   CROSS JOIN links l ON l.interaction_id=i.id AND l.target='customer'
                   WHERE i.kind='appointment' AND i.rrule='' AND i.status != 'CANCELLED' AND i.deleted=0
                   AND i.date >= ? AND i.date <= ?
                   GROUP BY i.id""",
                (oldest, utc_iso(now)),
            ).fetchall()
            for iid, subject, end, start, day, customer_id in rows:
                ended = _ended(end or start, day, tz)
                if ended is None or ended > now:
                    continue
                due = ended.astimezone(tz).date() + timedelta(days=settings.after_appointment_days)
                if store.add_task(
                    office._("Follow up: {subject}", subject=subject or office._("appointment")),
                    due=max(due, today),
                    customer_id=customer_id,
                    interaction_id=iid,
                    description=_text(office, office._("Created after the appointment ended."), due, today),
                    rule_key=f"after-appointment:{iid}",
                ):
                    created += 1
        if settings.unanswered_days:
            limit = utc_iso(now - timedelta(days=settings.unanswered_days))
            rows = store.conn.execute(
                """SELECT i.id, i.subject, i.date, l.target_id,
                   (SELECT p.email FROM participants p WHERE p.interaction_id=i.id AND p.role='from') FROM interactions i
                   CROSS JOIN links l ON l.interaction_id=i.id AND l.target='customer'
                   WHERE i.kind='mail' AND i.direction='in' AND i.bulk='' AND i.deleted=0
                   AND i.date >= ? AND i.date <= ?
                   AND NOT EXISTS (SELECT 1 FROM interactions r WHERE r.thread_id=i.thread_id
                                   AND r.direction='out' AND r.date > i.date)
                   GROUP BY i.id""",
                (oldest, limit),
            ).fetchall()
            for iid, subject, day, customer_id, sender in rows:
                due = _parse(day).astimezone(tz).date() + timedelta(days=settings.unanswered_days)
                if store.add_task(
                    office._("Reply to {sender}: {subject}", sender=sender or office._("customer"),
                             subject=subject or office._("(no subject)")),
                    due=max(due, today),
                    customer_id=customer_id,
                    interaction_id=iid,
                    description=_text(office, office._("A customer's mail that got no reply from us."), due, today),
                    rule_key=f"unanswered:{iid}",
                ):
                    created += 1
    return created


def _text(office: Office, what: str, due: date, today: date) -> str:
    """A rule-made task's description; with a note when the rule's due date had passed when it was made."""
    if due >= today:
        return what
    late = office._("The rule's due date, {due}, had passed when the task was made: due the day it was made.",
                    due=office.day(due))
    return f"{what} {late}"


def _ended(end: str | None, day: str | None, tz: tzinfo) -> datetime | None:
    if end:
        try:
            value = datetime.fromisoformat(end)
        except ValueError:
            value = None
        if value is not None:
            if value.tzinfo is None:
                # an all-day end date is exclusive: the event ended at the start of that day, the office's day
                value = value.replace(tzinfo=tz)
            return value.astimezone(timezone.utc)
    return _parse(day) if day else None
