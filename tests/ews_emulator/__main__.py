"""``python -m tests.ews_emulator``: run the emulator until Ctrl-C."""

from __future__ import annotations

import argparse
import signal
import sys

from tests.ews_emulator import EwsEmulator, populate


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.ews_emulator", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1", help="loopback address to listen on")
    parser.add_argument("--port", type=int, default=0, help="port (0: any free one)")
    parser.add_argument("--mailbox", action="append", default=[], help="a mailbox address (repeatable)")
    parser.add_argument("--user", default="svc-crm", help="service account allowed to impersonate every mailbox")
    parser.add_argument("--password", default="secret", help="password of every account")
    parser.add_argument("--token", help="also accept this OAuth access token (Authorization: Bearer) for --user")
    parser.add_argument("--mails", type=int, default=20)
    parser.add_argument("--events", type=int, default=5)
    parser.add_argument("--contacts", type=int, default=5)
    args = parser.parse_args(argv)
    if not args.host.startswith("127.") and args.host not in ("localhost", "::1"):
        parser.error("the emulator listens on loopback only")
    emulator = EwsEmulator(args.host, args.port)
    emulator.store.add_user(args.user, args.password, impersonation=True)
    for address in args.mailbox or ["alice@example.com"]:
        emulator.store.add_user(address.split("@")[0], args.password, mailbox=address)
        populate(emulator.store, address, args.mails, args.events, args.contacts)
    if args.token:
        emulator.accept_token(args.token, args.user)
    emulator.start()
    print(f"EWS:          {emulator.url}", flush=True)
    print(f"Autodiscover: {emulator.autodiscover_url}", flush=True)
    print(f"Accounts:     {args.user} (impersonation), "
          + ", ".join(a.split('@')[0] for a in args.mailbox or ['alice@example.com'])
          + f"; password {args.password!r}", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        signal.pause()
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        emulator.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
