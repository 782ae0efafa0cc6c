"""Check one range of ledger entries in a few steps: chain, links, columns and commitments (see verify.py).

One aggregate SELECT over the range's entries: SQLite renders the canonical bytes each entry's columns imply
(json_object over the columns in the canonical key order, the few bytes no column holds taken from the entry
itself) and compares them, and hands back the range's hashes, links and hashed bytes, and its consents' receipt
ids and commitments, as a few long values. The personal data of those consents is then read in insertion order,
one rowid range of `personal` (its rows are added with their consents, so in seq order), instead of one index
lookup per consent; Python matches it to the consents by receipt id. Python hashes in list comprehensions and
compares whole strings. An entry's checks need only its own row, its personal data and the *stored* hash of the
entry before it, so a range is checked alone. Only a range where something does not match is walked row by row
with the reference's checks (verify.reference), to name its first problem.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

import apsw

from form_handler.ledger.sqlite import reports
from form_handler.ledger.chain import (
    FLAG_COLUMNS, GENESIS, TEXT_COLUMNS, WalkResult, entry_hash, hash_problem, missing_problem,
)

# The mirrored columns in the canonical key order (sorted, as chain.canonical writes them).
_MIRRORED = sorted(("kind", "receipt_id", "recorded_at", "seq", *TEXT_COLUMNS, *FLAG_COLUMNS))
_NULLABLE = (*TEXT_COLUMNS, *FLAG_COLUMNS)
# Which nullable columns each entry shape this code writes has, most frequent first: a v2 consent; a
# confirmation; a notice or reconsent; a withdrawal or erasure; an e-mail unsubscribe; a v1 consent (page
# chained); a withdrawal of contact or of third-party sharing alone (self-service).
# Another shape is still verified, by the row-by-row pass (slower): add it here.
_SHAPES: tuple[frozenset[str], ...] = tuple(frozenset(s) for s in (
    ("commitment", "policy_id", "policy_version", *FLAG_COLUMNS),
    ("policy_id",),
    ("policy_id", "policy_version"),
    (),
    ("consent_updates",),
    ("commitment", "page", "policy_id", "policy_version", *FLAG_COLUMNS),
    ("consent_contact",),
    ("consent_third_parties",),
))


def _json_value(column: str) -> str:
    # x'01' and x'02' are JSONB true and false; any other flag value is rendered as itself, as the reference's
    # json_array renders it (so a flag of 2 matches only a chained 2, never a chained null).
    return f"CASE e.{column} WHEN 1 THEN x'01' WHEN 0 THEN x'02' ELSE e.{column} END" if column in FLAG_COLUMNS \
        else f"e.{column}"


def _has(shape: frozenset[str]) -> str:
    # `x < x''` holds for text or a number, not for NULL or a BLOB (json_object would read a BLOB as JSONB; the
    # reference counts a BLOB as a changed column): such a row matches no shape and goes row by row.
    return " AND ".join(f"e.{c} < x''" if c in shape or c not in _NULLABLE else f"e.{c} IS NULL"
                        for c in ("kind", "receipt_id", "recorded_at", *_NULLABLE))


def _equals(shape: frozenset[str], head: tuple[str, ...], tail: tuple[str, ...]) -> str:
    pairs = (*head, *(f"'{c}', {_json_value(c)}" for c in _MIRRORED if c in shape or c not in _NULLABLE), *tail)
    return f"e.canonical = CAST(json_object({', '.join(pairs)}) AS BLOB)"


# The bytes of an entry beside its mirrored keys, read from the entry itself at the place they must be: a
# consent's withdraw_token_sha256 (64 characters) at its end, a notice's change_date and effective (10 each) at
# its start, any other entry's "v" (one digit; a consent's is fixed by its shape). json_object escapes what it
# renders, so the entry equals the rendering only if these bytes needed no escape and sit exactly there, and
# then it is JSON whose mirrored keys hold exactly the columns' values and no other mirrored key: what
# reports.columns_differ_sql checks.
_TOKEN = "'withdraw_token_sha256', CAST(substr(e.canonical, -66, 64) AS TEXT)"
_V_LAST = "'v', CAST(substr(e.canonical, -2, 1) AS INTEGER)"
_DATES = ("'change_date', CAST(substr(e.canonical, 17, 10) AS TEXT)",
          "'effective', CAST(substr(e.canonical, 42, 10) AS TEXT)")
# A notice as notify.py records it (an older one has no dates). The kind first: it costs no copy of the bytes.
_DATED = "e.kind = 'notice' AND substr(e.canonical, 1, 16) = CAST('{\"change_date\":\"' AS BLOB)"


def _cases() -> str:
    cases = []
    for shape in _SHAPES:
        if "commitment" in shape:  # a consent: v1 chained its page, v2 does not
            version = f"'v', {1 if 'page' in shape else 2}"
            cases.append(f"WHEN e.kind = 'consent' AND {_has(shape)} THEN {_equals(shape, (), (version, _TOKEN))}")
        else:
            cases.append(f"WHEN {_has(shape)} THEN CASE WHEN {_DATED} THEN {_equals(shape, _DATES, (_V_LAST,))}"
                         f" ELSE {_equals(shape, (), (_V_LAST,))} END")
    return " ".join(cases)


# 1 when an entry's canonical bytes are exactly what its columns imply.
_COLUMNS_MATCH = f"coalesce(CASE {_cases()} END, 0)"
# One row per range, in one step: count, first and last seq, the stored hashes and prev_hash columns (comma-
# separated), the bytes each entry's hash covers (prev_hash + canonical, newline-separated: canonical JSON has
# no raw newline), whether every row's columns match and its hash and prev_hash are not BLOBs (group_concat
# would hand a BLOB's bytes over as text, where the reference's comparison with a str fails; a number never
# renders as 64 hex digits), how many entries have a page column (a v1 consent, whose commitment the personal
# data alone does not decide), and the consents: how many, their receipt ids and commitments. group_concat takes
# rows in the scan's order, seq order here; were it ever another, the strings would not match and the range
# would go row by row.
_RANGE_SQL = f"""SELECT count(*), min(e.seq), max(e.seq), group_concat(e.hash, ','), group_concat(e.prev_hash, ','),
  CAST(group_concat(e.prev_hash || e.canonical, x'0a') AS BLOB),
  min(CASE WHEN max(e.hash, e.prev_hash) < x'' THEN {_COLUMNS_MATCH} ELSE 0 END), count(e.page),
  sum(e.kind = 'consent'),
  group_concat(CASE WHEN e.kind = 'consent' THEN e.receipt_id END, ','),
  group_concat(CASE WHEN e.kind = 'consent' THEN coalesce(e.commitment, '?') END, ',')
  FROM entries e WHERE e.seq BETWEEN ? AND ?"""

# What a consent's commitment covers: its salt and the JSON of [email, message, page] (v2) or [email, message]
# (v1, whose page is chained; one beside its personal data is wrong). SQLite's JSON is the same text as
# chain.commitment's for the same values, and a commitment matching it matches nothing else. NULL (no
# commitment matches) unless the salt is a BLOB, the message text and email and page text or NULL, as
# rows.commitment_wrong requires.
_TYPES_OK = ("p.salt >= x'' AND p.message >= '' AND p.message < x''"
             " AND (p.email IS NULL OR (p.email >= '' AND p.email < x''))"
             " AND (p.page IS NULL OR (p.page >= '' AND p.page < x''))")
# The entry's "v" (only trusted where the columns matched: a consent's shape puts it there).
_V_CONSENT = "CAST(substr(e.canonical, -93, 1) AS TEXT)"
_PREIMAGE = f"""CASE WHEN NOT coalesce({_TYPES_OK}, 0) THEN NULL
  WHEN {_V_CONSENT} >= '2' THEN CAST(p.salt || json_array(p.email, p.message, p.page) AS BLOB)
  WHEN p.page IS NULL THEN CAST(p.salt || json_array(p.email, p.message) AS BLOB) END"""
# The rowid of the personal data of the range's first (or last) consent that has any: the rows between are read.
_BOUND_SQL = ("SELECT p.rowid FROM entries e CROSS JOIN personal p ON p.receipt_id = e.receipt_id"
              " WHERE e.seq BETWEEN ? AND ? AND e.kind = 'consent' ORDER BY e.seq {} LIMIT 1")
# Between a salt (random bytes) and the next preimage: JSON has no raw newline or NUL, so the separator can occur
# only inside a salt (about 1 salt in 300 million), which makes one piece too many: that range then joins.
_SEPARATOR = b"\n\x00\xff\n"
# Rows in insertion order: how many, how many of the types a commitment covers, their receipt ids (text only) and
# v2 commitment preimages. Not hex: a preimage is hashed as SQLite hands it over.
_PERSONAL_SQL = f"""SELECT count(*), count(CASE WHEN {_TYPES_OK} THEN 1 END),
  group_concat(CASE WHEN p.receipt_id >= '' AND p.receipt_id < x'' THEN p.receipt_id END, ','),
  CAST(group_concat(p.salt || json_array(p.email, p.message, p.page), x'{_SEPARATOR.hex()}') AS BLOB)
  FROM personal p WHERE p.rowid BETWEEN ? AND ?"""
_ANY_PERSONAL_SQL = "SELECT count(*) FROM personal WHERE receipt_id IN (SELECT value FROM json_each(?))"
# The reference's join, one lookup per consent: for a range the insertion-order read cannot decide.
_JOINED_SQL = f"""SELECT group_concat(coalesce(hex({_PREIMAGE}), 'X'), ','),
  group_concat(coalesce(e.commitment, '?'), ',')
  FROM entries e JOIN personal p ON e.kind = 'consent' AND p.receipt_id = e.receipt_id WHERE e.seq BETWEEN ? AND ?"""
_JOIN = "FROM entries e LEFT JOIN personal p ON e.kind = 'consent' AND p.receipt_id = e.receipt_id"
# The reference's checks, row by row, for a range where something did not match.
_EXACT_SQL = f"""SELECT e.seq, e.hash, e.prev_hash, e.canonical, {{mismatch}}, e.commitment, p.salt, p.email,
  p.message, p.page, CASE WHEN p.salt IS NOT NULL AND json_valid(CAST(e.canonical AS TEXT))
  THEN json_extract(CAST(e.canonical AS TEXT), '$.v') END {_JOIN} WHERE e.seq BETWEEN ? AND ? ORDER BY e.seq"""

_sha256 = hashlib.sha256


def _hex_digests(pieces: list[bytes]) -> str:
    """The sha256 of each piece as comma-separated hex, what group_concat(hash, ',') holds when every one matches.

    One digest() call each in a list comprehension (a map() of methodcaller("hexdigest") looks the method up on
    every call), and the digests written as hex at once.
    """
    return b"".join([_sha256(piece).digest() for piece in pieces]).hex(",", 32)


@dataclass(frozen=True)
class RangeResult:
    """What one range of seq holds: the walk's first failure in it, or its last hash; and its first other problem."""

    walk: WalkResult | None  # the walk's first failure in this range, as chain.walk would report it
    last_hash: str | None  # the stored hash of the range's last entry, when the walk passed
    # (seq, problem) of the first link, column or commitment problem, in that order at one seq as in the reference
    other: tuple[int, str] | None
    exact_rows: int  # rows that took the row-by-row pass


