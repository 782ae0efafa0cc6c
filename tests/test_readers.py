"""Ledger.read and its pool of read connections, from real threads against a real SQLite file."""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from ledger_helpers import draft

from form_handler.ledger.sqlite.store import Ledger, LedgerTxn, LedgerUnavailable


@pytest.fixture
def path(tmp_path: Path) -> Path:
    path = tmp_path / "ledger.sqlite3"
    with Ledger(path) as led:
        for i in range(20):
            led.append_consent(draft(email=f"p{i}@example.org"))
    return path


def test_concurrent_reads_run_at_once_each_on_its_own_connection(path: Path) -> None:
    together = threading.Barrier(4, timeout=10)  # breaks (fails the test) if reads queue behind one lock
    held: set[int] = set()
    guard = threading.Lock()

    def read(view: LedgerTxn) -> int:
        conn = view.connection
        with guard:
            assert id(conn) not in held, "one connection lent to two threads at once"
            held.add(id(conn))
        together.wait()
        count = int(conn.execute("SELECT count(*) FROM entries").fetchall()[0][0])
        with guard:
            held.discard(id(conn))
        return count

    with Ledger(path, readonly=True) as reader, ThreadPoolExecutor(4) as pool:
        assert list(pool.map(lambda _: reader.read(read), range(40))) == [20] * 40
        assert reader._readers.opened == 4  # made on demand, then reused


def test_pool_is_bounded_and_the_next_reader_waits_for_a_connection(path: Path) -> None:
    inside, release = threading.Barrier(3, timeout=10), threading.Event()

    def hold(view: LedgerTxn) -> None:
        inside.wait()
        release.wait(10)

    with Ledger(path, readonly=True, readers=2) as reader, ThreadPoolExecutor(3) as pool:
        held = [pool.submit(reader.read, hold) for _ in range(2)]
        inside.wait()  # both connections are lent out now
        third = pool.submit(reader.head)
        assert not third.done() and reader._readers.opened == 2
        release.set()
        assert third.result(10).count == 20 and all(f.result(10) is None for f in held)
        assert reader._readers.opened == 2
    assert reader._readers.opened == 0  # close() closed them


def test_read_runs_in_one_snapshot_while_a_writer_appends(path: Path) -> None:
    with Ledger(path) as writer, Ledger(path, readonly=True) as reader:
        def two_counts(view: LedgerTxn) -> tuple[int, int]:
            conn = view.connection
            first = conn.execute("SELECT count(*) FROM entries").fetchall()[0][0]
            writer.append_consent(draft())  # committed by another connection meanwhile
            return int(first), int(conn.execute("SELECT count(*) FROM entries").fetchall()[0][0])

        assert reader.read(two_counts) == (20, 20)
        assert reader.head().count == 21


def test_file_that_is_not_a_database_is_unavailable_to_readers_then_recovers(path: Path, tmp_path: Path) -> None:
    with Ledger(path, readonly=True) as reader:
        saved = tmp_path / "saved.sqlite3"
        os.replace(path, saved)
        path.write_bytes(b"this is not a database " * 500)
        with pytest.raises(LedgerUnavailable, match="cannot read the ledger now"):
            reader.stats()
        with pytest.raises(LedgerUnavailable):
            reader.verify()
        assert reader._readers.opened == 0  # the failed connections were not kept
        os.replace(saved, path)
        assert reader.stats()["submissions"] == 20
