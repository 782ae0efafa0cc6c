"""Group commit: one writer thread turns many concurrent ledger operations into few durable commits.

A commit with synchronous=FULL costs an fsync; fifty requests that arrive together share one.
No caller hears back before the COMMIT holding its operation has returned.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import apsw

from form_handler.ledger.batching import BatchingWriter, Outcome
from form_handler.ledger.contract import AppendConsent
from form_handler.ledger.sqlite.store import UNAVAILABLE_ERRORS, Ledger, LedgerError, LedgerTxn, LedgerUnavailable
from form_handler.ledger.types import LedgerRefusal, Receipt

log = logging.getLogger("form_handler")



class _PeerLock:
    """An flock on `<ledger>.writer-lock` that queues the writers of several processes (uvicorn workers).

    BEGIN IMMEDIATE stays the lock that matters; this only changes how a writer waits for it. SQLite's
    busy handler sleeps 1, 2, 5 ... 100 ms between tries and kept missing the short gaps between the
    other worker's batches (p99 of 0.3-1 s with two workers in bench/throughput.py); the kernel wakes an
    flock waiter as soon as the lock is free. The holder keeps it for one batch only, and a process that
    dies releases it. Without the file (e.g. a read-only folder) writers just wait the old way.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self) -> bool:
        try:
            if self._fd is None:
                self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            fcntl.flock(self._fd, fcntl.LOCK_EX)
        except OSError:
            return False
        return True

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class _Checkpointer:
    """Copies committed WAL frames into the database file from its own thread and connection.

    SQLite's automatic checkpoint runs inside the COMMIT that crosses 1,000 WAL pages: every ~15th
    batch also copied ~1,000 pages and fsynced the database file, and its submitters waited for it
    (COMMIT p99 21 ms, max 51 ms, against 5 ms without). Durability does not depend on checkpoints:
    a COMMIT is durable once its WAL frames are fsynced (synchronous=FULL); a checkpoint only moves
    them. A PASSIVE checkpoint takes no write lock, so batches keep committing while it runs.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.runs = 0  # checkpoints done, for tests
        self._wake = threading.Event()
        self._stop = False
        self._ledger: Ledger | None = None
        self._thread = threading.Thread(target=self._run, name="ledger-checkpointer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def kick(self) -> None:
        self._wake.set()

    def close(self) -> None:
        self._stop = True
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join()
        if self._ledger is not None:
            self._ledger.close()

    def _run(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            if self._stop:
                return
            try:
                if self._ledger is None:
                    self._ledger = Ledger(self.path)
                self._ledger.connection.wal_checkpoint(mode=apsw.SQLITE_CHECKPOINT_PASSIVE)
                self.runs += 1
            except apsw.BusyError:
                pass  # another checkpoint (another worker's) or a WAL restart is under way; the next kick retries
            except (LedgerError, apsw.Error) as e:
                # Disk full, read-only, ...: the WAL just grows until the next kick succeeds; commits
                # do not need checkpoints, and the writer checkpoints itself past BACKSTOP_PAGES.
                log.warning("ledger checkpoint failed, will retry: %s", e)
                if self._ledger is not None:
                    self._ledger.close()
                    self._ledger = None


class GroupCommitWriter(BatchingWriter[LedgerTxn]):
    """One thread, one Ledger connection, a queue; each batch is one BEGIN IMMEDIATE ... COMMIT."""

    # WAL pages after which the checkpointer is woken (SQLite's own autocheckpoint default), and after
    # which the writer checkpoints inline because the checkpointer is falling behind or failing.
    CHECKPOINT_PAGES = 1000
    BACKSTOP_PAGES = 20_000

    def __init__(self, ledger_path: str | Path, *, max_batch: int = 512) -> None:
        super().__init__(max_batch=max_batch, thread_name="ledger-writer")
        self.ledger_path = Path(ledger_path)
        self._ledger: Ledger | None = None
        self._peers = _PeerLock(self.ledger_path.with_name(self.ledger_path.name + ".writer-lock"))
        self._checkpointer = _Checkpointer(self.ledger_path)
        self._hooked: apsw.Connection | None = None
        self._wal_pages = 0

    @property
    def ledger(self) -> Ledger:
        """The writer's own Ledger (for pragmas(); use submit() for writes)."""
        if self._ledger is None:
            raise RuntimeError("GroupCommitWriter.start() has not been called.")
        return self._ledger

    def open(self) -> None:
        """Open the writer's own connection and start the checkpointer (a too-old SQLite raises here)."""
        self._ledger = Ledger(self.ledger_path)
        self._checkpointer.start()

    def start(self) -> None:
        """open(), then start the thread behind submit()."""
        self.open()
        self._start_thread()

    def run_batch(self, ops: list[Callable[[LedgerTxn], Any]]) -> list[Outcome]:
        """Run ops as one batch in the calling thread, for a caller that is its own queue (the writer
        process, writer_process.py): one transaction, a SAVEPOINT each, one outcome per op."""
        return self._run_batch(ops)

    def close(self) -> None:
        """Stop taking work, commit everything already queued, then stop the thread."""
        if not self._stop_thread():
            return
        # The checkpointer's connection closes first, so the writer's is the last and checkpoints the WAL.
        self._checkpointer.close()
        if self._ledger is not None:
            self._ledger.close()
        self._peers.close()

    async def aclose(self) -> None:
        await asyncio.to_thread(self.close)

    def _batch_in_transaction(self, ops: list[Callable[[LedgerTxn], Any]]) -> list[Outcome]:
        outcomes: list[Outcome] = []
        try:
            with self.ledger.transaction() as txn:
                if txn.connection is not self._hooked:  # a new connection (first use, or after an I/O error)
                    txn.connection.set_wal_hook(self._wal_hook)  # replaces SQLite's autocheckpoint
                    self._hooked = txn.connection
                for run in _runs(ops):
                    if len(run) > 1:
                        receipts = _append_together(txn, run)
                        if receipts is not None:
                            outcomes += [(True, r) for r in receipts]
                            continue
                    for op in run:
                        try:
                            # apsw: `with connection` inside a transaction is a SAVEPOINT, rolled back on error.
                            with txn.connection:
                                outcomes.append((True, op(txn)))
                        except (LedgerUnavailable, *UNAVAILABLE_ERRORS):
                            raise
                        except Exception as e:  # a refusal or a bug: this op only
                            outcomes.append((False, e))
        except LedgerUnavailable as e:
            outcomes = [(False, LedgerUnavailable(str(e))) for _ in ops]
        except Exception as e:  # e.g. an op's error that broke the transaction itself
            outcomes = [(False, LedgerUnavailable(f"the ledger batch failed: {e}")) for _ in ops]
        else:
            self._committed(ops)
            if self._wal_pages >= self.BACKSTOP_PAGES:
                self._checkpoint_inline()
        return outcomes

    def _wal_hook(self, connection: apsw.Connection, name: str, pages: int) -> int:
        # Called by SQLite in this thread right after each COMMIT, with the WAL's size in pages.
        self._wal_pages = pages
        if pages >= self.CHECKPOINT_PAGES:
            self._checkpointer.kick()
        return apsw.SQLITE_OK

    def _checkpoint_inline(self) -> None:
        try:
            self.ledger.connection.wal_checkpoint(mode=apsw.SQLITE_CHECKPOINT_PASSIVE)
        except (LedgerError, apsw.Error) as e:
            log.warning("ledger checkpoint failed, will retry: %s", e)
        self._wal_pages = 0

    def _run_batch(self, ops: list[Callable[[LedgerTxn], Any]]) -> list[Outcome]:
        # The peer lock is held for the transaction only; callers are answered after it is released.
        locked = self._peers.acquire()
        try:
            return self._batch_in_transaction(ops)
        finally:
            if locked:
                self._peers.release()


