"""Linking rules, end to end: Maildir -> engine -> store, read back through `crm`."""

from __future__ import annotations

from datetime import datetime, timezone

from crm_bridge.crm_core.domains import domain_chain, is_freemail, registrable_domain
from crm_bridge.crm_core.store import Store
from tests.conftest import make_mail, write_config


def timeline_subjects(crm, customer: str) -> list[str]:
    return sorted(item["subject"] or "" for item in crm.json("timeline", customer, "--limit", "0"))


def explain(crm, message_id: str) -> list[dict]:
    return crm.json("explain", message_id)


def test_registrable_domain_and_chain():
    assert registrable_domain("sub.domain.example.co.uk") == "example.co.uk"
    assert registrable_domain("einkauf.bauhaus-kramer.de") == "bauhaus-kramer.de"
    assert domain_chain("a.b.example.co.uk") == ("a.b.example.co.uk", "b.example.co.uk", "example.co.uk")
    assert is_freemail("gmx.de") and is_freemail("gmail.com") and not is_freemail("kunde.example")


def test_exact_address_links_contact_and_its_customer(crm_env, maildir):
    crm = crm_env()
    crm("customers", "add", "Kunde GmbH", "--domain", "kunde.example")
    maildir.add(make_mail(sender="Kim <kim@kunde.example>", message_id="m1@x"))
    crm("sync")
    links = {(l["target"], l["name"], l["reason"]) for l in explain(crm, "m1@x")[0]["links"]}
    # first mail: the unknown person at the customer's domain became a contact
    assert ("customer", "Kunde GmbH", "domain") in links
    assert ("contact", "Kim", "domain") in links
    maildir.add(make_mail(sender="Kim <kim@kunde.example>", message_id="m2@x", subject="Nachfrage"))
    crm("sync")
    links = {(l["target"], l["name"], l["reason"]) for l in explain(crm, "m2@x")[0]["links"]}
    assert links == {("customer", "Kunde GmbH", "address"), ("contact", "Kim", "address")}


def test_subdomain_and_multilabel_suffix_link_by_domain(crm_env, maildir):
    crm = crm_env(customers=(("Bau UK", ["domain.example.co.uk"]), ("Kramer", ["bauhaus-kramer.de"])))
    maildir.add(make_mail(sender="a@sub.domain.example.co.uk", message_id="uk@x", subject="UK"))
    maildir.add(make_mail(sender="b@einkauf.bauhaus-kramer.de", message_id="de@x", subject="DE"))
    maildir.add(make_mail(sender="c@other.example.co.uk", message_id="other@x", subject="other"))
    crm("sync")
    assert timeline_subjects(crm, "Bau UK") == ["UK"]
    assert timeline_subjects(crm, "Kramer") == ["DE"]
    assert explain(crm, "other@x")[0]["links"] == []


def test_freemail_links_only_by_exact_address(tmp_path, crm_env, maildir):
    crm = crm_env()
    # a freemail domain can never be a customer's domain
    result = crm("customers", "add", "Gmail Inc", "--domain", "gmail.com", ok=False)
    assert result.exit_code != 0 and "freemail" in result.output
    maildir.add(make_mail(sender="Privat <someone@gmail.com>", message_id="free1@x", subject="privat"))
    crm("sync")
    assert explain(crm, "free1@x")[0]["links"] == []
    store = Store(tmp_path / "crm.db")
    store.add_contact("Kim privat", ["someone@gmail.com"], store.customer_id("Kunde GmbH"))
    # adding the contact re-links the past mail by its exact address; the subject, withheld while the
    # mail matched nothing, comes with the next sync
    assert len(crm.json("timeline", "Kunde GmbH")) == 1
    crm("sync")
    assert timeline_subjects(crm, "Kunde GmbH") == ["privat"]
    maildir.add(make_mail(sender="Fremd <stranger@gmail.com>", message_id="free2@x", subject="fremd"))
    crm("sync")
    assert timeline_subjects(crm, "Kunde GmbH") == ["privat"]


