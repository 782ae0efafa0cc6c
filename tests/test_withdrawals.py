"""Withdrawing one consent at a time (types.withdrawn_consents), on both backends: a withdrawal naming no consent
withdraws them all; one naming some (set false) withdraws exactly those, in the receipts view, the statistics,
the exports, who is owed a change notice and the outbox."""

from __future__ import annotations

from typing import Any

import pytest
from ledger_helpers import confirmed, draft

from form_handler.consent import subscribers
from form_handler.ledger.contract import LedgerStore
from form_handler.ledger.types import LedgerRefusal, withdrawn_consents

ALL = frozenset(("consent_contact", "consent_updates", "consent_third_parties"))


def consent_row(store: LedgerStore, receipt_id: str) -> dict[str, Any]:
    return next(r for r in store.export() if r["kind"] == "consent" and r["receipt_id"] == receipt_id)


def test_the_rule_reads_stored_withdrawals_as_before() -> None:
    assert withdrawn_consents("withdrawal", None, None, None) == ALL  # the withdraw token, the withdraw link
    assert withdrawn_consents("withdrawal", None, False, None) == {"consent_updates"}  # the unsubscribe link
    assert withdrawn_consents("withdrawal", False, None, False) == {"consent_contact", "consent_third_parties"}
    assert withdrawn_consents("erasure", None, None, None) == frozenset()


def test_withdrawing_contact_leaves_the_other_consents_standing(store: LedgerStore) -> None:
    receipts = [confirmed(store, draft(f"p{i}@example.org", updates=True, third=True)) for i in range(6)]
    with store.transaction() as txn:
        txn.append("withdrawal", receipts[0].receipt_id, consent_contact=False)
    row = consent_row(store, receipts[0].receipt_id)
    assert (row["withdrawn"], row["contact_stopped"], row["updates_stopped"], row["third_parties_stopped"]) == (
        False, True, False, False)
    assert not store.status(receipts[0].receipt_id).withdrawn
    stats = store.stats()
    assert stats["standing"] == 6 and stats["withdrawn"] is None
    assert stats["per_consent"] == {"contact": 5, "updates": 6, "third_parties": 6}


def test_withdrawing_third_parties_drops_the_address_from_the_third_party_export(store: LedgerStore) -> None:
    ada = confirmed(store, draft("ada@example.org", third=True, updates=True))
    confirmed(store, draft("bob@example.org", third=True))
    assert [r["email"] for r in store.export(third_party=True)] == ["ada@example.org", "bob@example.org"]
    with store.transaction() as txn:
        txn.append("withdrawal", ada.receipt_id, consent_third_parties=False)
    assert list(store.export(third_party=True)) == [{"email": "bob@example.org"}]
    row = consent_row(store, ada.receipt_id)
    assert row["third_parties_stopped"] and not row["withdrawn"] and not row["updates_stopped"]
    # Her change notices still stand: only sharing was withdrawn.
    assert [p.email for p in store.read(lambda v: subscribers.people(v, "privacy")) if p.subscribed] == ["ada@example.org"]


def test_withdrawing_contact_alone_does_not_stop_change_notices(store: LedgerStore) -> None:
    ada = confirmed(store, draft("ada@example.org", updates=True))
    with store.transaction() as txn:
        txn.append("withdrawal", ada.receipt_id, consent_contact=False)
    people = store.read(lambda v: subscribers.people(v, "privacy"))
    assert [(p.email, p.subscribed, p.receipt_ids) for p in people] == [("ada@example.org", True, (ada.receipt_id,))]
    with store.transaction() as txn:
        txn.append("withdrawal", ada.receipt_id, consent_updates=False)
    people = store.read(lambda v: subscribers.people(v, "privacy"))
    assert [(p.subscribed, p.updates_receipt_ids) for p in people] == [(False, ())]


def test_a_withdrawal_naming_no_consent_still_withdraws_everything_after_one_that_named_some(store: LedgerStore) -> None:
    ada = confirmed(store, draft("ada@example.org", third=True))
    with store.transaction() as txn:
        one = txn.append("withdrawal", ada.receipt_id, consent_third_parties=False)
    everything = store.withdraw(ada.receipt_id, ada.withdraw_token)
    assert everything.seq > one.seq and everything.fields == {}
    assert store.withdraw(ada.receipt_id, ada.withdraw_token).seq == everything.seq  # idempotent, as before
    assert store.status(ada.receipt_id).withdrawn and consent_row(store, ada.receipt_id)["withdrawn"]
    assert store.read(lambda v: subscribers.people(v, "privacy")) == [] and store.verify().ok


def test_a_withdrawal_naming_a_consent_true_is_refused(store: LedgerStore) -> None:
    ada = confirmed(store, draft("ada@example.org"))
    with pytest.raises(LedgerRefusal) as refused, store.transaction() as txn:
        txn.append("withdrawal", ada.receipt_id, consent_contact=True)
    assert refused.value.field == "consent_contact" and store.head().count == 2


def test_the_confirmation_mail_waits_while_updates_or_sharing_still_stand(store: LedgerStore) -> None:
    ada = store.append_consent(draft("ada@example.org", third=True, updates=True))
    with store.transaction() as txn:
        txn.enqueue_mail(ada.receipt_id, "confirm", "ada@example.org", b"mail", "2026-01-01T00:00:00.000Z")
        txn.append("withdrawal", ada.receipt_id, consent_third_parties=False)
        txn.append("withdrawal", ada.receipt_id, consent_contact=False)
    with store.transaction() as txn:  # updates still wait for the confirmation
        assert len(txn.claim_mail(now="2026-01-01T00:00:01.000Z", lease_until="2026-01-01T00:05:00.000Z", limit=5)) == 1
        txn.append("withdrawal", ada.receipt_id, consent_updates=False)
    with store.transaction() as txn:  # neither waits any more: cancelled, its address dropped
        assert txn.claim_mail(now="2026-01-01T00:10:00.000Z", lease_until="2026-01-01T00:15:00.000Z", limit=5) == []
        assert txn.mail_counts() == {"queued": 0, "sent": 0, "gave_up": 1}
