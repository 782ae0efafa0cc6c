"""The history worker as the plugin drives it: forked (Linux) and as a fresh Python (elsewhere), over real pipes."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from gitrepo import GitRepo

from site_src.history_job import Finish, PolicySource, ShellSource, SiteInfo
from site_src.history_worker import HistoryWorker

BUILD = dt.date(2024, 9, 1)
MODES = pytest.mark.parametrize("fork", [True, False], ids=["fork", "spawn"])
# The least of a page the generator rendered that the history pages can take their shell from.
SHELL_PAGE = '<html><head><title>Test</title></head><body><article class="md-content__inner md-typeset"><h1>404</h1></article></body></html>'


def _site(root: Path, out: Path) -> SiteInfo:
    docs = root / "docs"
    pages = {"privacy.md": "privacy/"}
    return SiteInfo(
        "Test", "https://example.org/", str(out), "en", "ltr", None, (), "icon.png", None, (), {}, pages,
        tuple(str(docs / p) for p in pages), "changes.xml", BUILD, dt.date(2024, 6, 30),
        tuple((p, str(docs / p)) for p in pages), ("*.md",),
    )


def _policy(root: Path) -> PolicySource:
    return PolicySource("privacy", "Privacy", "privacy/", "privacy.md", str(root / "docs/privacy.md"), "docs/privacy.md", None, (), True)


def _one_version_worker(tmp_path: Path, fork: bool) -> tuple[Path, HistoryWorker]:
    """A repository whose docs/privacy.md has one commit, and a worker over it."""
    repo = GitRepo(tmp_path / "repo")
    repo.commit("2024-01-10", {"docs/privacy.md": "# Privacy\n\nOne.\n"}, message="First")
    return repo.root, HistoryWorker(repo.root, str(repo.root / "docs"), fork=fork)


@MODES
def test_worker_answers_the_status_lines_then_writes_the_pages(tmp_path: Path, fork: bool) -> None:
    repo = GitRepo(tmp_path / "repo")
    repo.commit("2024-01-10", {"docs/privacy.md": "# Privacy\n\nOne.\n"}, message="First")
    repo.commit("2024-03-01", {"docs/privacy.md": "# Privacy\n\nTwo.\n"}, message="Second")
    worker = HistoryWorker(repo.root, str(repo.root / "docs"), fork=fork)
    try:
        for message in (_site(repo.root, tmp_path / "site"), _policy(repo.root), Finish("changes.xml", BUILD)):
            worker.send(message)
        status = worker.statuses().policies["privacy.md"]
        assert (status.effective, status.versions, status.error) == (dt.date(2024, 3, 1), 2, None)
        worker.send_shell(ShellSource(SHELL_PAGE))
        outcome = worker.result()
    finally:
        worker.close()
    assert outcome.error is None and outcome.pages_written == 4
    assert [c.summary for c in outcome.policies[0].history_changes] == ["Second", "First"]
    page = (tmp_path / "site" / "privacy" / "versions" / "2024-01-10" / "index.html").read_text(encoding="utf-8")
    assert "<title>Privacy, version of 10 January 2024 - Test</title>" in page and "One." in page


@MODES
def test_worker_without_a_page_shell_fails_saying_so(tmp_path: Path, fork: bool) -> None:
    root, worker = _one_version_worker(tmp_path, fork)
    try:
        for message in (_site(root, tmp_path / "site"), _policy(root), Finish("changes.xml", BUILD)):
            worker.send(message)
        worker.statuses()
        outcome = worker.result()  # the generator rendered no 404 page
    finally:
        worker.close()
    assert "no 404 page to take the history pages' shell from" in (outcome.error or "")


@MODES
def test_worker_outside_a_repository_says_so_after_finish(tmp_path: Path, fork: bool) -> None:
    (tmp_path / "docs").mkdir()
    worker = HistoryWorker(tmp_path, str(tmp_path / "docs"), fork=fork)
    try:
        worker.send(_site(tmp_path, tmp_path / "site"))
        worker.send(Finish(None, BUILD))
        assert worker.statuses().history is False
        outcome = worker.result()
    finally:
        worker.close()
    assert outcome.history_unavailable and outcome.error is not None and "not a git repository" in outcome.error


@MODES
def test_worker_of_a_build_that_failed_is_stopped(tmp_path: Path, fork: bool) -> None:
    repo = GitRepo(tmp_path / "repo")
    repo.commit("2024-01-10", {"docs/privacy.md": "# Privacy\n"})
    worker = HistoryWorker(repo.root, str(repo.root / "docs"), fork=fork)
    worker.send(_site(repo.root, tmp_path / "site"))
    worker.close()  # no Finish: the plugin gave up (on_build_error), and the worker is stopped
    assert "the change history worker stopped with exit status" in (worker.result().error or "")


@MODES
def test_worker_gets_pages_sent_without_a_flush_with_the_next_message(tmp_path: Path, fork: bool) -> None:
    root, worker = _one_version_worker(tmp_path, fork)
    try:
        worker.send(_site(root, tmp_path / "site"))
        worker.send(_policy(root), flush=False)  # as the plugin sends each page: it waits in the buffer
        worker.send(Finish("changes.xml", BUILD))
        status = worker.statuses().policies["privacy.md"]
    finally:
        worker.close()
    assert (status.effective, status.versions, status.error) == (dt.date(2024, 1, 10), 1, None)
