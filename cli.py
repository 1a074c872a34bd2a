"""``crm``: the command line of crm-bridge.

Examples::

    crm --config crm.toml sync                 # every source, then rules and push
    crm sync --source anna-imap --json         # one source, machine-readable
    crm customers add "Müller Bau" --domain mueller-bau.de
    crm timeline "Müller Bau"                  # any case, or the start of the name
    crm contacts attach k.berger@gmail.com --customer "Müller Bau"
    crm note add --customer "Müller Bau" "Called: wants the offer by Friday"
    crm search Wartungsvertrag
    crm tasks list --json

The config is ``--config PATH``, else ``$CRM_CONFIG``, else ``./crm.toml``.
A mistake in it is one readable line and exit status 2, never a traceback.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import sys
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import click

EXIT_CONFIG = 2
EXIT_SYNC_FAILED = 1
EXIT_BUSY = 75  # EX_TEMPFAIL: another process has the store; try again later
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports Ctrl-C


#: the stores this process opened, for :func:`run` to close before a quick exit
_OPEN_STORES: list[Any] = []


class Context:
    def __init__(self, config_path: str | None, verbose: int):
        self.config_path = config_path
        self.verbose = verbose
        self._config = None
        self._store = None

    @property
    def config(self):
        if self._config is None:
            from crm_bridge.sync.config import load_config

            self._config = load_config(self.config_path)
            _setup_logging(self.verbose, self._config.log_file)
        return self._config

    @property
    def zone(self) -> Any:
        """The office's time zone ([company] timezone), else None: the system's."""
        if not self.config.web.timezone:
            return None
        from zoneinfo import ZoneInfo

        return ZoneInfo(self.config.web.timezone)

    @property
    def store(self):
        if self._store is None:
            from crm_bridge.crm_core.store import Store

            from crm_bridge.sync.engine import load_customers

            self._store = Store(self.config.store_path, self.config.linking)
            _OPEN_STORES.append(self._store)
            load_customers(self._store, self.config)
        return self._store


class _Redact(logging.Filter):
    """Belt and braces: no line that looks like it carries a secret reaches a log."""

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage().lower()
        return not any(word in text for word in ("password=", "passwd=", "token=", "authorization:", "bearer ",
                                                 "'access_token'"))


def _setup_logging(verbose: int, log_file: Path | None) -> None:
    root = logging.getLogger()
    if getattr(root, "_crm_configured", False):
        return
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("crm: %(message)s"))
    handler.setLevel(level)
    handler.addFilter(_Redact())
    root.addHandler(handler)
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        fh = logging.FileHandler(log_file)
        fh.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        fh.setLevel(logging.INFO)
        fh.addFilter(_Redact())
        root.addHandler(fh)
    root.setLevel(min(level, logging.INFO if log_file else level))
    for noisy in ("imapclient", "exchangelib", "caldav", "urllib3", "niquests", "httpx", "requests_oauthlib",
                  "oauthlib"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    root._crm_configured = True  # type: ignore[attr-defined]


def _fail(message: str, code: int = EXIT_CONFIG) -> None:
    click.echo(f"crm: {message}", err=True)
    sys.exit(code)


class CrmGroup(click.Group):
    """Turns known errors into one line and an exit status."""

    def invoke(self, ctx: click.Context) -> Any:
        from crm_bridge.connectors.base import ConnectorError
        from crm_bridge.crm_core.settings import SettingsError
        import sqlite3

        from crm_bridge.crm_core.store import StoreBusy, StoreError, store_failure
        from crm_bridge.sync.config import ConfigError
        from crm_bridge.sync.lock import SyncLocked

        try:
            return super().invoke(ctx)
        except ConfigError as exc:
            for problem in exc.problems[:-1]:
                click.echo(f"crm: {problem}", err=True)
            _fail(exc.problems[-1])
        except SettingsError as exc:
            _fail(str(exc))
        except ConnectorError as exc:
            _fail(str(exc))
        except StoreBusy as exc:
            _fail(str(exc), EXIT_BUSY)
        except StoreError as exc:
            _fail(str(exc), 1)
        except sqlite3.Error as exc:  # the store file itself: damaged, full disk, busy
            obj = ctx.obj if isinstance(ctx.obj, Context) else None
            path = obj._config.store_path if obj is not None and obj._config is not None else "crm.db"
            failure = store_failure(exc, path)
            logging.getLogger("crm").debug("store failure", exc_info=True)
            _fail(str(failure), EXIT_BUSY if isinstance(failure, StoreBusy) else 1)
        except SyncLocked as exc:
            _fail(str(exc), EXIT_BUSY)
        except OSError as exc:
            if isinstance(exc, BrokenPipeError):
                sys.exit(0)
            name = f" {exc.filename}" if getattr(exc, "filename", None) else ""
            _fail(f"{exc.strerror or exc}{':' if name else ''}{name}", 1)


@click.group(cls=CrmGroup)
@click.option("--config", "config_path", envvar="CRM_CONFIG", metavar="PATH",
              help="Config file (default: $CRM_CONFIG, then ./crm.toml).")
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
@click.version_option(package_name="crm-bridge")
@click.pass_context
def main(ctx: click.Context, config_path: str | None, verbose: int) -> None:
    """crm-bridge: your mail, calendars and address books as one customer history."""
    ctx.obj = Context(config_path, verbose)


def _json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, ensure_ascii=False, default=str))


# -- init ------------------------------------------------------------------
@main.command()
@click.option("--demo", is_flag=True, help="Write the demo config (reads the sample data in examples/) instead.")
@click.option("--force", is_flag=True, help="Overwrite an existing crm.toml.")
@click.pass_obj
def init(obj: Context, demo: bool, force: bool) -> None:
    """Write a starter crm.toml here (if none) and create the store.

    The starter config has no customers and no sources, and a commented
    example of each source type; --demo writes the demo config instead.

    \b
    Example:
        crm init && $EDITOR crm.toml && crm sync
    """
    from importlib.resources import files

    target = Path(obj.config_path or "crm.toml")
    if not target.exists() or force:
        template = files("crm_bridge.crm_core").joinpath("templates", "demo.toml" if demo else "crm.toml")
        target.write_text(template.read_text(encoding="utf-8"), encoding="utf-8")
        click.echo(f"wrote {target}; edit it, then run: crm --config {target} sync")
        if demo and not (target.parent / "examples").is_dir():
            click.echo("the demo reads the sample data in examples/, which comes with the source "
                       "checkout: run it there, or copy examples/ next to the config")
    else:
        click.echo(f"{target} exists; kept it (--force overwrites)")
    obj.config_path = str(target)
    store = obj.store
    click.echo(f"store ready: {store.path} (schema {store.schema_version()})")


# -- sync ------------------------------------------------------------------
class _ProgressLine:
    def __init__(self) -> None:
        self.enabled = sys.stderr.isatty()
        self.last = ""

    def __call__(self, source: str, done: int, total: int | None) -> None:
        if not self.enabled:
            return
        text = f"{source}: {done}/{total}" if total else f"{source}: {done}"
        if total:
            width = 30
            filled = int(width * min(done, total) / max(total, 1))
            text = f"{source}: [{'#' * filled}{'.' * (width - filled)}] {done}/{total}"
        sys.stderr.write("\r" + text.ljust(len(self.last)))
        sys.stderr.flush()
        self.last = text

    def finish(self) -> None:
        if self.enabled and self.last:
            sys.stderr.write("\r" + " " * len(self.last) + "\r")
            sys.stderr.flush()


@main.command()
@click.option("--source", "sources", multiple=True, metavar="NAME", help="Only this source (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
@click.option("--dry-run", is_flag=True, help="Show what would be logged, linked and created; write nothing.")
@click.option("--watch", is_flag=True, help="Keep running: IMAP IDLE where available, else poll.")
@click.option("--interval", default=300, show_default=True, help="Seconds between polls in --watch mode.")
@click.option("--profile", "profile_path", type=click.Path(dir_okay=False, writable=True), metavar="FILE",
              help="Write where the time went (per source and phase) to FILE, and cProfile data to FILE.pstats.")
@click.pass_obj
def sync(obj: Context, sources: tuple[str, ...], as_json: bool, dry_run: bool, watch: bool, interval: int,
         profile_path: str | None) -> None:
    """Pull every source (or the ones named), link, apply rules, push tasks.

    Exit status 0 when every source synced, 1 when one failed (the others
    still ran), 2 for a config mistake, 75 when another sync is running.

    \b
    Examples:
        crm sync
        crm sync --source anna-imap --json
        crm sync --dry-run
        crm sync --watch
        crm sync --profile sync-profile.txt
    """
    import gc

    from crm_bridge.sync.engine import Engine, Interrupted

    # a first sync allocates millions of short-lived, acyclic objects
    # (parsed headers, records, rows): collecting the young generation
    # every 700 allocations cost about 7 % of its time
    gc.set_threshold(50_000, 20, 100)
    config = obj.config
    if not config.sources and not as_json:
        click.echo(f"no sources configured in {config.path}: add a [sources.NAME] table "
                   "(the config `crm init` writes has a commented example of each type)")
    progress = _ProgressLine()
    profiler = None
    if profile_path:
        if watch:
            _fail("--profile profiles one run; it cannot be combined with --watch")
        from crm_bridge.sync.profile import ProfilingEngine

        profiler = ProfilingEngine(config, obj.store, progress=progress)
    engine = profiler or Engine(config, obj.store, progress=progress, parallel=True)
    try:
        if watch:
            def report(results):
                progress.finish()
                _print_results(results, as_json, dry_run=False)

            try:
                engine.watch(list(sources) or None, interval=float(interval), on_result=report)
            except (KeyboardInterrupt, Interrupted):
                pass
            return
        results = engine.run(list(sources) or None, dry_run=dry_run)
    except Interrupted as exc:
        progress.finish()
        _fail(str(exc), EXIT_INTERRUPTED)
    finally:
        progress.finish()
        engine.close()
    if profiler is not None and profile_path:
        try:
            profiler.write(Path(profile_path), sys.argv)
            click.echo(f"profile written to {profile_path} (and {profile_path}.pstats)", err=True)
        except OSError as exc:
            click.echo(f"crm: cannot write the profile to {profile_path}: {exc.strerror or exc}", err=True)
    _print_results(results, as_json, dry_run)
    if any(r.status == "error" for r in results):
        sys.exit(EXIT_SYNC_FAILED)


def _print_results(results, as_json: bool, dry_run: bool) -> None:
    if as_json:
        _json({"dry_run": dry_run, "results": [r.as_dict() for r in results]})
        return
    prefix = "would be " if dry_run else ""
    for r in results:
        s = r.stats
        parts = [] if r.type == "rules" else [f"{s.added} {prefix}added", f"{s.updated} updated", f"{s.skipped} not logged"]
        if s.quarantined:
            parts.append(f"{s.quarantined} quarantined")
        if s.removed:
            parts.append(f"{s.removed} gone on the server")
        if s.contacts_created:
            parts.append(f"{s.contacts_created} contacts {prefix}created")
        if s.customers_created:
            parts.append(f"{s.customers_created} customers {prefix}created")
        if s.tasks_created:
            parts.append(f"{s.tasks_created} tasks {prefix}created")
        if s.tasks_updated:
            parts.append(f"{s.tasks_updated} tasks synced")
        line = f"{r.name}: {r.status}: " + ", ".join(parts) + f" ({r.seconds:.1f} s)"
        click.echo(line)
        if r.message:  # once, on stderr: a cron job that discards stdout still reports it
            click.echo(f"crm: {r.name}: {r.message}", err=True)


# -- status ----------------------------------------------------------------
@main.command()
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def status(obj: Context, as_json: bool) -> None:
    """Per source: last run, items, errors; what the store holds; a quick check of the file.

    Exit status 1 when the store file is damaged (``PRAGMA quick_check``).
    """
    from crm_bridge.sync.lock import StoreLock

    store = obj.store
    damage = store.quick_check()
    if damage:
        _fail(f"the store {store.path} is damaged ({damage}): restore it from a backup, or see what is left "
              f"with: sqlite3 {store.path} 'PRAGMA integrity_check'", 1)
    rows = store.status()
    running = StoreLock(obj.config.store_path).holder()
    for r in rows:
        if r["run_status"] == "running":
            r["run_status"] = "running" if running else "interrupted"
            if not running:
                r["run_message"] = "ended without finishing (killed or crashed); the next sync goes on from there"
    configured = set(obj.config.sources)
    data = {"store": str(store.path), "check": "ok", "counts": store.counts(), "sources": rows,
            "never_synced": sorted(configured - {r["name"] for r in rows})}
    if as_json:
        _json(data)
        return
    counts = data["counts"]
    click.echo(f"store {store.path}: {counts['customers']} customers, {counts['contacts']} contacts, "
               f"{counts['mails']} mails, {counts['appointments']} appointments, {counts['tasks']} tasks, "
               f"{counts['quarantine']} quarantined")
    tz = obj.zone
    for r in rows:
        state = r["run_status"] or r["last_status"] or "never run"
        if state == "running":
            state = f"running now (pid {running}) since {_local_time(r['run_started_at'], tz)}"
        elif state == "interrupted":
            state = f"interrupted (started {_local_time(r['run_started_at'], tz)})"
        else:
            state = f"{state} at {_local_time(r['last_run_at'], tz)}"
        click.echo(f"{r['name']} ({r['type']}): {state}, {r['items']} items, {r['quarantined']} quarantined")
        stats = r["last_stats"] or {}
        if r["run_status"] in ("running", "interrupted"):
            click.echo(f"  this run stored {stats.get('added', 0)} new and {stats.get('updated', 0)} updated items"
                       + (f"; {r['run_message']}" if r["run_message"] else ""))
        elif r["last_error"]:
            click.echo(f"  {r['last_error']}")
    for name in data["never_synced"]:
        click.echo(f"{name}: never synced")


def _local_time(value: str | None, tz: Any = None) -> str:
    """A stored timestamp as local time for staff (stored values are UTC); ``tz``: [company] timezone."""
    if not value:
        return "-"
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return value
    if parsed.tzinfo is None:
        return value
    return parsed.astimezone(tz).strftime("%Y-%m-%d %H:%M")


# -- sources ------------------------------------------------------------------
@main.group()
def sources() -> None:
    """Configured sources: reset where a sync stands, sign a user in."""


@sources.command("reset")
@click.argument("name")
@click.option("--folder", metavar="FOLDER", help="Only this folder (scope) of the source.")
@click.pass_obj
def sources_reset(obj: Context, name: str, folder: str | None) -> None:
    """Read a source (or one folder of it) as new at the next sync.

    For a folder quarantined because its server kept renumbering it
    (UIDVALIDITY), once the server is stable again, e.g. after a migration.
    Nothing stored is lost and nothing is doubled.

    \b
    Example:
        crm sources reset anna-imap --folder INBOX
    """
    from crm_bridge.sync.engine import Engine

    engine = Engine(obj.config, obj.store)
    try:
        engine.reset(name, folder)
    finally:
        engine.close()
    what = f"folder {folder!r} of {name}" if folder else name
    click.echo(f"{what}: the next sync reads it as new (nothing stored is lost or doubled)")


@sources.command("login")
@click.argument("name")
@click.pass_obj
def sources_login(obj: Context, name: str) -> None:
    """Sign a user in for a source (Microsoft 365 with auth = "device_code").

    Prints a web address and a code; the mailbox's user opens the address on
    any device, enters the code and signs in, and this command waits until
    then (up to 15 minutes).  The sign-in is kept in the source's
    token_cache (readable only by its owner) and renewed by each sync.
    """
    from crm_bridge.connectors.base import ConfigError, make_connector

    if name not in obj.config.sources:
        raise ConfigError(f"no source named {name!r} in {obj.config.path}")
    connector = make_connector(name, obj.config.sources[name])
    login = getattr(connector, "login", None)
    if login is None:
        raise ConfigError(f"source {name!r} ({connector.type}) has no sign-in of a user")
    try:
        who = login(lambda text: click.echo(text))
    finally:
        connector.close()
    click.echo(f"{name}: signed in as {who}; crm sync renews the sign-in by itself from now on")


# -- customers ---------------------------------------------------------------
@main.group()
def customers() -> None:
    """Customers (organisations): add, list, show, rename, merge, remove."""


@customers.command("add")
@click.argument("name")
@click.option("--domain", "domains", multiple=True, metavar="DOMAIN", help="A mail domain of the customer (repeatable).")
@click.option("--owner", "account_owner", metavar="WHO", help="The account owner (shown in pushed address-book cards).")
@click.pass_obj
def customers_add(obj: Context, name: str, domains: tuple[str, ...], account_owner: str | None) -> None:
    """Create a customer or give it more domains; past mail is linked at once.

    \b
    Example:
        crm customers add "Stadtwerke Lindenau" --domain stadtwerke-lindenau.de --owner "Anna Weber"
    """
    store = obj.store
    before = store.counts()["links"]
    cid = store.add_customer(name, domains, account_owner=account_owner)
    click.echo(f"customer {cid}: {name}; {store.counts()['links'] - before} new links")


@customers.command("list")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def customers_list(obj: Context, as_json: bool) -> None:
    """Every customer with domains, contacts, interactions, open tasks."""
    rows = obj.store.customers()
    if as_json:
        _json(rows)
        return
    if not rows:
        click.echo("no customers yet: add one with `crm customers add NAME --domain DOMAIN` or under [[customers]] in the config")
    for c in rows:
        click.echo(f"{c['id']:>4}  {c['name']:<32} {c['domains'] or '-':<34} {c['contacts']:>3} contacts "
                   f"{c['interactions']:>4} interactions  last {str(c['last_contact'] or '-')[:10]}  {c['open_tasks']} open tasks")


@customers.command("show")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def customers_show(obj: Context, name: str, as_json: bool) -> None:
    """One customer (name, its start, or id) with its contacts."""
    from crm_bridge.crm_core.directory import find_customer

    info = obj.store.customer(str(find_customer(obj.store, name)))
    if as_json:
        _json(info)
        return
    click.echo(f"{info['name']} (id {info['id']}, from {info['origin']})")
    click.echo(f"  domains: {info['domains'] or '-'}")
    if info["account_owner"]:
        click.echo(f"  account owner: {info['account_owner']}")
    click.echo(f"  {info['interactions']} interactions, last contact {info['last_contact'] or '-'}, {info['open_tasks']} open tasks")
    for k in info["contacts_list"]:
        click.echo(f"  - {k['name']} <{k['emails'] or ''}>{'  ' + k['title'] if k['title'] else ''}")


# -- link / unlink ---------------------------------------------------------------
def _target(store, customer: str | None, contact: str | None) -> tuple[str, int]:
    if bool(customer) == bool(contact):
        raise click.UsageError("name exactly one of --customer or --contact")
    from crm_bridge.crm_core.directory import find_contact, find_customer

    if customer:
        return "customer", find_customer(store, customer)
    return "contact", find_contact(store, contact or "")


def _link_command(action: str, help_text: str):
    @click.argument("interaction")
    @click.option("--customer", help="Customer name (or its start) or id.")
    @click.option("--contact", help="Contact e-mail or id.")
    @click.pass_obj
    def command(obj: Context, interaction: str, customer: str | None, contact: str | None) -> None:
        store = obj.store
        target, target_id = _target(store, customer, contact)
        store.set_link(store.interaction_id(interaction), target, target_id, action)
        click.echo(f"{action}ed")

    command.__doc__ = help_text
    return main.command(name=action)(command)


link = _link_command("link", "Link an interaction (id from the timeline, or Message-ID) by hand; survives re-syncs.")
unlink = _link_command("unlink", "Remove a link by hand; no rule brings it back.")


# -- timeline / search / explain -----------------------------------------------------
@main.command()
@click.argument("customer")
@click.option("--limit", default=50, show_default=True, help="At most this many entries (0: all).")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def timeline(obj: Context, customer: str, limit: int, as_json: bool) -> None:
    """A customer's mails, appointments and notes, newest first.

    Each line starts with the id that link, unlink and explain take.

    \b
    Example:
        crm timeline "Stadtwerke Lindenau" --limit 20
    """
    from crm_bridge.crm_core.directory import find_customer

    items = obj.store.timeline(str(find_customer(obj.store, customer)), limit=limit)
    tz = obj.zone
    if as_json:
        _json(items)
        return
    if not items:
        click.echo(f"nothing on {customer}'s timeline yet")
    for it in items:
        when = _item_time(it, tz)
        if it["kind"] == "mail":
            if it["direction"] == "out":
                head = f"{when}  mail -> {it['recipients'] or ''}"
            else:
                head = f"{when}  mail <- {it['sender'] or ''}"
        elif it["kind"] == "note":
            head = f"{when}  note"
        else:
            head = f"{when}  appointment{' (cancelled)' if it['status'] == 'CANCELLED' else ''}"
        gone = "  [deleted on the server]" if it["deleted"] else ""
        click.echo(f"{it['id']:>6}  {head}: {it['subject'] or '(subject not stored)'}{gone}")
        if it.get("snippet") and it["snippet"] != it["subject"]:
            click.echo(f"{'':>6}        {it['snippet'][:100]}")


def _item_time(item: dict[str, Any], tz: Any = None) -> str:
    """When, for staff, in the office's zone: an appointment's start (an all-day one: its day), else its date."""
    start = item.get("start") or ""
    return _local_time(start if item["kind"] == "appointment" and start else item.get("date"), tz)[:16]


@main.command()
@click.argument("text")
@click.option("--limit", default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def search(obj: Context, text: str, limit: int, as_json: bool) -> None:
    """Full-text search over subjects and snippets."""
    rows = obj.store.search(text, limit)
    if as_json:
        _json(rows)
        return
    for r in rows:
        click.echo(f"{r['id']:>6}  {_local_time(r['date'], obj.zone)[:10]}  {r['customers'] or '-':<28} {r['subject'] or ''}")
    if not rows:
        click.echo("no match")


@main.command()
@click.argument("message_id")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def explain(obj: Context, message_id: str, as_json: bool) -> None:
    """Why an interaction (id from the timeline), a mail (Message-ID) or an
    appointment (UID) is linked, or why it was not logged."""
    rows = obj.store.explain(message_id)
    if as_json:
        _json(rows)
        return
    if not rows:
        click.echo(f"{message_id}: never seen by any source")
        return
    for r in rows:
        places = ", ".join(f"{p['source']}:{p['scope']}" + (" (gone)" if p.get("gone") else "") for p in r["seen_in"])
        if not r["logged"]:
            click.echo(f"not logged: {r['reason']} (seen in {places})")
            continue
        click.echo(f"interaction {r['interaction']} ({r['kind']}): {r['subject'] or '(subject not stored)'}; seen in {places}")
        if not r["links"]:
            click.echo("  linked to nothing: no customer domain, contact address or thread matched")
        for l in r["links"]:
            click.echo(f"  {l['target']} {l['name']} (id {l['id']}): by {l['reason']}")
        for u in r["manually_unlinked"]:
            click.echo(f"  {u['target']} {u['id']}: unlinked by hand")
        for w in r.get("warnings", ()):
            click.echo(f"  warning: {w}")


# -- tasks ---------------------------------------------------------------------------
@main.group()
def tasks() -> None:
    """Follow-up tasks: list, add, done."""


@tasks.command("list")
@click.option("--all", "show_all", is_flag=True, help="Include done and cancelled tasks.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def tasks_list(obj: Context, show_all: bool, as_json: bool) -> None:
    """Open tasks (all with --all)."""
    rows = obj.store.tasks(None if show_all else "open")
    if as_json:
        _json(rows)
        return
    for t in rows:
        due = _local_time(t["due"], obj.zone)[:10]  # a due time a calendar set: its day in the office's zone
        click.echo(f"{t['id']:>4}  [{t['status']:<9}] due {due}  {t['customer'] or '-':<26} {t['title']}")
    if not rows:
        click.echo("no open tasks")


def _parse_due(value: str | None, obj: Context) -> date | None:
    """``YYYY-MM-DD``, or ``+N`` days from today, the office's today ([company] timezone)."""
    if not value:
        return None
    value = value.strip().lower()
    if value.startswith("+") and value[1:].rstrip("d").isdigit():
        today = datetime.now(obj.zone).date()  # zone None: the system's
        return today + timedelta(days=int(value[1:].rstrip("d")))
    try:
        return datetime.strptime(value, "%Y-%m-%d").date()
    except ValueError:
        raise click.BadParameter("use YYYY-MM-DD or +N (days from today)", param_hint="--due") from None


