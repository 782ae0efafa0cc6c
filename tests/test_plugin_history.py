"""Change history, past versions, feed and the no-silent-edit rule, through real builds of git repositories with
each generator (`mkdocs build` with the plugin, `policy-site build --generator zensical`).

One repository for the module (privacy: three texts; terms: renamed with `git mv`, then changed), built once;
the failing cases (unrecorded edit, shallow clone) build clones of it.
"""

from __future__ import annotations

import json
import posixpath
import re
import subprocess
from pathlib import Path

import feedparser
import pytest
from gitrepo import GitRepo, policy_source
from site_build import GENERATORS, build_site, search_texts

from site_src.versions import policy_version, split_front_matter

BUILD_DAY = "2026-11-25"
CONFIG = """\
site_name: History test
site_description: Policies with a history.
site_url: https://policies.example.org/
theme:
  name: material
  font: false
plugins:
  - search
  - policy{options}
markdown_extensions:
  - toc:
      permalink: true
  - attr_list
  - md_in_html
"""
V1 = "# Privacy Policy\n\nWe may share aggregate statistics with our partners.\n\nSee the [terms](terms.md).\n"
V2 = V1.replace("with our partners", "with named partners")
V3 = V2.replace("See the", "Read the")
R2 = {"date": "2026-03-01", "summary": "Named the partners.", "effective": "2026-04-01"}
R3 = {"date": "2026-06-01", "summary": "Reworded a link.", "material": False}
T1 = {"date": "2026-01-10", "summary": "Published the terms."}
T2 = {"date": "2026-11-20", "summary": "Explained how long feedback is kept."}
TERMS1 = "# Terms of Use\n\nFeedback is kept.\n"
TERMS2 = "# Terms of Use\n\nFeedback is kept for one year.\n"


def terms_source(body: str, changes: list[dict[str, str]]) -> str:
    return policy_source(body, changes, policy_id="terms").replace("Privacy Policy", "Terms of Use", 1)


def make_repo(root: Path) -> GitRepo:
    repo = GitRepo(root)
    repo.commit("2026-01-10", {
        "mkdocs.yml": CONFIG.format(options=""), "docs/index.md": "# Home\n\nOur policies.\n",
        "docs/privacy.md": policy_source(V1), "docs/old-terms.md": terms_source(TERMS1, [T1]),
    })
    repo.commit("2026-03-01", {"docs/privacy.md": policy_source(V2, [R2])})
    repo.commit("2026-06-01", {"docs/privacy.md": policy_source(V3, [R3, R2])})
    repo.git("mv", "docs/old-terms.md", "docs/terms.md")
    repo.commit("2026-08-01", message="Rename the terms")
    repo.commit("2026-11-20", {"docs/terms.md": terms_source(TERMS2, [T2, T1])})
    return repo


def build(project: Path, out: Path, generator: str, on: str = BUILD_DAY, path: str | None = None) -> subprocess.CompletedProcess[str]:
    """A strict build in a fresh process on the day `on`, INFO messages kept (``path``: its PATH)."""
    return build_site(project, out, generator, day=on, path=path)


