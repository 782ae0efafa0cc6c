"""Change records: every malformed record is refused with the file, the record and the field named."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from site_src.records import (
    ChangeRecord,
    RecordError,
    check_unique_policy_ids,
    load_meta,
    parse_policy_meta,
)

PATH = "docs/privacy.md"


def meta(text: str) -> dict[str, Any]:
    return load_meta(text, PATH)


def test_record_defaults_effective_to_date_and_material_to_true() -> None:
    policy = parse_policy_meta(meta("policy_id: privacy\nchanges:\n  - date: 2026-11-20\n    summary: Clarified.\n"), PATH)
    assert policy is not None
    assert policy.changes == (ChangeRecord(dt.date(2026, 11, 20), "Clarified.", dt.date(2026, 11, 20), True),)


def test_records_come_back_newest_first() -> None:
    text = (
        "policy_id: privacy\nchanges:\n"
        "  - {date: 2026-01-05, summary: Old.}\n  - {date: 2026-11-20, summary: New., effective: 2026-12-20}\n"
    )
    policy = parse_policy_meta(meta(text), PATH)
    assert policy is not None
    assert [c.summary for c in policy.changes] == ["New.", "Old."]
    assert policy.changes[0].effective == dt.date(2026, 12, 20)


def test_dates_accepted_as_date_objects_and_strings() -> None:
    raw = {"policy_id": "privacy", "changes": [{"date": dt.date(2026, 11, 20), "summary": "A."}, {"date": "2026-11-21", "summary": "B."}]}
    policy = parse_policy_meta(raw, PATH)
    assert policy is not None
    assert [c.date for c in policy.changes] == [dt.date(2026, 11, 21), dt.date(2026, 11, 20)]


def test_page_without_policy_id_or_changes_is_not_a_policy() -> None:
    assert parse_policy_meta(meta("title: Home\n"), PATH) is None
    assert parse_policy_meta({}, PATH) is None


@pytest.mark.parametrize(
    ("front_matter", "message"),
    [
        ("  - {date: 2026-13-01, summary: A.}", "docs/privacy.md: changes[0].date must be YYYY-MM-DD, got '2026-13-01'."),
        ("  - {date: 2026-02-30, summary: A.}", "changes[0].date must be YYYY-MM-DD, got '2026-02-30'."),
        ("  - {date: 20 Nov 2026, summary: A.}", "changes[0].date must be YYYY-MM-DD, got '20 Nov 2026'."),
        ("  - {date: 2026-11-20 10:00:00, summary: A.}", "changes[0].date must be YYYY-MM-DD"),
        ("  - {date: 20261120, summary: A.}", "changes[0].date must be YYYY-MM-DD, got 20261120."),
        ("  - {summary: A.}", "changes[0].date is missing"),
        ("  - {date: 2026-11-20}", "changes[0].summary must be a sentence"),
        ("  - {date: 2026-11-20, summary: '  '}", "changes[0].summary must be a sentence"),
        ("  - {date: 2026-11-20, summary: A., materiel: false}", "changes[0].materiel is not a known field"),
        ("  - {date: 2026-11-20, summary: A., effective: 2026-11-19}", "changes[0].effective (2026-11-19) is before its date"),
        ("  - {date: 2026-11-20, summary: A., effective: 2026-11-31}", "changes[0].effective must be YYYY-MM-DD"),
        ("  - {date: 2026-11-20, summary: A., material: maybe}", "changes[0].material must be true or false"),
        ("  - {date: 2026-11-20, summary: A.}\n  - Second change", "changes[1] must be a mapping"),
    ],
)
def test_malformed_record_names_the_file_record_and_field(front_matter: str, message: str) -> None:
    with pytest.raises(RecordError) as err:
        parse_policy_meta(meta(f"policy_id: privacy\nchanges:\n{front_matter}\n"), PATH)
    assert message in str(err.value)
    assert str(err.value).startswith(PATH + ": ")


def test_datetime_object_is_refused() -> None:
    raw = {"policy_id": "privacy", "changes": [{"date": dt.datetime(2026, 11, 20, 10), "summary": "A."}]}
    with pytest.raises(RecordError, match=r"changes\[0\]\.date must be YYYY-MM-DD without a time"):
        parse_policy_meta(raw, PATH)


def test_changes_without_policy_id_is_refused() -> None:
    with pytest.raises(RecordError, match="docs/privacy.md: changes needs a policy_id"):
        parse_policy_meta(meta("changes:\n  - {date: 2026-11-20, summary: A.}\n"), PATH)


def test_changes_that_is_not_a_list_is_refused() -> None:
    with pytest.raises(RecordError, match="changes must be a list of records"):
        parse_policy_meta(meta("policy_id: privacy\nchanges:\n  date: 2026-11-20\n  summary: A.\n"), PATH)


@pytest.mark.parametrize("policy_id", ["Privacy", "privacy policy", "../privacy", "", "7 ", "-privacy"])
def test_policy_id_must_be_a_simple_slug(policy_id: str) -> None:
    with pytest.raises(RecordError, match="policy_id must be a simple slug"):
        parse_policy_meta({"policy_id": policy_id}, PATH)


def test_policy_id_may_have_folders_like_an_id_from_a_path() -> None:
    policy = parse_policy_meta({"policy_id": "hr/annual-leave"}, PATH)
    assert policy is not None and policy.policy_id == "hr/annual-leave" and not policy.id_from_path
    with pytest.raises(RecordError, match="simple slug"):
        parse_policy_meta({"policy_id": "hr//leave"}, PATH)


def test_page_matched_by_the_policies_patterns_is_a_policy_without_policy_id() -> None:
    policy = parse_policy_meta(meta("title: Leave\nchanges:\n  - {date: 2026-11-20, summary: A.}\n"), PATH, "hr/leave")
    assert policy is not None and (policy.policy_id, policy.id_from_path, len(policy.changes)) == ("hr/leave", True, 1)
    pinned = parse_policy_meta(meta("policy_id: leave\n"), PATH, "hr/leave")
    assert pinned is not None and (pinned.policy_id, pinned.id_from_path) == ("leave", False)


def test_policy_id_that_is_not_text_is_refused() -> None:
    with pytest.raises(RecordError, match="policy_id must be a simple slug .* got 42"):
        parse_policy_meta(meta("policy_id: 42\n"), PATH)


def test_duplicate_policy_id_names_both_pages() -> None:
    with pytest.raises(RecordError, match="docs/b.md: policy_id 'privacy' is already used by docs/a.md"):
        check_unique_policy_ids([("docs/a.md", "privacy"), ("docs/c.md", "terms"), ("docs/b.md", "privacy")])


def test_invalid_yaml_front_matter_names_the_file() -> None:
    with pytest.raises(RecordError, match="docs/privacy.md: the front matter is not valid YAML"):
        load_meta("policy_id: [privacy\n", PATH)


def test_front_matter_that_is_not_a_mapping_is_refused() -> None:
    with pytest.raises(RecordError, match="front matter must be a mapping"):
        load_meta("- privacy\n", PATH)


def test_mkdocs_env_tags_in_front_matter_are_tolerated() -> None:
    assert load_meta("title: !ENV [TITLE, Home]\npolicy_id: privacy\n", PATH)["policy_id"] == "privacy"
