"""Security headers on every kind of response of create_app's app (TestClient, real ledger in tmp_path):
API JSON, the service's pages, refusals from every layer, a 500, and the static site beside the API."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import anyio
import httpx
import pytest
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.testclient import TestClient
from starlette.types import Message, Scope

from faultkit import submission, write_manifest
from form_handler.web.app import create_app
from form_handler.web.security_headers import content_security_policy
from form_handler.settings import Settings
from service_client import service_client

FORM_ACTION = "form-action 'self' https://policies.example https://friend.example;"
# Each page of the tiny site runs an inline script, as Material's pages do.
PAGE = "<!doctype html><title>{}</title><script>document.title += '.'</script><p>{}</p>"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(ledger_path=tmp_path / "ledger.sqlite3", manifest=str(write_manifest(tmp_path / "m.json")),
                    admin_token="s3cret", allowed_origins=("https://friend.example",), rate_limit=0, max_body=2048,
                    base_url="https://policies.example")


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with service_client(settings) as c:
        yield c


@pytest.fixture
def site(tmp_path: Path) -> Path:
    site = tmp_path / "site"
    (site / "privacy").mkdir(parents=True)
    (site / "assets").mkdir()
    (site / "index.html").write_text(PAGE.format("Home", "home " * 200))  # long enough to be compressed
    (site / "privacy" / "index.html").write_text(PAGE.format("Privacy", "policy"))
    (site / "404.html").write_text(PAGE.format("Not found", "missing"))
    (site / "assets" / "site.css").write_text("p { margin: 0 }")
    return site


def assert_secure(r: httpx.Response, *, site: bool = False) -> None:
    """Each header once, with the service's policy (no script) or the site's (inline scripts run)."""
    where = f"{r.request.method} {r.request.url} -> {r.status_code}"
    policies = r.headers.get_list("content-security-policy")
    assert len(policies) == 1, f"{where}: Content-Security-Policy {policies}"
    csp = policies[0]
    for part in ("default-src 'self'", "object-src 'none'", "base-uri 'self'", FORM_ACTION, "frame-ancestors 'self'",
                 "script-src 'self' 'unsafe-inline'" if site else "script-src 'none'"):
        assert part in csp, f"{where}: {part!r} missing from {csp!r}"
    assert r.headers.get_list("x-content-type-options") == ["nosniff"], where
    assert r.headers.get_list("referrer-policy") == ["strict-origin-when-cross-origin"], where


def test_security_headers_on_api_json_and_the_service_pages(client: TestClient) -> None:
    receipt = client.post("/api/feedback", json=submission("json")).json()
    responses = [
        client.post("/api/feedback", json=submission("json")), client.post("/api/feedback", data=submission("form")),
        client.post("/api/withdraw", data={"receipt_id": receipt["receipt_id"], "withdraw_token": receipt["withdraw_token"]}),
        client.get("/api/confirm?token=x.y"), client.get("/api/export", headers={"Authorization": "Bearer s3cret"}),
        *(client.get(path) for path in ("/api/healthz", "/api/stats", "/api/ledger/head", "/api/openapi.json",
                                        "/api/pages.css")),
    ]
    assert [r.status_code for r in responses] == [201, 200, 200, 400] + [200] * 6
    for r in responses:
        assert_secure(r)


def test_security_headers_on_refusals_of_every_layer(client: TestClient) -> None:
    big = {**submission("x" * 3000)}
    responses = [
        client.post("/api/feedback", json=big), client.post("/api/feedback", data=big),  # 413 JSON, 413 page
        client.post("/api/feedback", data={**submission("x"), "email": "nope"}),  # 422 page
        client.post("/api/feedback", content=b"hi", headers={"Content-Type": "text/plain"}),  # 415
        client.post("/api/feedback", json=submission("x"), headers={"Origin": "https://evil.example"}),  # 403
        client.get("/api/export"), client.get("/api/nothing"), client.get("/api/feedback"),  # 401, 404, 405
        client.options("/api/feedback", headers={"Origin": "https://friend.example",
                                                 "Access-Control-Request-Method": "POST"}),  # CORS preflight
        client.get("/api/healthz", headers={"Host": "evil.example"}),  # the Host check's 400
    ]
    assert [r.status_code for r in responses] == [413, 413, 422, 415, 403, 401, 404, 405, 200, 400]
    for r in responses:
        assert_secure(r)


def test_security_headers_on_429s(settings: Settings) -> None:
    with service_client(replace(settings, rate_limit=1)) as client:
        limited = [client.post("/api/feedback", json=submission("x")) for _ in range(2)]
        locked = [client.get("/api/export", headers={"Authorization": "Bearer wrong"}) for _ in range(11)]
    assert [r.status_code for r in limited] == [201, 429] and locked[-1].status_code == 429
    assert_secure(limited[1])
    assert_secure(locked[-1])


def test_security_headers_on_the_408_of_a_body_that_never_arrives(settings: Settings) -> None:
    app = create_app(settings)
    sent: list[Message] = []
    first: list[Message] = [{"type": "http.request", "body": b"{", "more_body": True}]

    async def receive() -> Message:
        if first:
            return first.pop()
        await anyio.sleep(3600)  # the rest never comes; the service's 10 s deadline ends it
        raise AssertionError("the body deadline did not end the request")

    async def send(message: Message) -> None:
        sent.append(message)

    with service_client(settings, app) as client:
        scope: Scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "https",
                 "path": "/api/feedback", "raw_path": b"/api/feedback", "query_string": b"", "root_path": "",
                 "headers": [(b"host", b"policies.example"), (b"content-type", b"application/json"),
                             (b"content-length", b"500")],
                 "client": ("127.0.0.1", 50000), "server": ("policies.example", 443), "state": client.app_state.copy()}
        assert client.portal is not None
        client.portal.call(app.__call__, scope, receive, send)
    start = sent[0]
    assert start["status"] == 408
    assert_secure(httpx.Response(408, headers=start["headers"], request=httpx.Request("POST", "https://policies.example")))


def test_security_headers_on_a_500(settings: Settings) -> None:
    app = create_app(settings)

    async def broken(request: Request) -> Response:
        raise RuntimeError("a bug")

    app.router.routes.append(Route("/api/broken", broken))
    with service_client(settings, app, raise_server_exceptions=False) as client:
        r = client.get("/api/broken")
    assert r.status_code == 500 and "nothing was stored" in r.json()["errors"]["request"]
    assert_secure(r)


def test_static_site_gets_the_site_policy_on_pages_assets_redirect_and_404(settings: Settings, site: Path) -> None:
    with service_client(settings, create_app(settings, site_dir=site), follow_redirects=False) as client:
        home, policy, asset = client.get("/"), client.get("/privacy/"), client.get("/assets/site.css")
        redirect, missing, missing_api = client.get("/privacy"), client.get("/no/such/page/"), client.get("/api/nothing")
        api = client.get("/api/healthz")
    assert (home.status_code, policy.status_code, asset.status_code, redirect.status_code) == (200, 200, 200, 307)
    assert home.headers["content-encoding"] == "gzip"
    assert missing.status_code == missing_api.status_code == 404 and "missing" in missing_api.text
    for r in (home, policy, asset, redirect, missing, missing_api):
        assert_secure(r, site=True)
    assert_secure(api)


def test_content_security_policy_puts_only_plain_origins_in_form_action() -> None:
    origins = ["https://policies.example/", "HTTPS://Friend.Example:443", "http://127.0.0.1:8000", "*", "null",
               "http://[::1]:8000", "https://policies.example"]
    csp = content_security_policy(origins, inline=False)
    assert "form-action 'self' https://policies.example https://friend.example http://127.0.0.1:8000;" in csp
    assert "script-src 'none'" in csp and "style-src 'self';" in csp
    assert "script-src 'self' 'unsafe-inline'" in content_security_policy([], inline=True)
