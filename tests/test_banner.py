"""Which changes the banner announces on a build date."""

from __future__ import annotations

import datetime as dt

import pytest

from site_src.banner import BuildDateError, PolicyChanges, active_changes, build_date, human_date, is_active
from site_src.records import ChangeRecord

D = dt.date


def record(date: dt.date, effective: dt.date | None = None, material: bool = True, summary: str = "A.") -> ChangeRecord:
    return ChangeRecord(date, summary, effective or date, material)


def test_change_is_active_through_day_30_and_gone_on_day_31() -> None:
    change = record(D(2026, 10, 1))
    assert is_active(change, D(2026, 10, 1), 30)
    assert is_active(change, D(2026, 10, 31), 30)
    assert not is_active(change, D(2026, 11, 1), 30)


def test_change_stays_active_until_its_effective_date() -> None:
    change = record(D(2026, 1, 1), effective=D(2026, 6, 1))
    assert is_active(change, D(2026, 5, 31), 30)
    assert not is_active(change, D(2026, 6, 1), 30)


def test_editorial_change_is_never_announced() -> None:
    assert not is_active(record(D(2026, 10, 1), effective=D(2026, 12, 1), material=False), D(2026, 10, 2), 30)


def test_banner_days_zero_announces_on_the_day_only() -> None:
    assert is_active(record(D(2026, 10, 1)), D(2026, 10, 1), 0)
    assert not is_active(record(D(2026, 10, 1)), D(2026, 10, 2), 0)


def test_active_changes_are_newest_first_across_policies() -> None:
    policies = [
        PolicyChanges("privacy", "Privacy Policy", "privacy/", (record(D(2026, 11, 20), D(2026, 12, 20), summary="P2"), record(D(2026, 11, 1), summary="P1"))),
        PolicyChanges("terms", "Terms", "terms/", (record(D(2026, 11, 10), summary="T1"), record(D(2025, 1, 1), summary="old"))),
    ]
    active = active_changes(policies, D(2026, 11, 25), 30)
    assert [a.record.summary for a in active] == ["P2", "T1", "P1"]
    assert [a.upcoming for a in active] == [True, False, False]


def test_active_change_links_to_change_history_when_it_exists() -> None:
    policies = [
        PolicyChanges("privacy", "Privacy", "privacy/", (record(D(2026, 11, 20)),), changes_url="privacy/changes/"),
        PolicyChanges("terms", "Terms", "terms/", (record(D(2026, 11, 19)),)),
    ]
    assert [a.changes_url for a in active_changes(policies, D(2026, 11, 20), 30)] == ["privacy/changes/", "terms/"]


def test_nothing_active_gives_an_empty_list() -> None:
    assert active_changes([PolicyChanges("p", "P", "p/", (record(D(2020, 1, 1)),))], D(2026, 1, 1), 30) == []


def test_build_date_comes_from_source_date_epoch_in_utc() -> None:
    # 2026-11-20T23:30:00Z: still the 20th in UTC whatever the machine's time zone.
    assert build_date("1795217400") == D(2026, 11, 20)
    assert build_date(None, now=dt.datetime(2026, 1, 2, 23, 59, tzinfo=dt.timezone.utc)) == D(2026, 1, 2)
    assert build_date("", now=dt.datetime(2026, 1, 2, tzinfo=dt.timezone(dt.timedelta(hours=5)))) == D(2026, 1, 1)


def test_build_date_refuses_a_malformed_epoch() -> None:
    with pytest.raises(BuildDateError, match="SOURCE_DATE_EPOCH must be a whole number of seconds"):
        build_date("2026-11-20")


def test_human_date_spells_the_month() -> None:
    assert human_date(D(2026, 12, 1)) == "1 December 2026"