def test_internal_domains_never_make_a_customer_and_internal_mail_is_not_logged(crm_env, maildir):
    crm = crm_env()
    result = crm("customers", "add", "Ourselves", "--domain", "nordlicht.example", ok=False)
    assert result.exit_code != 0 and "internal" in result.output
    maildir.add(make_mail(sender="jonas@nordlicht.example", to="anna@nordlicht.example", message_id="int@x"))
    crm("sync")
    rows = explain(crm, "int@x")
    assert rows[0]["logged"] is False and "internal" in rows[0]["reason"]


def test_outbound_mail_links_recipient_and_has_direction_out(crm_env, maildir):
    crm = crm_env()
    maildir.add(make_mail(sender="Anna <anna@nordlicht.example>", to="Kim <kim@kunde.example>", message_id="out@x",
                          subject="Ihr Angebot"))
    crm("sync")
    item = crm.json("timeline", "Kunde GmbH")[0]
    assert item["direction"] == "out" and item["subject"] == "Ihr Angebot"


def test_thread_inheritance_both_orders(crm_env, maildir):
    crm = crm_env()
    # a reply from a freemail address inherits the customer of its thread
    maildir.add(make_mail(sender="kim@kunde.example", message_id="root@x", subject="Wartung"))
    maildir.add(make_mail(sender="kim.privat@gmx.de", message_id="reply@x", in_reply_to="root@x",
                          references=["root@x"], subject="Re: Wartung"))
    crm("sync")
    reasons = {l["reason"] for l in explain(crm, "reply@x")[0]["links"]}
    assert reasons == {"thread"}
    # the other order: the freemail mail arrives first, the linked one later in another run
    maildir.add(make_mail(sender="x@gmx.de", message_id="late-child@x", in_reply_to="late-root@x", subject="Re: Termin"))
    crm("sync")
    assert explain(crm, "late-child@x")[0]["links"] == []
    maildir.add(make_mail(sender="kim@kunde.example", message_id="late-root@x", subject="Termin"))
    crm("sync")
    assert {l["reason"] for l in explain(crm, "late-child@x")[0]["links"]} == {"thread"}


def test_manual_link_and_unlink_win_and_survive_resync(tmp_path, crm_env, maildir):
    crm = crm_env(customers=(("Kunde GmbH", ["kunde.example"]), ("Andere AG", ["andere.example"])))
    maildir.add(make_mail(sender="kim@kunde.example", message_id="man@x", subject="Manuell"))
    crm("sync")
    crm("unlink", "man@x", "--customer", "Kunde GmbH")
    crm("link", "man@x", "--customer", "Andere AG")
    assert timeline_subjects(crm, "Kunde GmbH") == []
    assert timeline_subjects(crm, "Andere AG") == ["Manuell"]
    # a full rescan and a re-link through a new domain do not bring the rule's link back
    store = Store(tmp_path / "crm.db")
    with store.transaction():
        store.request_rescan()
    crm("sync")
    crm("customers", "add", "Kunde GmbH", "--domain", "kunde2.example")
    assert timeline_subjects(crm, "Kunde GmbH") == []
    assert {(l["name"], l["reason"]) for l in explain(crm, "man@x")[0]["links"] if l["target"] == "customer"} == {
        ("Andere AG", "manual")
    }


def test_adding_a_domain_relinks_past_interactions(crm_env, maildir):
    crm = crm_env(customers=())
    maildir.add(make_mail(sender="neu@neukunde.example", message_id="past@x", subject="Anfrage"))
    crm("sync")
    assert explain(crm, "past@x")[0]["links"] == []
    crm("customers", "add", "Neukunde", "--domain", "neukunde.example")
    assert len(crm.json("timeline", "Neukunde")) == 1
    # stored as metadata while unmatched; the rescan that adding a domain asks for fills the subject in
    crm("sync")
    assert timeline_subjects(crm, "Neukunde") == ["Anfrage"]


