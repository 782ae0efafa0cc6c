"""Parsing and validating one submission (pure)."""

from __future__ import annotations

import sys
import unicodedata
from typing import Any

import pytest

from form_handler.consent.submissions import (
    MESSAGE_MAX,
    _CONTROL,
    _CONTROL_MULTILINE,
    ValidationFailed,
    decode_json,
    decode_urlencoded,
    parse_submission,
)

VERSION = "a" * 64


def _form(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"message": "Hello", "policy_id": "privacy", "policy_version": VERSION}
    base.update(fields)
    return {k: v for k, v in base.items() if v is not None}


def _errors(data: dict[str, Any], *, is_json: bool = False) -> dict[str, str]:
    result = parse_submission(data, is_json=is_json)
    assert isinstance(result, ValidationFailed), result
    return result.errors


def test_minimal_form_gives_draft_without_consents() -> None:
    draft = parse_submission(_form(message="  Hello  "), is_json=False)
    assert not isinstance(draft, ValidationFailed)
    assert draft.message == "Hello" and draft.email is None and draft.page == ""
    assert not (draft.consent_contact or draft.consent_updates or draft.consent_third_parties)


@pytest.mark.parametrize("value", ["on", "true", "1", "yes", "ON"])
def test_form_tick_box_values_mean_true(value: str) -> None:
    draft = parse_submission(_form(email="a@example.org", consent_contact=value), is_json=False)
    assert not isinstance(draft, ValidationFailed) and draft.consent_contact is True


def test_json_consents_must_be_booleans() -> None:
    assert "consent_third_parties" in _errors(_form(consent_third_parties="yes"), is_json=True)
    assert "consent_contact" in _errors(_form(consent_contact=None) | {"consent_contact": None}, is_json=True)
    draft = parse_submission(_form(consent_third_parties=True), is_json=True)
    assert not isinstance(draft, ValidationFailed) and draft.consent_third_parties is True


def test_unknown_tick_box_value_is_refused() -> None:
    assert "consent_updates" in _errors(_form(consent_updates="maybe"))


@pytest.mark.parametrize("message", ["", "   \n ", "x" * (MESSAGE_MAX + 1)])
def test_message_empty_or_too_long_is_refused(message: str) -> None:
    assert "message" in _errors(_form(message=message))


def test_message_of_exactly_the_maximum_after_trimming_is_accepted() -> None:
    draft = parse_submission(_form(message=" " + "é" * MESSAGE_MAX + "\n"), is_json=False)
    assert not isinstance(draft, ValidationFailed) and len(draft.message) == MESSAGE_MAX


@pytest.mark.parametrize(
    "email",
    ["not-an-address", "a@b", "a@example.org\r\nBcc: x@evil.org", "a b@example.org",
     "<a@example.org>", "a@example.org, b@example.org", "x" * 250 + "@example.org", "a\x00@example.org"],
)
def test_bad_email_is_refused(email: str) -> None:
    assert "email" in _errors(_form(email=email))


def test_contact_and_updates_need_an_email_but_third_parties_alone_does_not() -> None:
    errors = _errors(_form(consent_contact="on", consent_updates="on"))
    assert set(errors) == {"consent_contact", "consent_updates"}
    assert not isinstance(parse_submission(_form(consent_third_parties="on"), is_json=False), ValidationFailed)


def test_every_offending_field_is_named_at_once() -> None:
    errors = _errors({"message": "", "email": "nope", "page": "http://evil.example/"})
    assert set(errors) == {"message", "email", "policy_id", "policy_version", "page"}


@pytest.mark.parametrize("page", ["/feedback/?email=ada@example.org", "/feedback/#ada@example.org", "/feedback/?a=1#b"])
def test_page_keeps_only_the_path(page: str) -> None:
    draft = parse_submission(_form(page=page), is_json=False)
    assert not isinstance(draft, ValidationFailed) and draft.page == "/feedback/"


@pytest.mark.parametrize("page", ["feedback/", "//evil.example/", "/a\\b", "/" + "x" * 600])
def test_page_must_be_a_local_path(page: str) -> None:
    assert "page" in _errors(_form(page=page))


def test_filled_honeypot_is_a_400() -> None:
    result = parse_submission(_form(website="http://spam.example"), is_json=False)
    assert isinstance(result, ValidationFailed) and result.status == 400 and "website" in result.errors


def test_nul_byte_and_invalid_utf8_name_the_field() -> None:
    assert "NUL" in _errors(_form(message="a\x00b"))["message"]
    assert "UTF-8" in _errors(_form(message=b"caf\xe9"))["message"]
    assert "Unicode" in _errors(_form(message="\ud800"), is_json=True)["message"]


def test_control_character_check_is_exactly_unicode_category_cc() -> None:
    every = "".join(map(chr, range(sys.maxunicode + 1)))
    cc = {ch for ch in every if unicodedata.category(ch) == "Cc"}
    assert set(_CONTROL.findall(every)) == cc
    assert set(_CONTROL_MULTILINE.findall(every)) == cc - set("\t\n\r")
    assert "control characters" in _errors(_form(message="a\x85b"))["message"]
    draft = parse_submission(_form(message="tab\tand\r\nlines \u2028 \xa0"), is_json=False)
    assert not isinstance(draft, ValidationFailed) and draft.message.startswith("tab")


def test_unknown_fields_refused_in_json_but_ignored_in_forms() -> None:
    assert "colour" in _errors(_form(colour="red"), is_json=True)
    assert not isinstance(parse_submission(_form(submit="Send"), is_json=False), ValidationFailed)


def test_urlencoded_keeps_bytes_and_refuses_repeats_and_floods() -> None:
    fields = decode_urlencoded(b"message=caf%C3%A9+x&email=&x=%FF", max_fields=10)
    assert fields == {"message": "café x".encode(), "email": b"", "x": b"\xff"}
    repeated = decode_urlencoded(b"consent_contact=on&consent_contact=off", max_fields=10)
    assert isinstance(repeated, ValidationFailed) and "consent_contact" in repeated.errors
    flood = decode_urlencoded(b"&".join([b"a=1"] * 11), max_fields=10)
    assert isinstance(flood, ValidationFailed) and flood.status == 400


@pytest.mark.parametrize("body", [b"[1]", b"{", b'"x"', b"\xff{}", b"[" * 100000 + b"]" * 100000])
def test_json_body_that_is_not_one_object_is_a_400(body: bytes) -> None:
    result = decode_json(body)
    assert isinstance(result, ValidationFailed) and result.status == 400


def test_json_repeated_key_is_named() -> None:
    result = decode_json(b'{"message": "a", "message": "b"}')
    assert isinstance(result, ValidationFailed) and "message" in result.errors
