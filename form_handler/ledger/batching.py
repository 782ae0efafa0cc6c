"""Group commit, the part both backends share: a queue of operations, one writer thread, batches, answers.

Callers on the event loop submit an operation (a function of a write transaction) and wait; the writer
thread takes whatever is queued (up to max_batch), runs it as one transaction through the backend's
_run_batch, and only then answers each caller on its own loop. So a caller never hears back before the
COMMIT holding its operation has returned, and many concurrent submissions cost few commits.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from form_handler.ledger.types import LedgerUnavailable

T = TypeVar("T")
TxnT = TypeVar("TxnT")
_STOP = object()
# (True, result) or (False, exception) for each operation of a batch, in order.
Outcome = tuple[bool, Any]


@dataclass
class Job(Generic[TxnT]):
    op: Callable[[TxnT], Any]
    future: asyncio.Future[Any]
    loop: asyncio.AbstractEventLoop


def _settle(future: asyncio.Future[Any], ok: bool, value: Any) -> None:
    # Runs on the caller's event loop; a caller that gave up (cancelled) is simply skipped.
    if future.done():
        return
    if ok:
        future.set_result(value)
    else:
        future.set_exception(value)


class BatchingWriter(Generic[TxnT]):
    """The queue and thread of a group-commit writer; a backend supplies _run_batch (one transaction)."""

    def __init__(self, *, max_batch: int, thread_name: str) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}.")
        self.max_batch = max_batch
        self.commits = 0  # batches committed, for tests and the bench
        self.largest_batch = 0
        self._thread_name = thread_name
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._closed = False
        self._thread: threading.Thread | None = None

    def _start_thread(self) -> None:
        self._thread = threading.Thread(target=self._run, name=self._thread_name, daemon=True)
        self._thread.start()

    async def submit(self, op: Callable[[TxnT], T]) -> T:
        """Run op(txn) in the writer thread under its own SAVEPOINT; return once its batch is committed.

        A LedgerRefusal (or any other error) from op undoes only op and is raised here; an I/O
        failure of the batch raises LedgerUnavailable to every op in it.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        with self._lock:
            if self._closed or self._thread is None:
                raise LedgerUnavailable("the ledger writer is not running (shutting down or not started).")
            self._queue.put(Job(op, future, loop))
        return await future

    def _stop_thread(self) -> bool:
        """Stop taking work, let the thread commit everything already queued, and wait for it; False when
        the writer was already closed."""
        with self._lock:
            if self._closed:
                return False
            self._closed = True
            self._queue.put(_STOP)
        if self._thread is not None:
            self._thread.join()
        return True

    def _run_batch(self, ops: list[Callable[[TxnT], Any]]) -> list[Outcome]:
        """Run ops in one transaction, each under its own SAVEPOINT; one outcome per op, in order."""
        raise NotImplementedError

    def _committed(self, ops: list[Callable[[TxnT], Any]]) -> None:
        self.commits += 1
        self.largest_batch = max(self.largest_batch, len(ops))

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

    def _commit(self, batch: list[Job[TxnT]]) -> None:
        outcomes = self._run_batch([job.op for job in batch])
        for job, (ok, value) in zip(batch, outcomes):
            try:
                job.loop.call_soon_threadsafe(_settle, job.future, ok, value)
            except RuntimeError:  # the caller's loop has closed; nobody is waiting
                pass
