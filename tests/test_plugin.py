"""The `policy` plugin, through real builds of fixture sites and of the shipped docs: `mkdocs build` with the
plugin, and `policy-site build --generator zensical` (every site test runs under both; site_build.py)."""

from __future__ import annotations

import datetime as dt
import json
import posixpath
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml
from site_build import GENERATORS, build_site, search_texts

from site_src.plugin import _front_matter
from site_src.records import RecordError
from site_src.versions import source_version

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = Path(__file__).parent / "fixtures" / "policies"
FIXTURE_HOST = "policies.example.org"  # the fixture's site_url
ACTIVE_DAY = "2026-11-25"  # privacy changed 2026-11-20 (effective 2026-12-20), terms 2026-11-10
TERMS_SUMMARY = "Explained how long feedback is kept."


def site_build(project: Path, out: Path, generator: str, day: str | None = ACTIVE_DAY, quiet: bool = True) -> subprocess.CompletedProcess[str]:
    """Build with ``generator`` under --strict in a fresh process, as CI does, with the build date fixed to ``day``.
    (``quiet`` hides MkDocs' warnings from --strict too, as MkDocs 1.6 filters them before it counts them.)"""
    return build_site(project, out, generator, day=day, quiet=quiet)


def built(project: Path, out: Path, generator: str, day: str | None = ACTIVE_DAY) -> Path:
    result = site_build(project, out, generator, day)
    assert result.returncode == 0, result.stderr
    return out


def fixture_copy(tmp: Path) -> Path:
    """The fixture site copied outside any git repository: its pages have no history (require_history: false)."""
    return shutil.copytree(FIXTURE, tmp / "project")


def html_files(site: Path) -> list[Path]:
    return sorted(site.rglob("*.html"))


@pytest.fixture(scope="module", params=GENERATORS)
def generator(request: pytest.FixtureRequest) -> str:
    """Every test of this module that builds a site runs once per generator."""
    return str(request.param)


