"""Customers and their contacts as vCards, for pushing into an address book.

Each contact becomes a vCard 4.0 with the customer as ORG and the CRM's view
in NOTE (last contact, open tasks); each customer a ``KIND:org`` card.  UIDs
are stable, so a card is updated in place, never duplicated.  Only cards
whose content changed since the last push are returned, and none that the
user edited in the address book: those are the user's from then on.

The notes are written for staff, in the office's language, with the last
contact as a day in the office's zone and, when ``[web] base_url`` is set, the
customer's page in ``crm serve``.  The same store gives the same cards, so a
card is pushed again only when something on it changed.
"""

from __future__ import annotations

import hashlib
import json

from crm_bridge.crm_core.contentlines import escape_text, fold_line
from crm_bridge.crm_core.i18n import Office
from crm_bridge.crm_core.records import CardPush
from crm_bridge.crm_core.store import Store

#: the content hash recorded for a card the user edited: it is theirs from then on
USER_EDITED = "user-edited"
#: every pushed card's UID (and so its file name) starts with this; the CardDAV
#: connector (connectors/dav.py, own_item_prefix) does not read such cards back
UID_PREFIX = "crm-bridge-"


def vcard(lines: list[str]) -> str:
    return "\r\n".join(fold_line(l) for l in ["BEGIN:VCARD", "VERSION:4.0", "PRODID:-//crm-bridge//EN", *lines, "END:VCARD"]) + "\r\n"


def customer_cards(store: Store, office: Office | None = None) -> list[tuple[CardPush, str]]:
    """(card, content hash) for every customer and contact whose card changed."""
    office = office or Office()
    pushed = {uid: (digest, href, etag, scope) for uid, digest, href, etag, scope in store.conn.execute(
        "SELECT uid, content_hash, remote_href, remote_etag, remote_scope FROM card_pushes")}
    phones = _phones(store)
    out = []
    for c in store.customers():
        last = office.when(c["last_contact"], with_time=False) or office._("none")
        tail = [office._("Open tasks: {count}.", count=c["open_tasks"])]
        if c["account_owner"]:
            tail.append(office._("Account owner: {name}.", name=c["account_owner"]))
        url = office.customer_url(c["id"])
        link = ("\n" + office._("Customer page: {url}", url=url)) if url else ""
        note = " ".join([office._("crm-bridge customer."), office._("Last contact: {when}.", when=last), *tail]) + link
        lines = [f"UID:{UID_PREFIX}customer-{c['id']}", "KIND:org", f"FN:{escape_text(c['name'])}", f"ORG:{escape_text(c['name'])}",
                 f"NOTE:{escape_text(note)}"]
        lines += [f"URL:https://{d}" for d in (c["domains"] or "").split()[:1]]
        out.append((f"{UID_PREFIX}customer-{c['id']}", lines))
        for k in store.customer(c["name"])["contacts_list"]:
            emails = (k["emails"] or "").split()
            if not emails:
                continue
            knote = " ".join([office._("Customer: {name}.", name=c["name"]),
                              office._("Last contact with the customer: {when}.", when=last), *tail]) + link
            klines = [f"UID:{UID_PREFIX}contact-{k['id']}", f"FN:{escape_text(k['name'] or emails[0])}", f"ORG:{escape_text(c['name'])}",
                      *[f"EMAIL:{e}" for e in emails], *[f"TEL:{escape_text(p)}" for p in phones.get(k["id"], [])],
                      f"NOTE:{escape_text(knote)}"]
            if k["title"]:
                klines.append(f"TITLE:{escape_text(k['title'])}")
            out.append((f"{UID_PREFIX}contact-{k['id']}", klines))
    out += _gone(pushed, {uid for uid, _ in out}, office)
    cards = []
    for uid, lines in out:
        text = vcard(lines)
        digest = hashlib.sha1(text.encode()).hexdigest()
        prior = pushed.get(uid)
        if prior and prior[0] in (digest, USER_EDITED):
            continue
        href, etag, scope = (prior[1] or "", prior[2] or "", prior[3] or "") if prior else ("", "", "")
        cards.append((CardPush(uid=uid, vcard=text, href=href, etag=etag, scope=scope), digest))
    return cards


#: what a pushed card says once the CRM no longer has it to give (see :func:`_gone`)
GONE_NAME = "(no longer in the CRM)"
GONE_NOTE = "crm-bridge no longer keeps this card: the customer or contact was merged into another, removed, or detached from its customer. You can delete it."  # noqa: E501


def _gone(pushed: dict[str, tuple], current: set[str], office: Office) -> list[tuple[str, list[str]]]:
    """A card crm pushed whose customer or contact is gone (merged away, removed, detached):
    pushed once more without its addresses, phones and company, saying so, so that no mail client
    keeps offering a stale card beside the one the addresses moved to.  Not one the user edited."""
    out = []
    for uid, (digest, *_place) in pushed.items():
        if uid in current or digest == USER_EDITED or not uid.startswith(UID_PREFIX):
            continue
        kind = ["KIND:org"] if uid.startswith(f"{UID_PREFIX}customer-") else []
        out.append((uid, [f"UID:{uid}", *kind, f"FN:{escape_text(office._(GONE_NAME))}",
                          f"NOTE:{escape_text(office._(GONE_NOTE))}"]))
    return out


def _phones(store: Store) -> dict[int, list[str]]:
    """contact id -> its phone numbers (as the address books it came from gave them)."""
    out: dict[int, list[str]] = {}
    for cid, raw in store.conn.execute("SELECT id, phones FROM contacts WHERE phones IS NOT NULL AND phones != '[]'"):
        try:
            numbers = json.loads(raw)
        except ValueError:
            continue
        if isinstance(numbers, list):
            out[cid] = [str(n) for n in numbers if isinstance(n, str) and n.strip()]
    return out
