from __future__ import annotations

from datetime import date

from site_src.records import ChangeRecord
from site_src.status import PolicyStatus, insert_status, status_from_records, status_from_versions
from site_src.timeline import PastVersion

TODAY = date(2026, 6, 15)


def _version(day: str, current: bool = False) -> PastVersion:
    return PastVersion(f"v{day}", date.fromisoformat(day), f"privacy/versions/{day}/", current, "text")


def test_status_of_a_text_in_force_says_since_when() -> None:
    versions = [_version("2026-06-01", current=True), _version("2026-01-10")]
    status = status_from_versions(versions, TODAY)
    assert status == PolicyStatus(date(2026, 6, 1), 2, None)
    assert not status.upcoming(TODAY)


def test_status_of_a_text_not_yet_in_force_names_the_text_that_applies() -> None:
    versions = [_version("2026-07-01", current=True), _version("2026-06-01"), _version("2026-01-10")]
    status = status_from_versions(versions, TODAY)
    assert status.upcoming(TODAY) and status.effective == date(2026, 7, 1)
    assert status.in_force == (date(2026, 6, 1), "privacy/versions/2026-06-01/")


def test_status_without_history_comes_from_the_latest_record() -> None:
    record = ChangeRecord(date(2026, 5, 1), "Changed.", date(2026, 5, 20), True)
    assert status_from_records([record]) == PolicyStatus(date(2026, 5, 20))
    assert status_from_records([]) == PolicyStatus(None)
    assert status_from_versions([], TODAY) == PolicyStatus(None)


def test_status_line_goes_right_under_the_title_or_first_without_one() -> None:
    assert insert_status('<h1 id="p">Privacy</h1>\n<p>Text</p>', "<p>S</p>") == '<h1 id="p">Privacy</h1>\n<p>S</p>\n<p>Text</p>'
    assert insert_status("<p>Text</p><h1>Late</h1>", "<p>S</p>") == "<p>Text</p><h1>Late</h1>\n<p>S</p>"
    assert insert_status("<h2>Part</h2><p>Text</p>", "<p>S</p>") == "<p>S</p>\n<h2>Part</h2><p>Text</p>"
