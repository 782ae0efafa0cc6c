"""How many confirmation mails one address may receive: at most N per rolling 24 hours, however many forms name it.

The form takes any address, so without a cap anyone could make us mail a stranger thirty times a
second. The count lives in the ledger database (the `mail_quota` table, beside the outbox, not in the
hash chain, created by the ledger's migrations), so every service process and worker shares it, and it is taken inside the write
transaction that records the consent: two submissions at once cannot both take the last place.

A row is one mail queued: a keyed hash of the address and when. Why a keyed hash, and why the table
need not be erased with a receipt: HMAC-SHA256 under a key derived from the link key, which lives
outside the ledger (form_handler/keys.py), names nobody to whoever holds only the database file (a
plain sha256 of an address can be reversed by hashing a list of addresses); and every row is deleted
once it is a day old (`expire`, at each count and at each pass of the service's mail sender). A new
link key starts the count afresh, which at worst lets one address get N more mails that day.
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import datetime, timedelta
from form_handler.consent.addresses import email_key
from form_handler.ledger.contract import LedgerStore, LedgerTxn
from form_handler.mail.outbox import iso, utcnow

WINDOW = timedelta(hours=24)
KEY_LABEL = "mail-quota"  # keys.LinkKeys.derive(KEY_LABEL) keys the hash

def expire(ledger: LedgerStore, *, now: datetime | None = None) -> int:
    """Delete the rows that left the window; return how many. The service's mail sender calls this every pass,
    so no row outlives its day by more than a pass even when no form names an address for a while."""
    with ledger.transaction() as txn:
        return txn.expire_mail_quota(iso((now or utcnow()) - WINDOW))


def recipient_hmac(key: bytes, address: str) -> str:
    """The address as the quota stores it: HMAC-SHA256 of its compared form (addresses.email_key)."""
    return hmac.new(key, email_key(address).encode("utf-8"), hashlib.sha256).hexdigest()


def take(txn: LedgerTxn, key: bytes, address: str, *, limit: int, now: datetime | None = None) -> bool:
    """Count one mail to `address` and return True, or return False when `limit` were queued in the last 24 hours.

    Runs inside the caller's open write transaction, so the check and the count are one step."""
    now = now or utcnow()
    return txn.take_mail_quota(recipient_hmac(key, address), since=iso(now - WINDOW), at=iso(now), limit=limit)