def personal_keyed(conn: apsw.Connection) -> bool:
    """Whether `personal` has at most one row per receipt id (its primary key), which the insertion-order read needs.

    Without it a second row for a receipt, outside the rows read, would go unchecked: then every range joins.
    """
    for _, name, unique, _, partial in conn.execute("PRAGMA index_list(personal)").fetchall():
        columns = [(row[2], row[4]) for row in conn.execute("SELECT * FROM pragma_index_xinfo(?)", (name,))
                   if row[5]]  # its key columns, not the rowid
        if unique and not partial and columns == [("receipt_id", "BINARY")]:
            return True
    return False


def check_range(conn: apsw.Connection, first: int, last: int, keyed: bool = False) -> RangeResult:
    """Check entries first..last (seq the table's rowid, all >= 1) with the stored hash of entry first-1.

    `keyed`: personal_keyed(conn), so that the personal data may be read in insertion order.
    """
    prev = GENESIS if first == 1 else hash_at(conn, first - 1)
    try:
        found: Any = conn.execute(_RANGE_SQL, (first, last)).fetchall()[0]
        if prev is not None and _chain_and_columns_match(found, first, last, prev) and (
                keyed and not found[7] and _personal_in_order_matches(conn, first, last, *found[8:])
                or _personal_joined_matches(conn, first, last)):
            return RangeResult(None, found[3][-64:], None, 0)
    except (apsw.SQLError, UnicodeDecodeError):  # not expected (the SQL guards what JSON cannot hold)
        pass
    # A missing entry first-1 is reported by the range before; any start does here.
    return _row_by_row(conn, first, last, prev or GENESIS)


