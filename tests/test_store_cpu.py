"""The store's CPU per mail (issue 9): what was made cheaper still stores the same.

The full-text index gets a page's mail in one segment, also when a reply in the page links an
unmatched mail of the same page; FTS5 merges by 16; the Public Suffix List is read at less cost;
a mail's skip reason and its links are worked out from one look at its participants.
"""

from __future__ import annotations

import sqlite3
from datetime import datetime, timedelta, timezone

from crm_bridge.crm_core import domains
from crm_bridge.crm_core.domains import AddressSet
from crm_bridge.crm_core.linking import LinkIndex, Linker
from crm_bridge.crm_core.records import Address, Batch, Location, MailRecord
from crm_bridge.crm_core.schema import MIGRATIONS, SCHEMA_VERSION
from crm_bridge.crm_core.settings import LinkingSettings, SourcePolicy
from crm_bridge.crm_core.store import Store
from tests.test_store_batch import fts_check

OWNER = "anna@nordlicht.example"
POLICY = SourcePolicy(name="mail", owner=frozenset({OWNER}))
BASE = datetime(2026, 3, 1, 9, 0, tzinfo=timezone.utc)


def settings(**kw) -> LinkingSettings:
    return LinkingSettings(internal_domains=AddressSet(["nordlicht.example"]), **kw)


def mail(i: int, sender: str | None = "kim@kunde.example", reply_to: int | None = None, **kw) -> MailRecord:
    refs = (f"m{reply_to}@x",) if reply_to is not None else ()
    fields = dict(location=Location("INBOX", f"1:{i}", ""), message_id=f"m{i}@x", in_reply_to=refs, references=refs,
                  sender=Address(sender, "Kim") if sender else None, to=(Address(OWNER, "Anna"),), date=BASE + timedelta(minutes=i),
                  subject=f"Angebot wort{i}", snippet=f"Guten Tag, text{i} zum Angebot.")
    fields.update(kw)
    return MailRecord(**fields)  # type: ignore[arg-type]




def segments(store: Store) -> int:
    return store._one("SELECT COUNT(DISTINCT segid) FROM interactions_fts_idx")


def found(store: Store, word: str) -> list[str]:
    return sorted(r["subject"] or "" for r in store.search(word))


def visibility(store: Store, i: int) -> str:
    return store._one("SELECT visibility FROM interactions WHERE message_id=?", (f"m{i}@x",))


def test_a_reply_that_links_a_mail_of_its_own_page_leaves_one_index_segment(tmp_path):
    """An unmatched mail (stored as metadata) and, in the same page, a customer's reply to it: the
    thread links it and its text is filled in.  The update trigger did that after the page's index
    rows were written, and FTS5 wrote the page's terms at its savepoint and the trigger's at the
    commit: two segments a page, merged again later.  Now the page goes into the index last, the
    filled-in mail with its text: one segment, the same index."""
    store = Store(tmp_path / "crm.db", settings())
    with store.transaction():
        store.add_customer("Kunde GmbH", ["kunde.example"])
    with store.transaction():
        store.apply_batch(POLICY, Batch(records=[
            *(mail(i) for i in range(20)),
            mail(100, sender="olaf@andere.example"),  # nobody matches: metadata only, for now
            mail(101, reply_to=100),  # the customer answers it: the thread links it
            mail(102, sender="eva@dritte.example"),  # nobody matches, and stays so
        ]))
    assert segments(store) == 1
    fts_check(store)
    assert visibility(store, 100) == "snippet"
    assert found(store, "wort100") == ["Angebot wort100"]
    assert found(store, "text100") == ["Angebot wort100"]
    assert visibility(store, 102) == "metadata"
    assert found(store, "wort102") == []
    # a later page's reply links the mail held from this one: the update trigger fills it in
    with store.transaction():
        store.apply_batch(POLICY, Batch(records=[mail(103, sender="kim@kunde.example", reply_to=102)]))
    fts_check(store)
    assert visibility(store, 102) == "snippet"
    assert found(store, "wort102") == ["Angebot wort102"]
    assert len(store.search("Angebot", limit=100)) == 24
    store.close()


