"""A durable mail queue in the ledger database: queued with the consent, sent later, never sent twice.

The `outbox` table is not part of the hash chain: it holds personal data (the address and the whole
message) and is cleared for a receipt when that receipt is erased (`forget`). A message is queued in
the same transaction as the entry that asks for it, so a submission never waits on the mail server and
no acknowledged submission loses its mail.

Sending is done in passes (`send_due`): claim due rows in a short write transaction, talk SMTP with no
lock held, then mark each row sent or schedule a retry with exponential back-off. A claim is a lease
(`claimed_until`), so several service workers and a cron job can run passes at once without two of
them sending one row. A row marked sent is never picked again. The one gap is a crash after the server
took a message and before the row was marked: that message goes out once more when the lease expires.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from email import message_from_bytes
from email import policy as email_policy
from email.message import EmailMessage
from typing import Any

from form_handler.mail.message import MailError, smtp_session
from form_handler.settings import Settings

FIRST_RETRY = 30  # seconds; doubled after every failure
MAX_RETRY = 3600  # seconds; the back-off never waits longer than this
MAX_ATTEMPTS = 48  # about two days at the cap, longer than any outage we would wait out
# Seconds a claimed row is left alone by other senders. Claims are taken in small batches (BATCH) so a
# slow server cannot outlast the lease and let a second sender send the same row.
LEASE = 900
BATCH = 10

SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY,
    receipt_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    recipient TEXT NOT NULL,
    message BLOB NOT NULL,
    created_at TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TEXT NOT NULL,
    claimed_until TEXT,
    last_error TEXT,
    sent_at TEXT,
    gave_up_at TEXT
);
CREATE INDEX IF NOT EXISTS outbox_due ON outbox (next_attempt_at) WHERE sent_at IS NULL AND gave_up_at IS NULL;
CREATE INDEX IF NOT EXISTS outbox_receipt ON outbox (receipt_id);
"""


@dataclass(frozen=True)
class PassResult:
    sent: int
    failed: int
    gave_up: int


def iso(t: datetime) -> str:
    """ISO-8601 UTC with a Z; this fixed width makes text comparison the same as time comparison."""
    return t.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def backoff(attempts: int) -> int:
    """Seconds to wait after the given number of failed attempts: 30, 60, 120 ... capped at an hour."""
    return int(min(FIRST_RETRY * 2 ** max(attempts - 1, 0), MAX_RETRY))


def ensure_schema(connection: Any) -> None:
    connection.execute(SCHEMA)


def enqueue(
    connection: Any, *, receipt_id: str, kind: str, msg: EmailMessage, now: datetime | None = None
) -> int:
    """Queue one message inside the caller's open transaction; return the row id."""
    ensure_schema(connection)
    at = iso(now or utcnow())
    connection.execute(
        "INSERT INTO outbox (receipt_id, kind, recipient, message, created_at, next_attempt_at)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        (receipt_id, kind, str(msg["To"]), msg.as_bytes(), at, at),
    )
    return int(connection.last_insert_rowid())


def forget(connection: Any, receipt_id: str) -> int:
    """Delete every queued or sent row of a receipt (erasure); return how many went."""
    exists = connection.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'outbox'"
    ).fetchone()
    if not exists:
        return 0
    connection.execute("DELETE FROM outbox WHERE receipt_id = ?", (receipt_id,))
    return int(connection.changes())


def _write(connection: Any, sql: str, params: tuple[Any, ...], *, first: tuple[str, tuple[Any, ...]] | None = None
           ) -> list[tuple[Any, ...]]:
    # BEGIN IMMEDIATE: take the write lock before reading, so two senders cannot claim one row.
    connection.execute("BEGIN IMMEDIATE")
    try:
        if first is not None:
            connection.execute(*first)
        rows = list(connection.execute(sql, params))
    except BaseException:
        connection.execute("ROLLBACK")
        raise
    connection.execute("COMMIT")
    return rows


# A queued mail whose receipt has since been withdrawn or erased must not go out. The only mail queued is the
# confirmation of change e-mails and/or third-party sharing, so the e-mail unsubscribe (a withdrawal with
# consent_updates set) cancels it too, unless the receipt's third-party consent still waits for it.
# Such rows are given up with their address and message dropped, in the claim's own transaction.
CANCEL_WITHDRAWN = (
    "UPDATE outbox SET gave_up_at = ?1, claimed_until = NULL, recipient = '', message = x'',"
    " last_error = 'consent withdrawn or erased before sending'"
    " WHERE sent_at IS NULL AND gave_up_at IS NULL AND EXISTS (SELECT 1 FROM entries w"
    " WHERE w.receipt_id = outbox.receipt_id AND (w.kind = 'erasure' OR (w.kind = 'withdrawal'"
    " AND (w.consent_updates IS NULL OR NOT EXISTS (SELECT 1 FROM entries c WHERE c.receipt_id = outbox.receipt_id"
    " AND c.kind = 'consent' AND c.consent_third_parties)))))"
)


