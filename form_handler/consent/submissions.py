"""Parse and validate one feedback submission (pure: plain data in, a draft or the errors out).

Input is a mapping of field name to value, from a form (values are `str`, or `bytes` when the caller
kept the raw percent-decoded bytes so that invalid UTF-8 can be named) or from a JSON object (values of
any JSON type). Every offending field is reported at once, each with one plain sentence.

Unknown fields: a JSON caller is told about each one (422), because a misspelt `consent_contact` would
otherwise silently record "no consent". A form post ignores them, because browsers add their own
(a named submit button, `_charset_`); they are never stored or echoed.
"""

from __future__ import annotations

import json
import re
import urllib.parse
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from form_handler.ledger.types import ConsentDraft

MESSAGE_MAX = 5000
EMAIL_MAX = 254
PAGE_MAX = 512
ID_MAX = 128
CONSENTS = ("consent_contact", "consent_updates", "consent_third_parties")
FIELDS = frozenset({"message", "email", "policy_id", "policy_version", "page", "website", *CONSENTS})
# Consents that only make sense with an address to write to.
NEEDS_EMAIL = {"consent_contact": "contact you", "consent_updates": "e-mail you about policy changes"}

# Unicode category Cc is exactly U+0000-U+001F and U+007F-U+009F (tests/test_submissions.py checks this
# against unicodedata); one regex search is ~50x faster than asking unicodedata about every character.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")
_CONTROL_MULTILINE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")  # tab, LF and CR allowed

_MISSING = object()
_TRUE = frozenset({"on", "true", "1", "yes"})
_FALSE = frozenset({"", "off", "false", "0", "no"})
# A plain address: no quotes, spaces, commas, angle brackets or line breaks, so it can never carry
# a second header or recipient into a mail; the domain has at least one dot and sane labels.
_EMAIL = re.compile(
    r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}"
)


@dataclass(frozen=True)
class ValidationFailed:
    """A refused submission: every offending field with one sentence, and the HTTP status to send."""

    errors: dict[str, str] = field(default_factory=dict)
    status: int = 422


def _text(name: str, raw: Any, errors: dict[str, str], *, multiline: bool = False) -> str | None:
    """Decode and check one text value; record an error and return None when it is unusable."""
    if isinstance(raw, (bytes, bytearray)):
        try:
            raw = bytes(raw).decode("utf-8")
        except UnicodeDecodeError:
            errors[name] = f"{name} is not valid UTF-8; send the text encoded as UTF-8."
            return None
    if not isinstance(raw, str):
        errors[name] = f"{name} must be a string."
        return None
    try:
        raw.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates from a JSON "\ud800" escape
        errors[name] = f"{name} contains characters that are not valid Unicode; remove them."
        return None
    if (_CONTROL_MULTILINE if multiline else _CONTROL).search(raw):
        what = "a NUL byte" if "\x00" in raw else "control characters"
        errors[name] = f"{name} contains {what}; remove them."
        return None
    return raw


def _flag(name: str, raw: Any, *, is_json: bool, errors: dict[str, str]) -> bool:
    if raw is _MISSING:
        return False
    if is_json:
        if isinstance(raw, bool):
            return raw
        errors[name] = f"{name} must be true or false."
        return False
    text = _text(name, raw, errors)
    if text is not None and text.strip().lower() in _TRUE:
        return True
    if text is not None and text.strip().lower() in _FALSE:
        return False
    errors.setdefault(name, f"{name} must be a tick box value such as 'on', or left out.")
    return False


def _email(raw: Any, errors: dict[str, str]) -> str | None:
    if raw is None:
        return None
    text = _text("email", raw, errors)
    if text is None:
        return None
    text = text.strip()
    if not text:
        return None
    if len(text) > EMAIL_MAX:
        errors["email"] = f"email is longer than {EMAIL_MAX} characters; give a shorter address."
    elif not _EMAIL.fullmatch(text) or len(text.split("@")[0]) > 64:
        errors["email"] = "email must be a plain address such as name@example.org."
    return text


def is_site_path(text: str) -> bool:
    """A path on this site: "//host" or a backslash would make a link built from it lead to another site."""
    return text.startswith("/") and not text.startswith("//") and "\\" not in text and " " not in text


def _page(raw: Any, errors: dict[str, str]) -> str:
    text = _text("page", raw, errors) if raw is not None else ""
    # Keep only the path: a query string or fragment (/feedback/?email=ada@example.org) can carry personal
    # data. The path is personal data too (kept beside the address, and erased with it; see ledger.py).
    text = (text or "").strip().split("#", 1)[0].split("?", 1)[0]
    if not text:
        return ""
    if len(text) > PAGE_MAX:
        errors["page"] = f"page is longer than {PAGE_MAX} characters; send the path only."
    elif not is_site_path(text):
        errors["page"] = "page must be a path on this site starting with '/', such as /feedback/."
    return text