def _runs(ops: list[Callable[[LedgerTxn], Any]]) -> list[list[Callable[[LedgerTxn], Any]]]:
    """The batch in order, with each run of consecutive AppendConsent operations as one group."""
    runs: list[list[Callable[[LedgerTxn], Any]]] = []
    for op in ops:
        if runs and isinstance(op, AppendConsent) and isinstance(runs[-1][0], AppendConsent):
            runs[-1].append(op)
        else:
            runs.append([op])
    return runs


def _append_together(txn: LedgerTxn, run: list[Any]) -> list[Receipt] | None:
    """A run of submissions with one append_consents call under one SAVEPOINT, which undoes the whole run if a
    write fails partway; None when it failed, having left nothing, so the caller records them one by one and only
    the culprit is refused. (bench/ledger_speed.py measured append_consents at 74 us of CPU per consent against
    127 for one call each, in batches of 1,000 without the savepoint; not measured apart at the writer's batch
    sizes, where the whole service is the measure: bench/README.md, throughput.)"""
    try:
        with txn.connection:
            receipts = txn.append_consents([op.draft for op in run])
    except (LedgerUnavailable, *UNAVAILABLE_ERRORS):
        raise
    except LedgerRefusal:
        return None
    except Exception:  # not a refusal: a bug, most likely; one by one, each caller gets its own error
        log.exception("appending %d submissions together failed; recording them one by one", len(run))
        return None
    return receipts
