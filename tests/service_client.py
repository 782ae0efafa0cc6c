"""A TestClient for the service, addressed at its own base_url: the Host check (form_handler/hosts.py)
refuses TestClient's default host, "testserver", as it refuses any host the service is not published at.
"""

from __future__ import annotations

from typing import Any

from starlette.testclient import TestClient
from starlette.types import ASGIApp

from form_handler.app import create_app
from form_handler.settings import Settings


def service_client(settings: Settings, app: ASGIApp | None = None, **kwargs: Any) -> TestClient:
    """A TestClient for `app` (default: create_app(settings)) that sends requests to settings.base_url."""
    return TestClient(create_app(settings) if app is None else app, base_url=settings.base_url, **kwargs)
