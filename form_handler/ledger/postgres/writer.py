"""Group commit on PostgreSQL: one writer thread per instance turns concurrent operations into few commits.

Each batch is one transaction on one pooled connection (synchronous_commit on); each operation runs under
its own SAVEPOINT, so a refusal undoes only that operation. The append lock (txn.py) is taken at the first
append and held to COMMIT, so instances take turns batch by batch. No caller hears back before the COMMIT
holding its operation returned; a lost connection fails the whole batch with LedgerUnavailable (nothing of it
was committed, or, if COMMIT's answer was lost, the callers were told 503 and may retry).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from form_handler.ledger.batching import BatchingWriter, Outcome
from form_handler.ledger.types import LedgerUnavailable

if TYPE_CHECKING:
    from form_handler.ledger.postgres.store import PgLedger
    from form_handler.ledger.postgres.txn import PgTxn


class PgWriter(BatchingWriter["PgTxn"]):
    def __init__(self, ledger: PgLedger, *, max_batch: int = 512) -> None:
        super().__init__(max_batch=max_batch, thread_name="ledger-writer-pg")
        self.ledger = ledger

    def start(self) -> None:
        self._start_thread()

    def close(self) -> None:
        self._stop_thread()

    def _run_batch(self, ops: list[Callable[[PgTxn], Any]]) -> list[Outcome]:
        outcomes: list[Outcome] = []
        try:
            with self.ledger.transaction() as txn:
                for op in ops:
                    try:
                        with txn.connection.transaction():  # a SAVEPOINT: an error undoes this op only
                            outcomes.append((True, op(txn)))
                    except LedgerUnavailable:
                        raise
                    except Exception as e:  # a refusal or a bug: this op only
                        if _broken(txn):
                            raise
                        txn.forget_head()  # its appends, if any, were rolled back with its SAVEPOINT
                        outcomes.append((False, e))
        except LedgerUnavailable as e:
            outcomes = [(False, LedgerUnavailable(str(e))) for _ in ops]
        except Exception as e:
            outcomes = [(False, LedgerUnavailable(f"the ledger batch failed: {e}")) for _ in ops]
        else:
            self._committed(ops)
        return outcomes


def _broken(txn: PgTxn) -> bool:
    return bool(txn.connection.closed or txn.connection.broken)
