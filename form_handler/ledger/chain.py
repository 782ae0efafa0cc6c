"""The hash chain: canonical entry bytes, entry hashes, checkpoints and the verify walk.

Pure logic over rows; form_handler/ledger.py owns the database and calls `walk`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import Any

GENESIS = "0" * 64
# The format of the entries we write. v1: a consent chains its page, and its commitment covers
# [email, message]. v2: the page is personal data, kept with the address and message outside the chain
# (erasable) and covered by the commitment, [email, message, page]. Old entries keep their version.
ENTRY_VERSION = 2
KINDS = ("consent", "withdrawal", "erasure", "confirmation", "notice", "reconsent")
# Keys every chained entry has; callers of LedgerTxn.append may not set them.
RESERVED = frozenset({"v", "seq", "kind", "receipt_id", "recorded_at"})
# Chained fields mirrored into queryable columns (verify checks the two agree).
TEXT_COLUMNS = ("policy_id", "policy_version", "page", "commitment")
FLAG_COLUMNS = ("consent_contact", "consent_updates", "consent_third_parties")


class ChainError(ValueError):
    """A checkpoint or entry could not be read."""


# Built once: json.dumps with keyword arguments builds a new encoder on every call.
# Same output as json.dumps(sort_keys=True, separators=(",", ":"), ensure_ascii=False); NaN refused.
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode
_COMPACT = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode


def canonical(entry: Mapping[str, Any]) -> bytes:
    """The bytes we hash and store verbatim: sorted keys, no spaces, UTF-8."""
    return _CANONICAL(entry).encode()


def entry_hash(prev_hash: str, canonical_bytes: bytes) -> str:
    return hashlib.sha256(prev_hash.encode() + canonical_bytes).hexdigest()


def commitment(salt: bytes, email: str | None, message: str, page: str | None, *, v: int) -> str:
    """Salted sha256 of the personal data of an entry of format `v`; useless for guessing once the salt is erased."""
    personal = [email, message] if v < 2 else [email, message, page]
    return hashlib.sha256(salt + _COMPACT(personal).encode()).hexdigest()


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class Checkpoint:
    """Entry count and head hash at a moment; publish it so truncation and rewrites show."""

    count: int
    head: str
    at: str

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Checkpoint:
        try:
            data = json.loads(text)
            cp = cls(count=int(data["count"]), head=str(data["head"]), at=str(data.get("at", "")))
        except (ValueError, TypeError, KeyError) as e:
            raise ChainError(
                f"checkpoint must be JSON like {{\"count\": 12, \"head\": \"<sha256>\", \"at\": \"...\"}}: {e}."
            ) from None
        if cp.count < 0 or len(cp.head) != 64:
            raise ChainError("checkpoint needs a count >= 0 and a 64-character sha256 head.")
        return cp


@dataclass(frozen=True)
class VerifyReport:
    ok: bool
    count: int
    head: str
    sqlite_version: str
    first_bad_seq: int | None = None
    problem: str | None = None
    against: Checkpoint | None = None
    # The database engine the version above is of ("sqlite" or "postgresql"), as the summary names it.
    engine: str = "sqlite"

    def summary(self) -> str:
        entries = f"{self.count}" if self.ok else f"{self.count} good before entry #{self.first_bad_seq}"
        lines = [
            f"entries: {entries}",
            f"head: {self.head}",
            f"{self.engine}: {self.sqlite_version}",
        ]
        if self.against is not None:
            lines.append(f"checkpoint: {self.against.count} entries, head {self.against.head}")
        lines.append("chain: ok" if self.ok else f"chain: BROKEN: {self.problem}")
        return "\n".join(lines)


@dataclass(frozen=True)
class WalkResult:
    count: int
    head: str
    bad_seq: int | None = None
    problem: str | None = None


# The walk's sentences, shared with form_handler/verify.py, which checks ranges of the chain in parallel.
ZERO_CHECKPOINT_PROBLEM = "checkpoint of 0 entries must have the genesis head"


def missing_problem(expected: int, found: object) -> str:
    return f"entry #{expected} is missing (found #{found} next)"


def hash_problem(seq: int) -> str:
    return f"entry #{seq} does not match its hash"


def rewritten_problem(seq: int) -> str:
    return f"entry #{seq} differs from the checkpoint's head (rewritten history)"


def removed_problem(count: int, checkpoint_count: int) -> str:
    return f"the ledger has {count} entries but the checkpoint has {checkpoint_count}: entries were removed"


def walk(rows: Iterable[tuple[int, str, bytes | str]], against: Checkpoint | None = None) -> WalkResult:
    """Check seq continuity and every hash over (seq, hash, canonical) rows in seq order.

    Each hash is recomputed from the previous entry's stored hash, so the chain does not rely
    on the prev_hash column (the database checks that column; see reports.first_broken_link).
    The loop does one sha256 and two comparisons per entry.
    """
    expected_seq, prev = 1, GENESIS
    seen_checkpoint = against is None or against.count == 0
    if against is not None and against.count == 0 and against.head != GENESIS:
        return WalkResult(0, GENESIS, None, ZERO_CHECKPOINT_PROBLEM)
    sha256 = hashlib.sha256
    for seq, stored_hash, data in rows:
        if seq != expected_seq:
            return WalkResult(expected_seq - 1, prev, expected_seq, missing_problem(expected_seq, seq))
        if type(data) is not bytes:
            # A tamperer may have changed the column's type too; hash the bytes SQLite hands back.
            data = data.encode("utf-8", "surrogateescape") if isinstance(data, str) else bytes(data)
        if sha256(prev.encode() + data).hexdigest() != stored_hash:
            return WalkResult(seq - 1, prev, seq, hash_problem(seq))
        if seq == expected_seq and against is not None and seq == against.count:
            if stored_hash != against.head:
                return WalkResult(seq - 1, prev, seq, rewritten_problem(seq))
            seen_checkpoint = True
        prev = stored_hash
        expected_seq += 1
    count = expected_seq - 1
    if not seen_checkpoint and against is not None:
        return WalkResult(count, prev, count + 1, removed_problem(count, against.count))
    return WalkResult(count, prev)
