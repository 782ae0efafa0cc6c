"""The service's own HTML pages (receipt, withdrawn, error), rendered with autoescaping.

Every value that came from a visitor or the ledger is escaped by Jinja2's autoescape (the receipt by
the same escaping, see Prerendered); nothing is marked safe. Pages load only the service's own stylesheet and
run no script; the Content-Security-Policy that says so is set on every response (form_handler/security_headers.py).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import escape
from starlette.responses import HTMLResponse

from form_handler.consent.manifest import PolicyEntry
from form_handler.consent.submissions import is_site_path
from form_handler.web import site_shell

API_ROOT = "/api"
STYLESHEET = Path(__file__).parent / "pages" / "pages.css"
_ENV = jinja2.Environment(
    loader=jinja2.FileSystemLoader(Path(__file__).parent / "pages"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    # The templates ship in the package; checking their mtimes on every render cost ~8% of a submission.
    auto_reload=False,
)
# The security headers (CSP, nosniff, Referrer-Policy) come from form_handler/security_headers.py.
HEADERS = {"Cache-Control": "no-store"}


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


# The receipt's word on the confirmation mail, and what waits for its link, by (updates, third parties). The
# receipt the site's JavaScript shows in place (site_src/assets/feedback.js) holds the same strings, word for
# word; tests/test_pages.py checks that. Said whether or not the per-address quota (form_handler/quota.py)
# held this mail back: a receipt must not tell the submitter whether an address was already named today.
CONFIRMATION_SENTENCE = (
    "We are sending a confirmation e-mail to the address you gave. Only after you follow the link in it do we "
    "{waits}. To spare the owner of an address unwanted mail, we send only a few such e-mails to one address a day."
)
CONFIRMATION_WAITS = {
    (True, False): "e-mail you about changes to our policies",
    (False, True): "share your address with third parties",
    (True, True): "e-mail you about changes to our policies and share your address with third parties",
}


def confirmation_sentence(receipt: Any, email: str | None) -> str:
    """What the confirmation mail is for and that nothing starts before its link is followed; "" when no mail."""
    waits = CONFIRMATION_WAITS.get((bool(receipt.consent_updates), bool(receipt.consent_third_parties)))
    return CONFIRMATION_SENTENCE.format(waits=waits) if email and waits else ""


def _page(template: str, status: int, site_url: str, **context: Any) -> HTMLResponse:
    """Render `template` (which extends base.html) into the site's shell when there is one, else as it is."""
    context.setdefault("policy_url", None)
    context.setdefault("policy_title", None)
    tmpl = _ENV.get_template(template)
    shell = site_shell.current()
    if shell is None:
        html = tmpl.render(api_root=API_ROOT, site_url=site_url, **context)
        return HTMLResponse(html, status_code=status, headers=HEADERS)
    # Only the page's own content block goes into the shell; base.html's header and footer are the site's.
    content = "".join(tmpl.blocks["content"](tmpl.new_context({"api_root": API_ROOT, "site_url": site_url, **context})))
    return in_shell(shell, str(context["title"]), content, status,
                    policy=(context["policy_title"], context["policy_url"]))


def in_shell(shell: site_shell.Shell, title: str, content: str, status: int = 200, *,
             policy: tuple[Any, Any] = (None, None)) -> HTMLResponse:
    """`content` (HTML rendered by Jinja) under an <h1> of `title`, in the site's shell, with the shell's CSP; with
    `policy` (title, url), a link to the policy at the end, where base.html's footer has it."""
    policy_title, policy_url = policy
    if policy_url:
        content += f'<p><a href="{_escape(policy_url)}">{_escape(policy_title or policy_url)}</a></p>\n'
    html = shell.fill(title, f'<h1>{_escape(title)}</h1>\n<div class="policy-service">\n{content}</div>')
    # The shell's policy (its own inline scripts by hash) replaces the app's script-free one for this page.
    return HTMLResponse(html, status_code=status, headers={**HEADERS, "Content-Security-Policy": shell.csp})


# Placeholders that survive autoescaping unchanged and never occur in a template or a setting.
_SLOT = "\x00slot{}\x00"
_SLOTS = re.compile("\x00slot(\\d+)\x00")


def _escape(value: Any) -> str:
    # markupsafe.escape's exact output (&#34; and &#39; for quotes), without building a Markup per value.
    if type(value) is not str:
        return escape(value)
    return (value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            .replace('"', "&#34;").replace("'", "&#39;"))


