"""A TestClient for the service, addressed at its own base_url: the Host check (form_handler/hosts.py)
refuses TestClient's default host, "testserver", as it refuses any host the service is not published at.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from starlette.testclient import TestClient
from starlette.types import ASGIApp

from form_handler.web.app import create_app
from form_handler.settings import Settings


def service_client(settings: Settings, app: ASGIApp | None = None, **kwargs: Any) -> TestClient:
    """A TestClient for `app` (default: create_app(settings)) that sends requests to settings.base_url."""
    return TestClient(create_app(settings) if app is None else app, base_url=settings.base_url, **kwargs)


# Two versions of one policy: V1 (2026-01-01) and the current V2, introduced by a material change.
V1, V2 = "1" * 64, "2" * 64


def mail_settings(folder: Path, smtp_port: int, **overrides: Any) -> Settings:
    """Settings for the e-mail tests: a ledger and a two-version manifest in `folder`, mail to `smtp_port`."""
    manifest = folder / "policy-versions.json"
    manifest.write_text(json.dumps({"policies": [{
        "id": "privacy", "title": "Privacy Policy", "url": "privacy/", "version": V2,
        "changes": [{"date": "2026-11-20", "effective": "2026-12-20", "summary": "Kept longer.", "material": True, "version": V2}],
        "versions": [{"version": V1, "effective": "2026-01-01", "url": "privacy/versions/2026-01-01/", "current": False},
                     {"version": V2, "effective": "2026-12-20", "url": "privacy/", "current": True}],
    }]}))
    base: dict[str, Any] = dict(ledger_path=folder / "ledger.sqlite3", manifest=str(manifest), rate_limit=0,
                                smtp_host="127.0.0.1", smtp_port=smtp_port, base_url="https://policies.example",
                                secret="s")
    return Settings(**(base | overrides))
