"""File sources under hostile input: FIFOs and devices where files belong,
and the cost of asking the store what it knows."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Mapping

from crm_bridge.connectors.files import EmlConnector
from crm_bridge.crm_core.store import Store
from crm_bridge.sync.engine import StoreView
from tests.conftest import Crm, Maildir, make_mail, write_config

REPO = Path(__file__).resolve().parents[1]
OWNER = ["anna@nordlicht.example"]
CUSTOMERS = (("Kunde GmbH", ["kunde.example"]),)


def test_fifos_and_devices_do_not_hang_a_sync(tmp_path):
    """A FIFO in a Maildir's cur/ and new/, an .eml, .ics and .vcf that are FIFOs, an mbox path that is
    a FIFO and a symlink to a device: the run finishes, says what it skipped, stores the rest and
    leaves the store unlocked for the next run."""
    md = Maildir(tmp_path / "mail")
    md.add(make_mail(sender="kim@kunde.example", message_id="good@x", subject="Gut"))
    os.mkfifo(md.root / "cur" / "1700000000.fifo.host:2,S")
    os.mkfifo(md.root / "new" / "1700000001.fifo.host")
    os.symlink("/dev/zero", md.root / "cur" / "1700000002.zero.host:2,S")
    eml = tmp_path / "eml"
    eml.mkdir()
    (eml / "a.eml").write_bytes(make_mail(sender="kim@kunde.example", message_id="eml@x", subject="Eml"))
    os.mkfifo(eml / "pipe.eml")
    os.mkfifo(tmp_path / "box.mbox")
    cal = tmp_path / "cal"
    cal.mkdir()
    os.mkfifo(cal / "pipe.ics")
    cards = tmp_path / "cards"
    cards.mkdir()
    os.mkfifo(cards / "pipe.vcf")
    config = write_config(tmp_path / "crm.toml", customers=CUSTOMERS, sources={
        "anna": {"type": "maildir", "path": str(md.root), "owner": OWNER},
        "files": {"type": "eml", "path": str(eml), "owner": OWNER},
        "box": {"type": "mbox", "path": str(tmp_path / "box.mbox"), "owner": OWNER},
        "cal": {"type": "ics", "path": str(cal)},
        "cards": {"type": "vcf", "path": str(cards)},
    })
    for _ in range(2):  # the second run must not wait for a lock the first one left behind either
        done = subprocess.run([sys.executable, "-m", "crm_bridge.cli", "--config", str(config), "sync", "--json"],
                              cwd=REPO, capture_output=True, text=True, timeout=120)
        assert done.returncode in (0, 1), done.stderr
    crm = Crm(config)
    assert sorted(i["subject"] for i in crm.json("timeline", "Kunde GmbH")) == ["Eml", "Gut"]
    reasons = {e["local_id"]: e["reason"] for e in crm.json("quarantine", "list")}
    assert "a FIFO" in reasons["1700000000.fifo.host"] and "a FIFO" in reasons["1700000001.fifo.host"]
    assert "a character device" in reasons["1700000002.zero.host"]
    assert "a FIFO" in reasons["pipe.eml"]
    first = subprocess.run([sys.executable, "-m", "crm_bridge.cli", "--config", str(config), "sync"],
                           cwd=REPO, capture_output=True, text=True, timeout=120)
    text = first.stdout + first.stderr
    assert "box.mbox" in text and "pipe.ics" in text and "pipe.vcf" in text and "a FIFO" in text, text


class CountingView(StoreView):
    """The engine's real view of the store, counting what a connector asks it."""

    def __init__(self, store: Store, source: str):
        super().__init__(store, source)
        self.calls: Counter[str] = Counter()

    def known(self, scope: str) -> Mapping[str, str]:
        self.calls[scope] += 1
        return super().known(scope)


def test_eml_asks_the_store_once_per_folder_not_once_per_file(tmp_path):
    folder = tmp_path / "eml"
    for sub in ("a", "b"):
        (folder / sub).mkdir(parents=True)
        for n in range(30):
            (folder / sub / f"{n}.eml").write_bytes(
                make_mail(sender="kim@kunde.example", message_id=f"{sub}{n}@x", subject=f"{sub}{n}"))
    config = write_config(tmp_path / "crm.toml", customers=CUSTOMERS,
                          sources={"files": {"type": "eml", "path": str(folder), "owner": OWNER}})
    crm = Crm(config)
    assert crm.json("sync")["results"][0]["added"] == 60
    view = CountingView(Store(tmp_path / "crm.db"), "files")
    batches = list(EmlConnector("files", {"type": "eml", "path": str(folder)}).pull({"files": 60}, view))
    assert sum(len(b.records) + len(b.failures) for b in batches) == 0  # nothing changed
    assert sum(len(b.removed) for b in batches) == 0
    assert view.calls == Counter({"a": 1, "b": 1})
