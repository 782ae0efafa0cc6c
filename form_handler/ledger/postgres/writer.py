"""Group commit on PostgreSQL: one writer thread per instance turns concurrent operations into few commits.

Each batch is one transaction on one pooled connection (synchronous_commit on); each operation runs under
its own SAVEPOINT, so a refusal undoes only that operation. The append lock (txn.py) is taken at the first
append and held to COMMIT, so instances take turns batch by batch. No caller hears back before the COMMIT
holding its operation returned; a lost connection fails the whole batch with LedgerUnavailable (nothing of it
was committed, or, if COMMIT's answer was lost, the callers were told 503 and may retry).
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from form_handler.ledger.types import LedgerUnavailable

if TYPE_CHECKING:
    from form_handler.ledger.postgres.store import PgLedger
    from form_handler.ledger.postgres.txn import PgTxn

T = TypeVar("T")
_STOP = object()


@dataclass
class _Job:
    op: Callable[[PgTxn], Any]
    future: asyncio.Future[Any]
    loop: asyncio.AbstractEventLoop


def _settle(future: asyncio.Future[Any], ok: bool, value: Any) -> None:
    if future.done():
        return
    if ok:
        future.set_result(value)
    else:
        future.set_exception(value)


class PgWriter:
    def __init__(self, ledger: PgLedger, *, max_batch: int = 512) -> None:
        self.ledger = ledger
        self.max_batch = max_batch
        self.commits = 0
        self.largest_batch = 0
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._closed = False
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="ledger-writer-pg", daemon=True)
        self._thread.start()

    async def submit(self, op: Callable[[PgTxn], T]) -> T:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        with self._lock:
            if self._closed or self._thread is None:
                raise LedgerUnavailable("the ledger writer is not running (shutting down or not started).")
            self._queue.put(_Job(op, future, loop))
        return await future

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._queue.put(_STOP)
        if self._thread is not None:
            self._thread.join()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            batch, stop = [item], False
            while len(batch) < self.max_batch:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is _STOP:
                    stop = True
                    break
                batch.append(item)
            self._commit(batch)
            if stop:
                return

    def _commit(self, batch: list[_Job]) -> None:
        outcomes: list[tuple[bool, Any]] = []
        try:
            with self.ledger.transaction() as txn:
                for job in batch:
                    try:
                        with txn.connection.transaction():  # a SAVEPOINT: an error undoes this op only
                            outcomes.append((True, job.op(txn)))
                    except LedgerUnavailable:
                        raise
                    except Exception as e:  # a refusal or a bug: this op only
                        if _broken(txn):
                            raise
                        txn.forget_head()  # its appends, if any, were rolled back with its SAVEPOINT
                        outcomes.append((False, e))
        except LedgerUnavailable as e:
            outcomes = [(False, LedgerUnavailable(str(e))) for _ in batch]
        except Exception as e:
            outcomes = [(False, LedgerUnavailable(f"the ledger batch failed: {e}")) for _ in batch]
        else:
            self.commits += 1
            self.largest_batch = max(self.largest_batch, len(batch))
        for job, (ok, value) in zip(batch, outcomes):
            try:
                job.loop.call_soon_threadsafe(_settle, job.future, ok, value)
            except RuntimeError:
                pass


def _broken(txn: PgTxn) -> bool:
    return bool(txn.connection.closed or txn.connection.broken)
