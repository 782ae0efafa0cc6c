"""The history worker's pages, written by HistorySite from a real git repository (no MkDocs)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from gitrepo import GitRepo
from markupsafe import Markup

from site_src.history import HistoryReader
from site_src.history_job import Finish, PolicySource, ShellSource, SiteInfo
from site_src.history_pages import HistorySite, _environment
from site_src.markdown_render import site_root

TITLE = 'Privacy & "Data" <Policy>'
V1 = "# Privacy\n\nWe may share statistics with partners.\n"
V2 = V1.replace("partners", "named partners")
V3 = V2 + "\nWe keep nothing.\n"
BUILD = dt.date(2024, 9, 1)
# A page as the generator renders it: the history pages take its header, banner and footer, their own title and
# content go in its <title> and content area, and its links are rewritten for their depth.
SHELL_PAGE = (
    '<html><head><meta name="description" content="Site."><title>Test</title></head><body><header><a href="/">Home</a>'
    '</header><aside class="md-banner">{banner}</aside><article class="md-content__inner md-typeset"><h1>404</h1></article>'
    '<footer>Foot</footer></body></html>'
)


def _repo(tmp_path: Path) -> GitRepo:
    repo = GitRepo(tmp_path / "repo")
    repo.commit("2024-01-10", {"docs/index.md": "# Home\n", "docs/privacy.md": V1}, message="First")
    repo.commit("2024-03-01", {"docs/privacy.md": V2}, message="Name the partners")
    repo.commit("2024-03-01", {"docs/privacy.md": V3}, message="Keep nothing")
    return repo


def _site(repo: GitRepo, out: Path) -> HistorySite:
    docs = repo.root / "docs"
    pages = {"index.md": "", "privacy.md": "privacy/"}
    info = SiteInfo(
        "Test", "https://example.org/", str(out), "en", "ltr", None, ("a.css",), "icon.png", None, ("toc",), {}, pages,
        tuple(str(docs / p) for p in pages), "changes.xml", BUILD, dt.date(2024, 6, 30),
        tuple((p, str(docs / p)) for p in pages), ("privacy.md",),
    )
    reader = HistoryReader(repo.root)
    reader.request([Path(p) for p in info.history_paths])
    return HistorySite(info, reader.result)


def _policy(repo: GitRepo) -> PolicySource:
    path = repo.root / "docs" / "privacy.md"
    return PolicySource("privacy", TITLE, "privacy/", "privacy.md", str(path), "docs/privacy.md", None, (), True)


def _write(site: HistorySite, repo: GitRepo, banner: str = "") -> dict[str, bytes]:
    site.add(_policy(repo))
    site.finish(Finish("changes.xml", BUILD), ShellSource(SHELL_PAGE.format(banner=banner)))
    out = Path(site.site.site_dir)
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def test_version_pages_are_what_jinja_renders_for_each_version(tmp_path: Path) -> None:
    repo = _repo(tmp_path)
    files = _write(_site(repo, tmp_path / "site"), repo, banner="<p>A change.</p>")
    assert sorted(files) == [
        "changes.xml", "privacy/changes/index.html", "privacy/versions/2024-01-10/index.html",
        "privacy/versions/2024-03-01-2/index.html", "privacy/versions/2024-03-01/index.html", "privacy/versions/index.html",
    ]
    env = _environment()
    url = "privacy/versions/2024-03-01/"
    content = env.get_template("version.html").render(
        site=_site(repo, tmp_path / "unused").site, root=site_root(url), feed_href=site_root(url) + "changes.xml",
        build_date=BUILD, policy=_policy(repo), changes_url="privacy/changes/", versions_url="privacy/versions/",
        kind="warning", status="Superseded",
        notice="This text is no longer in force. It took effect on 1 March 2024 and was replaced on 1 March 2024.",
        heading="", body=Markup('<h1 id="privacy">Privacy</h1>\n<p>We may share statistics with named partners.</p>'),
    )
    page = files[url + "index.html"].decode("utf-8")
    assert '<article class="md-content__inner md-typeset">\n' + content + "\n</article>" in page
    assert f"<title>{Markup.escape(TITLE)}, version of 1 March 2024 - Test</title>" in page
    assert f'content="The {Markup.escape(TITLE)} as in force from 1 March 2024. Superseded."' in page
    assert '<header><a href="../../../">Home</a></header><aside class="md-banner"><p>A change.</p></aside>' in page
    assert '<link rel="stylesheet" href="../../../assets/policy/history.css">' in page and page.endswith("<footer>Foot</footer></body></html>")
    assert "Privacy &amp; &#34;Data&#34; &lt;Policy&gt;</a>" in content


def test_pages_of_a_policy_guessed_before_its_message_are_the_same(tmp_path: Path) -> None:
    repo = _repo(tmp_path)
    guessed = _site(repo, tmp_path / "guessed")
    while guessed.guess():
        pass
    assert guessed.timings["guessed"] == 1
    first = _write(guessed, repo)
    assert guessed.timings["guesses_used"] == 1
    assert first == _write(_site(repo, tmp_path / "plain"), repo)
    assert b"<aside class=\"md-banner\"></aside>" in first["privacy/changes/index.html"]


def test_guess_is_not_used_when_the_plugin_read_other_records(tmp_path: Path) -> None:
    repo = _repo(tmp_path)
    site = _site(repo, tmp_path / "site")
    while site.guess():
        pass
    (repo.root / "docs" / "privacy.md").write_text(V3 + "\nAn edit the guess did not see.\n", encoding="utf-8")
    site.add(_policy(repo))
    assert site.timings["guesses_used"] == 0
    outcome = site.finish(Finish("changes.xml", BUILD), ShellSource(SHELL_PAGE))
    assert "+An edit the guess did not see." in (outcome.policies[0].unrecorded_diff or "")
