"""What every backend checks and makes before an append: text and flag checks, a receipt's id, token and salt."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import time
from typing import Any

from form_handler.ledger.chain import FLAG_COLUMNS, KINDS, RESERVED, TEXT_COLUMNS
from form_handler.ledger.types import Entry, InvalidToken, LedgerRefusal

__all__ = ["_check_fields", "_check_text", "_check_withdrawal", "_receipt_secrets", "check_withdraw_token",
           "new_receipt_secrets", "token_digest"]


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


def _check_withdrawal(kind: str, fields: dict[str, Any]) -> None:
    # A withdrawal names the consents it withdraws by setting them false (types.withdrawn_consents); one set
    # true would read as withdrawing that consent too, so it is refused rather than stored ambiguous.
    if kind == "withdrawal":
        for name in FLAG_COLUMNS:
            if fields.get(name) is True:
                raise LedgerRefusal(f"{name} must be false on a withdrawal (it names the consent withdrawn).", name)


def check_append(kind: str, fields: dict[str, Any]) -> None:
    """What every backend's LedgerTxn.append checks before it reads or writes anything: the kind, no reserved
    or personal field, the fields' types, and a withdrawal's consents (named only to be withdrawn)."""
    if kind not in KINDS or kind == "consent":
        raise ValueError(f"kind must be one of {', '.join(KINDS[1:])}, got {kind!r} (use append_consent).")
    if RESERVED & fields.keys():
        raise ValueError(f"fields may not set {sorted(RESERVED & fields.keys())}.")
    if "page" in fields:
        raise ValueError("page is personal data and is never chained; only a consent keeps one (append_consent).")
    _check_fields(fields)
    _check_withdrawal(kind, fields)


def new_receipt_secrets(now: float | None = None) -> tuple[str, str, bytes]:
    """A receipt id, its withdraw token (shown once) and its salt, from one read of the OS's random source.

    The id is 32 hex digits: the time in milliseconds (12), then 80 random bits (20). Ids made in time
    order land at the right-hand end of the two receipt_id indexes; wholly random ids put each
    append on a random page of each index, and a batch of 35 dirtied ~130 pages (530 kB of WAL per
    COMMIT, at 20,000 entries). The id only names a receipt: acting on it takes the token (256 bits),
    and the time it shows is on the receipt and in the chain already.
    """
    return _receipt_secrets(1, now)[0]


def _receipt_secrets(count: int, now: float | None = None) -> list[tuple[str, str, bytes]]:
    """new_receipt_secrets for `count` receipts at once: one clock read and one read of the random source."""
    ms = int((time.time() if now is None else now) * 1000)
    raw = os.urandom(58 * count)
    out = []
    for at in range(0, 58 * count, 58):
        # As secrets.token_urlsafe(32).
        token = base64.urlsafe_b64encode(raw[at + 10:at + 42]).rstrip(b"=").decode("ascii")
        out.append((f"{ms:012x}{raw[at:at + 10].hex()}", token, raw[at + 42:at + 58]))
    return out


def token_digest(token: str) -> str:
    """What a consent keeps of its withdraw token (chained as withdraw_token_sha256): the token is shown once."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def check_withdraw_token(consent: Entry, token: object) -> None:
    """Raise InvalidToken unless `token` is the withdraw token of `consent`, compared in constant time."""
    if not hmac.compare_digest(token_digest(str(token)), str(consent.fields.get("withdraw_token_sha256", ""))):
        raise InvalidToken("withdraw_token does not match this receipt.", "withdraw_token")
