"""The service in-process (TestClient, real apsw ledger in tmp_path): routes, refusals, pages, headers."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import apsw
import pytest
from starlette.routing import Route
from starlette.testclient import TestClient

from form_handler.ledger import export
from form_handler.web.app import create_app
from form_handler.ledger.sqlite.store import Ledger
from form_handler.web.openapi import openapi_document
from form_handler.settings import Settings
from form_handler.ledger.sqlite.writer import GroupCommitWriter
from service_client import service_client

VERSION, OLD = "5" * 64, "4" * 64
FORM = {"message": "Hello there", "policy_id": "privacy", "policy_version": VERSION, "page": "/feedback/"}
JSON_HEADERS = {"Accept": "application/json"}


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    manifest = tmp_path / "policy-versions.json"
    manifest.write_text(json.dumps({"policies": [{
        "id": "privacy", "title": "Privacy Policy", "url": "privacy/", "version": VERSION, "changes": [],
        "versions": [{"version": OLD, "effective": "2026-01-01", "url": "privacy/versions/2026-01-01/"}],
    }]}), encoding="utf-8")
    return Settings(ledger_path=tmp_path / "ledger.sqlite3", manifest=str(manifest), admin_token="s3cret",
                    allowed_origins=("https://friend.example",), rate_limit=0, max_body=4096,
                    base_url="https://policies.example")


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with service_client(settings) as c:
        yield c


def entries(settings: Settings) -> int:
    with Ledger(settings.ledger_path, readonly=True) as ledger:
        return ledger.head().count


def submit(client: TestClient, **changes: Any) -> Any:
    return client.post("/api/feedback", json={**FORM, **changes})


def test_json_submission_gets_201_receipt_that_appears_in_export_and_verifies(client: TestClient, settings: Settings) -> None:
    r = submit(client, email="ann@example.org", consent_contact=True)
    assert r.status_code == 201 and r.headers["cache-control"] == "no-store"
    receipt = r.json()
    assert receipt["consent_contact"] is True and receipt["consent_updates"] is False
    assert len(receipt["withdraw_token"]) >= 32 and receipt["recorded_at"].endswith("Z")
    export = client.get("/api/export", headers={"Authorization": "Bearer s3cret"})
    rows = [json.loads(line) for line in export.text.splitlines()]
    assert [row["receipt_id"] for row in rows] == [receipt["receipt_id"]] and rows[0]["email"] == "ann@example.org"
    with Ledger(settings.ledger_path, readonly=True) as ledger:
        assert ledger.verify().ok and ledger.head().count == 1


def test_page_is_kept_as_a_path_and_erased_with_the_address(client: TestClient, settings: Settings) -> None:
    # A path can name a person (/feedback/<name>/<IBAN>/): it is personal data, outside the chain.
    page = "/feedback/b-example/DE89370400440532013000/"
    receipt = submit(client, email="b@example.org", consent_contact=True, page=page + "?email=b@example.org#b").json()
    export = client.get("/api/export", headers={"Authorization": "Bearer s3cret"})
    assert json.loads(export.text.splitlines()[0])["page"] == page  # the query string was never stored
    with Ledger(settings.ledger_path) as ledger:
        ledger.erase(receipt["receipt_id"])
        canonical = b"".join(row[0] for row in ledger.connection.execute("SELECT canonical FROM entries"))
    export = client.get("/api/export", headers={"Authorization": "Bearer s3cret"})
    assert export.status_code == 200 and json.loads(export.text.splitlines()[0])["page"] is None
    for trace in ("b@example.org", "b-example", "DE89370400440532013000"):
        assert trace not in export.text and trace.encode() not in canonical


@pytest.mark.parametrize("encoding", ["urlencoded", "multipart"])
def test_form_post_gets_html_receipt_saying_what_was_recorded(client: TestClient, encoding: str) -> None:
    fields = {**FORM, "email": "bob@example.org", "consent_updates": "on", "message": "<b>hi</b> & bye"}
    if encoding == "urlencoded":
        r = client.post("/api/feedback", data=fields)
    else:
        r = client.post("/api/feedback", data=fields, files={"_": (None, "")})  # forces multipart, no file
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    html = r.text
    assert '<html lang="en">' in html and "<main" in html and 'name="description"' in html
    assert "&lt;b&gt;hi&lt;/b&gt; &amp; bye" in html and "<b>hi</b>" not in html
    assert "You asked us to e-mail you at bob@example.org when our policies change." in html
    assert "You did not ask us to contact you" in html and "will not pass it on" in html
    assert "shown only this once" in html and 'action="/api/withdraw"' in html
    assert VERSION in html and "https://policies.example/privacy/" in html
    assert r.headers["cache-control"] == "no-store" and "script-src 'none'" in r.headers["content-security-policy"]


def test_past_version_listed_in_manifest_is_accepted(client: TestClient) -> None:
    r = client.post("/api/feedback", data={**FORM, "policy_version": OLD})
    assert r.status_code == 200 and "an earlier version" in r.text
    assert "https://policies.example/privacy/versions/2026-01-01/" in r.text


REFUSALS: list[tuple[str, dict[str, Any], int, str]] = [
    ("empty message", {"json": {**FORM, "message": "  "}}, 422, "message"),
    ("unknown version", {"json": {**FORM, "policy_version": "9" * 64}}, 422, "policy_version"),
    ("unknown policy", {"json": {**FORM, "policy_id": "cookies"}}, 422, "policy_id"),
    ("bad email", {"json": {**FORM, "email": "x@y"}}, 422, "email"),
    ("contact without email", {"json": {**FORM, "consent_contact": True}}, 422, "consent_contact"),
    ("unknown json field", {"json": {**FORM, "colour": "red"}}, 422, "colour"),
    ("invalid utf-8 form", {"content": b"message=%FF&policy_id=privacy&policy_version=" + VERSION.encode(),
                            "headers": {"Content-Type": "application/x-www-form-urlencoded"}}, 422, "message"),
    ("nul in json", {"json": {**FORM, "message": "a\u0000b"}}, 422, "message"),
    ("honeypot", {"json": {**FORM, "website": "http://spam.example"}}, 400, "website"),
    ("broken json", {"content": b"{", "headers": {"Content-Type": "application/json"}}, 400, "body"),
    ("a file", {"data": FORM, "files": {"upload": ("a.txt", b"x")}}, 400, "body"),
    ("too many fields", {"content": "&".join(f"f{i}=1" for i in range(40)).encode(),
                         "headers": {"Content-Type": "application/x-www-form-urlencoded"}}, 400, "body"),
    ("too large", {"json": {**FORM, "message": "x" * 5000}}, 413, "body"),
    ("too large, chunked", {"content": iter([b"x" * 1000] * 5), "headers": {"Content-Type": "application/json"}},
     413, "body"),
    ("text/plain", {"content": b"hello", "headers": {"Content-Type": "text/plain"}}, 415, "content-type"),
    ("no content type", {"content": b"hello"}, 415, "content-type"),
    ("latin-1 form", {"data": FORM, "headers": {"Content-Type": "application/x-www-form-urlencoded; charset=latin-1"}},
     415, "content-type"),
    ("foreign origin", {"json": FORM, "headers": {"Origin": "https://evil.example"}}, 403, "origin"),
    ("null origin", {"json": FORM, "headers": {"Origin": "null"}}, 403, "origin"),
]


@pytest.mark.parametrize("request_kwargs,status,field", [r[1:] for r in REFUSALS], ids=[r[0] for r in REFUSALS])
def test_every_refusal_has_its_status_names_the_field_and_stores_nothing(
    client: TestClient, settings: Settings, request_kwargs: dict[str, Any], status: int, field: str
) -> None:
    headers = {**JSON_HEADERS, **request_kwargs.pop("headers", {})}
    r = client.post("/api/feedback", headers=headers, **request_kwargs)
    assert r.status_code == status, r.text
    assert field in r.json()["errors"]
    assert entries(settings) == 0


def test_refused_form_post_gets_an_html_page_with_the_errors_and_a_link_back(client: TestClient) -> None:
    r = client.post("/api/feedback", data={**FORM, "message": "", "email": "nope"})
    assert r.status_code == 422 and r.headers["content-type"].startswith("text/html")
    assert "<strong>message</strong>" in r.text and "<strong>email</strong>" in r.text
    assert 'href="https://policies.example/feedback/"' in r.text and "Nothing was stored" in r.text


def test_oversized_form_post_gets_an_html_413(client: TestClient) -> None:
    r = client.post("/api/feedback", data={**FORM, "message": "x" * 5000})
    assert r.status_code == 413 and "too long" in r.text


def test_rate_limit_answers_429_with_retry_after(settings: Settings) -> None:
    with service_client(replace(settings, rate_limit=2)) as client:
        assert [submit(client).status_code for _ in range(3)] == [201, 201, 429]
        r = submit(client)
        assert r.status_code == 429 and 0 < int(r.headers["retry-after"]) <= 60
    assert entries(settings) == 2


def test_missing_manifest_answers_503_not_500(settings: Settings) -> None:
    with service_client(replace(settings, manifest=str(settings.ledger_path.parent / "nope.json"))) as client:
        r = submit(client)
        assert r.status_code == 503 and "policy_version" in r.json()["errors"]
        assert client.get("/api/healthz").json()["manifest"] == "unavailable"
    assert entries(settings) == 0


def test_full_ledger_disk_answers_503_and_recovers_by_itself(settings: Settings) -> None:
    writer = GroupCommitWriter(settings.ledger_path)
    writer.start()
    try:
        with service_client(settings, create_app(settings, writer=writer)) as client:
            assert submit(client).status_code == 201
            # A real SQLITE_FULL: the writer's connection may not grow the file by another page.
            conn = writer.ledger.connection
            conn.execute(f"PRAGMA max_page_count = {conn.execute('PRAGMA page_count').fetchall()[0][0]}")
            statuses = [submit(client, message="x" * 3000) for _ in range(4)]  # the first may still fit a page
            r = next(r for r in statuses if r.status_code != 201)
            assert r.status_code == 503 and "retry-after" in r.headers and "ledger" in r.json()["errors"]
            acknowledged = 1 + sum(r.status_code == 201 for r in statuses)
            assert entries(settings) == acknowledged
            # Space returns. The writer may have dropped that connection after SQLITE_FULL (a new one has no limit).
            writer.ledger.connection.execute("PRAGMA max_page_count = 1073741823")
            assert submit(client, message="x" * 3000).status_code == 201
    finally:
        writer.close()
    assert entries(settings) == acknowledged + 1


def test_allowed_and_own_origins_may_post(client: TestClient) -> None:
    for origin in ("https://friend.example", "https://policies.example", "HTTPS://Friend.Example:443"):
        assert client.post("/api/feedback", json=FORM, headers={"Origin": origin}).status_code == 201
    # Its own origin, reached on another port than base_url's (the Host check compares names, not ports).
    own = "http://policies.example:8080"
    assert client.post(own + "/api/feedback", json=FORM, headers={"Origin": own}).status_code == 201


def test_cors_headers_only_for_allowed_origins(client: TestClient) -> None:
    ok = client.options("/api/feedback", headers={"Origin": "https://friend.example",
                                                  "Access-Control-Request-Method": "POST",
                                                  "Access-Control-Request-Headers": "content-type"})
    assert ok.headers["access-control-allow-origin"] == "https://friend.example"
    bad = client.post("/api/feedback", json=FORM, headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in bad.headers
    assert "access-control-allow-origin" not in client.get("/api/stats", headers={"Origin": "https://evil.example"}).headers


def test_no_cors_answers_without_allowed_origins(settings: Settings) -> None:
    # With no other origin allowed, the app has no CORS layer: a preflight is refused like any OPTIONS, and a
    # post from elsewhere is refused by the Origin check, neither with CORS headers.
    with service_client(replace(settings, allowed_origins=())) as client:
        preflight = client.options("/api/feedback", headers={"Origin": "https://friend.example",
                                                             "Access-Control-Request-Method": "POST"})
        assert preflight.status_code == 405
        post = client.post("/api/feedback", json=FORM, headers={"Origin": "https://friend.example"})
        assert post.status_code == 403
        for r in (preflight, post):
            assert not [h for h in r.headers if h.lower().startswith("access-control-")]
        assert client.post("/api/feedback", json=FORM).status_code == 201


def test_withdraw_flow_json_and_html(client: TestClient, settings: Settings) -> None:
    first, second = submit(client).json(), submit(client).json()
    r = client.post("/api/withdraw", json={"receipt_id": first["receipt_id"], "withdraw_token": first["withdraw_token"]})
    assert r.status_code == 200 and r.json()["withdrawn"] is True and r.json()["withdrawn_at"].endswith("Z")
    page = client.post("/api/withdraw", data={"receipt_id": second["receipt_id"],
                                              "withdraw_token": second["withdraw_token"]})
    assert page.status_code == 200 and "is withdrawn" in page.text and second["receipt_id"] in page.text
    assert entries(settings) == 4


def test_withdraw_refusals_store_nothing(client: TestClient, settings: Settings) -> None:
    receipt = submit(client).json()
    wrong = client.post("/api/withdraw", json={"receipt_id": receipt["receipt_id"], "withdraw_token": "nope"})
    unknown = client.post("/api/withdraw", json={"receipt_id": "0" * 32, "withdraw_token": "nope"})
    missing = client.post("/api/withdraw", json={"receipt_id": receipt["receipt_id"]})
    assert (wrong.status_code, unknown.status_code, missing.status_code) == (403, 404, 422)
    assert "withdraw_token" in wrong.json()["errors"] and "withdraw_token" in missing.json()["errors"]
    html = client.post("/api/withdraw", data={"receipt_id": "0" * 32, "withdraw_token": "x"})
    assert html.status_code == 404 and "Receipt not found" in html.text
    assert entries(settings) == 1


def test_stats_hide_counts_below_five(client: TestClient) -> None:
    for _ in range(4):
        submit(client, email="a@example.org", consent_contact=True)
    few = client.get("/api/stats").json()
    assert few["submissions"] is None and few["per_day"] == {} and few["per_consent"]["contact"] is None
    submit(client, email="a@example.org", consent_contact=True)
    many = client.get("/api/stats").json()
    assert many["submissions"] == 5 and many["per_consent"]["contact"] == 5
    assert many["per_policy_version"] == {"privacy": {VERSION: 5}}


def test_export_needs_the_admin_token(client: TestClient) -> None:
    assert client.get("/api/export").status_code == 401
    r = client.get("/api/export", headers={"Authorization": "Bearer wrong"})
    assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
    assert client.get("/api/export?format=xml", headers={"Authorization": "Bearer s3cret"}).status_code == 422


def test_export_after_ten_wrong_tokens_answers_429_even_to_the_right_token(client: TestClient) -> None:
    # The fixture's rate_limit is 0: this limit is on whatever POLICY_SITE_RATE_LIMIT says.
    wrong = [client.get("/api/export", headers={"Authorization": f"Bearer guess{i}"}) for i in range(10)]
    assert [r.status_code for r in wrong] == [401] * 10
    for headers in ({"Authorization": "Bearer guess"}, {"Authorization": "Bearer s3cret"}, {}):
        r = client.get("/api/export", headers=headers)
        assert r.status_code == 429 and 0 < int(r.headers["retry-after"]) <= 60 and "authorization" in r.json()["errors"]


def test_export_with_the_right_token_does_not_count_against_the_limit(client: TestClient) -> None:
    for _ in range(9):
        assert client.get("/api/export").status_code == 401
    right = [client.get("/api/export", headers={"Authorization": "Bearer s3cret"}) for _ in range(20)]
    assert [r.status_code for r in right] == [200] * 20
    assert client.get("/api/export").status_code == 401  # the tenth failure
    assert client.get("/api/export", headers={"Authorization": "Bearer s3cret"}).status_code == 429


def test_export_csv_is_safe_against_formulas(client: TestClient, settings: Settings) -> None:
    receipt = submit(client, message="=HYPERLINK(\"http://evil\")", email="c@example.org", consent_third_parties=True)
    with Ledger(settings.ledger_path) as ledger, ledger.transaction() as txn:  # its owner followed the mailed link
        txn.append("confirmation", receipt.json()["receipt_id"], policy_id="privacy")
    r = client.get("/api/export?format=csv", headers={"Authorization": "Bearer s3cret"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    assert "'=HYPERLINK" in r.text
    third = client.get("/api/export?third_party=1", headers={"Authorization": "Bearer s3cret"})
    assert [json.loads(line) for line in third.text.splitlines()] == [{"email": "c@example.org"}]


def test_export_of_an_unreadable_ledger_answers_503_not_a_cut_off_200(client: TestClient, settings: Settings) -> None:
    submit(client)
    for path in settings.ledger_path.parent.glob(settings.ledger_path.name + "*"):
        path.rename(path.with_name("moved-" + path.name))  # the reader's own connection stays open; a new one fails
    r = client.get("/api/export", headers={"Authorization": "Bearer s3cret"})
    assert r.status_code == 503 and "ledger" in r.json()["errors"] and r.headers["retry-after"] == "5"


def test_export_rows_close_their_read_connection_when_abandoned(client: TestClient, settings: Settings) -> None:
    submit(client), submit(client)
    with Ledger(settings.ledger_path, readonly=True) as ledger:
        before = len(apsw.connections())
        rows = export.ExportRows(ledger.export())
        rows.prefetch()
        assert next(rows)["kind"] == "consent" and len(apsw.connections()) == before + 1
        rows.close()  # as the response does when its client goes away mid-stream
        assert len(apsw.connections()) == before and list(rows) == []


def test_export_is_off_without_an_admin_token(settings: Settings) -> None:
    with service_client(replace(settings, admin_token=None)) as client:
        assert client.get("/api/export", headers={"Authorization": "Bearer "}).status_code == 404


def test_healthz_and_ledger_head(client: TestClient) -> None:
    assert client.get("/api/healthz").json() == {"status": "ok", "ledger": "ok", "manifest": "ok", "entries": 0}
    receipt = submit(client).json()
    head = client.get("/api/ledger/head").json()
    assert head["count"] == 1 and head["head"] == receipt["entry_hash"] and set(head) == {"count", "head", "at"}


def test_no_response_sets_a_cookie(client: TestClient) -> None:
    receipt = submit(client).json()
    responses = [
        submit(client), client.post("/api/feedback", data=FORM), client.post("/api/feedback", data={}),
        client.post("/api/withdraw", json={"receipt_id": receipt["receipt_id"], "withdraw_token": "x"}),
        *(client.get(path) for path in ("/api/stats", "/api/export", "/api/healthz", "/api/ledger/head",
                                        "/api/openapi.json", "/api/pages.css", "/api/nothing")),
    ]
    assert all("set-cookie" not in r.headers for r in responses)


def test_unknown_route_and_method_are_json_errors(client: TestClient) -> None:
    assert client.get("/api/nothing").status_code == 404
    assert client.get("/api/feedback").status_code == 405


def test_openapi_describes_every_route_and_nothing_else(client: TestClient, settings: Settings) -> None:
    doc = client.get("/api/openapi.json").json()
    assert doc["openapi"].startswith("3.1")
    documented = {(path, method.upper()) for path, ops in doc["paths"].items() for method in ops}
    app = create_app(settings)
    served = {(r.path, m) for r in app.routes if isinstance(r, Route) for m in (r.methods or ()) if m != "HEAD"}
    assert documented == served


def test_openapi_lists_every_status_the_feedback_route_sends() -> None:
    responses = openapi_document(Settings())["paths"]["/api/feedback"]["post"]["responses"]
    assert set(responses) == {"200", "201", "400", "403", "408", "413", "415", "422", "429", "503"}
    statuses = {r[2] for r in REFUSALS} | {429, 503}
    assert {str(s) for s in statuses} <= set(responses)
