"""The tables beside the chain on SQLite: the mail outbox, the per-address mail quota and `meta` (name/value).

A mixin of LedgerTxn (store.py): each method runs inside the caller's transaction. The rules (back-off,
leases, what a row keeps once sent) are in form_handler/mail/; only the SQL is here. The tables are
created by migration 6 (schema.py), never lazily.
"""

from __future__ import annotations

from typing import Any

import apsw

from form_handler.ledger.contract import ClaimedMail

# A queued mail whose receipt has since been withdrawn or erased must not go out. The only mail queued is the
# confirmation of change e-mails and/or third-party sharing, so a withdrawal of those consents on their own
# (the e-mail unsubscribe withdraws updates) cancels it too, once neither of them still waits for it: each was
# not given, or a withdrawal named it. Such rows are given up with their address and message dropped, in the
# claim's own transaction.
_CANCEL_WITHDRAWN = (
    "UPDATE outbox SET gave_up_at = ?1, claimed_until = NULL, recipient = '', message = x'',"
    " last_error = 'consent withdrawn or erased before sending'"
    " WHERE sent_at IS NULL AND gave_up_at IS NULL AND EXISTS (SELECT 1 FROM entries w"
    " WHERE w.receipt_id = outbox.receipt_id AND (w.kind = 'erasure' OR (w.kind = 'withdrawal'"
    " AND ((w.consent_contact IS NULL AND w.consent_updates IS NULL AND w.consent_third_parties IS NULL)"
    " OR NOT EXISTS (SELECT 1 FROM entries c"
    " WHERE c.receipt_id = outbox.receipt_id AND c.kind = 'consent' AND ((c.consent_updates AND NOT EXISTS"
    " (SELECT 1 FROM entries u WHERE u.receipt_id = c.receipt_id AND u.kind = 'withdrawal'"
    " AND u.consent_updates IS NOT NULL)) OR (c.consent_third_parties AND NOT EXISTS (SELECT 1 FROM entries t"
    " WHERE t.receipt_id = c.receipt_id AND t.kind = 'withdrawal' AND t.consent_third_parties IS NOT NULL))))))))"
)


class MailTables:
    connection: apsw.Connection

    def enqueue_mail(self, receipt_id: str, kind: str, recipient: str, message: bytes, at: str) -> int:
        self.connection.execute(
            "INSERT INTO outbox (receipt_id, kind, recipient, message, created_at, next_attempt_at)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (receipt_id, kind, recipient, message, at, at),
        )
        return int(self.connection.last_insert_rowid())

    def forget_mail(self, receipt_id: str) -> int:
        self.connection.execute("DELETE FROM outbox WHERE receipt_id = ?", (receipt_id,))
        return int(self.connection.changes())

    def claim_mail(self, *, now: str, lease_until: str, limit: int) -> list[ClaimedMail]:
        self.connection.execute(_CANCEL_WITHDRAWN, (now,))
        rows: list[Any] = self.connection.execute(
            "UPDATE outbox SET claimed_until = ?1 WHERE id IN ("
            " SELECT id FROM outbox WHERE sent_at IS NULL AND gave_up_at IS NULL AND next_attempt_at <= ?2"
            " AND (claimed_until IS NULL OR claimed_until <= ?2) ORDER BY next_attempt_at, id LIMIT ?3)"
            " RETURNING id, attempts, message",
            (lease_until, now, limit),
        ).fetchall()
        return sorted((int(r[0]), int(r[1]), bytes(r[2])) for r in rows)

    def mark_mail_sent(self, row_id: int, *, at: str) -> None:
        # The address and the message are dropped once sent: the row stays only to say it was sent.
        self.connection.execute(
            "UPDATE outbox SET sent_at = ?, claimed_until = NULL, recipient = '', message = x'',"
            " attempts = attempts + 1, last_error = NULL WHERE id = ? AND sent_at IS NULL",
            (at, row_id),
        )

    def mark_mail_failed(self, row_id: int, *, attempts: int, error: str, next_at: str, gave_up_at: str | None) -> None:
        # A row given up is never tried again, so like a sent one it keeps no address and no message.
        self.connection.execute(
            "UPDATE outbox SET attempts = ?1, last_error = ?2, claimed_until = NULL, next_attempt_at = ?3,"
            " gave_up_at = ?4, recipient = CASE WHEN ?4 IS NULL THEN recipient ELSE '' END,"
            " message = CASE WHEN ?4 IS NULL THEN message ELSE x'' END WHERE id = ?5 AND sent_at IS NULL",
            (attempts, error, next_at, gave_up_at, row_id),
        )

    def mail_still_claimed(self, row_id: int) -> bool:
        row = self.connection.execute(
            "SELECT 1 FROM outbox WHERE id = ? AND sent_at IS NULL AND gave_up_at IS NULL AND claimed_until IS NOT NULL",
            (row_id,),
        ).fetchone()
        return row is not None

    def next_mail_due(self) -> str | None:
        row: Any = self.connection.execute(
            "SELECT min(next_attempt_at) FROM outbox WHERE sent_at IS NULL AND gave_up_at IS NULL"
        ).fetchone()
        return None if row is None or row[0] is None else str(row[0])

    def mail_counts(self) -> dict[str, int]:
        row: Any = self.connection.execute(
            "SELECT count(*) FILTER (WHERE sent_at IS NULL AND gave_up_at IS NULL),"
            " count(*) FILTER (WHERE sent_at IS NOT NULL), count(*) FILTER (WHERE gave_up_at IS NOT NULL)"
            " FROM outbox"
        ).fetchone()
        return {"queued": int(row[0]), "sent": int(row[1]), "gave_up": int(row[2])}

    def take_mail_quota(self, digest: str, *, since: str, at: str, limit: int) -> bool:
        # Rows older than the window count for nobody: delete them as we go.
        self.expire_mail_quota(since)
        row: Any = self.connection.execute(
            "SELECT count(*) FROM mail_quota WHERE recipient_hmac = ? AND queued_at > ?", (digest, since)
        ).fetchone()
        if int(row[0]) >= limit:
            return False
        self.connection.execute("INSERT INTO mail_quota (recipient_hmac, queued_at) VALUES (?, ?)", (digest, at))
        return True

    def expire_mail_quota(self, before: str) -> int:
        self.connection.execute("DELETE FROM mail_quota WHERE queued_at <= ?", (before,))
        return int(self.connection.changes())

    def meta_get(self, name: str) -> str | None:
        row: Any = self.connection.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()
        return None if row is None else str(row[0])

    def meta_set(self, name: str, value: str) -> None:
        self.connection.execute("INSERT OR REPLACE INTO meta (name, value) VALUES (?, ?)", (name, value))

    def meta_delete(self, name: str, value: str) -> None:
        self.connection.execute("DELETE FROM meta WHERE name = ? AND value = ?", (name, value))
