"""Adopting an existing policy repository, through real `mkdocs build --strict` runs of a scripted git repository.

The repository (built once for the module): policies found by the `policies` patterns without a policy_id, two
texts of one policy on one day, a front-matter-only commit, a pull request merged with two commits, a pinned
policy renamed with `git mv`, then change records after the adoption date. The failing cases build clones of it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import feedparser
import pytest
from gitrepo import GitRepo
from site_build import GENERATORS
from test_plugin_history import build, section, texts

from site_src.versions import policy_version

BUILD_DAY = "2024-10-15"
ADOPTED = "2024-06-30"
CONFIG = f"""\
site_name: Adoption test
site_description: Policies adopted from their repository.
site_url: https://policies.example.org/
theme:
  name: material
  font: false
plugins:
  - search
  - policy:
      policies: ["policies/**/*.md", "!policies/drafts/*"]
      adopted: {ADOPTED}
"""
P1 = "# Privacy\n\nWe collect your e-mail address.\n\nWe keep it for five years.\n"
P2 = P1.replace("We collect", "We may collect")
P3 = P2.replace("e-mail", "email")
P4 = P3.replace("five years", "two years")
P5 = P4 + "\nWe never share it.\n"
L1 = "# Leave\n\nStaff have 20 days of leave.\n"
L2A = L1.replace("20 days", "30 days")
L2 = L1.replace("20 days", "25 days")
T1 = "# Terms\n\nUse the site kindly.\n"
T2 = T1 + "\nReport misuse to the team.\n"
T3 = T2.replace("kindly", "lawfully")
S1 = "# Security\n\nReport vulnerabilities to the security team, who answer within two working days.\n"
S2 = S1.replace("two working days", "one working day")
PRIVACY_RECORD = "changes:\n  - date: 2024-08-01\n    summary: Stopped sharing with anyone.\n"
TERMS_RECORD = "changes:\n  - date: 2024-10-10\n    summary: Asked for lawful use.\n    effective: 2024-11-10\n"


def page(body: str, front: str = "") -> str:
    return (f"---\n{front}---\n\n" if front else "") + body


def terms(body: str, extra: str = "") -> str:
    return page(body, "policy_id: terms\n" + extra)


def make_repo(root: Path) -> GitRepo:
    repo = GitRepo(root)
    repo.commit("2024-01-10", {
        "mkdocs.yml": CONFIG, "docs/index.md": "# Home\n\nOur policies.\n", "docs/about.md": "# About\n\nWho we are.\n",
        "docs/policies/privacy.md": P1, "docs/policies/hr/leave.md": L1, "docs/old-terms.md": terms(T1),
        "docs/policies/drafts/idea.md": "# An idea\n\nNot a policy yet.\n", "docs/policies/sec.md": S1,
    }, message="Add the privacy and leave policies")
    repo.commit("2024-02-01", {"docs/policies/privacy.md": P2}, message="Say we may collect")
    repo.commit("2024-02-01", {"docs/policies/privacy.md": P3}, message="Spell email the usual way")
    repo.commit("2024-02-01", {"docs/policies/privacy.md": page(P3, "description: How we handle your data.\n")},
                message="Describe the privacy policy")
    repo.git("checkout", "-q", "-b", "leave")
    repo.commit("2024-03-01", {"docs/policies/hr/leave.md": L2A}, message="Draft thirty days")
    repo.commit("2024-03-02", {"docs/policies/hr/leave.md": L2}, message="Settle on twenty-five days")
    repo.git("checkout", "-q", "main")
    repo.commit("2024-03-03", {"docs/about.md": "# About\n\nWho we are, and where.\n"}, message="About: where we are")
    repo.git("merge", "-q", "--no-ff", "-m", "Merge pull request #7 from staff/leave", "-m", "Give 25 days of leave",
             "leave", day="2024-03-05")
    repo.git("mv", "docs/old-terms.md", "docs/terms.md")
    repo.commit("2024-04-01", message="Move the terms")
    repo.commit("2024-05-01", {"docs/terms.md": terms(T2)}, message="Terms: how to report misuse")
    repo.git("mv", "docs/policies/sec.md", "docs/policies/security.md")  # before the adoption: no id published yet
    repo.commit("2024-05-15", message="Spell security out")
    repo.commit("2024-06-01", {"docs/policies/security.md": S2}, message="Answer within a day")
    repo.commit("2024-06-30", {"docs/policies/privacy.md": page(P4, "description: How we handle your data.\n")},
                message="Keep addresses for two years")
    repo.commit("2024-08-01", {"docs/policies/privacy.md": page(P5, "description: How we handle your data.\n" + PRIVACY_RECORD)},
                message="Stop sharing")
    repo.commit("2024-09-01", {"docs/policies/hr/leave.md": page(L2, "title: Annual leave\n")}, message="Title the leave policy")
    repo.commit("2024-10-10", {"docs/terms.md": terms(T3, TERMS_RECORD)}, message="Terms: lawful use")
    return repo


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> GitRepo:
    return make_repo(tmp_path_factory.mktemp("adoption") / "repo")


@pytest.fixture(scope="module", params=GENERATORS)
def generator(request: pytest.FixtureRequest) -> str:
    """Every test of this module that builds a site runs once per generator."""
    return str(request.param)


@pytest.fixture(scope="module")
def site(repo: GitRepo, generator: str) -> Path:
    # git on the PATH is a wrapper that logs each command line, so that a test can count the git processes.
    tools = repo.root.parent / f"bin-{generator}"
    tools.mkdir()
    real = shutil.which("git")
    log = repo.root.parent / f"git-{generator}.log"
    (tools / "git").write_text(f'#!/bin/sh\necho "$*" >> {log}\nexec {real} "$@"\n', encoding="utf-8")
    (tools / "git").chmod(0o755)
    out = repo.root.parent / f"site-{generator}"
    result = build(repo.root, out, generator, on=BUILD_DAY, path=f"{tools}:{os.environ['PATH']}")
    assert result.returncode == 0, result.stderr
    assert "WARNING" not in result.stderr, result.stderr
    return out


def test_git_runs_a_fixed_number_of_processes_per_build(repo: GitRepo, site: Path, generator: str) -> None:
    log = repo.root.parent / f"git-{generator}.log"
    commands = [line.split()[0 if not line.startswith("-c") else 2] for line in log.read_text().splitlines()]
    # The plugin checks the repository; the worker checks it too, reads the log once and every text in one go.
    assert sorted(commands) == ["cat-file", "log", "rev-parse", "rev-parse"]


def manifest_policy(site: Path, policy_id: str) -> dict[str, Any]:
    manifest = json.loads((site / "policy-versions.json").read_text(encoding="utf-8"))
    found: dict[str, Any] = next(p for p in manifest["policies"] if p["id"] == policy_id)
    return found


def html(site: Path, url: str) -> str:
    return (site / url / "index.html").read_text(encoding="utf-8")


def test_policies_found_by_pattern_take_their_id_from_their_path(site: Path) -> None:
    manifest = json.loads((site / "policy-versions.json").read_text(encoding="utf-8"))
    assert [(p["id"], p["url"]) for p in manifest["policies"]] == [
        ("policies/hr/leave", "policies/hr/leave/"), ("policies/privacy", "policies/privacy/"),
        ("policies/security", "policies/security/"), ("terms", "terms/"),
    ]


def test_page_renamed_before_the_adoption_date_keeps_its_history_and_its_new_id(site: Path) -> None:
    security = manifest_policy(site, "policies/security")
    assert [(v["effective"], v["version"]) for v in security["versions"]] == [
        ("2024-06-01", policy_version(S2)), ("2024-01-10", policy_version(S1))
    ]


def test_versions_are_exactly_the_commits_that_changed_the_text_then_the_records(site: Path) -> None:
    privacy = manifest_policy(site, "policies/privacy")
    assert [(v["effective"], v["url"], v["current"]) for v in privacy["versions"]] == [
        ("2024-08-01", "policies/privacy/versions/2024-08-01/", True),
        ("2024-06-30", "policies/privacy/versions/2024-06-30/", False),
        ("2024-02-01", "policies/privacy/versions/2024-02-01-2/", False),  # the day's second text keeps its own URL
        ("2024-02-01", "policies/privacy/versions/2024-02-01/", False),
        ("2024-01-10", "policies/privacy/versions/2024-01-10/", False),
    ]
    assert [v["version"] for v in privacy["versions"]] == [policy_version(b) for b in (P5, P4, P3, P2, P1)]
    for version, sentence in zip(privacy["versions"], ("never share", "two years", "your email", "may collect", "We collect")):
        assert sentence in html(site, version["url"])


def test_changes_from_history_carry_the_commit_subject_and_are_marked(site: Path) -> None:
    privacy = manifest_policy(site, "policies/privacy")
    assert [(c["date"], c["summary"], c.get("source"), c["material"]) for c in privacy["changes"]] == [
        ("2024-08-01", "Stopped sharing with anyone.", None, True),
        ("2024-06-30", "Keep addresses for two years", "history", None),
        ("2024-02-01", "Spell email the usual way", "history", None),
        ("2024-02-01", "Say we may collect", "history", None),
        ("2024-01-10", "Add the privacy and leave policies", "history", None),
    ]
    page = html(site, "policies/privacy/changes")
    typo = section(page, "history-2024-02-01-2")
    assert "Spell email the usual way" in typo and 'data-change-source="history"' in typo
    assert texts(typo, "del") == ["removed: e-mail"] and texts(typo, "ins") == ["added: email"]
    assert 'href="../../../policies/privacy/versions/2024-02-01/">Text before' in typo
    record = section(page, "change-2024-08-01")
    assert 'data-change-source="record"' in record and texts(record, "ins") == ["added: We never share it."]


def test_merged_pull_request_is_one_change_dated_by_its_merge(site: Path) -> None:
    leave = manifest_policy(site, "policies/hr/leave")
    assert [(v["effective"], v["version"]) for v in leave["versions"]] == [
        ("2024-03-05", policy_version(L2)), ("2024-01-10", policy_version(L1))
    ]
    assert [c["summary"] for c in leave["changes"]] == ["Merge pull request #7 from staff/leave", "Add the privacy and leave policies"]
    merge = section(html(site, "policies/hr/leave/changes"), "history-2024-03-05")
    assert "Merged: Give 25 days of leave" in merge and texts(merge, "ins") == ["added: 25"]


def test_pinned_policy_follows_its_rename_and_records_follow_adoption(site: Path) -> None:
    terms_entry = manifest_policy(site, "terms")
    assert [(v["effective"], v["current"]) for v in terms_entry["versions"]] == [
        ("2024-11-10", True), ("2024-05-01", False), ("2024-01-10", False)
    ]
    assert terms_entry["changes"][0] == {
        "date": "2024-10-10", "effective": "2024-11-10", "summary": "Asked for lawful use.", "material": True,
        "version": policy_version(T3),
    }


def test_status_line_on_every_policy_page_and_on_no_other(site: Path) -> None:
    policy_pages = {"policies/privacy/index.html", "policies/hr/leave/index.html", "policies/security/index.html", "terms/index.html"}
    pages = {str(p.relative_to(site)): p.read_text(encoding="utf-8") for p in site.rglob("*.html")}
    assert policy_pages < set(pages) and "policies/drafts/idea/index.html" in pages and "404.html" in pages
    assert {name for name, text in pages.items() if "data-policy-status" in text} == policy_pages
    assert all(pages[name].count("data-policy-status") == 1 for name in policy_pages)


def status_line(site: Path, url: str) -> tuple[str, list[str]]:
    match = re.search(r"<p class=\"policy-status\" data-policy-status>(.*?)</p>", html(site, url), re.DOTALL)
    assert match, url
    return " ".join(re.sub(r"<[^>]+>", "", match.group(1)).split()), re.findall(r'href="([^"]+)"', match.group(1))


def test_status_line_says_since_when_and_links_that_resolve(site: Path) -> None:
    page = html(site, "policies/privacy")
    assert page.index("</h1>") < page.index("data-policy-status") < page.index("We never share it.")
    text, links = status_line(site, "policies/privacy")
    assert text == "In force since 1 August 2024. Change history · All versions (5) · Changes feed (Atom)"
    assert links == ["changes/", "versions/", "../../changes.xml"]
    for link in links:
        assert (site / "policies" / "privacy" / link).resolve().exists(), link
    listing = html(site, "policies/privacy/versions")
    assert listing.count("<li>") == 5 and "(text 2 of that day)" in listing


def test_status_line_of_a_text_not_yet_in_force_names_the_text_that_applies(site: Path) -> None:
    text, links = status_line(site, "terms")
    assert text.startswith("This text takes effect on 10 November 2024; until then the text in force since 1 May 2024 applies.")
    assert links[0] == "versions/2024-05-01/" and (site / "terms" / links[0] / "index.html").is_file()


def test_changes_from_history_are_neither_in_the_feed_nor_in_the_banner(site: Path) -> None:
    feed = feedparser.parse((site / "changes.xml").read_bytes())
    assert [e.title for e in feed.entries] == ["Terms: Asked for lawful use.", "Privacy: Stopped sharing with anyone."]
    assert "Keep addresses" not in html(site, "")


def test_unrecorded_edit_after_adoption_still_fails_strict(repo: GitRepo, tmp_path: Path, generator: str) -> None:
    subprocess.run(["git", "clone", "-q", str(repo.root), str(tmp_path / "clone")], check=True)
    clone = GitRepo(tmp_path / "clone")
    privacy = clone.root / "docs/policies/privacy.md"
    clone.commit("2024-10-12", {"docs/policies/privacy.md": privacy.read_text().replace("two years", "ten years")}, message="Longer")
    result = build(clone.root, tmp_path / "site", generator, on=BUILD_DAY)
    assert result.returncode != 0
    assert "docs/policies/privacy.md: the policy text differs" in result.stderr
    assert "+We keep it for ten years." in result.stderr


def test_renamed_page_with_a_path_id_fails_naming_its_old_id_until_pinned(repo: GitRepo, tmp_path: Path, generator: str) -> None:
    subprocess.run(["git", "clone", "-q", str(repo.root), str(tmp_path / "clone")], check=True)
    clone = GitRepo(tmp_path / "clone")
    clone.git("mv", "docs/policies/hr/leave.md", "docs/policies/hr/annual-leave.md")
    clone.commit("2024-10-12", message="Rename the leave policy")
    result = build(clone.root, tmp_path / "site", generator, on=BUILD_DAY)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert (
        "docs/policies/hr/annual-leave.md: its policy id comes from its path ('policies/hr/annual-leave'), but the file "
        "was renamed from docs/policies/hr/leave.md on 2024-10-12, when its id was 'policies/hr/leave'."
    ) in result.stderr
    assert "add 'policy_id: policies/hr/leave' to its front matter" in result.stderr
    moved = clone.root / "docs/policies/hr/annual-leave.md"
    moved.write_text(moved.read_text().replace("---\n", "---\npolicy_id: policies/hr/leave\n", 1), encoding="utf-8")
    result = build(clone.root, tmp_path / "site", generator, on=BUILD_DAY)
    assert result.returncode == 0, result.stderr
    leave = manifest_policy(tmp_path / "site", "policies/hr/leave")
    assert leave["url"] == "policies/hr/annual-leave/"
    assert [v["version"] for v in leave["versions"]] == [policy_version(L2), policy_version(L1)]