@pytest.fixture(scope="module", params=GENERATORS)
def generator(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> GitRepo:
    return make_repo(tmp_path_factory.mktemp("history") / "repo")


@pytest.fixture(scope="module")
def site(repo: GitRepo, generator: str) -> Path:
    out = repo.root.parent / f"site-{generator}"
    result = build(repo.root, out, generator)
    assert result.returncode == 0, result.stderr
    return out


def policy(site: Path, policy_id: str) -> dict[str, object]:
    manifest = json.loads((site / "policy-versions.json").read_text(encoding="utf-8"))
    return next(p for p in manifest["policies"] if p["id"] == policy_id)


def section(html: str, anchor: str) -> str:
    match = re.search(rf'<section class="policy-change" id="{anchor}".*?</section>', html, re.DOTALL)
    assert match, f"no section {anchor}"
    return match.group(0)


def texts(html: str, tag: str) -> list[str]:
    """The text inside each <tag>, whitespace runs collapsed (an added phrase carries its leading space)."""
    return [" ".join(re.sub(r"<[^>]+>", "", m).split()) for m in re.findall(rf"<{tag}>(.*?)</{tag}>", html, re.DOTALL)]


def test_change_page_redline_holds_exactly_the_removed_and_added_words(site: Path) -> None:
    html = section((site / "privacy" / "changes" / "index.html").read_text(encoding="utf-8"), "change-2026-03-01")
    assert "Named the partners." in html and "1 April 2026" in html and "Material change" in html
    assert texts(html, "del") == ["removed: our"]
    assert texts(html, "ins") == ["added: named"]


def test_change_page_lists_every_record_newest_first_with_version_links(site: Path) -> None:
    html = (site / "privacy" / "changes" / "index.html").read_text(encoding="utf-8")
    assert html.index('id="change-2026-06-01"') < html.index('id="change-2026-03-01"')
    assert "Editorial fix" in section(html, "change-2026-06-01")
    links = section(html, "change-2026-03-01")
    assert 'href="../../privacy/versions/2026-01-10/">Text before' in links
    assert 'href="../../privacy/versions/2026-04-01/">Text this change introduced' in links


def test_each_version_at_its_url_with_its_text_and_status(site: Path) -> None:
    versions = policy(site, "privacy")["versions"]
    assert [(v["effective"], v["current"]) for v in versions] == [("2026-06-01", True), ("2026-04-01", False), ("2026-01-10", False)]  # type: ignore[index]
    for v, body, sentence in zip(versions, (V3, V2, V1), ("Read the", "with named partners", "with our partners")):  # type: ignore[call-overload]
        html = (site / v["url"] / "index.html").read_text(encoding="utf-8")
        assert v["version"] == policy_version(body) and sentence in html
        assert ("Superseded" in html) is (not v["current"]) and ("Current text" in html) is v["current"]
        assert 'href="../../../terms/"' in html  # the policy's own relative link, rewritten for the deeper URL


def test_history_pages_are_not_in_the_search_index(site: Path) -> None:
    locations = [loc for loc, _ in search_texts(site)]
    assert any(loc.startswith("privacy/") for loc in locations)
    assert not [loc for loc in locations if "versions/" in loc or "changes/" in loc]


def test_manifest_change_versions_are_the_texts_they_introduced(site: Path) -> None:
    privacy = policy(site, "privacy")
    assert [(c["date"], c["version"]) for c in privacy["changes"]] == [  # type: ignore[union-attr]
        ("2026-06-01", policy_version(V3)), ("2026-03-01", policy_version(V2))
    ]
    assert privacy["version"] == policy_version(V3) == privacy["versions"][0]["version"]  # type: ignore[index]


def test_feed_is_valid_atom_with_one_entry_per_material_change(site: Path) -> None:
    feed = feedparser.parse((site / "changes.xml").read_bytes())
    assert feed.bozo == 0
    assert [e.title for e in feed.entries] == [
        "Terms of Use: Explained how long feedback is kept.", "Privacy Policy: Named the partners.", "Terms of Use: Published the terms."
    ]
    for entry in feed.entries:
        path, anchor = entry.link.removeprefix("https://policies.example.org/").split("#")
        assert f'id="{anchor}"' in (site / path / "index.html").read_text(encoding="utf-8")


def test_renamed_file_keeps_its_history(site: Path) -> None:
    html = (site / "terms" / "changes" / "index.html").read_text(encoding="utf-8")
    assert texts(section(html, "change-2026-11-20"), "ins") == ["added: for one year"]
    old = (site / "terms" / "versions" / "2026-01-10" / "index.html").read_text(encoding="utf-8")
    assert "Feedback is kept." in old and "Superseded" in old


def test_history_pages_carry_no_banner_once_no_change_is_active(repo: GitRepo, tmp_path: Path, generator: str) -> None:
    # The worker renders its pages early with a gap for the banner; with nothing to announce the gap must not
    # leave an empty announcement bar behind.
    result = build(repo.root, tmp_path / "site", generator, on="2027-03-01")
    assert result.returncode == 0, result.stderr
    pages = sorted((tmp_path / "site").glob("*/*/**/index.html"))
    assert {p.relative_to(tmp_path / "site").parts[1] for p in pages} == {"changes", "versions"}
    for page in pages:
        html = page.read_text(encoding="utf-8")
        assert "md-banner" not in html and "data-policy-banner" not in html and "\x00" not in html, page
        assert "<main" in html and "</html>" in html


def test_banner_what_changed_link_points_to_the_change_page(site: Path) -> None:
    html = (site / "index.html").read_text(encoding="utf-8")
    banner = re.search(r"data-policy-banner>.*?</div>", html, re.DOTALL)
    assert banner and 'href="./terms/changes/">What changed</a>' in banner.group(0)


def test_every_page_has_banner_feed_link_lang_title_description_and_main(site: Path) -> None:
    pages = [p for p in sorted(site.rglob("*.html")) if p.name != "policy-shell.html"]  # the service's shell has no title
    assert site / "terms" / "versions" / "2026-01-10" / "index.html" in pages and site / "404.html" in pages
    for page in pages:
        html = page.read_text(encoding="utf-8")
        where = page.relative_to(site)
        assert html.count("data-policy-banner") == 1, where
        assert re.search(r'<link rel="alternate" type="application/atom\+xml" href="[^"]*changes\.xml"', html), where
        assert '<html lang="en"' in html and re.search(r"<title>[^<]+</title>", html), where
        assert '<meta name="description" content="' in html and "<main" in html, where
        # An icon link on every page, resolving to a file: without one the browser asks for /favicon.ico (a 404).
        icon = re.search(r'<link rel="icon" href="([^"]+)"', html)
        assert icon, where
        href = icon.group(1)
        assert (site / href.lstrip("/") if href.startswith("/") else page.parent / href).resolve().is_file(), where


def test_unrecorded_edit_warns_with_a_diff_and_fails_strict(repo: GitRepo, tmp_path: Path, generator: str) -> None:
    subprocess.run(["git", "clone", "-q", str(repo.root), str(tmp_path / "clone")], check=True)
    privacy = tmp_path / "clone" / "docs" / "privacy.md"
    privacy.write_text(privacy.read_text().replace("named partners", "selected partners"), encoding="utf-8")
    result = build(tmp_path / "clone", tmp_path / "site", generator)
    assert result.returncode != 0
    assert "WARNING" in result.stderr and "docs/privacy.md: the policy text differs" in result.stderr
    assert "-We may share aggregate statistics with named partners." in result.stderr
    assert "+We may share aggregate statistics with selected partners." in result.stderr


def test_shallow_clone_fails_then_builds_without_history_when_allowed(repo: GitRepo, tmp_path: Path, generator: str) -> None:
    clone = tmp_path / "shallow"
    subprocess.run(["git", "clone", "-q", "--depth", "1", f"file://{repo.root}", str(clone)], check=True)
    result = build(clone, tmp_path / "site", generator)
    assert result.returncode != 0 and "shallow git clone" in result.stderr and "fetch-depth: 0" in result.stderr
    assert "Traceback" not in result.stderr
    (clone / "mkdocs.yml").write_text(CONFIG.format(options=":\n      require_history: false"), encoding="utf-8")
    result = build(clone, tmp_path / "site", generator)
    assert result.returncode == 0, result.stderr
    assert "INFO" in result.stderr and "Building without change history pages" in result.stderr
    assert not (tmp_path / "site" / "privacy" / "changes").exists()
    assert feedparser.parse((tmp_path / "site" / "changes.xml").read_bytes()).bozo == 0


def test_shipped_project_builds_strict_from_a_fresh_full_clone(tmp_path: Path, generator: str) -> None:
    root = Path(__file__).resolve().parents[1]
    subprocess.run(["git", "clone", "-q", str(root), str(tmp_path / "clone")], check=True)
    result = build(tmp_path / "clone", tmp_path / "site", generator)
    assert result.returncode == 0, result.stderr
    source = (tmp_path / "clone" / "docs" / "privacy.md").read_text(encoding="utf-8")
    versions = policy(tmp_path / "site", "privacy")["versions"]
    assert versions[0]["current"] and versions[0]["version"] == policy_version(split_front_matter(source)[1])  # type: ignore[index]
    assert (tmp_path / "site" / "privacy" / "changes" / "index.html").is_file()


def chrome(site: Path, url: str) -> dict[str, object]:
    """The parts of a page every page shares: header (page title blanked), primary navigation links, footer, the
    body's palette, the banner's place before the header, with every relative URL resolved from the page."""
    html = (site / url / "index.html").read_text(encoding="utf-8")

    def resolved(part: str) -> str:
        part = re.sub(r'(href|src)="(?![a-z]+:|#|/)([^"]*)"', lambda m: f'{m.group(1)}="/{posixpath.normpath(posixpath.join(url, m.group(2)))}"', part)
        return re.sub(r'data-md-component="header-topic">.*?</div>', "", part, flags=re.DOTALL)

    header = re.search(r"<header class=\"md-header.*?</header>", html, re.DOTALL)
    nav = re.search(r'<nav class="md-nav md-nav--primary".*?</nav>', html, re.DOTALL)
    footer = re.search(r"<footer class=\"md-footer\">.*?</footer>", html, re.DOTALL)
    body = re.search(r"<body[^>]*>", html)
    assert header and nav and footer and body, url
    links = re.findall(r'<a href="([^"]*)"[^>]*class="md-nav__link[^"]*"[^>]*>\s*(?:<[^>]+>\s*)*([^<]*?)\s*<', resolved(nav.group(0)))
    return {
        "header": resolved(header.group(0)), "links": [(href, text.strip()) for href, text in links],
        "footer": re.sub(r'<nav class="md-footer__inner.*?</nav>', "", resolved(footer.group(0)), flags=re.DOTALL),
        "body": body.group(0), "banner_first": html.index("data-policy-banner") < html.index("<header"),
    }


@pytest.mark.parametrize("url", ["privacy/changes/", "privacy/versions/", "terms/versions/2026-01-10/"])
def test_history_page_has_the_policy_pages_header_navigation_footer_and_banner(site: Path, url: str) -> None:
    policy = chrome(site, "privacy/")
    assert policy["links"] and len(policy["links"]) >= 3
    assert chrome(site, url) == policy
    html = (site / url / "index.html").read_text(encoding="utf-8")
    assert 'class="md-search"' in html and html.count("<title>") == 1 and "history.css" in html