def _required_id(name: str, raw: Any, errors: dict[str, str]) -> str:
    if raw is None:
        errors[name] = f"{name} is required; the form on the site fills it in."
        return ""
    text = _text(name, raw, errors)
    text = (text or "").strip()
    if name not in errors and not text:
        errors[name] = f"{name} is required; the form on the site fills it in."
    elif len(text) > ID_MAX:
        errors[name] = f"{name} is longer than {ID_MAX} characters."
    return text


def parse_submission(data: Mapping[str, Any], *, is_json: bool) -> ConsentDraft | ValidationFailed:
    """Validate one submission; a filled honeypot is a 400, every other problem a 422 naming fields."""
    if data.get("website") not in (None, "", b""):
        return ValidationFailed({"website": "This field must be left empty."}, status=400)
    errors: dict[str, str] = {}
    if is_json:
        for name in sorted(set(data) - FIELDS):
            errors[name[:64]] = f"{name[:64]} is not a field of this form; remove it."
    message = _text("message", data.get("message"), errors, multiline=True)
    if "message" not in errors:
        message = (message or "").strip()
        if not message:
            errors["message"] = "message is required; write at least one character."
        elif len(message) > MESSAGE_MAX:
            errors["message"] = f"message is longer than {MESSAGE_MAX} characters; shorten it."
    email = _email(data.get("email"), errors)
    flags = {name: _flag(name, data.get(name, _MISSING), is_json=is_json, errors=errors) for name in CONSENTS}
    for name, purpose in NEEDS_EMAIL.items():
        if flags[name] and email is None and "email" not in errors and name not in errors:
            errors[name] = f"{name} needs an email address so that we can {purpose}; give one or untick it."
    policy_id = _required_id("policy_id", data.get("policy_id"), errors)
    policy_version = _required_id("policy_version", data.get("policy_version"), errors)
    page = _page(data.get("page"), errors)
    if errors:
        return ValidationFailed(errors)
    return ConsentDraft(
        policy_id=policy_id,
        policy_version=policy_version,
        page=page,
        message=message or "",
        email=email,
        consent_contact=flags["consent_contact"],
        consent_updates=flags["consent_updates"],
        consent_third_parties=flags["consent_third_parties"],
    )


def fields_from_pairs(pairs: Iterable[tuple[str, Any]]) -> dict[str, Any] | ValidationFailed:
    """Turn form pairs into a mapping; a known field sent twice is refused, since we cannot tell which was meant."""
    fields: dict[str, Any] = {}
    errors: dict[str, str] = {}
    for name, value in pairs:
        if name in fields and name in FIELDS:
            errors[name] = f"{name} was sent more than once; send it once."
        fields.setdefault(name, value)
    return ValidationFailed(errors) if errors else fields


def decode_urlencoded(body: bytes, *, max_fields: int) -> dict[str, Any] | ValidationFailed:
    """Split an application/x-www-form-urlencoded body, keeping values as bytes so bad UTF-8 is named."""
    # Our own split rather than parse_qsl: that one decodes with errors="replace" (or refuses raw
    # non-ASCII bytes), and either way the field with bad UTF-8 could not be named.
    segments = [s for s in body.split(b"&") if s]
    if len(segments) > max_fields:
        return ValidationFailed({"body": f"The form has more than {max_fields} fields."}, status=400)
    named: list[tuple[str, bytes]] = []
    for segment in segments:
        raw_name, _, raw_value = segment.partition(b"=")
        try:
            name = urllib.parse.unquote_to_bytes(raw_name.replace(b"+", b" ")).decode("utf-8")
        except UnicodeDecodeError:
            return ValidationFailed({"body": "A field name is not valid UTF-8."}, status=400)
        named.append((name, urllib.parse.unquote_to_bytes(raw_value.replace(b"+", b" "))))
    return fields_from_pairs(named)


def decode_json(body: bytes) -> dict[str, Any] | ValidationFailed:
    """Parse a JSON body that must be one object with no repeated keys."""
    duplicates: list[str] = []

    def pairs_hook(items: list[tuple[str, Any]]) -> dict[str, Any]:
        seen: dict[str, Any] = {}
        for key, value in items:
            if key in seen:
                duplicates.append(key)
            seen[key] = value
        return seen

    try:
        data = json.loads(body.decode("utf-8"), object_pairs_hook=pairs_hook)
    except UnicodeDecodeError:
        return ValidationFailed({"body": "The body is not valid UTF-8; send JSON encoded as UTF-8."}, status=400)
    except (ValueError, RecursionError):  # RecursionError: absurdly deep nesting
        return ValidationFailed({"body": "The body is not valid JSON; send one JSON object."}, status=400)
    if not isinstance(data, dict):
        return ValidationFailed({"body": "The body must be one JSON object of fields."}, status=400)
    if duplicates:
        return ValidationFailed({name[:64]: f"{name[:64]} appears more than once; send it once." for name in duplicates})
    return data
