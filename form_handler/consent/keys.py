"""The key that signs e-mail links, kept apart from the ledger: from POLICY_SITE_SECRET or a key file.

Whoever can read the signing key can sign a withdraw link for anyone's receipt, so it never lives
in the ledger (which backups, exports and support staff see). It comes from `POLICY_SITE_SECRET`, or
from a key file (`POLICY_SITE_KEY_FILE`) created once with mode 0600 and refused at start-up when
its group or others can read it.

Rotation: the key file lists keys newest first; the first signs, and each older one still verifies
links until its `verify_until` date (end of that day, UTC). With secrets in the environment,
`POLICY_SITE_SECRET_PREVIOUS` and `POLICY_SITE_SECRET_PREVIOUS_UNTIL` do the same.

Ledgers from before this module kept a random key in their `meta` table: `adopt_legacy_key` moves it
into the key file (so links already mailed keep working) and wipes it from the database file.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import secrets
import stat
from contextlib import closing
from dataclasses import dataclass
from datetime import date, datetime, time, timezone
from pathlib import Path
from typing import Any

from form_handler.ledger import is_postgres, open_ledger
from form_handler.ledger.types import LedgerUnavailable
from form_handler.settings import Settings

FORMAT = "policy-site link keys"
log = logging.getLogger("form_handler")


class KeyFileError(Exception):
    """The key file cannot be used; one sentence naming the file and the fix."""


@dataclass(frozen=True)
class VerifyingKey:
    """A key that still verifies links, until `until` (Unix seconds; None: as long as it signs)."""

    key: bytes
    until: float | None = None


@dataclass(frozen=True)
class LinkKeys:
    """The signing key, and every key that verifies (the signing key first)."""

    signing: bytes
    previous: tuple[VerifyingKey, ...] = ()

    def verifying(self, now: float) -> tuple[bytes, ...]:
        """Keys a link may be signed with at `now`: the current one, then previous ones not yet expired."""
        return (self.signing, *(k.key for k in self.previous if k.until is None or now <= k.until))

    def derive(self, label: str) -> bytes:
        """A separate key for another keyed hash (e.g. the mail quota), so no MAC can pass as a link."""
        return hmac.new(self.signing, b"policy-site derived key\n" + label.encode(), hashlib.sha256).digest()


def from_secret(secret: str) -> bytes:
    """The HMAC key for a configured secret (any length of text)."""
    return hashlib.sha256(secret.encode("utf-8")).digest()


def end_of_day(day: date) -> float:
    return datetime.combine(day, time(23, 59, 59), tzinfo=timezone.utc).timestamp()


def load(settings: Settings) -> LinkKeys:
    """The keys for this process: the environment's secret if set, else the key file (created once).

    A key still kept in the ledger by an older version is moved out first (adopt_legacy_key)."""
    adopt_legacy_key(settings)
    if settings.secret:
        previous: tuple[VerifyingKey, ...] = ()
        if settings.secret_previous and settings.secret_previous_until:
            previous = (VerifyingKey(from_secret(settings.secret_previous), end_of_day(settings.secret_previous_until)),)
        return LinkKeys(from_secret(settings.secret), previous)
    return read_key_file(key_file_path(settings), create=True)


def key_file_path(settings: Settings) -> Path:
    """POLICY_SITE_KEY_FILE, or link-keys.json in the ledger's folder."""
    return settings.key_file or settings.ledger_path.with_name("link-keys.json")


