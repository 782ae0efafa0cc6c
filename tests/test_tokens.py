from __future__ import annotations


import pytest

from form_handler.tokens import LIFETIME, TokenRefused, sign, verify

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
