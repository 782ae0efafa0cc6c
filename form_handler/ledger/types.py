"""The ledger's errors and the values that cross its boundary (drafts, receipts, entries, statuses)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


class LedgerError(Exception):
    """Base class of every ledger error."""


class LedgerUnavailable(LedgerError):
    """The ledger cannot be written now (disk full, read-only, busy); retrying later may work."""


class LedgerOutcomeUnknown(LedgerUnavailable):
    """The writer was lost between taking an operation and answering: it may have been committed or not."""


class LedgerRefusal(LedgerError):
    """A request the ledger refuses; `field` names the offending input."""

    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.field = field

    def __reduce__(self) -> tuple[Any, ...]:
        # Refusals cross from the writer process to the service (writer_process.py) as pickles. Rebuilt from its
        # args and attributes without calling __init__, so a subclass with another signature (mail_routes.LinkUsed)
        # or its own __str__ needs nothing of its own.
        return (_new_refusal, (type(self), self.args), self.__dict__)


def _new_refusal(cls: type[LedgerRefusal], args: tuple[Any, ...]) -> LedgerRefusal:
    return cls.__new__(cls, *args)  # BaseException.__new__ keeps args; pickle then sets the attributes


class UnknownReceipt(LedgerRefusal):
    pass


class InvalidToken(LedgerRefusal):
    pass




# The consents a withdrawal can name, as chained (chain.FLAG_COLUMNS, in the same order).
CONSENTS = ("consent_contact", "consent_updates", "consent_third_parties")


def withdraws_all(kind: str, contact: object, updates: object, third_parties: object) -> bool:
    """The rule for withdrawals: one naming no consent (its consent_contact, consent_updates and
    consent_third_parties all None) withdraws every consent of its receipt; see withdrawn_consents."""
    return kind == "withdrawal" and contact is None and updates is None and third_parties is None


def withdrawn_consents(kind: str, contact: object, updates: object, third_parties: object) -> frozenset[str]:
    """The consents an entry withdraws: all of them for a withdrawal naming none, else exactly those it names
    (set to false; the e-mail unsubscribe names consent_updates). Not NULL rather than false decides, as the
    SQL of both backends reads the columns; LedgerTxn.append refuses a withdrawal naming a consent true."""
    if kind != "withdrawal":
        return frozenset()
    if withdraws_all(kind, contact, updates, third_parties):
        return frozenset(CONSENTS)
    return frozenset(n for n, v in zip(CONSENTS, (contact, updates, third_parties)) if v is not None)


@dataclass(frozen=True)
class ConsentDraft:
    policy_id: str
    policy_version: str
    page: str
    message: str
    email: str | None
    consent_contact: bool
    consent_updates: bool
    consent_third_parties: bool


@dataclass(frozen=True)
class Receipt:
    receipt_id: str
    recorded_at: str
    policy_id: str
    policy_version: str
    consent_contact: bool
    consent_updates: bool
    consent_third_parties: bool
    withdraw_token: str = field(repr=False)
    seq: int
    entry_hash: str


@dataclass(frozen=True)
class Entry:
    seq: int
    entry_hash: str
    prev_hash: str
    kind: str
    receipt_id: str
    recorded_at: str
    fields: dict[str, Any]


@dataclass(frozen=True)
class ReceiptStatus:
    receipt_id: str
    withdrawn: bool
    erased: bool

    @property
    def standing(self) -> bool:
        return not (self.withdrawn or self.erased)
