"""`ledger copy` and `ledger backup` on SQLite: entries and personal data exactly as stored; the online backup."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import apsw

from form_handler.ledger.contract import RawEntry, RawPersonal
from form_handler.ledger.types import LedgerError
from form_handler.private_files import ensure_private


def raw_entries(conn: apsw.Connection) -> Iterator[RawEntry]:
    # One read snapshot on a connection of its own, closed when the iterator is done or dropped.
    try:
        conn.execute("BEGIN")
        for seq, prev, digest, data in conn.execute("SELECT seq, prev_hash, hash, canonical FROM entries ORDER BY seq"):
            yield int(seq), str(prev), str(digest), bytes(data)
    finally:
        conn.close(True)


def raw_personal(conn: apsw.Connection) -> Iterator[RawPersonal]:
    try:
        conn.execute("BEGIN")
        for row in conn.execute("SELECT receipt_id, salt, email, message, page, email_key FROM personal ORDER BY receipt_id"):
            yield str(row[0]), bytes(row[1]), row[2], str(row[3]), row[4], row[5]
    finally:
        conn.close(True)


def load_raw(conn: apsw.Connection, entries: Iterator[RawEntry], personal: Iterator[RawPersonal]) -> int:
    """Insert entries with their columns taken from their own canonical bytes, then personal rows (one transaction)."""
    from form_handler.ledger.chain import FLAG_COLUMNS, TEXT_COLUMNS
    import json

    found: Any = conn.execute("SELECT count(*) FROM entries").fetchall()[0][0]
    if found:
        raise LedgerError(f"the target ledger already holds {found} entries; copy only into an empty ledger.")
    n = 0
    for seq, prev, digest, data in entries:
        entry = json.loads(data)
        cols = [entry.get(c) for c in TEXT_COLUMNS] + [
            None if entry.get(c) is None else int(entry[c]) for c in FLAG_COLUMNS
        ]
        conn.execute(
            "INSERT INTO entries (seq, prev_hash, hash, canonical, kind, receipt_id, recorded_at, policy_id,"
            " policy_version, page, commitment, consent_contact, consent_updates, consent_third_parties)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (seq, prev, digest, data, entry["kind"], entry["receipt_id"], entry["recorded_at"], *cols),
        )
        n += 1
    for row in personal:
        conn.execute("INSERT INTO personal (receipt_id, salt, email, message, page, email_key) VALUES (?, ?, ?, ?, ?, ?)", row)
    return n


def backup(source: apsw.Connection, dest: Path) -> None:
    """Copy the live ledger into `dest` (a new file, 0600) with SQLite's online backup, a few pages at a time.

    One step copies every page inside one read transaction: in WAL mode that snapshot does not block the
    writers, and (unlike steps of a few pages, which restart whenever another connection commits between
    them) it finishes under any write load. The result is the ledger as of one commit."""
    if dest.exists():
        raise LedgerError(f"{dest}: a file is there already; give a new path for the backup.")
    ensure_private(dest)
    target = apsw.Connection(str(dest))
    try:
        with target.backup("main", source, "main") as b:
            while not b.done:
                b.step(-1)
        target.execute("PRAGMA journal_mode=WAL").fetchall()
    finally:
        target.close(True)
