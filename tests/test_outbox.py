from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from ledger_helpers import draft, sql
from mailserver import MailServer, free_port

from form_handler.mail import outbox
from form_handler.ledger.contract import LedgerStore
from form_handler.mail.message import confirmation_message
from form_handler.settings import Settings

T0 = datetime(2026, 11, 20, 12, 0, tzinfo=timezone.utc)


@pytest.fixture
def db(store: LedgerStore) -> LedgerStore:
    """The outbox lives in the ledger's database, beside its entries: each test runs on both backends."""
    return store


def queue(db: LedgerStore, to: str = "ann@example.com", receipt_id: str = "r-1") -> int:
    msg = confirmation_message(Settings(), to=to, title="Privacy Policy", confirm_url="https://x/c?token=1",
                               updates=True, third_parties=False)
    with db.transaction() as txn:
        return outbox.enqueue(txn, receipt_id=receipt_id, kind="confirmation", msg=msg, now=T0)


def row(db: LedgerStore, row_id: int) -> tuple[Any, ...]:
    return sql(db, "SELECT attempts, next_attempt_at, sent_at, recipient, length(message), gave_up_at FROM outbox"
                   " WHERE id = ?", (row_id,))[0]


def settings_for(port: int) -> Settings:
    return Settings(smtp_host="127.0.0.1", smtp_port=port)


def test_backoff_doubles_from_30_seconds_and_caps_at_an_hour() -> None:
    assert [outbox.backoff(n) for n in (1, 2, 3, 4)] == [30, 60, 120, 240]
    assert outbox.backoff(30) == 3600


def test_send_due_sends_once_and_forgets_the_address(db: LedgerStore) -> None:
    row_id = queue(db)
    with MailServer() as smtp:
        assert outbox.send_due(db, settings_for(smtp.port), now=T0) == outbox.PassResult(1, 0, 0)
        assert outbox.send_due(db, settings_for(smtp.port), now=T0 + timedelta(days=1)).sent == 0
        assert smtp.recipients() == ["ann@example.com"]
    attempts, _, sent_at, recipient, size, _ = row(db, row_id)
    assert (attempts, recipient, size) == (1, "", 0) and sent_at is not None


def test_send_due_retries_with_backoff_when_the_server_is_down_at_first(db: LedgerStore) -> None:
    row_id = queue(db)
    port = free_port()
    assert outbox.send_due(db, settings_for(port), now=T0) == outbox.PassResult(0, 1, 0)
    assert row(db, row_id)[:3] == (1, "2026-11-20T12:00:30Z", None)
    with MailServer(port) as smtp:
        assert outbox.send_due(db, settings_for(port), now=T0 + timedelta(seconds=29)).sent == 0
        assert outbox.send_due(db, settings_for(port), now=T0 + timedelta(seconds=30)).sent == 1
        assert smtp.recipients() == ["ann@example.com"]
    assert row(db, row_id)[0] == 2 and row(db, row_id)[2] is not None


def test_second_failure_doubles_the_wait(db: LedgerStore) -> None:
    row_id = queue(db)
    port = free_port()
    outbox.send_due(db, settings_for(port), now=T0)
    outbox.send_due(db, settings_for(port), now=T0 + timedelta(seconds=30))
    assert row(db, row_id)[:2] == (2, "2026-11-20T12:01:30Z")
    assert outbox.next_due(db) == T0 + timedelta(seconds=90)


def test_a_claimed_row_is_not_sent_by_another_sender(db: LedgerStore) -> None:
    queue(db)
    claimed = outbox.claim_due(db, now=T0)
    assert len(claimed) == 1
    with MailServer() as smtp:
        assert outbox.send_due(db, settings_for(smtp.port), now=T0 + timedelta(seconds=60)).sent == 0
        # After a crash the lease runs out and the row is sent: the one possible duplicate.
        assert outbox.send_due(db, settings_for(smtp.port), now=T0 + timedelta(seconds=outbox.LEASE)).sent == 1


