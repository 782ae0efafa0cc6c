"""The `policy` plugin's typed configuration (the options a site sets under `plugins: - policy:`)."""

from __future__ import annotations

import datetime as dt

from mkdocs.config import base
from mkdocs.config import config_options as c


class PolicyConfig(base.Config):  # type: ignore[no-untyped-call]  # MkDocs is untyped here
    # A material change is announced for this many days after its date (day 30 in, day 31 out).
    banner_days = c.Type(int, default=30)
    # The policy_id whose current version the feedback form asks visitors to consent to.
    consent_policy = c.Type(str, default="privacy")
    # Where the feedback form posts, and where its receipt's withdraw button posts (same origin or absolute).
    form_endpoint = c.Type(str, default="/api/feedback")
    withdraw_endpoint = c.Type(str, default="/api/withdraw")
    # "Manage your consent" (the service's page for a receipt id and token), linked from every page's footer.
    manage_endpoint = c.Type(str, default="/api/manage")
    # Fail the build when git history is missing (shallow clone, no git), rather than publish a wrong history.
    require_history = c.Type(bool, default=True)
    # Glob patterns relative to docs_dir ('**' for any folders, '!' in front to leave pages out): every matching
    # Markdown page is a policy page, its id taken from its path unless its front matter gives policy_id.
    policies = c.ListOfItems(c.Type(str), default=[])
    # YYYY-MM-DD: commits on or before this day that changed a policy's text are its versions (adopting a repository
    # with years of history); after it, every change needs a change record. YAML reads the date as a date.
    adopted = c.Optional(c.Type((str, dt.date)))