def test_the_page_is_written_again_whole_also_where_sqlite_runs_triggers_recursively(tmp_path, monkeypatch):
    """The filled-in mail of a page is written again with INSERT OR REPLACE, which runs the delete
    trigger (taking out of the index what is not in it: "database disk image is malformed") where
    recursive triggers are on, as a SQLite built with SQLITE_DEFAULT_RECURSIVE_TRIGGERS has them."""
    real = sqlite3.connect

    def connect(*args, **kwargs):
        conn = real(*args, **kwargs)
        conn.execute("PRAGMA recursive_triggers=ON")
        return conn

    monkeypatch.setattr(sqlite3, "connect", connect)
    store = Store(tmp_path / "crm.db", settings())
    with store.transaction():
        store.add_customer("Kunde GmbH", ["kunde.example"])
    with store.transaction():
        store.apply_batch(POLICY, Batch(records=[mail(1), mail(100, sender="olaf@andere.example"), mail(101, reply_to=100)]))
    fts_check(store)
    assert visibility(store, 100) == "snippet"
    assert found(store, "text100") == ["Angebot wort100"]
    store.close()


def test_replies_that_link_mails_of_earlier_pages_fill_them_in_with_one_statement(tmp_path):
    """Mails of earlier pages are in the index already: the update trigger keeps it current, in
    one UPDATE for the page.  FTS5 writes what a statement with a savepoint gave it when the
    statement ends, so an UPDATE a mail wrote a segment a mail; one UPDATE writes one, and the
    page's own mail another."""
    store = Store(tmp_path / "crm.db", settings())
    with store.transaction():
        store.add_customer("Kunde GmbH", ["kunde.example"])
    with store.transaction():
        store.apply_batch(POLICY, Batch(records=[mail(1), *(mail(i, sender=f"p{i}@andere.example") for i in range(100, 106))]))
    assert segments(store) == 1
    assert [visibility(store, i) for i in range(100, 106)] == ["metadata"] * 6
    with store.transaction():  # the customer answers five of them
        store.apply_batch(POLICY, Batch(records=[mail(200 + i, reply_to=100 + i) for i in range(5)]))
    assert segments(store) == 1 + 2
    fts_check(store)
    assert [visibility(store, i) for i in range(100, 106)] == ["snippet"] * 5 + ["metadata"]
    assert [found(store, f"text{i}") for i in (100, 104, 105)] == [["Angebot wort100"], ["Angebot wort104"], []]
    store.close()


def automerge(store: Store) -> int:
    return int(store._one("SELECT v FROM interactions_fts_config WHERE k='automerge'"))


def test_the_index_merges_its_segments_by_16_in_a_new_and_in_a_migrated_store(tmp_path):
    store = Store(tmp_path / "new.db", settings())
    assert automerge(store) == 16
    store.close()
    path = tmp_path / "old.db"
    store = Store(path, settings())
    with store.transaction():  # a version-6 store: FTS5's default (4, not written down), no unread_texts
        store.conn.execute("DELETE FROM interactions_fts_config WHERE k='automerge'")
        store.add_customer("Kunde GmbH", ["kunde.example"])
        store.apply_batch(POLICY, Batch(records=[mail(i) for i in range(5)]))
        store.conn.execute("DROP TABLE unread_texts")
        store.conn.execute("UPDATE meta SET value='6' WHERE key='schema_version'")
    store.close()
    assert sqlite3.connect(path).execute("SELECT COUNT(*) FROM interactions_fts_config WHERE k='automerge'").fetchone() == (0,)
    store = Store(path, settings())
    assert store.schema_version() == SCHEMA_VERSION >= 8
    assert automerge(store) == 16
    with store.transaction():
        MIGRATIONS[7](store)  # idempotent
        MIGRATIONS[8](store)
        store.apply_batch(POLICY, Batch(records=[mail(i) for i in range(5, 10)]))
        store.apply_batch(POLICY, Batch(records=[mail(20, sender="olaf@andere.example", snippet="", no_text=True)]))
    fts_check(store)
    assert len(store.search("Angebot")) == 10
    assert store.conn.execute("SELECT local_id FROM unread_texts").fetchall() == [("1:20",)]
    store.close()


