"""The Host check: the host names the service answers to, and the 400 for any other, before anything runs."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from faultkit import submission, write_manifest
from form_handler.web.app import create_app
from form_handler.web.hosts import LOOPBACK, allowed_hosts, host_name
from form_handler.ledger.sqlite.store import Ledger
from form_handler.settings import Settings
from service_client import service_client


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(ledger_path=tmp_path / "ledger.sqlite3", manifest=str(write_manifest(tmp_path / "m.json")),
                    allowed_origins=("https://friend.example",), rate_limit=0, base_url="https://policies.example")


def entries(settings: Settings) -> int:
    with Ledger(settings.ledger_path, readonly=True) as ledger:
        return ledger.head().count


@pytest.mark.parametrize("header,name", [
    ("policies.example", "policies.example"), ("Policies.Example:8443", "policies.example"),
    ("policies.example.", "policies.example"), ("[::1]:8000", "::1"), ("127.0.0.1:8000", "127.0.0.1"),
    ("evil.example@policies.example", None), ("policies.example/x", None), ("policies.example:x", None),
    ("[::1", None), ("", None), (None, None), ("policies.example, evil.example", None),
])
def test_host_name_reads_names_and_ipv6_and_refuses_anything_else(header: str | None, name: str | None) -> None:
    assert host_name(header) == name


def test_allowed_hosts_add_every_loopback_name_only_for_a_loopback_address() -> None:
    assert allowed_hosts(["https://policies.example", "https://Friend.Example:8443/"]) == {
        "policies.example", "friend.example"}
    assert allowed_hosts(["http://127.0.0.1:8000"]) == LOOPBACK
    assert allowed_hosts(["http://[::1]:8000", "https://friend.example"]) == LOOPBACK | {"friend.example"}


def test_wrong_host_is_refused_with_400_and_nothing_is_stored(settings: Settings) -> None:
    with service_client(settings) as client:
        r = client.post("/api/feedback", json=submission("x"), headers={"Host": "evil.example"})
        assert r.status_code == 400 and list(r.json()["errors"]) == ["host"]
        assert "Host header" in r.json()["errors"]["host"] and r.headers["cache-control"] == "no-store"
        assert client.get("/api/healthz", headers={"Host": "127.0.0.1:8000"}).status_code == 400
    assert entries(settings) == 0


def test_hosts_of_base_url_and_allowed_origins_are_accepted_on_any_port(settings: Settings) -> None:
    with service_client(settings) as client:
        for host in ("policies.example", "POLICIES.example:8443", "friend.example"):
            assert client.get("/api/healthz", headers={"Host": host}).status_code == 200, host


def test_loopback_base_url_accepts_every_loopback_name(settings: Settings) -> None:
    loopback = replace(settings, base_url="http://127.0.0.1:8000")
    with service_client(loopback) as client:
        for host in ("127.0.0.1:8000", "localhost:8001", "[::1]:8000"):
            assert client.get("/api/healthz", headers={"Host": host}).status_code == 200, host
        assert client.get("/api/healthz", headers={"Host": "policies.example"}).status_code == 400


def test_site_redirect_names_only_an_allowed_host(settings: Settings, tmp_path: Path) -> None:
    (tmp_path / "site" / "privacy").mkdir(parents=True)
    (tmp_path / "site" / "privacy" / "index.html").write_text("<!doctype html><title>Privacy</title>")
    app = create_app(settings, site_dir=tmp_path / "site")
    with service_client(settings, app, follow_redirects=False) as client:
        ok = client.get("/privacy", headers={"Host": "policies.example:8443"})
        evil = client.get("/privacy", headers={"Host": "evil.example"})
    assert ok.status_code == 307 and ok.headers["location"] == "https://policies.example:8443/privacy/"
    assert evil.status_code == 400 and "location" not in evil.headers
