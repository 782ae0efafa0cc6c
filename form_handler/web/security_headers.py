"""Security headers on every response: Content-Security-Policy, X-Content-Type-Options, Referrer-Policy.

Both policies forbid framing by other sites (frame-ancestors 'self': no clickjacking of the form or of
the e-mail link pages' buttons), plugins and <base> elsewhere, and let forms post only to this service,
its published address and the origins allowed to post. The service's own pages and the API run no
script at all. The built site needs inline scripts and styles: Material for MkDocs writes small inline
scripts into every page, which differ from page to page and from build to build, so hashes could not
follow a rebuilt site; the site is built from our own Markdown and echoes nothing a visitor sends.

Referrer-Policy is strict-origin-when-cross-origin, never no-referrer or same-origin: under those,
browsers send `Origin: null` on a form post to another origin (no-referrer: on every form post), and
the Origin check (form_handler/origins.py) refuses null.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from form_handler.web.origins import normalise

# Only plain http(s) origins go into the policy: "*" or "null" would open it, and Chromium logs an error
# for an IPv6 literal (not valid CSP syntax), which 'self' covers when the service is reached that way.
_SOURCE = re.compile(r"https?://[a-z0-9.-]+(:[0-9]+)?")


def content_security_policy(form_origins: Iterable[str], *, inline: bool) -> str:
    """The policy: the built site's (`inline` scripts and styles run) or the service's (no script at all)."""
    targets = ["'self'", *dict.fromkeys(o for o in map(normalise, form_origins) if _SOURCE.fullmatch(o))]
    scripts = "'self' 'unsafe-inline'" if inline else "'none'"
    styles = "'self' 'unsafe-inline'" if inline else "'self'"
    return (f"default-src 'self'; script-src {scripts}; style-src {styles}; img-src 'self' data:; "
            f"object-src 'none'; base-uri 'self'; form-action {' '.join(targets)}; frame-ancestors 'self'")


class SecurityHeadersMiddleware:
    """Adds the three headers to every HTTP response that does not carry them already.

    Responses keep their own, so the site mounted inside the app (wrapped with its own policy) keeps it.
    """

    def __init__(self, app: ASGIApp, *, csp: str) -> None:
        self.app = app
        self.headers = [
            (b"content-security-policy", csp.encode("latin-1")),
            (b"x-content-type-options", b"nosniff"),
            (b"referrer-policy", b"strict-origin-when-cross-origin"),
        ]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                headers += [(name, value) for name, value in self.headers if name not in present]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)
