"""`policy-site build` with either generator: the same site for the reader, and the page shell for the service.

Under both generators: policy-shell.html keeps its contract (one title marker, one content marker, absolute URLs
from site_url's path, the header, navigation, search and banner of every page), writers' text stays text
whatever template engine renders the page, and two builds of one commit give equal manifests and feeds.
"""

from __future__ import annotations

import html as html_lib
import json
import re
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner
from site_build import GENERATORS, build_site, each_generator

from site_src.build import default_generator
from site_src.shell import CONTENT_MARKER, SHELL_NAME, TITLE_MARKER, Shell

FIXTURE = Path(__file__).parent / "fixtures" / "policies"
DAY = "2026-11-25"  # privacy and terms changes are announced
URL_ATTRIBUTE = re.compile(r'\s(?:href|src|action|srcset|poster|data)="([^"]*)"')


def project(tmp: Path, site_url: str = "https://policies.example.org/") -> Path:
    copy = shutil.copytree(FIXTURE, tmp / "project")
    config = copy / "mkdocs.yml"
    config.write_text(config.read_text(encoding="utf-8").replace("https://policies.example.org/", site_url), encoding="utf-8")
    return copy


@pytest.fixture(scope="module")
def sites(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The fixture site built by each generator, served under /policies/."""
    tmp = tmp_path_factory.mktemp("sites")
    built = {}
    for generator in GENERATORS:
        out = tmp / f"site-{generator}"
        result = build_site(project(tmp / generator, "https://h.example.org/policies/"), out, generator, day=DAY)
        assert result.returncode == 0, result.stderr
        built[generator] = out
    return built


@each_generator
def test_shell_has_each_marker_once_and_every_url_absolute_from_the_site_path(sites: dict[str, Path], generator: str) -> None:
    shell = (sites[generator] / SHELL_NAME).read_text(encoding="utf-8")
    assert shell.count(TITLE_MARKER) == 1 and shell.count(CONTENT_MARKER) == 1
    assert re.search(r"<title>" + re.escape(TITLE_MARKER) + "</title>", shell)
    article = re.search(r'<article class="md-content__inner md-typeset">(.*?)</article>', shell, re.DOTALL)
    assert article and re.sub(r'<a id="__skip" tabindex="-1"></a>', "", article.group(1)).strip() == CONTENT_MARKER
    urls = URL_ATTRIBUTE.findall(shell)
    # The footer's "Manage your consent" is the service's page (the manage_endpoint option), not the site's.
    assert urls and all(u.startswith(("/policies/", "#", "https://", "http://")) or u == "/api/manage" for u in urls), urls
    assert "/policies/assets/" in shell and "/policies/privacy/" in shell
    config = json.loads(re.search(r'<script id="__config" type="application/json">(.*?)</script>', shell, re.DOTALL).group(1))  # type: ignore[union-attr]
    assert config["base"] == "/policies/" and config["search"].startswith("/policies/assets/javascripts/workers/")
    assert 'new URL("/policies/"' in shell


@each_generator
def test_shell_has_the_header_navigation_search_and_banner_of_every_page(sites: dict[str, Path], generator: str) -> None:
    shell = (sites[generator] / SHELL_NAME).read_text(encoding="utf-8")
    page = (sites[generator] / "terms" / "index.html").read_text(encoding="utf-8")
    for part in ('<header class="md-header', 'class="md-header__button md-logo"', '<nav class="md-nav md-nav--primary"',
                 'class="md-search"', '<footer class="md-footer"', 'data-md-component="announce"'):
        assert shell.count(part) == page.count(part) == 1 if part != 'class="md-header__button md-logo"' else part in shell, part
    banner = re.compile(r'<div class="policy-banner" data-policy-banner>.*?</div>', re.DOTALL)
    shell_banner, page_banner = banner.search(shell), banner.search(page)
    assert shell_banner and page_banner
    assert shell_banner.group(0) == page_banner.group(0).replace('href="../', 'href="/policies/')
    filled = Shell.parse(shell).fill("Receipt <1>", "<p>Thank you.</p>")
    assert "<title>Receipt &lt;1&gt;</title>" in filled and "<p>Thank you.</p>" in filled


def test_two_builds_of_one_commit_give_equal_manifests_and_feeds(sites: dict[str, Path]) -> None:
    mkdocs, zensical = sites["mkdocs"], sites["zensical"]
    assert json.loads((mkdocs / "policy-versions.json").read_text()) == json.loads((zensical / "policy-versions.json").read_text())
    assert (mkdocs / "changes.xml").read_bytes() == (zensical / "changes.xml").read_bytes()


WRITER_SUMMARY = "Use {{ 7 * 7 }}, {% if x %}{# c #} & <b>bold</b>"
WRITER_TITLE = "Terms {{ config.site_name }} <i>T</i>"


@each_generator
def test_writer_text_with_template_syntax_and_html_is_shown_literally(tmp_path: Path, generator: str) -> None:
    copy = project(tmp_path)
    terms = copy / "docs" / "terms.md"
    text = terms.read_text(encoding="utf-8").replace("Explained how long feedback is kept.", json.dumps(WRITER_SUMMARY))
    terms.write_text(text.replace("title: Terms of Use", "title: " + json.dumps(WRITER_TITLE)), encoding="utf-8")
    config = copy / "mkdocs.yml"
    config.write_text(config.read_text().replace("consent_policy", "consent_policy").replace("banner_days: 30", "banner_days: 30\n      consent_policy: terms"), encoding="utf-8")
    result = build_site(copy, tmp_path / "site", generator, day=DAY)
    assert result.returncode == 0, result.stderr
    for url in ("index.html", "404.html", "feedback/index.html"):
        page = (tmp_path / "site" / url).read_text(encoding="utf-8")
        banner = re.search(r"data-policy-banner>(.*?)</div>", page, re.DOTALL)
        assert banner and "<b>" not in banner.group(1) and "<i>" not in banner.group(1), url
        shown = html_lib.unescape(re.sub(r"<[^>]+>", "", banner.group(1)))
        assert WRITER_SUMMARY in shown and WRITER_TITLE in shown and "49" not in shown, url
    note = re.search(r'<p class="feedback-form__consent-note">(.*?)</p>', (tmp_path / "site" / "feedback" / "index.html").read_text(), re.DOTALL)
    assert note and WRITER_TITLE in html_lib.unescape(re.sub(r"<[^>]+>", "", note.group(1)))
    feed = (tmp_path / "site" / "changes.xml").read_text(encoding="utf-8")
    assert html_lib.escape(WRITER_SUMMARY, quote=False) in feed


def test_policy_site_build_command_builds_with_mkdocs_as_mkdocs_build_does(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from form_handler.cli import cli

    copy = project(tmp_path)
    plain = build_site(copy, tmp_path / "plain", "mkdocs", day=DAY)
    assert plain.returncode == 0, plain.stderr
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1795564800")  # 2026-11-25
    monkeypatch.setenv("NO_MKDOCS_2_WARNING", "1")
    result = CliRunner().invoke(cli, ["build", "-f", str(copy / "mkdocs.yml"), "--generator", "mkdocs", "-d", str(tmp_path / "cmd"), "--strict"])
    assert result.exit_code == 0, result.output
    files = sorted(p.relative_to(tmp_path / "plain") for p in (tmp_path / "plain").rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(tmp_path / "cmd") for p in (tmp_path / "cmd").rglob("*") if p.is_file())
    assert [f for f in files if (tmp_path / "plain" / f).read_bytes() != (tmp_path / "cmd" / f).read_bytes()] == []


def test_default_generator_is_mkdocs_while_it_is_installed() -> None:
    assert default_generator() == "mkdocs"


def test_build_with_zensical_says_so_and_refuses_an_unknown_generator(tmp_path: Path) -> None:
    result = build_site(project(tmp_path), tmp_path / "site", "zensical", day=DAY)
    assert result.returncode == 0 and "Building with zensical" in result.stderr
    bad = build_site(project(tmp_path / "b"), tmp_path / "b" / "site", "hugo", day=DAY)
    assert bad.returncode != 0 and "invalid choice: 'hugo'" in bad.stderr


@each_generator
def test_every_page_footer_links_to_manage_your_consent(sites: dict[str, Path], generator: str) -> None:
    pages = [p for p in sites[generator].rglob("*.html") if p.name != SHELL_NAME]
    link = re.compile(r'<footer class="md-footer".*<a href="/api/manage" data-manage-link>Manage your consent</a>', re.DOTALL)
    missing = [str(p.relative_to(sites[generator])) for p in pages if not link.search(p.read_text(encoding="utf-8"))]
    assert len(pages) >= 4 and not missing, missing
    assert link.search((sites[generator] / SHELL_NAME).read_text(encoding="utf-8"))
