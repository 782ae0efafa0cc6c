"""The service's own HTML pages (receipt, withdrawn, error), rendered with autoescaping.

Every value that came from a visitor or the ledger is escaped by Jinja2's autoescape; nothing is
marked safe. Pages load only the service's own stylesheet, and the Content-Security-Policy says so.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jinja2
from starlette.responses import HTMLResponse

from .manifest import PolicyEntry

API_ROOT = "/api"
STYLESHEET = Path(__file__).parent / "pages" / "pages.css"
_ENV = jinja2.Environment(
    loader=jinja2.FileSystemLoader(Path(__file__).parent / "pages"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    # The templates ship in the package; checking their mtimes on every render cost ~8% of a submission.
    auto_reload=False,
)
# No scripts at all; forms post only to this service; no framing, no referrer carrying the token.
HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def consent_sentences(receipt: Any, email: str | None) -> list[str]:
    """Each consent, given or not, in plain words."""
    where = f" at {email}" if email else ""
    return [
        f"You agreed that we may contact you{where} about your feedback."
        if receipt.consent_contact else "You did not ask us to contact you about your feedback.",
        f"You asked us to e-mail you{where} when our policies change."
        if receipt.consent_updates else "You did not ask for e-mails about changes to our policies.",
        "You agreed that we may pass your email address to third parties."
        if receipt.consent_third_parties
        else "You did not agree to your email address being passed to third parties, so we will not pass it on.",
    ]


def _page(template: str, status: int, site_url: str, **context: Any) -> HTMLResponse:
    context.setdefault("policy_url", None)
    context.setdefault("policy_title", None)
    html = _ENV.get_template(template).render(api_root=API_ROOT, site_url=site_url, **context)
    return HTMLResponse(html, status_code=status, headers=HEADERS)


def receipt_page(
    receipt: Any, *, email: str | None, message: str, policy: PolicyEntry | None, site_url: str
) -> HTMLResponse:
    """The HTML receipt: what was recorded, the withdraw token shown once, and a withdraw button."""
    title = policy.title if policy else receipt.policy_id
    policy_url = f"{site_url}/{policy.url}" if policy else f"{site_url}/"
    version_url = f"{site_url}/{policy.versions.get(receipt.policy_version, policy.url)}" if policy else policy_url
    return _page(
        "receipt.html", 200, site_url,
        title="Your feedback was recorded",
        description="Receipt for your feedback and the consent you gave.",
        receipt=receipt, email=email, message=message, consents=consent_sentences(receipt, email),
        policy_title=title, policy_url=policy_url, version_url=version_url,
        current=policy is None or receipt.policy_version == policy.current,
    )


def withdrawn_page(receipt_id: str, *, site_url: str) -> HTMLResponse:
    """Confirmation that a consent was withdrawn."""
    return _page(
        "withdrawn.html", 200, site_url,
        title="Your consent is withdrawn",
        description="Confirmation that your consent was withdrawn.",
        receipt_id=receipt_id,
    )


LEADS = {
    400: "We could not accept this request.",
    403: "This form was sent from a site that may not send it here.",
    404: "We could not find that receipt.",
    408: "What you sent took too long to arrive. Please try again.",
    413: "What you sent is too long.",
    415: "This request was not sent as a form.",
    422: "Some of what you sent needs correcting.",
    429: "You have sent several forms in a short time. Please wait a minute and try again.",
    503: "We cannot record anything at the moment, so nothing was stored. Please try again in a few minutes.",
}


def error_page(status: int, errors: dict[str, str], *, site_url: str, back_path: str = "") -> HTMLResponse:
    """A refusal as a page: the status, each offending field with its sentence, and a link back."""
    back_ok = back_path.startswith("/") and not back_path.startswith("//") and "\\" not in back_path
    return _page(
        "error.html", status, site_url,
        title="Not sent" if status != 404 else "Receipt not found",
        description="Why your request was not accepted, and how to correct it.",
        lead=LEADS.get(status, "We could not accept this request."),
        errors=errors, back_url=f"{site_url}{back_path}" if back_ok else None,
    )
