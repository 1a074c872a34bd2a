"""An EWS emulator: Exchange Server's SOAP web services on loopback, for tests and trials.

exchangelib runs against it unmodified.  See :mod:`tests.ews_emulator.server`
for the HTTP side and fault switches, :mod:`.operations` for the operations,
:mod:`.model` for the mailbox store.  Standalone::

    python -m tests.ews_emulator --port 8443 --mailbox alice@example.com --mails 100 --events 10 --contacts 20
"""

from tests.ews_emulator.model import EwsError, Store, make_contact, make_event, make_message
from tests.ews_emulator.seed import populate, weekly_recurrence
from tests.ews_emulator.server import EwsEmulator

__all__ = ["EwsEmulator", "EwsError", "Store", "make_contact", "make_event", "make_message", "populate",
           "weekly_recurrence"]
