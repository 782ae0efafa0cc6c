"""Check one range of ledger entries in one step: chain, links, columns and commitments (see verify.py).

One aggregate SELECT: SQLite rebuilds the canonical bytes the columns imply for the entry shapes this code
writes, compares them, and hands back the range's hashes, links and hashed bytes as a few long values; Python
hashes the range with map() and compares whole strings. An entry's checks need only its own row, its personal
data and the *stored* hash of the entry before it, so a range is checked alone. Only a range where something
does not match is walked row by row with the reference's checks (verify.reference), to name its first problem.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from operator import methodcaller
from typing import Any

import apsw

from form_handler.ledger.sqlite import reports
from form_handler.ledger.chain import FLAG_COLUMNS, GENESIS, TEXT_COLUMNS, WalkResult, hash_problem, missing_problem

# The mirrored columns in the canonical key order (sorted, as chain.canonical writes them).
_MIRRORED = sorted(("kind", "receipt_id", "recorded_at", "seq", *TEXT_COLUMNS, *FLAG_COLUMNS))
_NULLABLE = (*TEXT_COLUMNS, *FLAG_COLUMNS)
_TEXT = ("kind", "receipt_id", "recorded_at", *TEXT_COLUMNS)
# Which nullable columns each entry shape this code writes has, most frequent first: a v2 consent; a notice or
# reconsent; a confirmation; a withdrawal or erasure; an e-mail unsubscribe; a v1 consent (page chained); a
# withdrawal of contact or of third-party sharing alone (self-service).
# Another shape is still verified, by the row-by-row pass (slower): add it here.
_SHAPES: tuple[frozenset[str], ...] = tuple(frozenset(s) for s in (
    ("commitment", "policy_id", "policy_version", *FLAG_COLUMNS),
    ("policy_id", "policy_version"),
    ("policy_id",),
    (),
    ("consent_updates",),
    ("commitment", "page", "policy_id", "policy_version", *FLAG_COLUMNS),
    ("consent_contact",),
    ("consent_third_parties",),
))


def _json_value(column: str) -> str:
    # x'01' and x'02' are JSONB true and false; any other flag value renders null and so never matches.
    return f"CASE e.{column} WHEN 1 THEN x'01' WHEN 0 THEN x'02' END" if column in FLAG_COLUMNS else f"e.{column}"


def _object(shape: frozenset[str]) -> str:
    pairs = [f"'{c}', {_json_value(c)}" for c in _MIRRORED if c in shape or c not in _NULLABLE]
    return f"json_object({', '.join(pairs)})"


# The mirrored columns as one JSON object, rendered by SQLite (escapes and types as json_array renders them).
_OBJECT = "CASE " + " ".join(
    "WHEN " + " AND ".join(f"e.{c} IS {'NOT ' if c in shape else ''}NULL" for c in _NULLABLE) + f" THEN {_object(shape)}"
    for shape in _SHAPES
) + " END"
# Bytes of the canonical entry beside the mirrored keys: "v" (one digit) and a consent's withdraw_token_sha256
# (64 hex digits) at its end; a notice's change_date and effective (YYYY-MM-DD) at its start.
_CONSENT_TAIL = """substr(e.canonical, -98, 5) = CAST(',"v":' AS BLOB) AND substr(e.canonical, -93, 1) BETWEEN x'30' AND x'39'
  AND substr(e.canonical, -92, 26) = CAST(',"withdraw_token_sha256":"' AS BLOB) AND substr(e.canonical, -2) = x'227d'
  AND unhex(CAST(substr(e.canonical, -66, 64) AS TEXT)) IS NOT NULL"""
_V_CONSENT = "CAST(substr(e.canonical, -93, 1) AS TEXT)"
_V_OTHER = "CAST(substr(e.canonical, -2, 1) AS TEXT)"
_DAY = "'[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]'"
_CHANGE_DATE, _EFFECTIVE = "CAST(substr(e.canonical, 17, 10) AS TEXT)", "CAST(substr(e.canonical, 42, 10) AS TEXT)"
_MATCHES = f"""CASE
  WHEN e.kind = 'consent' THEN CASE WHEN {_CONSENT_TAIL} THEN
    substr(e.canonical, 1, length(e.canonical) - 98) = CAST(rtrim({_OBJECT}, '}}') AS BLOB) END
  WHEN substr(e.canonical, 1, 16) = CAST('{{"change_date":"' AS BLOB) THEN
    CASE WHEN {_CHANGE_DATE} GLOB {_DAY} AND {_EFFECTIVE} GLOB {_DAY} AND {_V_OTHER} BETWEEN '0' AND '9' THEN
    e.canonical = CAST('{{"change_date":"' || {_CHANGE_DATE} || '","effective":"' || {_EFFECTIVE} || '",'
                       || trim({_OBJECT}, '{{}}') || ',"v":' || {_V_OTHER} || '}}' AS BLOB) END
  WHEN {_V_OTHER} BETWEEN '0' AND '9' THEN e.canonical = CAST(rtrim({_OBJECT}, '}}') || ',"v":' || {_V_OTHER} || '}}' AS BLOB)
