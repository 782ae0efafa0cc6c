"""The reads behind consent self-service (the manage page, the receipt file, "what do you hold about me?").

Every function takes a view of this backend (the SQLite LedgerTxn that `Ledger.read(fn)` and `submit(op)` hand
out: a read snapshot, or the writer's transaction when a decision is made again before appending) and uses
its connection here, inside ledger/sqlite/, so consent code never holds one. (For the PostgreSQL backend these
become LedgerView methods of the same names.) Rows are looked up through indexes only:
entries by (receipt_id, kind), personal data by its primary key or by `email_key` (schema 4). Nothing a
visitor can trigger reads more than one receipt's entries, or one address's receipts, so a request costs
the same at any size of ledger.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import apsw

def _conn(view: Any) -> apsw.Connection:
    connection: apsw.Connection = view.connection
    return connection


# The most receipts one address's page lists; an address with more is shown the newest ones.
MAX_RECEIPTS = 200


@dataclass(frozen=True)
class EntryRow:
    """One chained entry of a receipt, as stored."""

    seq: int
    entry_hash: str
    kind: str
    recorded_at: str
    fields: dict[str, Any]


@dataclass(frozen=True)
class PersonalRow:
    """A receipt's erasable personal data, while it exists."""

    email: str | None
    message: str
    page: str | None
    email_key: str | None


def receipt_entries(view: Any, receipt_id: str) -> list[EntryRow]:
    """Every entry of one receipt in chain order (the entries_receipt index); [] for an unknown receipt."""
    rows = _conn(view).execute(
        "SELECT seq, hash, kind, recorded_at, canonical FROM entries WHERE receipt_id = ? ORDER BY seq",
        (receipt_id,),
    )
    out = []
    for seq, digest, kind, recorded_at, data in rows:
        fields = json.loads(data)
        out.append(EntryRow(int(seq), str(digest), str(kind), str(recorded_at), fields if isinstance(fields, dict) else {}))
    return out


def personal(view: Any, receipt_id: str) -> PersonalRow | None:
    """The receipt's address, message and page (its primary key); None once erased."""
    for email, message, page, key in _conn(view).execute(
        "SELECT email, message, page, email_key FROM personal WHERE receipt_id = ?", (receipt_id,)
    ):
        return PersonalRow(email, str(message), page, key)
    return None


def receipts_of_address(view: Any, key: str, *, limit: int = MAX_RECEIPTS) -> list[str]:
    """The ids of the receipts that carry the address `key` (addresses.email_key), newest first.

    Through the personal_email_key index (email_key, receipt_id): receipt ids start with the time, so
    the index order is the time order."""
    rows = _conn(view).execute(
        "SELECT receipt_id FROM personal WHERE email_key = ? ORDER BY receipt_id DESC LIMIT ?", (key, limit)
    )
    return [str(r[0]) for r in rows]


def oldest_quota_row(view: Any, recipient_hmac: str) -> str | None:
    """When the oldest mail still counted against this keyed address was queued (mail/quota.py's table), or None.

    Tells a refused access request when a place frees up; the (recipient_hmac, queued_at) index answers it."""
    for (at,) in _conn(view).execute("SELECT min(queued_at) FROM mail_quota WHERE recipient_hmac = ?", (recipient_hmac,)):
        return None if at is None else str(at)
    return None
