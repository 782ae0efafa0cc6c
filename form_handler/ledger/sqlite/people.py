"""The reads behind consent/subscribers.py on SQLite: a policy's receipts, an address's receipts, what changed since.

A mixin of LedgerTxn (store.py), so the same reads run on a pooled read snapshot or inside the writer's
transaction. consent/subscribers.py decides who stands where from the rows; only the SQL is here.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import apsw

from form_handler.ledger.contract import AddressRow, ConsentAddress, EntryRow

# Every entry of every receipt of the policy that still has an address, address by address (personal.email_key,
# written with the address by addresses.email_key, schema 4), in ledger order within each address. SQLite sorts
# in its temp store, which spills to temporary files beyond the page cache's size, so Python never holds more
# than the entries of one address. An erased receipt has no `personal` row and drops out.
# (Sorting on a Python function registered on the connection instead took twice as long: one call per row.)
_BY_ADDRESS_SQL = (
    "SELECT p.email_key, e.seq, e.kind, e.receipt_id, e.recorded_at, e.policy_version, e.consent_updates,"
    " p.email, e.consent_contact, e.consent_third_parties FROM entries c JOIN personal p ON p.receipt_id = c.receipt_id"
    " JOIN entries e ON e.receipt_id = c.receipt_id"
    " WHERE c.kind = 'consent' AND c.policy_id = ? AND p.email IS NOT NULL AND p.email <> ''"
    " ORDER BY p.email_key, e.seq"
)
# Every entry of every receipt whose consent was for this policy, in chain order.
_POLICY_SQL = (
    "SELECT e.seq, e.kind, e.receipt_id, e.recorded_at, e.policy_version, e.consent_updates, p.email,"
    " e.consent_contact, e.consent_third_parties"
    " FROM entries e JOIN entries c ON c.receipt_id = e.receipt_id AND c.kind = 'consent'"
    " LEFT JOIN personal p ON p.receipt_id = e.receipt_id"
    " WHERE c.policy_id = ?"
)


class PeopleReads:
    connection: apsw.Connection

    def policy_entries(self, policy_id: str, only: tuple[str, ...] | None = None) -> Iterator[EntryRow]:
        """Every entry of the policy's receipts (or of the receipts `only`), in chain order, with the address."""
        if only is None:
            rows = self.connection.execute(_POLICY_SQL + " ORDER BY e.seq", (policy_id,))
        else:
            # The receipt ids travel as one bound JSON array; the receipt index finds each one.
            rows = self.connection.execute(
                _POLICY_SQL + " AND e.receipt_id IN (SELECT value FROM json_each(?)) ORDER BY e.seq",
                (policy_id, json.dumps(list(only))),
            )
        for row in rows:
            yield tuple(row)

    def entries_by_address(self, policy_id: str) -> Iterator[AddressRow]:
        """The policy's entries of receipts with an address, sorted by address (email_key), then seq."""
        for row in self.connection.execute(_BY_ADDRESS_SQL, (policy_id,)):
            yield tuple(row)

    def consent_address(self, receipt_id: str) -> ConsentAddress | None:
        row: Any = self.connection.execute(
            "SELECT c.policy_id, p.email, p.email_key, c.consent_third_parties FROM entries c"
            " LEFT JOIN personal p ON p.receipt_id = c.receipt_id WHERE c.receipt_id = ? AND c.kind = 'consent'",
            (receipt_id,),
        ).fetchone()
        return None if row is None else (str(row[0]), row[1], row[2], row[3])

    def receipts_of_address(self, policy_id: str, key: str) -> tuple[str, ...]:
        # personal_email_key finds the address's rows; entries_receipt each one's consent (schema 4).
        rows = self.connection.execute(
            "SELECT p.receipt_id FROM personal p JOIN entries c ON c.receipt_id = p.receipt_id AND c.kind = 'consent'"
            " WHERE p.email_key = ? AND c.policy_id = ? ORDER BY p.receipt_id",
            (key, policy_id),
        )
        return tuple(r[0] for r in rows)

    def head_entry(self) -> tuple[int, str] | None:
        row: Any = self.connection.execute("SELECT seq, hash FROM entries ORDER BY seq DESC LIMIT 1").fetchone()
        return None if row is None else (int(row[0]), str(row[1]))

    def hash_at(self, seq: int) -> str | None:
        row: Any = self.connection.execute("SELECT hash FROM entries WHERE seq = ?", (seq,)).fetchone()
        return None if row is None else str(row[0])

    def touched_since(self, seq: int, receipt_ids: tuple[str, ...], policy_id: str, key: str | None) -> bool:
        """Whether an entry after `seq` is of one of `receipt_ids`, or a consent from address `key` for the policy."""
        # The unary + keep SQLite off the receipt index: the seq range (the rowid) is the short way here.
        row = self.connection.execute(
            "SELECT 1 FROM entries e WHERE e.seq > ? AND (+e.receipt_id IN (SELECT value FROM json_each(?))"
            " OR (+e.kind = 'consent' AND +e.policy_id = ? AND EXISTS (SELECT 1 FROM personal p"
            " WHERE p.receipt_id = e.receipt_id AND p.email_key = ?))) LIMIT 1",
            (seq, json.dumps(list(receipt_ids)), policy_id, key),
        ).fetchone()
        return row is not None

    # --- self-service reads (sqlite/selfservice.py), as contract.LedgerView methods -------------------

    def receipt_entries(self, receipt_id: str) -> list[Any]:
        from form_handler.ledger.sqlite import selfservice

        return selfservice.receipt_entries(self, receipt_id)

    def personal_data(self, receipt_id: str) -> Any:
        from form_handler.ledger.sqlite import selfservice

        return selfservice.personal(self, receipt_id)

    def receipts_with_address(self, key: str, *, limit: int = 200) -> list[str]:
        from form_handler.ledger.sqlite import selfservice

        return selfservice.receipts_of_address(self, key, limit=limit)

    def oldest_quota_row(self, recipient_hmac: str) -> str | None:
        from form_handler.ledger.sqlite import selfservice

        return selfservice.oldest_quota_row(self, recipient_hmac)
