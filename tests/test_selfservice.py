"""Consent self-service through the app (TestClient) on each backend (a real SQLite file, a real PostgreSQL
database): manage, confirm, record, keep the file."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from service_client import V1, V2, mail_settings, service_client
from starlette.testclient import TestClient

from form_handler.ledger import open_ledger
from form_handler.settings import Settings

FORM = {"message": "Hello there", "policy_id": "privacy", "policy_version": V1, "page": "/feedback/"}


@pytest.fixture
def settings(tmp_path: Path, ledger_location: str) -> Settings:
    # No mail is sent in these tests. The ledger: a SQLite file, or a database on the test PostgreSQL server.
    where = {"ledger_url": ledger_location} if ledger_location.startswith("postgresql://") else {"ledger_path": Path(ledger_location)}
    return mail_settings(tmp_path, 9, site_dir=tmp_path / "no-site", **where)


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with service_client(settings) as c:
        yield c


def send(client: TestClient, **fields: Any) -> dict[str, Any]:
    r = client.post("/api/feedback", json={**FORM, **fields})
    assert r.status_code == 201, r.text
    body: dict[str, Any] = r.json()
    return body


def manage(client: TestClient, receipt: dict[str, Any], **fields: str) -> Any:
    return client.post("/api/manage", data={"receipt_id": receipt["receipt_id"],
                                            "withdraw_token": receipt["withdraw_token"], **fields})


def export(settings: Settings) -> list[dict[str, Any]]:
    with closing(open_ledger(settings.ledger)) as led:
        return list(led.export())


def count(settings: Settings) -> int:
    with closing(open_ledger(settings.ledger)) as led:
        return led.head().count


def test_manage_form_posts_receipt_and_token_in_the_body(client: TestClient) -> None:
    r = client.get("/api/manage")
    assert r.status_code == 200
    form = re.search(r"<form[^>]*data-manage-form[^>]*>", r.text)
    assert form and 'method="post"' in form.group(0) and 'action="/api/manage"' in form.group(0)
    assert 'name="withdraw_token"' in r.text and "data-access-request-form" in r.text


def test_manage_shows_the_receipt_as_recorded(client: TestClient) -> None:
    receipt = send(client, email="ann@example.org", consent_contact=True)
    r = manage(client, receipt)
    assert r.status_code == 200, r.text
    assert receipt["receipt_id"] in r.text and receipt["recorded_at"] in r.text and V1 in r.text
    # The exact version consented to (an earlier one here), by its own URL, and the policy's title.
    assert 'href="https://policies.example/privacy/versions/2026-01-01/">Privacy Policy</a>' in r.text
    assert "ann@example.org" in r.text and "Hello there" in r.text
    assert "data-receipt-download" in r.text and receipt["withdraw_token"] not in str(r.url)


def test_manage_wrong_token_says_so_and_stores_nothing(client: TestClient, settings: Settings) -> None:
    receipt = send(client)
    before = count(settings)
    r = manage(client, {**receipt, "withdraw_token": "x" * 43}, action="withdraw", confirm="yes")
    assert r.status_code == 403
    assert "This withdraw token does not belong to that receipt; copy it from your receipt." in r.text
    assert "data-manage-form" in r.text and count(settings) == before


def test_manage_unknown_receipt_is_404(client: TestClient) -> None:
    r = manage(client, {"receipt_id": "0" * 32, "withdraw_token": "t"})
    assert r.status_code == 404
    assert "No receipt with this id is in our records" in r.text


def test_manage_guessing_is_refused_with_retry_after(client: TestClient) -> None:
    receipt = send(client)
    for _ in range(10):
        assert manage(client, {**receipt, "withdraw_token": "guess"}).status_code == 403
    r = manage(client, receipt)  # the right token too, until the minute passes
    assert r.status_code == 429 and int(r.headers["Retry-After"]) > 0
    assert "try again in" in r.text


def test_manage_action_asks_to_confirm_before_recording(client: TestClient, settings: Settings) -> None:
    receipt = send(client, email="ann@example.org", consent_updates=True)
    before = count(settings)
    r = manage(client, receipt, action="withdraw")
    assert r.status_code == 200 and 'name="confirm" value="yes"' in r.text
    assert "We will record a withdrawal of every consent" in r.text
    assert count(settings) == before


def test_stop_updates_withdraws_that_consent_only(client: TestClient, settings: Settings) -> None:
    receipt = send(client, email="ann@example.org", consent_updates=True, consent_contact=True)
    r = manage(client, receipt, action="stop_updates", confirm="yes")
    assert r.status_code == 200 and "We recorded that you want no more e-mails" in r.text
    entries = export(settings)
    assert [e["kind"] for e in entries] == ["consent", "withdrawal"]
    assert entries[1]["consent_updates"] is False and entries[1]["details"] == {"via": "/api/manage"}
    assert entries[0]["updates_stopped"] is True and entries[0]["withdrawn"] is False
    assert entries[1]["entry_hash"] in r.text


def test_withdraw_all_is_recorded_once(client: TestClient, settings: Settings) -> None:
    receipt = send(client, consent_contact=False)
    assert "We recorded a withdrawal" in manage(client, receipt, action="withdraw", confirm="yes").text
    again = manage(client, receipt, action="withdraw", confirm="yes")
    assert again.status_code == 200 and "nothing new was recorded" in again.text
    assert [e["kind"] for e in export(settings)] == ["consent", "withdrawal"]
    assert "Withdrawn at" in manage(client, receipt).text


def test_erase_removes_address_and_message_and_the_chain_verifies(client: TestClient, settings: Settings) -> None:
    receipt = send(client, email="ann@example.org", consent_contact=True)
    r = manage(client, receipt, action="erase", confirm="yes")
    assert r.status_code == 200 and "We erased the e-mail address, the message and the page" in r.text
    consent, erasure = export(settings)
    assert (consent["email"], consent["message"], consent["page"], consent["erased"]) == (None, None, None, True)
    assert erasure["kind"] == "erasure" and erasure["details"] == {"via": "/api/manage"}
    with closing(open_ledger(settings.ledger)) as led:
        assert led.verify().ok
    assert "ann@example.org" not in manage(client, receipt).text


def test_receipt_file_is_an_attachment_with_the_facts(client: TestClient) -> None:
    receipt = send(client, email="ann@example.org", consent_third_parties=True)
    r = client.post("/api/receipt", data={"receipt_id": receipt["receipt_id"], "withdraw_token": receipt["withdraw_token"]})
    assert r.status_code == 200 and r.headers["content-disposition"].startswith("attachment;")
    kept = json.loads(r.text)
    assert kept["receipt_id"] == receipt["receipt_id"] and kept["recorded_at"] == receipt["recorded_at"]
    assert kept["policy"] == {"id": "privacy", "title": "Privacy Policy", "version": V1,
                              "version_url": "https://policies.example/privacy/versions/2026-01-01/"}
    assert kept["consents"] == {"consent_contact": False, "consent_updates": False, "consent_third_parties": True}
    assert kept["withdraw_token"] == receipt["withdraw_token"] and "/api/manage" in kept["how_to_withdraw"]


def test_receipt_file_needs_the_token(client: TestClient) -> None:
    receipt = send(client)
    r = client.post("/api/receipt", data={"receipt_id": receipt["receipt_id"], "withdraw_token": "nope"})
    assert r.status_code == 403 and "content-disposition" not in r.headers


def test_receipt_page_offers_the_file_and_the_manage_page(client: TestClient) -> None:
    r = client.post("/api/feedback", data={**FORM, "policy_version": V2})
    assert r.status_code == 200
    assert re.search(r'<form method="post" action="/api/receipt">', r.text)
    assert "data-receipt-download" in r.text and "/api/manage" in r.text


def test_self_service_entries_count_in_stats(client: TestClient, settings: Settings) -> None:
    receipts = [send(client) for _ in range(6)]
    for receipt in receipts[:5]:
        manage(client, receipt, action="erase", confirm="yes")
    stats = client.get("/api/stats").json()
    assert stats["erased"] == 5 and stats["submissions"] == 6


def test_json_receipt_carries_the_receipt_page_words(client: TestClient) -> None:
    receipt = send(client, email="ann@example.org", consent_contact=True)
    page = client.post("/api/feedback", data={**FORM, "email": "ann@example.org", "consent_contact": "on"}).text
    assert receipt["policy_title"] == "Privacy Policy"
    assert receipt["version_url"] == "https://policies.example/privacy/versions/2026-01-01/"
    assert len(receipt["consent_sentences"]) == 3 and all(s in page for s in receipt["consent_sentences"])
    assert receipt["receipt_file_url"] == "/api/receipt" and receipt["manage_url"].endswith("/api/manage")


def test_each_consent_that_stands_can_be_withdrawn_on_its_own(client: TestClient) -> None:
    receipt = send(client, email="ann@example.org", consent_contact=True, consent_third_parties=True)
    page = manage(client, receipt).text
    offered = re.findall(r'data-action="([a-z_]+)"', page)
    assert offered == ["withdraw_contact", "withdraw_third_parties", "withdraw", "erase"]  # no updates were given
    assert "Withdraw my consent to be contacted" in page and "Stop sharing my e-mail address" in page


def test_withdraw_contact_asks_then_withdraws_that_consent_only(client: TestClient, settings: Settings) -> None:
    receipt = send(client, email="ann@example.org", consent_contact=True, consent_updates=True)
    asked = manage(client, receipt, action="withdraw_contact")
    assert "We will record a withdrawal of your consent to be contacted" in asked.text and count(settings) == 1
    r = manage(client, receipt, action="withdraw_contact", confirm="yes")
    assert "We recorded a withdrawal of your consent to be contacted about your feedback" in r.text
    consent, withdrawal = export(settings)
    assert withdrawal["consent_contact"] is False and withdrawal["consent_updates"] is None
    assert withdrawal["details"] == {"via": "/api/manage"} and withdrawal["entry_hash"] in r.text
    assert (consent["contact_stopped"], consent["updates_stopped"], consent["withdrawn"]) == (True, False, False)
    after = manage(client, receipt).text
    assert "Your consent to be contacted about your feedback was withdrawn at" in after
    assert re.findall(r'data-action="([a-z_]+)"', after) == ["stop_updates", "withdraw", "erase"]


def test_withdraw_third_parties_takes_the_address_out_of_the_shared_list(client: TestClient, settings: Settings) -> None:
    receipt = send(client, email="ann@example.org", consent_third_parties=True, consent_updates=True)
    with closing(open_ledger(settings.ledger)) as led:  # as after Ann followed the link in the confirmation mail
        with led.transaction() as txn:
            txn.append("confirmation", receipt["receipt_id"], policy_id="privacy")
        assert list(led.export(third_party=True)) == [{"email": "ann@example.org"}]
    r = manage(client, receipt, action="withdraw_third_parties", confirm="yes")
    assert "We recorded a withdrawal of your consent to pass your e-mail address to third parties" in r.text
    with closing(open_ledger(settings.ledger)) as led:
        assert list(led.export(third_party=True)) == [] and led.verify().ok
    again = manage(client, receipt, action="withdraw_third_parties", confirm="yes")
    assert "nothing new was recorded" in again.text and count(settings) == 3
    assert "stop_updates" in re.findall(r'data-action="([a-z_]+)"', manage(client, receipt).text)
