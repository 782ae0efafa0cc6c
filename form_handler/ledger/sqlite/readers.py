"""A small pool of read connections: each used by one thread at a time, opened on demand, up to a bound.

apsw refuses a connection used by two threads at once (ThreadingViolationError), and one connection behind
one lock makes every read wait for the slowest. In WAL mode readers do not block each other or the
writer, so each reading thread gets a connection of its own for the length of one read transaction.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import apsw

from form_handler.ledger.types import LedgerUnavailable


class ReadPool:
    """Lends connections made by `open_connection`; at most `size` exist at once, idle ones are reused."""

    def __init__(self, open_connection: Callable[[], apsw.Connection], *, size: int, wait: float) -> None:
        if size < 1:
            raise ValueError(f"size must be at least 1, got {size}.")
        self.size = size
        self.wait = wait
        self._open = open_connection
        self._cond = threading.Condition()
        self._idle: list[apsw.Connection] = []
        self._lent: set[apsw.Connection] = set()  # lent since the last close(); others are closed on return
        self._count = 0  # idle + lent, including those lent before close()

    @property
    def opened(self) -> int:
        """Connections open now, idle or lent (for tests)."""
        return self._count

    def take(self) -> apsw.Connection:
        """An idle connection, a new one while fewer than `size` exist, or wait up to `wait` s for one."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._idle or self._count < self.size, timeout=self.wait):
                raise LedgerUnavailable(f"all {self.size} ledger read connections stayed busy for {self.wait:g} s.")
            if self._idle:
                conn = self._idle.pop()
                self._lent.add(conn)
                return conn
            self._count += 1
        try:
            conn = self._open()  # outside the lock: opening may wait on the busy timeout
        except BaseException:
            with self._cond:
                self._count -= 1
                self._cond.notify()
            raise
        with self._cond:
            self._lent.add(conn)
        return conn

    def give(self, conn: apsw.Connection) -> None:
        """Take a connection back; one lent before close(), or left inside a transaction, is closed instead."""
        with self._cond:
            keep = conn in self._lent and not conn.in_transaction
            self._lent.discard(conn)
            if keep:
                self._idle.append(conn)
            else:
                self._count -= 1
            self._cond.notify()
        if not keep:
            _close(conn)

    def discard(self, conn: apsw.Connection) -> None:
        """Close a connection that failed (I/O error, file replaced), so the next read opens a fresh one."""
        with self._cond:
            self._lent.discard(conn)
            self._count -= 1
            self._cond.notify()
        _close(conn)

    def close(self) -> None:
        """Close the idle connections now and the lent ones when they come back; the pool stays usable."""
        with self._cond:
            idle, self._idle = self._idle, []
            self._lent = set()
            self._count -= len(idle)
            self._cond.notify_all()
        for conn in idle:
            _close(conn)


def _close(conn: apsw.Connection) -> None:
    try:
        conn.close(True)
    except apsw.Error:
        pass
