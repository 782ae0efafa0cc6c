""""What do you hold about me?" through the app with the real SMTP server: one signed link, to that address only."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mailserver import MailServer, body
from service_client import V1, mail_settings, service_client
from starlette.testclient import TestClient

from form_handler.consent import keys, tokens
from form_handler.ledger.sqlite.store import Ledger
from form_handler.settings import Settings
from form_handler.web.selfservice_pages import ACCESS_ANSWER

FORM = {"message": "Hello", "policy_id": "privacy", "policy_version": V1, "page": "/feedback/"}
LINK = re.compile(r"https://policies\.example(/api/access\?token=[A-Za-z0-9_.-]+)")


@pytest.fixture
def settings(tmp_path: Path, smtp: MailServer) -> Settings:
    return mail_settings(tmp_path, smtp.port, site_dir=tmp_path / "no-site")


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with service_client(settings) as c:
        yield c


def send(client: TestClient, email: str, **consents: bool) -> str:
    r = client.post("/api/feedback", json={**FORM, "email": email, **consents})
    assert r.status_code == 201, r.text
    return str(r.json()["receipt_id"])


def ask(client: TestClient, email: str) -> Any:
    return client.post("/api/access-request", data={"email": email})


def test_access_link_goes_only_to_that_address_and_lists_its_receipts(client: TestClient, smtp: MailServer) -> None:
    mine = [send(client, "ann@example.org"), send(client, "ANN@example.org ", consent_contact=True)]
    other = send(client, "bob@example.org")
    r = ask(client, "Ann@Example.org")
    assert r.status_code == 200 and ACCESS_ANSWER in r.text
    smtp.wait_for(1)
    (received,) = smtp.received
    assert received.rcpt_tos == ["Ann@Example.org"]
    link = LINK.search(body(received.message))
    assert link, body(received.message)
    page = client.get(link.group(1))
    assert page.status_code == 200
    assert all(rid in page.text for rid in mine) and other not in page.text


def test_access_request_for_an_unknown_address_answers_the_same_and_sends_nothing(
        client: TestClient, smtp: MailServer, settings: Settings) -> None:
    send(client, "ann@example.org")
    known, unknown = ask(client, "ann@example.org"), ask(client, "nobody@example.org")
    assert unknown.status_code == known.status_code == 200
    assert unknown.text == known.text
    smtp.wait_for(1)
    time.sleep(0.5)  # the background sender had its chance to send a second one
    assert smtp.recipients() == ["ann@example.org"]


def test_access_requests_beyond_the_limit_are_refused_without_mail(client: TestClient, smtp: MailServer) -> None:
    send(client, "ann@example.org")
    for _ in range(3):
        assert ask(client, "ann@example.org").status_code == 200
    refused = ask(client, "ann@example.org")
    assert refused.status_code == 429 and 80_000 < int(refused.headers["Retry-After"]) <= 86_400
    assert "try again in 24 hours" in refused.text
    smtp.wait_for(3)
    time.sleep(0.5)
    assert len(smtp.received) == 3


def test_access_requests_per_client_are_limited(client: TestClient, smtp: MailServer) -> None:
    answers = [ask(client, f"p{i}@example.org").status_code for i in range(6)]
    assert answers == [200] * 5 + [429]
    assert smtp.received == []


def test_access_link_withdraws_one_receipt_of_that_address(client: TestClient, smtp: MailServer,
                                                          settings: Settings) -> None:
    receipt_id = send(client, "ann@example.org", consent_contact=True)
    token = tokens.sign(keys.from_secret("s"), "access", receipt_id, "", "", now=time.time())
    asked = client.post("/api/access", data={"token": token, "receipt_id": receipt_id, "action": "withdraw"})
    assert asked.status_code == 200 and 'name="confirm" value="yes"' in asked.text
    done = client.post("/api/access", data={"token": token, "receipt_id": receipt_id, "action": "withdraw",
                                            "confirm": "yes"})
    assert done.status_code == 200 and "We recorded a withdrawal of every consent" in done.text
    with Ledger(settings.ledger_path, readonly=True) as led:
        assert [(e["kind"], e["details"]) for e in led.export()][-1] == ("withdrawal", {"via": "/api/access"})


def test_access_link_refuses_another_address_receipt(client: TestClient, settings: Settings) -> None:
    mine, theirs = send(client, "ann@example.org"), send(client, "bob@example.org")
    token = tokens.sign(keys.from_secret("s"), "access", mine, "", "", now=time.time())
    r = client.post("/api/access", data={"token": token, "receipt_id": theirs, "action": "erase", "confirm": "yes"})
    assert r.status_code == 403
    with Ledger(settings.ledger_path, readonly=True) as led:
        assert [e["kind"] for e in led.export()] == ["consent", "consent"]


def test_forged_or_expired_access_link_is_refused(client: TestClient) -> None:
    receipt_id = send(client, "ann@example.org")
    forged = tokens.sign(b"not our key", "access", receipt_id, "", "", now=time.time())
    expired = tokens.sign(keys.from_secret("s"), "access", receipt_id, "", "", now=time.time() - 2 * 86400)
    assert client.get(f"/api/access?token={forged}").status_code == 400
    assert client.get(f"/api/access?token={expired}").status_code == 410


def test_every_mail_links_the_manage_page(settings: Settings) -> None:
    from form_handler.mail import message

    notice = message.ChangeNotice("privacy", "Privacy Policy", "privacy/", "2026-11-20", "2026-12-20", "Kept.", V1)
    mails = [message.confirmation_message(settings, to="a@example.org", title="Privacy Policy",
                                          confirm_url="https://policies.example/c", updates=True, third_parties=False),
             message.notice_message(settings, to="a@example.org", notice=notice, reconsent_url="r", withdraw_url="w",
                                    unsubscribe_url="u"),
             message.access_message(settings, to="a@example.org", access_url="https://policies.example/api/access?token=t")]
    for mail in mails:
        assert "https://policies.example/api/manage" in body(mail), mail["Subject"]
        assert 'href="https://policies.example/api/' in body(mail, "html")


def test_access_link_still_lists_the_rest_after_erasing_the_receipt_it_names(client: TestClient) -> None:
    older, named = send(client, "ann@example.org"), send(client, "ann@example.org")
    token = tokens.sign(keys.from_secret("s"), "access", named, "", "", now=time.time())
    done = client.post("/api/access", data={"token": token, "receipt_id": named, "action": "erase", "confirm": "yes"})
    assert done.status_code == 200 and "We erased" in done.text
    fresh = re.search(r'name="token" value="([^"]+)"', done.text)
    assert fresh and fresh.group(1) != token
    listed = client.post("/api/access", data={"token": fresh.group(1)})
    assert listed.status_code == 200 and older in listed.text and "ann@example.org" in listed.text