END"""
# A BLOB in a text column would be read as JSONB by json_object; such a row goes to the row-by-row pass.
_BLOB_IN_TEXT = " OR ".join(f"e.{c} >= x''" for c in _TEXT)
# 1 when the canonical bytes are exactly what the columns imply: then every mirrored key holds its column's
# value (json_extract of each key would give it), no other mirrored key is there, and the bytes are JSON.
_COLUMNS_MATCH = f"CASE WHEN {_BLOB_IN_TEXT} THEN 0 ELSE coalesce({_MATCHES}, 0) END"
# What a consent's commitment covers: its salt and the JSON of [email, message, page] (v2) or [email, message]
# (v1, whose page is chained; one beside its personal data is wrong). SQLite's JSON is the same text as
# chain.commitment's for the same values, and a commitment matching it matches nothing else. Only trusted
# where the columns matched, which makes _V_CONSENT the entry's "v".
_PREIMAGE = f"""CASE WHEN p.salt IS NULL OR p.salt < x'' OR p.email >= x'' OR p.message >= x'' OR p.page >= x''
  THEN NULL
  WHEN {_V_CONSENT} >= '2' THEN CAST(p.salt || json_array(p.email, p.message, p.page) AS BLOB)
  WHEN p.page IS NULL THEN CAST(p.salt || json_array(p.email, p.message) AS BLOB) END"""
_JOIN = "FROM entries e LEFT JOIN personal p ON e.kind = 'consent' AND p.receipt_id = e.receipt_id"
# One row per range, in one step: count, first and last seq, the stored hashes and prev_hash columns (comma-
# separated), the bytes each entry's hash covers (prev_hash + canonical, newline-separated: canonical JSON has
# no raw newline), whether every row's columns match, and for each consent with personal data its commitment
# preimage (hex; X when it cannot be one) and its commitment. group_concat takes rows in the scan's order,
# seq order here; were it ever another, the strings would not match and the range would go row by row.
_RANGE_SQL = f"""SELECT count(*), min(e.seq), max(e.seq), CAST(group_concat(e.hash, ',') AS BLOB),
  CAST(group_concat(e.prev_hash, ',') AS BLOB), CAST(group_concat(e.prev_hash || e.canonical, x'0a') AS BLOB),
  min({_COLUMNS_MATCH}),
  CAST(group_concat(CASE WHEN p.salt IS NOT NULL THEN coalesce(hex({_PREIMAGE}), 'X') END, ',') AS BLOB),
  CAST(group_concat(CASE WHEN p.salt IS NOT NULL THEN coalesce(e.commitment, '?') END, ',') AS BLOB)
  {_JOIN} WHERE e.seq BETWEEN ? AND ?"""
# The reference's checks, row by row, for a range where something did not match.
_EXACT_SQL = f"""SELECT e.seq, e.hash, e.prev_hash, e.canonical, {{mismatch}}, e.commitment, p.salt, p.email,
  p.message, p.page, CASE WHEN p.salt IS NOT NULL AND json_valid(CAST(e.canonical AS TEXT))
  THEN json_extract(CAST(e.canonical AS TEXT), '$.v') END {_JOIN} WHERE e.seq BETWEEN ? AND ? ORDER BY e.seq"""

_hexdigest = methodcaller("hexdigest")
_sha256 = hashlib.sha256


@dataclass(frozen=True)
class RangeResult:
    """What one range of seq holds: the walk's first failure in it, or its last hash; and its first other problem."""

    walk: WalkResult | None  # the walk's first failure in this range, as chain.walk would report it
    last_hash: str | None  # the stored hash of the range's last entry, when the walk passed
    # (seq, problem) of the first link, column or commitment problem, in that order at one seq as in the reference
    other: tuple[int, str] | None
    exact_rows: int  # rows that took the row-by-row pass


