from __future__ import annotations

import subprocess
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from gitrepo import GitRepo

from site_src.history import HistoryReader, HistoryUnavailable, read_history


def test_read_history_lists_commits_oldest_first_with_their_text(tmp_path: Path) -> None:
    repo = GitRepo(tmp_path)
    first = repo.commit("2026-01-05", {"docs/privacy": "one\n"})
    repo.commit("2026-02-01", {"docs/other": "unrelated\n"})
    second = repo.commit("2026-03-10", {"docs/privacy": "two\n"})
    history = read_history(tmp_path, [Path("docs/privacy")])[Path("docs/privacy")]
    assert [r.commit for r in history.revisions] == [first, second]
    assert [r.text for r in history.revisions] == ["one\n", "two\n"]
    assert history.revisions[0].date == datetime(2026, 1, 5, 12, tzinfo=timezone.utc)


def test_read_history_follows_a_file_through_git_mv(tmp_path: Path) -> None:
    repo = GitRepo(tmp_path)
    repo.commit("2026-01-05", {"docs/old": "Policy text that is long enough to be seen as the same file.\n"})
    repo.git("mv", "docs/old", "docs/new")
    repo.commit("2026-02-01", message="Rename")
    repo.commit("2026-03-01", {"docs/new": "Policy text that is long enough to be seen as the same file, edited.\n"})
    history = read_history(tmp_path, [tmp_path / "docs/new"])[tmp_path / "docs/new"]
    assert [r.path for r in history.revisions] == ["docs/old", "docs/new", "docs/new"]
    assert history.revisions[0].text.startswith("Policy text")


def test_read_history_refuses_a_shallow_clone_and_says_to_fetch_full_history(tmp_path: Path) -> None:
    repo = GitRepo(tmp_path / "origin")
    repo.commit("2026-01-05", {"policy": "one\n"})
    repo.commit("2026-02-05", {"policy": "two\n"})
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", "--depth", "1", f"file://{repo.root}", str(clone)], check=True, env=repo.env())
    with pytest.raises(HistoryUnavailable, match="shallow.*fetch-depth: 0.*git fetch --unshallow"):
        read_history(clone, [Path("policy")])


def test_read_history_outside_git_raises_with_the_fix(tmp_path: Path) -> None:
    (tmp_path / "policy.md").write_text("text\n")
    with pytest.raises(HistoryUnavailable, match="not a git repository.*fetch-depth: 0"):
        read_history(tmp_path, [Path("policy.md")])


def _count_spawns(repo_root: Path, paths: list[Path]) -> int:
    calls: list[Any] = []

    def spawn(args: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        calls.append(args)
        return subprocess.Popen(args, **kwargs)

    histories = read_history(repo_root, paths, spawn=spawn)
    assert all(len(h.revisions) == 3 for h in histories.values())
    return len(calls)


def test_read_history_uses_the_same_few_git_processes_for_1_or_20_files(tmp_path: Path) -> None:
    repo = GitRepo(tmp_path)
    names = [f"docs/p{i}.md" for i in range(20)]
    for day in ("2026-01-01", "2026-02-01", "2026-03-01"):
        for name in names:
            repo.write(name, f"{name} as of {day}\n")
        repo.commit(day)
    assert _count_spawns(tmp_path, [Path(names[0])]) == 3
    assert _count_spawns(tmp_path, [Path(n) for n in names]) == 3


def test_read_history_uncommitted_file_has_no_revisions(tmp_path: Path) -> None:
    repo = GitRepo(tmp_path)
    repo.commit("2026-01-05", {"committed": "text\n"})
    repo.write("draft.md", "not committed yet\n")
    assert read_history(tmp_path, [Path("draft.md")])[Path("draft.md")].revisions == ()


def test_read_history_counts_a_merged_branch_from_its_merge(tmp_path: Path) -> None:
    repo = GitRepo(tmp_path)
    repo.commit("2026-01-05", {"policy": "one\n"})
    repo.git("checkout", "-q", "-b", "edit")
    repo.commit("2026-02-01", {"policy": "draft\n"})
    repo.commit("2026-02-02", {"policy": "two\n"})
    repo.git("checkout", "-q", "main")
    repo.git("merge", "-q", "--no-ff", "-m", "Merge edit", "edit", day="2026-02-10")
    revisions = read_history(tmp_path, [Path("policy")])[Path("policy")].revisions
    assert [r.text for r in revisions] == ["one\n", "two\n"]
    assert revisions[1].date.date().isoformat() == "2026-02-10"


def test_read_history_from_a_subfolder_of_the_repository(tmp_path: Path) -> None:
    repo = GitRepo(tmp_path)
    repo.commit("2026-01-05", {"site/docs/privacy": "one\n"})
    history = read_history(tmp_path / "site", [Path("docs/privacy")])
    assert history[Path("docs/privacy")].revisions[0].path == "site/docs/privacy"


def test_history_reader_started_early_reads_files_named_later(tmp_path: Path) -> None:
    repo = GitRepo(tmp_path)
    repo.commit("2026-01-05", {"a.md": "a\n", "b.md": "b\n"})
    reader = HistoryReader(tmp_path)  # the plugin starts it in on_config, before the files are known
    with pytest.raises(RuntimeError):
        reader.result()
    reader.request([Path("b.md")])
    assert [r.text for r in reader.result()[Path("b.md")].revisions] == ["b\n"]


def test_read_history_keeps_each_commit_subject_and_a_merge_title(tmp_path: Path) -> None:
    repo = GitRepo(tmp_path)
    repo.commit("2026-01-05", {"docs/policy.md": "one\n"}, message="Publish the policy\n\nLong explanation.")
    repo.git("checkout", "-q", "-b", "edit")
    repo.commit("2026-02-01", {"docs/policy.md": "two\n"}, message="Draft")
    repo.git("checkout", "-q", "main")
    repo.git("merge", "-q", "--no-ff", "-m", "Merge pull request #4 from staff/edit", "-m", "Say two", "edit", day="2026-02-10")
    history = read_history(tmp_path, [Path("docs/policy.md")])[Path("docs/policy.md")]
    assert [(r.subject, r.merged) for r in history.revisions] == [
        ("Publish the policy", None), ("Merge pull request #4 from staff/edit", "Say two")
    ]
    assert history.name == "docs/policy.md"


def test_history_reader_reads_more_files_with_a_second_request(tmp_path: Path) -> None:
    repo = GitRepo(tmp_path)
    repo.commit("2026-01-05", {"a.md": "a\n", "b.md": "b\n"})
    reader = HistoryReader(tmp_path)
    reader.request([Path("a.md")])
    assert set(reader.result()) == {Path("a.md")}
    reader.request([Path("b.md")])
    assert {p: [r.text for r in h.revisions] for p, h in reader.result().items()} == {Path("a.md"): ["a\n"], Path("b.md"): ["b\n"]}
    assert reader.requested == {Path("a.md"), Path("b.md")}
