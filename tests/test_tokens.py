from __future__ import annotations

import base64

import pytest

from form_handler.consent.tokens import LIFETIME, TokenRefused, sign, verify

KEY = b"k" * 32
NOW = 1_800_000_000.0


def test_token_round_trip_returns_the_claim() -> None:
    token = sign(KEY, "reconsent", "r-1", "privacy", "ab" * 32, now=NOW)
    claim = verify(KEY, token, "reconsent", now=NOW + 60)
    assert (claim.purpose, claim.receipt_id, claim.policy_id, claim.version) == (
        "reconsent", "r-1", "privacy", "ab" * 32,
    )
    assert claim.expires == int(NOW) + LIFETIME["reconsent"]
    assert "=" not in token and "+" not in token and "/" not in token


def test_token_with_a_changed_payload_is_refused_as_forged() -> None:
    token = sign(KEY, "confirm", "r-1", "privacy", "v1", now=NOW)
    forged = sign(KEY, "confirm", "r-2", "privacy", "v1", now=NOW).split(".")[0] + "." + token.split(".")[1]
    with pytest.raises(TokenRefused, match="altered") as e:
        verify(KEY, forged, "confirm", now=NOW)
    assert e.value.status == 400


def test_token_signed_with_another_key_is_refused() -> None:
    token = sign(b"x" * 32, "confirm", "r-1", "privacy", "v1", now=NOW)
    with pytest.raises(TokenRefused, match="not issued by us"):
        verify(KEY, token, "confirm", now=NOW)


def test_token_after_expiry_is_refused_with_410() -> None:
    token = sign(KEY, "confirm", "r-1", "privacy", "v1", now=NOW, lifetime=10)
    verify(KEY, token, "confirm", now=NOW + 10)
    with pytest.raises(TokenRefused, match="expired") as e:
        verify(KEY, token, "confirm", now=NOW + 11)
    assert e.value.status == 410


def test_token_for_another_purpose_is_refused() -> None:
    token = sign(KEY, "unsubscribe", "r-1", "privacy", "v1", now=NOW)
    with pytest.raises(TokenRefused, match="'unsubscribe'"):
        verify(KEY, token, "reconsent", now=NOW)


@pytest.mark.parametrize("bad", ["", "abc", "a.b.c", "!!!.???", "x" * 2000])
def test_token_malformed_is_refused_plainly(bad: str) -> None:
    with pytest.raises(TokenRefused, match="damaged"):
        verify(KEY, bad, "confirm", now=NOW)


def test_token_with_padding_appended_is_refused_as_damaged() -> None:
    payload, mac = sign(KEY, "confirm", "r-1", "privacy", "v1", now=NOW).split(".")
    for padded in (f"{payload}.{mac}=", f"{payload}=.{mac}", f"{payload}.{mac}=="):
        with pytest.raises(TokenRefused, match="damaged"):
            verify(KEY, padded, "confirm", now=NOW)


def test_token_with_nonzero_trailing_bits_is_refused_though_it_decodes_the_same() -> None:
    payload, mac = sign(KEY, "confirm", "r-1", "privacy", "v1", now=NOW).split(".")
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    # 32 bytes are 43 characters; the last one carries 2 bits that no byte uses.
    other = mac[:-1] + alphabet[alphabet.index(mac[-1]) ^ 1]
    assert base64.urlsafe_b64decode(other + "=") == base64.urlsafe_b64decode(mac + "=")
    with pytest.raises(TokenRefused, match="damaged"):
        verify(KEY, f"{payload}.{other}", "confirm", now=NOW)


def test_token_with_a_short_mac_is_refused_as_damaged() -> None:
    payload, mac = sign(KEY, "confirm", "r-1", "privacy", "v1", now=NOW).split(".")
    short = base64.urlsafe_b64encode(base64.urlsafe_b64decode(mac + "=")[:31]).rstrip(b"=").decode()
    with pytest.raises(TokenRefused, match="damaged"):
        verify(KEY, f"{payload}.{short}", "confirm", now=NOW)


@pytest.mark.parametrize("change", [" ", "\n", "+", "/", "%3D"])
def test_token_with_a_character_outside_base64url_is_refused_as_damaged(change: str) -> None:
    payload, mac = sign(KEY, "confirm", "r-1", "privacy", "v1", now=NOW).split(".")
    with pytest.raises(TokenRefused, match="damaged"):
        verify(KEY, f"{payload[:4]}{change}{payload[4:]}.{mac}", "confirm", now=NOW)