def adopt_legacy_key(settings: Settings) -> bool:
    """Move a link key kept in the ledger's `meta` table into the key file, then wipe it from the ledger.

    With POLICY_SITE_SECRET set, or a key file already there, the old key was not signing anything and
    is only wiped. Returns True when a key was found. A ledger that cannot be written now keeps it
    until the next start."""
    if is_postgres(settings.ledger) or not settings.ledger_path.exists():
        return False  # a PostgreSQL ledger never held a link key
    ledger = open_ledger(settings.ledger)
    with closing(ledger):
        try:
            key = ledger.legacy_link_key()
            if key is None:
                return False
            path = key_file_path(settings)
            if not settings.secret and not path.exists():
                # Written (and fsynced) before the ledger's copy goes: links already mailed keep working.
                write_key_file(path, [{"key": key, "created": _today(), "moved_from": str(settings.ledger_path)}],
                               exclusive=True)
                log.warning("moved the e-mail link key out of %s into %s", settings.ledger_path, path)
            ledger.forget_legacy_link_key(key)
        except LedgerUnavailable as e:
            log.error("cannot move the e-mail link key out of the ledger now (%s); it stays until the next start", e)
            return False
    return True


def read_key_file(path: Path, *, create: bool = False) -> LinkKeys:
    """Read (or, with create, first create) the key file; refuse one that others can read."""
    if create and not path.exists():
        write_key_file(path, [{"key": secrets.token_hex(32), "created": _today()}], exclusive=True)
    try:
        st = path.stat()
        raw = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise KeyFileError(f"{path}: no link key file there; start the service once to create it, or set POLICY_SITE_KEY_FILE.") from None
    except OSError as e:
        raise KeyFileError(f"{path}: cannot read the link key file ({e.strerror}); check POLICY_SITE_KEY_FILE.") from None
    if st.st_mode & 0o077:
        raise KeyFileError(
            f"{path}: the link key file can be read by others (mode {stat.S_IMODE(st.st_mode):04o}); "
            f"run chmod 600 {path}, and make a new key if others may have read it."
        )
    return _parse(path, raw)


def _parse(path: Path, raw: str) -> LinkKeys:
    try:
        doc = json.loads(raw)
        if doc.get("format") != FORMAT:
            raise ValueError("format is not " + repr(FORMAT))
        listed: list[Any] = doc["keys"]
        keys = [(bytes.fromhex(k["key"]), k.get("verify_until")) for k in listed]
        if not keys or any(len(k) < 32 for k, _ in keys):
            raise ValueError("every key must be at least 32 bytes (64 hex digits)")
        previous = tuple(
            VerifyingKey(k, None if until is None else end_of_day(date.fromisoformat(until))) for k, until in keys[1:]
        )
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise KeyFileError(
            f"{path}: not a link key file ({e}); restore it from your secrets store or remove it to make a new key "
            "(links already sent then stop working)."
        ) from None
    if any(p.until is None for p in previous):
        raise KeyFileError(f"{path}: every key after the first needs a verify_until date (YYYY-MM-DD).")
    return LinkKeys(keys[0][0], previous)


def write_key_file(path: Path, keys: list[dict[str, Any]], *, exclusive: bool = False) -> None:
    """Write the key file atomically with mode 0600; with exclusive, keep a file another process made first."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = json.dumps({"format": FORMAT, "keys": keys}, indent=2).encode() + b"\n"
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if exclusive:
            try:
                os.link(tmp, path)  # fails if another process created the file first: theirs wins
            except FileExistsError:
                pass
        else:
            os.replace(tmp, path)
        _fsync_dir(path.parent)
    finally:
        tmp.unlink(missing_ok=True)


def rotate(path: Path, verify_until: date) -> LinkKeys:
    """Make a new signing key; the current one (and older ones still valid then) verify until `verify_until`."""
    current = read_key_file(path)
    now = datetime.now(timezone.utc).timestamp()
    entries: list[dict[str, Any]] = [{"key": secrets.token_hex(32), "created": _today()},
                                     {"key": current.signing.hex(), "verify_until": verify_until.isoformat()}]
    for old in current.previous:
        if old.until is not None and old.until >= now:
            entries.append({"key": old.key.hex(),
                            "verify_until": datetime.fromtimestamp(old.until, timezone.utc).date().isoformat()})
    write_key_file(path, entries)
    return read_key_file(path)


def _today() -> str:
    return datetime.now(timezone.utc).date().isoformat()


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
