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


ADOPTED = date(2024, 6, 30)


def _adopted_timeline(repo: GitRepo, adopted: date = ADOPTED) -> Timeline:
    source = (repo.root / "privacy.md").read_text()
    history = read_history(repo.root, [Path("privacy.md")])[Path("privacy.md")]
    return build_timeline(history, _records(source), source, "privacy/", adopted)


def _adopted_repo(tmp_path: Path) -> tuple[GitRepo, list[str]]:
    """Four texts in git before the adoption date: two on one day, and a front-matter-only commit between."""
    repo = GitRepo(tmp_path)
    shas = [repo.commit("2024-01-10", {"privacy.md": V1}, message="First text")]
    shas.append(repo.commit("2024-03-01", {"privacy.md": V2}, message="Name the partners"))
    repo.commit("2024-03-01", {"privacy.md": "---\ntitle: Privacy\n---\n\n" + V2}, message="Add a title")
    shas.append(repo.commit("2024-03-01", {"privacy.md": "---\ntitle: Privacy\n---\n\n" + V3}, message="Stop sharing"))
    return repo, shas


def test_adopted_versions_are_the_commits_that_changed_the_text(tmp_path: Path) -> None:
    repo, shas = _adopted_repo(tmp_path)
    timeline = _adopted_timeline(repo)
    assert [(c.record.summary, c.record.date, c.commit, c.before, c.after, c.from_history) for c in timeline.changes] == [
        ("Stop sharing", date(2024, 3, 1), shas[2], V2, V3, True),
        ("Name the partners", date(2024, 3, 1), shas[1], V1, V2, True),
        ("First text", date(2024, 1, 10), shas[0], None, V1, True),
    ]
    assert [(v.url, v.body, v.current) for v in timeline.versions] == [
        ("privacy/versions/2024-03-01-2/", V3, True),
        ("privacy/versions/2024-03-01/", V2, False),
        ("privacy/versions/2024-01-10/", V1, False),
    ]
    assert timeline.unrecorded_diff is None


def test_adopted_edit_after_the_adoption_date_still_needs_a_record(tmp_path: Path) -> None:
    repo, _ = _adopted_repo(tmp_path)
    repo.commit("2024-07-01", {"privacy.md": V3.replace("never", "rarely")}, message="Quiet edit")
    timeline = _adopted_timeline(repo)
    assert "+We rarely share statistics." in (timeline.unrecorded_diff or "")
    assert [c.record.summary for c in timeline.changes][0] == "Stop sharing"
    assert _adopted_timeline(repo, date(2024, 7, 1)).unrecorded_diff is None  # adopted a day later: history


def test_adopted_then_records_after_the_date(tmp_path: Path) -> None:
    repo, shas = _adopted_repo(tmp_path)
    record = {"date": "2024-08-01", "summary": "Shared again."}
    later = repo.commit("2024-08-01", {"privacy.md": policy_source(V2, [record])}, message="Share again")
    newest = _adopted_timeline(repo).changes[0]
    assert (newest.record.summary, newest.commit, newest.before, newest.after, newest.from_history) == ("Shared again.", later, V3, V2, False)
    assert [v.url for v in _adopted_timeline(repo).versions][:2] == ["privacy/versions/2024-08-01/", "privacy/versions/2024-03-01-2/"]


def test_adopted_commit_that_came_with_a_record_is_told_by_the_record(tmp_path: Path) -> None:
    repo, shas = _adopted_repo(tmp_path)
    record = {"date": "2024-06-30", "summary": "Named the partners again."}
    sha = repo.commit("2024-06-30", {"privacy.md": policy_source(V2, [record])}, message="wip")
    summaries = [(c.record.summary, c.commit, c.from_history) for c in _adopted_timeline(repo).changes]
    assert summaries[0] == ("Named the partners again.", sha, False)
    assert "wip" not in [s for s, _, _ in summaries]


def test_two_records_of_one_day_keep_a_version_each(tmp_path: Path) -> None:
    repo = GitRepo(tmp_path)
    repo.commit("2026-01-10", {"privacy.md": policy_source(V1)})
    morning = {"date": "2026-03-01", "summary": "Morning change."}
    repo.commit("2026-03-01", {"privacy.md": policy_source(V2, [morning])})
    repo.commit("2026-03-01", {"privacy.md": policy_source(V3, [{"date": "2026-03-01", "summary": "Later."}, morning])})
    timeline = _timeline(repo)
    assert [(v.url, v.body, v.current) for v in timeline.versions] == [
        ("privacy/versions/2026-03-01-2/", V3, True),
        ("privacy/versions/2026-03-01/", V2, False),
        ("privacy/versions/2026-01-10/", V1, False),
    ]
    assert [(c.record.summary, c.before, c.after) for c in timeline.changes] == [("Later.", V2, V3), ("Morning change.", V1, V2)]
