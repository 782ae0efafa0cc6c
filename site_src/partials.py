"""The plugin's partials (banner, status line, feedback form) rendered in Python (pure; never imports a generator).

The MkDocs plugin renders them through MkDocs' own Jinja environment; the Zensical adapter, whose MiniJinja
templates cannot call Python, renders them here once per build and writes the result as template partials.
Both use the same templates (overrides/partials/), but for the status line: it differs on every policy page, so
both take it from render_status, plain Python (a Jinja pass and a relpath per page took ~0.05 s of the 500-page
bench build).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import jinja2
from markupsafe import escape

from .banner import human_date
from .history_job import changes_url, versions_url
from .markdown_render import relative_url
from .status import PolicyStatus

OVERRIDES = Path(__file__).parent / "overrides"
BANNER_TEMPLATE = "partials/policy-banner.html"
FORM_TEMPLATE = "partials/policy-form.html"
MANAGE_TEMPLATE = "partials/policy-manage.html"


@dataclass(frozen=True)
class FeedbackForm:
    """What the feedback form template needs: where to post, and which policy version the visitor consents to."""

    action: str
    withdraw_action: str
    policy_id: str
    policy_version: str
    policy_title: str
    policy_url: str


def environment() -> jinja2.Environment:
    """A Jinja environment over the shipped partials, as MkDocs' is (no autoescape: the partials escape)."""
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(OVERRIDES), auto_reload=False, keep_trailing_newline=True)
    env.filters["policy_date"] = human_date
    return env


def render_status(status: PolicyStatus, page_url: str, today: dt.date, *, history: bool, feed_url: str | None) -> str:
    """The status line of the policy page at ``page_url``: since when its text is in force (or when it takes
    effect, and which text applies until then), and links (relative to the page) to its change history, its
    versions and the feed. Every value is escaped: MkDocs' Jinja environment does not autoescape."""
    history = history and status.versions > 0

    def href(target: str) -> str:
        return relative_url(target, page_url)

    links = []
    if history:
        links.append((href(changes_url(page_url)), "Change history"))
        links.append((href(versions_url(page_url)), f"All versions ({status.versions})"))
    if feed_url is not None:
        links.append((href(feed_url), "Changes feed (Atom)"))
    html = '<p class="policy-status" data-policy-status>'
    if status.effective is not None and status.upcoming(today):
        html += f"\n  This text takes effect on {_time(status.effective)}"
        if history and status.in_force:
            since, url = status.in_force
            html += f'; until then <a href="{escape(href(url))}">the text in force since {escape(human_date(since))}</a> applies'
        html += "."
    elif status.effective is not None:
        html += f"\n  In force since {_time(status.effective)}."
    for n, (url, text) in enumerate(links):
        html += f'\n  {"· " if n else ""}<a href="{escape(url)}">{escape(text)}</a>'
    return html + "\n</p>"


def _time(day: dt.date) -> str:
    return f'<time datetime="{escape(day.isoformat())}">{escape(human_date(day))}</time>'