def test_unknown_sender_policy(tmp_path, maildir):
    sources = {"anna": {"type": "maildir", "path": str(maildir.root), "owner": ["anna@nordlicht.example"]}}
    from tests.conftest import Crm

    maildir.add(make_mail(sender="Neu <neu@kunde.example>", message_id="p@x"))
    crm = Crm(write_config(tmp_path / "crm.toml", customers=(("Kunde GmbH", ["kunde.example"]),), sources=sources,
                           linking={"create_contacts": False}))
    crm("sync")
    assert crm.json("customers", "show", "Kunde GmbH")["contacts_list"] == []
    assert timeline_subjects(crm, "Kunde GmbH") == ["Angebot"]


def test_bulk_and_automatic_mail_is_not_logged(crm_env, maildir):
    crm = crm_env()
    cases = {
        "list@x": ["List-Id: <news.kunde.example>"],
        "unsub@x": ["List-Unsubscribe: <mailto:u@kunde.example>"],
        "prec@x": ["Precedence: bulk"],
        "auto@x": ["Auto-Submitted: auto-replied"],
    }
    for mid, headers in cases.items():
        maildir.add(make_mail(sender="kim@kunde.example", message_id=mid, extra_headers=headers, subject=mid))
    maildir.add(make_mail(sender="noreply@kunde.example", message_id="noreply@x", subject="noreply"))
    maildir.add(make_mail(sender="kim@kunde.example", message_id="human@x", subject="human",
                          extra_headers=["Auto-Submitted: no"]))
    crm("sync")
    for mid in [*cases, "noreply@x"]:
        rows = explain(crm, mid)
        assert rows[0]["logged"] is False and "bulk" in rows[0]["reason"], mid
    assert timeline_subjects(crm, "Kunde GmbH") == ["human"]


def test_blocklist_is_retroactive_and_unblocking_brings_mail_back(tmp_path, maildir):
    from tests.conftest import Crm

    sources = {"anna": {"type": "maildir", "path": str(maildir.root), "owner": ["anna@nordlicht.example"]}}
    customers = (("Kunde GmbH", ["kunde.example"]),)
    maildir.add(make_mail(sender="kim@kunde.example", message_id="keep@x", subject="bleibt"))
    maildir.add(make_mail(sender="betriebsrat@kunde.example", message_id="block@x", subject="vertraulich"))
    crm = Crm(write_config(tmp_path / "crm.toml", customers=customers, sources=sources))
    crm("sync")
    assert timeline_subjects(crm, "Kunde GmbH") == ["bleibt", "vertraulich"]
    write_config(tmp_path / "crm.toml", customers=customers, sources=sources,
                 linking={"blocklist": ["betriebsrat@kunde.example"]})
    crm("sync")
    assert timeline_subjects(crm, "Kunde GmbH") == ["bleibt"]
    assert crm.json("search", "vertraulich") == []
    rows = explain(crm, "block@x")
    assert rows and not rows[0]["logged"]
    write_config(tmp_path / "crm.toml", customers=customers, sources=sources)
    crm("sync")
    assert timeline_subjects(crm, "Kunde GmbH") == ["bleibt", "vertraulich"]


def test_visibility_levels(tmp_path, maildir):
    from tests.conftest import Crm

    maildir.add(make_mail(sender="kim@kunde.example", message_id="vis@x", subject="Geheim", body="Der Inhalt"))
    for level, subject, snippet in (("metadata", None, None), ("subject", "Geheim", None), ("snippet", "Geheim", "Der Inhalt")):
        sources = {"anna": {"type": "maildir", "path": str(maildir.root), "owner": ["anna@nordlicht.example"],
                            "visibility": level}}
        crm = Crm(write_config(tmp_path / f"{level}.toml", store=f"{level}.db",
                               customers=(("Kunde GmbH", ["kunde.example"]),), sources=sources))
        crm("sync")
        item = crm.json("timeline", "Kunde GmbH")[0]
        assert (item["subject"], item["snippet"]) == (subject, snippet), level


