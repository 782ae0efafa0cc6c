"""The PostgreSQL ledger's schema: one ordered list of migrations, recorded in the database (ledger_schema).

The same tables as the SQLite ledger, with PostgreSQL's means to the same guarantees: a trigger refuses
UPDATE, DELETE and TRUNCATE of entries; prev_hash is UNIQUE (no fork); canonical bytes are bytea; the
statistics are counters kept by a trigger in the transaction of every append. Personal data is hash-partitioned
into PERSONAL_PARTITIONS tables so that erasure can rewrite the one partition holding a receipt (VACUUM FULL)
in a time that does not grow with the whole ledger.
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg

from form_handler.ledger.types import LedgerError

PERSONAL_PARTITIONS = 64
# pg_advisory_xact_lock keys: appends (the chain's one writer at a time, across every instance) and migrations.
APPEND_LOCK = 0x706F6C6963790001
MIGRATE_LOCK = 0x706F6C6963790002

_PARTITIONS = "\n".join(
    f"CREATE TABLE personal_p{i:02d} PARTITION OF personal FOR VALUES WITH (MODULUS {PERSONAL_PARTITIONS}, REMAINDER {i});"
    for i in range(PERSONAL_PARTITIONS)
)

_SCHEMA_1 = f"""
CREATE TABLE entries (
    seq bigint PRIMARY KEY,
    -- UNIQUE: two appends that read the same head cannot both land (the database refuses a fork).
    prev_hash text NOT NULL UNIQUE,
    hash text NOT NULL,
    -- The canonical bytes exactly as hashed.
    canonical bytea NOT NULL,
    kind text NOT NULL,
    receipt_id text NOT NULL,
    recorded_at text NOT NULL,
    policy_id text,
    policy_version text,
    page text,
    commitment text,
    -- 0/1 as in the SQLite ledger, so that exports and verify read the same values.
    consent_contact smallint,
    consent_updates smallint,
    consent_third_parties smallint
);
CREATE INDEX entries_receipt ON entries (receipt_id, kind);
CREATE FUNCTION ledger_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'ledger entries are append-only: % refused', TG_OP USING ERRCODE = 'integrity_constraint_violation';
END $$;
CREATE TRIGGER entries_no_update BEFORE UPDATE OR DELETE ON entries FOR EACH ROW EXECUTE FUNCTION ledger_append_only();
CREATE TRIGGER entries_no_truncate BEFORE TRUNCATE ON entries FOR EACH STATEMENT EXECUTE FUNCTION ledger_append_only();

-- Personal data, outside the chain so it can be erased; the salt goes with it.
CREATE TABLE personal (
    receipt_id text NOT NULL,
    salt bytea NOT NULL,
    email text,
    message text NOT NULL,
    page text,
    email_key text,
    PRIMARY KEY (receipt_id)
) PARTITION BY HASH (receipt_id);
{_PARTITIONS}
CREATE INDEX personal_email_key ON personal (email_key, receipt_id) WHERE email_key IS NOT NULL;

-- One row per consent receipt with its current status; exports read this.
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

