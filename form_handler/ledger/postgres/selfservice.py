"""The reads behind consent self-service on PostgreSQL: the twin of ledger/sqlite/selfservice.py.

Same functions, same rows, through the same indexes (entries by receipt, personal data by key or email_key),
on the connection of a PgTxn (a read snapshot or the writer's transaction). The row types are the SQLite
module's until they move to ledger/contract.py.
"""

from __future__ import annotations

import json
from typing import Any

from form_handler.ledger.sqlite.selfservice import MAX_RECEIPTS, EntryRow, PersonalRow


def receipt_entries(view: Any, receipt_id: str) -> list[EntryRow]:
    rows = view.connection.execute(
        "SELECT seq, hash, kind, recorded_at, canonical FROM entries WHERE receipt_id = %s ORDER BY seq", (receipt_id,),
    ).fetchall()
    out = []
    for seq, digest, kind, recorded_at, data in rows:
        fields = json.loads(bytes(data))
        out.append(EntryRow(int(seq), str(digest), str(kind), str(recorded_at), fields if isinstance(fields, dict) else {}))
    return out


def personal(view: Any, receipt_id: str) -> PersonalRow | None:
    row = view.connection.execute(
        "SELECT email, message, page, email_key FROM personal WHERE receipt_id = %s", (receipt_id,)).fetchone()
    return None if row is None else PersonalRow(row[0], str(row[1]), row[2], row[3])


def receipts_of_address(view: Any, key: str, *, limit: int = MAX_RECEIPTS) -> list[str]:
    rows = view.connection.execute(
        'SELECT receipt_id FROM personal WHERE email_key = %s ORDER BY receipt_id COLLATE "C" DESC LIMIT %s', (key, limit),
    ).fetchall()
    return [str(r[0]) for r in rows]


def oldest_quota_row(view: Any, recipient_hmac: str) -> str | None:
    row = view.connection.execute(
        "SELECT min(queued_at) FROM mail_quota WHERE recipient_hmac = %s", (recipient_hmac,)).fetchone()
    return None if row is None or row[0] is None else str(row[0])
