"""``crm contacts``, ``crm customers rename|merge|remove`` and ``crm note``: the
hand-kept parts of the directory.  Registered on ``crm`` by cli.py."""

from __future__ import annotations

import json
from typing import Any

import click

from crm_bridge.crm_core import blocks, directory, notes
from crm_bridge.crm_core.store import StoreError


def _json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, ensure_ascii=False, default=str))


def _not_in_config(obj: Any, customer_id: int, what: str) -> str:
    """A customer listed in the config comes back at the next command: refuse changing it here."""
    name = directory.customer_name(obj.store, customer_id)
    if any(n.casefold() == name.casefold() for n, _, _ in obj.config.customers):
        raise StoreError(f"{name!r} is listed under [[customers]] in {obj.config.path}: take it out there "
                         f"first (its domains stay with it in the store), then {what} it here")
    return name


def register(main: click.Group, customers: click.Group) -> None:
    main.add_command(contacts)
    main.add_command(note)
    main.add_command(blocks_group)
    customers.add_command(customers_rename)
    customers.add_command(customers_merge)
    customers.add_command(customers_remove)


# -- contacts --------------------------------------------------------------------
@click.group()
def contacts() -> None:
    """People: list, show, attach to a customer, detach, merge."""


@contacts.command("list")
@click.option("--customer", help="Only the contacts of this customer.")
@click.option("--unattached", is_flag=True, help="Only contacts without a customer.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def contacts_list(obj: Any, customer: str | None, unattached: bool, as_json: bool) -> None:
    """Contacts with their addresses and customer.

    \b
    Examples:
        crm contacts list --customer "Stadtwerke"
        crm contacts list --unattached
    """
    store = obj.store
    cid = directory.find_customer(store, customer) if customer else None
    rows = directory.contacts(store, cid, unattached)
    if as_json:
        _json(rows)
        return
    for k in rows:
        click.echo(f"{k['id']:>5}  {k['name'] or '-':<28} {k['emails'] or '-':<38} {k['customer'] or '(no customer)':<28} "
                   f"{k['interactions']} interactions")
    if not rows:
        click.echo("no contacts" + (" of that customer" if cid else " without a customer" if unattached else " yet"))


@contacts.command("show")
@click.argument("contact")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def contacts_show(obj: Any, contact: str, as_json: bool) -> None:
    """One contact (e-mail address or id) with its latest interactions."""
    store = obj.store
    info = directory.contact(store, directory.find_contact(store, contact))
    if as_json:
        _json(info)
        return
    click.echo(f"{info['name'] or '-'} (contact {info['id']}, from {info['origin']})")
    click.echo(f"  addresses: {info['emails'] or '-'}")
    click.echo(f"  customer: {info['customer'] or '(none)'}")
    if info["title"]:
        click.echo(f"  title: {info['title']}")
    if info["phones"]:
        click.echo(f"  phones: {', '.join(info['phones'])}")
    click.echo(f"  {info['interactions']} interactions")
    for it in info["recent"]:
        click.echo(f"  {it['id']:>6}  {(it['date'] or '')[:10]}  {it['kind']:<11} {it['subject'] or '(subject not stored)'}")


@contacts.command("attach")
@click.argument("email")
@click.option("--customer", required=True, help="Customer name (or its start) or id.")
@click.option("--name", help="The person's name, for a new contact.")
@click.pass_obj
def contacts_attach(obj: Any, email: str, customer: str, name: str | None) -> None:
    """Make the person with this address a contact of a customer; their past mail links at once.

    \b
    Example:
        crm contacts attach k.berger@gmail.com --customer "Hotel Seeblick"
    """
    store = obj.store
    cid = directory.find_customer(store, customer)
    before = store.counts()["links"]
    contact_id, new = directory.attach(store, email, cid, name)
    click.echo(f"{'new ' if new else ''}contact {contact_id} ({email.strip().lower()}) now belongs to "
               f"{directory.customer_name(store, cid)}; {store.counts()['links'] - before} new links")


@contacts.command("detach")
@click.argument("contact")
@click.pass_obj
def contacts_detach(obj: Any, contact: str) -> None:
    """The contact (e-mail or id) no longer belongs to its customer; it stays a contact."""
    store = obj.store
    contact_id = directory.find_contact(store, contact)
    directory.detach(store, contact_id)
    click.echo(f"contact {contact_id} belongs to no customer now")


@contacts.command("merge")
@click.argument("keep")
@click.argument("other")
@click.pass_obj
def contacts_merge(obj: Any, keep: str, other: str) -> None:
    """Merge contact OTHER into KEEP (e-mail addresses or ids): addresses, links and tasks move.

    \b
    Example:
        crm contacts merge k.berger@hotel-seeblick.example k.berger@gmail.com
    """
    store = obj.store
    keep_id, other_id = directory.find_contact(store, keep), directory.find_contact(store, other)
    moved = directory.merge_contacts(store, keep_id, other_id)
    click.echo(f"contact {other_id} merged into {keep_id}: {moved['addresses']} addresses, "
               f"{moved['links']} interactions, {moved['tasks']} tasks moved")


# -- customers rename / merge / remove ----------------------------------------
@click.command("rename")
@click.argument("name")
@click.argument("new_name")
@click.pass_obj
def customers_rename(obj: Any, name: str, new_name: str) -> None:
    """Give a customer a new name."""
    store = obj.store
    cid = directory.find_customer(store, name)
    old = _not_in_config(obj, cid, "rename")
    directory.rename_customer(store, cid, new_name)
    click.echo(f"customer {cid}: {old} is now {new_name.strip()}")


@click.command("merge")
@click.argument("keep")
@click.argument("other")
@click.pass_obj
def customers_merge(obj: Any, keep: str, other: str) -> None:
    """Merge customer OTHER into KEEP: domains, contacts, links and tasks move; OTHER goes.

    \b
    Example:
        crm customers merge "Stadtwerke Lindenau GmbH" "SW Lindenau"
    """
    store = obj.store
    keep_id, other_id = directory.find_customer(store, keep), directory.find_customer(store, other)
    other_name = _not_in_config(obj, other_id, "merge")
    moved = directory.merge_customers(store, keep_id, other_id)
    click.echo(f"{other_name} merged into {directory.customer_name(store, keep_id)}: {moved['domains']} domains, "
               f"{moved['contacts']} contacts, {moved['interactions']} interactions, {moved['tasks']} tasks moved")


@click.command("remove")
@click.argument("name")
@click.option("--yes", is_flag=True, help="Do not ask (for scripts).")
@click.pass_obj
def customers_remove(obj: Any, name: str, yes: bool) -> None:
    """Remove a customer: its domains and links go; its contacts, tasks, mails and appointments stay."""
    store = obj.store
    cid = directory.find_customer(store, name)
    name = _not_in_config(obj, cid, "remove")
    f = directory.customer_footprint(store, cid)
    click.echo(f"removing {name}: its {f['domains']} domains and its links to {f['interactions']} mails and "
               f"appointments go (they stay in the store); its {f['contacts']} contacts and {f['tasks']} tasks "
               f"({f['open_tasks']} open) stay, without a customer")
    if not yes:
        click.confirm("remove it?", abort=True)  # no answer (stdin closed): aborted, nothing removed
    directory.remove_customer(store, cid)
    click.echo(f"removed {name}")


# -- notes -----------------------------------------------------------------------
@click.group()
def note() -> None:
    """Notes on a customer's timeline (a call, a visit)."""


@note.command("add")
@click.option("--customer", required=True, help="Customer name (or its start) or id.")
@click.argument("text", nargs=-1, required=True)
@click.pass_obj
def note_add(obj: Any, customer: str, text: tuple[str, ...]) -> None:
    """Write a note on a customer's timeline; `crm search` finds it.

    \b
    Example:
        crm note add --customer "Hotel Seeblick" "Called Mr Berger: wants the offer by Friday"
    """
    store = obj.store
    cid = directory.find_customer(store, customer)
    iid = notes.add_note(store, cid, " ".join(text))
    click.echo(f"note {iid} on {directory.customer_name(store, cid)}'s timeline")


# -- blocks ----------------------------------------------------------------------
@click.group("blocks")
def blocks_group() -> None:
    """Blocked senders: the config's [linking] blocklist and the blocks made in the web's review queue."""


@blocks_group.command("list")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def blocks_list(obj: Any, as_json: bool) -> None:
    """Every blocked address and domain, and where it was blocked (config, or web/CLI by whom and when)."""
    from crm_bridge.cli import _local_time

    rows = blocks.listing(obj.store)
    if as_json:
        _json(rows)
        return
    for b in rows:
        where = "in the config" if b["origin"] == "config" else f"by {b['by'] or '-'} at {_local_time(b['at'], obj.zone)}"
        click.echo(f"{b['entry']:<40} {b['kind']:<8} {where}")
    if not rows:
        click.echo("nobody is blocked")


@blocks_group.command("add")
@click.argument("entry")
@click.pass_obj
def blocks_add(obj: Any, entry: str) -> None:
    """Block an address or a whole domain, as the review queue's "Block" does: what was stored from it
    leaves the store (the mailboxes keep it) and its new mail is not logged.

    \b
    Example:
        crm blocks add newsletter@werbung.example
    """
    removed = blocks.block(obj.store, entry, "cli")
    click.echo(f"blocked {blocks.normalise(entry)}; {removed} stored mails from it removed from the store")


@blocks_group.command("remove")
@click.argument("entry")
@click.pass_obj
def blocks_remove(obj: Any, entry: str) -> None:
    """Unblock an address or domain blocked in the web or with ``crm blocks add``; the next sync brings its
    mail back (it reads every source again once)."""
    blocks.unblock(obj.store, entry)
    click.echo(f"unblocked {blocks.normalise(entry)}; the next sync reads every source again once")
