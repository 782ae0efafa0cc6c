"""The e-mail link pages through the app (TestClient), with a real SMTP server and a real ledger."""

from __future__ import annotations

import os
import time
from datetime import timedelta
from email.message import EmailMessage
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from mailserver import MailServer, body, free_port
from service_client import V1, V2, mail_settings, service_client
from starlette.testclient import TestClient

from form_handler.consent import keys

from form_handler.web import mail_routes

from form_handler.mail import notify

from form_handler.mail import outbox

from form_handler.consent import tokens
from form_handler.ledger.sqlite.store import Ledger
from form_handler.settings import Settings

KEY = keys.from_secret("s")
FORM = {"message": "Hello", "policy_id": "privacy", "policy_version": V1, "page": "/feedback/"}


def make_settings(tmp_path: Path, port: int) -> Settings:
    return mail_settings(tmp_path, port)


@pytest.fixture
def settings(tmp_path: Path, smtp: MailServer) -> Settings:
    return make_settings(tmp_path, smtp.port)


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with service_client(settings) as c:
        yield c


def kinds(settings: Settings) -> list[tuple[str, int | None]]:
    with Ledger(settings.ledger_path, readonly=True) as led:
        rows = led.connection.execute("SELECT kind, consent_updates FROM entries ORDER BY seq").fetchall()
    return [(str(k), None if u is None else int(u)) for k, u in rows]


def subscribe(client: TestClient, email: str = "ann@example.com", *, confirm: bool = False) -> str:
    """A submission asking for change e-mails; with confirm, its owner then follows the confirmation link."""
    r = client.post("/api/feedback", json={**FORM, "email": email, "consent_updates": True})
    assert r.status_code == 201, r.text
    receipt_id = str(r.json()["receipt_id"])
    if confirm:
        assert client.post(link("confirm", receipt_id, V1)).status_code == 200
    return receipt_id


def link(purpose: tokens.Purpose, receipt_id: str, version: str = V2, lifetime: int | None = None) -> str:
    path = {"withdraw": "withdraw-consent"}.get(purpose, purpose)
    token = tokens.sign(KEY, purpose, receipt_id, "privacy", version, now=time.time(), lifetime=lifetime)
    return f"/api/{path}?token={token}"


def path_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}"


def link_in(msg: EmailMessage, path: str) -> str:
    text = body(msg)
    return next(w for w in text.split() if f"{path}?token=" in w)


def test_feedback_with_updates_queues_a_confirmation_that_the_service_sends(client: TestClient, smtp: MailServer) -> None:
    receipt_id = subscribe(client)
    client.post("/api/feedback", json={**FORM, "email": "bob@example.com"})  # no updates: no mail
    (msg,) = smtp.wait_for(1)
    assert msg["To"] == "ann@example.com" and "Please confirm" in msg["Subject"]
    url = link_in(msg, "/api/confirm")
    claim = tokens.verify(KEY, url.split("token=")[1], "confirm", now=time.time())
    assert claim.receipt_id == receipt_id and url.startswith("https://policies.example/api/confirm?")


def test_confirm_link_get_shows_a_button_and_records_nothing(client: TestClient, settings: Settings) -> None:
    receipt_id = subscribe(client)
    r = client.get(link("confirm", receipt_id, V1))
    assert r.status_code == 200 and '<form method="post"' in r.text and "Yes, this is my address and I want this" in r.text
    assert [k for k, _ in kinds(settings)] == ["consent"]


def test_confirm_link_post_records_once_then_says_used(client: TestClient, settings: Settings) -> None:
    url = link("confirm", subscribe(client), V1)
    assert client.post(url).status_code == 200
    again = client.post(url)
    assert again.status_code == 410 and "already used" in again.text
    assert [k for k, _ in kinds(settings)] == ["consent", "confirmation"]


@pytest.mark.parametrize(("consents", "status"), [({"consent_third_parties": True}, 200),
                                                  ({"consent_updates": True, "consent_third_parties": True}, 200),
                                                  ({"consent_updates": True}, 410)])
