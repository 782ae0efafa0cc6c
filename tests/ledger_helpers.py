"""Small builders shared by the ledger, writer and CLI tests."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import psycopg

from form_handler.ledger.contract import LedgerStore
from form_handler.ledger.sqlite.store import ConsentDraft, Ledger, Receipt

VERSION = "a" * 64


def draft(email: str | None = "ada@example.org", message: str = "Hello", *, third: bool = False,
          updates: bool = False, version: str = VERSION, page: str = "/feedback/") -> ConsentDraft:
    return ConsentDraft(
        policy_id="privacy", policy_version=version, page=page, message=message, email=email,
        consent_contact=email is not None, consent_updates=updates, consent_third_parties=third,
    )


def confirmed(ledger: Ledger | LedgerStore, d: ConsentDraft) -> Receipt:
    """Append a consent and its confirmation, as after its owner followed the link in the mail."""
    with ledger.transaction() as txn:
        receipt = txn.append_consent(d)
        txn.append("confirmation", receipt.receipt_id, policy_id=d.policy_id)
    return receipt


def make_read_only(path: Path) -> None:
    """Make a file unwritable even for root (chattr +i), as a real read-only ledger would be."""
    os.chmod(path, 0o444)
    if os.geteuid() == 0:
        subprocess.run([shutil.which("chattr") or "chattr", "+i", str(path)], check=True)


def make_writable(path: Path) -> None:
    if os.geteuid() == 0:
        subprocess.run([shutil.which("chattr") or "chattr", "-i", str(path)], check=True)
    os.chmod(path, 0o644)


def sql(store: LedgerStore, query: str, params: tuple[object, ...] = ()) -> list[tuple[Any, ...]]:
    """Run raw SQL on a ledger's database behind its back, as a tamperer or a test would (`?` placeholders)."""
    if store.backend == "sqlite":
        return [tuple(row) for row in store.connection.execute(query, params)]  # type: ignore[attr-defined]
    with psycopg.connect(store.location, autocommit=True) as conn:
        cur = conn.execute(query.replace("?", "%s"), params)  # type: ignore[arg-type]
        return [tuple(row) for row in cur.fetchall()] if cur.description else []


def stored_bytes(store: LedgerStore) -> bytes:
    """Every byte the database keeps in its files for this ledger (WAL aside for PostgreSQL): SQLite's file and
    its -wal; PostgreSQL's files of the ledger's database after a CHECKPOINT wrote every page out."""
    if store.backend == "sqlite":
        path = Path(store.location)
        wal = Path(f"{path}-wal")
        return path.read_bytes() + (wal.read_bytes() if wal.exists() else b"")
    with psycopg.connect(store.location, autocommit=True) as conn:
        conn.execute("CHECKPOINT")
        row = conn.execute("SELECT current_setting('data_directory'), oid FROM pg_database"
                           " WHERE datname = current_database()").fetchone()
    assert row is not None
    folder = Path(row[0]) / "base" / str(row[1])
    return b"".join(f.read_bytes() for f in sorted(folder.iterdir()) if f.is_file())