class Prerendered:
    """A template rendered by Jinja once per shape, with placeholders where the visitor's values go.

    Rendering the receipt with Jinja cost ~95 us of the event loop's time per submission; this costs
    ~23 us. Jinja renders each shape once (which values are empty, plus the `fixed` context), and a
    request only escapes its values exactly as autoescape would and joins them in. So the template may
    only print these values, never test them beyond being empty or pass them through a filter;
    tests/test_pages.py checks the output against Jinja's, byte for byte, for many inputs.
    """

    def __init__(self, template: str) -> None:
        self.template = template
        self._shapes: dict[tuple[Any, ...], tuple[list[str], list[str]]] = {}

    def render(self, fixed: dict[str, Any], values: dict[str, Any]) -> str:
        """Render with `fixed` (hashable values that shape the page) and `values` (printed, escaped)."""
        # None and "" are both empty for the template's {% if %}, but may print differently.
        key = (*fixed.items(), *((name, v if not v else True) for name, v in values.items()))
        shape = self._shapes.get(key)
        if shape is None:
            shape = self._shapes[key] = self._prerender(fixed, values)
        texts, order = shape
        parts = [texts[0]]
        for name, text in zip(order, texts[1:]):
            parts.append(_escape(values[name]))
            parts.append(text)
        return "".join(parts)

    def _prerender(self, fixed: dict[str, Any], values: dict[str, Any]) -> tuple[list[str], list[str]]:
        names = list(values)
        slots = {name: (_SLOT.format(i) if v else v) for i, (name, v) in enumerate(values.items())}
        html = _ENV.get_template(self.template).render(api_root=API_ROOT, **fixed, **slots)
        pieces = _SLOTS.split(html)  # text, slot number, text, slot number, ..., text
        return pieces[0::2], [names[int(i)] for i in pieces[1::2]]


_RECEIPT = Prerendered("receipt.html")
_RECEIPT_CONTENT = Prerendered("receipt_content.html")  # the same content, for the site's shell


def receipt_page(
    receipt: Any, *, email: str | None, message: str, policy: PolicyEntry | None, site_url: str
) -> HTMLResponse:
    """The HTML receipt: what was recorded, the withdraw token shown once, and a withdraw button."""
    title = policy.title if policy else receipt.policy_id
    policy_url = f"{site_url}/{policy.url}" if policy else f"{site_url}/"
    version_url = f"{site_url}/{policy.versions.get(receipt.policy_version, policy.url)}" if policy else policy_url
    contact, updates, third_parties = consent_sentences(receipt, email)
    confirmation = confirmation_sentence(receipt, email)
    page_title = "Your feedback was recorded"
    fixed = {"site_url": site_url, "title": page_title,
             "description": "Receipt for your feedback and the consent you gave.",
             "current": policy is None or receipt.policy_version == policy.current}
    values = {"receipt_id": receipt.receipt_id, "recorded_at": receipt.recorded_at,
              "policy_version": receipt.policy_version, "withdraw_token": receipt.withdraw_token, "email": email,
              "message": message, "contact": contact, "updates": updates, "third_parties": third_parties,
              "confirmation": confirmation, "policy_title": title, "policy_url": policy_url, "version_url": version_url}
    shell = site_shell.current()
    if shell is not None:
        return in_shell(shell, page_title, _RECEIPT_CONTENT.render(fixed, values), policy=(title, policy_url))
    return HTMLResponse(_RECEIPT.render(fixed, values), status_code=200, headers=HEADERS)


def receipt_words(receipt: Any, *, email: str | None, policy: PolicyEntry | None, site_url: str) -> dict[str, Any]:
    """What the receipt page says in words, for the receipt shown in place (site_src/assets/feedback.js) to say
    the same: the policy's title and its version's URL, each consent's sentence, where the receipt file and the
    manage page are."""
    title = policy.title if policy else receipt.policy_id
    version_url = (f"{site_url}/{policy.versions.get(receipt.policy_version, policy.url)}" if policy
                   else f"{site_url}/")
    return {"policy_title": title, "version_url": version_url,
            "current": policy is None or receipt.policy_version == policy.current,
            "consent_sentences": consent_sentences(receipt, email),
            "receipt_file_url": f"{API_ROOT}/receipt", "manage_url": f"{site_url}{API_ROOT}/manage"}


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


def error_page(status: int, errors: dict[str, str], *, site_url: str, back_path: str = "",
               lead: str | None = None) -> HTMLResponse:
    """A refusal as a page: the status, each offending field with its sentence, and a link back."""
    back_ok = is_site_path(back_path)
    return _page(
        "error.html", status, site_url,
        title="Not sent" if status != 404 else "Receipt not found",
        description="Why your request was not accepted, and how to correct it.",
        lead=lead or LEADS.get(status, "We could not accept this request."),
        errors=errors, back_url=f"{site_url}{back_path}" if back_ok else None,
    )
