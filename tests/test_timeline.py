from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

from gitrepo import GitRepo, policy_source

from site_src.history import read_history
from site_src.records import ChangeRecord, load_meta, parse_changes
from site_src.timeline import Timeline, build_timeline, unrecorded_edit
from site_src.versions import policy_version, split_front_matter

V1 = "# Privacy\n\nWe may share aggregate statistics with partners.\n"
V2 = "# Privacy\n\nWe may share aggregate statistics with named partners.\n"
V3 = "# Privacy\n\nWe never share statistics.\n"
R2 = {"date": "2026-03-01", "summary": "Named the partners.", "effective": "2026-04-01"}
R3 = {"date": "2026-06-01", "summary": "Stopped sharing.", "material": True}


def _records(source: str) -> tuple[ChangeRecord, ...]:
    return parse_changes(load_meta(split_front_matter(source)[0], "privacy.md").get("changes"), "privacy.md")


def _timeline(repo: GitRepo) -> Timeline:
    source = (repo.root / "privacy.md").read_text()
    history = read_history(repo.root, [Path("privacy.md")])[Path("privacy.md")]
    return build_timeline(history, _records(source), source, "privacy/")


def _three_versions(tmp_path: Path) -> tuple[GitRepo, list[str]]:
    repo = GitRepo(tmp_path)
    shas = [repo.commit("2026-01-10", {"privacy.md": policy_source(V1)})]
    shas.append(repo.commit("2026-03-01", {"privacy.md": policy_source(V2, [R2])}))
    shas.append(repo.commit("2026-06-02", {"privacy.md": policy_source(V3, [R3, R2])}))
    return repo, shas


def test_timeline_each_record_has_the_text_before_and_the_text_it_introduced(tmp_path: Path) -> None:
    repo, shas = _three_versions(tmp_path)
    newest, older = _timeline(repo).changes
    assert (newest.record.summary, newest.commit, newest.before, newest.after) == ("Stopped sharing.", shas[2], V2, V3)
    assert (older.record.summary, older.commit, older.before, older.after) == ("Named the partners.", shas[1], V1, V2)


def test_timeline_lists_versions_newest_first_with_stable_urls(tmp_path: Path) -> None:
    repo, _ = _three_versions(tmp_path)
    entries = [v.entry() for v in _timeline(repo).versions]
    assert [(e.effective, e.url, e.current) for e in entries] == [
        ("2026-06-01", "privacy/versions/2026-06-01/", True),
        ("2026-04-01", "privacy/versions/2026-04-01/", False),
        ("2026-01-10", "privacy/versions/2026-01-10/", False),
    ]
    assert [e.version for e in entries] == [policy_version(v) for v in (V3, V2, V1)]


def test_timeline_versions_keep_their_text_after_a_rename(tmp_path: Path) -> None:
    repo, _ = _three_versions(tmp_path)
    repo.git("mv", "privacy.md", "policy.md")
    repo.commit("2026-07-01", message="Rename")
    source = (repo.root / "policy.md").read_text()
    history = read_history(repo.root, [Path("policy.md")])[Path("policy.md")]
    timeline = build_timeline(history, _records(source), source, "policy/")
    assert [v.body for v in timeline.versions] == [V3, V2, V1]
    assert timeline.unrecorded_diff is None


def test_timeline_unrecorded_edit_returns_a_short_diff(tmp_path: Path) -> None:
    repo, _ = _three_versions(tmp_path)
    repo.write("privacy.md", policy_source(V3.replace("never", "rarely"), [R3, R2]))
    diff = _timeline(repo).unrecorded_diff
    assert diff is not None
    assert "-We never share statistics." in diff and "+We rarely share statistics." in diff


def test_timeline_edit_that_comes_with_a_new_record_is_not_silent(tmp_path: Path) -> None:
    repo, _ = _three_versions(tmp_path)
    fix: dict[str, Any] = {"date": "2026-08-01", "summary": "Fixed a word.", "material": False}
    repo.write("privacy.md", policy_source(V3.replace("never", "rarely"), [fix, R3, R2]))
    timeline = _timeline(repo)
    assert timeline.unrecorded_diff is None
    assert timeline.changes[0].commit is None and timeline.changes[0].before == V3
    assert timeline.versions[0].current and timeline.versions[0].effective == date(2026, 8, 1)


def test_timeline_committed_unrecorded_edit_is_found_too(tmp_path: Path) -> None:
    repo, _ = _three_versions(tmp_path)
    repo.commit("2026-07-01", {"privacy.md": policy_source(V3 + "\nA quiet addition.\n", [R3, R2])})
    assert "+A quiet addition." in (_timeline(repo).unrecorded_diff or "")


def test_timeline_policy_without_records_warns_on_any_edit(tmp_path: Path) -> None:
    repo = GitRepo(tmp_path)
    repo.commit("2026-01-10", {"privacy.md": policy_source(V1)})
    assert _timeline(repo).unrecorded_diff is None
    repo.write("privacy.md", policy_source(V2))
    assert _timeline(repo).unrecorded_diff is not None


def test_timeline_matches_a_record_whose_summary_was_reworded(tmp_path: Path) -> None:
    repo, shas = _three_versions(tmp_path)
    reworded = dict(R2, summary="Named our partners.")
    repo.commit("2026-07-01", {"privacy.md": policy_source(V3, [R3, reworded])})
    assert _timeline(repo).changes[1].commit == shas[1]


def test_timeline_record_in_the_first_commit_has_no_text_before(tmp_path: Path) -> None:
    repo = GitRepo(tmp_path)
    repo.commit("2026-03-05", {"privacy.md": policy_source(V2, [R2])})
    timeline = _timeline(repo)
    assert timeline.changes[0].before is None
    assert [(v.effective, v.current) for v in timeline.versions] == [(date(2026, 4, 1), True)]


def test_unrecorded_edit_ignores_line_endings_and_surrounding_blank_lines() -> None:
    assert unrecorded_edit("a\nb\n", "\n\na\r\nb\r\n\n") is None
    assert unrecorded_edit("a\nb\n", "a\nc\n") == "--- recorded\n+++ working tree\n@@ -1,2 +1,2 @@\n a\n-b\n+c"


def test_timeline_finds_records_written_in_flow_style(tmp_path: Path) -> None:
    repo = GitRepo(tmp_path)
    repo.commit("2026-01-10", {"privacy.md": policy_source(V1)})
    flow = "---\npolicy_id: privacy\nchanges: [{date: 2026-03-01, summary: Named the partners.}]\n---\n\n" + V2
    sha = repo.commit("2026-03-01", {"privacy.md": flow})
    assert _timeline(repo).changes[0].commit == sha


def test_timeline_two_records_of_one_day_each_get_their_own_commit(tmp_path: Path) -> None:
    repo = GitRepo(tmp_path)
    repo.commit("2026-01-10", {"privacy.md": policy_source(V1)})
    morning = {"date": "2026-03-01", "summary": "Morning change."}
    first = repo.commit("2026-03-01", {"privacy.md": policy_source(V2, [morning])})
    second = repo.commit("2026-03-01", {"privacy.md": policy_source(V3, [{"date": "2026-03-01", "summary": "Later."}, morning])})
    assert {c.record.summary: (c.commit, c.after) for c in _timeline(repo).changes} == {
        "Morning change.": (first, V2),
        "Later.": (second, V3),
    }
