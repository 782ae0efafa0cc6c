"""The consent ledger: an append-only, hash-chained SQLite file (apsw, WAL, synchronous=FULL).

Each chained entry is canonical JSON stored verbatim beside sha256(prev_hash + bytes). Email
and message live in the erasable `personal` table; the entry holds only a salted commitment.
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
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import apsw

from . import reports
from .chain import (
    FLAG_COLUMNS, KINDS, RESERVED, TEXT_COLUMNS, Checkpoint, VerifyReport, canonical, commitment,
    entry_hash, utc_now, walk,
)
from .ledger_types import (
    UNAVAILABLE_ERRORS, ConsentDraft, Entry, InvalidToken, LedgerError, LedgerRefusal, LedgerUnavailable,
    Receipt, ReceiptStatus, UnknownReceipt,
)
from .schema import (
    BUSY_TIMEOUT_MS, META_SCHEMA, SCHEMA, SCHEMA_VERSION, SQLITE_MINIMUM, check_sqlite_version, configure,
    read_pragmas,
)

__all__ = [
    "Checkpoint", "ConsentDraft", "Entry", "InvalidToken", "Ledger", "LedgerError", "LedgerRefusal",
    "LedgerTxn", "LedgerUnavailable", "Receipt", "ReceiptStatus", "UnknownReceipt", "VerifyReport",
    # Re-exported so `from form_handler.ledger import ...` keeps working for the schema and connection setup.
    "BUSY_TIMEOUT_MS", "META_SCHEMA", "SCHEMA", "SCHEMA_VERSION", "SQLITE_MINIMUM", "UNAVAILABLE_ERRORS",
    "check_sqlite_version", "configure", "read_pragmas",
]

# Tables other modules keep personal data in, keyed by receipt_id; erase() clears them too.
ERASABLE_TABLES: list[str] = ["outbox"]


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
        entry = {"v": 1, "seq": seq, "kind": kind, "receipt_id": receipt_id, "recorded_at": recorded_at, **fields}
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
        fields = {
            "policy_id": draft.policy_id, "policy_version": draft.policy_version, "page": draft.page, **flags,
            "commitment": commitment(salt, draft.email, draft.message),
            "withdraw_token_sha256": hashlib.sha256(token.encode()).hexdigest(),
        }
        entry = self._append("consent", receipt_id, fields)
        self.connection.execute(
            "INSERT INTO personal (receipt_id, salt, email, message) VALUES (?, ?, ?, ?)",
            (receipt_id, salt, draft.email, draft.message),
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
        """Delete the receipt's email, message and salt (and rows of ERASABLE_TABLES); idempotent."""
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
    """One connection to the ledger file; opening creates the folder and the schema."""

    def __init__(self, path: str | Path, *, readonly: bool = False) -> None:
        check_sqlite_version(apsw.sqlite_lib_version())
        self.path = Path(path)
        self.readonly = readonly
        self._lock = threading.RLock()
        self._conn: apsw.Connection | None = None
        try:
            self._connect()
        except LedgerUnavailable:
            # A service must start even while its disk is full or read-only: it answers 503 and
            # the next transaction or read tries again. Its reader too: on a read-only volume a WAL
            # file cannot even be opened for reading (no -shm), and the service must not exit for that.
            pass

    @property
    def connection(self) -> apsw.Connection:
        return self._connect()

    def _connect(self) -> apsw.Connection:
        if self._conn is not None:
            return self._conn
        if self.readonly and not self.path.exists():
            raise LedgerError(f"{self.path}: no ledger file there; check POLICY_SITE_LEDGER or --ledger.")
        try:
            if not self.readonly:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            flags = apsw.SQLITE_OPEN_READONLY if self.readonly else apsw.SQLITE_OPEN_READWRITE | apsw.SQLITE_OPEN_CREATE
            conn = apsw.Connection(str(self.path), flags=flags)
        except (OSError, *UNAVAILABLE_ERRORS) as e:
            raise LedgerUnavailable(f"{self.path}: cannot open the ledger ({e}).") from e
        try:
            configure(conn)
            # Only a new file needs the schema; an existing one stays readable when it is read-only.
            version: Any = conn.execute("PRAGMA user_version").fetchall()[0][0]
            if 0 < version < SCHEMA_VERSION:
                raise LedgerError(
                    f"{self.path}: ledger schema {version} is from a development build before schema "
                    f"{SCHEMA_VERSION}; move the file away to start a new ledger."
                )
            if not self.readonly and version < SCHEMA_VERSION:
                conn.execute("BEGIN IMMEDIATE")
                conn.execute(SCHEMA)
                conn.execute("COMMIT")
        except LedgerError:
            conn.close(True)
            raise
        except UNAVAILABLE_ERRORS as e:
            conn.close(True)
            raise LedgerUnavailable(f"{self.path}: cannot write the ledger ({e}).") from e
        except apsw.Error as e:
            conn.close(True)
            raise LedgerError(f"{self.path}: not a usable ledger ({e}).") from e
        self._conn = conn
        return conn

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
        # One read transaction = one consistent snapshot while writers go on (WAL).
        with self._lock:
            conn = self._connect()
            try:
                conn.execute("BEGIN")
                try:
                    yield conn
                finally:
                    if conn.in_transaction:
                        conn.execute("COMMIT")
            except UNAVAILABLE_ERRORS as e:
                self._drop()
                raise LedgerUnavailable(f"{self.path}: cannot read the ledger now ({e}).") from e

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

    def verify(self, against: Checkpoint | None = None) -> VerifyReport:
        """Walk the whole chain; report count, head, SQLite version and the first bad entry."""
        with self._reading() as conn:
            result = walk(conn.execute("SELECT seq, hash, canonical FROM entries ORDER BY seq"), against)
            others = (
                reports.first_broken_link(conn),
                reports.first_column_mismatch(conn),
                reports.first_commitment_mismatch(conn),
            )
        bad, problem = result.bad_seq, result.problem
        for other in others:
            if other is not None and (bad is None or other[0] < bad):
                bad, problem = other
        return VerifyReport(
            ok=bad is None, count=result.count, head=result.head, sqlite_version=apsw.sqlite_lib_version(),
            first_bad_seq=bad, problem=problem, against=against,
        )

    def export(self, third_party: bool = False) -> Iterator[dict[str, Any]]:
        """Every chained entry with its personal data and status; or, for third parties, emails only."""
        # Its own connection, not the shared one: a streaming response may pull rows from other threads.
        conn = self._open_reader()
        try:
            conn.execute("BEGIN")
            yield from (reports.third_party_emails(conn) if third_party else reports.entries(conn))
        except UNAVAILABLE_ERRORS as e:
            raise LedgerUnavailable(f"{self.path}: cannot read the ledger now ({e}).") from e
        finally:
            conn.close(True)

    def _open_reader(self) -> apsw.Connection:
        self._connect()  # creates the file and schema when missing
        try:
            conn = apsw.Connection(str(self.path), flags=apsw.SQLITE_OPEN_READONLY)
            configure(conn)
        except UNAVAILABLE_ERRORS as e:
            raise LedgerUnavailable(f"{self.path}: cannot read the ledger now ({e}).") from e
        return conn

    def stats(self) -> dict[str, Any]:
        with self._reading() as conn:
            return reports.stats(conn)

    def pragmas(self) -> dict[str, Any]:
        with self._lock:
            return read_pragmas(self._connect())

    def close(self) -> None:
        with self._lock:
            self._drop()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
