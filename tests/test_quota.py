"""The per-recipient mail quota against a real ledger file: a rolling 24 hours, keyed hashes, nothing kept longer."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from ledger_helpers import sql, stored_bytes

from form_handler.mail import quota
from form_handler.ledger.contract import LedgerStore

T0 = datetime(2026, 11, 20, 12, 0, tzinfo=timezone.utc)
KEY, OTHER_KEY = b"k" * 32, b"o" * 32


@pytest.fixture
def led(store: LedgerStore) -> LedgerStore:
    return store  # both backends


def take(led: LedgerStore, address: str, at: datetime, *, limit: int = 3, key: bytes = KEY) -> bool:
    with led.transaction() as txn:  # the caller's write transaction, as in optin.consent_with_confirmation
        return quota.take(txn, key, address, limit=limit, now=at)


def test_quota_allows_limit_mails_per_address_in_24_hours(led: LedgerStore) -> None:
    assert [take(led, "ann@example.org", T0 + timedelta(minutes=i)) for i in range(5)] == [True] * 3 + [False] * 2
    # Compared as the rest of the service compares addresses; another address has its own count.
    assert not take(led, " ANN@Example.org", T0 + timedelta(hours=1))
    assert take(led, "bob@example.org", T0 + timedelta(hours=1))


def test_quota_window_rolls_and_old_rows_are_deleted(led: LedgerStore) -> None:
    for i in range(3):
        take(led, "ann@example.org", T0 + timedelta(hours=i))
    assert not take(led, "ann@example.org", T0 + timedelta(hours=23, minutes=59))
    assert take(led, "ann@example.org", T0 + timedelta(hours=24, seconds=1))  # the first one left the window
    assert not take(led, "ann@example.org", T0 + timedelta(hours=24, seconds=2))
    take(led, "bob@example.org", T0 + timedelta(hours=50))
    rows = sql(led, "SELECT queued_at FROM mail_quota")
    assert [r[0] for r in rows] == ["2026-11-22T14:00:00Z"]  # nothing older than a day is kept


def test_quota_stores_a_keyed_hash_not_the_address(led: LedgerStore) -> None:
    take(led, "ann@example.org", T0)
    take(led, "ann@example.org", T0, key=OTHER_KEY)
    stored = [r[0] for r in sql(led, "SELECT recipient_hmac FROM mail_quota ORDER BY queued_at, recipient_hmac")]
    stored.sort(key=lambda h: h != quota.recipient_hmac(KEY, "ann@example.org"))
    assert stored == [quota.recipient_hmac(KEY, "ann@example.org"), quota.recipient_hmac(OTHER_KEY, "ann@example.org")]
    assert stored[0] != stored[1]
    files = stored_bytes(led)  # the database's files
    assert stored[0].encode() in files and b"ann@example.org" not in files


def test_expire_deletes_rows_a_day_old_without_a_new_count(led: LedgerStore) -> None:
    assert quota.expire(led, now=T0) == 0
    take(led, "ann@example.org", T0)
    take(led, "bob@example.org", T0 + timedelta(hours=1))
    assert quota.expire(led, now=T0 + timedelta(hours=24)) == 1
    assert [r[0] for r in sql(led, "SELECT queued_at FROM mail_quota")] == ["2026-11-20T13:00:00Z"]
