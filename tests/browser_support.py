"""The browser tests' checks, as plain functions over a Playwright page or context.

Each check returns what it found wrong (or raises AssertionError with a readable message), so the tests of
the tests (tests/test_browser_support.py) can run the very same functions on a deliberately broken copy of
the site and show that every one of them can fail.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # scripts/ is shared with `make audit`; pytest puts only tests/ on the path
    sys.path.insert(0, str(ROOT))

from scripts.demo_site import ACTIVE_CHANGE, Server, build_site, free_port, make_change_repo, serve  # noqa: E402

CHROMIUM = Path("/usr/bin/chromium")
# --no-sandbox: CI runs as root. The rest keep Chromium from calling Google on a closed network.
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--disable-default-apps", "--disable-extensions",
]
AXE = ROOT / "node_modules" / "axe-core" / "axe.min.js"
ARTIFACTS = ROOT / "test-artifacts"
MISSING_PATH = "no-such-page/"
FIELDS = ("message", "email", "consent_contact", "consent_updates", "consent_third_parties")


def require_browser() -> None:
    """Fail (never skip) when Chromium or axe-core is missing: `make test` installs both."""
    missing = [str(p) for p in (CHROMIUM, AXE) if not p.exists()]
    if missing:
        pytest.fail(f"Missing {', '.join(missing)}: run `make browser-deps` (Debian's chromium and `npm ci`)."
                    + (" CI never skips the browser tests." if os.environ.get("CI") else ""), pytrace=False)


# --- fixtures: import them into a test module; one server and one browser per module ---------------------------

_built: dict[str, Path] = {}


def demo_site(tmp_path_factory: pytest.TempPathFactory, generator: str = "mkdocs") -> Path:
    """The site with an active change, built once per session and generator (`mkdocs build` with the plugin, or
    `policy-site build --generator zensical`); a fresh copy per caller is the caller's job."""
    key = "site" if generator == "mkdocs" else f"site-{generator}"
    if key not in _built:
        work = tmp_path_factory.mktemp("demo")
        repo = make_change_repo(work / "repo")
        try:
            if generator == "mkdocs":
                _built[key] = build_site(repo, work / "site", "http://127.0.0.1:8000/")
            else:
                _built[key] = build_site_with(generator, repo, work / "site", "http://127.0.0.1:8000/")
        except RuntimeError as e:
            pytest.fail(str(e), pytrace=False)
    return _built[key]


def build_site_with(generator: str, repo: Path, site_dir: Path, base_url: str) -> Path:
    """As scripts.demo_site.build_site, with `policy-site build --strict --generator GENERATOR`."""
    import subprocess

    from scripts.demo_site import SOURCE_DATE_EPOCH

    env = {**os.environ, "SOURCE_DATE_EPOCH": SOURCE_DATE_EPOCH, "POLICY_SITE_URL": base_url.rstrip("/") + "/"}
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run(
        [sys.executable, "-m", "site_src.build", "--strict", "--generator", generator, "-f", str(repo / "mkdocs.yml"),
         "-d", str(site_dir)], cwd=root, env=env, capture_output=True, text=True, timeout=300,
    )
    if done.returncode != 0:
        raise RuntimeError(f"policy-site build --generator {generator} failed in {repo}:\n{done.stdout}{done.stderr}")
    return site_dir


