"""How every ledger connection is opened: the schema and its migrations, the pragmas, the SQLite we accept."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import apsw

from form_handler.consent.addresses import email_key
from form_handler.ledger.types import LedgerError

# The apsw errors that mean "cannot write now", not "the request is wrong".
UNAVAILABLE_ERRORS = (
    apsw.FullError, apsw.ReadOnlyError, apsw.IOError, apsw.CantOpenError,
    apsw.BusyError, apsw.LockedError, apsw.PermissionsError,
)
# For readers, also a file that is not (or no longer) a database: reading may work again once it is
# restored, and a page that reads the ledger answers 503 meanwhile, not 500.
READ_UNAVAILABLE_ERRORS = (*UNAVAILABLE_ERRORS, apsw.NotADBError, apsw.CorruptError)

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

# Schema 4: a person (an address) and their receipts are found through an index, not by reading every receipt
# of a policy. `email_key` is the address as addresses.email_key compares it (space stripped, case folded);
# SQLite's lower() folds ASCII only, so the rows already there are filled by that Python function, which
# migrate() registers on its connection as email_key(). New rows get it from LedgerTxn.append_consent; the
# trigger refuses a row without it, so a program older than this schema cannot add an address no index finds.
_SCHEMA_4 = """
ALTER TABLE personal ADD COLUMN email_key TEXT;
UPDATE personal SET email_key = email_key(email) WHERE email IS NOT NULL;
CREATE INDEX personal_email_key ON personal (email_key, receipt_id) WHERE email_key IS NOT NULL;
CREATE TRIGGER personal_email_key_required BEFORE INSERT ON personal
WHEN NEW.email IS NOT NULL AND NEW.email_key IS NULL
BEGIN SELECT RAISE(ABORT, 'personal.email_key must be set with the e-mail address (ledger schema 4); upgrade policy-site'); END;
"""

# Schema 5: the anonymous statistics are counters, kept by triggers in the transaction of every append, so
# /api/stats reads a few rows instead of every receipt. They hold, at every commit, exactly what
# reports.recount_stats counts from the receipts view: an entry changes only its own receipt's row there,
# so each trigger moves the counters by that row's change. Triggers rather than code in LedgerTxn._append:
# they run for any INSERT into entries (a batched multi-row writer included) inside its statement, and in C.
# A receipt is "standing" while neither withdrawn (a withdrawal without flags) nor erased. The fragments below
# are part of migration 5 as released: never change them (a later step that needs others writes its own).
# Each looks only at the entries of NEW's receipt before NEW, through the entries_receipt index.
_W0 = ("EXISTS (SELECT 1 FROM entries w WHERE w.receipt_id = NEW.receipt_id AND w.kind = 'withdrawal'"
       " AND w.consent_updates IS NULL AND w.seq < NEW.seq)")
_E0 = "EXISTS (SELECT 1 FROM entries x WHERE x.receipt_id = NEW.receipt_id AND x.kind = 'erasure' AND x.seq < NEW.seq)"
_S0 = ("EXISTS (SELECT 1 FROM entries u WHERE u.receipt_id = NEW.receipt_id AND u.kind = 'withdrawal'"
       " AND u.consent_updates IS NOT NULL AND u.seq < NEW.seq)")
# The version last agreed to (max(seq) rather than ORDER BY ... LIMIT 1, which sorts in a temporary b-tree).
_V0 = ("(SELECT v.policy_version FROM entries v WHERE v.seq = (SELECT max(m.seq) FROM entries m"
       " WHERE m.receipt_id = NEW.receipt_id AND m.kind IN ('consent', 'reconsent') AND m.seq < NEW.seq))")
_CONSENT = "entries c WHERE c.receipt_id = NEW.receipt_id AND c.kind = 'consent'"


def _leaves_standing(unless: str) -> str:
    # The receipt stops counting as standing (it was, unless `unless` held already): take its share back.
    return f"""
  UPDATE stats_totals SET standing = standing - 1,
    contact = contact - (SELECT coalesce(c.consent_contact, 0) FROM {_CONSENT}),
    updates = updates - (SELECT coalesce(c.consent_updates <> 0 AND NOT {_S0}, 0) FROM {_CONSENT}),
    third_parties = third_parties - (SELECT coalesce(c.consent_third_parties, 0) FROM {_CONSENT})
  WHERE NOT {unless};
  INSERT INTO stats_days (day, n) SELECT substr(c.recorded_at, 1, 10), -1 FROM {_CONSENT} AND NOT {unless}
  ON CONFLICT (day) DO UPDATE SET n = n + excluded.n;
  INSERT INTO stats_versions (policy_id, policy_version, n) SELECT c.policy_id, {_V0}, -1 FROM {_CONSENT}
  AND NOT {unless} ON CONFLICT (policy_id, policy_version) DO UPDATE SET n = n + excluded.n;"""


_SCHEMA_5 = f"""
-- One row: submissions, withdrawn and erased count every receipt; the rest count standing receipts only.
CREATE TABLE stats_totals (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    submissions INTEGER NOT NULL, withdrawn INTEGER NOT NULL, erased INTEGER NOT NULL, standing INTEGER NOT NULL,
    contact INTEGER NOT NULL, updates INTEGER NOT NULL, third_parties INTEGER NOT NULL
);
-- Standing receipts by the day of their consent, and by policy and the version last agreed to.
CREATE TABLE stats_days (day TEXT PRIMARY KEY, n INTEGER NOT NULL) WITHOUT ROWID;
-- A NULL version (a reconsent naming none) never conflicts, so it gets rows of its own; reads sum per key.
CREATE TABLE stats_versions (policy_id TEXT, policy_version TEXT, n INTEGER NOT NULL);
CREATE UNIQUE INDEX stats_versions_key ON stats_versions (policy_id, policy_version);

