"""Generated inputs: hypothesis on the request parsing, and schemathesis against /api/openapi.json.

No input may cause a 5xx or an exception, and nothing refused may be stored. Example counts are bounded
(FUZZ_EXAMPLES) so the module runs in about a minute.
"""

from __future__ import annotations

import os
import unicodedata
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from faultkit import VERSION, submission, write_manifest
from form_handler.ledger import ConsentDraft
from form_handler.submissions import (
    CONSENTS, FIELDS, MESSAGE_MAX, ValidationFailed, decode_json, decode_urlencoded, parse_submission,
)

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "300"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)
names = st.sampled_from(sorted(FIELDS)) | st.text(max_size=8)
form_values = st.text() | st.binary() | st.sampled_from(["on", "off", "", " ", "true", "0", "a@b.co", VERSION])


def check_draft(draft: ConsentDraft) -> None:
    """What a stored submission must look like, whatever came in."""
    assert draft.message == draft.message.strip() and 0 < len(draft.message) <= MESSAGE_MAX
    assert not any(unicodedata.category(c) == "Cc" and c not in "\t\n\r" for c in draft.message)
    assert draft.policy_id and draft.policy_version
    assert draft.email is not None or not (draft.consent_contact or draft.consent_updates)
    assert all(isinstance(getattr(draft, name), bool) for name in CONSENTS)


@FUZZ
@given(st.dictionaries(names, json_values, max_size=10))
def test_parse_submission_json_never_raises(data: dict[str, Any]) -> None:
    result = parse_submission(data, is_json=True)
    if isinstance(result, ValidationFailed):
        assert result.status in (400, 422) and result.errors
    else:
        check_draft(result)


@FUZZ
@given(st.dictionaries(names, form_values, max_size=10), st.booleans())
def test_parse_submission_form_never_raises(data: dict[str, Any], complete: bool) -> None:
    if complete:
        data = {**submission("x"), **data}
    result = parse_submission(data, is_json=False)
    if isinstance(result, ValidationFailed):
        assert result.status in (400, 422) and result.errors
    else:
        check_draft(result)


@FUZZ
@given(st.binary(max_size=400) | st.builds(lambda t: t.encode("utf-8", "surrogatepass"), st.text(max_size=200)))
def test_decode_json_and_urlencoded_never_raise(body: bytes) -> None:
    for result in (decode_json(body), decode_urlencoded(body, max_fields=20)):
        assert isinstance(result, (dict, ValidationFailed))
        if isinstance(result, ValidationFailed):
            assert result.status in (400, 422)
