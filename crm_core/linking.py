"""Linking rules: which customers and contacts an interaction involves.

The rules, in the order they apply to each external participant:

1. **address** – the exact address belongs to a known contact: link the
   contact and the contact's customer.
2. **domain** – the address's domain, or a parent domain down to the
   registrable one (``sub.domain.example.co.uk`` finds a customer that owns
   ``domain.example.co.uk`` or ``example.co.uk``), belongs to a customer:
   link the customer and, by default, create a contact for the unknown
   person.  Freemail domains never link by domain; internal domains never
   make a customer.
3. **thread** – a mail without links of its own inherits the customers of
   its thread (Message-ID / In-Reply-To / References).
4. **manual** – a manual link or unlink wins over every rule and survives
   re-syncs (kept in ``link_overrides``).

Before linking, :meth:`Linker.skip_reason` decides whether an item is
logged at all: private items, blocked senders, internal-only mail and bulk
mail are not.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

from crm_bridge.crm_core.domains import domain_chain, is_freemail
from crm_bridge.crm_core.records import Address, AppointmentRecord, MailRecord
from crm_bridge.crm_core.settings import LinkingSettings, SourcePolicy

CUSTOMER = "customer"
CONTACT = "contact"


@dataclass
class LinkIndex:
    """In-memory maps the rules read; the store keeps them current."""

    contact_by_email: dict[str, int] = field(default_factory=dict)
    customer_of_contact: dict[int, int | None] = field(default_factory=dict)
    customer_by_domain: dict[str, int] = field(default_factory=dict)


class Match:
    """The outcome of linking one interaction's participants.

    A plain class with slots, not a dataclass: the store makes one for every mail it stores."""

    __slots__ = ("links", "new_contacts")

    def __init__(self, links: dict[tuple[str, int], str] | None = None,
                 new_contacts: list[tuple[Address, int]] | None = None):
        self.links: dict[tuple[str, int], str] = {} if links is None else links  # (target, id) -> reason
        self.new_contacts: list[tuple[Address, int]] = [] if new_contacts is None else new_contacts  # (address, customer id)

    def __repr__(self) -> str:
        return f"Match(links={self.links!r}, new_contacts={self.new_contacts!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Match) and (self.links, self.new_contacts) == (other.links, other.new_contacts)

    __hash__ = None  # type: ignore[assignment]  # as a dataclass's: mutable

    def add(self, target: str, target_id: int | None, reason: str) -> None:
        if target_id is not None:
            self.links.setdefault((target, target_id), reason)


#: addresses a linker remembers what they are (internal, blocked) before it starts afresh
_MEMO_MAX = 200_000


class Linker:
    def __init__(self, settings: LinkingSettings, index: LinkIndex):
        self.settings = settings
        self.index = index
        # every participant of every mail is asked about several times (whether to log the
        # mail, whom to link, which way it went): each address is looked up in the
        # internal domains and the blocklist once (both are fixed for the linker's life)
        self._internal: dict[str, bool] = {}
        self._blocked: dict[str, bool] = {}

    # -- who is who -------------------------------------------------------
    def is_internal(self, email: str, policy: SourcePolicy) -> bool:
        if email in policy.owner:
            return True
        found = self._internal.get(email)
        if found is None:
            if len(self._internal) >= _MEMO_MAX:
                self._internal.clear()
            found = self._internal[email] = email in self.settings.internal_domains
        return found

    def is_blocked(self, email: str) -> bool:
        found = self._blocked.get(email)
        if found is None:
            if len(self._blocked) >= _MEMO_MAX:
                self._blocked.clear()
            found = self._blocked[email] = email in self.settings.blocklist
        return found

    def customer_for_domain(self, domain: str) -> int | None:
        if not self.index.customer_by_domain or is_freemail(domain, self.settings.extra_freemail):
            return None
        for candidate in domain_chain(domain):
            found = self.index.customer_by_domain.get(candidate)
            if found is not None:
                return found
        return None

    def external(self, addresses: Iterable[Address], policy: SourcePolicy) -> list[Address]:
        seen: set[str] = set()
        out = []
        owner, internal = policy.owner, self._internal
        for addr in addresses:
            email = addr.email
            if email in seen or email in owner:
                continue
            found = internal.get(email)
            if found is None:
                found = self.is_internal(email, policy)
            if found:
                continue
            seen.add(email)
            out.append(addr)
        return out

    # -- whether to log ---------------------------------------------------
    def mail_participants(self, rec: MailRecord) -> list[tuple[Address, str]]:
        out: list[tuple[Address, str]] = []
        if rec.sender is not None:
            out.append((rec.sender, "from"))
        out.extend((a, "to") for a in rec.to)
        out.extend((a, "cc") for a in rec.cc)
        out.extend((a, "bcc") for a in rec.bcc)
        return out

    def appointment_participants(self, rec: AppointmentRecord) -> list[tuple[Address, str]]:
        out: list[tuple[Address, str]] = []
        if rec.organizer is not None:
            out.append((rec.organizer.address, "organizer"))
        out.extend((a.address, "attendee") for a in rec.attendees)
        return out

    def direction(self, rec: MailRecord, policy: SourcePolicy) -> str:
        if rec.direction:
            return rec.direction
        if rec.sender is not None and self.is_internal(rec.sender.email, policy):
            return "out"
        return "in"

    def skip_reason(self, rec: MailRecord | AppointmentRecord, scope: str, flags: Iterable[str], policy: SourcePolicy) -> str:
        """Why the item is not logged, or "" when it is."""
        if isinstance(rec, MailRecord):
            return self.mail_verdict(rec, scope, flags, policy)[0]
        if policy.in_folder(scope, policy.private_folder):
            return f"private folder {policy.private_folder}"
        if policy.private_keyword and policy.private_keyword in flags:
            return f"private keyword {policy.private_keyword}"
        if rec.private:
            return "private appointment"
        people = [a for a, _ in self.appointment_participants(rec)]
        when = rec.start
        if policy.since is not None and when is not None and _before(when, policy.since):
            return f"before the source's since date {policy.since.date().isoformat()}"
        external = self.external(people, policy)
        if external and all(self.is_blocked(a.email) for a in external):
            return "every external participant is blocked"
        if not external and not policy.logged_anyway(scope, flags):
            return "internal only: no external participant"
        return ""

    def mail_verdict(self, rec: MailRecord, scope: str, flags: Iterable[str],
                     policy: SourcePolicy) -> tuple[str, list[Address], bool]:
        """:meth:`skip_reason` of a mail, and what storing it asks next: its external participants
        (:meth:`match_external`) and whether it is logged anyway (log folder or keyword)."""
        if policy.private_folder and policy.in_folder(scope, policy.private_folder):
            return f"private folder {policy.private_folder}", [], False
        if policy.private_keyword and policy.private_keyword in flags:
            return f"private keyword {policy.private_keyword}", [], False
        sender = rec.sender
        if sender is not None:
            if self.is_blocked(sender.email):
                return f"blocked sender {sender.email}", [], False
            people = [sender, *rec.to, *rec.cc, *rec.bcc]
        else:
            people = [*rec.to, *rec.cc, *rec.bcc]
        when = rec.date
        if policy.since is not None and when is not None and _before(when, policy.since):
            return f"before the source's since date {policy.since.date().isoformat()}", [], False
        external = self.external(people, policy)
        if external:
            is_blocked = self.is_blocked
            for a in external:
                if not is_blocked(a.email):
                    break
            else:
                return "every external participant is blocked", external, False
        logged_anyway = policy.logged_anyway(scope, flags)
        if rec.bulk and not self.settings.log_bulk and not logged_anyway:
            return f"bulk or automatic mail ({rec.bulk})", external, logged_anyway
        if not external and not logged_anyway:
            return "internal only: no external participant", external, logged_anyway
        return "", external, logged_anyway

    # -- linking ----------------------------------------------------------
    def match(self, participants: Iterable[tuple[Address, str]], policy: SourcePolicy) -> Match:
        return self.match_external(self.external((a for a, _ in participants), policy))

    def match_external(self, external: list[Address]) -> Match:
        """:meth:`match` of the external participants (:meth:`external`), worked out already."""
        result = Match()
        links = result.links  # Match.add, without its call: the store asks this for every mail
        idx = self.index
        contact_by_email, customer_of_contact = idx.contact_by_email, idx.customer_of_contact
        creating: set[str] | None = None
        blocked, is_blocked = self._blocked, self.is_blocked
        for addr in external:
            email = addr.email
            found = blocked.get(email)
            if found if found is not None else is_blocked(email):
                continue
            contact = contact_by_email.get(email)
            if contact is not None:
                links.setdefault((CONTACT, contact), "address")
                customer = customer_of_contact.get(contact)
                if customer is not None:
                    links.setdefault((CUSTOMER, customer), "address")
                continue
            customer = self.customer_for_domain(email.rpartition("@")[2])
            if customer is not None:
                links.setdefault((CUSTOMER, customer), "domain")
                if self.settings.create_contacts:
                    if creating is None:
                        creating = set()
                    if email not in creating:
                        creating.add(email)
                        result.new_contacts.append((addr, customer))
        return result


def _before(when, since) -> bool:
    from datetime import date, datetime, timezone

    if isinstance(when, datetime):
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)
        return when < since
    if isinstance(when, date):
        return when < since.date()
    return False
