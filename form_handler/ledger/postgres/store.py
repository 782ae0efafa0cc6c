"""The consent ledger on PostgreSQL (psycopg 3 with a pool): the LedgerStore of ledger/contract.py.

Several service instances share one database. Appends are serialised across all of them by a
transaction-level advisory lock (txn.py), so the chain never forks (prev_hash is UNIQUE as well); a trigger
refuses UPDATE, DELETE and TRUNCATE of entries; every write transaction sets synchronous_commit on, whatever
the server's default, and a caller hears back only after COMMIT returned. While the server cannot be reached
the store still opens: every operation raises LedgerUnavailable (a 503), and the pool connects again by
itself once the server is back. The schema is created and migrated on first use (schema.py).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg_pool import ConnectionPool, PoolTimeout

from form_handler.ledger.chain import GENESIS, Checkpoint, VerifyReport, utc_now
from form_handler.ledger.contract import RawEntry, RawPersonal
from form_handler.ledger.postgres import verify as pg_verify
from form_handler.ledger.postgres.schema import migrate
from form_handler.ledger.postgres.txn import PgTxn
from form_handler.ledger.postgres.writer import PgWriter
from form_handler.ledger.rows import MIN_COUNT, export_rows, stats_shape, third_party_rows
from form_handler.ledger.types import ConsentDraft, Entry, LedgerError, LedgerUnavailable, Receipt, ReceiptStatus

log = logging.getLogger("form_handler")
T = TypeVar("T")

# Connections per instance: the writer's, the mailer's and a few concurrent readers.
POOL_SIZE = 8
# How long an operation waits for a connection before answering 503 (the server may be down).
CONNECT_WAIT = 3.0
# The errors that mean "the database cannot be used now" (down, restarting, connection lost, out of space).
UNAVAILABLE_ERRORS: tuple[type[Exception], ...] = (
    psycopg.OperationalError, psycopg.InterfaceError, PoolTimeout, psycopg.errors.DiskFull,
    psycopg.errors.InsufficientResources, psycopg.errors.ReadOnlySqlTransaction,
)


def redact(url: str) -> str:
    """The URL without its password, for messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


