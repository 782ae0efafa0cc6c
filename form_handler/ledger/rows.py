"""What every backend makes of its rows: export lines, the third-party list, statistics, the column checks.

Pure functions over plain values, so SQLite and PostgreSQL export, count and verify alike.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Iterable, Iterator
from typing import Any

from form_handler.ledger.chain import FLAG_COLUMNS, TEXT_COLUMNS, commitment

# Counts below this are left out (or null) so that no one can be picked out of the statistics.
MIN_COUNT = 5
# The fixed columns of a full export, in order (CSV header); other chained fields go in "details".
# withdrawn: every consent of the receipt; updates_stopped (the e-mail unsubscribe), contact_stopped and
# third_parties_stopped: that one consent withdrawn on its own, which leaves withdrawn false.
EXPORT_FIELDS = (
    "seq", "entry_hash", "kind", "receipt_id", "recorded_at", "policy_id", "policy_version", "page",
    *FLAG_COLUMNS, "email", "message", "withdrawn", "erased", "updates_stopped", "contact_stopped",
    "third_parties_stopped", "details",
)
# The queryable columns mirrored from the chained bytes, in the order verify compares them.
COLUMNS = ("seq", "kind", "receipt_id", "recorded_at", *TEXT_COLUMNS, *FLAG_COLUMNS)


def export_rows(rows: Iterable[tuple[Any, ...]]) -> Iterator[dict[str, Any]]:
    """(seq, hash, canonical, email, message, page, withdrawn, erased, updates_stopped, contact_stopped,
    third_parties_stopped) rows -> export dicts.

    A consent's page comes from its personal data (entry format v2: none once erased), or from the chain
    for a v1 consent, which chained it."""
    skip = {"v", "withdraw_token_sha256"}
    for seq, digest, data, email, message, page, withdrawn, erased, stopped, contact_off, third_off in rows:
        entry = json.loads(bytes(data))
        out: dict[str, Any] = {"seq": seq, "entry_hash": digest}
        for name in EXPORT_FIELDS[2:-8]:
            out[name] = entry.get(name)
        if entry.get("v", 1) >= 2:
            out["page"] = page
        out.update(email=email, message=message, withdrawn=bool(withdrawn), erased=bool(erased),
                   updates_stopped=bool(stopped), contact_stopped=bool(contact_off),
                   third_parties_stopped=bool(third_off))
        out["details"] = {k: v for k, v in entry.items() if k not in out and k not in skip}
        yield out


def third_party_rows(rows: Iterable[tuple[Any, ...]]) -> Iterator[dict[str, Any]]:
    """(email_key, email, consent_third_parties, withdrawn, erased) of confirmed receipts, ordered by email_key
    (code point order) and newest first within one address -> addresses whose latest confirmed receipt shares,
    one per address as compared (addresses.email_key), sorted.

    Streams: only the address being decided is held, so the export's memory does not grow with the ledger
    (a dict of every confirmed address took 192 MB at 1M consents, bench/scale_bench.py)."""
    last: str | None = None
    for key, email, third, withdrawn, erased in rows:
        if key == last:
            continue  # an older receipt of an address its newest confirmed receipt has decided
        last = key
        if third and not withdrawn and not erased:
            yield {"email": email.strip()}


def _suppress(n: int | None) -> int | None:
    return int(n) if n is not None and n >= MIN_COUNT else None


def stats_shape(totals: Any, sums: Any, per_day: dict[str, int], per_version: dict[str, dict[str, int]]) -> dict[str, Any]:
    return {
        "min_count": MIN_COUNT,
        "submissions": _suppress(totals[0]),
        "withdrawn": _suppress(totals[1]),
        "erased": _suppress(totals[2]),
        "standing": _suppress(sums[0]),
        "per_consent": {"contact": _suppress(sums[1]), "updates": _suppress(sums[2]), "third_parties": _suppress(sums[3])},
        "per_day": per_day,
        "per_policy_version": per_version,
    }


def column_problem(seq: int, data: Any, values: Iterable[Any]) -> str | None:
    """Which queryable column of entry `seq` disagrees with its canonical bytes, as a sentence; None if none does."""
    try:
        entry = json.loads(bytes(data))
    except ValueError:
        return f"entry #{seq} is not valid JSON"
    for name, value in zip(COLUMNS, values):
        expected = entry.get(name) if isinstance(entry, dict) else None
        if name in FLAG_COLUMNS and isinstance(expected, bool):
            expected = int(expected)
        if value != expected or type(value) is not type(expected):
            return f"entry #{seq}: column {name} does not match the chained entry"
    return None


def commitment_wrong(expected: object, salt: object, email: object, message: object, page: object, v: object) -> bool:
    """Whether a consent's stored personal data fails its commitment; `v` is the entry's "v"."""
    version = v if isinstance(v, int) else 1
    # A v1 consent chains its page: a page beside its personal data is covered by nothing, so it is wrong.
    if version < 2 and page is not None:
        return True
    if not (isinstance(salt, bytes) and isinstance(message, str) and isinstance(email, str | None)
            and isinstance(page, str | None)):
        return True  # values of another type (a tampered column) commit to nothing
    computed = commitment(salt, email, message, page, v=version).encode()
    return not hmac.compare_digest(str(expected).encode("utf-8", "surrogatepass"), computed)


def link_problem(seq: int) -> str:
    return f"entry #{seq} does not link to the hash of entry #{seq - 1}"


def commitment_problem(seq: int) -> str:
    return f"entry #{seq}: email, message or page do not match the entry's commitment"
