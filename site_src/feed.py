"""The Atom 1.0 feed of material policy changes, site/changes.xml (pure).

Every date in the feed comes from the change records, never from the clock, so two builds of one commit
give the same bytes; entry ids depend only on the policy id, the change date and the record's place among
that day's records, so a feed reader never shows a change twice.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from urllib.parse import urljoin, urlsplit

from .records import ChangeRecord

ATOM_NS = "http://www.w3.org/2005/Atom"
FEED_NAME = "changes.xml"


@dataclass(frozen=True)
class FeedPolicy:
    """What the feed needs from one policy page; ``url`` is relative to the site root, like page.url."""

    id: str
    title: str
    url: str
    changes: Sequence[ChangeRecord]  # any order
    history: bool = True  # False: no change history pages were built, so entries link to the policy page


def change_anchor(record: ChangeRecord, same_day_index: int = 0) -> str:
    """The id of a change on its policy's change history page, e.g. ``change-2026-11-20`` (``-2`` for a second)."""
    suffix = f"-{same_day_index + 1}" if same_day_index else ""
    return f"change-{record.date.isoformat()}{suffix}"


def _stamp(day: date) -> str:
    return f"{day.isoformat()}T00:00:00Z"


def _add(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
    element = ET.SubElement(parent, f"{{{ATOM_NS}}}{tag}", attrs)
    element.text = text
    return element


def day_indexes(changes: Sequence[ChangeRecord]) -> list[int]:
    """Each record's index among the records of its own day, in the order given; use it with change_anchor.

    Records of other days never shift an index, so ids and anchors stay put when new changes are added.
    """
    seen: dict[date, int] = {}
    indexes = []
    for record in changes:
        indexes.append(seen.get(record.date, 0))
        seen[record.date] = indexes[-1] + 1
    return indexes


def _entries(policies: Sequence[FeedPolicy]) -> list[tuple[FeedPolicy, ChangeRecord, int]]:
    """Material changes with their same-day index, newest first (then by policy id, then index)."""
    found = [
        (policy, record, index)
        for policy in policies
        for record, index in zip(policy.changes, day_indexes(policy.changes))
        if record.material
    ]
    found.sort(key=lambda e: (e[0].id, e[2]))
    found.sort(key=lambda e: e[1].date, reverse=True)  # stable: keeps the order above within a day
    return found


def build_feed(policies: Sequence[FeedPolicy], *, site_url: str, site_name: str, empty_updated: date) -> bytes:
    """Atom XML (UTF-8 bytes) listing every material change of `policies`, newest first.

    ``site_url`` must be absolute (links in feeds are); ``empty_updated`` is the feed's updated date
    when there is no material change at all (pass the build date).
    """
    parts = urlsplit(site_url)
    if not parts.scheme or not parts.hostname:
        raise ValueError(f"mkdocs.yml: site_url must be an absolute URL such as https://example.org/ to build {FEED_NAME}, got {site_url!r}.")
    base = site_url if site_url.endswith("/") else site_url + "/"
    entries = _entries(policies)
    ET.register_namespace("", ATOM_NS)
    feed = ET.Element(f"{{{ATOM_NS}}}feed")
    _add(feed, "id", urljoin(base, FEED_NAME))
    _add(feed, "title", f"{site_name}: policy changes")
    _add(feed, "updated", _stamp(entries[0][1].date if entries else empty_updated))
    _add(feed, "link", rel="self", type="application/atom+xml", href=urljoin(base, FEED_NAME))
    _add(feed, "link", rel="alternate", type="text/html", href=base)
    author = _add(feed, "author")
    _add(author, "name", site_name)
    for policy, record, index in entries:
        entry = _add(feed, "entry")
        # A tag URI (RFC 4151) minted from the change itself; the day is the one the record names.
        _add(entry, "id", f"tag:{parts.hostname},{record.date.isoformat()}:{policy.id}/changes/{record.date.isoformat()}/{index}")
        _add(entry, "title", f"{policy.title}: {record.summary}")
        _add(entry, "updated", _stamp(record.date))
        _add(entry, "published", _stamp(record.date))
        if policy.history:
            href = urljoin(base, f"{policy.url}changes/") + "#" + change_anchor(record, index)
        else:
            href = urljoin(base, policy.url)
        _add(entry, "link", rel="alternate", type="text/html", href=href)
        effective = (
            f"Takes effect on {record.effective.isoformat()}."
            if record.effective > record.date
            else f"In effect from {record.effective.isoformat()}."
        )
        _add(entry, "summary", f"{record.summary} {effective}", type="text")
    ET.indent(feed)
    xml: bytes = ET.tostring(feed, encoding="utf-8", xml_declaration=True)
    return xml + b"\n"
