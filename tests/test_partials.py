"""The status line as partials.render_status writes it: the exact HTML its Jinja template gave before it."""

from __future__ import annotations

from datetime import date

from site_src.partials import render_status
from site_src.status import PolicyStatus

TODAY = date(2026, 6, 15)
OPEN = '<p class="policy-status" data-policy-status>\n  '


def test_status_line_says_since_when_and_links_history_versions_and_feed_from_the_page() -> None:
    html = render_status(PolicyStatus(date(2026, 6, 1), 2), "privacy/", TODAY, history=True, feed_url="changes.xml")
    assert html == (
        OPEN + 'In force since <time datetime="2026-06-01">1 June 2026</time>.\n  <a href="changes/">Change history</a>\n'
        '  · <a href="versions/">All versions (2)</a>\n  · <a href="../changes.xml">Changes feed (Atom)</a>\n</p>'
    )


def test_status_line_of_an_upcoming_text_links_the_text_in_force_until_then() -> None:
    status = PolicyStatus(date(2026, 7, 1), 3, (date(2026, 6, 1), "privacy/versions/2026-06-01/"))
    assert render_status(status, "privacy/", TODAY, history=True, feed_url=None) == (
        OPEN + 'This text takes effect on <time datetime="2026-07-01">1 July 2026</time>; until then '
        '<a href="versions/2026-06-01/">the text in force since 1 June 2026</a> applies.\n'
        '  <a href="changes/">Change history</a>\n  · <a href="versions/">All versions (3)</a>\n</p>'
    )


def test_status_line_without_history_has_no_history_links() -> None:
    status = PolicyStatus(date(2026, 7, 1), 2, (date(2026, 6, 1), "legal/terms/versions/2026-06-01/"))
    assert render_status(status, "legal/terms.html", TODAY, history=False, feed_url="changes.xml") == (
        OPEN + 'This text takes effect on <time datetime="2026-07-01">1 July 2026</time>.\n'
        '  <a href="../changes.xml">Changes feed (Atom)</a>\n</p>'
    )
    assert render_status(PolicyStatus(None), "privacy/", TODAY, history=True, feed_url=None) == (
        '<p class="policy-status" data-policy-status>\n</p>'
    )


def test_status_line_escapes_its_links() -> None:
    status = PolicyStatus(date(2026, 7, 1), 2, (date(2026, 6, 1), "a&b/versions/'x\"y/"))
    html = render_status(status, "a&b/", TODAY, history=True, feed_url=None)
    assert '<a href="versions/&#39;x&#34;y/">the text in force since 1 June 2026</a>' in html
