"""Read-only queries over the ledger: column checks for verify, exports and anonymous statistics.

Every function takes an apsw connection inside an open read transaction (one snapshot).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import apsw

from form_handler.ledger.chain import FLAG_COLUMNS, GENESIS, TEXT_COLUMNS
from form_handler.ledger.rows import MIN_COUNT, export_rows, stats_shape, third_party_rows
# The sentences and checks every backend shares (ledger/rows.py), re-exported for verify_range.py.
from form_handler.ledger.rows import commitment_problem as commitment_problem
from form_handler.ledger.rows import commitment_wrong as commitment_wrong
from form_handler.ledger.rows import link_problem as link_problem

_COLUMNS = ("seq", "kind", "receipt_id", "recorded_at", *TEXT_COLUMNS, *FLAG_COLUMNS)
_PATHS = ", ".join(f"'$.{c}'" for c in _COLUMNS)


def columns_differ_sql(alias: str = "") -> str:
    """SQL that is true when a row's queryable columns disagree with its canonical bytes (or they are not JSON).

    One JSON parse per row in C: the columns, as a JSON array, must equal the same keys of the canonical bytes.
    `alias` ("e.") qualifies the columns where the query joins another table.
    """
    canonical = f"CAST({alias}canonical AS TEXT)"
    flags = ", ".join(f"CASE {alias}{c} WHEN 1 THEN json('true') WHEN 0 THEN json('false') ELSE {alias}{c} END"
                      for c in FLAG_COLUMNS)
    columns = ", ".join(f"{alias}{c}" for c in ("seq", "kind", "receipt_id", "recorded_at", *TEXT_COLUMNS))
    # A BLOB is never what a JSON key holds (and json_array would read one as JSONB, or refuse it): it differs.
    blob = " OR ".join(f"{alias}{c} >= x''" for c in _COLUMNS)
    return (f"CASE WHEN {blob} THEN 1 WHEN json_valid({canonical}) THEN json_extract({canonical}, {_PATHS})"
            f" IS NOT json_array({columns}, {flags}) ELSE 1 END")


_MISMATCH_SQL = f"SELECT seq FROM entries WHERE {columns_differ_sql()} ORDER BY seq LIMIT 1"


def first_broken_link(conn: apsw.Connection) -> tuple[int, str] | None:
    """The first entry whose prev_hash column is not the hash of the entry before it."""
    found: list[Any] = conn.execute(
        "SELECT e.seq FROM entries e LEFT JOIN entries p ON p.seq = e.seq - 1"
        " WHERE e.prev_hash IS NOT coalesce(p.hash, ?) ORDER BY e.seq LIMIT 1", (GENESIS,),
    ).fetchall()
    if not found:
        return None
    return found[0][0], link_problem(found[0][0])


def first_column_mismatch(conn: apsw.Connection) -> tuple[int, str] | None:
    """The first entry whose queryable columns disagree with its canonical bytes, and which column."""
    found: list[Any] = conn.execute(_MISMATCH_SQL).fetchall()
    if not found:
        return None
    seq: int = found[0][0]
    return seq, column_problem(conn, seq)


def column_problem(conn: apsw.Connection, seq: int) -> str:
    """Which column of entry `seq` (one whose columns disagree with its canonical bytes) is wrong, as a sentence."""
    row: Any = conn.execute(f"SELECT canonical, {', '.join(_COLUMNS)} FROM entries WHERE seq = ?", (seq,)).fetchall()[0]
    try:
        entry = json.loads(row[0])
    except ValueError:
        return f"entry #{seq} is not valid JSON"
    for name, value in zip(_COLUMNS, row[1:]):
        expected = entry.get(name) if isinstance(entry, dict) else None
        if name in FLAG_COLUMNS and isinstance(expected, bool):
            expected = int(expected)
        if value != expected or type(value) is not type(expected):
            return f"entry #{seq}: column {name} does not match the chained entry"
    return f"entry #{seq}: columns do not match the chained entry"


def first_commitment_mismatch(conn: apsw.Connection) -> tuple[int, str] | None:
    """The first consent whose stored email, message or page no longer match the salted commitment."""
    # The commitment column is checked against the chained bytes by first_column_mismatch, and the
    # entry's format ("v": 1 commits to [email, message], 2 to [email, message, page]) by the chain.
    rows = conn.execute(
        "SELECT e.seq, e.commitment, p.salt, p.email, p.message, p.page,"
        " CASE WHEN json_valid(CAST(e.canonical AS TEXT)) THEN json_extract(CAST(e.canonical AS TEXT), '$.v') END"
        " FROM personal p JOIN entries e ON e.receipt_id = p.receipt_id AND e.kind = 'consent'"
    )
    first: int | None = None
    for seq, expected, salt, email, message, page, v in rows:
        if commitment_wrong(expected, salt, email, message, page, v):
            first = seq if first is None else min(first, seq)
    if first is None:
        return None
    return first, commitment_problem(first)


def entries(conn: apsw.Connection) -> Iterator[dict[str, Any]]:
    """Every chained entry in order, with personal data where it still exists and the receipt's status.

    A consent's page comes from its personal data (entry format v2: none once erased), or from the chain
    for a v1 consent, which chained it.
    """
    rows = conn.execute(
        "SELECT e.seq, e.hash, e.canonical, p.email, p.message, p.page, r.withdrawn, r.erased, r.updates_stopped,"
        " r.contact_stopped, r.third_parties_stopped FROM entries e LEFT JOIN personal p ON e.kind = 'consent' AND p.receipt_id = e.receipt_id"
        " LEFT JOIN receipts r ON r.receipt_id = e.receipt_id ORDER BY e.seq"
    )
    yield from export_rows(rows)


def third_party_emails(conn: apsw.Connection) -> Iterator[dict[str, Any]]:
    """Addresses whose confirmed third-party consent stands, one row each (case-insensitive).

    Only receipts whose address was confirmed (the double opt-in link was followed) count: anyone can
    type someone else's address into the form, and this export is the one that leaves the organisation.
    Among an address's confirmed receipts the latest decides: if it withholds or withdrew third-party
    consent, an earlier consent from the same address does not count either. Unconfirmed receipts
    change nothing, in either direction.
    """
    rows = conn.execute(
        # The confirmation lookup uses the entries (receipt_id, kind) index, once per receipt with an address.
        # A third-party consent withdrawn on its own (schema 7) counts as not given.
        # Ordered by address, newest first within one, so rows.third_party_rows decides one address at a time;
        # SQLite's sorter spills to temporary files, so memory stays bounded (BINARY = code point order).
        "SELECT q.email_key, r.email, r.consent_third_parties AND NOT r.third_parties_stopped, r.withdrawn, r.erased"
        " FROM receipts r JOIN personal q ON q.receipt_id = r.receipt_id"
        " WHERE r.email IS NOT NULL AND r.email <> '' AND EXISTS (SELECT 1 FROM entries k"
        " WHERE k.receipt_id = r.receipt_id AND k.kind = 'confirmation') ORDER BY q.email_key, r.seq DESC"
    )
    yield from third_party_rows(rows)


def stats(conn: apsw.Connection) -> dict[str, Any]:
    """Aggregate counts of standing consents; any count below MIN_COUNT is null or left out.

    Read from the counters that the ledger's triggers keep with every append (schema 5), so the cost does
    not grow with the ledger; recount_stats() counts the same from every receipt."""
    totals: Any = conn.execute(
        "SELECT submissions, withdrawn, erased, standing, contact, updates, third_parties FROM stats_totals"
    ).fetchall()[0]
    per_day = {d: n for d, n in conn.execute("SELECT day, n FROM stats_days WHERE n >= ? ORDER BY day", (MIN_COUNT,))}
    per_version: dict[str, dict[str, int]] = {}
    # Grouped: a NULL version has rows of its own (it never conflicts in the unique index).
    for pid, version, n in conn.execute(
        "SELECT policy_id, policy_version, sum(n) FROM stats_versions GROUP BY 1, 2 HAVING sum(n) >= ? ORDER BY 1, 2",
        (MIN_COUNT,),
    ):
        per_version.setdefault(pid, {})[version] = n
    return stats_shape(totals[:3], totals[3:], per_day, per_version)


def recount_stats(conn: apsw.Connection) -> dict[str, Any]:
    """stats() counted afresh from every receipt (the receipts view): the reference the counters must equal.

    It reads the whole ledger (seconds at a million entries); stats() is what requests use."""
    standing = "FROM receipts WHERE NOT withdrawn AND NOT erased"
    per_day = {d: n for d, n in conn.execute(f"SELECT substr(recorded_at, 1, 10), count(*) {standing} GROUP BY 1 ORDER BY 1") if n >= MIN_COUNT}
    per_version: dict[str, dict[str, int]] = {}
    for pid, version, n in conn.execute(f"SELECT policy_id, policy_version, count(*) {standing} GROUP BY 1, 2 ORDER BY 1, 2"):
        if n >= MIN_COUNT:
            per_version.setdefault(pid, {})[version] = n
    sums: Any = conn.execute(
        # A consent withdrawn on its own (the e-mail unsubscribe is one, for updates) no longer counts.
        f"SELECT count(*), sum(consent_contact AND NOT contact_stopped), sum(consent_updates AND NOT updates_stopped),"
        f" sum(consent_third_parties AND NOT third_parties_stopped) {standing}"
    ).fetchall()[0]
    totals: Any = conn.execute("SELECT count(*), sum(withdrawn), sum(erased) FROM receipts").fetchall()[0]
    return stats_shape(totals, sums, per_day, per_version)
