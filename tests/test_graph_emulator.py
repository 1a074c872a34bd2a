"""The Graph emulator answers in the shapes of Microsoft's Graph v1.0 reference samples.

/work/shared/reference/graph/graph-v1.0-samples.json (../shared/reference from the
repository) holds request/response pairs from the reference; for each endpoint the
connector uses, the emulator's answer must carry the same keys: the collection's
``@odata.*`` annotations and at least every property the sample's items show.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.graph_emulator import GraphEmulator, make_contact, populate

SAMPLES = Path(os.environ.get("CRM_GRAPH_SAMPLES", "/work/shared/reference/graph/graph-v1.0-samples.json"))
CLIENT = "c0ffee00-0000-0000-0000-000000000001"


def samples() -> dict[tuple[str, str], dict]:
    data = json.loads(SAMPLES.read_text())
    out = {}
    for s in data["samples"]:
        url = s["request"]["url"].split("graph.microsoft.com/v1.0/me/", 1)[1].split("?")[0]
        out.setdefault((s["request"]["method"], url), s["response"])
    return out


pytestmark = pytest.mark.skipif(not SAMPLES.is_file(), reason="the Graph reference samples are not on this machine")


@pytest.fixture(scope="module")
def emu():
    e = GraphEmulator()
    e.add_app(CLIENT, "s")
    mb = e.store.add_mailbox("anna@firma.de")
    populate(mb, mails=3, events=2, contacts=2)
    mb.add_folder("Projekte")
    lst = next(iter(mb.lists.values()))
    e.store.put(lst, {"title": "Anrufen", "status": "notStarted", "importance": "normal", "isReminderOn": False,
                      "categories": [], "body": {"content": "", "contentType": "text"},
                      "_linked": [{"@odata.type": "#microsoft.graph.linkedResource", "id": "lr1",
                                   "webUrl": "https://crm.example/t/1", "applicationName": "crm-bridge",
                                   "displayName": "CRM task", "externalId": "task-1"}]})
    with e:
        yield e


def get(emu, path: str, method: str = "GET", body: dict | None = None):
    import niquests

    token = emu.token({"grant_type": "client_credentials", "client_id": CLIENT, "client_secret": "s",
                       "scope": "https://graph.microsoft.com/.default"})[1]["access_token"]
    url = path if path.startswith("https://") else f"{emu.graph_url}/users/anna@firma.de/{path}"
    resp = niquests.request(method, url, json=body, verify=str(emu.ca_file),
                            headers={"Authorization": f"Bearer {token}", "Prefer": "odata.maxpagesize=1"})
    return resp.status_code, resp.json() if resp.content else None


def item_keys(body) -> set[str]:
    if isinstance(body, dict) and isinstance(body.get("value"), list):
        return set().union(*[set(i) for i in body["value"] if "@removed" not in i]) if body["value"] else set()
    return set(body or {})


def annotations(body) -> set[str]:
    return {k for k in body if k.startswith("@odata.") and k != "@odata.context"} if isinstance(body, dict) else set()


CASES = [  # (sample method, sample path, emulator request)
    ("GET", "mailFolders", "mailFolders"),
    ("GET", "mailFolders/*/childFolders", "mailFolders/inbox/childFolders"),
    ("GET", "mailFolders/*/messages/delta", "mailFolders/inbox/messages/delta"),
    ("GET", "calendarView/delta", "calendarView/delta?startDateTime=2020-01-01T00:00:00Z&endDateTime=2030-01-01T00:00:00Z"),
    ("GET", "contactFolders/*/contacts/delta", "contacts/delta"),
    ("GET", "todo/lists", "todo/lists"),
]


@pytest.mark.parametrize("method,sample_path,path", CASES)
def test_collections_have_the_reference_keys(emu, method, sample_path, path):
    ref = samples()[(method, sample_path)]
    status, body = get(emu, path)
    assert status == ref["statusCode"]
    missing = item_keys(ref["body"]) - item_keys(body)
    assert not missing, f"{path}: the emulator's items lack {sorted(missing)}"
    # a first delta page with more to come carries a nextLink, as the sample does; both link kinds use $skiptoken/$deltatoken
    assert annotations(ref["body"]) <= annotations(body) | {"@odata.deltaLink"}
    for key in ("@odata.nextLink", "@odata.deltaLink"):
        if key in body and "delta" in path:
            assert ("$skiptoken=" if key == "@odata.nextLink" else "$deltatoken=") in body[key]


def test_tasks_and_linked_resources_have_the_reference_keys(emu):
    table = samples()
    lists = get(emu, "todo/lists")[1]["value"]
    list_id = lists[0]["id"]
    status, tasks = get(emu, f"todo/lists/{list_id}/tasks?$expand=linkedResources")
    ref = table[("GET", "todo/lists/*/tasks")]["body"]
    assert status == 200 and item_keys(ref) <= item_keys(tasks)
    task = tasks["value"][0]
    status, linked = get(emu, f"todo/lists/{list_id}/tasks/{task['id']}/linkedResources")
    assert item_keys(table[("GET", "todo/lists/*/tasks/*/linkedResources")]["body"]) <= item_keys(linked)
    status, created = get(emu, f"todo/lists/{list_id}/tasks", "POST", {
        "title": "Neu", "linkedResources": [{"webUrl": "https://crm.example/t/2", "applicationName": "crm-bridge",
                                             "displayName": "CRM task", "externalId": "task-2"}]})
    ref_created = table[("POST", "todo/lists/*/tasks")]
    assert status == ref_created["statusCode"] and set(ref_created["body"]) <= set(created)
    status, delta = get(emu, f"todo/lists/{list_id}/tasks/delta")
    assert item_keys(table[("GET", "todo/lists/*/tasks/delta")]["body"]) - {"linkedResources"} <= item_keys(delta)


def test_errors_have_the_graph_error_shape(emu):
    status, body = get(emu, f"{emu.graph_url}/users/nobody@firma.de/mailFolders")
    assert status == 404 and set(body) == {"error"} and {"code", "message"} <= set(body["error"])


def test_msal_discovers_the_authority_and_gets_a_token(emu):
    import msal
    import niquests

    class Session(niquests.Session):
        def request(self, *a, **kw):
            if kw.get("verify") in (None, True):
                kw["verify"] = str(emu.ca_file)
            return super().request(*a, **kw)

    with Session() as good_http, Session() as bad_http:  # (closed: no pool thread left behind)
        app = msal.ConfidentialClientApplication(CLIENT, client_credential="s", authority=emu.authority,
                                                 instance_discovery=False, http_client=good_http)
        result = app.acquire_token_for_client(scopes=["https://graph.microsoft.com/.default"])
        assert result.get("token_type") == "Bearer" and result["access_token"] in emu.tokens
        bad = msal.ConfidentialClientApplication(CLIENT, client_credential="nope", authority=emu.authority,
                                                 instance_discovery=False, http_client=bad_http)
        assert bad.acquire_token_for_client(scopes=["https://graph.microsoft.com/.default"])["error"] == "invalid_client"


def test_delta_pages_freeze_and_removed_entries_follow(emu):
    mb = emu.store.mailbox("anna@firma.de")
    status, first = get(emu, "contacts/delta")
    seen = [i["id"] for i in first["value"]]
    page = first
    emu.store.put(mb.contacts, make_contact("Mitten Drin", "mitten@kunde.example"))  # while paging: next round
    while "@odata.nextLink" in page:
        page = get(emu, page["@odata.nextLink"])[1]
        seen += [i["id"] for i in page["value"]]
    assert len(seen) == len(set(seen)) == 2
    gone = seen[0]
    emu.store.delete(gone, mb)
    _s, nxt = get(emu, page["@odata.deltaLink"])
    entries = nxt["value"]
    while "@odata.nextLink" in nxt:
        nxt = get(emu, nxt["@odata.nextLink"])[1]
        entries += nxt["value"]
    assert {"id": gone, "@removed": {"reason": "deleted"}} in entries
    assert any(e.get("displayName") == "Mitten Drin" for e in entries)
    emu.store.invalidate_tokens()
    status, body = get(emu, nxt["@odata.deltaLink"])
    assert status == 410 and body["error"]["code"] == "SyncStateNotFound"


def test_runs_standalone(tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "tests.graph_emulator", "--port", "0", "--mailbox",
                             "anna@firma.de", "--mails", "3", "--events", "1", "--contacts", "1"],
                            stdout=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parent.parent)
    try:
        lines = [proc.stdout.readline() for _ in range(4)]
        assert lines[0].startswith("Authority:") and lines[1].startswith("Graph:")
    finally:
        proc.terminate()
        proc.wait(10)