def test_the_public_suffix_list_read_faster_is_the_same_list():
    from publicsuffixlist import PublicSuffixList

    fast, plain = domains._load_psl(), PublicSuffixList()
    assert fast._publicsuffix == plain._publicsuffix
    assert fast._maxlabel == plain._maxlabel
    assert any(not rule.isascii() for rule in fast._publicsuffix)  # the IDN rules, in both forms
    for domain in ("einkauf.bauhaus-kramer.de", "a.b.example.co.uk", "xn--mnchen-3ya.de", "shop.xn--p1ai",
                   "foo.bar.kawasaki.jp", "city.kawasaki.jp", "example.com", "com", "local"):
        assert fast.privatesuffix(domain) == plain.privatesuffix(domain), domain


def skip_reason_before(linker: Linker, rec: MailRecord, scope: str, flags, policy: SourcePolicy) -> str:
    """Linker.skip_reason of a mail as it was written before Linker.mail_verdict (the rules to keep)."""
    if policy.in_folder(scope, policy.private_folder):
        return f"private folder {policy.private_folder}"
    if policy.private_keyword and policy.private_keyword in flags:
        return f"private keyword {policy.private_keyword}"
    people = [rec.sender, *rec.to, *rec.cc, *rec.bcc] if rec.sender is not None else [*rec.to, *rec.cc, *rec.bcc]
    if rec.sender is not None and linker.is_blocked(rec.sender.email):
        return f"blocked sender {rec.sender.email}"
    if policy.since is not None and rec.date is not None and rec.date < policy.since:
        return f"before the source's since date {policy.since.date().isoformat()}"
    external = linker.external(people, policy)
    if external and all(linker.is_blocked(a.email) for a in external):
        return "every external participant is blocked"
    logged_anyway = policy.logged_anyway(scope, flags)
    if rec.bulk and not linker.settings.log_bulk and not logged_anyway:
        return f"bulk or automatic mail ({rec.bulk})"
    if not external and not logged_anyway:
        return "internal only: no external participant"
    return ""


def test_a_mails_verdict_and_links_agree_with_skip_reason_and_match():
    """The store asks once per mail (Linker.mail_verdict) what skip_reason and match asked apart."""
    linking = LinkingSettings(internal_domains=AddressSet(["nordlicht.example"]),
                              blocklist=AddressSet(["spam@kunde.example", "werbung.example"]))
    index = LinkIndex(contact_by_email={"kim@kunde.example": 1}, customer_of_contact={1: 7},
                      customer_by_domain={"kunde.example": 7, "partner.example": 8})
    linker = Linker(linking, index)
    policy = SourcePolicy(name="mail", owner=frozenset({OWNER}), private_folder="Privat",
                          since=BASE - timedelta(days=1), log_folder="CRM")
    cases = [
        mail(1), mail(2, sender="olaf@partner.example"), mail(3, sender="spam@kunde.example"),
        mail(4, sender="x@werbung.example"), mail(5, sender="bob@nordlicht.example"),
        mail(6, sender=OWNER, to=(Address("spam@kunde.example"),)),
        mail(7, sender=OWNER, to=(Address("olaf@partner.example"), Address("kim@kunde.example")),
             cc=(Address("olaf@partner.example"),)),
        mail(8, bulk="list"), mail(9, date=BASE - timedelta(days=3)), mail(10, sender=OWNER),
        mail(11, sender=OWNER, location=Location("CRM", "1:11", "")),
        mail(12, location=Location("Privat", "1:12", "")), mail(13, sender=None),
    ]
    for rec in cases:
        for flags in ((), ("$Private",), ("$CRM",)):
            reason, external, anyway = linker.mail_verdict(rec, rec.location.scope, flags, policy)
            assert reason == skip_reason_before(linker, rec, rec.location.scope, flags, policy), (rec, flags)
            assert reason == linker.skip_reason(rec, rec.location.scope, flags, policy)
            if not reason:
                assert anyway == policy.logged_anyway(rec.location.scope, flags)
                assert linker.match_external(external) == linker.match(linker.mail_participants(rec), policy)
    reasons = {linker.mail_verdict(rec, rec.location.scope, (), policy)[0].split(" ")[0] for rec in cases}
    assert reasons == {"", "blocked", "every", "internal", "bulk", "before", "private"}
