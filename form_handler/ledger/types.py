"""The ledger's errors and the values that cross its boundary (drafts, receipts, entries, statuses)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import apsw


class LedgerError(Exception):
    """Base class of every ledger error."""


class LedgerUnavailable(LedgerError):
    """The ledger cannot be written now (disk full, read-only, busy); retrying later may work."""


class LedgerRefusal(LedgerError):
    """A request the ledger refuses; `field` names the offending input."""

    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.field = field


class UnknownReceipt(LedgerRefusal):
    pass


class InvalidToken(LedgerRefusal):
    pass


# The apsw errors that mean "cannot write now", not "the request is wrong".
UNAVAILABLE_ERRORS = (
    apsw.FullError, apsw.ReadOnlyError, apsw.IOError, apsw.CantOpenError,
    apsw.BusyError, apsw.LockedError, apsw.PermissionsError,
)
# For readers, also a file that is not (or no longer) a database: reading may work again once it is
# restored, and a page that reads the ledger answers 503 meanwhile, not 500.
READ_UNAVAILABLE_ERRORS = (*UNAVAILABLE_ERRORS, apsw.NotADBError, apsw.CorruptError)


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