class PgLedger:
    """One PostgreSQL ledger: a pool of connections, a group-commit writer, reads in REPEATABLE READ snapshots."""

    def __init__(self, url: str, *, readonly: bool = False, pool_size: int = POOL_SIZE) -> None:
        self.url = url
        self.readonly = readonly
        self._migrated = False
        self._migrate_lock = threading.Lock()
        self._writer: PgWriter | None = None
        # min_size 0: no connection is kept open while the server is down; each operation asks for one,
        # waits up to CONNECT_WAIT, and a connection checked broken (server restarted) is replaced.
        self.pool = ConnectionPool(
            url, min_size=0, max_size=pool_size, open=False, timeout=CONNECT_WAIT,
            kwargs={"autocommit": True, "connect_timeout": 3, "application_name": "policy-site"},
            check=ConnectionPool.check_connection, name="policy-site-ledger",
        )
        self.pool.open(wait=False)
        try:
            with self._connection():
                pass  # creates or migrates the schema now when the server is up; later otherwise
        except LedgerUnavailable as e:
            log.warning("ledger database unavailable at start-up (will retry on each request): %s", e)

    @property
    def location(self) -> str:
        return self.url

    @property
    def backend(self) -> str:
        return "postgresql"

    def _unavailable(self, e: Exception) -> LedgerUnavailable:
        return LedgerUnavailable(f"{redact(self.url)}: cannot use the ledger database now ({str(e).strip() or type(e).__name__}).")

    @contextmanager
    def _connection(self) -> Iterator[psycopg.Connection[Any]]:
        try:
            with self.pool.connection() as conn:
                if not self._migrated:
                    with self._migrate_lock:
                        if not self._migrated:
                            migrate(conn, redact(self.url))
                            self._migrated = True
                yield conn
        except UNAVAILABLE_ERRORS as e:
            raise self._unavailable(e) from e

    @contextmanager
    def transaction(self) -> Iterator[PgTxn]:
        """One write transaction (BEGIN ... COMMIT) with synchronous_commit on; I/O errors become LedgerUnavailable."""
        with self._connection() as conn:
            try:
                with conn.transaction():
                    # Durable before acknowledged, whatever the server's or the role's default.
                    conn.execute("SET LOCAL synchronous_commit = on")
                    yield PgTxn(conn)
            except UNAVAILABLE_ERRORS as e:
                raise self._unavailable(e) from e

    def read(self, fn: Callable[[PgTxn], T]) -> T:
        """Run fn(view) inside one REPEATABLE READ, READ ONLY snapshot on a pooled connection."""
        with self._connection() as conn:
            try:
                with conn.transaction():
                    conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                    return fn(PgTxn(conn))
            except UNAVAILABLE_ERRORS as e:
                raise self._unavailable(e) from e

    def start(self, writer: Any = None, *, process: bool = False) -> None:
        """Start the group-commit writer behind submit(): a thread of this process. (`process` is for the
        SQLite backend; here the writing happens in the PostgreSQL server's processes anyway.)"""
        self._writer = writer or PgWriter(self)
        self._writer.start()

    async def submit(self, op: Callable[[PgTxn], T]) -> T:
        if self._writer is None:
            raise LedgerUnavailable("the ledger writer is not running (shutting down or not started).")
        return await self._writer.submit(op)

    def close(self) -> None:
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.close()  # drains what is queued: acknowledged means committed
        self.pool.close()

    def __enter__(self) -> PgLedger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- one-call operations (CLI, tests) ---------------------------------------------------------------

    def append_consent(self, draft: ConsentDraft) -> Receipt:
        with self.transaction() as txn:
            return txn.append_consent(draft)

    def withdraw(self, receipt_id: str, token: str) -> Entry:
        with self.transaction() as txn:
            return txn.withdraw(receipt_id, token)

    def erase(self, receipt_id: str) -> Entry:
        """Erase a receipt's personal data, then rewrite the tables that held it so no copy stays in their files.

        A DELETE leaves the row's bytes in its page (a dead tuple), and VACUUM only marks that space free: it
        does not overwrite it. VACUUM FULL writes the table anew and truncates the old files at commit. The
        personal data is hash-partitioned (schema.py), so only the receipt's partition (1/64th, with its TOAST
        table and indexes) is rewritten; the outbox is rewritten too. A transaction older than the erasure may
        still see the row, and VACUUM FULL copies what someone may still see: it waits (up to a minute) for
        those to end first. WAL, replicas and backups are another matter (README)."""
        with self._connection() as conn:
            row = conn.execute(
                "SELECT tableoid::regclass::text FROM personal WHERE receipt_id = %s", (receipt_id,)).fetchone()
        with self.transaction() as txn:
            entry = txn.erase(receipt_id)
            xid = txn.connection.execute("SELECT pg_current_xact_id()::text").fetchone()
        tables = (["outbox"] + ([str(row[0])] if row else []))
        try:
            with self._connection() as conn:
                self._wait_for_older_snapshots(conn, int(xid[0]) if xid else 0)
                for table in tables:
                    # The table name comes from the catalogue (tableoid::regclass), quoted as an identifier.
                    conn.execute(psycopg.sql.SQL("VACUUM FULL {}").format(psycopg.sql.Identifier(table)))
        except psycopg.Error as e:
            raise self._unavailable(e) from e
        return entry

    def _wait_for_older_snapshots(self, conn: psycopg.Connection[Any], xid: int, limit: float = 60.0) -> None:
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            row = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE pid <> pg_backend_pid() AND backend_xmin IS NOT NULL"
                " AND datname = current_database() AND age(backend_xmin) >= age(%s::text::xid)", (str(xid % 2**32),),
            ).fetchone()
            if not row or not row[0]:
                return
            time.sleep(0.1)
        log.warning("erase: a transaction older than the erasure is still open; its copy may stay until the next VACUUM FULL")

    def status(self, receipt_id: str) -> ReceiptStatus:
        return self.read(lambda view: view.status(receipt_id))

    def head(self) -> Checkpoint:
        found = self.read(lambda view: view.head_entry())
        count, head = found if found else (0, GENESIS)
        return Checkpoint(count=count, head=head, at=utc_now())

    def verify(self, against: Checkpoint | None = None, *, workers: int | None = None) -> VerifyReport:
        """Check the chain, every entry's columns and commitment in one snapshot (postgres/verify.py)."""
        return self.read(lambda view: pg_verify.verify(view.connection, against))

    def settings_line(self) -> str:
        """The durability settings ledger writes run with, for `ledger verify`."""
        def show(view: PgTxn) -> tuple[Any, ...]:
            row = view.connection.execute(
                "SELECT current_setting('fsync'), current_setting('full_page_writes'), current_setting('wal_level')"
            ).fetchone()
            return tuple(row) if row else ()
        fsync, fpw, level = self.read(show)
        return f"settings: synchronous_commit=on (per write) fsync={fsync} full_page_writes={fpw} wal_level={level}"

    def export(self, third_party: bool = False) -> Iterator[dict[str, Any]]:
        """Every chained entry with its personal data and status; or, for third parties, emails only."""
        # Its own connection and snapshot for the whole stream (a slow client may hold it a while).
        try:
            with self._connection() as conn, conn.transaction():
                conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                txn = PgTxn(conn)
                if third_party:
                    yield from third_party_rows(txn._stream(
                        # A third-party consent withdrawn on its own counts as not given.
                        # By address (COLLATE "C": code point order, as SQLite's and Python's), newest first within
                        # one, so rows.third_party_rows holds one address at a time; the sort spills past work_mem.
                        "SELECT q.email_key, r.email, r.consent_third_parties <> 0 AND NOT r.third_parties_stopped,"
                        " r.withdrawn, r.erased FROM receipts r JOIN personal q ON q.receipt_id = r.receipt_id"
                        " WHERE r.email IS NOT NULL AND r.email <> '' AND EXISTS (SELECT 1 FROM entries k"
                        " WHERE k.receipt_id = r.receipt_id AND k.kind = 'confirmation')"
                        ' ORDER BY q.email_key COLLATE "C", r.seq DESC', ()))
                else:
                    yield from export_rows(
                        (int(r[0]), *r[1:]) for r in txn._stream(
                            "SELECT e.seq, e.hash, e.canonical, p.email, p.message, p.page, r.withdrawn, r.erased,"
                            " r.updates_stopped, r.contact_stopped, r.third_parties_stopped"
                            " FROM entries e LEFT JOIN personal p ON e.kind = 'consent'"
                            " AND p.receipt_id = e.receipt_id LEFT JOIN receipts r ON r.receipt_id = e.receipt_id"
                            " ORDER BY e.seq", ()))
        except UNAVAILABLE_ERRORS as e:
            raise self._unavailable(e) from e

    def stats(self) -> dict[str, Any]:
        """Aggregate counts of standing consents from the counters; any count below MIN_COUNT is null or left out."""
        def read(view: PgTxn) -> dict[str, Any]:
            c = view.connection
            totals = c.execute(
                "SELECT submissions, withdrawn, erased, standing, contact, updates, third_parties FROM stats_totals"
            ).fetchone()
            assert totals is not None
            per_day = {d: int(n) for d, n in c.execute(
                "SELECT day, n FROM stats_days WHERE n >= %s ORDER BY day COLLATE \"C\"", (MIN_COUNT,))}
            per_version: dict[str, dict[str, int]] = {}
            for pid, version, n in c.execute(
                "SELECT policy_id, policy_version, n FROM stats_versions WHERE n >= %s"
                " ORDER BY policy_id COLLATE \"C\", policy_version COLLATE \"C\"", (MIN_COUNT,),
            ):
                per_version.setdefault(pid, {})[version] = int(n)
            return stats_shape(totals[:3], totals[3:], per_day, per_version)
        return self.read(read)

    def legacy_link_key(self) -> str | None:
        return None  # link keys were never kept in a PostgreSQL ledger

    def forget_legacy_link_key(self, key: str) -> None:
        return None

    # --- ledger copy ---------------------------------------------------------------------------------------

    def raw_entries(self) -> Iterator[RawEntry]:
        try:
            with self._connection() as conn, conn.transaction():
                conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                for seq, prev, digest, data in PgTxn(conn)._stream(
                        "SELECT seq, prev_hash, hash, canonical FROM entries ORDER BY seq", ()):
                    yield int(seq), str(prev), str(digest), bytes(data)
        except UNAVAILABLE_ERRORS as e:
            raise self._unavailable(e) from e

    def raw_personal(self) -> Iterator[RawPersonal]:
        try:
            with self._connection() as conn, conn.transaction():
                conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                for row in PgTxn(conn)._stream(
                        "SELECT receipt_id, salt, email, message, page, email_key FROM personal ORDER BY receipt_id", ()):
                    yield str(row[0]), bytes(row[1]), row[2], str(row[3]), row[4], row[5]
        except UNAVAILABLE_ERRORS as e:
            raise self._unavailable(e) from e

    def load_raw(self, entries: Iterator[RawEntry], personal: Iterator[RawPersonal]) -> int:
        """Store entries and personal data exactly as given into an empty ledger (one transaction); return the count."""
        import json

        from form_handler.ledger.chain import FLAG_COLUMNS, TEXT_COLUMNS

        with self.transaction() as txn:
            c = txn.connection
            c.execute("SELECT pg_advisory_xact_lock(%s)", (0x706F6C6963790001,))
            found = c.execute("SELECT count(*) FROM entries").fetchone()
            if found and found[0]:
                raise LedgerError(f"the target ledger already holds {found[0]} entries; copy only into an empty ledger.")
            n = 0
            with c.cursor() as cur:
                for seq, prev, digest, data in entries:
                    entry = json.loads(data)
                    cols = [entry.get(k) for k in TEXT_COLUMNS] + [
                        None if entry.get(k) is None else int(entry[k]) for k in FLAG_COLUMNS]
                    cur.execute(
                        "INSERT INTO entries (seq, prev_hash, hash, canonical, kind, receipt_id, recorded_at, policy_id,"
                        " policy_version, page, commitment, consent_contact, consent_updates, consent_third_parties)"
                        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                        (seq, prev, digest, data, entry["kind"], entry["receipt_id"], entry["recorded_at"], *cols))
                    n += 1
                for row in personal:
                    cur.execute("INSERT INTO personal (receipt_id, salt, email, message, page, email_key)"
                                " VALUES (%s, %s, %s, %s, %s, %s)", row)
            return n