def _chain_and_columns_match(found: Any, first: int, last: int, prev: str) -> bool:
    n, lowest, highest, hashes, prev_hashes, hashed, columns_match = found[:7]
    # seq is the rowid (unique integers), so n rows from first to last are every entry in between.
    if n != last - first + 1 or lowest != first or highest != last or columns_match != 1:
        return False
    try:
        if _hex_digests(hashed.split(b"\n")) != hashes:
            return False
        # Every stored hash is 64 hex digits now; each prev_hash must be the one before it.
        return bool(prev_hashes == (prev + "," + hashes[:-65] if n > 1 else prev))
    except (TypeError, AttributeError):  # a NULL
        return False


def _personal_in_order_matches(conn: apsw.Connection, first: int, last: int, consents: int, receipts: str | None,
                               commitments: str | None) -> bool:
    # Every consent of the range (none v1, every column matched) with personal data: that data must match its
    # commitment. Its rows are read between those of the range's first and last consent that have one; a consent
    # whose row is not there must have none (an erased one), else the join decides.
    if not consents:
        return True
    assert receipts is not None and commitments is not None  # consents were counted
    ids, committed = receipts.split(","), commitments.split(",")
    by_receipt = dict(zip(ids, committed))
    if not len(ids) == len(committed) == len(by_receipt) == consents:  # a comma in a value, or a receipt twice
        return False
    low, high = (conn.execute(_BOUND_SQL.format(order), (first, last)).fetchall() for order in ("", "DESC"))
    seen: list[str] = []
    if low and high:
        rows: Any = conn.execute(_PERSONAL_SQL, (low[0][0], high[0][0])).fetchall()[0]
        count, typed, present, preimages = rows
        seen = present.split(",") if present is not None else []
        pieces = preimages.split(_SEPARATOR) if preimages is not None else []
        # Else a receipt id that is not text or holds a comma, a value of a type no commitment covers, a NULL.
        if not len(seen) == len(pieces) == typed == count:
            return False
        try:
            expected = ",".join([by_receipt[receipt] for receipt in seen])
        except KeyError:  # a row of another range's consent, or of none
            return False
        if expected != _hex_digests(pieces):
            return False
    if len(seen) < consents:
        unseen = json.dumps(list(by_receipt.keys() - set(seen)))
        if conn.execute(_ANY_PERSONAL_SQL, (unseen,)).fetchall()[0][0]:
            return False
    return True


