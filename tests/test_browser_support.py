"""Tests of the browser tests: the same checks, run on a copy of the site with one thing broken per page.

The broken copy is served by its own `policy-site serve`: privacy/ has lost its banner, the feedback form
posts to a route that does not exist, and the home page loads a font from Google. Each check must notice.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from browser_support import (
    axe_violations, banner_problems, browser, demo_site, error_problems, foreign_requests, open_visit,
    privacy_problems, remove_element, settle, site_paths, start_server, submit_feedback, visit, watch_console,
)

from scripts.demo_site import Server

FONT_URL = "https://fonts.googleapis.com/css2?family=Roboto&display=fallback"
FONT = f'<link rel="stylesheet" href="{FONT_URL.replace("&", "&amp;")}">'
__all__ = ["browser"]  # a module fixture, used by name


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text, f"{path}: expected {old!r} in the built page"
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


@pytest.fixture(scope="module")
def broken(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    site = tmp_path_factory.mktemp("broken") / "site"
    shutil.copytree(demo_site(tmp_path_factory), site)
    policy = site / "privacy" / "index.html"
    policy.write_text(remove_element(policy.read_text(encoding="utf-8"), "data-policy-banner"), encoding="utf-8")
    _edit(site / "feedback" / "index.html", 'action="/api/feedback"', 'action="/api/no-such-route"')
    _edit(site / "index.html", "</head>", FONT + "</head>")
    yield from start_server(site, tmp_path_factory)


def test_remove_element_cuts_the_element_and_its_children_only() -> None:
    html = '<body><div class="a"><div data-policy-banner><div>x</div><p>y</p></div><p>keep</p></div></body>'
    assert remove_element(html, "data-policy-banner") == '<body><div class="a"><p>keep</p></div></body>'


def test_foreign_requests_allow_only_127_0_0_1_and_local_schemes() -> None:
    urls = ["http://127.0.0.1:8000/a.css", "data:font/woff2;base64,AA", "about:blank",
            "https://fonts.gstatic.com/x.woff2", "http://localhost:8000/", "ws://10.0.0.1/"]
    assert foreign_requests(urls) == urls[3:]


@pytest.mark.browser
def test_banner_check_names_the_one_page_without_banner(broken: Server, browser: Any) -> None:
    with visit(browser) as v:
        page = v.context.new_page()
        paths = [p for p in site_paths(broken.site_dir) if p != ""]  # the home page loads Google's font
        assert banner_problems(page, broken.base_url, paths) == ["/privacy/: no [data-policy-banner]"]


@pytest.mark.browser
@pytest.mark.parametrize("javascript", [False, True], ids=["no-js", "js"])
def test_form_check_fails_when_the_form_posts_nowhere(broken: Server, browser: Any, javascript: bool) -> None:
    with visit(browser, javascript=javascript) as v:
        page = v.context.new_page()
        with pytest.raises(AssertionError, match="Sending the feedback form failed: HTTP 4"):
            submit_feedback(page, broken.base_url, message="Will not arrive.")


@pytest.mark.browser
def test_visit_check_fails_when_a_page_loads_a_font_from_another_host(broken: Server, browser: Any) -> None:
    # bypass_csp: the site's policy now stops the font before it is requested; this proves the visit's own check.
    v = open_visit(browser, bypass_csp=True)
    try:
        v.context.new_page().goto(broken.base_url)
        assert privacy_problems(v) == [f"request to another host: {FONT_URL}"]
    finally:
        v.context.close()
    with pytest.raises(AssertionError, match="fonts.googleapis.com"), visit(browser, bypass_csp=True) as v2:
        v2.context.new_page().goto(broken.base_url)


@pytest.mark.browser
def test_console_check_reports_the_font_the_site_policy_blocks(broken: Server, browser: Any) -> None:
    with visit(browser) as v:
        page = v.context.new_page()
        problems = watch_console(page)
        page.goto(broken.base_url)
        settle(page)
    assert any(p.startswith("CSP violation: style-src-elem blocked https://fonts.googleapis.com/") for p in problems), \
        problems


@pytest.mark.browser
def test_console_check_reports_an_inline_script_on_a_service_page(broken: Server, browser: Any) -> None:
    # The service's pages (here a damaged e-mail link's) run no script at all, and the check still listens there.
    with visit(browser) as v:
        page = v.context.new_page()
        problems = watch_console(page)
        page.goto(broken.base_url + "api/confirm?token=damaged")
        page.evaluate("() => document.body.append(Object.assign(document.createElement('script'), {text: '1'}))")
        settle(page)
    assert any(p.startswith("CSP violation: script-src-elem blocked inline") for p in problems), problems


@pytest.mark.browser
def test_visit_check_fails_when_a_cookie_is_left(broken: Server, browser: Any) -> None:
    with pytest.raises(AssertionError, match="cookie set: tracker"), visit(browser) as v:
        page = v.context.new_page()
        page.goto(broken.base_url + "privacy/")
        page.evaluate("() => { document.cookie = 'tracker=1; path=/'; }")


@pytest.mark.browser
def test_error_check_fails_when_errors_are_neither_tied_nor_announced(broken: Server, browser: Any) -> None:
    with visit(browser) as v:
        page = v.context.new_page()
        page.goto(broken.base_url + "feedback/")
        page.evaluate("""() => { const f = document.querySelector('[name=message]');
            f.removeAttribute('aria-describedby'); f.insertAdjacentHTML('afterend', '<p>Required.</p>'); }""")
        problems = error_problems(page, ("message",))
    assert problems[:2] == ["message: not marked aria-invalid=true",
                            "message: no visible error message referenced by aria-describedby"]
    assert problems[2].startswith("the refusal is not announced")


@pytest.mark.browser
def test_axe_check_reports_an_unlabelled_field(broken: Server, browser: Any) -> None:
    with visit(browser, bypass_csp=True) as v:
        page = v.context.new_page()
        page.goto(broken.base_url + "feedback/")
        page.evaluate("() => document.querySelector('label[for=message]').remove()")
        assert "label" in {violation["id"] for violation in axe_violations(page)}
