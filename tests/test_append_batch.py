"""Batched appends (LedgerTxn.append_consents): the same chain, bytes and counters as one append_consent at a time;
a refused draft writes nothing."""

from __future__ import annotations

import json
from pathlib import Path

import apsw
import pytest
from ledger_helpers import draft
from test_reports import counted, recounted

from form_handler.ledger.chain import canonical, entry_hash
from form_handler.ledger.sqlite import reports
from form_handler.ledger.sqlite.store import Ledger, LedgerRefusal
from form_handler.ledger.types import ConsentDraft


def drafts(n: int, start: int = 0) -> list[ConsentDraft]:
    return [draft(f"p{i}@example.org" if i % 3 else None, f"Message {i}", updates=i % 2 == 0, third=i % 5 == 0)
            for i in range(start, start + n)]


def test_batched_consents_chain_in_order_with_canonical_bytes(tmp_path: Path) -> None:
    with Ledger(tmp_path / "ledger.sqlite3") as led:
        single = led.append_consent(draft())
        with led.transaction() as txn:
            receipts = txn.append_consents(drafts(40))
            after = txn.append_consent(draft("zed@example.org"))
        rows = led.connection.execute("SELECT seq, prev_hash, hash, canonical FROM entries ORDER BY seq").fetchall()
        assert [r.seq for r in [single, *receipts, after]] == [row[0] for row in rows] == list(range(1, 43))
        for (seq, prev, digest, data), receipt in zip(rows[1:41], receipts):
            fields = json.loads(data)
            assert canonical(fields) == data and entry_hash(prev, data) == digest == receipt.entry_hash
            assert fields["receipt_id"] == receipt.receipt_id and fields["seq"] == seq
        assert led.verify().ok and led.verify().count == 42


def test_one_refused_draft_refuses_the_whole_batch(tmp_path: Path) -> None:
    with Ledger(tmp_path / "ledger.sqlite3") as led:
        bad = drafts(5)
        bad[3] = draft(message=12)  # type: ignore[arg-type]
        with pytest.raises(LedgerRefusal), led.transaction() as txn:
            txn.append_consents(bad)
        assert led.head().count == 0
        assert led.connection.execute("SELECT count(*) FROM personal").fetchall()[0][0] == 0


def test_a_batch_the_database_refuses_partway_leaves_nothing_once_its_transaction_ends(tmp_path: Path) -> None:
    with Ledger(tmp_path / "ledger.sqlite3") as led:
        kept = led.append_consent(draft())
        # The database refuses the personal row of the third draft, after every entry of the batch is in.
        led.connection.execute("CREATE TRIGGER refuse BEFORE INSERT ON personal WHEN NEW.message = 'Message 2'"
                               " BEGIN SELECT RAISE(ABORT, 'refused'); END")
        with pytest.raises(apsw.ConstraintError, match="refused"), led.transaction() as txn:
            txn.append_consents(drafts(5))
        assert led.head().count == kept.seq == 1
        assert led.connection.execute("SELECT count(*) FROM personal").fetchall()[0][0] == 1
        assert led.append_consent(draft("later@example.org")).seq == 2 and led.verify().ok


def test_counters_equal_a_recount_after_batched_consents_and_what_follows(tmp_path: Path) -> None:
    with Ledger(tmp_path / "ledger.sqlite3") as led:
        for start in (0, 60):
            with led.transaction() as txn:
                for i, receipt in enumerate(txn.append_consents(drafts(60, start))):
                    if i % 4 == 0:
                        txn.append("confirmation", receipt.receipt_id, policy_id="privacy")
                    if i % 7 == 1:
                        txn.withdraw(receipt.receipt_id, receipt.withdraw_token)
                    if i % 9 == 2:
                        txn.erase(receipt.receipt_id)
                    if i % 6 == 3:
                        txn.append("withdrawal", receipt.receipt_id, consent_updates=False)
        conn = led.connection
        assert counted(conn) == recounted(conn)
        assert reports.stats(conn) == reports.recount_stats(conn)
        assert led.verify().ok
