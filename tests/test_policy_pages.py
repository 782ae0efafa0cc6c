from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest
from gitrepo import GitRepo

from site_src.history import read_history
from site_src.policy_pages import PatternError, PolicyPatterns, path_policy_id, renamed_id_error

PAGES = ["index.md", "privacy.md", "policies/terms.md", "policies/hr/leave.md", "policies/drafts/idea.md", "about/team.md"]


def _matching(*patterns: str) -> list[str]:
    found = PolicyPatterns.parse(patterns)
    return [p for p in PAGES if found.matches(p)]


def test_patterns_match_within_a_folder_across_folders_and_leave_out_exclusions() -> None:
    assert _matching("*.md") == ["index.md", "privacy.md"]
    assert _matching("policies/*.md") == ["policies/terms.md"]
    assert _matching("policies/**/*.md") == ["policies/terms.md", "policies/hr/leave.md", "policies/drafts/idea.md"]
    assert _matching("**/*.md", "!index.md", "!policies/drafts/**") == ["privacy.md", "policies/terms.md", "policies/hr/leave.md", "about/team.md"]
    assert _matching("p?ivacy.md", "policies/[gh]*/*.md") == ["privacy.md", "policies/hr/leave.md"]
    assert _matching() == []


@pytest.mark.parametrize("pattern", ["/policies/*.md", "../policies/*.md", "policies/./x.md", "", "policies\\x.md"])
def test_pattern_that_is_not_relative_to_docs_dir_is_refused(pattern: str) -> None:
    with pytest.raises(PatternError, match=r"mkdocs.yml: policies\[1\] must be"):
        PolicyPatterns.parse(["*.md", pattern])


def test_exclusions_alone_are_refused() -> None:
    with pytest.raises(PatternError, match="only exclusions"):
        PolicyPatterns.parse(["!index.md"])


def test_patterns_that_match_no_page_are_reported() -> None:
    assert PolicyPatterns.parse(["policies/**/*.md", "polices/*.md", "!nothing.md"]).unused(PAGES) == ["polices/*.md", "!nothing.md"]


def test_path_id_is_the_path_without_md_each_name_a_slug() -> None:
    assert path_policy_id("privacy.md") == "privacy"
    assert path_policy_id("policies/hr/leave.md") == "policies/hr/leave"
    assert path_policy_id("HR/Annual Leave_Policy.markdown") == "hr/annual-leave-policy"
    assert path_policy_id("Política de privacidad.md") == "politica-de-privacidad"


def test_path_without_a_letter_or_digit_gives_no_id() -> None:
    with pytest.raises(ValueError, match="no policy id"):
        path_policy_id("policies/规则.md")


def _renamed(tmp_path: Path, *moves: tuple[str, str]) -> str | None:
    repo = GitRepo(tmp_path)
    first = moves[0][0]
    repo.commit("2024-01-10", {f"docs/{first}": "# Leave\n\nTwenty days, long enough to be seen as the same file.\n"})
    for n, (old, new) in enumerate(moves, start=2):
        (repo.root / f"docs/{new}").parent.mkdir(parents=True, exist_ok=True)
        repo.git("mv", f"docs/{old}", f"docs/{new}")
        repo.commit(f"2024-0{n}-01", message="Move")
    last = moves[-1][1]
    history = read_history(repo.root, [Path(f"docs/{last}")])[Path(f"docs/{last}")]
    return renamed_id_error(f"docs/{last}", path_policy_id(last), last, history)


def test_renamed_page_names_its_old_id_and_how_to_keep_it(tmp_path: Path) -> None:
    error = _renamed(tmp_path, ("leave.md", "hr/leave.md"))
    assert error == (
        "docs/hr/leave.md: its policy id comes from its path ('hr/leave'), but the file was renamed from docs/leave.md "
        "on 2024-02-01, when its id was 'leave'. Ids must never change silently: add 'policy_id: leave' to its front "
        "matter to keep that id (or 'policy_id: hr/leave' if 'leave' was never published)."
    )


def test_renamed_twice_names_the_id_just_before_the_last_rename(tmp_path: Path) -> None:
    error = _renamed(tmp_path, ("leave.md", "holiday.md"), ("holiday.md", "hr/holiday.md"))
    assert error is not None and "renamed from docs/holiday.md on 2024-03-01, when its id was 'holiday'" in error


def test_rename_on_or_before_the_adoption_date_is_no_error(tmp_path: Path) -> None:
    repo = GitRepo(tmp_path)
    repo.commit("2024-01-10", {"docs/leave.md": "# Leave\n\nTwenty days, long enough to be seen as the same file.\n"})
    (repo.root / "docs/hr").mkdir()
    repo.git("mv", "docs/leave.md", "docs/hr/leave.md")
    repo.commit("2024-02-01", message="Move")
    history = read_history(repo.root, [Path("docs/hr/leave.md")])[Path("docs/hr/leave.md")]
    assert renamed_id_error("docs/hr/leave.md", "hr/leave", "hr/leave.md", history, date(2024, 2, 1)) is None
    assert renamed_id_error("docs/hr/leave.md", "hr/leave", "hr/leave.md", history, date(2024, 1, 31)) is not None


def test_rename_that_keeps_the_id_is_no_error(tmp_path: Path) -> None:
    assert _renamed(tmp_path, ("Leave.md", "leave.md")) is None


def test_page_never_renamed_is_no_error(tmp_path: Path) -> None:
    repo = GitRepo(tmp_path)
    repo.commit("2024-01-10", {"docs/leave.md": "# Leave\n"})
    repo.commit("2024-02-10", {"docs/leave.md": "# Leave\n\nMore.\n"})
    history = read_history(repo.root, [Path("docs/leave.md")])[Path("docs/leave.md")]
    assert renamed_id_error("docs/leave.md", "leave", "leave.md", history) is None


def test_page_moved_into_the_docs_folder_says_where_from(tmp_path: Path) -> None:
    repo = GitRepo(tmp_path)
    repo.commit("2024-01-10", {"old/leave.md": "# Leave\n\nTwenty days, long enough to be seen as the same file.\n"})
    (repo.root / "docs").mkdir()
    repo.git("mv", "old/leave.md", "docs/leave.md")
    repo.commit("2024-02-10", message="Move")
    history = read_history(repo.root, [Path("docs/leave.md")])[Path("docs/leave.md")]
    error = renamed_id_error("docs/leave.md", "leave", "leave.md", history)
    assert error is not None and "was moved here from old/leave.md on 2024-02-10" in error and "policy_id: leave" in error
