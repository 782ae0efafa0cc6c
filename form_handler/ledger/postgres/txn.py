"""The ledger's operations inside one PostgreSQL transaction: appends, withdrawals, erasure, the reads of
consent/subscribers.py, the outbox, the mail quota and meta. The SQL twin of ledger/sqlite/store.py's LedgerTxn
with people.py and mailbox.py; the rules are the same and live outside (chain.py, drafts.py, mail/, consent/).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import psycopg

from form_handler.consent.addresses import email_key
from form_handler.ledger.chain import (
    ENTRY_VERSION, FLAG_COLUMNS, GENESIS, RESERVED, TEXT_COLUMNS, canonical, commitment, entry_hash, utc_now,
)
from form_handler.ledger.contract import AddressRow, ClaimedMail, ConsentAddress, EntryRow
from form_handler.ledger.drafts import (
    _check_fields, _check_text, check_append, check_withdraw_token, new_receipt_secrets, token_digest,
)
from form_handler.ledger.postgres.schema import APPEND_LOCK
from form_handler.ledger.types import (
    ConsentDraft, Entry, LedgerRefusal, Receipt, ReceiptStatus, UnknownReceipt,
)

# The withdrawal rule (types.withdraws_all) as SQL over an entries row: one naming no consent withdraws them all.
WITHDRAWS_ALL = ("kind = 'withdrawal' AND consent_contact IS NULL AND consent_updates IS NULL"
                 " AND consent_third_parties IS NULL")
# Rows fetched per round trip when a read streams (a person at a time, an export).
STREAM_ROWS = 2000

_POLICY_SQL = (
    "SELECT e.seq, e.kind, e.receipt_id, e.recorded_at, e.policy_version, e.consent_updates, p.email,"
    " e.consent_contact, e.consent_third_parties"
    " FROM entries e JOIN entries c ON c.receipt_id = e.receipt_id AND c.kind = 'consent'"
    " LEFT JOIN personal p ON p.receipt_id = e.receipt_id WHERE c.policy_id = %s"
)
_BY_ADDRESS_SQL = (
    "SELECT p.email_key, e.seq, e.kind, e.receipt_id, e.recorded_at, e.policy_version, e.consent_updates,"
    " p.email, e.consent_contact, e.consent_third_parties FROM entries c JOIN personal p ON p.receipt_id = c.receipt_id"
    " JOIN entries e ON e.receipt_id = c.receipt_id"
    " WHERE c.kind = 'consent' AND c.policy_id = %s AND p.email IS NOT NULL AND p.email <> ''"
    # COLLATE "C": the order of the bytes, as SQLite sorts; each_person needs one address's rows together.
    ' ORDER BY p.email_key COLLATE "C", e.seq'
)
# A queued mail whose receipt has since been withdrawn or erased is given up, its address and message dropped
# (see ledger/sqlite/mailbox.py for the rule: also once neither updates nor third-party sharing waits for it).
_CANCEL_WITHDRAWN = (
    "UPDATE outbox SET gave_up_at = %(now)s, claimed_until = NULL, recipient = '', message = '\\x'::bytea,"
    " last_error = 'consent withdrawn or erased before sending'"
    " WHERE sent_at IS NULL AND gave_up_at IS NULL AND EXISTS (SELECT 1 FROM entries w"
    " WHERE w.receipt_id = outbox.receipt_id AND (w.kind = 'erasure' OR (w.kind = 'withdrawal'"
    " AND ((w.consent_contact IS NULL AND w.consent_updates IS NULL AND w.consent_third_parties IS NULL)"
    " OR NOT EXISTS (SELECT 1 FROM entries c"
    " WHERE c.receipt_id = outbox.receipt_id AND c.kind = 'consent' AND ((c.consent_updates <> 0 AND NOT EXISTS"
    " (SELECT 1 FROM entries u WHERE u.receipt_id = c.receipt_id AND u.kind = 'withdrawal'"
    " AND u.consent_updates IS NOT NULL)) OR (c.consent_third_parties <> 0 AND NOT EXISTS (SELECT 1 FROM entries t"
    " WHERE t.receipt_id = c.receipt_id AND t.kind = 'withdrawal' AND t.consent_third_parties IS NOT NULL))))))))"
)


class PgTxn:
    """Operations on one connection inside one open transaction (a write one, or a REPEATABLE READ snapshot)."""

    def __init__(self, connection: psycopg.Connection[Any]) -> None:
        self.connection = connection
        self._locked = False
        # The head after our own last append: while we hold the append lock nobody else appends, so the next
        # append need not read it again. forget_head() after an operation's SAVEPOINT was rolled back.
        self._head: tuple[int, str] | None = None

    def forget_head(self) -> None:
        """Read the head from the table at the next append (an operation's appends may have been rolled back)."""
        self._head = None

    def _one(self, sql: str, params: Any = ()) -> tuple[Any, ...] | None:
        row = self.connection.execute(sql, params).fetchone()
        return None if row is None else tuple(row)

    def _stream(self, sql: str, params: Any) -> Iterator[tuple[Any, ...]]:
        # A server-side cursor: rows arrive STREAM_ROWS at a time, so memory does not grow with the ledger.
        with self.connection.cursor(name=f"stream_{id(self):x}") as cur:
            cur.itersize = STREAM_ROWS
            cur.execute(sql, params)
            for row in cur:
                yield tuple(row)

    # --- appends ---------------------------------------------------------------------------------------

    def append(self, kind: str, receipt_id: str, **fields: Any) -> Entry:
        """Append a chained entry of `kind` for an existing receipt, e.g. "confirmation" or "notice"."""
        check_append(kind, fields)
        if self._one("SELECT 1 FROM entries WHERE receipt_id = %s AND kind = 'consent'", (receipt_id,)) is None:
            raise UnknownReceipt(f"receipt_id {receipt_id!r} is not in the ledger.", "receipt_id")
        return self._append(kind, receipt_id, fields)

    def _append(self, kind: str, receipt_id: str, fields: dict[str, Any],
                personal: tuple[Any, ...] | None = None) -> Entry:
        if not self._locked:
            # One appender at a time across every instance, until this transaction ends: the head read next is
            # the newest committed one (READ COMMITTED reads it after the lock is ours), so the chain never forks;
            # prev_hash UNIQUE would refuse a fork anyway.
            self.connection.execute("SELECT pg_advisory_xact_lock(%s)", (APPEND_LOCK,))
            self._locked = True
        head = self._head or self._one("SELECT seq, hash FROM entries ORDER BY seq DESC LIMIT 1")
        seq, prev = (int(head[0]) + 1, str(head[1])) if head else (1, GENESIS)
        recorded_at = utc_now()
        entry = {"v": ENTRY_VERSION, "seq": seq, "kind": kind, "receipt_id": receipt_id, "recorded_at": recorded_at,
                 **fields}
        try:
            data = canonical(entry)
        except (TypeError, ValueError) as e:
            raise ValueError(f"ledger entry fields must be JSON values: {e}.") from None
        digest = entry_hash(prev, data)
        cols = [fields.get(n) for n in TEXT_COLUMNS] + [
            None if fields.get(n) is None else int(fields[n]) for n in FLAG_COLUMNS
        ]
        insert = (
            "INSERT INTO entries (seq, prev_hash, hash, canonical, kind, receipt_id, recorded_at, policy_id,"
            " policy_version, page, commitment, consent_contact, consent_updates, consent_third_parties)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
        )
        params = (seq, prev, digest, data, kind, receipt_id, recorded_at, *cols)
        if personal is None:
            self.connection.execute(insert, params)
        else:
            # A consent's personal row in the same statement: one round trip for the whole submission.
            self.connection.execute(
                f"WITH e AS ({insert} RETURNING receipt_id) INSERT INTO personal"
                " (receipt_id, salt, email, message, page, email_key)"
                " SELECT e.receipt_id, %s::bytea, %s::text, %s::text, %s::text, %s::text FROM e",
                (*params, *personal),
            )
        self._head = (seq, digest)
        return Entry(seq, digest, prev, kind, receipt_id, recorded_at, dict(fields))

    def append_consent(self, draft: ConsentDraft) -> Receipt:
        """Record a submission: the chained consent entry plus its erasable personal data."""
        for name in ("policy_id", "policy_version", "page", "message"):
            _check_text(name, getattr(draft, name))
        _check_text("email", draft.email, optional=True)
        flags = {n: getattr(draft, n) for n in FLAG_COLUMNS}
        _check_fields(flags)
        for name in ("policy_id", "policy_version", "page", "message", "email"):
            if "\x00" in (getattr(draft, name) or ""):  # PostgreSQL text cannot hold NUL; the form refuses it first
                raise LedgerRefusal(f"{name} may not contain NUL characters.", name)
        receipt_id, token, salt = new_receipt_secrets()
        fields = {
            "policy_id": draft.policy_id, "policy_version": draft.policy_version, **flags,
            "commitment": commitment(salt, draft.email, draft.message, draft.page, v=ENTRY_VERSION),
            "withdraw_token_sha256": token_digest(token),
        }
        entry = self._append("consent", receipt_id, fields, personal=(
            salt, draft.email, draft.message, draft.page, None if draft.email is None else email_key(draft.email)))
        return Receipt(
            receipt_id, entry.recorded_at, draft.policy_id, draft.policy_version, draft.consent_contact,
            draft.consent_updates, draft.consent_third_parties, token, entry.seq, entry.entry_hash,
        )

    def _existing(self, kind: str, receipt_id: str) -> Entry | None:
        row = self._one(
            "SELECT seq, hash, prev_hash, recorded_at, canonical FROM entries WHERE receipt_id = %s AND kind = %s"
            f" AND (kind <> 'withdrawal' OR ({WITHDRAWS_ALL})) ORDER BY seq LIMIT 1", (receipt_id, kind),
        )
        if row is None:
            return None
        fields = {k: v for k, v in json.loads(bytes(row[4])).items() if k not in RESERVED}
        return Entry(int(row[0]), row[1], row[2], kind, receipt_id, row[3], fields)

    def _consent(self, receipt_id: object) -> Entry:
        entry = self._existing("consent", receipt_id) if isinstance(receipt_id, str) and "\x00" not in receipt_id else None
        if entry is None:
            raise UnknownReceipt(f"receipt_id {receipt_id!r} is not in the ledger.", "receipt_id")
        return entry

    def withdraw(self, receipt_id: str, token: str) -> Entry:
        """Withdraw every consent of a receipt. Idempotent: a second call returns the first withdrawal."""
        consent = self._consent(receipt_id)
        check_withdraw_token(consent, token)
        return self._existing("withdrawal", receipt_id) or self._append("withdrawal", receipt_id, {})

    def erase(self, receipt_id: str) -> Entry:
        """Delete the receipt's email, message, page and salt, and its mail; idempotent. PgLedger.erase then
        rewrites the partition so no copy stays in the data files."""
        self._consent(receipt_id)
        self.connection.execute("DELETE FROM personal WHERE receipt_id = %s", (receipt_id,))
        self.forget_mail(receipt_id)
        return self._existing("erasure", receipt_id) or self._append("erasure", receipt_id, {})

    def status(self, receipt_id: str) -> ReceiptStatus:
        self._consent(receipt_id)
        withdrawn = self._existing("withdrawal", receipt_id) is not None
        return ReceiptStatus(receipt_id, withdrawn, self._existing("erasure", receipt_id) is not None)

    # --- reads for consent/subscribers.py --------------------------------------------------------------

    def policy_entries(self, policy_id: str, only: tuple[str, ...] | None = None) -> Iterator[EntryRow]:
        if only is None:
            rows: Iterator[tuple[Any, ...]] = self._stream(_POLICY_SQL + " ORDER BY e.seq", (policy_id,))
        else:
            rows = iter(self.connection.execute(
                _POLICY_SQL + " AND e.receipt_id = ANY(%s) ORDER BY e.seq", (policy_id, list(only))).fetchall())
        for row in rows:
            yield (int(row[0]), *row[1:])

    def entries_by_address(self, policy_id: str) -> Iterator[AddressRow]:
        for row in self._stream(_BY_ADDRESS_SQL, (policy_id,)):
            yield (row[0], int(row[1]), *row[2:])

    def consent_address(self, receipt_id: str) -> ConsentAddress | None:
        row = self._one(
            "SELECT c.policy_id, p.email, p.email_key, c.consent_third_parties FROM entries c"
            " LEFT JOIN personal p ON p.receipt_id = c.receipt_id WHERE c.receipt_id = %s AND c.kind = 'consent'",
            (receipt_id,),
        )
        return None if row is None else (str(row[0]), row[1], row[2], row[3])

    def receipts_of_address(self, policy_id: str, key: str) -> tuple[str, ...]:
        rows = self.connection.execute(
            "SELECT p.receipt_id FROM personal p JOIN entries c ON c.receipt_id = p.receipt_id AND c.kind = 'consent'"
            ' WHERE p.email_key = %s AND c.policy_id = %s ORDER BY p.receipt_id COLLATE "C"',
            (key, policy_id),
        ).fetchall()
        return tuple(r[0] for r in rows)

    def head_entry(self) -> tuple[int, str] | None:
        row = self._one("SELECT seq, hash FROM entries ORDER BY seq DESC LIMIT 1")
        return None if row is None else (int(row[0]), str(row[1]))

    def hash_at(self, seq: int) -> str | None:
        row = self._one("SELECT hash FROM entries WHERE seq = %s", (seq,))
        return None if row is None else str(row[0])

    def touched_since(self, seq: int, receipt_ids: tuple[str, ...], policy_id: str, key: str | None) -> bool:
        row = self._one(
            "SELECT 1 FROM entries e WHERE e.seq > %s AND (e.receipt_id = ANY(%s)"
            " OR (e.kind = 'consent' AND e.policy_id = %s AND EXISTS (SELECT 1 FROM personal p"
            " WHERE p.receipt_id = e.receipt_id AND p.email_key = %s))) LIMIT 1",
            (seq, list(receipt_ids), policy_id, key),
        )
        return row is not None

    # --- the outbox, the mail quota, meta ----------------------------------------------------------------

    def enqueue_mail(self, receipt_id: str, kind: str, recipient: str, message: bytes, at: str) -> int:
        row = self._one(
            "INSERT INTO outbox (receipt_id, kind, recipient, message, created_at, next_attempt_at)"
            " VALUES (%s, %s, %s, %s, %s, %s) RETURNING id",
            (receipt_id, kind, recipient, message, at, at),
        )
        assert row is not None
        return int(row[0])

    def forget_mail(self, receipt_id: str) -> int:
        return self.connection.execute("DELETE FROM outbox WHERE receipt_id = %s", (receipt_id,)).rowcount

    def claim_mail(self, *, now: str, lease_until: str, limit: int) -> list[ClaimedMail]:
        self.connection.execute(_CANCEL_WITHDRAWN, {"now": now})
        rows = self.connection.execute(
            "UPDATE outbox SET claimed_until = %(lease)s WHERE id IN ("
            " SELECT id FROM outbox WHERE sent_at IS NULL AND gave_up_at IS NULL AND next_attempt_at <= %(now)s"
            " AND (claimed_until IS NULL OR claimed_until <= %(now)s) ORDER BY next_attempt_at, id LIMIT %(limit)s"
            " FOR UPDATE SKIP LOCKED) RETURNING id, attempts, message",
            {"lease": lease_until, "now": now, "limit": limit},
        ).fetchall()
        return sorted((int(r[0]), int(r[1]), bytes(r[2])) for r in rows)

    def mark_mail_sent(self, row_id: int, *, at: str) -> None:
        self.connection.execute(
            "UPDATE outbox SET sent_at = %s, claimed_until = NULL, recipient = '', message = '\\x'::bytea,"
            " attempts = attempts + 1, last_error = NULL WHERE id = %s AND sent_at IS NULL",
            (at, row_id),
        )

    def mark_mail_failed(self, row_id: int, *, attempts: int, error: str, next_at: str, gave_up_at: str | None) -> None:
        self.connection.execute(
            "UPDATE outbox SET attempts = %(attempts)s, last_error = %(error)s, claimed_until = NULL,"
            " next_attempt_at = %(next)s, gave_up_at = %(gave_up)s::text,"
            " recipient = CASE WHEN %(gave_up)s::text IS NULL THEN recipient ELSE '' END,"
            " message = CASE WHEN %(gave_up)s::text IS NULL THEN message ELSE '\\x'::bytea END"
            " WHERE id = %(id)s AND sent_at IS NULL",
            {"attempts": attempts, "error": error.replace("\x00", ""), "next": next_at, "gave_up": gave_up_at,
             "id": row_id},
        )

    def mail_still_claimed(self, row_id: int) -> bool:
        return self._one(
            "SELECT 1 FROM outbox WHERE id = %s AND sent_at IS NULL AND gave_up_at IS NULL AND claimed_until IS NOT NULL",
            (row_id,),
        ) is not None

    def next_mail_due(self) -> str | None:
        row = self._one("SELECT min(next_attempt_at) FROM outbox WHERE sent_at IS NULL AND gave_up_at IS NULL")
        return None if row is None or row[0] is None else str(row[0])

    def mail_counts(self) -> dict[str, int]:
        row = self._one(
            "SELECT count(*) FILTER (WHERE sent_at IS NULL AND gave_up_at IS NULL),"
            " count(*) FILTER (WHERE sent_at IS NOT NULL), count(*) FILTER (WHERE gave_up_at IS NOT NULL) FROM outbox"
        )
        assert row is not None
        return {"queued": int(row[0]), "sent": int(row[1]), "gave_up": int(row[2])}

    def take_mail_quota(self, digest: str, *, since: str, at: str, limit: int) -> bool:
        # Serialised per address (a transaction-level advisory lock on its hash), so two submissions at once
        # cannot both take the last place; the count and the insert are then one step.
        self.connection.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (digest,))
        self.expire_mail_quota(since)
        row = self._one("SELECT count(*) FROM mail_quota WHERE recipient_hmac = %s AND queued_at > %s", (digest, since))
        if row is not None and int(row[0]) >= limit:
            return False
        self.connection.execute("INSERT INTO mail_quota (recipient_hmac, queued_at) VALUES (%s, %s)", (digest, at))
        return True

    def expire_mail_quota(self, before: str) -> int:
        return self.connection.execute("DELETE FROM mail_quota WHERE queued_at <= %s", (before,)).rowcount

    def meta_get(self, name: str) -> str | None:
        row = self._one("SELECT value FROM meta WHERE name = %s", (name,))
        return None if row is None else str(row[0])

    def meta_set(self, name: str, value: str) -> None:
        self.connection.execute(
            "INSERT INTO meta (name, value) VALUES (%s, %s) ON CONFLICT (name) DO UPDATE SET value = excluded.value",
            (name, value),
        )

    def meta_delete(self, name: str, value: str) -> None:
        self.connection.execute("DELETE FROM meta WHERE name = %s AND value = %s", (name, value))

    # --- self-service reads (postgres/selfservice.py), as contract.LedgerView methods -------------------

    def receipt_entries(self, receipt_id: str) -> list[Any]:
        from form_handler.ledger.postgres import selfservice

        return selfservice.receipt_entries(self, receipt_id)

    def personal_data(self, receipt_id: str) -> Any:
        from form_handler.ledger.postgres import selfservice

        return selfservice.personal(self, receipt_id)

    def receipts_with_address(self, key: str, *, limit: int = 200) -> list[str]:
        from form_handler.ledger.postgres import selfservice

        return selfservice.receipts_of_address(self, key, limit=limit)

    def oldest_quota_row(self, recipient_hmac: str) -> str | None:
        from form_handler.ledger.postgres import selfservice

        return selfservice.oldest_quota_row(self, recipient_hmac)