def test_since_bounds_the_backfill(crm_env, maildir):
    crm = crm_env(sources=None)
    old = datetime(2020, 1, 1, tzinfo=timezone.utc)
    maildir.add(make_mail(sender="kim@kunde.example", message_id="old@x", subject="alt", date=old))
    maildir.add(make_mail(sender="kim@kunde.example", message_id="new@x", subject="neu"))
    from tests.conftest import Crm

    cfg = crm.config
    write_config(cfg, customers=(("Kunde GmbH", ["kunde.example"]),),
                 sources={"anna": {"type": "maildir", "path": str(maildir.root), "since": "2025-01-01"}})
    crm = Crm(cfg)
    crm("sync")
    assert timeline_subjects(crm, "Kunde GmbH") == ["neu"]
    assert "since" in explain(crm, "old@x")[0]["reason"]


def test_private_folder_and_keyword_are_never_logged(crm_env, maildir):
    crm = crm_env(sources=None)
    from tests.conftest import Crm

    write_config(crm.config, customers=(("Kunde GmbH", ["kunde.example"]),),
                 sources={"anna": {"type": "maildir", "path": str(maildir.root), "private_folder": "Privat",
                                   "log_folder": "CRM/Log", "owner": ["anna@nordlicht.example"]}})
    crm = Crm(crm.config)
    maildir.add(make_mail(sender="kim@kunde.example", message_id="priv@x", subject="privat"), folder="Privat")
    maildir.add(make_mail(sender="fremd@gmail.com", message_id="log@x", subject="bitte loggen"), folder="CRM/Log")
    crm("sync")
    assert "private" in explain(crm, "priv@x")[0]["reason"]
    logged = explain(crm, "log@x")[0]
    assert logged["logged"] and [(l["target"], l["reason"]) for l in logged["links"]] == [("contact", "log folder")]
    assert crm.json("search", "privat") == []


VCARDS = (
    "BEGIN:VCARD\r\nVERSION:4.0\r\nUID:card-1\r\nFN:Petra Neu\r\nORG:Neukunde AG\r\n"
    "EMAIL:petra@neukunde.example\r\nEMAIL:petra.privat@gmx.de\r\nTEL:+49 30 1234567\r\nEND:VCARD\r\n"
    "BEGIN:VCARD\r\nVERSION:3.0\r\nUID:card-2\r\nFN:Kim Kunde\r\nORG:Kunde GmbH\r\n"
    "EMAIL;TYPE=WORK:kim@kunde.example\r\nCATEGORIES:Einkauf\r\nEND:VCARD\r\n"
)


def test_address_book_creates_customers_only_when_allowed(tmp_path, maildir):
    from tests.conftest import Crm

    (tmp_path / "book.vcf").write_text(VCARDS)
    maildir.add(make_mail(sender="Petra <petra.privat@gmx.de>", message_id="petra@x", subject="von privat"))
    for allowed in (False, True):
        sources = {
            "book": {"type": "vcf", "path": str(tmp_path / "book.vcf"), "create_customers": allowed},
            "anna": {"type": "maildir", "path": str(maildir.root), "owner": ["anna@nordlicht.example"]},
        }
        crm = Crm(write_config(tmp_path / f"{allowed}.toml", store=f"{allowed}.db",
                               customers=(("Kunde GmbH", ["kunde.example"]),), sources=sources))
        crm("sync")
        names = {c["name"]: c for c in crm.json("customers", "list")}
        kunde = crm.json("customers", "show", "Kunde GmbH")
        assert [k["emails"] for k in kunde["contacts_list"]] == ["kim@kunde.example"]
        if not allowed:
            assert set(names) == {"Kunde GmbH"}
            assert explain(crm, "petra@x")[0]["links"][0]["target"] == "contact"
            continue
        assert set(names) == {"Kunde GmbH", "Neukunde AG"}
        # the new customer gets the card's company domain, never the freemail one
        assert names["Neukunde AG"]["domains"] == "neukunde.example"
        # and the private address on the card links the mail to the customer by exact address
        assert timeline_subjects(crm, "Neukunde AG") == ["von privat"]