@tasks.command("add")
@click.argument("title")
@click.option("--customer", help="Customer name (or its start) or id.")
@click.option("--due", help="YYYY-MM-DD or +N days.")
@click.option("--about", "interaction", help="Interaction id or Message-ID it is about.")
@click.pass_obj
def tasks_add(obj: Context, title: str, customer: str | None, due: str | None, interaction: str | None) -> None:
    """Add a task by hand; the next sync puts it into the calendar.

    \b
    Example:
        crm tasks add "Send the revised quote" --customer "Hotel Seeblick" --due +3
    """
    from crm_bridge.crm_core.directory import find_customer

    store = obj.store
    cid = find_customer(store, customer) if customer else None
    iid = store.interaction_id(interaction) if interaction else None
    task_id = store.add_task(title, due=_parse_due(due, obj), customer_id=cid, interaction_id=iid)
    click.echo(f"task {task_id} added")


@tasks.command("edit")
@click.argument("task_id", type=int)
@click.option("--title", help="A new title.")
@click.option("--due", help="YYYY-MM-DD or +N days.")
@click.pass_obj
def tasks_edit(obj: Context, task_id: int, title: str | None, due: str | None) -> None:
    """Change a task's title or due date; the next sync changes it in the calendar too.

    \b
    Example:
        crm tasks edit 12 --due +7
    """
    changes: dict[str, Any] = {}
    if title is not None:
        changes["title"] = title
    if due is not None:
        changes["due"] = _parse_due(due, obj)
    if not changes:
        raise click.UsageError("give --title and/or --due")
    obj.store.update_task(task_id, **changes)
    click.echo(f"task {task_id} changed")


