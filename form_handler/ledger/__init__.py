"""The consent ledger: `open_ledger(location)` gives the store for a path (SQLite) or a postgresql:// URL.

The operations others may call are in contract.py; values and errors in types.py; the chain in chain.py.
"""

from __future__ import annotations

from pathlib import Path

from form_handler.ledger.contract import LedgerStore

POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def is_postgres(location: str | Path) -> bool:
    """Whether a ledger location is a PostgreSQL connection URL (libpq form) rather than a file path."""
    return str(location).startswith(POSTGRES_SCHEMES)


def open_ledger(location: str | Path, *, readonly: bool = False) -> LedgerStore:
    """The ledger at `location`: SQLite for a path, PostgreSQL for a postgresql:// URL.

    Opening creates or migrates the schema (a read-only SQLite open migrates once through a writer).
    While the database cannot be reached, the store still opens: its operations raise LedgerUnavailable
    until it can be reached again."""
    if is_postgres(location):
        from form_handler.ledger.postgres.store import PgLedger

        return PgLedger(str(location), readonly=readonly)
    from form_handler.ledger.sqlite.store import Ledger

    return Ledger(Path(location), readonly=readonly)
