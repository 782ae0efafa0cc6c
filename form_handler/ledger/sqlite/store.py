"""The consent ledger: an append-only, hash-chained SQLite file (apsw, WAL, synchronous=FULL).

Each chained entry is canonical JSON stored verbatim beside sha256(prev_hash + bytes). Email,
message and page live in the erasable `personal` table; the entry holds only a salted commitment.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import apsw

from form_handler.ledger.sqlite import copying, reports
from form_handler.ledger.contract import RawEntry, RawPersonal
from form_handler.consent.addresses import email_key
from form_handler.private_files import ensure_private
from form_handler.ledger.chain import (
    ENTRY_VERSION, FLAG_COLUMNS, RESERVED, Checkpoint, VerifyReport, canonical, commitment,
    entry_hash, utc_now,
)
from form_handler.ledger.types import (
    ConsentDraft, Entry, InvalidToken, LedgerError, LedgerRefusal,
    LedgerUnavailable, Receipt, ReceiptStatus, UnknownReceipt,
)
from form_handler.ledger.sqlite.readers import ReadPool
from form_handler.ledger.drafts import (
    _check_fields, _check_text, _receipt_secrets, check_append, check_withdraw_token, new_receipt_secrets, token_digest,
)
from form_handler.ledger.sqlite.mailbox import MailTables
from form_handler.ledger.sqlite.people import PeopleReads
from form_handler.ledger.sqlite.schema import (
    BUSY_TIMEOUT_MS, READ_UNAVAILABLE_ERRORS, SCHEMA, SCHEMA_VERSION, UNAVAILABLE_ERRORS, SQLITE_MINIMUM, WITHDRAWS_ALL, check_schema_version,
    check_sqlite_version, configure, migrate, read_pragmas, user_version,
)
from form_handler.ledger.sqlite.verify import verify as verify_ledger

__all__ = [
    "Checkpoint", "ConsentDraft", "Entry", "InvalidToken", "Ledger", "LedgerError", "LedgerRefusal",
    "LedgerTxn", "LedgerUnavailable", "Receipt", "ReceiptStatus", "UnknownReceipt", "VerifyReport",
    # Re-exported so `from form_handler.ledger import ...` keeps working for the schema and connection setup.
    "BUSY_TIMEOUT_MS", "SCHEMA", "SCHEMA_VERSION", "SQLITE_MINIMUM", "UNAVAILABLE_ERRORS",
    "check_sqlite_version", "configure", "read_pragmas",
]

# Read connections per Ledger: reads run at once on a few cores (more would only queue for the CPU), and
# one slow read does not hold up the others. Each may cache up to 32 MB of pages (schema.configure).
READERS = 4

T = TypeVar("T")


# The append path's two INSERTs (LedgerTxn._append, append_consent, append_consents).
_INSERT_ENTRY = (
    "INSERT INTO entries (seq, prev_hash, hash, canonical, kind, receipt_id, recorded_at, policy_id, policy_version,"
    " page, commitment, consent_contact, consent_updates, consent_third_parties)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_INSERT_PERSONAL = "INSERT INTO personal (receipt_id, salt, email, message, page, email_key) VALUES (?, ?, ?, ?, ?, ?)"


class LedgerTxn(PeopleReads, MailTables):
    """Operations inside one open transaction: a write one (BEGIN IMMEDIATE taken), or a read snapshot for reads.

    It is the SQLite LedgerTxn and LedgerView of ledger/contract.py; `connection` is for this backend only."""

    def __init__(self, connection: apsw.Connection) -> None:
        self.connection = connection

    def _one(self, sql: str, params: tuple[Any, ...] = ()) -> tuple[Any, ...] | None:
        for row in self.connection.execute(sql, params):
            return tuple(row)
        return None

    def append(self, kind: str, receipt_id: str, **fields: Any) -> Entry:
        """Append a chained entry of `kind` for an existing receipt, e.g. "confirmation" or "notice"."""
        check_append(kind, fields)
        if self._one("SELECT 1 FROM entries WHERE receipt_id = ? AND kind = 'consent'", (receipt_id,)) is None:
            raise UnknownReceipt(f"receipt_id {receipt_id!r} is not in the ledger.", "receipt_id")
        return self._append(kind, receipt_id, fields)

    def _head(self) -> tuple[int, str]:
        # Read inside the transaction (after BEGIN IMMEDIATE), never cached between calls, so a rolled-back
        # savepoint cannot leave us appending to an entry that no longer exists.
        head = self._one("SELECT seq, hash FROM entries ORDER BY seq DESC LIMIT 1")
        return (head[0], head[1]) if head else (0, "0" * 64)

    @staticmethod
    def _entry_row(seq: int, prev: str, kind: str, receipt_id: str, recorded_at: str,
                   fields: dict[str, Any]) -> tuple[Any, ...]:
        """The entries row of a chained entry: its canonical bytes, their hash after `prev`, the mirrored columns."""
        entry = {"v": ENTRY_VERSION, "seq": seq, "kind": kind, "receipt_id": receipt_id, "recorded_at": recorded_at,
                 **fields}
        try:
            data = canonical(entry)
        except (TypeError, ValueError) as e:
            raise ValueError(f"ledger entry fields must be JSON values: {e}.") from None
        get = fields.get
        contact, updates, third = get("consent_contact"), get("consent_updates"), get("consent_third_parties")
        return (seq, prev, entry_hash(prev, data), data, kind, receipt_id, recorded_at, get("policy_id"),
                get("policy_version"), get("page"), get("commitment"), None if contact is None else int(contact),
                None if updates is None else int(updates), None if third is None else int(third))

    def _append(self, kind: str, receipt_id: str, fields: dict[str, Any]) -> Entry:
        seq, prev = self._head()
        recorded_at = utc_now()
        row = self._entry_row(seq + 1, prev, kind, receipt_id, recorded_at, fields)
        self.connection.execute(_INSERT_ENTRY, row)
        return Entry(seq + 1, row[2], prev, kind, receipt_id, recorded_at, dict(fields))

    @staticmethod
    def _consent_parts(draft: ConsentDraft, receipt_id: str, token: str, salt: bytes) -> tuple[dict[str, Any],
                                                                                              tuple[Any, ...]]:
        """A draft checked: its consent entry's fields and its personal row."""
        for name in ("policy_id", "policy_version", "page", "message"):
            _check_text(name, getattr(draft, name))
        _check_text("email", draft.email, optional=True)
        _check_fields({n: getattr(draft, n) for n in FLAG_COLUMNS})
        # The page stays out of the chain (a path can name a person); the commitment covers it (v2).
        fields = {
            "policy_id": draft.policy_id, "policy_version": draft.policy_version,
            "consent_contact": draft.consent_contact, "consent_updates": draft.consent_updates,
            "consent_third_parties": draft.consent_third_parties,
            "commitment": commitment(salt, draft.email, draft.message, draft.page, v=ENTRY_VERSION),
            "withdraw_token_sha256": token_digest(token),
        }
        # email_key: the address as compared (addresses.py), indexed to find a person's receipts (schema 4).
        person = (receipt_id, salt, draft.email, draft.message, draft.page,
                  None if draft.email is None else email_key(draft.email))
        return fields, person

    def append_consent(self, draft: ConsentDraft) -> Receipt:
        """Record a submission: the chained consent entry plus its erasable personal data."""
        receipt_id, token, salt = new_receipt_secrets()
        fields, person = self._consent_parts(draft, receipt_id, token, salt)
        entry = self._append("consent", receipt_id, fields)
        self.connection.execute(_INSERT_PERSONAL, person)
        return Receipt(receipt_id, entry.recorded_at, draft.policy_id, draft.policy_version, draft.consent_contact,
                       draft.consent_updates, draft.consent_third_parties, token, entry.seq, entry.entry_hash)

    def append_consents(self, drafts: Sequence[ConsentDraft]) -> list[Receipt]:
        """Record several submissions, in order: their chained consent entries and erasable personal data.

        Every draft is checked, and every row built, before anything is written: one refused draft refuses
        the call and writes nothing. The rows go to SQLite with one prepared INSERT per table (executemany:
        bound and stepped in C, not one call from Python per row), which is most of what a batch of 1,000
        saves over as many append_consent calls (bench/ledger_speed.py). Only the database itself can then fail
        partway (I/O, a full disk); as after a failed append_consent, the rows already written stay in the
        open transaction until the caller's error rolls it back (Ledger.transaction does; the writer runs
        each operation under its own savepoint).
        """
        if not drafts:
            return []
        secrets = _receipt_secrets(len(drafts))
        parts = [self._consent_parts(d, *secret) for d, secret in zip(drafts, secrets)]
        seq, prev = self._head()
        # One time for the call: its entries are recorded, and committed, together.
        recorded_at = utc_now()
        rows = []
        for (fields, _), (receipt_id, _, _) in zip(parts, secrets):
            seq += 1
            rows.append(self._entry_row(seq, prev, "consent", receipt_id, recorded_at, fields))
            prev = rows[-1][2]  # each entry chains on the one before it
        # No savepoint of its own: inside one, SQLite copies every page the batch touches to a sub-journal
        # first, and a batch of 1,000 took 50% longer.
        self.connection.executemany(_INSERT_ENTRY, rows)
        self.connection.executemany(_INSERT_PERSONAL, [person for _, person in parts])
        return [
            Receipt(receipt_id, recorded_at, d.policy_id, d.policy_version, d.consent_contact, d.consent_updates,
                    d.consent_third_parties, token, row[0], row[2])
            for d, row, (receipt_id, token, _) in zip(drafts, rows, secrets)
        ]

    def _existing(self, kind: str, receipt_id: str) -> Entry | None:
        row = self._one(
            "SELECT seq, hash, prev_hash, recorded_at, canonical FROM entries WHERE receipt_id = ? AND kind = ?"
            # A withdrawal naming consents (the e-mail unsubscribe names consent_updates) withdraws those only;
            # only one naming none withdraws every consent of the receipt.
            f" AND (kind != 'withdrawal' OR ({WITHDRAWS_ALL}))"
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
        check_withdraw_token(consent, token)
        return self._existing("withdrawal", receipt_id) or self._append("withdrawal", receipt_id, {})

    def erase(self, receipt_id: str) -> Entry:
        """Delete the receipt's email, message, page and salt, and its queued or sent mail; idempotent."""
        self._consent(receipt_id)
        self.connection.execute("DELETE FROM personal WHERE receipt_id = ?", (receipt_id,))
        self.forget_mail(receipt_id)
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
        self._writer: Any = None  # the group-commit writer behind submit(), once start() ran
        self._own_writer = False
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

    def read(self, fn: Callable[[LedgerTxn], T]) -> T:
        """Run fn(view) inside one read snapshot, on a connection only this thread uses meanwhile.

        Safe from any number of threads at once (up to READERS run together, the rest wait). A file that
        cannot be read (I/O error, not a database) raises LedgerUnavailable. The view offers the reads of
        contract.LedgerView (its writes would fail: the snapshot is a read transaction).
        """
        with self._reading() as conn:
            return fn(LedgerTxn(conn))

    @property
    def location(self) -> str:
        return str(self.path)

    @property
    def backend(self) -> str:
        return "sqlite"

    def start(self, writer: Any = None, *, process: bool = False) -> None:
        """Start the group-commit writer behind submit(): a thread of this process (writer.py), or with
        `process` a process of its own (writer_process.py, the service's default). A `writer` given is used
        as it is."""
        from form_handler.ledger.sqlite.writer import GroupCommitWriter
        from form_handler.ledger.sqlite.writer_process import ProcessWriter

        if writer is None:
            writer = ProcessWriter(self.path) if process else GroupCommitWriter(self.path)
            writer.start()
            self._own_writer = True
        self._writer = writer

    async def submit(self, op: Callable[[LedgerTxn], T]) -> T:
        """Run op(txn) in the group-commit writer; return once the batch holding it is committed."""
        writer = self._writer
        if writer is None:
            raise LedgerUnavailable("the ledger writer is not running (shutting down or not started).")
        result: T = await writer.submit(op)
        return result

    def settings_line(self) -> str:
        """The durability settings in force, for `ledger verify`."""
        p = self.pragmas()
        return f"pragmas: journal_mode={p['journal_mode']} synchronous={p['synchronous']} busy_timeout={p['busy_timeout']}"

    def raw_entries(self) -> Iterator[RawEntry]:
        """Every chained entry exactly as stored, in order (ledger copy)."""
        return copying.raw_entries(self._open_reader())

    def raw_personal(self) -> Iterator[RawPersonal]:
        return copying.raw_personal(self._open_reader())

    def load_raw(self, entries: Iterator[RawEntry], personal: Iterator[RawPersonal]) -> int:
        """Store entries and personal data as they are (an empty ledger only); return the entries stored."""
        with self.transaction() as txn:
            return copying.load_raw(txn.connection, entries, personal)

    def backup(self, dest: Path) -> None:
        """A consistent copy of this ledger at `dest` while others keep writing (SQLite's online backup)."""
        with self._lock:
            copying.backup(self._connect(), dest)

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
            return LedgerTxn(self._connect()).meta_get("link_key")

    def forget_legacy_link_key(self, key: str) -> None:
        """Delete the old link key and every copy of it in the file: the row, old WAL frames and free pages.

        secure_delete (set on every connection) overwrites the row in place; a checkpoint then empties
        the WAL of older page images. Free pages left by a build without secure_delete may still hold
        it, so the file is searched and, if the key is still there, rebuilt with VACUUM.
        """
        with self.transaction() as txn:
            txn.meta_delete("link_key", key)
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
        writer, self._writer = self._writer, None
        if writer is not None and self._own_writer:
            writer.close()  # drains what is queued: acknowledged means committed
        # Read connections first, so the connection of writes is the last and checkpoints the WAL.
        self._readers.close()
        with self._lock:
            self._drop()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
