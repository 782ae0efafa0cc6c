"""Consent self-service end to end in headless Chromium against the real `policy-site serve`, JavaScript on and off.

Send feedback, keep the receipt file, come back in a new browser context with the receipt id and token, see the
receipt, stop one consent, then erase; the export and `ledger verify` then say exactly that. Every new page:
the site's header and the change banner, no axe violation, no CSP violation or console error.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from browser_support import (
    axe_violations, browser, demo_site, format_violations, settle, submit_feedback, visit, watch_console,
)

from form_handler.consent import keys, tokens
from form_handler.ledger.sqlite.store import Ledger
from scripts.demo_site import ACTIVE_CHANGE, Server, free_port, ledger_export, serve

pytestmark = pytest.mark.browser
__all__ = ["browser"]  # a module fixture, used by name
SECRET = "browser-selfservice-secret"
SCREENSHOTS = Path(__file__).resolve().parents[1] / "screenshots"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    env = {"POLICY_SITE_RATE_LIMIT": "0", "POLICY_SITE_SECRET": SECRET}
    try:
        with serve(demo_site(tmp_path_factory), tmp_path_factory.mktemp("serve"), free_port(), env) as s:
            yield s
    except RuntimeError as e:
        pytest.fail(str(e), pytrace=False)


def shot(page: Any, name: str, at: str = "") -> None:
    """A small screenshot for the README (screenshots/, outside docs/, which is published policy content), of the
    first screen, or scrolled to the element `at`."""
    SCREENSHOTS.mkdir(exist_ok=True)
    size = page.viewport_size
    page.set_viewport_size({"width": 960, "height": 640})
    if at:
        page.locator(at).first.evaluate("el => el.scrollIntoView({block: 'center'})")
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"))
    page.set_viewport_size(size)


def keep_receipt_file(page: Any, folder: Path) -> dict[str, Any]:
    """Press the receipt's download control; the JSON file the browser saved, parsed."""
    control = page.locator("[data-receipt-download]").first
    with page.expect_download() as download:
        control.click()
    path = folder / download.value.suggested_filename
    download.value.save_as(str(path))
    kept: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return kept


def open_manage(page: Any, base_url: str, receipt_id: str, token: str) -> None:
    """The manage page, filled in by hand as someone who kept the file would."""
    page.goto(base_url + "api/manage")
    form = page.locator("[data-manage-form]")
    form.locator("[name=receipt_id]").fill(receipt_id)
    form.locator("[name=withdraw_token]").fill(token)
    with page.expect_navigation():
        form.locator("[type=submit]").click()


def act(page: Any, button: str) -> str:
    """Press an action's button, then the confirming one; the sentence saying what was recorded."""
    with page.expect_navigation():
        page.get_by_role("button", name=button).click()
    assert page.locator("[data-confirm]").count() == 1, "no confirming click was asked for"
    with page.expect_navigation():
        page.locator("[data-confirm]").click()
    return str(page.locator("[data-recorded]").inner_text())


def site_look_problems(page: Any) -> list[str]:
    """The site's header and the active change's banner, as on every page of the site."""
    problems = []
    if page.locator("header.md-header").count() != 1:
        problems.append(f"{page.url}: not in the site's shell (no Material header)")
    banner = page.locator("[data-policy-banner]")
    if banner.count() == 0 or ACTIVE_CHANGE[1] not in banner.first.inner_text():
        problems.append(f"{page.url}: no change banner naming {ACTIVE_CHANGE[1]!r}")
    return problems


