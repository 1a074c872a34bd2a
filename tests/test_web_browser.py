"""A real browser (Debian's chromium, driven by Playwright's Python API) through `crm serve`.

tests/run.sh installs chromium when /usr/bin/chromium is missing; this test
never skips (a missing browser fails it).  Playwright's own browser download
is never used: the executable is Debian's.
"""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect, sync_playwright

from tests.conftest import Crm
from tests.web_fixtures import PASSWORD, demo_store, free_port, start_server

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--no-first-run"]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    config = demo_store(tmp_path_factory.mktemp("browser"))
    (config.parent / "examples/mail/new/1762000000.newsletter.eml").write_text(  # someone to block
        "From: Werbung <werbung@reklame-gmbh.example>\nTo: anna.weber@nordlicht-haustechnik.de\n"
        "Subject: Sonderangebot\nDate: Sun, 01 Nov 2026 11:00:00 +0100\nMessage-ID: <reklame-1@example>\n\nKaufen!\n")
    Crm(config)("sync")
    port = free_port()
    proc = start_server(config, port)
    yield f"http://127.0.0.1:{port}"
    proc.terminate()
    proc.wait(10)


def test_a_day_in_the_office(server):
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        page = browser.new_page(locale="de-DE")
        alerts: list[str] = []
        confirms: list[str] = []

        def dialog(d) -> None:  # our own confirmation is accepted; anything else (a script from mail) fails the test
            if d.type == "confirm" and d.message.startswith("Absender sperren?"):
                confirms.append(d.message)
                d.accept()
            else:
                alerts.append(d.message)
                d.dismiss()

        page.on("dialog", dialog)

        # log in (German: the demo office's language)
        page.goto(server + "/customers")
        expect(page).to_have_url(re.compile(r"/login"))
        page.fill("input[name=name]", "bob")
        page.fill("input[name=password]", PASSWORD)
        page.click("#login")
        expect(page.locator("h1")).to_have_text("Kunden")

        # find a customer and open the timeline
        page.fill("#customer-filter", "seeblick")
        page.press("#customer-filter", "Enter")
        page.click("text=Hotel Seeblick Plön GmbH")
        expect(page.locator("#customer-name")).to_have_text("Hotel Seeblick Plön GmbH")
        assert page.locator("#timeline li.item").count() > 5
        assert page.locator("svg.chart rect").count() > 0

        # write a note: it is on the timeline
        page.fill("#note-text", "Telefonat mit Frau Lindqvist: <b>Angebot</b> bis Freitag")
        page.click("#note-save")
        expect(page.locator("#timeline li.note").first).to_contain_text("<b>Angebot</b> bis Freitag")

        # open a contact from the customer page, write a note on them: it is on their timeline, and back
        page.click("text=Katrin Vogel")
        expect(page.locator("#contact-name")).to_have_text("Katrin Vogel")
        page.fill("#note-text", "Besuch bei Frau Vogel: <i>Heizraum</i> besichtigt")
        page.click("#note-save")
        expect(page.locator("#timeline li.note").first).to_contain_text("<i>Heizraum</i> besichtigt")
        page.click("#contact-customer")
        expect(page.locator("#customer-name")).to_have_text("Hotel Seeblick Plön GmbH")
        expect(page.locator("#timeline li.note").first).to_contain_text("<i>Heizraum</i> besichtigt")

        # create a task for the customer, then complete it from "my tasks"
        page.fill("#task-title", "Angebot Wellnessbereich schicken")
        page.fill("#task-due", "2026-12-01")
        page.click("#task-save")
        page.click("nav >> text=Aufgaben")
        row = page.locator("#task-list tr", has_text="Angebot Wellnessbereich schicken")
        expect(row).to_have_count(1)
        row.locator(".done-button").click()
        expect(page.locator("#task-list tr", has_text="Angebot Wellnessbereich schicken")).to_have_count(0)

        # search finds the hostile mail, shown as text
        page.fill("header input[name=q]", "Pumpe")
        page.press("header input[name=q]", "Enter")
        expect(page.locator("main")).to_contain_text("<script>alert(1)</script> Angebot Pumpe")

        # link that mail by hand to a second customer: it shows on that customer's timeline
        result = page.locator("ol.timeline li", has_text="Angebot Pumpe")
        result.locator("input[name=customer]").fill("Hotel Seeblick Plön GmbH")
        result.locator("button").click()
        expect(page.locator(".flash")).to_have_text("Zugeordnet.")
        expect(page.locator("ol.timeline li", has_text="Angebot Pumpe")).to_contain_text("Hotel Seeblick Plön GmbH")
        page.click("ol.timeline li >> text=Hotel Seeblick Plön GmbH")
        expect(page.locator("#timeline")).to_contain_text("<script>alert(1)</script> Angebot Pumpe")

        # resolve a review-queue entry: an unknown sender becomes a contact of a customer
        page.click("nav >> text=Prüfen")
        entry = page.locator("#review-list tr", has_text="m.jansen@jansen-planung.example")
        expect(entry).to_have_count(1)
        entry.locator("input[name=customer]").fill("Hotel Seeblick")
        entry.locator("text=Als Kontakt").click()
        expect(page.locator(".flash")).to_contain_text("Als Kontakt angelegt")
        expect(page.locator("#review-list tr", has_text="m.jansen@jansen-planung.example")).to_have_count(0)

        # block a sender from the review queue: confirmed, the row goes without a reload, and it stays gone
        entry = page.locator("#review-list tr", has_text="werbung@reklame-gmbh.example")
        expect(entry).to_have_count(1)
        page.evaluate("window.__same_page = true")
        entry.locator(".block-button").click()
        expect(page.locator(".flash")).to_contain_text("werbung@reklame-gmbh.example gesperrt: 1 gespeicherte Mails")
        expect(page.locator("#review-list tr", has_text="werbung@reklame-gmbh.example")).to_have_count(0)
        assert page.evaluate("window.__same_page === true") and len(confirms) == 1  # no reload
        page.reload()
        expect(page.locator("#review-list")).not_to_contain_text("werbung@reklame-gmbh.example")

        # switch the language
        page.click("#lang-switch")
        expect(page.locator("nav")).to_contain_text("Customers")
        page.click("nav >> text=Customers")
        expect(page.locator("h1")).to_have_text("Customers")

        # log out: the pages want a login again
        page.click("#logout")
        expect(page).to_have_url(re.compile(r"/login"))
        page.goto(server + "/tasks")
        expect(page).to_have_url(re.compile(r"/login"))
        assert alerts == []  # no script from a mail ever ran
        browser.close()
