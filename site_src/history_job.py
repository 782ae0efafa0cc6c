"""What the plugin tells the history worker, and what the worker answers (plain, picklable data; pure).

The plugin sends a SiteInfo once the site's files are known, one PolicySource per policy page as MkDocs
converts it, and a Finish once every record is known. The worker answers Statuses at once (what each policy
page's status line says, which the generator needs before it renders the pages); then the plugin sends the
ShellSource (the 404 page the generator rendered, banner included: the history pages are put in its shell),
and the worker answers one Outcome after it has written the change history pages, the past versions and the feed.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .records import ChangeRecord
from .status import PolicyStatus
from .versions import HistoryChange, VersionEntry

CHANGES_DIR = "changes/"
VERSIONS_DIR = "versions/"


def history_base(policy_url: str) -> str:
    """Where a policy's history pages live: ``privacy/`` for ``privacy/`` (and for ``privacy.html``)."""
    if policy_url == "" or policy_url.endswith("/"):
        return policy_url
    return policy_url.rsplit(".", 1)[0] + "/"


def changes_url(policy_url: str) -> str:
    """The change history page of a policy, relative to the site root: ``privacy/changes/``."""
    return history_base(policy_url) + CHANGES_DIR


def versions_url(policy_url: str) -> str:
    """The page listing every version of a policy, relative to the site root: ``privacy/versions/``."""
    return history_base(policy_url) + VERSIONS_DIR


@dataclass(frozen=True)
class SiteInfo:
    """The site-wide settings the generated pages need; URLs are relative to the site root."""

    site_name: str
    site_url: str | None
    site_dir: str
    lang: str
    direction: str
    palette: tuple[str, str, str] | None  # (scheme, primary, accent), as Material puts them on <body>
    stylesheets: tuple[str, ...]
    favicon: str  # the theme's icon; without a link the browser asks for /favicon.ico and logs a 404
    copyright: str | None
    extensions: tuple[Any, ...]  # the site's markdown_extensions, names or picklable Extension objects
    extension_configs: Mapping[str, Any]
    page_urls: Mapping[str, str]  # src_uri -> url of every documentation page, for links inside policies
    history_paths: tuple[str, ...]  # absolute paths whose git history to read (every documentation page)
    # Known before any page is read, so the worker can render its pages early (Finish repeats them).
    feed_url: str | None = None
    build_date: dt.date | None = None
    # The plugin's `adopted` option: commits on or before it that changed a policy's text are its versions.
    adopted: dt.date | None = None
    # (src_uri, absolute path) of every documentation page in the order MkDocs reads them, and the plugin's
    # `policies` patterns: the worker reads a page that looks like a policy before MkDocs hands it over.
    sources: tuple[tuple[str, str], ...] = ()
    policy_patterns: tuple[str, ...] = ()


@dataclass(frozen=True)
class PolicySource:
    """One policy page as MkDocs read it."""

    policy_id: str
    title: str
    url: str
    src_uri: str
    path: str  # absolute path of the Markdown file
    display_path: str  # docs/privacy.md, for messages
    source: str | None  # the whole file, front matter included; None: the worker reads it from path
    records: tuple[ChangeRecord, ...]  # newest first, as records.parse_changes gives them
    id_from_path: bool = False  # no policy_id: the id comes from the path, which must not have changed


@dataclass(frozen=True)
class Finish:
    """Sent once every policy is known: the feed's settings and the build date."""

    feed_url: str | None  # changes.xml, relative to the site root; None: no feed (no site_url)
    build_date: dt.date


@dataclass(frozen=True)
class ShellSource:
    """Sent after Finish: a page the generator rendered (its 404 page), whose shell every history page takes."""

    html: str | None  # None: there is none (the error says why)
    page_url: str = "404.html"
    error: str | None = None


@dataclass(frozen=True)
class Statuses:
    """The worker's first answer, as soon as Finish came and every timeline is known (long before the pages are
    written): what each policy page's status line says, by the page's src_uri."""

    policies: Mapping[str, PolicyStatus] = field(default_factory=dict)
    history: bool = True  # False: the history could not be read (the Outcome says why)


@dataclass(frozen=True)
class PolicyOutcome:
    policy_id: str
    display_path: str
    versions: tuple[VersionEntry, ...]  # newest first
    change_versions: tuple[str | None, ...]  # the version each record introduced, in the records' order
    unrecorded_diff: str | None
    history_changes: tuple[HistoryChange, ...] = ()  # changes taken from the history (adoption), newest first


@dataclass(frozen=True)
class Outcome:
    policies: tuple[PolicyOutcome, ...] = ()
    pages_written: int = 0
    error: str | None = None  # one sentence for the writer; the build fails with it
    history_unavailable: bool = False  # the error says the git history cannot be read
    timings: Mapping[str, float] = field(default_factory=dict)