def test_confirm_link_works_while_updates_or_third_party_consent_stands(
        client: TestClient, settings: Settings, consents: dict[str, bool], status: int) -> None:
    r = client.post("/api/feedback", json={**FORM, "email": "ann@example.com", **consents})
    receipt_id = r.json()["receipt_id"]
    with Ledger(settings.ledger_path) as led, led.transaction() as txn:
        txn.append("withdrawal", receipt_id, consent_updates=False)  # change e-mails stopped, nothing else
    page = client.get(link("confirm", receipt_id, V1))
    assert page.status_code == status and ("nothing to confirm" in page.text) is (status == 410)
    assert client.post(link("confirm", receipt_id, V1)).status_code == status


def test_reconsent_link_records_the_new_version_once(client: TestClient, settings: Settings) -> None:
    receipt_id = subscribe(client, confirm=True)
    assert client.get(link("reconsent", receipt_id)).status_code == 200
    r = client.post(link("reconsent", receipt_id))
    assert r.status_code == 200 and "agreement is recorded" in r.text
    assert client.post(link("reconsent", receipt_id)).status_code == 410
    with Ledger(settings.ledger_path, readonly=True) as led:
        assert led.connection.execute("SELECT policy_version FROM receipts").fetchall()[0][0] == V2


def test_withdraw_link_withdraws_every_receipt_of_the_address(client: TestClient, settings: Settings) -> None:
    # The second was never confirmed: withdrawing it too is safe, and a stranger's claim should not outlive hers.
    first, second = subscribe(client, "ann@example.com", confirm=True), subscribe(client, "ANN@example.com")
    assert client.post(link("withdraw", first)).status_code == 200
    with Ledger(settings.ledger_path, readonly=True) as led:
        assert led.status(first).withdrawn and led.status(second).withdrawn
    assert client.post(link("withdraw", first)).status_code == 410


def test_one_click_unsubscribe_stops_updates_only_and_is_idempotent(client: TestClient, settings: Settings) -> None:
    receipt_id = subscribe(client, confirm=True)
    one_click = {"content-type": "application/x-www-form-urlencoded"}
    r = client.post(link("unsubscribe", receipt_id), content=b"List-Unsubscribe=One-Click", headers=one_click)
    assert r.status_code == 200
    assert client.post(link("unsubscribe", receipt_id), content=b"List-Unsubscribe=One-Click", headers=one_click).status_code == 200
    assert kinds(settings) == [("consent", 1), ("confirmation", None), ("withdrawal", 0)]
    with Ledger(settings.ledger_path, readonly=True) as led:
        assert not led.status(receipt_id).withdrawn


@pytest.mark.parametrize("purpose", ["confirm", "reconsent", "withdraw", "unsubscribe"])
def test_tampered_link_is_refused_with_400_and_records_nothing(client: TestClient, settings: Settings, purpose: tokens.Purpose) -> None:
    url = link(purpose, subscribe(client))
    body, mac = url.split("token=")[1].split(".")
    tampered = url.replace(body, body[:-2] + ("AA" if body[-2:] != "AA" else "BB"))
    for r in (client.get(tampered), client.post(tampered)):
        assert r.status_code == 400 and "cannot be used" in r.text
    assert [k for k, _ in kinds(settings)] == ["consent"]


def test_expired_or_wrong_purpose_link_is_refused_and_records_nothing(client: TestClient, settings: Settings) -> None:
    receipt_id = subscribe(client)
    expired = client.post(link("reconsent", receipt_id, lifetime=-1))
    assert expired.status_code == 410 and "expired" in expired.text
    wrong = client.post(link("unsubscribe", receipt_id).replace("/api/unsubscribe", "/api/reconsent"))
    assert wrong.status_code == 400
    assert client.post("/api/confirm").status_code == 400
    assert [k for k, _ in kinds(settings)] == ["consent"]