-- Built once from the ledger as it is, with the definitions of the receipts view.
INSERT INTO stats_totals
SELECT 1, count(*), coalesce(sum(withdrawn), 0), coalesce(sum(erased), 0),
       coalesce(sum(NOT withdrawn AND NOT erased), 0),
       coalesce(sum(CASE WHEN NOT withdrawn AND NOT erased THEN consent_contact END), 0),
       coalesce(sum(CASE WHEN NOT withdrawn AND NOT erased THEN consent_updates <> 0 AND NOT updates_stopped END), 0),
       coalesce(sum(CASE WHEN NOT withdrawn AND NOT erased THEN consent_third_parties END), 0)
FROM receipts;
INSERT INTO stats_days (day, n)
SELECT substr(recorded_at, 1, 10), count(*) FROM receipts WHERE NOT withdrawn AND NOT erased GROUP BY 1;
INSERT INTO stats_versions (policy_id, policy_version, n)
SELECT policy_id, policy_version, count(*) FROM receipts WHERE NOT withdrawn AND NOT erased GROUP BY 1, 2;

-- A consent starts a standing receipt (append() takes no other entry for a receipt without one).
CREATE TRIGGER stats_consent AFTER INSERT ON entries WHEN NEW.kind = 'consent'
BEGIN
  UPDATE stats_totals SET submissions = submissions + 1, standing = standing + 1,
    contact = contact + coalesce(NEW.consent_contact, 0), updates = updates + coalesce(NEW.consent_updates <> 0, 0),
    third_parties = third_parties + coalesce(NEW.consent_third_parties, 0);
  INSERT INTO stats_days (day, n) VALUES (substr(NEW.recorded_at, 1, 10), 1)
  ON CONFLICT (day) DO UPDATE SET n = n + 1;
  INSERT INTO stats_versions (policy_id, policy_version, n) VALUES (NEW.policy_id, NEW.policy_version, 1)
  ON CONFLICT (policy_id, policy_version) DO UPDATE SET n = n + 1;
