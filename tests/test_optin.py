"""Double opt-in through the app (TestClient), a real SMTP server and a real ledger: only an address's owner
can put it on the third-party list or change her standing, and naming an address cannot flood it with mail."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from click.testing import CliRunner
from mailserver import MailServer, body
from service_client import V1, V2, mail_settings, service_client
from starlette.testclient import TestClient

from form_handler.mail import notify

from form_handler.mail import outbox
from form_handler.cli import cli
from form_handler.ledger.sqlite.store import Ledger
from form_handler.settings import Settings

FORM = {"message": "Hello", "policy_id": "privacy", "policy_version": V1, "page": "/feedback/"}
ADMIN = {"Authorization": "Bearer s3cret"}


@pytest.fixture
def settings(tmp_path: Path, smtp: MailServer) -> Settings:
    return mail_settings(tmp_path, smtp.port, admin_token="s3cret")


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with service_client(settings) as c:
        yield c


def submit(client: TestClient, email: str, **consents: Any) -> dict[str, Any]:
    r = client.post("/api/feedback", json={**FORM, "email": email, **consents})
    assert r.status_code == 201, r.text
    return dict(r.json())


def follow_confirm_link(client: TestClient, msg: EmailMessage) -> None:
    """What the address's owner does with the mail: open the link (a page with a button), then press it."""
    url = urlsplit(next(w for w in body(msg).split() if "/api/confirm?token=" in w))
    page = client.get(f"{url.path}?{url.query}")
    assert page.status_code == 200 and '<form method="post"' in page.text
    assert client.post(f"{url.path}?{url.query}").status_code == 200


def shared(client: TestClient, settings: Settings) -> tuple[list[str], list[str]]:
    """The third-party list, from the admin route and from `policy-site ledger export --third-party`."""
    api = client.get("/api/export?third_party=1", headers=ADMIN)
    assert api.status_code == 200
    command = CliRunner().invoke(cli, ["ledger", "export", "--ledger", str(settings.ledger_path), "--third-party"])
    assert command.exit_code == 0, command.output
    return ([json.loads(line)["email"] for line in api.text.splitlines()],
            [json.loads(line)["email"] for line in command.output.splitlines()])


def outbox_rows(settings: Settings) -> int:
    with Ledger(settings.ledger_path, readonly=True) as led:
        return int(led.connection.execute("SELECT count(*) FROM outbox").fetchall()[0][0])


def wait_until_sent(settings: Settings, count: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    with Ledger(settings.ledger_path, readonly=True) as led:
        while outbox.status(led)["sent"] < count:
            assert time.monotonic() < deadline, f"the service did not send {count} queued mails"
            time.sleep(0.02)


def test_a_forged_third_party_consent_is_not_shared_until_the_owner_confirms(
        client: TestClient, settings: Settings, smtp: MailServer) -> None:
    mine = submit(client, "ann@example.com", consent_third_parties=True)
    follow_confirm_link(client, smtp.wait_for(1)[0])
    assert shared(client, settings) == (["ann@example.com"], ["ann@example.com"])
    withdrawn = client.post("/api/withdraw", json={"receipt_id": mine["receipt_id"], "withdraw_token": mine["withdraw_token"]})
    assert withdrawn.status_code == 200 and shared(client, settings) == ([], [])
    # Anyone can send her address with the box ticked: the answer is a receipt as usual, but she is not shared.
    submit(client, "Ann@Example.com", consent_third_parties=True)
    assert shared(client, settings) == ([], [])
    msg = smtp.wait_for(2)[1]  # the mail goes to her, and says what confirming would start
    assert msg["To"] == "Ann@Example.com" and "share your e-mail address with third parties" in body(msg)
    follow_confirm_link(client, msg)
    assert shared(client, settings) == (["Ann@Example.com"], ["Ann@Example.com"])


def test_an_unconfirmed_submission_of_her_address_does_not_stop_her_change_notices(
        client: TestClient, settings: Settings, smtp: MailServer) -> None:
    submit(client, "ann@example.com", consent_updates=True)
    follow_confirm_link(client, smtp.wait_for(1)[0])
    # Someone else sends her address with the current version (V2): before, she then counted as told.
    client.post("/api/feedback", json={**FORM, "policy_version": V2, "email": "ann@example.com", "consent_contact": True})
    with Ledger(settings.ledger_path) as led:
        assert notify.run(led, settings, settings.manifest, echo=lambda s: None).sent == 1
    notice = smtp.wait_for(2)[1]
    assert notice["To"] == "ann@example.com" and "changes on 2026-12-20" in notice["Subject"]


def test_thirty_submissions_for_one_address_send_the_quota_and_answer_alike(
        client: TestClient, settings: Settings, smtp: MailServer) -> None:
    answers = [client.post("/api/feedback", json={**FORM, "email": "victim@example.com", "consent_updates": True})
               for _ in range(30)]
    secret = ("receipt_id", "recorded_at", "withdraw_token", "entry_hash")  # differ for every receipt, by design
    shapes = {(r.status_code, tuple(r.headers.items()), json.dumps({k: v for k, v in r.json().items() if k not in secret}))
              for r in answers}
    assert len(shapes) == 1 and answers[0].status_code == 201
    assert outbox_rows(settings) == settings.mail_per_recipient == 3
    wait_until_sent(settings, 3)
    assert smtp.recipients() == ["victim@example.com"] * 3
    with Ledger(settings.ledger_path, readonly=True) as led:
        assert led.head().count == 30  # every consent is recorded, with or without its mail


def test_the_quota_counts_per_recipient(client: TestClient, settings: Settings, smtp: MailServer) -> None:
    for _ in range(5):
        submit(client, "victim@example.com", consent_third_parties=True)
    submit(client, "VICTIM@example.com ", consent_updates=True)  # the same address, however it is typed
    submit(client, "bob@example.com", consent_updates=True)
    wait_until_sent(settings, 4)
    assert outbox_rows(settings) == 4
    assert sorted(smtp.recipients()) == ["bob@example.com"] + ["victim@example.com"] * 3


def test_the_quota_is_shared_by_two_service_processes(settings: Settings, smtp: MailServer) -> None:
    # Two apps, each with its own writer, reader and mail sender, over one ledger file: the count is in the file.
    with service_client(settings) as first, service_client(settings) as second:
        for _ in range(3):
            submit(first, "victim@example.com", consent_updates=True)
            submit(second, "victim@example.com", consent_updates=True)
        wait_until_sent(settings, 3)
    assert outbox_rows(settings) == 3 and smtp.recipients() == ["victim@example.com"] * 3