def test_permanent_refusal_gives_up_without_retrying(db: LedgerStore) -> None:
    refused, ok = queue(db, "gone@example.com", "r-1"), queue(db, "ann@example.com", "r-2")
    with MailServer() as smtp:
        smtp.refuse("gone@example.com")
        assert outbox.send_due(db, settings_for(smtp.port), now=T0) == outbox.PassResult(1, 1, 1)
        assert smtp.recipients() == ["ann@example.com"]
    assert row(db, refused)[5] is not None and row(db, ok)[2] is not None
    assert outbox.status(db) == {"queued": 0, "sent": 1, "gave_up": 1}


def test_giving_up_forgets_the_address_and_message(db: LedgerStore) -> None:
    refused, later = queue(db, "gone@example.com", "r-1"), queue(db, "ann@example.com", "r-2")
    assert outbox.mark_failed(db, refused, 0, "550 no such user", now=T0, permanent=True)
    assert not outbox.mark_failed(db, later, 0, "connection refused", now=T0, permanent=False)
    assert row(db, refused)[3:5] == ("", 0) and row(db, refused)[5] is not None
    # A row still to be retried keeps what it needs for that.
    assert row(db, later)[3] == "ann@example.com" and row(db, later)[4] > 0 and row(db, later)[5] is None


@pytest.mark.parametrize("how", ["withdraw", "unsubscribe", "erase"])
def test_a_queued_confirmation_is_not_sent_after_the_receipt_is_withdrawn(store: LedgerStore, how: str) -> None:
    ledger = store
    with ledger.transaction() as txn:
        receipt = txn.append_consent(draft(updates=True))
    queue(ledger, "ada@example.org", receipt.receipt_id)
    with ledger.transaction() as txn:
        if how == "withdraw":
            txn.withdraw(receipt.receipt_id, receipt.withdraw_token)
        elif how == "unsubscribe":
            txn.append("withdrawal", receipt.receipt_id, consent_updates=False)
        else:  # erase() also deletes the row; a bare erasure entry shows that the claim itself refuses it
            txn.append("erasure", receipt.receipt_id)
    with MailServer() as smtp:
        assert outbox.send_due(ledger, settings_for(smtp.port), now=T0) == outbox.PassResult(0, 0, 0)
        assert smtp.recipients() == []
    assert row(ledger, 1)[3:] == ("", 0, "2026-11-20T12:00:00Z")


def test_stopping_change_e_mails_keeps_a_confirmation_that_third_party_consent_waits_for(store: LedgerStore) -> None:
    ledger = store
    with ledger.transaction() as txn:
        receipt = txn.append_consent(draft(updates=True, third=True))
        txn.append("withdrawal", receipt.receipt_id, consent_updates=False)  # the unsubscribe: e-mails only
    queue(ledger, "ada@example.org", receipt.receipt_id)
    with MailServer() as smtp:
        assert outbox.send_due(ledger, settings_for(smtp.port), now=T0).sent == 1
        assert smtp.recipients() == ["ada@example.org"]


def test_forget_removes_every_row_of_the_receipt(db: LedgerStore) -> None:
    queue(db, receipt_id="r-1"), queue(db, receipt_id="r-1"), queue(db, receipt_id="r-2")
    with db.transaction() as txn:
        assert outbox.forget(txn, "r-1") == 2
    assert sql(db, "SELECT receipt_id FROM outbox") == [("r-2",)]


def test_mail_send_command_sends_the_queue_once(store: LedgerStore) -> None:
    from click.testing import CliRunner

    from form_handler.cli import cli

    path = store.location
    queue(store)
    with MailServer() as smtp:
        env = {"POLICY_SITE_SMTP_HOST": "127.0.0.1", "POLICY_SITE_SMTP_PORT": str(smtp.port)}
        first = CliRunner().invoke(cli, ["mail", "send", "--ledger", str(path)], env=env)
        second = CliRunner().invoke(cli, ["mail", "send", "--ledger", str(path)], env=env)
        assert smtp.recipients() == ["ann@example.com"]
    assert first.exit_code == 0 and "sent 1, failed 0" in first.output
    assert second.exit_code == 0 and "sent 0" in second.output