def come_back_stop_updates_and_erase(browser: Any, server: Server, kept: dict[str, Any], *, javascript: bool,
                                     shots: bool = False, contact: bool = False) -> None:
    with visit(browser, javascript=javascript) as v:
        page = v.context.new_page()
        open_manage(page, server.base_url, kept["receipt_id"], kept["withdraw_token"])
        assert site_look_problems(page) == []
        text = page.locator("main").inner_text()
        assert kept["receipt_id"] in text and kept["recorded_at"] in text and kept["policy"]["version"] in text
        assert kept["withdraw_token"] not in page.url
        if shots:
            shot(page, "manage-receipt", at="table.consents")
        if contact:  # one consent at a time: contact first, then the e-mails
            assert "consent to be contacted about your feedback" in act(page, "Withdraw my consent to be contacted")
            with page.expect_navigation():
                page.get_by_role("button", name="Show the receipt as it is now").click()
            assert "Withdraw my consent to be contacted" not in page.locator("main").inner_text()
        assert "no more e-mails about changes" in act(page, "Stop e-mails about changes")
        with page.expect_navigation():
            page.get_by_role("button", name="Show the receipt as it is now").click()
        if shots:
            with page.expect_navigation():
                page.get_by_role("button", name="Erase my e-mail address and message").click()
            shot(page, "confirm-erase")
            with page.expect_navigation():
                page.get_by_role("button", name="No, go back to the receipt").click()
        assert "We erased the e-mail address" in act(page, "Erase my e-mail address and message")


def assert_export_and_verify(server: Server, receipt_id: str, *, contact: bool = False) -> None:
    entries = [e for e in ledger_export(server.ledger) if e["receipt_id"] == receipt_id]
    if contact:  # the withdrawal of contact alone, before the one of the e-mails
        assert entries[1]["kind"] == "withdrawal" and entries[1]["consent_contact"] is False, entries
        assert entries[0]["contact_stopped"] and not entries[0]["withdrawn"]
        del entries[1]
    assert [e["kind"] for e in entries] == ["consent", "withdrawal", "erasure"], entries
    consent, withdrawal, erasure = entries
    assert withdrawal["consent_updates"] is False and withdrawal["details"] == {"via": "/api/manage"}
    assert erasure["details"] == {"via": "/api/manage"}
    assert (consent["email"], consent["message"], consent["page"], consent["erased"]) == (None, None, None, True)
    with Ledger(server.ledger, readonly=True) as led:
        assert led.verify().ok


def test_without_javascript_keep_come_back_stop_one_and_erase(server: Server, browser: Any, tmp_path: Path) -> None:
    with visit(browser, javascript=False) as v:
        page = v.context.new_page()
        shown = submit_feedback(page, server.base_url, message="Keep me.", email="keep@example.org",
                                consents=("consent_contact", "consent_updates"))
        assert site_look_problems(page) == []
        shot(page, "receipt", at="[data-receipt-download]")
        kept = keep_receipt_file(page, tmp_path)
    assert (kept["receipt_id"], kept["recorded_at"], kept["withdraw_token"]) == (
        shown.receipt_id, shown.recorded_at, shown.withdraw_token)
    assert kept["consents"] == {"consent_contact": True, "consent_updates": True, "consent_third_parties": False}
    assert kept["policy"]["version"] == shown.policy_version and kept["policy"]["version_url"].startswith("http")
    come_back_stop_updates_and_erase(browser, server, kept, javascript=False, shots=True, contact=True)
    assert_export_and_verify(server, kept["receipt_id"], contact=True)


def test_with_javascript_keep_come_back_stop_one_and_erase(server: Server, browser: Any, tmp_path: Path) -> None:
    with visit(browser) as v:  # the receipt file, from the receipt shown in place
        page = v.context.new_page()
        shown = submit_feedback(page, server.base_url, message="Keep me, with JavaScript.", email="js@example.org",
                                consents=("consent_updates",))
        assert shown.url == server.base_url + "feedback/", "the receipt should be shown in place"
        kept = keep_receipt_file(page, tmp_path)
    assert (kept["receipt_id"], kept["recorded_at"]) == (shown.receipt_id, shown.recorded_at)
    come_back_stop_updates_and_erase(browser, server, kept, javascript=True)
    assert_export_and_verify(server, kept["receipt_id"])


def test_wrong_token_is_one_sentence_and_stores_nothing(server: Server, browser: Any) -> None:
    with visit(browser, javascript=False) as v:
        page = v.context.new_page()
        shown = submit_feedback(page, server.base_url, message="Guess my token.")
        before = len(ledger_export(server.ledger))
        open_manage(page, server.base_url, shown.receipt_id, "not-the-token")
        assert page.get_by_role("alert").inner_text() == (
            "This withdraw token does not belong to that receipt; copy it from your receipt.")
        assert len(ledger_export(server.ledger)) == before