def start_server(site_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """`policy-site serve` on a free port over ``site_dir``, with its own temporary ledger."""
    try:
        # Every visit comes from 127.0.0.1; the rate limit has its own tests, so it is off here.
        with serve(site_dir, tmp_path_factory.mktemp("serve"), free_port(), {"POLICY_SITE_RATE_LIMIT": "0"}) as s:
            yield s
    except RuntimeError as e:
        pytest.fail(str(e), pytrace=False)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    yield from start_server(demo_site(tmp_path_factory), tmp_path_factory)


@pytest.fixture(scope="module", params=["mkdocs", "zensical"])
def site_server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """`server` over the demo site built by each generator in turn (the site's browser tests run under both)."""
    yield from start_server(demo_site(tmp_path_factory, str(request.param)), tmp_path_factory)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    require_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


# --- one visit: every request recorded, nothing let out -----------------------------------------------------

@dataclass
class Visit:
    context: Any  # playwright BrowserContext
    requests: list[str] = field(default_factory=list)


def is_local(url: str) -> bool:
    """True for a URL that stays on this machine's loopback address (or never touches the network)."""
    parts = urlsplit(url)
    if parts.scheme in ("data", "blob", "about"):
        return True
    return parts.scheme in ("http", "https", "ws", "wss") and parts.hostname == "127.0.0.1"


def foreign_requests(urls: list[str]) -> list[str]:
    """The requests that would have left 127.0.0.1."""
    return [u for u in urls if not is_local(u)]


def open_visit(browser: Any, *, javascript: bool = True, bypass_csp: bool = False) -> Visit:
    """A fresh context that records every request and aborts any that would leave 127.0.0.1."""
    context = browser.new_context(java_script_enabled=javascript, bypass_csp=bypass_csp, service_workers="block",
                                  viewport={"width": 1280, "height": 900})
    context.set_default_timeout(10_000)
    visit = Visit(context)

    def route(r: Any) -> None:
        visit.requests.append(r.request.url)
        r.continue_() if is_local(r.request.url) else r.abort("blockedbyclient")

    context.route("**/*", route)
    return visit


def privacy_problems(visit: Visit) -> list[str]:
    """What the visit did against the policy: requests to other hosts, and cookies left in the browser."""
    problems = [f"request to another host: {u}" for u in foreign_requests(visit.requests)]
    cookies = {c["name"] for c in visit.context.cookies()}
    # A cookie set by a script reaches the context's store asynchronously; the page itself sees it at once.
    for page in visit.context.pages:
        jar = str(page.evaluate("() => document.cookie")) if page.url.startswith("http") else ""
        cookies |= {c.split("=")[0].strip() for c in jar.split(";") if c.strip()}
    problems += [f"cookie set: {name}" for name in sorted(cookies)]
    return problems


@contextmanager
def visit(browser: Any, *, javascript: bool = True, bypass_csp: bool = False) -> Iterator[Visit]:
    """A recorded visit; when its block ends without error it must have stayed local and left no cookie."""
    v = open_visit(browser, javascript=javascript, bypass_csp=bypass_csp)
    try:
        yield v
        problems = privacy_problems(v)
        assert not problems, "The visit broke the privacy promise:\n  " + "\n  ".join(problems)
    finally:
        v.context.close()


# --- the banner on every page --------------------------------------------------------------------------------

def site_paths(site_dir: Path) -> list[str]:
    """Every HTML page of the built site as a URL path relative to the site root, plus one that does not exist."""
    paths = []
    for html in sorted(site_dir.rglob("*.html")):
        rel = html.relative_to(site_dir).as_posix()
        paths.append(rel[: -len("index.html")] if rel.endswith("index.html") else rel)
    return paths + [MISSING_PATH]


def banner_problems(page: Any, base_url: str, paths: list[str]) -> list[str]:
    """Pages on which the change banner is missing or hidden; the missing path must also answer 404."""
    problems = []
    for path in paths:
        response = page.goto(base_url + path)
        status = response.status if response else 0
        expected = 404 if path == MISSING_PATH else 200
        if status != expected:
            problems.append(f"/{path}: HTTP {status}, expected {expected}")
        banner = page.locator("[data-policy-banner]")
        if banner.count() == 0:
            problems.append(f"/{path}: no [data-policy-banner]")
        elif not banner.first.is_visible():
            problems.append(f"/{path}: [data-policy-banner] is not visible")
        elif (banner.first.bounding_box() or {"y": 1e9})["y"] > page.viewport_size["height"]:
            problems.append(f"/{path}: the banner is below the first screen")
        elif ACTIVE_CHANGE[1] not in banner.first.inner_text():
            problems.append(f"/{path}: the banner does not name the active change {ACTIVE_CHANGE[1]!r}")
    return problems


# --- the feedback form ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ShownReceipt:
    """What the visitor reads on the receipt (the HTML receipt page, or the receipt shown in place)."""

    receipt_id: str
    recorded_at: str  # the datetime attribute of its <time>
    policy_version: str
    consents: dict[str, bool]
    withdraw_token: str
    text: str
    url: str


# How each consent reads on a receipt: in place it is the form's label with Yes/No; on the receipt page a sentence.
_CONSENT_WORDS = {
    "consent_contact": ("may contact you", "not ask us to contact you"),
    "consent_updates": ("asked us to e-mail you", "not ask for e-mails"),
    "consent_third_parties": ("may pass your email address", "not agree to your email address being passed"),
}


def fill_form(page: Any, message: str, email: str | None, consents: tuple[str, ...]) -> None:
    form = page.locator("[data-feedback-form]")
    form.locator("[name=message]").fill(message)
    if email is not None:
        form.locator("[name=email]").fill(email)
    for name in consents:
        form.locator(f"[name={name}]").check()


def wait_for_receipt(page: Any, timeout: float = 5_000) -> Any:
    """The element holding the receipt (its <dl> starts with "Receipt"), or AssertionError."""
    term = page.locator("dl dt", has_text=re.compile(r"^\s*Receipt\s*$")).first
    try:
        term.wait_for(state="visible", timeout=timeout)
    except Exception as e:  # playwright's TimeoutError, turned into the check's failure
        raise AssertionError("No receipt was shown after sending the form; the page shows:\n"
                             + page.locator("body").inner_text()[:1500]) from e
    inline = page.locator("#feedback-receipt")
    return inline if inline.count() and inline.is_visible() else page.locator("main").first


def read_receipt(page: Any, region: Any) -> ShownReceipt:
    """Read the receipt's facts the way a visitor would, from its <dl> and its consent wording."""
    facts: dict[str, str] = region.evaluate("""el => Object.fromEntries([...el.querySelectorAll('dl dt')].map(
        dt => [dt.innerText.trim(), dt.nextElementSibling ? dt.nextElementSibling.innerText.trim() : '']))""")
    text = str(region.inner_text())
    consents = {}
    for name, (given, withheld) in _CONSENT_WORDS.items():
        label = page.locator(f"label[for={name}]")
        label_text = label.first.text_content().strip() if label.count() else ""
        if label_text in facts:
            consents[name] = facts[label_text] == "Yes"
        elif (given in text) != (withheld in text):
            consents[name] = given in text
        else:
            raise AssertionError(f"The receipt does not say plainly whether {name} was given:\n{text}")
    token_input = page.locator("input[name=withdraw_token]")
    token = token_input.first.input_value() if token_input.count() else facts.get("Withdraw token", "")
    return ShownReceipt(
        receipt_id=facts.get("Receipt", ""),
        recorded_at=str(region.locator("time").first.get_attribute("datetime")),
        policy_version=facts.get("Policy version") or facts.get("Version", ""),
        consents=consents, withdraw_token=token, text=text, url=page.url,
    )


def submit_feedback(page: Any, base_url: str, *, message: str, email: str | None = None,
                    consents: tuple[str, ...] = ()) -> ShownReceipt:
    """Fill and send the feedback form the way a visitor does; the receipt it shows, or AssertionError."""
    page.goto(base_url + "feedback/")
    assert page.locator("[data-feedback-form]").count() == 1, "the feedback page has no [data-feedback-form]"
    fill_form(page, message, email, consents)
    with page.expect_response(lambda r: r.request.method == "POST") as posted:
        page.locator("[data-feedback-form] [type=submit]").click()
    response = posted.value
    assert response.status < 400, f"Sending the feedback form failed: HTTP {response.status} from {response.url}"
    return read_receipt(page, wait_for_receipt(page))


def withdraw_shown(page: Any) -> str:
    """Press the receipt's withdraw button; the confirmation the visitor then reads, or AssertionError."""
    button = page.get_by_role("button", name=re.compile("withdraw", re.I)).first
    with page.expect_response(lambda r: r.request.method == "POST") as posted:
        button.click()
    assert posted.value.status < 400, f"Withdrawing failed: HTTP {posted.value.status} from {posted.value.url}"
    done = page.get_by_text(re.compile(r"\bis withdrawn\b", re.I)).first
    done.wait_for(timeout=5_000)
    return str(done.inner_text())


# --- errors announced next to their fields -------------------------------------------------------------------

def error_problems(page: Any, fields: tuple[str, ...]) -> list[str]:
    """For each refused field: aria-invalid, a visible message tied by aria-describedby and near the field,
    and the refusal announced (focus on an error summary, or the text in a live region)."""
    problems = []
    for name in fields:
        field_el = page.locator(f"[data-feedback-form] [name={name}]")
        if field_el.get_attribute("aria-invalid") != "true":
            problems.append(f"{name}: not marked aria-invalid=true")
        ids = (field_el.get_attribute("aria-describedby") or "").split()
        texts = [page.locator(f"[id='{i}']") for i in ids]
        shown = [t for t in texts if t.count() and t.is_visible() and t.inner_text().strip()]
        if not shown:
            problems.append(f"{name}: no visible error message referenced by aria-describedby")
            continue
        box, err = field_el.bounding_box(), shown[-1].bounding_box()
        if box and err and abs(err["y"] - (box["y"] + box["height"])) > 150:
            problems.append(f"{name}: its error message is {err['y'] - box['y']:.0f}px away from the field")
    announced = page.evaluate("""() => {
        const a = document.activeElement;
        const live = [...document.querySelectorAll('[aria-live=assertive],[aria-live=polite],[role=alert]')];
        const inLive = live.some(el => el.innerText.trim().length > 0);
        const focusedSummary = a && a.matches('[role=alert],[aria-live],[tabindex]') && a.innerText.trim().length > 0
            && !a.matches('input,textarea,select,button');
        return {inLive, focusedSummary, active: a ? a.outerHTML.slice(0, 120) : null};
    }""")
    if not (announced["inLive"] or announced["focusedSummary"]):
        problems.append(f"the refusal is not announced (no live region text; focus is on {announced['active']})")
    return problems


# --- the Content-Security-Policy and the console ---------------------------------------------------------------

# Runs before the page's own scripts, and in spite of its policy (Playwright injects it through the browser).
_REPORT_VIOLATIONS = """document.addEventListener('securitypolicyviolation', e => window.__policySiteViolation(
    `${e.effectiveDirective} blocked ${e.blockedURI} on ${location.pathname}`));  // "inline" for inline code"""


def watch_console(page: Any) -> list[str]:
    """From now on, record what the page reports as wrong: CSP violations, console errors and uncaught errors
    (Lighthouse's best-practices score counts the console's errors). The list fills as pages load."""
    found: list[str] = []
    page.on("console", lambda m: found.append(f"console error: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: found.append(f"uncaught error: {e}"))
    page.expose_function("__policySiteViolation", lambda text: found.append(f"CSP violation: {text}"))
    page.add_init_script(_REPORT_VIOLATIONS)
    return found


def settle(page: Any) -> None:
    """Wait until the page has loaded and reported what it would (violations arrive a task later)."""
    page.wait_for_load_state("load")
    page.evaluate("() => new Promise(done => setTimeout(done, 200))")


# --- axe-core --------------------------------------------------------------------------------------------------

def axe_violations(page: Any) -> list[dict[str, Any]]:
    """axe-core's violations on the loaded page (every rule axe runs by default)."""
    page.add_script_tag(path=str(AXE))
    result = page.evaluate("async () => await axe.run(document, {resultTypes: ['violations']})")
    return list(result["violations"])


def format_violations(url: str, violations: list[dict[str, Any]]) -> str:
    lines = [f"{url}: {len(violations)} axe violation(s)"]
    for v in violations:
        lines.append(f"  [{v['impact']}] {v['id']}: {v['help']} ({v['helpUrl']})")
        for node in v["nodes"][:5]:
            lines.append(f"      {' '.join(map(str, node['target']))}: {node['failureSummary'].splitlines()[-1].strip()}")
    return "\n".join(lines)


# --- copies of the built site with one thing broken (for the tests of the tests) -----------------------------

class _ElementSpan(HTMLParser):
    """Finds the source span of the first element carrying an attribute, end tag included."""

    def __init__(self, source: str, attribute: str) -> None:
        super().__init__(convert_charrefs=True)
        self.lines = [0]
        for line in source.splitlines(keepends=True):
            self.lines.append(self.lines[-1] + len(line))
        self.attribute, self.tag, self.depth = attribute, "", 0
        self.start: int | None = None
        self.end: int | None = None

    def _offset(self) -> int:
        line, col = self.getpos()
        return self.lines[line - 1] + col

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if self.start is None and any(k == self.attribute for k, _ in attrs):
            self.start, self.tag, self.depth = self._offset(), tag, 1
        elif self.start is not None and self.end is None and tag == self.tag:
            self.depth += 1

    def handle_endtag(self, tag: str) -> None:
        if self.start is not None and self.end is None and tag == self.tag:
            self.depth -= 1
            if self.depth == 0:
                self.end = self._offset() + len(f"</{tag}>")


def remove_element(html: str, attribute: str) -> str:
    """``html`` without the first element that carries ``attribute`` (and everything inside it)."""
    finder = _ElementSpan(html, attribute)
    finder.feed(html)
    finder.close()
    if finder.start is None or finder.end is None:
        raise ValueError(f"No complete element with the attribute {attribute} in the page.")
    return html[: finder.start] + html[finder.end:]
