"""The group-commit writer: one thread, few commits, refusals isolated, I/O failures recoverable."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from ledger_helpers import draft, make_read_only, make_writable

from form_handler.ledger.sqlite.store import Ledger, LedgerTxn, LedgerUnavailable, Receipt, UnknownReceipt
from form_handler.ledger.sqlite.writer import GroupCommitWriter


def consent(txn: LedgerTxn) -> Receipt:
    return txn.append_consent(draft())


def run(writer: GroupCommitWriter, *ops: Callable[[LedgerTxn], Any]) -> list[Any]:
    async def main() -> list[Any]:
        return await asyncio.gather(*(writer.submit(op) for op in ops), return_exceptions=True)

    return asyncio.run(main())


@pytest.fixture
def writer(tmp_path: Path) -> Any:
    w = GroupCommitWriter(tmp_path / "ledger.sqlite3")
    w.start()
    yield w
    w.close()


def test_many_concurrent_submits_share_few_commits(writer: GroupCommitWriter) -> None:
    results = run(writer, *[consent] * 300)
    assert all(isinstance(r, Receipt) for r in results)
    assert sorted(r.seq for r in results) == list(range(1, 301))
    assert writer.commits <= 10 and writer.largest_batch >= 100
    report = Ledger(writer.ledger_path).verify()
    assert report.ok and report.count == 300


def test_refusal_undoes_only_its_own_op(writer: GroupCommitWriter) -> None:
    gate = threading.Event()

    def refused(txn: LedgerTxn) -> None:
        txn.append_consent(draft(email="half@example.org"))  # undone with the refusal
        txn.withdraw("0" * 32, "token")

    async def main() -> list[Any]:
        blocker = asyncio.ensure_future(writer.submit(lambda txn: gate.wait(5)))
        await asyncio.sleep(0.05)  # the blocker's batch is open: the next three queue together
        rest = [asyncio.ensure_future(writer.submit(op)) for op in (consent, refused, consent)]
        gate.set()
        await blocker
        return await asyncio.gather(*rest, return_exceptions=True)

    first, error, last = asyncio.run(main())
    assert isinstance(error, UnknownReceipt) and error.field == "receipt_id"
    assert isinstance(first, Receipt) and isinstance(last, Receipt) and last.seq == first.seq + 1
    assert writer.commits == 2 and writer.largest_batch == 3
    emails = [r["email"] for r in Ledger(writer.ledger_path).export()]
    assert emails == ["ada@example.org", "ada@example.org"]


def test_read_only_ledger_gives_unavailable_then_recovers(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    Ledger(path).close()
    make_read_only(path)
    writer = GroupCommitWriter(path)
    try:
        writer.start()
        assert all(isinstance(r, LedgerUnavailable) for r in run(writer, consent, consent))
    finally:
        make_writable(path)
    try:
        (receipt,) = run(writer, consent)
        assert isinstance(receipt, Receipt) and receipt.seq == 1
    finally:
        writer.close()


def test_close_drains_queued_work_then_refuses(tmp_path: Path) -> None:
    writer = GroupCommitWriter(tmp_path / "ledger.sqlite3", max_batch=7)
    writer.start()

    async def main() -> tuple[list[Any], Any]:
        tasks = [asyncio.ensure_future(writer.submit(consent)) for _ in range(50)]
        await asyncio.sleep(0)  # every submit has queued its op
        await writer.aclose()
        late = await asyncio.gather(writer.submit(consent), return_exceptions=True)
        return await asyncio.gather(*tasks), late[0]

    done, late = asyncio.run(main())
    assert len(done) == 50 and isinstance(late, LedgerUnavailable)
    assert Ledger(writer.ledger_path).head().count == 50 and writer.largest_batch <= 7


def test_writer_connection_reads_back_wal_full_busy(writer: GroupCommitWriter) -> None:
    pragmas = writer.ledger.pragmas()
    assert pragmas["journal_mode"] == "wal" and pragmas["synchronous"] == "FULL"
    assert pragmas["busy_timeout"] >= 5000


def test_checkpoints_run_beside_the_commits_not_inside_them(writer: GroupCommitWriter) -> None:
    writer.CHECKPOINT_PAGES = 20
    pages_seen = []
    for _ in range(6):
        run(writer, *[consent] * 50)
        pages_seen.append(writer._wal_pages)
        deadline = time.monotonic() + 5
        while writer._wal_pages >= 20 and writer._checkpointer.runs == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
    # The checkpointer thread ran, and the WAL started over after its checkpoints instead of growing.
    assert writer._checkpointer.runs >= 1 and min(pages_seen[1:]) < max(pages_seen)
    assert Ledger(writer.ledger_path).verify().count == 300


def test_writer_checkpoints_inline_when_the_wal_passes_the_backstop(writer: GroupCommitWriter) -> None:
    writer._checkpointer.close()  # as if it kept failing
    writer.BACKSTOP_PAGES = 30
    run(writer, *[consent] * 100)
    run(writer, consent)
    assert writer._wal_pages < 30 and Ledger(writer.ledger_path).verify().count == 101