def _personal_joined_matches(conn: apsw.Connection, first: int, last: int) -> bool:
    found: Any = conn.execute(_JOINED_SQL, (first, last)).fetchall()[0]
    preimages, commitments = found
    if preimages is None:
        return True  # no consent of the range has personal data
    try:
        return bool(_hex_digests([bytes.fromhex(p) for p in preimages.split(",")]) == commitments)
    except ValueError:  # an X: the row-by-row pass names it
        return False


def _row_by_row(conn: apsw.Connection, first: int, last: int, prev: str) -> RangeResult:
    try:
        return _each_row(conn, first, last, prev)
    except UnicodeDecodeError as e:  # TEXT that is not UTF-8, which only an edit of the file makes: name its entry
        return _around_undecodable(conn, first, last, prev, e)


def _around_undecodable(conn: apsw.Connection, first: int, last: int, prev: str,
                        error: UnicodeDecodeError) -> RangeResult:
    """The range checked around its first entry holding TEXT that is not UTF-8 (apsw cannot read it as str, and
    neither could the reference walk): the entries before it as usual, then that entry's hash from its raw bytes,
    its text named as its problem (a link problem when it is prev_hash), then the entries after it."""
    found = next(((seq, column) for seq in range(first, last + 1)
                  if (column := _undecodable_column(conn, seq)) is not None), None)
    if found is None:  # not in a column of the entry or its personal data: nothing to name, so say what failed
        raise error
    bad, column = found
    before = _row_by_row(conn, first, bad - 1, prev) if bad > first else RangeResult(None, prev, None, 0)
    if before.walk is not None or before.last_hash is None:
        return before
    prev, rows = before.last_hash, before.exact_rows + 1
    stored: Any = conn.execute("SELECT CAST(hash AS BLOB), typeof(hash), CAST(canonical AS BLOB) FROM entries "
                               "WHERE seq = ?", (bad,)).fetchall()[0]
    stored_hash, kind, data = stored
    if column == "hash" or kind != "text" or data is None or (
            entry_hash(prev, data).encode() != stored_hash):
        return RangeResult(WalkResult(bad - 1, prev, bad, hash_problem(bad)), None, before.other, rows)
    problem = reports.link_problem(bad) if column == "prev_hash" else text_problem(bad, column)
    other = before.other or (bad, problem)
    if bad == last:
        return RangeResult(None, stored_hash.decode(), other, rows)
    after = _row_by_row(conn, bad + 1, last, stored_hash.decode())
    return RangeResult(after.walk, after.last_hash, other, rows + after.exact_rows)


