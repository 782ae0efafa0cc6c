"""Rules both generator adapters apply the same way (pure; never imports a generator): the `adopted` option, the
feedback form's policy, and the words of the build's warnings."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable

from .partials import FeedbackForm


class PolicyBuildError(ValueError):
    """The build must fail: one sentence naming the file or option and the fix."""


def adoption_date(value: object) -> dt.date | None:
    """The `adopted` option as a date (YAML gives a date for 2024-06-01 unquoted, text when quoted)."""
    if value is None:
        return None
    if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        return value
    if isinstance(value, str) and re.fullmatch(r"\d{4}-\d{2}-\d{2}", value.strip()):
        try:
            return dt.date.fromisoformat(value.strip())
        except ValueError:
            pass
    raise PolicyBuildError(f"policy: adopted must be a date written YYYY-MM-DD (the day the site takes over), got {value!r}.")


def unrecorded_edit(display_path: str, diff: str) -> str:
    """The warning for a policy whose text changed without a change record (fails a strict build)."""
    return (
        f"{display_path}: the policy text differs from the version its latest change record introduced, "
        "and no new change record says why; add a record to changes (material: false for an editorial "
        f"fix). What differs:\n{diff}"
    )


def unused_pattern(pattern: str, docs_dir: str) -> str:
    return f"mkdocs.yml: the policies pattern {pattern!r} matches no page in {docs_dir}; correct it or remove it."


NO_SITE_URL = "mkdocs.yml: site_url is not set, so the change feed {feed} cannot be built; set site_url to the site's address."


def feedback_form(
    policies: Iterable[tuple[str, str, str, str]], form_pages: list[str], *, consent_policy: str, action: str, withdraw_action: str
) -> FeedbackForm | None:
    """The feedback form's data, from (policy_id, version, title, url) of every policy page; an error when a page
    shows the form and no policy has the consent_policy id."""
    for policy_id, version, title, url in policies:
        if policy_id == consent_policy:
            return FeedbackForm(action, withdraw_action, consent_policy, version, title, url)
    if form_pages:
        raise PolicyBuildError(
            f"{form_pages[0]}: the feedback form asks for consent to policy {consent_policy!r}, but no page has "
            f"policy_id: {consent_policy}; add it to that policy page or set the plugin option consent_policy."
        )
    return None