class Elements(HTMLParser):
    """Every start tag of a page as (tag, attributes), plus the text inside the first data-policy-banner."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.styles: list[str] = []
        self._in_style = False
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        self._in_style = tag == "style"
        if "style" in dict(attrs):
            self.styles.append(dict(attrs)["style"] or "")

    def handle_data(self, data: str) -> None:
        if self._in_style:
            self.styles.append(data)
            self._in_style = False

    def with_attr(self, name: str) -> list[tuple[str, dict[str, str | None]]]:
        return [(t, a) for t, a in self.tags if name in a]


def banner_text(page: Path) -> str:
    html = page.read_text(encoding="utf-8")
    match = re.search(r"<div class=\"policy-banner\" data-policy-banner>(.*?)</ul>", html, re.DOTALL)
    assert match, f"no banner in {page}"
    return " ".join(re.sub(r"<[^>]+>", " ", match.group(1)).split())


@pytest.fixture(scope="module")
def active_site(tmp_path_factory: pytest.TempPathFactory, generator: str) -> Path:
    tmp = tmp_path_factory.mktemp("active")
    return built(fixture_copy(tmp), tmp / "site", generator)


@pytest.fixture(scope="module")
def real_site(tmp_path_factory: pytest.TempPathFactory, generator: str) -> Path:
    """The shipped docs/ with the shipped mkdocs.yml, under --strict."""
    return built(ROOT, tmp_path_factory.mktemp("real") / "site", generator, day=None)


def test_banner_on_every_html_file_while_a_change_is_active(active_site: Path) -> None:
    pages = html_files(active_site)
    assert active_site / "404.html" in pages and len(pages) >= 5
    for page in pages:
        banners = Elements(page.read_text(encoding="utf-8")).with_attr("data-policy-banner")
        assert len(banners) == 1, f"{page.relative_to(active_site)} has {len(banners)} banners"


def test_banner_on_no_html_file_when_no_change_is_active(tmp_path: Path, generator: str) -> None:
    site = built(fixture_copy(tmp_path), tmp_path / "site", generator, day="2027-01-01")
    for page in html_files(site):
        html = page.read_text(encoding="utf-8")
        assert "data-policy-banner" not in html and "md-banner" not in html, page.relative_to(site)


def test_banner_lists_changes_newest_first_with_future_effective_wording(active_site: Path) -> None:
    text = banner_text(active_site / "index.html")
    privacy = "Privacy Policy , changed on 20 November 2026 ; takes effect on 20 December 2026 : Clarified how aggregate statistics are used."
    assert privacy in text
    assert f"Terms of Use , changed on 10 November 2026 : {TERMS_SUMMARY}" in text
    assert text.index("Privacy Policy") < text.index("Terms of Use")
    assert "Fixed a typo" not in text  # material: false is never announced


def test_banner_links_to_each_policy_page(active_site: Path) -> None:
    banner = re.search(r'data-policy-banner>.*?</div>', (active_site / "privacy" / "index.html").read_text(), re.DOTALL)
    assert banner
    links = [a.get("href") or "" for t, a in Elements(banner.group(0)).tags if t == "a"]
    assert {posixpath.normpath(posixpath.join("privacy", href)) for href in links} == {"privacy", "terms"}
    assert "../terms/" in links
    # The 404 page is served at any depth, so its links are absolute.
    html_404 = (active_site / "404.html").read_text(encoding="utf-8")
    assert 'href="/privacy/">Read the Privacy Policy</a>' in html_404 and 'href="/terms/">Read the Terms of Use' in html_404


@pytest.mark.parametrize(("day", "announced"), [("2026-12-10", True), ("2026-12-11", False)], ids=["day-30-in", "day-31-out"])
def test_banner_window_edges(tmp_path: Path, generator: str, day: str, announced: bool) -> None:
    # terms changed 2026-11-10; privacy (effective 2026-12-20) keeps the banner itself up on both days.
    site = built(fixture_copy(tmp_path), tmp_path / "site", generator, day=day)
    assert (TERMS_SUMMARY in banner_text(site / "index.html")) is announced


MALFORMED = {
    "bad-date": ("docs/terms.md", "date: 2026-11-10", "date: 10/11/2026", "docs/terms.md: changes[0].date must be YYYY-MM-DD, got '10/11/2026'."),
    "impossible-date": ("docs/terms.md", "date: 2026-11-10", "date: 2026-13-01", "docs/terms.md: changes[0].date must be YYYY-MM-DD, got '2026-13-01'."),
    "date-with-time": ("docs/terms.md", "date: 2026-11-10", "date: 2026-11-10 09:30:00", "docs/terms.md: changes[0].date must be YYYY-MM-DD, got '2026-11-10 09:30:00'."),
    "yaml-syntax": ("docs/terms.md", "policy_id: terms", "policy_id: [terms", "docs/terms.md: the front matter is not valid YAML at line"),
    "missing-summary": ("docs/terms.md", "summary: Explained how long feedback is kept.", "material: true", "docs/terms.md: changes[0].summary must be"),
    "unknown-key": ("docs/terms.md", "summary:", "sumary:", "docs/terms.md: changes[0].sumary is not a known field"),
    "effective-before-date": ("docs/privacy.md", "effective: 2026-12-20", "effective: 2026-11-19", "docs/privacy.md: changes[1].effective (2026-11-19) is before its date"),
    "changes-without-policy-id": ("docs/terms.md", "policy_id: terms\n", "", "docs/terms.md: changes needs a policy_id"),
    "changes-not-a-list": ("docs/terms.md", "  - date: 2026-11-10\n    summary", "  date: 2026-11-10\n  summary", "docs/terms.md: changes must be a list"),
    "duplicate-policy-id": ("docs/terms.md", "policy_id: terms", "policy_id: privacy", "docs/terms.md: policy_id 'privacy' is already used by docs/privacy.md"),
}


@pytest.mark.parametrize("case", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_record_fails_the_build_naming_the_field(tmp_path: Path, generator: str, case: tuple[str, str, str, str]) -> None:
    file, old, new, message = case
    project = shutil.copytree(FIXTURE, tmp_path / "project")
    source = (project / file).read_text(encoding="utf-8")
    assert old in source
    (project / file).write_text(source.replace(old, new, 1), encoding="utf-8")
    result = site_build(project, tmp_path / "site", generator)
    assert result.returncode != 0
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def status_text(page: Path) -> str:
    match = re.search(r"<p class=\"policy-status\" data-policy-status>(.*?)</p>", page.read_text(encoding="utf-8"), re.DOTALL)
    assert match, f"no status line in {page}"
    return " ".join(re.sub(r"<[^>]+>", "", match.group(1)).split())


def test_status_line_without_history_comes_from_the_latest_record(active_site: Path) -> None:
    # The fixture has no git history: no change history pages to link to, only the feed.
    assert status_text(active_site / "privacy" / "index.html") == "This text takes effect on 20 December 2026. Changes feed (Atom)"
    assert status_text(active_site / "terms" / "index.html") == "In force since 10 November 2026. Changes feed (Atom)"
    assert "data-policy-status" not in (active_site / "index.html").read_text(encoding="utf-8")
    assert not [loc for loc, text in search_texts(active_site) if "In force since" in text or "Changes feed" in text]


BAD_OPTIONS = {
    "unknown-pattern": ('policies: ["polices/*.md"]', "the policies pattern 'polices/*.md' matches no page"),
    "absolute-pattern": ('policies: ["/docs/*.md"]', "policies[0] must be relative to docs_dir"),
    # Quoted: MkDocs' own YAML loader stops with a traceback on an impossible unquoted date, before any plugin runs.
    "bad-adoption-date": ('adopted: "2024-13-01"', "adopted must be a date written YYYY-MM-DD"),
    "adoption-date-in-words": ("adopted: June 2024", "adopted must be a date written YYYY-MM-DD"),
}


@pytest.mark.parametrize("case", BAD_OPTIONS.values(), ids=BAD_OPTIONS.keys())
def test_bad_adoption_options_fail_the_build_saying_why(tmp_path: Path, generator: str, case: tuple[str, str]) -> None:
    option, message = case
    project = fixture_copy(tmp_path)
    config = project / "mkdocs.yml"
    config.write_text(config.read_text().replace("require_history: false", f"require_history: false\n      {option}"), encoding="utf-8")
    result = site_build(project, tmp_path / "site", generator, quiet=False)
    assert result.returncode != 0 and message in result.stderr and "Traceback" not in result.stderr


def test_two_builds_with_the_same_source_date_epoch_are_byte_identical(active_site: Path, tmp_path: Path, generator: str) -> None:
    again = built(fixture_copy(tmp_path), tmp_path / "site", generator)
    files = sorted(p.relative_to(active_site) for p in active_site.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file())
    search = {"mkdocs": {"sitemap.xml.gz", "search/search_index.json"}, "zensical": {"sitemap.xml", "search.json"}}[generator]
    assert {Path(p) for p in search} | {Path("policy-versions.json"), Path("policy-shell.html"), Path("changes.xml")} <= set(files)
    different = [str(f) for f in files if (active_site / f).read_bytes() != (again / f).read_bytes()]
    assert different == []


def manifest_version(site: Path, policy_id: str) -> str:
    policies = json.loads((site / "policy-versions.json").read_text(encoding="utf-8"))["policies"]
    return next(p["version"] for p in policies if p["id"] == policy_id)


def test_manifest_version_changes_exactly_when_the_policy_text_changes(tmp_path: Path, generator: str) -> None:
    project = shutil.copytree(FIXTURE, tmp_path / "project")
    privacy = project / "docs" / "privacy.md"
    original = manifest_version(built(project, tmp_path / "one", generator), "privacy")
    assert original == source_version(privacy.read_text(encoding="utf-8"))

    new_record = "changes:\n  - date: 2026-11-24\n    summary: Front matter only.\n"
    privacy.write_text(privacy.read_text().replace("changes:\n", new_record).replace("How the", "How an"), encoding="utf-8")
    assert manifest_version(built(project, tmp_path / "two", generator), "privacy") == original

    privacy.write_text(privacy.read_text().replace("never identify anyone", "never identify a person"), encoding="utf-8")
    assert manifest_version(built(project, tmp_path / "three", generator), "privacy") != original


def test_manifest_lists_each_policy_with_its_records(active_site: Path) -> None:
    manifest = json.loads((active_site / "policy-versions.json").read_text(encoding="utf-8"))
    privacy, terms = manifest["policies"]
    assert (privacy["id"], privacy["title"], privacy["url"]) == ("privacy", "Privacy Policy", "privacy/")
    assert [c["date"] for c in privacy["changes"]] == ["2026-11-20", "2026-10-15"]
    assert terms["changes"] == [{"date": "2026-11-10", "effective": "2026-11-10", "summary": TERMS_SUMMARY, "material": True}]
    assert privacy["versions"] == [{"version": privacy["version"], "effective": "2026-12-20", "url": "privacy/", "current": True}]


LOADING_RELS = {"stylesheet", "preload", "modulepreload", "prefetch", "preconnect", "dns-prefetch", "icon", "apple-touch-icon", "manifest"}


def foreign_references(page: Path, own_host: str) -> list[str]:
    """URLs in a page that make a browser contact another host (scripts, styles, fonts, images, frames)."""
    elements = Elements(page.read_text(encoding="utf-8"))
    urls: list[str] = []
    for tag, attrs in elements.tags:
        if tag == "link" and LOADING_RELS & set((attrs.get("rel") or "").lower().split()):
            urls.append(attrs.get("href") or "")
        for name in ("src", "data", "poster"):
            if tag in {"script", "img", "iframe", "frame", "source", "video", "audio", "embed", "object", "track", "input"}:
                urls.append(attrs.get(name) or "")
        urls += [part.split()[0] for part in (attrs.get("srcset") or "").split(",") if part.strip()]
    for css in elements.styles:
        urls += re.findall(r"url\(\s*['\"]?([^'\")]+)", css) + re.findall(r"@import\s+['\"]([^'\"]+)", css)
    return [u for u in urls if urlsplit(u.strip()).netloc not in ("", own_host)]


@pytest.mark.parametrize("which", ["active_site", "real_site"])
def test_no_html_file_loads_anything_from_another_host(request: pytest.FixtureRequest, generator: str, which: str) -> None:
    site: Path = request.getfixturevalue(which)
    own_host = FIXTURE_HOST if which == "active_site" else "127.0.0.1:8000"
    offenders = {str(p.relative_to(site)): foreign_references(p, own_host) for p in html_files(site)}
    assert {p: urls for p, urls in offenders.items() if urls} == {}
    for css in site.rglob("*.css"):
        assert not re.search(r"(url\(\s*['\"]?|@import\s+['\"]?)(https?:)?//", css.read_text(encoding="utf-8")), css


def test_foreign_reference_check_catches_a_google_font(tmp_path: Path) -> None:
    page = tmp_path / "index.html"
    page.write_text(
        '<link rel="stylesheet" href="https://fonts.googleapis.com/css?family=Roboto"><link rel="canonical" href="https://x.org/">'
        '<img src="//cdn.example.com/a.png"><style>@font-face{src:url(https://fonts.gstatic.com/r.woff2)}</style>'
    )
    assert foreign_references(page, FIXTURE_HOST) == [
        "https://fonts.googleapis.com/css?family=Roboto", "//cdn.example.com/a.png", "https://fonts.gstatic.com/r.woff2"
    ]


def test_shipped_docs_build_strict_with_the_privacy_manifest(real_site: Path) -> None:
    manifest = json.loads((real_site / "policy-versions.json").read_text(encoding="utf-8"))
    privacy = next(p for p in manifest["policies"] if p["id"] == "privacy")
    assert privacy["version"] == source_version((ROOT / "docs" / "privacy.md").read_text(encoding="utf-8"))
    assert (real_site / "404.html").is_file() and (real_site / "feedback" / "index.html").is_file()


def test_feedback_form_posts_the_current_consent_policy_version(active_site: Path) -> None:
    elements = Elements((active_site / "feedback" / "index.html").read_text(encoding="utf-8"))
    (_, form), = elements.with_attr("data-feedback-form")
    assert (form["action"], form["method"]) == ("/api/feedback", "post")
    hidden = {a["name"]: a["value"] for t, a in elements.tags if t == "input" and a.get("type") == "hidden"}
    assert hidden == {"policy_id": "privacy", "policy_version": manifest_version(active_site, "privacy"), "page": "/feedback/"}


def test_feedback_form_fields_have_labels_error_slots_and_unticked_consents(active_site: Path) -> None:
    elements = Elements((active_site / "feedback" / "index.html").read_text(encoding="utf-8"))
    fields = {a["name"]: (t, a) for t, a in elements.tags if t in {"input", "textarea"} and "name" in a and a.get("type") != "hidden"}
    labels = {a["for"] for t, a in elements.tags if t == "label"}
    ids = {a["id"] for t, a in elements.tags if "id" in a}
    for name in ("message", "email", "consent_contact", "consent_updates", "consent_third_parties"):
        tag, attrs = fields[name]
        assert name in labels and f"{name}-error" in ids and f"{name}-error" in (attrs.get("aria-describedby") or "")
        assert "checked" not in attrs
    assert fields["message"][1].get("maxlength") == "5000" and "required" in fields["message"][1]
    assert fields["email"][1]["type"] == "email" and "required" not in fields["email"][1]
    trap = fields["website"][1]
    assert (trap["tabindex"], trap["autocomplete"], trap["aria-hidden"]) == ("-1", "off", "true")
    assert any(a.get("role") == "alert" and a.get("id") == "feedback-summary" for t, a in elements.tags)


def test_feedback_form_says_updates_and_sharing_wait_for_the_confirmation_mail(active_site: Path) -> None:
    page = (active_site / "feedback" / "index.html").read_text(encoding="utf-8")
    described = {a["name"]: (a.get("aria-describedby") or "").split() for t, a in Elements(page).tags if t == "input"
                 and "name" in a}
    assert "consents-confirm-hint" in described["consent_updates"] and "consents-confirm-hint" in described["consent_third_parties"]
    hint = " ".join(page.split('id="consents-confirm-hint">', 1)[1].split("</p>", 1)[0].split())
    assert "sends a confirmation e-mail to your address" in hint and "only after you follow the link in it" in hint


def test_audit_fixes_search_dialog_name_and_meta_description(active_site: Path) -> None:
    elements = Elements((active_site / "terms" / "index.html").read_text(encoding="utf-8"))
    dialogs = [a for t, a in elements.tags if a.get("role") == "dialog"]
    assert dialogs and all(a.get("aria-label") for a in dialogs)
    descriptions = [a["content"] for t, a in elements.tags if t == "meta" and a.get("name") == "description"]
    assert descriptions == ["The policies of an example organisation."]


def test_writer_text_is_escaped_in_the_banner_feed_link_and_feedback_form(tmp_path: Path, generator: str) -> None:
    # Neither MkDocs' Jinja nor Zensical's MiniJinja autoescapes: we must escape summaries, titles and the site name.
    project = fixture_copy(tmp_path)
    terms = project / "docs" / "terms.md"
    terms.write_text(terms.read_text().replace(TERMS_SUMMARY, "Terms & <b>conditions</b>"), encoding="utf-8")
    privacy = project / "docs" / "privacy.md"
    privacy.write_text(privacy.read_text().replace("title: Privacy Policy", 'title: "Privacy & <i>data</i>"'), encoding="utf-8")
    config = project / "mkdocs.yml"
    config.write_text(config.read_text().replace("site_name: Example policies", 'site_name: "Ex & <s>"'), encoding="utf-8")
    html = (built(project, tmp_path / "site", generator) / "feedback" / "index.html").read_text(encoding="utf-8")
    banner = re.search(r'<div class="policy-banner" data-policy-banner>.*?</div>', html, re.DOTALL)
    assert banner and "Terms &amp; &lt;b&gt;conditions&lt;/b&gt;" in banner.group(0)
    assert "<b>" not in banner.group(0) and "<i>" not in banner.group(0) and "Privacy &amp; &lt;i&gt;data" in banner.group(0)
    assert 'title="Ex &amp; &lt;s&gt;: policy changes"' in html
    note = re.search(r'<p class="feedback-form__consent-note">.*?</p>', html, re.DOTALL)
    assert note and "Privacy &amp; &lt;i&gt;data&lt;/i&gt;</a>" in note.group(0)


def test_front_matter_reuses_mkdocs_parse_only_where_it_reads_as_ours() -> None:
    text = "policy_id: privacy\nchanges:\n  - date: 2026-11-20\n    summary: Named the partners.\n"
    mkdocs_meta = yaml.load(text, Loader=yaml.SafeLoader)  # what MkDocs gives: dates as date objects
    assert _front_matter(mkdocs_meta, "# Privacy\n", text, "docs/privacy.md") is mkdocs_meta
    # A slug or a summary that YAML reads as a date: ours keeps the text, as the writer typed it.
    for raw in ("policy_id: 2026-01-01\n", "policy_id: p\nchanges:\n  - date: 2026-11-20\n    summary: 2026-11-20\n"):
        meta = _front_matter(yaml.load(raw, Loader=yaml.SafeLoader), "# P\n", raw, "docs/p.md")
        assert not any(isinstance(v, dt.date) for v in [meta["policy_id"], *(c["summary"] for c in meta.get("changes", []))])
    # MkDocs dropped a block it could not read, and another plugin filled meta: ours reads it and names the line.
    broken = "policy_id: [privacy\n"
    with pytest.raises(RecordError, match="docs/privacy.md: the front matter is not valid YAML at line"):
        _front_matter({"title": "From another plugin"}, f"---\n{broken}---\n# Privacy\n", broken, "docs/privacy.md")


def test_page_shell_is_written_with_urls_from_the_site_root(active_site: Path) -> None:
    shell = (active_site / "policy-shell.html").read_text(encoding="utf-8")
    assert shell.count("<!--policy-site:title-->") == 1 and shell.count("<!--policy-site:content-->") == 1
    urls = [a.get(k) or "" for _, a in Elements(shell).tags for k in ("href", "src") if a.get(k)]
    assert urls and all(u.startswith(("/", "#", "https://")) and not u.startswith("//") for u in urls), urls
    assert 'href="/privacy/">Read the Privacy Policy</a>' in shell and "/assets/" in shell


def test_no_input_hidden_from_assistive_technology_can_take_focus(real_site: Path) -> None:
    # Lighthouse's aria-hidden-focus: Zensical's palette option (no toggle) is aria-hidden; our override unfocuses it.
    for page in html_files(real_site):
        for tag, attrs in Elements(page.read_text(encoding="utf-8")).tags:
            if tag == "input" and attrs.get("aria-hidden") == "true":
                assert attrs.get("tabindex") == "-1", f"{page.relative_to(real_site)}: {attrs}"
