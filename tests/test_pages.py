"""The service's own pages: the prerendered receipt is exactly what Jinja renders, escaping included."""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path

from form_handler.web import pages
from form_handler.ledger.sqlite.store import Receipt
from form_handler.consent.manifest import PolicyEntry

HOSTILE = "<script>alert('x')</script> & \"quoted\" {{ not a template }} \x00slot0\x00"
POLICY = PolicyEntry(id="privacy", title="Privacy <Policy> & \"more\"", url="privacy/", current="b" * 64,
                     versions={"a" * 64: "privacy/versions/2026-01-01/", "b" * 64: "privacy/"})


def _receipt(version: str, flags: tuple[bool, bool, bool], token: str) -> Receipt:
    return Receipt("r" * 32, "2026-11-25T10:00:00.000Z", "privacy", version, *flags, token, 7, "h" * 64)


def _jinja(receipt: Receipt, email: str | None, message: str, policy: PolicyEntry | None, site_url: str) -> str:
    # The plain Jinja rendering the prerendered page must reproduce byte for byte.
    title = policy.title if policy else receipt.policy_id
    policy_url = f"{site_url}/{policy.url}" if policy else f"{site_url}/"
    contact, updates, third_parties = pages.consent_sentences(receipt, email)
    return pages._ENV.get_template("receipt.html").render(
        api_root=pages.API_ROOT, site_url=site_url, title="Your feedback was recorded",
        description="Receipt for your feedback and the consent you gave.",
        current=policy is None or receipt.policy_version == policy.current,
        receipt_id=receipt.receipt_id, recorded_at=receipt.recorded_at, policy_version=receipt.policy_version,
        withdraw_token=receipt.withdraw_token, email=email, message=message, contact=contact, updates=updates,
        third_parties=third_parties, confirmation=pages.confirmation_sentence(receipt, email),
        policy_title=title, policy_url=policy_url,
        version_url=f"{site_url}/{policy.versions.get(receipt.policy_version, policy.url)}" if policy else policy_url,
    )


def test_prerendered_receipt_is_byte_for_byte_the_jinja_page() -> None:
    cases = itertools.product(
        [None, "", "ann@example.org", HOSTILE],  # email
        ["Plain message.", HOSTILE, "é\n<b>line two</b>"],  # message
        [POLICY, None],  # policy
        ["a" * 64, "b" * 64, HOSTILE],  # version: earlier, current, unknown
        [(False, False, False), (True, True, True), (True, False, True), (False, True, False)],
        ["https://example.org", "http://127.0.0.1:8000/a&b"],
    )
    for email, message, policy, version, flags, site_url in cases:
        receipt = _receipt(version, flags, token=HOSTILE if flags[0] else "t0k3n-_")
        fast = pages.receipt_page(receipt, email=email, message=message, policy=policy, site_url=site_url)
        assert bytes(fast.body).decode() == _jinja(receipt, email, message, policy, site_url)


def test_receipt_page_escapes_every_visitor_value() -> None:
    receipt = _receipt("a" * 64, (True, True, False), token="tok<en>")
    page = pages.receipt_page(receipt, email=HOSTILE, message=HOSTILE, policy=POLICY, site_url="https://example.org")
    html = bytes(page.body).decode()
    assert "<script>" not in html and "&lt;script&gt;" in html and "tok&lt;en&gt;" in html
    assert "\x00" in html  # the visitor's own NUL-slot text is printed as text, not treated as a placeholder
    assert html.count("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;") == 4  # message, email, two consents


def test_receipt_page_says_the_confirmation_mail_comes_first() -> None:
    for flags, waits in [((True, True, False), "do we e-mail you about changes to our policies."),
                         ((False, False, True), "do we share your address with third parties."),
                         ((False, True, True), "do we e-mail you about changes to our policies and share your address")]:
        html = bytes(pages.receipt_page(_receipt("a" * 64, flags, "t"), email="ann@example.org", message="m",
                                        policy=POLICY, site_url="https://example.org").body).decode()
        assert "We are sending a confirmation e-mail to the address you gave." in html and waits in html
    for flags, email in [((True, False, False), "ann@example.org"), ((False, True, True), None)]:
        html = bytes(pages.receipt_page(_receipt("a" * 64, flags, "t"), email=email, message="m",
                                        policy=POLICY, site_url="https://example.org").body).decode()
        assert "confirmation e-mail" not in html


def test_receipt_shown_in_place_uses_the_same_words_as_the_receipt_page() -> None:
    script = (Path(__file__).parents[1] / "site_src" / "assets" / "feedback.js").read_text(encoding="utf-8")
    assert f"var CONFIRMATION_SENTENCE = {json.dumps(pages.CONFIRMATION_SENTENCE)};" in script
    for key, flags in (("updates", (True, False)), ("third_parties", (False, True)), ("both", (True, True))):
        assert f"{json.dumps(key)}: {json.dumps(pages.CONFIRMATION_WAITS[flags])}" in script


def test_receipt_shown_in_place_says_the_receipt_pages_fixed_sentences() -> None:
    script = (Path(__file__).parents[1] / "site_src" / "assets" / "feedback.js").read_text(encoding="utf-8")
    template = (Path(pages.__file__).parent / "pages" / "receipt_content.html").read_text(encoding="utf-8")
    words = " ".join(re.sub(r"<[^>]+>|\{[{%].*?[%}]\}", " ", template).split())
    for name in ("TOKEN_WARNING", "TOKEN_WHY", "KEEP_FILE", "MANAGE_LATER"):
        sentence = json.loads(re.search(rf"var {name} = (\"[^\n]*\");", script).group(1))
        assert sentence.strip() in words, f"{name} differs from receipt_content.html"
    for heading in ("Your choices", "Your message", "Withdrawal token", "Keep your receipt"):
        assert f"<h2>{heading}</h2>" in template and f'el("h2", "{heading}")' in script
