"""How every ledger connection is opened: the schema and its migrations, the pragmas, the SQLite we accept."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import apsw

from .ledger_types import LedgerError

# Older SQLite has the WAL-reset bug that can corrupt a database written by several processes.
SQLITE_MINIMUM = (3, 51, 3)
# >= 5 s so several uvicorn workers queue for the write lock instead of failing.
BUSY_TIMEOUT_MS = 10_000


# Schema 2, the first released one, exactly as it shipped (a released migration never changes).
_SCHEMA_2 = """
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
"""

# Schema 3: the page a form was sent from is personal data (a path can hold a name or an IBAN), so a consent
# of entry format v2 keeps it in `personal`, where erasure deletes it, and commits to it with the address
# and message. A v1 consent keeps its chained page (entries.page); a v2 consent has NULL there.
_SCHEMA_3 = """
ALTER TABLE personal ADD COLUMN page TEXT;
DROP VIEW receipts;
CREATE VIEW receipts AS
SELECT c.seq, c.receipt_id, c.recorded_at, c.policy_id,
       -- v1: the chained page (never NULL); v2: the erasable one (NULL once erased).
       coalesce(c.page, p.page) AS page,
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
"""


@dataclass(frozen=True)
class Migration:
    """One step: takes the ledger from the version before it to `version`."""

    version: int
    what: str
    sql: str


# The one ordered list. A new file gets every step, an older ledger the steps it lacks; each run is one
# transaction that also records the new PRAGMA user_version. Add steps at the end; never edit a released one.
MIGRATIONS: tuple[Migration, ...] = (
    Migration(2, "entries, personal data and the receipts view", _SCHEMA_2),
    Migration(3, "a consent's page moves to the erasable personal data (entry format v2)", _SCHEMA_3),
)
SCHEMA_VERSION = MIGRATIONS[-1].version
# The whole schema of a new ledger, for reading (tests, documentation); migrate() is what applies it.
SCHEMA = "".join(m.sql for m in MIGRATIONS)
# Name/value rows beside the chain (not chained, nothing personal): the e-mail link key (tokens.py) and
# the notify run lock (notify.py). Each creates the table when it first needs it; this is its one definition.
META_SCHEMA = "CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)"


def user_version(conn: apsw.Connection) -> int:
    version: Any = conn.execute("PRAGMA user_version").fetchall()[0][0]
    return int(version)


def check_schema_version(version: int, path: Path) -> None:
    """Refuse a schema from before the first migration (a development build); we cannot know its shape."""
    if 0 < version < MIGRATIONS[0].version:
        raise LedgerError(
            f"{path}: ledger schema {version} is from a development build before schema "
            f"{MIGRATIONS[0].version}; move the file away to start a new ledger."
        )


def migrate(conn: apsw.Connection, path: Path) -> int:
    """Apply the migrations the ledger lacks, in order, in one write transaction; return the version before.

    The version is read again after BEGIN IMMEDIATE: another process may have migrated the file meanwhile,
    and then nothing is applied. A failure rolls everything back, so a ledger is never half-migrated.
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        before = user_version(conn)
        check_schema_version(before, path)
        for step in MIGRATIONS:
            if step.version > before:
                try:
                    conn.execute(step.sql)
                except apsw.SQLError as e:  # the file's schema is not what this step expects
                    raise LedgerError(
                        f"{path}: migrating the ledger to schema {step.version} ({step.what}) failed: {e}; "
                        "nothing was changed."
                    ) from e
        if before < SCHEMA_VERSION:
            # PRAGMA takes no bound parameters; SCHEMA_VERSION is our own integer.
            conn.execute(f"PRAGMA user_version = {int(SCHEMA_VERSION)}")
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return before


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