@tasks.command("done")
@click.argument("task_id", type=int)
@click.pass_obj
def tasks_done(obj: Context, task_id: int) -> None:
    """Mark a task done; the next sync marks it done in the calendar too."""
    obj.store.update_task(task_id, status="done")
    click.echo(f"task {task_id} done")


# -- quarantine / export ----------------------------------------------------------------
@main.group()
def quarantine() -> None:
    """Items that could not be read, with the reason."""


@quarantine.command("list")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def quarantine_list(obj: Context, as_json: bool) -> None:
    """Every quarantined item: source, place, reason."""
    rows = obj.store.quarantine()
    if as_json:
        _json(rows)
        return
    for q in rows:
        click.echo(f"{q['source']}:{q['scope']}/{q['local_id']}: {q['reason']} (seen {q['count']}x, last {q['last_seen'][:16]})")
    if not rows:
        click.echo("quarantine is empty")


@main.command()
@click.option("--format", "fmt", type=click.Choice(["json", "csv"]), default="json", show_default=True)
@click.option("--table", default="interactions", show_default=True,
              help="With csv: which table (customers, contacts, interactions, links, tasks, ...).")
@click.option("--output", "-o", type=click.Path(dir_okay=False, writable=True), help="File to write (default: stdout).")
@click.pass_obj
def export(obj: Context, fmt: str, table: str, output: str | None) -> None:
    """Export the store as JSON (everything) or CSV (one table)."""
    data = obj.store.export()
    if fmt == "json":
        text = json.dumps(data, indent=2, ensure_ascii=False, default=str)
    else:
        if table not in data:
            raise click.BadParameter(f"choose one of {', '.join(data)}", param_hint="--table")
        rows = data[table]
        buf = io.StringIO()
        if rows:
            writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        text = buf.getvalue()
    if output:
        Path(output).write_text(text, encoding="utf-8")
    else:
        click.echo(text, nl=False)


