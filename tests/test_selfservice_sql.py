"""The self-service reads (ledger/sqlite/selfservice.py) on a real SQLite ledger: right rows, through indexes only."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from form_handler.consent import selfservice
from form_handler.ledger.sqlite import selfservice as sql
from form_handler.ledger.sqlite.store import Ledger
from form_handler.ledger.types import ConsentDraft


def _draft(email: str | None, **flags: bool) -> ConsentDraft:
    consents = {"consent_contact": False, "consent_updates": False, "consent_third_parties": False, **flags}
    return ConsentDraft("privacy", "v1", "/feedback/", "a message", email, **consents)


def _plan(led: Ledger, query: str, params: tuple[Any, ...]) -> str:
    rows = led.connection.execute(f"EXPLAIN QUERY PLAN {query}", params).fetchall()
    return " | ".join(str(r[3]) for r in rows)


def test_receipts_of_an_address_are_found_by_index_newest_first(tmp_path: Path) -> None:
    with Ledger(tmp_path / "l.sqlite3") as led:
        with led.transaction() as txn:
            a, b = txn.append_consent(_draft("Ann@example.org")), txn.append_consent(_draft("bob@example.org"))
            c = txn.append_consent(_draft(" ann@EXAMPLE.org"))
        found = led.read(lambda v: sql.receipts_of_address(v, "ann@example.org"))
        plan = _plan(led, "SELECT receipt_id FROM personal WHERE email_key = ? ORDER BY receipt_id DESC LIMIT ?",
                     ("ann@example.org", 200))
    assert found == [c.receipt_id, a.receipt_id] and b.receipt_id not in found
    assert "USING COVERING INDEX personal_email_key" in plan and "SCAN" not in plan


def test_receipt_entries_use_the_receipt_index(tmp_path: Path) -> None:
    with Ledger(tmp_path / "l.sqlite3") as led:
        with led.transaction() as txn:
            receipt = txn.append_consent(_draft(None))
            txn.withdraw(receipt.receipt_id, receipt.withdraw_token)
        rows = led.read(lambda v: sql.receipt_entries(v, receipt.receipt_id))
        plan = _plan(led, "SELECT seq, hash, kind, recorded_at, canonical FROM entries WHERE receipt_id = ? ORDER BY seq",
                     (receipt.receipt_id,))
    assert [r.kind for r in rows] == ["consent", "withdrawal"] and rows[0].entry_hash == receipt.entry_hash
    assert "entries_receipt" in plan and "SCAN entries" not in plan


def test_receipt_view_follows_each_entry(tmp_path: Path) -> None:
    with Ledger(tmp_path / "l.sqlite3") as led:
        with led.transaction() as txn:
            receipt = txn.append_consent(_draft("ann@example.org", consent_updates=True, consent_contact=True))
        view = led.read(lambda v: selfservice.with_token(v, receipt.receipt_id, receipt.withdraw_token))
        assert view.available() == ("withdraw_contact", "stop_updates", "withdraw", "erase")
        assert view.stands("consent_updates")
        with led.transaction() as txn:
            selfservice.record(txn, view, "stop_updates", via="/api/manage")
        after = led.read(lambda v: selfservice.load(v, receipt.receipt_id))
    assert after is not None and after.updates_stopped_at and not after.stands("consent_updates")
    assert after.stands("consent_contact") and after.available() == ("withdraw_contact", "withdraw", "erase")


def test_erasure_through_self_service_is_one_entry_and_leaves_a_valid_chain(tmp_path: Path) -> None:
    with Ledger(tmp_path / "l.sqlite3") as led:
        with led.transaction() as txn:
            receipt = txn.append_consent(_draft("ann@example.org"))
        view = led.read(lambda v: selfservice.load(v, receipt.receipt_id))
        assert view is not None
        with led.transaction() as txn:
            first = selfservice.record(txn, view, "erase", via="/api/access")
            again = selfservice.record(txn, view, "erase", via="/api/access")
        assert len(first) == 1 and again == [] and led.verify().ok
        assert led.read(lambda v: sql.personal(v, receipt.receipt_id)) is None
        assert [e["kind"] for e in led.export()] == ["consent", "erasure"]


def test_oldest_quota_row_uses_the_quota_index(tmp_path: Path) -> None:
    with Ledger(tmp_path / "l.sqlite3") as led:
        with led.transaction() as txn:
            assert txn.take_mail_quota("h" * 64, since="2026-11-29T00:00:00Z", at="2026-11-30T10:00:00Z", limit=3)
        assert led.read(lambda v: sql.oldest_quota_row(v, "h" * 64)) == "2026-11-30T10:00:00Z"
        assert led.read(lambda v: sql.oldest_quota_row(v, "other")) is None
        plan = _plan(led, "SELECT min(queued_at) FROM mail_quota WHERE recipient_hmac = ?", ("h" * 64,))
    assert "mail_quota_recipient" in plan and "SCAN mail_quota" not in plan
