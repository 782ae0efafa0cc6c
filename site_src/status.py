"""Where a policy's text stands on the build date, for the status line on its page (pure; never imports MkDocs).

Every policy page says, near its title, since when its text has been in force (or when it takes effect, and
which text applies until then), and links to its change history, its versions and the changes feed.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .records import ChangeRecord

if TYPE_CHECKING:  # the MkDocs process needs statuses, not timelines (difflib and more, imported by the worker)
    from .timeline import PastVersion


@dataclass(frozen=True)
class PolicyStatus:
    """What a policy page's status line says; URLs are relative to the site root."""

    effective: dt.date | None  # when the current text took effect (or takes effect); None: not known
    versions: int = 0  # how many texts the policy has had; 0 when there is no history to tell
    # When the current text is not yet in force: the date from which the text in force applies, and its URL.
    in_force: tuple[dt.date, str] | None = None
    error: str | None = None  # the build must fail (a page whose id would change silently)

    def upcoming(self, today: dt.date) -> bool:
        return self.effective is not None and self.effective > today


def status_from_versions(versions: Sequence[PastVersion], today: dt.date) -> PolicyStatus:
    """The status of a policy whose versions (newest first) are known from its history."""
    if not versions:
        return PolicyStatus(None)
    current = next((v for v in versions if v.current), versions[0])
    in_force = None
    if current.effective > today:
        older = next((v for v in versions if v.effective <= today and v is not current), None)
        in_force = None if older is None else (older.effective, older.url)
    return PolicyStatus(current.effective, len(versions), in_force)


def status_from_records(records: Sequence[ChangeRecord]) -> PolicyStatus:
    """The status of a policy built without history: its text took effect with its latest change record."""
    return PolicyStatus(records[0].effective if records else None)


def insert_status(content: str, status_html: str) -> str:
    """A page's HTML with the status line right under its title: after the first ``</h1>``, or first of all when
    the page has no heading of its own (the theme then puts the page title above the content)."""
    end = content.find("</h1>") if "<h1" in content else -1
    if end == -1:
        return status_html + "\n" + content
    end += len("</h1>")
    return content[:end] + "\n" + status_html + content[end:]
