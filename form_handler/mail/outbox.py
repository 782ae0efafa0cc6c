"""A durable mail queue in the ledger database: queued with the consent, sent later, never sent twice.

The outbox (a table beside the chain, created by the ledger's migrations) is not part of the hash chain: it holds personal data (the address and the whole
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

from form_handler.ledger.contract import ClaimedMail, LedgerStore, LedgerTxn
from form_handler.mail.message import MailError, smtp_session
from form_handler.settings import Settings

FIRST_RETRY = 30  # seconds; doubled after every failure
MAX_RETRY = 3600  # seconds; the back-off never waits longer than this
MAX_ATTEMPTS = 48  # about two days at the cap, longer than any outage we would wait out
# Seconds a claimed row is left alone by other senders. Claims are taken in small batches (BATCH) so a
# slow server cannot outlast the lease and let a second sender send the same row.
LEASE = 900
BATCH = 10

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


def enqueue(txn: LedgerTxn, *, receipt_id: str, kind: str, msg: EmailMessage, now: datetime | None = None) -> int:
    """Queue one message inside the caller's open transaction; return the row id."""
    return txn.enqueue_mail(receipt_id, kind, str(msg["To"]), msg.as_bytes(), iso(now or utcnow()))


def forget(txn: LedgerTxn, receipt_id: str) -> int:
    """Delete every queued or sent row of a receipt (erasure); return how many went."""
    return txn.forget_mail(receipt_id)


def claim_due(ledger: LedgerStore, *, now: datetime, limit: int = 50) -> list[ClaimedMail]:
    """Lease up to `limit` due rows to this sender; return (id, attempts, message bytes).

    In one write transaction (two senders cannot claim one row), after giving up the rows of receipts
    withdrawn or erased since they were queued, so those are never claimed."""
    with ledger.transaction() as txn:
        return txn.claim_mail(now=iso(now), lease_until=iso(now + timedelta(seconds=LEASE)), limit=limit)


def mark_sent(ledger: LedgerStore, row_id: int, *, now: datetime) -> None:
    # The address and the message are dropped once sent: the row stays only to say it was sent.
    with ledger.transaction() as txn:
        txn.mark_mail_sent(row_id, at=iso(now))


def mark_failed(ledger: LedgerStore, row_id: int, attempts: int, error: str, *, now: datetime, permanent: bool) -> bool:
    """Record a failed attempt; schedule the retry or give up. Return True when given up."""
    attempts += 1
    give_up = permanent or attempts >= MAX_ATTEMPTS
    with ledger.transaction() as txn:
        txn.mark_mail_failed(row_id, attempts=attempts, error=error[:500],
                             next_at=iso(now + timedelta(seconds=backoff(attempts))),
                             gave_up_at=iso(now) if give_up else None)
    return give_up


def send_due(ledger: LedgerStore, settings: Settings, *, now: datetime | None = None, limit: int = 500) -> PassResult:
    """One pass: send every due message (up to `limit`), claiming BATCH rows at a time."""
    now = now or utcnow()
    total = PassResult(0, 0, 0)
    while total.sent + total.failed < limit:
        claimed = claim_due(ledger, now=now, limit=BATCH)
        if not claimed:
            break
        result = _send_claimed(ledger, settings, claimed, now=now)
        total = PassResult(total.sent + result.sent, total.failed + result.failed, total.gave_up + result.gave_up)
        if result.sent == 0:
            break  # the server is down or refusing everything; the back-off decides when to try again
    return total


def _send_claimed(ledger: LedgerStore, settings: Settings, claimed: list[ClaimedMail], *, now: datetime) -> PassResult:
    sent = failed = gave_up = 0
    try:
        with smtp_session(settings) as session:
            for row_id, attempts, raw in claimed:
                msg = message_from_bytes(raw, policy=email_policy.default)
                try:
                    session.send(msg)
                except MailError as e:
                    failed += 1
                    gave_up += mark_failed(ledger, row_id, attempts, str(e), now=now, permanent=e.permanent)
                    continue
                mark_sent(ledger, row_id, now=utcnow())
                sent += 1
    except MailError as e:
        # The server could not be reached: every row still claimed is retried after its back-off.
        for row_id, attempts, _ in claimed:
            if ledger.read(lambda view: view.mail_still_claimed(row_id)):
                failed += 1
                gave_up += mark_failed(ledger, row_id, attempts, str(e), now=now, permanent=False)
    return PassResult(sent, failed, gave_up)


def next_due(ledger: LedgerStore) -> datetime | None:
    """When the earliest unsent row is due, or None when nothing waits."""
    due = ledger.read(lambda view: view.next_mail_due())
    if due is None:
        return None
    return datetime.strptime(due, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)


def status(ledger: LedgerStore) -> dict[str, int]:
    """Counts of queued, sent and abandoned rows (no personal data)."""
    return ledger.read(lambda view: view.mail_counts())
