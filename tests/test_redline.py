from __future__ import annotations

import re
from datetime import date
from pathlib import Path

from gitrepo import GitRepo, policy_source
from hypothesis import given
from hypothesis import strategies as st

from site_src.history import read_history
from site_src.records import ChangeRecord
from site_src.redline import plain_blocks, redline_blocks, redline_html, word_diff
from site_src.timeline import build_timeline

OLD = "We may provide such aggregate information to third parties."
NEW = "We may provide such aggregate statistics to named third parties."
RECORD = ChangeRecord(date(2026, 3, 1), "Aggregate statistics go to named parties.", date(2026, 3, 1), True)


def _changed(segments: list[tuple[str, str]]) -> list[tuple[str, str]]:
    return [(op, text.strip()) for op, text in segments if op != "equal"]


def test_word_diff_holds_exactly_the_removed_and_the_added_words() -> None:
    assert _changed(word_diff(OLD, NEW)) == [("delete", "information"), ("insert", "statistics"), ("insert", "named")]


@given(st.text(alphabet="ab .,\n", max_size=40), st.text(alphabet="ab .,\n", max_size=40))
def test_word_diff_segments_rebuild_both_texts(old: str, new: str) -> None:
    segments = word_diff(old, new)
    assert "".join(t for op, t in segments if op != "insert") == old
    assert "".join(t for op, t in segments if op != "delete") == new


def test_redline_of_a_committed_edit_holds_exactly_its_words(tmp_path: Path) -> None:
    repo = GitRepo(tmp_path)
    record = {"date": "2026-03-01", "summary": RECORD.summary}
    repo.commit("2026-01-10", {"privacy.md": policy_source(f"# Privacy\n\n{OLD}\n\nUnchanged.\n")})
    source = policy_source(f"# Privacy\n\n{NEW}\n\nUnchanged.\n", [record])
    repo.commit("2026-03-01", {"privacy.md": source})
    history = read_history(tmp_path, [Path("privacy.md")])[Path("privacy.md")]
    (change,) = build_timeline(history, [RECORD], source, "privacy/").changes
    assert change.before is not None
    blocks = redline_blocks(change.before, change.after)
    assert [_changed(list(b.segments)) for b in blocks if b.changed] == [
        [("delete", "information"), ("insert", "statistics"), ("insert", "named")]
    ]


def test_redline_html_marks_changes_for_screen_readers_not_by_colour_alone() -> None:
    html = redline_html(OLD, NEW)
    assert '<del><span class="visually-hidden">removed: </span>information</del>' in html
    assert '<ins><span class="visually-hidden">added: </span>statistics</ins>' in html


def test_redline_html_escapes_policy_text() -> None:
    html = redline_html("Write to <b>us</b> & co.", "Write to <script>x</script> & co.")
    assert "<script>" not in html and "&amp; co." in html


def test_redline_ignores_markdown_syntax_and_rewrapped_lines() -> None:
    old = "We use [cookies](cookies.md) to keep\nyour **session** safe."
    new = "We use [cookies](#cookies) to keep your session safe."
    assert not any(b.changed for b in redline_blocks(old, new))
    assert plain_blocks("## Cookies {#c}\n\n- one\n- two\n") == [("heading", "Cookies"), ("item", "one"), ("item", "two")]


def test_redline_html_folds_unchanged_paragraphs_but_keeps_headings() -> None:
    paragraphs = [f"Paragraph number {n} stays the same." for n in range(6)]
    old = "# Title\n\n" + "\n\n".join(paragraphs + [OLD])
    new = "# Title\n\n" + "\n\n".join(paragraphs + [NEW])
    html = redline_html(old, new, context=1)
    assert "<strong>Title</strong>" in html
    assert "<details><summary>5 unchanged paragraphs</summary>" in html
    assert re.search(r"</details>\n<p[^>]*>Paragraph number 5", html)


def test_redline_whole_new_paragraph_is_one_insertion() -> None:
    blocks = redline_blocks("First.", "First.\n\nA new paragraph about e-mail.")
    assert [b.segments for b in blocks] == [(("equal", "First."),), (("insert", "A new paragraph about e-mail."),)]
