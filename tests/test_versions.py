"""Version hashing and the policy-versions.json manifest."""

from __future__ import annotations

import datetime as dt
import hashlib
import json

from site_src.records import ChangeRecord
from site_src.versions import (
    HistoryChange,
    Policy,
    VersionEntry,
    build_manifest,
    dump_manifest,
    policy_version,
    source_version,
    split_front_matter,
)

BODY = "# Privacy Policy\n\nWe keep your information confidential.\n"
RECORD = ChangeRecord(dt.date(2026, 11, 20), "Clarified.", dt.date(2026, 12, 20), True)


def test_policy_version_is_sha256_of_stripped_lf_utf8_text() -> None:
    expected = hashlib.sha256(BODY.strip().encode("utf-8")).hexdigest()
    assert policy_version(BODY) == expected


def test_policy_version_ignores_line_endings_and_outer_whitespace() -> None:
    assert policy_version("\n\n" + BODY.replace("\n", "\r\n") + "  \n") == policy_version(BODY)
    assert policy_version(BODY.replace("\n", "\r")) == policy_version(BODY)


def test_policy_version_changes_with_any_word_of_the_text() -> None:
    assert policy_version(BODY.replace("confidential", "secret")) != policy_version(BODY)
    assert policy_version(BODY.replace("We keep", "We  keep")) != policy_version(BODY)


def test_split_front_matter_returns_yaml_and_body() -> None:
    meta, body = split_front_matter("---\r\npolicy_id: privacy\r\n---\r\n" + BODY)
    assert meta == "policy_id: privacy\n"
    assert body == BODY


def test_split_front_matter_without_front_matter_is_the_whole_file() -> None:
    assert split_front_matter(BODY) == (None, BODY)
    assert split_front_matter("policy_id: privacy\n\n" + BODY) == (None, "policy_id: privacy\n\n" + BODY)


def test_source_version_ignores_the_front_matter() -> None:
    one = "---\npolicy_id: privacy\n---\n" + BODY
    two = "---\npolicy_id: privacy\nchanges:\n  - {date: 2026-11-20, summary: A.}\n---\n\n" + BODY
    assert source_version(one) == source_version(two) == policy_version(BODY)


def test_manifest_lists_policies_by_id_with_iso_dates() -> None:
    policies = [Policy("terms", "Terms", "terms/", "b" * 64, ()), Policy("privacy", "Privacy", "privacy/", "a" * 64, (RECORD,))]
    manifest = build_manifest(policies)
    assert [p["id"] for p in manifest["policies"]] == ["privacy", "terms"]
    assert manifest["policies"][0]["changes"] == [
        {"date": "2026-11-20", "effective": "2026-12-20", "summary": "Clarified.", "material": True}
    ]


def test_manifest_without_history_lists_the_current_version_only() -> None:
    manifest = build_manifest([Policy("privacy", "Privacy", "privacy/", "a" * 64, (RECORD,)), Policy("terms", "T", "t/", "b" * 64, ())])
    assert manifest["policies"][0]["versions"] == [{"version": "a" * 64, "effective": "2026-12-20", "url": "privacy/", "current": True}]
    assert manifest["policies"][1]["versions"] == [{"version": "b" * 64, "effective": None, "url": "t/", "current": True}]


def test_manifest_keeps_versions_from_history() -> None:
    past = VersionEntry("c" * 64, "2026-01-01", "privacy/versions/2026-01-01/", False)
    now = VersionEntry("a" * 64, "2026-12-20", "privacy/", True)
    manifest = build_manifest([Policy("privacy", "Privacy", "privacy/", "a" * 64, (RECORD,), (now, past))])
    assert [v["url"] for v in manifest["policies"][0]["versions"]] == ["privacy/", "privacy/versions/2026-01-01/"]


def test_manifest_lists_changes_from_history_after_records_marked_with_their_commit() -> None:
    older = HistoryChange("2026-03-01", "Name the partners", "c" * 64, "1" * 40)
    same_day = HistoryChange("2026-11-20", "Tidy the wording", "d" * 64, "2" * 40)
    policy = Policy("privacy", "Privacy", "privacy/", "a" * 64, (RECORD,), change_versions=("a" * 64,), history_changes=(same_day, older))
    changes = build_manifest([policy])["policies"][0]["changes"]
    assert [(c["date"], c["summary"], c["material"], c.get("source"), c.get("commit")) for c in changes] == [
        ("2026-11-20", "Clarified.", True, None, None),
        ("2026-11-20", "Tidy the wording", None, "history", "2" * 40),
        ("2026-03-01", "Name the partners", None, "history", "1" * 40),
    ]
    assert changes[2] == {"date": "2026-03-01", "effective": "2026-03-01", "summary": "Name the partners", "material": None,
                          "version": "c" * 64, "source": "history", "commit": "1" * 40}


def test_dump_manifest_is_stable_sorted_json_with_trailing_newline() -> None:
    manifest = build_manifest([Policy("privacy", "Politique de confidentialité", "privacy/", "a" * 64, (RECORD,))])
    text = dump_manifest(manifest)
    assert text.endswith("}\n") and "confidentialité" in text
    assert text == dump_manifest(json.loads(text))
    assert text.index('"changes"') < text.index('"id"') < text.index('"versions"')


def test_dump_manifest_puts_one_policy_on_each_line() -> None:
    policies = [Policy(i, i.title(), f"{i}/", "a" * 64, (RECORD,)) for i in ("privacy", "cookies")]
    text = dump_manifest(build_manifest(policies))
    assert json.loads(text) == build_manifest(policies)
    lines = text.splitlines()
    assert [json.loads(line.rstrip(","))["id"] for line in lines[2:-2]] == ["cookies", "privacy"]
    assert json.loads(dump_manifest(build_manifest([]))) == {"policies": []}
