"""How every ledger connection is opened: the schema, the pragmas, and the SQLite version we accept."""

from __future__ import annotations

import re
from typing import Any

import apsw

from .ledger_types import LedgerError

# Older SQLite has the WAL-reset bug that can corrupt a database written by several processes.
SQLITE_MINIMUM = (3, 51, 3)
# >= 5 s so several uvicorn workers queue for the write lock instead of failing.
BUSY_TIMEOUT_MS = 10_000
SCHEMA_VERSION = 2


SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    seq INTEGER PRIMARY KEY,
    -- UNIQUE: two appends that read the same head cannot both land (the database refuses a fork).
    prev_hash TEXT NOT NULL UNIQUE,
    hash TEXT NOT NULL,
    canonical BLOB NOT NULL,
    kind TEXT NOT NULL,
    receipt_id TEXT NOT NULL,
    recorded_at TEXT NOT NULL,
    policy_id TEXT,
    policy_version TEXT,
    page TEXT,
    commitment TEXT,
    consent_contact INTEGER,
    consent_updates INTEGER,
    consent_third_parties INTEGER
);
CREATE INDEX IF NOT EXISTS entries_receipt ON entries(receipt_id, kind);
CREATE TRIGGER IF NOT EXISTS entries_no_update BEFORE UPDATE ON entries
BEGIN SELECT RAISE(ABORT, 'ledger entries are append-only: UPDATE refused'); END;
CREATE TRIGGER IF NOT EXISTS entries_no_delete BEFORE DELETE ON entries
BEGIN SELECT RAISE(ABORT, 'ledger entries are append-only: DELETE refused'); END;
-- Personal data, outside the chain so it can be erased; salt goes with it.
CREATE TABLE IF NOT EXISTS personal (
    receipt_id TEXT PRIMARY KEY,
    salt BLOB NOT NULL,
    email TEXT,
    message TEXT NOT NULL
);
-- One row per consent receipt with its current status; stats, exports and notices read this.
CREATE VIEW IF NOT EXISTS receipts AS
SELECT c.seq, c.receipt_id, c.recorded_at, c.policy_id, c.page,
       c.policy_version AS consented_version,
       (SELECT r.policy_version FROM entries r WHERE r.receipt_id = c.receipt_id
          AND r.kind IN ('consent', 'reconsent') ORDER BY r.seq DESC LIMIT 1) AS policy_version,
       c.consent_contact, c.consent_updates, c.consent_third_parties,
       -- A withdrawal with consent_updates set (the e-mail unsubscribe) stops change notices only.
       EXISTS (SELECT 1 FROM entries w WHERE w.receipt_id = c.receipt_id AND w.kind = 'withdrawal'
               AND w.consent_updates IS NULL) AS withdrawn,
       EXISTS (SELECT 1 FROM entries x WHERE x.receipt_id = c.receipt_id AND x.kind = 'erasure') AS erased,
       p.email,
       EXISTS (SELECT 1 FROM entries u WHERE u.receipt_id = c.receipt_id AND u.kind = 'withdrawal'
               AND u.consent_updates IS NOT NULL) AS updates_stopped
FROM entries c LEFT JOIN personal p ON p.receipt_id = c.receipt_id
WHERE c.kind = 'consent';
PRAGMA user_version = 2;
"""
# Name/value rows beside the chain (not chained, nothing personal): the e-mail link key (tokens.py) and
# the notify run lock (notify.py). Each creates the table when it first needs it; this is its one definition.
META_SCHEMA = "CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)"


def check_sqlite_version(version: str) -> None:
    """Refuse SQLite older than 3.51.3 (the WAL-reset bug corrupts multi-process writers)."""
    parts = tuple(int(p) for p in re.findall(r"\d+", version)[:3])
    if parts < SQLITE_MINIMUM:
        raise LedgerError(
            f"apsw links SQLite {version}, older than 3.51.3 (WAL-reset bug); "
            "upgrade it with: pip install 'apsw>=3.51.3.0'."
        )


def configure(conn: apsw.Connection) -> None:
    """Pragmas every connection needs; busy timeout first so the WAL switch can wait for a lock."""
    conn.setbusytimeout(BUSY_TIMEOUT_MS)
    conn.execute("PRAGMA journal_mode=WAL").fetchall()
    # FULL: a commit is on disk (WAL fsynced) before we acknowledge it, even across a power cut.
    conn.execute("PRAGMA synchronous=FULL")
    # Erased email addresses and messages are overwritten on disk, not just unlinked.
    conn.execute("PRAGMA secure_delete=ON")
    # Random-keyed indexes (receipt ids, prev_hash) touch pages all over the file; keep them cached.
    conn.execute("PRAGMA cache_size=-32768")


def read_pragmas(conn: apsw.Connection) -> dict[str, Any]:
    def one(sql: str) -> Any:
        return conn.execute(sql).fetchall()[0][0]

    sync = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}
    return {
        "journal_mode": one("PRAGMA journal_mode"),
        "synchronous": sync.get(one("PRAGMA synchronous"), "?"),
        "busy_timeout": one("PRAGMA busy_timeout"),
    }
