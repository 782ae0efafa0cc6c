"""Generated inputs: hypothesis on the request parsing, and schemathesis against /api/openapi.json.

No input may cause a 5xx or an exception, and nothing refused may be stored. Example counts are bounded
(FUZZ_EXAMPLES) so the module runs in about a minute.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import tempfile
import unicodedata
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.testclient import TestClient

from faultkit import POLICY_ID, VERSION, record, submission, write_manifest
from form_handler.web.app import create_app
from form_handler.web.openapi import openapi_document
from form_handler.ledger.sqlite.store import ConsentDraft, Ledger
from form_handler.settings import Settings
from form_handler.consent.submissions import (
    CONSENTS, FIELDS, MESSAGE_MAX, ValidationFailed, decode_json, decode_urlencoded, parse_submission,
)
from service_client import service_client

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


def build(tmp: Path) -> tuple[Settings, Starlette, Path]:
    ledger = tmp / "ledger.sqlite3"
    built = Settings(ledger_path=ledger, manifest=str(write_manifest(tmp / "policy-versions.json")),
                     rate_limit=0, admin_token="fuzz-admin-token")
    return built, create_app(built), ledger


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, Path]]:
    built, app, ledger = build(tmp_path_factory.mktemp("bodies"))
    with service_client(built, app) as c:
        yield c, ledger


# Inputs tried, by test and status (for the README's figures).
TRIED: dict[str, Counter[int]] = {"schemathesis": Counter(), "hypothesis_bodies": Counter()}


@pytest.fixture(scope="module", autouse=True)
def _report_inputs() -> Iterator[None]:
    yield
    record("fuzz", {name: {"inputs": sum(c.values()), "statuses": dict(sorted(c.items()))}
                    for name, c in TRIED.items()})


def entries(ledger: Path) -> int:
    with Ledger(ledger, readonly=True) as led:
        return led.head().count


# schemathesis' lazy fixture loader breaks on pytest 9 (it sets Function._nodeid), so the schema is built
# at import from the same document the app serves (checked below), and the app itself is called through
# schemathesis' ASGI transport; the app's lifespan starts on the first call, not at import.
_TMP = Path(tempfile.mkdtemp(prefix="policy-site-fuzz-"))
atexit.register(shutil.rmtree, _TMP, ignore_errors=True)
SETTINGS, APP, LEDGER = build(_TMP)
schema = schemathesis.openapi.from_dict(openapi_document(Settings(admin_token="fuzz-admin-token")))
schema.app = APP


@schema.hook
def map_body(context: Any, body: Any) -> Any:
    """Name the published policy in about half the bodies, so valid submissions reach the ledger too."""
    if isinstance(body, dict) and isinstance(body.get("policy_version"), str) and len(body["policy_version"]) % 2:
        return {**body, "policy_id": POLICY_ID, "policy_version": VERSION}
    return body


def test_fuzzed_schema_is_the_served_one() -> None:
    with service_client(SETTINGS, APP) as c:
        assert c.get("/api/openapi.json").json() == dict(schema.raw_schema)


@schema.parametrize()
@settings(max_examples=max(10, EXAMPLES // 6), deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
def test_api_never_answers_5xx_and_stores_nothing_it_refuses(case: Any) -> None:
    before = entries(LEDGER)
    response = case.call(base_url=SETTINGS.base_url)  # the Host the service answers to (form_handler/hosts.py)
    TRIED["schemathesis"][response.status_code] += 1
    assert response.status_code < 500, (case.method, case.path, response.status_code, response.text[:300])
    if response.status_code >= 400:
        assert entries(LEDGER) == before, f"{case.method} {case.path} refused with {response.status_code} but stored"


content_types = st.sampled_from(["application/json", "application/x-www-form-urlencoded",
                                 "multipart/form-data; boundary=xyz", "text/plain", "application/json; charset=latin-1", ""])
any_body = st.tuples(content_types, st.binary(max_size=600) | st.builds(
    lambda d: "&".join(f"{k}={v}" for k, v in d.items()).encode("utf-8", "surrogatepass"),
    st.dictionaries(names, st.text(max_size=30), max_size=8)))
# Near misses: a valid submission with a few fields added or replaced, as JSON or as a form.
near_json = st.builds(lambda m, extra: ("application/json", json.dumps({**submission(m), **extra}).encode()),
                      st.text(min_size=1, max_size=40), st.dictionaries(names, json_values, max_size=2))
near_form = st.builds(lambda m, extra: ("application/x-www-form-urlencoded",
                                        urlencode({**submission(m), **extra}).encode()),
                      st.text(min_size=1, max_size=40), st.dictionaries(names, st.text(max_size=20), max_size=2))


@settings(FUZZ, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(any_body | near_json | near_form)
def test_feedback_with_any_body_never_answers_5xx(client: tuple[TestClient, Path], sent: tuple[str, bytes]) -> None:
    c, ledger = client
    content_type, body = sent
    before = entries(ledger)
    r = c.post("/api/feedback", content=body, headers={"content-type": content_type})
    TRIED["hypothesis_bodies"][r.status_code] += 1
    assert r.status_code < 500, r.text[:300]
    assert entries(ledger) == before + (1 if r.status_code < 400 else 0)
