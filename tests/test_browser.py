"""End to end in headless Chromium against the real `policy-site serve`, the week after a policy changed.
The site's own checks (banner, history, axe, CSP) run against the site built by each generator (site_server).

One server and one browser for the module. Every visit records its requests and must stay on 127.0.0.1 and
leave no cookie (browser_support.visit). The checks themselves are proven able to fail in
tests/test_browser_support.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from browser_support import (
    ARTIFACTS, FIELDS, ShownReceipt, axe_violations, read_receipt, wait_for_receipt, banner_problems, error_problems, format_violations,
    browser, fill_form, server, settle, site_paths, site_server, submit_feedback, visit, watch_console, withdraw_shown,
)

from form_handler.web.pages import CONFIRMATION_SENTENCE, CONFIRMATION_WAITS
from scripts.demo_site import ACTIVE_CHANGE, ADDED_WORD, REMOVED_WORD, Server, ledger_export, manifest

pytestmark = pytest.mark.browser
__all__ = ["browser", "server", "site_server"]  # module fixtures, used by name


def _policy(site_dir: Path) -> dict[str, Any]:
    return next(p for p in manifest(site_dir)["policies"] if p["id"] == "privacy")


def _assert_export_matches(server: Server, shown: ShownReceipt, ticked: tuple[str, ...]) -> None:
    """The ledger's export holds exactly what the receipt showed, and the withdrawal that followed."""
    entries = [e for e in ledger_export(server.ledger) if e["receipt_id"] == shown.receipt_id]
    assert [e["kind"] for e in entries] == ["consent", "withdrawal"], f"entries for {shown.receipt_id}: {entries}"
    consent = entries[0]
    assert shown.policy_version == consent["policy_version"] == _policy(server.site_dir)["version"]
    assert shown.recorded_at == consent["recorded_at"]
    assert shown.consents == {name: consent[name] for name in FIELDS[2:]}
    assert shown.consents == {name: name in ticked for name in FIELDS[2:]}, "the receipt differs from the form"
    assert consent["withdrawn"] is True


def test_banner_visible_on_every_page_including_404(site_server: Server, browser: Any) -> None:
    server = site_server  # the site built by each generator
    paths = site_paths(server.site_dir)
    assert {"", "privacy/", "feedback/", "404.html"} <= set(paths), paths
    with visit(browser) as v:
        page = v.context.new_page()
        assert banner_problems(page, server.base_url, paths) == []
        page.goto(server.base_url)
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "home-with-banner.png"), full_page=True)


def test_banner_link_leads_to_change_history(site_server: Server, browser: Any) -> None:
    server = site_server  # the site built by each generator
    history = server.base_url + "privacy/changes/"
    with visit(browser) as v:
        page = v.context.new_page()
        page.goto(server.base_url + "feedback/")
        links = page.locator("[data-policy-banner] a")
        targets = [links.nth(i).evaluate("a => a.href") for i in range(links.count())]
        assert history in targets, f"no banner link leads to the change history {history}: {targets}"
        links.nth(targets.index(history)).click()
        page.wait_for_url(history)
        main = page.locator("main")
        assert ACTIVE_CHANGE[1] in main.inner_text()
        assert any(REMOVED_WORD in t for t in main.locator("del").all_inner_texts()), "no <del> with the removed word"
        assert any(ADDED_WORD in t for t in main.locator("ins").all_inner_texts()), "no <ins> with the added word"


def test_feedback_without_javascript_receipt_withdraw_and_export(server: Server, browser: Any) -> None:
    ticked = ("consent_contact", "consent_third_parties")
    with visit(browser, javascript=False) as v:
        page = v.context.new_page()
        page.goto(server.base_url + "feedback/")
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "feedback.png"), full_page=True)
        shown = submit_feedback(page, server.base_url, message="No JavaScript here.", email="nojs@example.org",
                                consents=ticked)
        assert not shown.url.startswith(server.base_url + "feedback/"), "no receipt page was shown"
        # Sharing waits for the address's owner; the receipt page says so in the words the inline receipt uses.
        assert CONFIRMATION_SENTENCE.format(waits=CONFIRMATION_WAITS[(False, True)]) in shown.text
        page.screenshot(path=str(ARTIFACTS / "receipt.png"), full_page=True)
        withdraw_shown(page)
    _assert_export_matches(server, shown, ticked)


def test_feedback_with_javascript_inline_receipt_withdraw_and_export(server: Server, browser: Any) -> None:
    ticked = ("consent_updates",)
    with visit(browser) as v:
        page = v.context.new_page()
        shown = submit_feedback(page, server.base_url, message="Sent with fetch.", email="js@example.org",
                                consents=ticked)
        assert shown.url == server.base_url + "feedback/", "the receipt should be shown in place"
        assert CONFIRMATION_SENTENCE.format(waits=CONFIRMATION_WAITS[(True, False)]) in shown.text
        withdraw_shown(page)
        assert page.url == server.base_url + "feedback/"
    _assert_export_matches(server, shown, ticked)