END;
-- A reconsent moves a standing receipt from the version it last agreed to to the new one.
CREATE TRIGGER stats_reconsent AFTER INSERT ON entries
WHEN NEW.kind = 'reconsent' AND NOT {_W0} AND NOT {_E0}
BEGIN
  INSERT INTO stats_versions (policy_id, policy_version, n) SELECT c.policy_id, {_V0}, -1 FROM {_CONSENT}
  ON CONFLICT (policy_id, policy_version) DO UPDATE SET n = n + excluded.n;
  INSERT INTO stats_versions (policy_id, policy_version, n) SELECT c.policy_id, NEW.policy_version, 1 FROM {_CONSENT}
  ON CONFLICT (policy_id, policy_version) DO UPDATE SET n = n + excluded.n;
END;
-- The first withdrawal without flags withdraws the receipt; a later one changes nothing.
CREATE TRIGGER stats_withdrawal AFTER INSERT ON entries
WHEN NEW.kind = 'withdrawal' AND NEW.consent_updates IS NULL AND NOT {_W0} AND EXISTS (SELECT 1 FROM {_CONSENT})
BEGIN
  UPDATE stats_totals SET withdrawn = withdrawn + 1;{_leaves_standing(_E0)}
END;
-- The first erasure erases the receipt.
CREATE TRIGGER stats_erasure AFTER INSERT ON entries
WHEN NEW.kind = 'erasure' AND NOT {_E0} AND EXISTS (SELECT 1 FROM {_CONSENT})
BEGIN
  UPDATE stats_totals SET erased = erased + 1;{_leaves_standing(_W0)}
END;
-- The first e-mail unsubscribe (a withdrawal naming consent_updates) of a standing receipt that asked for
-- updates: it no longer counts as wanting them.
CREATE TRIGGER stats_updates_stopped AFTER INSERT ON entries
WHEN NEW.kind = 'withdrawal' AND NEW.consent_updates IS NOT NULL AND NOT {_S0} AND NOT {_W0} AND NOT {_E0}
  AND EXISTS (SELECT 1 FROM {_CONSENT} AND c.consent_updates <> 0)
BEGIN
  UPDATE stats_totals SET updates = updates - 1;
