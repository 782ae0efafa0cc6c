"""Consent self-service: what a receipt says now, who may act on it, and what each action records.

A visitor acts on a receipt with its withdraw token (the manage page), or on every receipt of their
address with a signed link sent to that address ("what do you hold about me?"). The actions, each one
chained entry like every other (`via` names the service route it came through; no address, no agent):

- withdraw: a withdrawal naming no consent, which withdraws every consent of the receipt;
- withdraw_contact, stop_updates, withdraw_third_parties: a withdrawal naming that one consent (set false),
  which withdraws it and nothing else (types.withdrawn_consents; stop_updates is the same entry as the
  unsubscribe link in our e-mails). Offered only while that consent stands;
- erase: an erasure entry, then the address, message, page and salt are deleted (LedgerTxn.erase), so the
  chain still verifies and says when.

Every action is idempotent: done once, a second asks nothing.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from form_handler.ledger.chain import FLAG_COLUMNS
from form_handler.ledger.contract import LedgerTxn, LedgerView
from form_handler.ledger.types import Entry, InvalidToken, UnknownReceipt, withdrawn_consents, withdraws_all

# The actions that withdraw one consent on its own, and the consent each names.
ONE_CONSENT = {
    "withdraw_contact": "consent_contact",
    "stop_updates": "consent_updates",
    "withdraw_third_parties": "consent_third_parties",
}
ACTIONS = (*ONE_CONSENT, "withdraw", "erase")
# What each consent is called on every self-service page and in the receipt file.
CONSENT_NAMES = {
    "consent_contact": "We may contact you about your feedback",
    "consent_updates": "E-mails when our policies change",
    "consent_third_parties": "We may pass your e-mail address to third parties",
}


@dataclass(frozen=True)
class ReceiptView:
    """One receipt as the ledger holds it now."""

    receipt_id: str
    recorded_at: str
    policy_id: str
    policy_version: str
    consents: dict[str, bool]
    entry_hash: str
    token_sha256: str
    withdrawn_at: str | None
    # consent name -> when a withdrawal of that consent alone was first recorded
    stopped_at: dict[str, str]
    erased_at: str | None
    confirmed: bool
    email: str | None
    message: str | None
    page: str | None

    @property
    def standing(self) -> bool:
        return self.withdrawn_at is None and self.erased_at is None

    @property
    def updates_stopped_at(self) -> str | None:
        return self.stopped_at.get("consent_updates")

    def stands(self, name: str) -> bool:
        """Whether the consent `name` was given and still stands."""
        return bool(self.consents.get(name)) and self.standing and name not in self.stopped_at

    def available(self) -> tuple[str, ...]:
        """The actions that would record something now, in the order the pages offer them."""
        todo: list[str] = []
        if self.standing:
            todo.extend(action for action, name in ONE_CONSENT.items() if self.stands(name))
            todo.append("withdraw")
        if self.erased_at is None:
            todo.append("erase")
        return tuple(todo)


def load(view: LedgerView, receipt_id: str) -> ReceiptView | None:
    """The receipt as it stands on this connection's snapshot, or None when no consent has this id."""
    rows = view.receipt_entries(receipt_id)
    consent = next((r for r in rows if r.kind == "consent"), None)
    if consent is None:
        return None
    withdrawn = erased = None
    stopped: dict[str, str] = {}
    confirmed = False
    for row in rows:
        if row.kind == "withdrawal":
            flags = [row.fields.get(name) for name in FLAG_COLUMNS]
            if withdraws_all(row.kind, *flags):
                withdrawn = withdrawn or row.recorded_at
            else:
                for name in withdrawn_consents(row.kind, *flags):
                    stopped.setdefault(name, row.recorded_at)
        elif row.kind == "erasure":
            erased = erased or row.recorded_at
        elif row.kind == "confirmation":
            confirmed = True
    data = view.personal_data(receipt_id)
    f = consent.fields
    return ReceiptView(
        receipt_id, consent.recorded_at, str(f.get("policy_id", "")), str(f.get("policy_version", "")),
        {name: bool(f.get(name)) for name in FLAG_COLUMNS}, consent.entry_hash, str(f.get("withdraw_token_sha256", "")),
        withdrawn, stopped, erased, confirmed,
        data.email if data else None, data.message if data else None, data.page if data else None,
    )


def token_matches(view: ReceiptView, token: str) -> bool:
    """Constant-time check of a withdraw token against the hash the consent entry chained."""
    given = hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()
    return hmac.compare_digest(given, view.token_sha256)


def with_token(view: LedgerView, receipt_id: str, token: str) -> ReceiptView:
    """The receipt, when `token` is its withdraw token; UnknownReceipt or InvalidToken otherwise."""
    found = load(view, receipt_id)
    if found is None:
        raise UnknownReceipt("No receipt with this id is in our records; copy the id from your receipt.", "receipt_id")
    if not token_matches(found, token):
        raise InvalidToken("This withdraw token does not belong to that receipt; copy it from your receipt.",
                           "withdraw_token")
    return found


def address_key(view: LedgerView, receipt_id: str) -> str | None:
    """The address (as compared) that a signed access link stands for: the one on the receipt it names."""
    data = view.personal_data(receipt_id)
    return data.email_key if data else None


def of_address(view: LedgerView, key: str) -> list[ReceiptView]:
    """Every receipt that carries the address `key`, newest first (through the address index)."""
    views = (load(view, rid) for rid in view.receipts_with_address(key))
    return [v for v in views if v is not None]


def latest_receipt(view: LedgerView, key: str) -> str | None:
    """The newest receipt of the address, which an access link names; None when the address is not held."""
    found = view.receipts_with_address(key, limit=1)
    return found[0] if found else None


def record(txn: LedgerTxn, view: ReceiptView, action: str, *, via: str) -> list[Entry]:
    """Append what `action` records for the receipt (re-read inside this transaction); [] when already done."""
    now = load(txn, view.receipt_id)
    if now is None:  # a consent is never deleted; guard anyway rather than append to nothing
        raise UnknownReceipt("No receipt with this id is in our records.", "receipt_id")
    if action not in now.available():
        return []
    if action == "withdraw":
        return [txn.append("withdrawal", now.receipt_id, via=via)]
    if action in ONE_CONSENT:
        # Naming the one consent, set false, withdraws it and nothing else (types.withdrawn_consents).
        return [txn.append("withdrawal", now.receipt_id, via=via, **{ONE_CONSENT[action]: False})]
    # The erasure entry first, with its `via`; LedgerTxn.erase then deletes the personal data and the queued
    # mail, and finds this entry instead of appending another (one transaction: both or neither).
    entry = txn.append("erasure", now.receipt_id, via=via)
    txn.erase(now.receipt_id)
    return [entry]
