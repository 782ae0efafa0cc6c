"""Signed, expiring links in e-mails: confirm an address, agree to a new version, withdraw, unsubscribe.

A token is `base64url(payload) "." base64url(HMAC-SHA256(key, payload))`, where the payload is compact
JSON `[purpose, receipt_id, policy_id, version, expires]` (expires in whole Unix seconds). Nothing about
the person is in the token beyond the receipt id, which the person already holds from the receipt page.

Signing and checking are pure. Whether a valid link was already *used* is not a property of the token:
the caller decides it from the ledger (a confirmation entry for that receipt, a reconsent for that
version), so a link cannot be replayed after it did its work. The keys come from form_handler/keys.py,
never from the ledger.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

PURPOSES = ("confirm", "reconsent", "withdraw", "unsubscribe", "access")
Purpose = Literal["confirm", "reconsent", "withdraw", "unsubscribe", "access"]

# How long each kind of link works. An unsubscribe link must keep working as long as the mail it came
# in might be read; a confirmation is meant to be followed soon after the form was sent.
LIFETIME: dict[str, int] = {
    "confirm": 14 * 86400,
    "reconsent": 180 * 86400,
    "withdraw": 180 * 86400,
    "unsubscribe": 730 * 86400,
    # "What do you hold about me?": the link shows personal data, so it works for one day only.
    "access": 86400,
}

# A domain-separation prefix, so a MAC made with this key for anything else can never pass as a link.
_CONTEXT = b"policy-site link v1\n"
# Two parts of the base64url alphabet around one dot; nothing else is a token we issued.
_TOKEN = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")


class TokenRefused(Exception):
    """A link that must not be acted on; `reason` is one plain sentence, `status` the HTTP status."""

    def __init__(self, reason: str, status: int = 400) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


@dataclass(frozen=True)
class LinkClaim:
    purpose: str
    receipt_id: str
    policy_id: str
    version: str
    expires: int


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    # validate=True: refuse characters outside the alphabet instead of silently skipping them.
    data = base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)
    # Only the one spelling we issue: padding or non-zero trailing bits would give one token many forms.
    if _b64(data) != text:
        raise ValueError("not canonical unpadded base64url")
    return data


def _mac(key: bytes, payload: bytes) -> bytes:
    return hmac.new(key, _CONTEXT + payload, hashlib.sha256).digest()


def sign(
    key: bytes,
    purpose: Purpose,
    receipt_id: str,
    policy_id: str,
    version: str,
    *,
    now: float,
    lifetime: int | None = None,
) -> str:
    """Return a token for one purpose that expires `lifetime` seconds (default: LIFETIME[purpose]) from now."""
    if purpose not in PURPOSES:
        raise ValueError(f"Unknown link purpose {purpose!r}; use one of {', '.join(PURPOSES)}.")
    expires = int(now) + (LIFETIME[purpose] if lifetime is None else lifetime)
    payload = json.dumps(
        [purpose, receipt_id, policy_id, version, expires], separators=(",", ":"), ensure_ascii=True
    ).encode("ascii")
    return f"{_b64(payload)}.{_b64(_mac(key, payload))}"


def verify(keys: bytes | Sequence[bytes], token: str, purpose: Purpose, *, now: float) -> LinkClaim:
    """Check signature, purpose and expiry; raise TokenRefused naming what is wrong.

    `keys` is the signing key, or every key that may verify now (the signing key, then keys being
    rotated out; see form_handler/keys.py)."""
    if len(token) > 1024 or not _TOKEN.fullmatch(token):
        raise TokenRefused("This link is incomplete or damaged; open it again from the e-mail.")
    payload_part, mac_part = token.split(".")
    try:
        payload = _unb64(payload_part)
        mac = _unb64(mac_part)
    except (binascii.Error, ValueError):
        raise TokenRefused("This link is incomplete or damaged; open it again from the e-mail.") from None
    if len(mac) != 32:  # an HMAC-SHA256, whole
        raise TokenRefused("This link is incomplete or damaged; open it again from the e-mail.")
    # Constant-time comparison: a timing difference must not reveal how much of a forged MAC was right.
    candidates = (keys,) if isinstance(keys, bytes) else tuple(keys)
    # Every candidate is compared (no early exit), so the time taken does not say which key matched.
    matched = [hmac.compare_digest(mac, _mac(key, payload)) for key in candidates]
    if not any(matched):
        raise TokenRefused("This link was not issued by us or has been altered; it cannot be used.")
    fields = _parse_payload(payload)
    claim = LinkClaim(*fields)
    if claim.purpose != purpose:
        raise TokenRefused(f"This link is for '{claim.purpose}', not for this page.")
    if now > claim.expires:
        raise TokenRefused("This link has expired; links in our e-mails work for a limited time.", 410)
    return claim


def _parse_payload(payload: bytes) -> tuple[str, str, str, str, int]:
    # Only reached with a valid MAC, so a bad payload means a bug on our side, not an attack;
    # still refuse it plainly rather than fail with a traceback.
    try:
        data: Any = json.loads(payload)
    except ValueError:
        data = None
    if (
        not isinstance(data, list)
        or len(data) != 5
        or not all(isinstance(x, str) for x in data[:4])
        or not isinstance(data[4], int)
    ):
        raise TokenRefused("This link is incomplete or damaged; open it again from the e-mail.")
    return data[0], data[1], data[2], data[3], data[4]
