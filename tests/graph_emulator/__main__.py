"""``python -m tests.graph_emulator``: run the emulator until Ctrl-C."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time

from tests.graph_emulator import GraphEmulator, populate


def _approver(emulator: GraphEmulator, user: str) -> None:
    while True:
        polled = {f["device_code"] for f in emulator.device_flows} if "urn:ietf:params:oauth:grant-type:device_code" \
            in emulator.grants else set()
        for flow in list(emulator.device_flows):
            if flow["state"] == "pending" and flow["device_code"] in polled:
                emulator.approve(user, flow["user_code"])
        time.sleep(0.2)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.graph_emulator", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1", help="loopback address to listen on")
    parser.add_argument("--port", type=int, default=0, help="port (0: any free one)")
    parser.add_argument("--mailbox", action="append", default=[], help="a mailbox address (repeatable)")
    parser.add_argument("--client-id", default="00000000-0000-0000-0000-0000000c7e57")
    parser.add_argument("--client-secret", default="secret")
    parser.add_argument("--public-client", metavar="ID", help="an app that allows public client flows (device code)")
    parser.add_argument("--approve-as", metavar="ADDRESS", help="sign in as this user to every device code "
                        "once it has been polled (plays the user of `crm sources login`)")
    parser.add_argument("--mails", type=int, default=20)
    parser.add_argument("--events", type=int, default=5)
    parser.add_argument("--contacts", type=int, default=5)
    args = parser.parse_args(argv)
    if not args.host.startswith("127.") and args.host not in ("localhost", "::1"):
        parser.error("the emulator listens on loopback only")
    emulator = GraphEmulator(args.host, args.port)
    emulator.add_app(args.client_id, args.client_secret)
    for address in args.mailbox or ["alice@example.com"]:
        populate(emulator.store.add_mailbox(address), args.mails, args.events, args.contacts)
    if args.public_client:
        emulator.add_public_app(args.public_client)
    if args.approve_as:
        threading.Thread(target=_approver, args=(emulator, args.approve_as), daemon=True).start()
    emulator.start()
    print(f"Authority:  {emulator.authority}", flush=True)
    print(f"Graph:      {emulator.graph_url}", flush=True)
    print(f"CA file:    {emulator.ca_file}", flush=True)
    print(f"Client:     {args.client_id} (secret {args.client_secret!r})", flush=True)
    if args.public_client:
        print(f"Public:     {args.public_client} (device code sign-in"
              + (f", approved as {args.approve_as})" if args.approve_as else ")"), flush=True)
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