def _tab_to(page: Any, selector: str, limit: int = 80) -> None:
    for _ in range(limit):
        page.keyboard.press("Tab")
        if page.evaluate("s => document.activeElement && document.activeElement.matches(s)", selector):
            return
    raise AssertionError(f"Tab never reached {selector!r}")


def test_keyboard_only_refusal_is_announced_then_submission_succeeds(server: Server, browser: Any) -> None:
    submit = "[data-feedback-form] [type=submit]"
    with visit(browser) as v:
        page = v.context.new_page()
        page.goto(server.base_url + "feedback/")
        _tab_to(page, "[name=consent_updates]")  # ticked without an e-mail address, and no message: refused
        page.keyboard.press("Space")
        assert page.locator("[name=consent_updates]").is_checked()
        _tab_to(page, submit)
        page.keyboard.press("Enter")
        page.locator("[data-feedback-form] [name=consent_updates][aria-invalid=true]").wait_for()
        assert error_problems(page, ("message", "consent_updates")) == []
        page.keyboard.press("Shift+Tab")  # from the error summary back into the page, then forward to the fields
        _tab_to(page, "[name=message]")
        page.keyboard.type("Sent with the keyboard alone.")
        _tab_to(page, "[name=email]")
        page.keyboard.type("keys@example.org")
        _tab_to(page, submit)
        page.keyboard.press("Space")
        receipt = read_receipt(page, wait_for_receipt(page))
        assert receipt.consents["consent_updates"] is True
        assert page.evaluate("() => document.activeElement.id") == "feedback-receipt", "focus should move to it"


@pytest.mark.parametrize("which", ["home", "policy", "changes", "past version", "feedback", "receipt",
                                   "inline receipt"])
def test_axe_finds_no_violations(site_server: Server, browser: Any, which: str) -> None:
    server = site_server  # the site built by each generator
    policy = _policy(server.site_dir)
    past = [v["url"] for v in policy["versions"] if not v["current"]]
    urls = {"home": "", "policy": "privacy/", "changes": "privacy/changes/", "feedback": "feedback/",
            "inline receipt": "feedback/"}
    if which == "past version":
        assert past, f"the manifest lists no past version: {policy['versions']}"
        urls[which] = past[0]
    receipt_html = ""
    if which == "receipt":  # the page a plain form post answers with, captured without JavaScript
        with visit(browser, javascript=False) as v:
            page = v.context.new_page()
            submit_feedback(page, server.base_url, message="For the axe check.")
            urls[which], receipt_html = page.url[len(server.base_url):], page.content()
    url = server.base_url + urls[which]
    # bypass_csp: axe is injected as an inline script; axe needs JavaScript, so the receipt is replayed as captured.
    with visit(browser, bypass_csp=True) as v:
        page = v.context.new_page()
        if receipt_html:
            page.route(url, lambda r: r.fulfill(body=receipt_html, content_type="text/html; charset=utf-8"))
        if which == "inline receipt":
            submit_feedback(page, server.base_url, message="For the axe check, sent with fetch.")
        else:
            response = page.goto(url)
            assert response is not None and response.status == 200, f"{url}: HTTP {response and response.status}"
        violations = axe_violations(page)
        assert not violations, format_violations(url, violations)


@pytest.mark.parametrize("which", ["home", "policy", "changes", "past version", "feedback", "receipt",
                                   "inline receipt"])
def test_no_page_breaks_the_content_security_policy_or_logs_an_error(site_server: Server, browser: Any, which: str) -> None:
    server = site_server  # the site built by each generator
    past = [v["url"] for v in _policy(server.site_dir)["versions"] if not v["current"]]
    urls = {"home": "", "policy": "privacy/", "changes": "privacy/changes/", "past version": past[0] if past else "",
            "feedback": "feedback/"}
    with visit(browser) as v:
        page = v.context.new_page()
        problems = watch_console(page)
        if which == "receipt":  # the receipt page a plain form post answers with, here with JavaScript on
            page.goto(server.base_url + "feedback/")
            fill_form(page, "For the CSP check.", None, ())
            with page.expect_navigation():
                page.evaluate("() => document.querySelector('[data-feedback-form]').submit()")  # no submit event
            assert "Your feedback was recorded" in page.content(), page.content()[:500]
        elif which == "inline receipt":
            submit_feedback(page, server.base_url, message="For the CSP check, sent with fetch.")
            withdraw_shown(page)
        else:
            assert which != "past version" or past, "the manifest lists no past version"
            response = page.goto(server.base_url + urls[which])
            assert response is not None and response.status == 200, f"{which}: HTTP {response and response.status}"
        settle(page)
        assert problems == [], f"{which}: " + "\n".join(problems)

