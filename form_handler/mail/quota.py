"""How many confirmation mails one address may receive: at most N per rolling 24 hours, however many forms name it.

The form takes any address, so without a cap anyone could make us mail a stranger thirty times a
second. The count lives in the ledger database (the `mail_quota` table, beside the outbox, not in the
hash chain), so every service process and worker shares it, and it is taken inside the write
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
from typing import Any

from form_handler.consent.addresses import email_key
from form_handler.mail.outbox import iso, utcnow

WINDOW = timedelta(hours=24)
KEY_LABEL = "mail-quota"  # keys.LinkKeys.derive(KEY_LABEL) keys the hash

SCHEMA = """
CREATE TABLE IF NOT EXISTS mail_quota (
    recipient_hmac TEXT NOT NULL,
    queued_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS mail_quota_recipient ON mail_quota (recipient_hmac, queued_at);
CREATE INDEX IF NOT EXISTS mail_quota_queued ON mail_quota (queued_at);
"""


def ensure_schema(connection: Any) -> None:
    connection.execute(SCHEMA)


def expire(connection: Any, *, now: datetime | None = None) -> int:
    """Delete the rows that left the window; return how many. The service's mail sender calls this every pass,
    so no row outlives its day by more than a pass even when no form names an address for a while."""
    exists = connection.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'mail_quota'").fetchone()
    if exists is None:
        return 0
    return _delete_expired(connection, now or utcnow())


def _delete_expired(connection: Any, now: datetime) -> int:
    connection.execute("DELETE FROM mail_quota WHERE queued_at <= ?", (iso(now - WINDOW),))
    return int(connection.changes())


def recipient_hmac(key: bytes, address: str) -> str:
    """The address as the quota stores it: HMAC-SHA256 of its compared form (addresses.email_key)."""
    return hmac.new(key, email_key(address).encode("utf-8"), hashlib.sha256).hexdigest()


def take(connection: Any, key: bytes, address: str, *, limit: int, now: datetime | None = None) -> bool:
    """Count one mail to `address` and return True, or return False when `limit` were queued in the last 24 hours.

    Runs inside the caller's open write transaction, so the check and the count are one step."""
    ensure_schema(connection)
    now = now or utcnow()
    since = iso(now - WINDOW)
    _delete_expired(connection, now)  # rows older than the window count for nobody: delete them as we go
    digest = recipient_hmac(key, address)
    row = connection.execute(
        "SELECT count(*) FROM mail_quota WHERE recipient_hmac = ? AND queued_at > ?", (digest, since)
    ).fetchone()
    if int(row[0]) >= limit:
        return False
    connection.execute("INSERT INTO mail_quota (recipient_hmac, queued_at) VALUES (?, ?)", (digest, iso(now)))
    return True
