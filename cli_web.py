"""``crm serve`` (the browser front end) and ``crm users`` (who may log in)."""

from __future__ import annotations

import sys
from typing import Any

import click


def register(main: click.Group) -> None:
    main.add_command(serve)
    main.add_command(users)


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on (keep 127.0.0.1 and put a TLS proxy in front).")
@click.option("--port", default=8080, show_default=True, type=click.IntRange(1, 65535))
@click.pass_obj
def serve(obj: Any, host: str, port: int) -> None:
    """Serve the CRM in the browser: customers, timelines, notes, tasks, search.

    \b
    Example:
        crm --config config.example.toml serve    # then open the printed URL
    """
    from crm_bridge.web.app import create_app, ensure_demo_login, serve as run

    config = obj.config
    obj.store.close()  # brings the store up to date and loads the config's customers
    app = create_app(config.store_path, config.web, config.linking)
    shown = "localhost" if host in ("127.0.0.1", "::1") else host
    click.echo(f"crm-bridge: open http://{shown}:{port}/ (Ctrl-C stops)")
    if config.web.demo_login:
        login = ensure_demo_login(config.store_path, config.linking)
        if login:
            click.echo(f"demo login (made now, for the demo only): name {login[0]}, password {login[1]}")
    run(app, host, port)


@click.group()
def users() -> None:
    """Who may log in to `crm serve`: add, list, password, token, remove."""


def _password(prompt: bool) -> str:
    if sys.stdin.isatty() and prompt:
        return click.prompt("Password", hide_input=True, confirmation_prompt=True)
    return sys.stdin.readline().rstrip("\r\n")  # scripts: the password on standard input


@users.command("add")
@click.argument("name")
@click.option("--admin", is_flag=True, help="May manage users and see sources (else: staff).")
@click.pass_obj
def users_add(obj: Any, name: str, admin: bool) -> None:
    """Add a user; the password is asked for (or read from standard input).

    \b
    Example:
        crm users add anna --admin
        printf '%s\\n' "$PW" | crm users add bob
    """
    from crm_bridge.crm_core.users import Users

    Users(obj.store).add(name, _password(True), "admin" if admin else "staff")
    click.echo(f"user {name} added ({'admin' if admin else 'staff'})")


@users.command("password")
@click.argument("name")
@click.pass_obj
def users_password(obj: Any, name: str) -> None:
    """Set a user's password (asked for, or read from standard input)."""
    from crm_bridge.crm_core.users import Users

    Users(obj.store).set_password(name, _password(True))
    click.echo(f"password of {name} changed")


@users.command("token")
@click.argument("name")
@click.pass_obj
def users_token(obj: Any, name: str) -> None:
    """Make a new API token for NAME (the old one stops working); shown once."""
    from crm_bridge.crm_core.users import Users

    click.echo(Users(obj.store).new_token(name))


@users.command("list")
@click.pass_obj
def users_list(obj: Any) -> None:
    """The users, their roles, and whether they have an API token."""
    from crm_bridge.crm_core.users import Users

    for u in Users(obj.store).list():
        click.echo(f"{u['name']:<24} {u['role']:<6}{'  (API token)' if u['has_token'] else ''}")


@users.command("remove")
@click.argument("name")
@click.pass_obj
def users_remove(obj: Any, name: str) -> None:
    """Remove a user: they can no longer log in, and their API token stops working."""
    from crm_bridge.crm_core.users import Users

    Users(obj.store).remove(name)
    click.echo(f"user {name} removed")
