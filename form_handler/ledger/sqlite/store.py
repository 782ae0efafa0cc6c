"""The consent ledger: an append-only, hash-chained SQLite file (apsw, WAL, synchronous=FULL).

Each chained entry is canonical JSON stored verbatim beside sha256(prev_hash + bytes). Email,
message and page live in the erasable `personal` table; the entry holds only a salted commitment.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import apsw

from form_handler.ledger.sqlite import reports
from form_handler.consent.addresses import email_key
from form_handler.private_files import ensure_private
from form_handler.ledger.chain import (
    ENTRY_VERSION, FLAG_COLUMNS, KINDS, RESERVED, TEXT_COLUMNS, Checkpoint, VerifyReport, canonical, commitment,
    entry_hash, utc_now,
)
from form_handler.ledger.types import (
    READ_UNAVAILABLE_ERRORS, UNAVAILABLE_ERRORS, ConsentDraft, Entry, InvalidToken, LedgerError, LedgerRefusal,
    LedgerUnavailable, Receipt, ReceiptStatus, UnknownReceipt,
)
from form_handler.ledger.sqlite.readers import ReadPool
from form_handler.ledger.sqlite.schema import (
    BUSY_TIMEOUT_MS, META_SCHEMA, SCHEMA, SCHEMA_VERSION, SQLITE_MINIMUM, check_schema_version,
    check_sqlite_version, configure, migrate, read_pragmas, user_version,
)
from form_handler.ledger.sqlite.verify import verify as verify_ledger

__all__ = [
    "Checkpoint", "ConsentDraft", "Entry", "InvalidToken", "Ledger", "LedgerError", "LedgerRefusal",
    "LedgerTxn", "LedgerUnavailable", "Receipt", "ReceiptStatus", "UnknownReceipt", "VerifyReport",
    # Re-exported so `from form_handler.ledger import ...` keeps working for the schema and connection setup.
    "BUSY_TIMEOUT_MS", "META_SCHEMA", "SCHEMA", "SCHEMA_VERSION", "SQLITE_MINIMUM", "UNAVAILABLE_ERRORS",
    "check_sqlite_version", "configure", "read_pragmas",
]

# Tables other modules keep personal data in, keyed by receipt_id; erase() clears them too.
ERASABLE_TABLES: list[str] = ["outbox"]
# Read connections per Ledger: reads run at once on a few cores (more would only queue for the CPU), and
# one slow read does not hold up the others. Each may cache up to 32 MB of pages (schema.configure).
READERS = 4

T = TypeVar("T")


def _check_text(name: str, value: object, *, optional: bool = False) -> None:
    if value is None and optional:
        return
    if not isinstance(value, str):
        raise LedgerRefusal(f"{name} must be text.", name)
    try:
        value.encode()
    except UnicodeEncodeError:
        raise LedgerRefusal(f"{name} is not valid UTF-8 text.", name) from None


def _check_fields(fields: dict[str, Any]) -> None:
    for name in TEXT_COLUMNS:
        if name in fields:
            _check_text(name, fields[name], optional=True)
    for name in FLAG_COLUMNS:
        if name in fields and not isinstance(fields[name], bool):
            raise LedgerRefusal(f"{name} must be true or false.", name)


def new_receipt_secrets(now: float | None = None) -> tuple[str, str, bytes]:
    """A receipt id, its withdraw token (shown once) and its salt, from one read of the OS's random source.

    The id is 32 hex digits: the time in milliseconds (12), then 80 random bits (20). Ids made in time
    order land at the right-hand end of the two receipt_id indexes; wholly random ids put each
    append on a random page of each index, and a batch of 35 dirtied ~130 pages (530 kB of WAL per
    COMMIT, at 20,000 entries). The id only names a receipt: acting on it takes the token (256 bits),
    and the time it shows is on the receipt and in the chain already.
    """
    ms = int((time.time() if now is None else now) * 1000)
    raw = os.urandom(10 + 32 + 16)
    token = base64.urlsafe_b64encode(raw[10:42]).rstrip(b"=").decode("ascii")  # as secrets.token_urlsafe(32)
    return f"{ms:012x}{raw[:10].hex()}", token, raw[42:]


class LedgerTxn:
    """Operations inside one open write transaction (BEGIN IMMEDIATE already taken)."""

    def __init__(self, connection: apsw.Connection) -> None:
        self.connection = connection

    def _one(self, sql: str, params: tuple[Any, ...] = ()) -> tuple[Any, ...] | None:
        for row in self.connection.execute(sql, params):
            return tuple(row)
        return None

    def append(self, kind: str, receipt_id: str, **fields: Any) -> Entry:
        """Append a chained entry of `kind` for an existing receipt, e.g. "confirmation" or "notice"."""
        if kind not in KINDS or kind == "consent":
            raise ValueError(f"kind must be one of {', '.join(KINDS[1:])}, got {kind!r} (use append_consent).")
        if RESERVED & fields.keys():
            raise ValueError(f"fields may not set {sorted(RESERVED & fields.keys())}.")
        if "page" in fields:
            raise ValueError("page is personal data and is never chained; only a consent keeps one (append_consent).")
        _check_fields(fields)
        if self._one("SELECT 1 FROM entries WHERE receipt_id = ? AND kind = 'consent'", (receipt_id,)) is None:
            raise UnknownReceipt(f"receipt_id {receipt_id!r} is not in the ledger.", "receipt_id")
        return self._append(kind, receipt_id, fields)

    def _append(self, kind: str, receipt_id: str, fields: dict[str, Any]) -> Entry:
        # The head is read inside the transaction (after BEGIN IMMEDIATE), never cached, so a
        # rolled-back savepoint cannot leave us appending to an entry that no longer exists.
        head = self._one("SELECT seq, hash FROM entries ORDER BY seq DESC LIMIT 1")
        seq, prev = (head[0] + 1, head[1]) if head else (1, "0" * 64)
        recorded_at = utc_now()
        entry = {"v": ENTRY_VERSION, "seq": seq, "kind": kind, "receipt_id": receipt_id, "recorded_at": recorded_at,
                 **fields}
        try:
            data = canonical(entry)
        except (TypeError, ValueError) as e:
            raise ValueError(f"ledger entry fields must be JSON values: {e}.") from None
        digest = entry_hash(prev, data)
        cols = [fields.get(n) for n in TEXT_COLUMNS] + [
            None if fields.get(n) is None else int(fields[n]) for n in FLAG_COLUMNS
        ]
        self.connection.execute(
            "INSERT INTO entries (seq, prev_hash, hash, canonical, kind, receipt_id, recorded_at, policy_id,"
            " policy_version, page, commitment, consent_contact, consent_updates, consent_third_parties)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (seq, prev, digest, data, kind, receipt_id, recorded_at, *cols),
        )
        return Entry(seq, digest, prev, kind, receipt_id, recorded_at, dict(fields))

    def append_consent(self, draft: ConsentDraft) -> Receipt:
        """Record a submission: the chained consent entry plus its erasable personal data."""
        for name in ("policy_id", "policy_version", "page", "message"):
            _check_text(name, getattr(draft, name))
        _check_text("email", draft.email, optional=True)
        flags = {n: getattr(draft, n) for n in FLAG_COLUMNS}
        _check_fields(flags)
        receipt_id, token, salt = new_receipt_secrets()
        # The page stays out of the chain (a path can name a person); the commitment covers it (v2).
        fields = {
            "policy_id": draft.policy_id, "policy_version": draft.policy_version, **flags,
            "commitment": commitment(salt, draft.email, draft.message, draft.page, v=ENTRY_VERSION),
            "withdraw_token_sha256": hashlib.sha256(token.encode()).hexdigest(),
        }
        entry = self._append("consent", receipt_id, fields)
        self.connection.execute(
            # email_key: the address as compared (addresses.py), indexed to find a person's receipts (schema 4).
            "INSERT INTO personal (receipt_id, salt, email, message, page, email_key) VALUES (?, ?, ?, ?, ?, ?)",
            (receipt_id, salt, draft.email, draft.message, draft.page,
             None if draft.email is None else email_key(draft.email)),
        )
        return Receipt(
            receipt_id, entry.recorded_at, draft.policy_id, draft.policy_version, draft.consent_contact,
            draft.consent_updates, draft.consent_third_parties, token, entry.seq, entry.entry_hash,
        )

    def _existing(self, kind: str, receipt_id: str) -> Entry | None:
        row = self._one(
            "SELECT seq, hash, prev_hash, recorded_at, canonical FROM entries WHERE receipt_id = ? AND kind = ?"
            # A withdrawal naming consent_updates (the e-mail unsubscribe link) stops change notices only;
            # only one without flags withdraws every consent of the receipt.
            " AND (kind != 'withdrawal' OR consent_updates IS NULL)"
            " ORDER BY seq LIMIT 1", (receipt_id, kind),
        )
        if row is None:
            return None
        fields = {k: v for k, v in json.loads(row[4]).items() if k not in RESERVED}
        return Entry(row[0], row[1], row[2], kind, receipt_id, row[3], fields)

    def _consent(self, receipt_id: object) -> Entry:
        entry = self._existing("consent", receipt_id) if isinstance(receipt_id, str) else None
        if entry is None:
            raise UnknownReceipt(f"receipt_id {receipt_id!r} is not in the ledger.", "receipt_id")
        return entry

    def withdraw(self, receipt_id: str, token: str) -> Entry:
        """Withdraw every consent of a receipt. Idempotent: a second call returns the first withdrawal."""
        consent = self._consent(receipt_id)
        given = hashlib.sha256(str(token).encode("utf-8", "surrogatepass")).hexdigest()
        if not hmac.compare_digest(given, str(consent.fields.get("withdraw_token_sha256", ""))):
            raise InvalidToken("withdraw_token does not match this receipt.", "withdraw_token")
        return self._existing("withdrawal", receipt_id) or self._append("withdrawal", receipt_id, {})

    def erase(self, receipt_id: str) -> Entry:
        """Delete the receipt's email, message, page and salt (and rows of ERASABLE_TABLES); idempotent."""
        self._consent(receipt_id)
        self.connection.execute("DELETE FROM personal WHERE receipt_id = ?", (receipt_id,))
        for table in ERASABLE_TABLES:
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", table):
                raise ValueError(f"ERASABLE_TABLES holds an invalid table name {table!r}.")
            if self._one("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)):
                # Identifier validated above; the value is bound.
                self.connection.execute(f'DELETE FROM "{table}" WHERE receipt_id = ?', (receipt_id,))
        return self._existing("erasure", receipt_id) or self._append("erasure", receipt_id, {})

    def status(self, receipt_id: str) -> ReceiptStatus:
        self._consent(receipt_id)
        withdrawn = self._existing("withdrawal", receipt_id) is not None
        return ReceiptStatus(receipt_id, withdrawn, self._existing("erasure", receipt_id) is not None)


class Ledger:
    """The ledger file: one connection for writes, a pool for reads; opening creates or migrates the schema."""

    def __init__(self, path: str | Path, *, readonly: bool = False, readers: int = READERS) -> None:
        check_sqlite_version(apsw.sqlite_lib_version())
        self.path = Path(path)
        self.readonly = readonly
        self._lock = threading.RLock()
        self._conn: apsw.Connection | None = None
        self._readers = ReadPool(self._open_reader, size=readers, wait=BUSY_TIMEOUT_MS / 1000)
        try:
            self._connect()
        except LedgerUnavailable:
            # A service must start even while its disk is full or read-only: it answers 503 and
            # the next transaction or read tries again. Its reader too: on a read-only volume a WAL
            # file cannot even be opened for reading (no -shm), and the service must not exit for that.
            pass

    @property
    def connection(self) -> apsw.Connection:
        """The one connection of writes, for single-threaded callers (CLI, tests); concurrent readers use read()."""
        return self._connect()

    def _connect(self) -> apsw.Connection:
        if self._conn is not None:
            return self._conn
        if self.readonly and not self.path.exists():
            raise LedgerError(f"{self.path}: no ledger file there; check POLICY_SITE_LEDGER or --ledger.")
        try:
            if not self.readonly:
                # Created 0600 before SQLite opens it, so the -wal and -shm files it makes are 0600 too.
                ensure_private(self.path)
            flags = apsw.SQLITE_OPEN_READONLY if self.readonly else apsw.SQLITE_OPEN_READWRITE | apsw.SQLITE_OPEN_CREATE
            conn = apsw.Connection(str(self.path), flags=flags)
        except (OSError, *UNAVAILABLE_ERRORS) as e:
            raise LedgerUnavailable(f"{self.path}: cannot open the ledger ({e}).") from e
        try:
            configure(conn)
            version = user_version(conn)
            check_schema_version(version, self.path)
            if not self.readonly and version < SCHEMA_VERSION:
                migrate(conn, self.path)  # a new file gets the whole schema, an older ledger what it lacks
            # A reader cannot migrate; an older ledger is migrated by a writer's open first (below).
            stale = self.readonly and 0 < version < SCHEMA_VERSION
        except LedgerError:
            conn.close(True)
            raise
        except UNAVAILABLE_ERRORS as e:
            conn.close(True)
            raise LedgerUnavailable(f"{self.path}: cannot write the ledger ({e}).") from e
        except apsw.Error as e:
            conn.close(True)
            raise LedgerError(f"{self.path}: not a usable ledger ({e}).") from e
        if stale:
            conn.close(True)
            self._migrate_for_reader(version)
            return self._connect()
        self._conn = conn
        return conn

    def _migrate_for_reader(self, version: int) -> None:
        # The same open as a writer's, so the schema changes in one place, once; the chain is not touched.
        writer = Ledger(self.path, readers=1)
        try:
            writer._connect()
        except LedgerUnavailable as e:
            raise LedgerError(
                f"{self.path}: ledger schema {version} must be migrated to schema {SCHEMA_VERSION} before this "
                f"version can read it, and the file cannot be written here ({e}); open it once where it can be "
                "written (start the service, or run `policy-site ledger verify` with write access)."
            ) from None
        finally:
            writer.close()

    def _drop(self) -> None:
        # After an I/O error, reopen on the next use: a fresh connection sees restored space or permissions.
        if self._conn is not None:
            try:
                self._conn.close(True)
            except apsw.Error:
                pass
            self._conn = None

    @contextmanager
    def transaction(self) -> Iterator[LedgerTxn]:
        """BEGIN IMMEDIATE ... COMMIT; I/O failures become LedgerUnavailable and the next call reconnects."""
        with self._lock:
            conn = self._connect()
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    yield LedgerTxn(conn)
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
                conn.execute("COMMIT")
            except UNAVAILABLE_ERRORS as e:
                self._drop()
                raise LedgerUnavailable(f"{self.path}: cannot write the ledger now ({e}).") from e

    @contextmanager
    def _reading(self) -> Iterator[apsw.Connection]:
        # One read transaction = one consistent snapshot while writers go on (WAL), on a pooled connection
        # that no other thread uses meanwhile.
        conn = self._readers.take()
        try:
            conn.execute("BEGIN")
            try:
                yield conn
            finally:
                if conn.in_transaction:
                    conn.execute("COMMIT")
        except READ_UNAVAILABLE_ERRORS as e:
            self._readers.discard(conn)  # the next read opens a fresh one: restored file, space or permissions
            raise LedgerUnavailable(f"{self.path}: cannot read the ledger now ({e}).") from e
        except BaseException:
            self._readers.give(conn)
            raise
        self._readers.give(conn)

    def read(self, fn: Callable[[apsw.Connection], T]) -> T:
        """Run fn(connection) inside one read snapshot, on a connection only this thread uses meanwhile.

        Safe from any number of threads at once (up to READERS run together, the rest wait). A file that
        cannot be read (I/O error, not a database) raises LedgerUnavailable.
        """
        with self._reading() as conn:
            return fn(conn)

    def append_consent(self, draft: ConsentDraft) -> Receipt:
        with self.transaction() as txn:
            return txn.append_consent(draft)

    def withdraw(self, receipt_id: str, token: str) -> Entry:
        with self.transaction() as txn:
            return txn.withdraw(receipt_id, token)

    def erase(self, receipt_id: str) -> Entry:
        """Erase a receipt's personal data, then checkpoint so old copies leave the WAL file too."""
        with self.transaction() as txn:
            entry = txn.erase(receipt_id)
        with self._lock:
            try:
                # Best effort: a reader elsewhere may hold old frames; they go at the next checkpoint.
                self._connect().execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
            except apsw.Error:
                pass
        return entry

    def status(self, receipt_id: str) -> ReceiptStatus:
        with self._reading() as conn:
            return LedgerTxn(conn).status(receipt_id)

    def head(self) -> Checkpoint:
        """The current entry count and head hash, to publish as a checkpoint."""
        with self._reading() as conn:
            rows: list[Any] = conn.execute("SELECT seq, hash FROM entries ORDER BY seq DESC LIMIT 1").fetchall()
        count, head = rows[0] if rows else (0, "0" * 64)
        return Checkpoint(count=count, head=head, at=utc_now())

    def verify(self, against: Checkpoint | None = None, *, workers: int | None = None) -> VerifyReport:
        """Check the chain, every entry's columns and commitment; report count, head, SQLite version, first bad entry.

        A large ledger is checked by `workers` processes at once (default: one per CPU; form_handler/verify.py).
        """
        # Its own connection, as export's: one snapshot, held for the seconds a large ledger takes.
        conn = self._open_reader()
        try:
            conn.execute("BEGIN")
            return verify_ledger(conn, self.path, against, workers=workers).report
        except READ_UNAVAILABLE_ERRORS as e:
            raise LedgerUnavailable(f"{self.path}: cannot read the ledger now ({e}).") from e
        finally:
            conn.close(True)

    def export(self, third_party: bool = False) -> Iterator[dict[str, Any]]:
        """Every chained entry with its personal data and status; or, for third parties, emails only."""
        # Its own connection, not a pooled one: a slow client may hold it for the whole stream.
        conn = self._open_reader()
        try:
            conn.execute("BEGIN")
            yield from (reports.third_party_emails(conn) if third_party else reports.entries(conn))
        except READ_UNAVAILABLE_ERRORS as e:
            raise LedgerUnavailable(f"{self.path}: cannot read the ledger now ({e}).") from e
        finally:
            conn.close(True)

    def _open_reader(self) -> apsw.Connection:
        if self._conn is None:
            with self._lock:
                self._connect()  # creates the file and schema when missing, migrates an older one
        try:
            conn = apsw.Connection(str(self.path), flags=apsw.SQLITE_OPEN_READONLY)
        except READ_UNAVAILABLE_ERRORS as e:
            raise LedgerUnavailable(f"{self.path}: cannot read the ledger now ({e}).") from e
        try:
            configure(conn)
        except READ_UNAVAILABLE_ERRORS as e:
            conn.close(True)
            raise LedgerUnavailable(f"{self.path}: cannot read the ledger now ({e}).") from e
        return conn

    def stats(self) -> dict[str, Any]:
        with self._reading() as conn:
            return reports.stats(conn)

    def legacy_link_key(self) -> str | None:
        """The e-mail link key that ledgers before the key file kept in their `meta` table, if still there."""
        with self._lock:
            conn = self._connect()
            if not conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'").fetchall():
                return None
            rows: list[Any] = conn.execute("SELECT value FROM meta WHERE name = 'link_key'").fetchall()
        return str(rows[0][0]) if rows else None

    def forget_legacy_link_key(self, key: str) -> None:
        """Delete the old link key and every copy of it in the file: the row, old WAL frames and free pages.

        secure_delete (set on every connection) overwrites the row in place; a checkpoint then empties
        the WAL of older page images. Free pages left by a build without secure_delete may still hold
        it, so the file is searched and, if the key is still there, rebuilt with VACUUM.
        """
        with self.transaction() as txn:
            txn.connection.execute("DELETE FROM meta WHERE name = 'link_key'")
        with self._lock:
            conn = self._connect()
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
            if self._file_holds(key):
                conn.execute("VACUUM")
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
            if self._file_holds(key):
                raise LedgerError(
                    f"{self.path}: the old link key is still in the file after VACUUM; stop every process using "
                    "the ledger and run the command again."
                )

    def _file_holds(self, text: str) -> bool:
        # Read in overlapping chunks: a 2 GB ledger is searched in a few seconds, once, at migration.
        needle, tail = text.encode(), b""
        for name in (self.path, self.path.with_name(self.path.name + "-wal")):
            try:
                with open(name, "rb") as f:
                    while chunk := f.read(1 << 20):
                        if needle in tail + chunk:
                            return True
                        tail = chunk[-len(needle):]
            except FileNotFoundError:
                pass
            tail = b""
        return False

    def pragmas(self) -> dict[str, Any]:
        with self._lock:
            return read_pragmas(self._connect())

    def close(self) -> None:
        # Read connections first, so the connection of writes is the last and checkpoints the WAL.
        self._readers.close()
        with self._lock:
            self._drop()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
