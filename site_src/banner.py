"""Which policy changes the site announces on a given build date (pure; never imports MkDocs).

The policy promises to "place notices on other pages of the web site" when it changes. A material change is
announced for ``banner_days`` days from its date (day 30 in, day 31 out, with the default of 30), and for as
long as its effective date is still ahead, so that a reader is warned before new terms apply.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass

from .records import ChangeRecord


_MONTHS = (
    "January", "February", "March", "April", "May", "June",
    "July", "August", "September", "October", "November", "December",
)


class BuildDateError(ValueError):
    """SOURCE_DATE_EPOCH is set but is not a whole number of seconds."""


@dataclass(frozen=True)
class ActiveChange:
    """One change announced in the banner."""

    policy_id: str
    policy_title: str
    policy_url: str  # relative to the site root, like MkDocs' page.url
    changes_url: str  # where "what changed" points: the change history page, or the policy page itself
    record: ChangeRecord
    upcoming: bool  # the effective date is still ahead of the build date


@dataclass(frozen=True)
class PolicyChanges:
    """A policy page's identity and records, as the banner needs them."""

    policy_id: str
    title: str
    url: str
    changes: tuple[ChangeRecord, ...]
    changes_url: str | None = None  # set when a change-history page exists for this policy


def build_date(source_date_epoch: str | None, now: dt.datetime | None = None) -> dt.date:
    """The UTC date of the build: from SOURCE_DATE_EPOCH when given (reproducible builds), else today."""
    if source_date_epoch is None or source_date_epoch.strip() == "":
        return (now or dt.datetime.now(dt.timezone.utc)).astimezone(dt.timezone.utc).date()
    try:
        seconds = int(source_date_epoch.strip())
    except ValueError:
        raise BuildDateError(
            f"SOURCE_DATE_EPOCH must be a whole number of seconds since 1970-01-01 UTC, got {source_date_epoch!r}."
        ) from None
    return dt.datetime.fromtimestamp(seconds, dt.timezone.utc).date()


def is_active(record: ChangeRecord, on: dt.date, banner_days: int) -> bool:
    """True when a material change is announced on the date ``on``."""
    if not record.material:
        return False
    if record.effective > on:
        return True
    return 0 <= (on - record.date).days <= banner_days


def active_changes(policies: Iterable[PolicyChanges], on: dt.date, banner_days: int) -> list[ActiveChange]:
    """All material changes announced on ``on``, newest first across every policy."""
    active = [
        ActiveChange(
            policy_id=p.policy_id,
            policy_title=p.title,
            policy_url=p.url,
            changes_url=p.changes_url or p.url,
            record=record,
            upcoming=record.effective > on,
        )
        for p in policies
        for record in p.changes
        if is_active(record, on, banner_days)
    ]
    # Newest first; ties broken by policy id and then the writer's order, so every build lists them alike.
    active.sort(key=lambda a: a.policy_id)
    active.sort(key=lambda a: (a.record.date, a.record.effective), reverse=True)
    return active


def human_date(value: dt.date) -> str:
    """A date as a reader writes it, e.g. 20 November 2026 (independent of the build machine's locale)."""
    return f"{value.day} {_MONTHS[value.month - 1]} {value.year}"
