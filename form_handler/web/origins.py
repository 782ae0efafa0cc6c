"""Which Origin may post to the service: none at all, its own, settings.base_url, or an allowed one.

CORS middleware only decides which responses a browser may read; a simple cross-site POST still
reaches the app, so the handlers check the Origin themselves with this.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from starlette.requests import Request

from form_handler.settings import Settings

_DEFAULT_PORTS = {"http": 80, "https": 443}


def normalise(origin: str) -> str:
    """scheme://host[:port] in lower case, without a default port, path or trailing slash."""
    parts = urlsplit(origin.strip().lower())
    if not parts.scheme or not parts.hostname:
        return origin.strip().lower()  # e.g. "null": compared as it is, and never allowed
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    try:
        port = parts.port
    except ValueError:
        return origin.strip().lower()
    if port is None or port == _DEFAULT_PORTS.get(parts.scheme):
        return f"{parts.scheme}://{host}"
    return f"{parts.scheme}://{host}:{port}"


def origin_allowed(origin: str | None, request: Request, settings: Settings) -> bool:
    """True for a request without Origin, from the service's own origin, base_url or an allowed origin."""
    if origin is None:
        return True
    own = f"{request.url.scheme}://{request.headers.get('host', '')}"
    allowed = {normalise(own), normalise(settings.base_url), *(normalise(o) for o in settings.allowed_origins)}
    return normalise(origin) in allowed - {"null"}