def text_problem(seq: int, column: str) -> str:
    return f"entry #{seq}: {column} holds text that is not valid UTF-8 (the file was edited or damaged)"


def _undecodable_column(conn: apsw.Connection, seq: int) -> str | None:
    """The first column of entry `seq`, or of its personal data, whose TEXT is not UTF-8; None when every one reads."""
    for table, select in (("entries", "SELECT e.{} FROM entries e WHERE e.seq = ?"),
                          ("personal", f"SELECT p.{{}} {_JOIN} WHERE e.seq = ?")):
        for (name,) in conn.execute(f"SELECT name FROM pragma_table_info('{table}')").fetchall():
            try:
                conn.execute(select.format(f'"{name}"'), (seq,)).fetchall()
            except UnicodeDecodeError:
                return str(name) if table == "entries" else f"personal.{name}"
    return None


def _each_row(conn: apsw.Connection, first: int, last: int, prev: str) -> RangeResult:
    try:
        rows: list[Any] = conn.execute(_EXACT_SQL.format(mismatch=reports.columns_differ_sql("e.")),
                                       (first, last)).fetchall()
        each_row = False
    except apsw.SQLError:  # a BLOB in a column: JSON cannot hold it; ask row by row, where it counts as a mismatch
        rows = conn.execute(_EXACT_SQL.format(mismatch="NULL"), (first, last)).fetchall()
        each_row = True
    expected, other = first, None
    for seq, stored_hash, prev_hash, data, mismatch, com, salt, email, message, page, v in rows:
        if seq == expected - 1 >= first:
            # The entry again, with a second personal row for its receipt (a `personal` without its primary
            # key): the reference checks that row's commitment too.
            if other is None and salt is not None and reports.commitment_wrong(com, salt, email, message, page, v):
                other = (seq, reports.commitment_problem(seq))
            continue
        if seq != expected:
            return RangeResult(WalkResult(expected - 1, prev, expected, missing_problem(expected, seq)), None, other,
                               len(rows))
        if type(data) is not bytes:  # as chain.walk: hash the bytes SQLite hands back
            data = data.encode("utf-8", "surrogateescape") if isinstance(data, str) else bytes(data)
        if entry_hash(prev, data) != stored_hash:
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
    try:
        found: Any = conn.execute("SELECT hash FROM entries WHERE seq = ?", (seq,)).fetchall()
    except UnicodeDecodeError:  # not UTF-8: as a BLOB below, the walk fails at that entry
        return None
    # Not text (a BLOB put there): the walk fails at that entry, in the range before, so none starts from it.
    return found[0][0] if found and isinstance(found[0][0], str) else None
