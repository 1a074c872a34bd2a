"""A Microsoft Graph v1.0 emulator: HTTPS on loopback, for tests and trials.

MSAL and the m365 connector run against it unmodified.  :mod:`.server` has
the HTTP side, the identity platform's token endpoint and OpenID metadata,
and the fault switches; :mod:`.routes` the Graph resources; :mod:`.model`
the mailboxes and their change log (delta); :mod:`.seed` data.  Standalone::

    python -m tests.graph_emulator --port 8443 --mailbox anna@firma.de --mails 100 --events 10 --contacts 20
"""

from tests.graph_emulator.model import GraphError, Mailbox, Store
from tests.graph_emulator.seed import make_contact, make_event, make_message, populate, recurring
from tests.graph_emulator.server import GraphEmulator

__all__ = ["GraphEmulator", "GraphError", "Mailbox", "Store", "make_contact", "make_event", "make_message",
           "populate", "recurring"]