def check_range(conn: apsw.Connection, first: int, last: int) -> RangeResult:
    """Check entries first..last (seq the table's rowid, all >= 1) with the stored hash of entry first-1."""
    prev = GENESIS if first == 1 else hash_at(conn, first - 1)
    try:
        found: Any = conn.execute(_RANGE_SQL, (first, last)).fetchall()[0]
    except apsw.SQLError:  # not expected (the SQL guards what JSON cannot hold); the row-by-row pass decides
        found = None
    if prev is not None and found is not None and _all_match(found, first, last, prev.encode()):
        return RangeResult(None, found[3][-64:].decode(), None, 0)
    # A missing entry first-1 is reported by the range before; any start does here.
    return _row_by_row(conn, first, last, prev or GENESIS)


def _all_match(found: Any, first: int, last: int, prev: bytes) -> bool:
    n, lowest, highest, hashes, prev_hashes, hashed, columns_match, preimages, commitments = found
    # seq is the rowid (unique integers), so n rows from first to last are every entry in between.
    if n != last - first + 1 or lowest != first or highest != last or columns_match != 1:
        return False
    try:
        if ",".join(map(_hexdigest, map(_sha256, hashed.split(b"\n")))).encode() != hashes:
            return False
        # Every stored hash is 64 hex digits now; each prev_hash must be the one before it.
        if prev_hashes != (prev + b"," + hashes[:-65] if n > 1 else prev):
            return False
        return preimages is None or ",".join(
            map(_hexdigest, map(_sha256, map(bytes.fromhex, preimages.decode().split(","))))).encode() == commitments
    except (TypeError, ValueError, UnicodeDecodeError):  # a NULL, an X: the row-by-row pass names it
        return False


def _row_by_row(conn: apsw.Connection, first: int, last: int, prev: str) -> RangeResult:
    try:
        rows: list[Any] = conn.execute(_EXACT_SQL.format(mismatch=reports.columns_differ_sql("e.")),
                                       (first, last)).fetchall()
        each_row = False
    except apsw.SQLError:  # a BLOB in a column: JSON cannot hold it; ask row by row, where it counts as a mismatch
        rows = conn.execute(_EXACT_SQL.format(mismatch="NULL"), (first, last)).fetchall()
        each_row = True
    expected, other = first, None
    for seq, stored_hash, prev_hash, data, mismatch, com, salt, email, message, page, v in rows:
        if seq != expected:
            return RangeResult(WalkResult(expected - 1, prev, expected, missing_problem(expected, seq)), None, other,
                               len(rows))
        if type(data) is not bytes:  # as chain.walk: hash the bytes SQLite hands back
            data = data.encode("utf-8", "surrogateescape") if isinstance(data, str) else bytes(data)
        if _sha256(prev.encode() + data).hexdigest() != stored_hash:
            return RangeResult(WalkResult(seq - 1, prev, seq, hash_problem(seq)), None, other, len(rows))
        if other is None:
            if prev_hash != prev:
                other = (seq, reports.link_problem(seq))
            elif _row_mismatch(conn, seq) if each_row else mismatch:
                other = (seq, reports.column_problem(conn, seq))
            elif salt is not None and reports.commitment_wrong(com, salt, email, message, page, v):
                other = (seq, reports.commitment_problem(seq))
        prev = stored_hash
        expected += 1
    if expected <= last:  # the range ends early: the next entry there is is further on
        found: Any = conn.execute("SELECT seq FROM entries WHERE seq > ? ORDER BY seq LIMIT 1", (expected - 1,)).fetchall()
        where = found[0][0] if found else "none"
        return RangeResult(WalkResult(expected - 1, prev, expected, missing_problem(expected, where)), None, other,
                           len(rows))
    return RangeResult(None, prev, other, len(rows))


def _row_mismatch(conn: apsw.Connection, seq: int) -> bool:
    try:
        found: Any = conn.execute(f"SELECT {reports.columns_differ_sql()} FROM entries WHERE seq = ?", (seq,)).fetchall()
    except apsw.SQLError:
        return True
    return bool(found[0][0])


def hash_at(conn: apsw.Connection, seq: int) -> str | None:
    if seq == 0:
        return GENESIS
    found: Any = conn.execute("SELECT hash FROM entries WHERE seq = ?", (seq,)).fetchall()
    return found[0][0] if found else None