def claim_due(connection: Any, *, now: datetime, limit: int = 50) -> list[tuple[int, int, bytes]]:
    """Lease up to `limit` due rows to this sender; return (id, attempts, message bytes).

    Rows of withdrawn or erased receipts are given up first (CANCEL_WITHDRAWN), never claimed."""
    ensure_schema(connection)
    rows = _write(
        connection,
        "UPDATE outbox SET claimed_until = ?1 WHERE id IN ("
        " SELECT id FROM outbox WHERE sent_at IS NULL AND gave_up_at IS NULL AND next_attempt_at <= ?2"
        " AND (claimed_until IS NULL OR claimed_until <= ?2) ORDER BY next_attempt_at, id LIMIT ?3)"
        " RETURNING id, attempts, message",
        (iso(now + timedelta(seconds=LEASE)), iso(now), limit),
        first=(CANCEL_WITHDRAWN, (iso(now),)),
    )
    return sorted((int(r[0]), int(r[1]), bytes(r[2])) for r in rows)


def mark_sent(connection: Any, row_id: int, *, now: datetime) -> None:
    # The address and the message are dropped once sent: the row stays only to say it was sent.
    _write(
        connection,
        "UPDATE outbox SET sent_at = ?, claimed_until = NULL, recipient = '', message = x'',"
        " attempts = attempts + 1, last_error = NULL WHERE id = ? AND sent_at IS NULL",
        (iso(now), row_id),
    )


def mark_failed(connection: Any, row_id: int, attempts: int, error: str, *, now: datetime, permanent: bool) -> bool:
    """Record a failed attempt; schedule the retry or give up. Return True when given up."""
    attempts += 1
    give_up = permanent or attempts >= MAX_ATTEMPTS
    # A row given up is never tried again, so like a sent one it keeps no address and no message.
    _write(
        connection,
        "UPDATE outbox SET attempts = ?1, last_error = ?2, claimed_until = NULL, next_attempt_at = ?3,"
        " gave_up_at = ?4, recipient = CASE WHEN ?4 IS NULL THEN recipient ELSE '' END,"
        " message = CASE WHEN ?4 IS NULL THEN message ELSE x'' END WHERE id = ?5 AND sent_at IS NULL",
        (
            attempts,
            error[:500],
            iso(now + timedelta(seconds=backoff(attempts))),
            iso(now) if give_up else None,
            row_id,
        ),
    )
    return give_up


def send_due(connection: Any, settings: Settings, *, now: datetime | None = None, limit: int = 500) -> PassResult:
    """One pass: send every due message (up to `limit`), claiming BATCH rows at a time."""
    now = now or utcnow()
    total = PassResult(0, 0, 0)
    while total.sent + total.failed < limit:
        claimed = claim_due(connection, now=now, limit=BATCH)
        if not claimed:
            break
        result = _send_claimed(connection, settings, claimed, now=now)
        total = PassResult(total.sent + result.sent, total.failed + result.failed, total.gave_up + result.gave_up)
        if result.sent == 0:
            break  # the server is down or refusing everything; the back-off decides when to try again
    return total


def _send_claimed(
    connection: Any, settings: Settings, claimed: list[tuple[int, int, bytes]], *, now: datetime
) -> PassResult:
    sent = failed = gave_up = 0
    try:
        with smtp_session(settings) as session:
            for row_id, attempts, raw in claimed:
                msg = message_from_bytes(raw, policy=email_policy.default)
                try:
                    session.send(msg)
                except MailError as e:
                    failed += 1
                    gave_up += mark_failed(connection, row_id, attempts, str(e), now=now, permanent=e.permanent)
                    continue
                mark_sent(connection, row_id, now=utcnow())
                sent += 1
    except MailError as e:
        # The server could not be reached: every row still claimed is retried after its back-off.
        for row_id, attempts, _ in claimed:
            if _unsent_and_claimed(connection, row_id):
                failed += 1
                gave_up += mark_failed(connection, row_id, attempts, str(e), now=now, permanent=False)
    return PassResult(sent, failed, gave_up)


def _unsent_and_claimed(connection: Any, row_id: int) -> bool:
    row = connection.execute(
        "SELECT 1 FROM outbox WHERE id = ? AND sent_at IS NULL AND gave_up_at IS NULL AND claimed_until IS NOT NULL",
        (row_id,),
    ).fetchone()
    return row is not None


def next_due(connection: Any) -> datetime | None:
    """When the earliest unsent row is due, or None when nothing waits."""
    ensure_schema(connection)
    row = connection.execute(
        "SELECT min(next_attempt_at) FROM outbox WHERE sent_at IS NULL AND gave_up_at IS NULL"
    ).fetchone()
    if row is None or row[0] is None:
        return None
    return datetime.strptime(row[0], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)


def status(connection: Any) -> dict[str, int]:
    """Counts of queued, sent and abandoned rows (no personal data)."""
    ensure_schema(connection)
    row = connection.execute(
        "SELECT count(*) FILTER (WHERE sent_at IS NULL AND gave_up_at IS NULL),"
        " count(*) FILTER (WHERE sent_at IS NOT NULL), count(*) FILTER (WHERE gave_up_at IS NOT NULL)"
        " FROM outbox"
    ).fetchone()
    return {"queued": int(row[0]), "sent": int(row[1]), "gave_up": int(row[2])}
