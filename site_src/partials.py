"""The plugin's partials (banner, status line, feedback form) rendered in Python (pure; never imports a generator).

The MkDocs plugin renders them through MkDocs' own Jinja environment; the Zensical adapter, whose MiniJinja
templates cannot call Python, renders them here once per build and writes the result as template partials.
Both use the same templates (overrides/partials/) and the same rules for the status line's links.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2

from .banner import human_date
from .history_job import changes_url, versions_url
from .markdown_render import relative_url
from .status import PolicyStatus

OVERRIDES = Path(__file__).parent / "overrides"
BANNER_TEMPLATE = "partials/policy-banner.html"
STATUS_TEMPLATE = "partials/policy-status.html"
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


def render_status(env: jinja2.Environment, status: PolicyStatus, page_url: str, today: dt.date, *,
                  history: bool, feed_url: str | None) -> str:
    """The status line of the policy page at ``page_url``: since when its text is in force, and links (relative
    to the page) to its change history, its versions and the feed."""
    history = history and status.versions > 0

    def href(target: str) -> str:
        return relative_url(target, page_url)

    links = []
    if history:
        links.append((href(changes_url(page_url)), "Change history"))
        links.append((href(versions_url(page_url)), f"All versions ({status.versions})"))
    if feed_url is not None:
        links.append((href(feed_url), "Changes feed (Atom)"))
    context: dict[str, Any] = dict(
        status=status, upcoming=status.upcoming(today), links=links,
        in_force_href=href(status.in_force[1]) if history and status.in_force else None,
    )
    return env.get_template(STATUS_TEMPLATE).render(**context)