from crm_bridge.cli_directory import register  # noqa: E402  (commands that need main and customers)

register(main, customers)

from crm_bridge.cli_web import register as register_web  # noqa: E402  (crm serve, crm users)

register_web(main)


def run() -> None:
    """The ``crm`` command: :func:`main`, then leave without tearing the interpreter down.

    Freeing every module and object at exit costs a command about 15-20 ms
    (10 % of a no-change ``crm sync``) and nothing needs it: the stores are
    closed here, the standard streams flushed and the ``atexit`` functions
    (logging's flush, ``weakref.finalize``) run, as at a normal exit.  While
    another thread still runs, the exit is the normal one, which waits for it.
    """
    import os
    import threading

    try:
        main(prog_name="crm")
        code: Any = 0
    except SystemExit as exc:
        code = exc.code
    if threading.active_count() > 1 or not hasattr(os, "_exit"):
        sys.exit(code)
    if code is None:
        code = 0
    elif not isinstance(code, int):  # what sys.exit does with a message
        print(code, file=sys.stderr)
        code = 1
    import atexit

    try:
        for store in _OPEN_STORES:
            store.close()
        atexit._run_exitfuncs()
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
    except BrokenPipeError:  # the reader of our output is gone
        pass
    except BaseException:
        sys.exit(code)  # let the normal exit report it
    os._exit(code)


if __name__ == "__main__":
    run()