def test_confirmation_waits_in_the_outbox_while_the_mail_server_is_down(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, free_port())
    with service_client(settings) as client:
        subscribe(client)  # answered at once although no mail server listens
        deadline = time.monotonic() + 10
        with Ledger(settings.ledger_path) as led:
            # The background sender tries at once, fails, and schedules the retry 30 s later.
            while time.monotonic() < deadline:
                attempts, error = led.connection.execute("SELECT attempts, last_error FROM outbox").fetchall()[0]
                if attempts:
                    break
                time.sleep(0.05)
    assert attempts == 1 and "POLICY_SITE_SMTP_HOST" in str(error)
    with MailServer(settings.smtp_port) as smtp, Ledger(settings.ledger_path) as led:
        assert outbox.send_due(led, settings).sent == 0  # not due yet: the back-off holds
        result = outbox.send_due(led, settings, now=outbox.utcnow() + timedelta(seconds=31))
        assert result.sent == 1 and smtp.recipients() == ["ann@example.com"]


def test_notice_links_work_end_to_end(client: TestClient, settings: Settings, smtp: MailServer) -> None:
    receipt_id = subscribe(client)
    assert client.post(path_of(link_in(smtp.wait_for(1)[0], "/api/confirm"))).status_code == 200
    with Ledger(settings.ledger_path) as led:
        assert notify.run(led, settings, settings.manifest, echo=lambda s: None).sent == 1
    assert client.post(path_of(link_in(smtp.wait_for(2)[1], "/api/reconsent"))).status_code == 200
    with Ledger(settings.ledger_path) as led:
        assert notify.run(led, settings, settings.manifest, echo=lambda s: None).sent == 0
    assert [k for k, _ in kinds(settings)] == ["consent", "confirmation", "notice", "reconsent"] and receipt_id


def test_link_pages_answer_503_while_the_ledger_file_is_not_a_database(
        client: TestClient, settings: Settings, tmp_path: Path) -> None:
    receipt_id = subscribe(client)
    with Ledger(settings.ledger_path) as led:  # an empty WAL: every page must now come from the file itself
        while led.connection.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()[0][0]:
            time.sleep(0.01)  # the background mailer was reading; try again
    aside = tmp_path / "aside.sqlite3"
    os.replace(settings.ledger_path, aside)
    settings.ledger_path.write_bytes(b"not a database " * 1000)  # no read has opened a pooled connection yet
    for url in (link("confirm", receipt_id, V1), link("unsubscribe", receipt_id)):
        r = client.get(url)
        assert r.status_code == 503 and "cannot read our records now" in r.text
    assert client.get("/api/stats").status_code == 503
    os.replace(aside, settings.ledger_path)  # back: a failed connection was not kept, the next read opens anew
    assert client.get(link("confirm", receipt_id, V1)).status_code == 200


def test_two_posts_decided_on_one_snapshot_record_once(client: TestClient, settings: Settings) -> None:
    # Each POST decides before the write transaction; inside it, the second sees the first's entries and decides again.
    receipt_id = subscribe(client, confirm=True)
    subscribe(client, "ANN@example.com", confirm=True)
    claims = {p: tokens.verify(KEY, link(p, receipt_id).split("token=")[1], p, now=time.time())
              for p in ("unsubscribe", "withdraw")}
    with Ledger(settings.ledger_path) as led:
        for purpose, claim in claims.items():
            first, second = (led.read(lambda conn: mail_routes.decide(purpose, claim, conn)) for _ in range(2))
            with led.transaction() as txn:
                assert mail_routes.record(purpose, claim, txn, first) == 2
            with led.transaction() as txn:
                if purpose == "unsubscribe":
                    assert mail_routes.record(purpose, claim, txn, second) == 0  # stopping twice: nothing more
                else:
                    with pytest.raises(mail_routes.LinkUsed):
                        mail_routes.record(purpose, claim, txn, second)
    assert kinds(settings)[-4:] == [("withdrawal", 0)] * 2 + [("withdrawal", None)] * 2