END;
"""


# Schema 6: the tables beside the chain, which their modules used to create on first use (mail/outbox.py,
# mail/quota.py, and `meta` by notify.py and ledgers older than the key file). IF NOT EXISTS: a ledger written
# by an older version may have any of them already, with exactly these columns.
# outbox: queued mail (personal data, not chained; erase() deletes a receipt's rows). mail_quota: keyed hashes
# of addresses, a day at most. meta: name/value rows (the notify run lock; older versions' link key).
_SCHEMA_6 = """
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY,
    receipt_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    recipient TEXT NOT NULL,
    message BLOB NOT NULL,
    created_at TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TEXT NOT NULL,
    claimed_until TEXT,
    last_error TEXT,
    sent_at TEXT,
    gave_up_at TEXT
);
CREATE INDEX IF NOT EXISTS outbox_due ON outbox (next_attempt_at) WHERE sent_at IS NULL AND gave_up_at IS NULL;
CREATE INDEX IF NOT EXISTS outbox_receipt ON outbox (receipt_id);
CREATE TABLE IF NOT EXISTS mail_quota (
    recipient_hmac TEXT NOT NULL,
    queued_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS mail_quota_recipient ON mail_quota (recipient_hmac, queued_at);
CREATE INDEX IF NOT EXISTS mail_quota_queued ON mail_quota (queued_at);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


# Schema 7: a consent can be withdrawn on its own. A withdrawal naming no consent (consent_contact,
# consent_updates and consent_third_parties all NULL) withdraws every consent of its receipt; one setting some
# of them false withdraws exactly those (the e-mail unsubscribe names consent_updates, as before). No stored
# withdrawal names consent_contact or consent_third_parties, so every stored entry means what it meant, and
# the counters of schema 5 stay exact without a recount. The receipts view gains contact_stopped and
# third_parties_stopped beside updates_stopped; the triggers that read "withdrawn" are replaced by ones with
# the new rule (the fragments below), and the unsubscribe trigger by one for any per-consent withdrawal.
_W7 = ("EXISTS (SELECT 1 FROM entries w WHERE w.receipt_id = NEW.receipt_id AND w.kind = 'withdrawal'"
       " AND w.consent_contact IS NULL AND w.consent_updates IS NULL AND w.consent_third_parties IS NULL"
       " AND w.seq < NEW.seq)")
_C7 = ("EXISTS (SELECT 1 FROM entries k WHERE k.receipt_id = NEW.receipt_id AND k.kind = 'withdrawal'"
       " AND k.consent_contact IS NOT NULL AND k.seq < NEW.seq)")
_T7 = ("EXISTS (SELECT 1 FROM entries t WHERE t.receipt_id = NEW.receipt_id AND t.kind = 'withdrawal'"
       " AND t.consent_third_parties IS NOT NULL AND t.seq < NEW.seq)")
_NAMES_NONE = "NEW.consent_contact IS NULL AND NEW.consent_updates IS NULL AND NEW.consent_third_parties IS NULL"


def _leaves_standing_7(unless: str) -> str:
    # As _leaves_standing, but a consent already withdrawn on its own was taken back when it was.
    return f"""
  UPDATE stats_totals SET standing = standing - 1,
    contact = contact - (SELECT coalesce(c.consent_contact <> 0 AND NOT {_C7}, 0) FROM {_CONSENT}),
    updates = updates - (SELECT coalesce(c.consent_updates <> 0 AND NOT {_S0}, 0) FROM {_CONSENT}),
    third_parties = third_parties - (SELECT coalesce(c.consent_third_parties <> 0 AND NOT {_T7}, 0) FROM {_CONSENT})
  WHERE NOT {unless};
  INSERT INTO stats_days (day, n) SELECT substr(c.recorded_at, 1, 10), -1 FROM {_CONSENT} AND NOT {unless}
  ON CONFLICT (day) DO UPDATE SET n = n + excluded.n;
  INSERT INTO stats_versions (policy_id, policy_version, n) SELECT c.policy_id, {_V0}, -1 FROM {_CONSENT}
  AND NOT {unless} ON CONFLICT (policy_id, policy_version) DO UPDATE SET n = n + excluded.n;"""


def _takes_back(flag: str, stopped: str) -> str:
    # 1 when NEW names `flag`, the receipt gave it, and no earlier withdrawal named it.
    return f"(SELECT coalesce(NEW.{flag} IS NOT NULL AND c.{flag} <> 0 AND NOT {stopped}, 0) FROM {_CONSENT})"


_SCHEMA_7 = f"""
DROP VIEW receipts;
CREATE VIEW receipts AS
SELECT c.seq, c.receipt_id, c.recorded_at, c.policy_id,
       coalesce(c.page, p.page) AS page,
       c.policy_version AS consented_version,
       (SELECT r.policy_version FROM entries r WHERE r.receipt_id = c.receipt_id
          AND r.kind IN ('consent', 'reconsent') ORDER BY r.seq DESC LIMIT 1) AS policy_version,
       c.consent_contact, c.consent_updates, c.consent_third_parties,
       -- A withdrawal naming no consent withdraws them all; one naming some withdraws exactly those (*_stopped).
       EXISTS (SELECT 1 FROM entries w WHERE w.receipt_id = c.receipt_id AND w.kind = 'withdrawal'
               AND w.consent_contact IS NULL AND w.consent_updates IS NULL AND w.consent_third_parties IS NULL) AS withdrawn,
       EXISTS (SELECT 1 FROM entries x WHERE x.receipt_id = c.receipt_id AND x.kind = 'erasure') AS erased,
       p.email,
       EXISTS (SELECT 1 FROM entries u WHERE u.receipt_id = c.receipt_id AND u.kind = 'withdrawal'
               AND u.consent_updates IS NOT NULL) AS updates_stopped,
       EXISTS (SELECT 1 FROM entries k WHERE k.receipt_id = c.receipt_id AND k.kind = 'withdrawal'
               AND k.consent_contact IS NOT NULL) AS contact_stopped,
       EXISTS (SELECT 1 FROM entries t WHERE t.receipt_id = c.receipt_id AND t.kind = 'withdrawal'
               AND t.consent_third_parties IS NOT NULL) AS third_parties_stopped
FROM entries c LEFT JOIN personal p ON p.receipt_id = c.receipt_id
WHERE c.kind = 'consent';

DROP TRIGGER stats_reconsent;
DROP TRIGGER stats_withdrawal;
DROP TRIGGER stats_erasure;
DROP TRIGGER stats_updates_stopped;
CREATE TRIGGER stats_reconsent AFTER INSERT ON entries
WHEN NEW.kind = 'reconsent' AND NOT {_W7} AND NOT {_E0}
BEGIN
  INSERT INTO stats_versions (policy_id, policy_version, n) SELECT c.policy_id, {_V0}, -1 FROM {_CONSENT}
  ON CONFLICT (policy_id, policy_version) DO UPDATE SET n = n + excluded.n;
  INSERT INTO stats_versions (policy_id, policy_version, n) SELECT c.policy_id, NEW.policy_version, 1 FROM {_CONSENT}
  ON CONFLICT (policy_id, policy_version) DO UPDATE SET n = n + excluded.n;
END;
-- The first withdrawal naming no consent withdraws the receipt; a later one changes nothing.
CREATE TRIGGER stats_withdrawal AFTER INSERT ON entries
WHEN NEW.kind = 'withdrawal' AND {_NAMES_NONE} AND NOT {_W7} AND EXISTS (SELECT 1 FROM {_CONSENT})
BEGIN
  UPDATE stats_totals SET withdrawn = withdrawn + 1;{_leaves_standing_7(_E0)}
END;
CREATE TRIGGER stats_erasure AFTER INSERT ON entries
WHEN NEW.kind = 'erasure' AND NOT {_E0} AND EXISTS (SELECT 1 FROM {_CONSENT})
BEGIN
  UPDATE stats_totals SET erased = erased + 1;{_leaves_standing_7(_W7)}
END;
-- A withdrawal naming consents, on a standing receipt: each named consent it gave, not withdrawn before,
-- no longer counts.
CREATE TRIGGER stats_consents_withdrawn AFTER INSERT ON entries
WHEN NEW.kind = 'withdrawal' AND NOT ({_NAMES_NONE}) AND NOT {_W7} AND NOT {_E0}
  AND EXISTS (SELECT 1 FROM {_CONSENT})
BEGIN
  UPDATE stats_totals SET contact = contact - {_takes_back("consent_contact", _C7)},
    updates = updates - {_takes_back("consent_updates", _S0)},
    third_parties = third_parties - {_takes_back("consent_third_parties", _T7)};
END;
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
    Migration(4, "an index of personal data by address (email_key)", _SCHEMA_4),
    Migration(5, "statistics kept as counters by triggers", _SCHEMA_5),
    Migration(6, "the mail outbox, the mail quota and meta, created here rather than by their modules", _SCHEMA_6),
    Migration(7, "withdrawing one consent at a time: the receipts view and the statistics' triggers", _SCHEMA_7),
)
SCHEMA_VERSION = MIGRATIONS[-1].version
# The whole schema of a new ledger, for reading (tests, documentation); migrate() is what applies it.
SCHEMA = "".join(m.sql for m in MIGRATIONS)
# The rule "a withdrawal naming no consent withdraws every consent of its receipt; one naming some (set false)
# withdraws exactly those", as SQL over an entries row (types.withdraws_all in Python). Since schema 7; released
# migrations spell out the rule of their time themselves and stay as they shipped.
WITHDRAWS_ALL = ("kind = 'withdrawal' AND consent_contact IS NULL AND consent_updates IS NULL"
                 " AND consent_third_parties IS NULL")


def _email_key_or_none(*args: Any) -> str | None:
    # email_key(email) in SQL; apsw's callback type takes any number of SQL values.
    (email,) = args
    return email_key(email) if isinstance(email, str) else None


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
    # Schema 4 fills personal.email_key with the one rule for comparing addresses (Python's casefold).
    conn.create_scalar_function("email_key", _email_key_or_none, 1, deterministic=True)
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
