from __future__ import annotations

from datetime import date

import feedparser
import pytest

from site_src.feed import FeedPolicy, build_feed
from site_src.records import ChangeRecord

SITE = "https://policies.example.org/"


def _change(day: str, summary: str, material: bool = True, effective: str | None = None) -> ChangeRecord:
    return ChangeRecord(date.fromisoformat(day), summary, date.fromisoformat(effective or day), material)


PRIVACY = FeedPolicy(
    "privacy",
    "Privacy Policy",
    "privacy/",
    [
        _change("2026-11-20", "Named the partners.", effective="2026-12-20"),
        _change("2026-10-01", "Fixed a typo.", material=False),
        _change("2026-03-01", "First change."),
    ],
)
COOKIES = FeedPolicy("cookies", "Cookie Policy", "cookies/", [_change("2026-10-15", "Fewer cookies.")])


def _feed(*policies: FeedPolicy) -> feedparser.FeedParserDict:
    return feedparser.parse(build_feed(policies, site_url=SITE, site_name="Example", empty_updated=date(2027, 1, 1)))


def test_feed_is_valid_atom_with_one_entry_per_material_change_newest_first() -> None:
    feed = _feed(PRIVACY, COOKIES)
    assert feed.bozo == 0 and feed.version == "atom10"
    assert [e.title for e in feed.entries] == [
        "Privacy Policy: Named the partners.",
        "Cookie Policy: Fewer cookies.",
        "Privacy Policy: First change.",
    ]


def test_feed_dates_come_from_the_records_not_the_clock() -> None:
    feed = _feed(PRIVACY, COOKIES)
    assert feed.feed.updated == "2026-11-20T00:00:00Z"
    assert [e.updated for e in feed.entries][:2] == ["2026-11-20T00:00:00Z", "2026-10-15T00:00:00Z"]
    assert "Takes effect on 2026-12-20." in feed.entries[0].summary


def test_feed_entry_ids_are_stable_across_builds_and_new_changes() -> None:
    first = [e.id for e in _feed(PRIVACY, COOKIES).entries]
    later = FeedPolicy(PRIVACY.id, PRIVACY.title, PRIVACY.url, [_change("2027-01-05", "Newer."), *PRIVACY.changes])
    second = [e.id for e in _feed(later, COOKIES).entries]
    assert second[1:] == first and len(set(second)) == 4
    assert first[0] == "tag:policies.example.org,2026-11-20:privacy/changes/2026-11-20/0"


def test_feed_is_byte_identical_for_the_same_input() -> None:
    def build() -> bytes:
        return build_feed([PRIVACY, COOKIES], site_url=SITE, site_name="Example", empty_updated=date(2027, 1, 1))

    assert build() == build()


def test_feed_links_each_entry_to_its_change_history_page() -> None:
    entry = _feed(PRIVACY).entries[0]
    assert entry.link == "https://policies.example.org/privacy/changes/#change-2026-11-20"


def test_feed_two_changes_on_one_day_get_distinct_ids_and_anchors() -> None:
    policy = FeedPolicy("privacy", "Privacy Policy", "privacy/", [_change("2026-05-01", "A."), _change("2026-05-01", "B.")])
    entries = _feed(policy).entries
    assert {e.id[-2:] for e in entries} == {"/0", "/1"}
    assert {e.link.rsplit("#", 1)[1] for e in entries} == {"change-2026-05-01", "change-2026-05-01-2"}


def test_feed_without_material_changes_is_valid_and_dated_by_the_caller() -> None:
    feed = _feed(FeedPolicy("privacy", "Privacy Policy", "privacy/", [_change("2026-10-01", "Typo.", material=False)]))
    assert feed.bozo == 0 and feed.entries == [] and feed.feed.updated == "2027-01-01T00:00:00Z"


def test_feed_needs_an_absolute_site_url() -> None:
    with pytest.raises(ValueError, match="site_url must be an absolute URL"):
        build_feed([PRIVACY], site_url="/", site_name="Example", empty_updated=date(2027, 1, 1))
