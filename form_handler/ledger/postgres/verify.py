"""`ledger verify` on PostgreSQL: the same checks and sentences as the SQLite reference, in one snapshot.

One pass over the entries in seq order (a server-side cursor) walks the chain (chain.walk), and beside it
checks each prev_hash link and each row's columns against its canonical bytes; a second pass checks every
consent's personal data against its commitment. The smallest bad seq wins, ties in the reference's order.
"""

from __future__ import annotations

import json
from collections.abc import Generator
from typing import Any

import psycopg

from form_handler.ledger.chain import GENESIS, Checkpoint, VerifyReport, walk
from form_handler.ledger.rows import COLUMNS, column_problem, commitment_problem, commitment_wrong, link_problem

_ROWS = 2000


def verify(conn: psycopg.Connection[Any], against: Checkpoint | None = None) -> VerifyReport:
    """Verify the ledger as `conn` (inside a REPEATABLE READ transaction) sees it."""
    link: tuple[int, str] | None = None
    column: tuple[int, str] | None = None

    def rows() -> Generator[tuple[int, str, bytes], None, None]:
        nonlocal link, column
        prev = GENESIS
        with conn.cursor(name="verify_entries") as cur:
            cur.itersize = _ROWS
            cur.execute(f"SELECT hash, prev_hash, canonical, {', '.join(COLUMNS)} FROM entries ORDER BY seq")
            for digest, prev_hash, data, *values in cur:
                seq = int(values[0])
                values[0] = seq
                data = bytes(data)
                if link is None and prev_hash != prev:
                    link = (seq, link_problem(seq))
                if column is None and (problem := column_problem(seq, data, values)) is not None:
                    column = (seq, problem)
                prev = digest
                yield seq, digest, data

    stream = rows()
    walked = walk(stream, against)
    stream.close()  # walk stops at the first bad entry; close the cursor now
    bad, problem = walked.bad_seq, walked.problem
    commitment = _first_commitment_mismatch(conn)
    for other in (link, column, commitment):
        if other is not None and (bad is None or other[0] < bad):
            bad, problem = other
    version_row = conn.execute("SHOW server_version").fetchone()
    version = str(version_row[0]) if version_row else "?"
    return VerifyReport(ok=bad is None, count=walked.count, head=walked.head, sqlite_version=version,
                        first_bad_seq=bad, problem=problem, against=against, engine="postgresql")


def _first_commitment_mismatch(conn: psycopg.Connection[Any]) -> tuple[int, str] | None:
    first: int | None = None
    with conn.cursor(name="verify_personal") as cur:
        cur.itersize = _ROWS
        cur.execute(
            "SELECT e.seq, e.commitment, p.salt, p.email, p.message, p.page, e.canonical"
            " FROM personal p JOIN entries e ON e.receipt_id = p.receipt_id AND e.kind = 'consent'"
        )
        for seq, expected, salt, email, message, page, data in cur:
            try:
                v = json.loads(bytes(data)).get("v")
            except (ValueError, AttributeError):
                v = None
            if commitment_wrong(expected, bytes(salt) if salt is not None else None, email, message, page, v):
                first = int(seq) if first is None else min(first, int(seq))
    return None if first is None else (first, commitment_problem(first))
