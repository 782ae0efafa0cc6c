"""The Host check: a request must name a host this service is published at, or it is refused with 400.

Anything built from the Host header would otherwise follow whatever a client put there: the "own origin"
the Origin check allows, the Location of StaticFiles' redirect from /privacy to /privacy/, and any cache in
front keyed on the URL. The allowed names are those of POLICY_SITE_BASE_URL and POLICY_SITE_ALLOWED_ORIGINS;
the port is not compared (a proxy in front may listen on another port than the service).

Starlette's TrustedHostMiddleware makes the same check, but it answers with a plain-text "Invalid host
header", where every refusal of this service is JSON naming the field and the fix; the check itself is a
few lines, so it is written here rather than wrapped.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

# A loopback address is reached under any of these names, and none of them can be claimed by another host.
LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})
# A DNS name or IPv4 address, or an IPv6 literal in brackets; then an optional port. Nothing else (no "@").
_HOST = re.compile(r"(?:(?P<name>[A-Za-z0-9.-]+)|\[(?P<ipv6>[0-9A-Fa-f:.]+)\])(?::[0-9]{1,5})?")
REFUSED = ("The Host header does not name this service; use the address it is published at, "
           "and have any proxy in front pass the Host header on unchanged.")


def allowed_hosts(urls: Iterable[str]) -> frozenset[str]:
    """The host names of these URLs, in lower case; every loopback name once one of them is loopback."""
    hosts = {name for url in urls if (name := urlsplit(url.strip()).hostname)}
    return frozenset(hosts | LOOPBACK) if hosts & LOOPBACK else frozenset(hosts)


def host_name(header: str | None) -> str | None:
    """The host name in a Host header, lower case ("[::1]:8000" -> "::1"), or None when it is not one."""
    match = _HOST.fullmatch(header or "")
    if match is None:
        return None
    # A fully qualified name may end with a dot; it names the same host.
    return (match["ipv6"] or match["name"]).lower().removesuffix(".")


class HostCheckMiddleware:
    """400 `{"errors": {"host": ...}}` for a request whose Host header is not one of `hosts`."""

    def __init__(self, app: ASGIApp, *, hosts: Iterable[str]) -> None:
        self.app = app
        self.hosts = frozenset(h.lower() for h in hosts)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and host_name(Headers(scope=scope).get("host")) not in self.hosts:
            response = JSONResponse({"errors": {"host": REFUSED}}, status_code=400, headers={"Cache-Control": "no-store"})
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)