def _access_url(server: Server, receipt_id: str) -> str:
    token = tokens.sign(keys.from_secret(SECRET), "access", receipt_id, "", "", now=time.time())
    return f"{server.base_url}api/access?token={token}"


def _new_pages(page: Any, server: Server) -> dict[str, str]:
    """Visit each new page once (without JavaScript) and keep its HTML, to check it with axe and the console."""
    shown = submit_feedback(page, server.base_url, message="For the page checks.", email="pages@example.org",
                            consents=("consent_contact",))
    captured = {"receipt": page.content()}
    page.goto(server.base_url + "api/manage")
    captured["manage"] = page.content()
    open_manage(page, server.base_url, shown.receipt_id, shown.withdraw_token)
    captured["manage receipt"] = page.content()
    with page.expect_navigation():
        page.get_by_role("button", name="Withdraw every consent").click()
    captured["confirm"] = page.content()
    with page.expect_navigation():
        page.locator("[data-confirm]").click()
    captured["recorded"] = page.content()
    page.goto(_access_url(server, shown.receipt_id))
    captured["access list"] = page.content()
    page.goto(server.base_url + "api/manage")
    page.locator("[data-access-request-form] [name=email]").fill("pages@example.org")
    with page.expect_navigation():
        page.locator("[data-access-request-form] [type=submit]").click()
    captured["access sent"] = page.content()
    return captured


PAGES = ["receipt", "manage", "manage receipt", "confirm", "recorded", "access list", "access sent"]


@pytest.fixture(scope="module")
def new_pages(server: Server, browser: Any) -> dict[str, str]:
    with visit(browser, javascript=False) as v:
        return _new_pages(v.context.new_page(), server)


@pytest.mark.parametrize("which", PAGES)
def test_axe_finds_no_violations_on_the_new_pages(server: Server, browser: Any, new_pages: dict[str, str],
                                                   which: str) -> None:
    url = f"{server.base_url}api/selfservice-check/{which.replace(' ', '-')}"
    with visit(browser, bypass_csp=True) as v:
        page = v.context.new_page()
        page.route(url, lambda r: r.fulfill(body=new_pages[which], content_type="text/html; charset=utf-8"))
        page.goto(url)
        assert site_look_problems(page) == [], which
        violations = axe_violations(page)
        assert not violations, format_violations(which, violations)


def test_new_pages_with_javascript_break_no_csp_and_log_no_error(server: Server, browser: Any) -> None:
    with visit(browser) as v:
        page = v.context.new_page()
        problems = watch_console(page)
        shown = submit_feedback(page, server.base_url, message="For the CSP check.", email="csp@example.org")
        open_manage(page, server.base_url, shown.receipt_id, shown.withdraw_token)
        settle(page)
        with page.expect_navigation():
            page.get_by_role("button", name="Withdraw every consent").click()
        settle(page)
        page.goto(_access_url(server, shown.receipt_id))
        settle(page)
        assert page.locator("[data-md-component=search]").count() == 1
        assert problems == [], "\n".join(problems)


def test_access_list_shows_that_address_receipts(server: Server, browser: Any) -> None:
    with visit(browser, javascript=False) as v:
        page = v.context.new_page()
        first = submit_feedback(page, server.base_url, message="One.", email="list@example.org")
        second = submit_feedback(page, server.base_url, message="Two.", email="LIST@example.org")
        other = submit_feedback(page, server.base_url, message="Three.", email="other@example.org")
        page.goto(_access_url(server, second.receipt_id))
        text = page.locator("main").inner_text()
        assert first.receipt_id in text and second.receipt_id in text and other.receipt_id not in text
        assert site_look_problems(page) == []
        shot(page, "access-list")
    assert re.fullmatch(r"[0-9a-f]{32}", first.receipt_id)