-- The statistics as counters (as the SQLite ledger's schemas 5 and 7): a receipt stands while neither withdrawn
-- (a withdrawal naming no consent) nor erased; a consent withdrawn on its own no longer counts.
CREATE TABLE stats_totals (
    id integer PRIMARY KEY CHECK (id = 1),
    submissions bigint NOT NULL, withdrawn bigint NOT NULL, erased bigint NOT NULL, standing bigint NOT NULL,
    contact bigint NOT NULL, updates bigint NOT NULL, third_parties bigint NOT NULL
);
INSERT INTO stats_totals VALUES (1, 0, 0, 0, 0, 0, 0, 0);
CREATE TABLE stats_days (day text PRIMARY KEY, n bigint NOT NULL);
CREATE TABLE stats_versions (policy_id text, policy_version text, n bigint NOT NULL);
CREATE UNIQUE INDEX stats_versions_key ON stats_versions (policy_id, policy_version) NULLS NOT DISTINCT;

CREATE FUNCTION stats_bump(p_day text, p_policy text, p_version text, n bigint) RETURNS void LANGUAGE sql AS $$
    INSERT INTO stats_days (day, n) SELECT p_day, n WHERE p_day IS NOT NULL
    ON CONFLICT (day) DO UPDATE SET n = stats_days.n + excluded.n;
    INSERT INTO stats_versions (policy_id, policy_version, n) VALUES (p_policy, p_version, n)
    ON CONFLICT (policy_id, policy_version) DO UPDATE SET n = stats_versions.n + excluded.n;
$$;

-- Each entry changes only its own receipt's row: move the counters by that row's change, looking only at the
-- entries of NEW's receipt before NEW (through entries_receipt).
CREATE FUNCTION ledger_stats() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    c entries%ROWTYPE;
    w0 boolean; e0 boolean; c0 boolean; s0 boolean; t0 boolean; v0 text;
BEGIN
    IF NEW.kind = 'consent' THEN
        UPDATE stats_totals SET submissions = submissions + 1, standing = standing + 1,
            contact = contact + coalesce(NEW.consent_contact, 0),
            updates = updates + (coalesce(NEW.consent_updates, 0) <> 0)::int,
            third_parties = third_parties + coalesce(NEW.consent_third_parties, 0);
        PERFORM stats_bump(substr(NEW.recorded_at, 1, 10), NEW.policy_id, NEW.policy_version, 1);
        RETURN NULL;
    END IF;
    SELECT * INTO c FROM entries WHERE receipt_id = NEW.receipt_id AND kind = 'consent' ORDER BY seq LIMIT 1;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    w0 := EXISTS (SELECT 1 FROM entries w WHERE w.receipt_id = NEW.receipt_id AND w.kind = 'withdrawal'
                  AND w.consent_contact IS NULL AND w.consent_updates IS NULL AND w.consent_third_parties IS NULL
                  AND w.seq < NEW.seq);
    e0 := EXISTS (SELECT 1 FROM entries x WHERE x.receipt_id = NEW.receipt_id AND x.kind = 'erasure' AND x.seq < NEW.seq);
    c0 := EXISTS (SELECT 1 FROM entries k WHERE k.receipt_id = NEW.receipt_id AND k.kind = 'withdrawal'
                  AND k.consent_contact IS NOT NULL AND k.seq < NEW.seq);
    s0 := EXISTS (SELECT 1 FROM entries u WHERE u.receipt_id = NEW.receipt_id AND u.kind = 'withdrawal'
                  AND u.consent_updates IS NOT NULL AND u.seq < NEW.seq);
    t0 := EXISTS (SELECT 1 FROM entries t WHERE t.receipt_id = NEW.receipt_id AND t.kind = 'withdrawal'
                  AND t.consent_third_parties IS NOT NULL AND t.seq < NEW.seq);
    SELECT v.policy_version INTO v0 FROM entries v WHERE v.receipt_id = NEW.receipt_id
        AND v.kind IN ('consent', 'reconsent') AND v.seq < NEW.seq ORDER BY v.seq DESC LIMIT 1;
    IF NEW.kind = 'reconsent' THEN
        IF NOT w0 AND NOT e0 THEN
            PERFORM stats_bump(NULL, c.policy_id, v0, -1);
            PERFORM stats_bump(NULL, c.policy_id, NEW.policy_version, 1);
        END IF;
    ELSIF NEW.kind = 'withdrawal' AND NEW.consent_contact IS NULL AND NEW.consent_updates IS NULL
          AND NEW.consent_third_parties IS NULL THEN
        IF NOT w0 THEN
            UPDATE stats_totals SET withdrawn = withdrawn + 1;
            IF NOT e0 THEN
                PERFORM ledger_stats_leave(c, c0, s0, t0, v0);
            END IF;
        END IF;
    ELSIF NEW.kind = 'erasure' THEN
        IF NOT e0 THEN
            UPDATE stats_totals SET erased = erased + 1;
            IF NOT w0 THEN
                PERFORM ledger_stats_leave(c, c0, s0, t0, v0);
            END IF;
        END IF;
    ELSIF NEW.kind = 'withdrawal' THEN
        -- Consents withdrawn on their own (the e-mail unsubscribe names updates), on a standing receipt: each
        -- named consent it gave, not withdrawn before, no longer counts.
        IF NOT w0 AND NOT e0 THEN
            UPDATE stats_totals SET
                contact = contact - (NEW.consent_contact IS NOT NULL AND coalesce(c.consent_contact, 0) <> 0 AND NOT c0)::int,
                updates = updates - (NEW.consent_updates IS NOT NULL AND coalesce(c.consent_updates, 0) <> 0 AND NOT s0)::int,
                third_parties = third_parties - (NEW.consent_third_parties IS NOT NULL
                    AND coalesce(c.consent_third_parties, 0) <> 0 AND NOT t0)::int;
        END IF;
    END IF;
    RETURN NULL;
END $$;

-- The receipt stops counting as standing: take its share back, less the consents withdrawn on their own before.
CREATE FUNCTION ledger_stats_leave(c entries, c0 boolean, s0 boolean, t0 boolean, v0 text) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE stats_totals SET standing = standing - 1,
        contact = contact - (coalesce(c.consent_contact, 0) <> 0 AND NOT c0)::int,
        updates = updates - (coalesce(c.consent_updates, 0) <> 0 AND NOT s0)::int,
        third_parties = third_parties - (coalesce(c.consent_third_parties, 0) <> 0 AND NOT t0)::int;
    PERFORM stats_bump(substr(c.recorded_at, 1, 10), c.policy_id, v0, -1);
END $$;
CREATE TRIGGER entries_stats AFTER INSERT ON entries FOR EACH ROW EXECUTE FUNCTION ledger_stats();

-- Beside the chain: the mail outbox (personal data; erase deletes a receipt's rows), the mail quota (keyed
-- hashes, a day at most) and name/value rows (the notify run lock).
CREATE TABLE outbox (
    id bigserial PRIMARY KEY,
    receipt_id text NOT NULL,
    kind text NOT NULL,
    recipient text NOT NULL,
    message bytea NOT NULL,
    created_at text NOT NULL,
    attempts integer NOT NULL DEFAULT 0,
    next_attempt_at text NOT NULL,
    claimed_until text,
    last_error text,
    sent_at text,
    gave_up_at text
);
CREATE INDEX outbox_due ON outbox (next_attempt_at) WHERE sent_at IS NULL AND gave_up_at IS NULL;
CREATE INDEX outbox_receipt ON outbox (receipt_id);
CREATE TABLE mail_quota (recipient_hmac text NOT NULL, queued_at text NOT NULL);
CREATE INDEX mail_quota_recipient ON mail_quota (recipient_hmac, queued_at);
CREATE INDEX mail_quota_queued ON mail_quota (queued_at);
CREATE TABLE meta (name text PRIMARY KEY, value text NOT NULL);
"""


@dataclass(frozen=True)
class Migration:
    version: int
    what: str
    sql: str


# The one ordered list; the version reached is the row of ledger_schema. Add steps at the end; never edit a
# released one.
MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "entries, personal data (partitioned), statistics, the outbox, the mail quota and meta", _SCHEMA_1),
)
SCHEMA_VERSION = MIGRATIONS[-1].version


def migrate(conn: psycopg.Connection[tuple[object, ...]], where: str) -> int:
    """Apply the missing migrations in one transaction, under an advisory lock (two instances starting at once
    migrate once); return the version before."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATE_LOCK,))
        conn.execute("CREATE TABLE IF NOT EXISTS ledger_schema (version integer NOT NULL)")
        row = conn.execute("SELECT max(version) FROM ledger_schema").fetchone()
        before = int(str(row[0])) if row and row[0] is not None else 0
        if before > SCHEMA_VERSION:
            raise LedgerError(
                f"{where}: ledger schema {before} is newer than this version of policy-site knows "
                f"({SCHEMA_VERSION}); upgrade policy-site."
            )
        for step in MIGRATIONS:
            if step.version > before:
                conn.execute(step.sql.encode())
        if before < SCHEMA_VERSION:
            conn.execute("DELETE FROM ledger_schema")
            conn.execute("INSERT INTO ledger_schema (version) VALUES (%s)", (SCHEMA_VERSION,))
    return before
