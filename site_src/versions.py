"""Policy versions: hash a page's text and write the versions manifest (pure; never imports MkDocs).

The service reads ``site/policy-versions.json`` to know which versions of which policy exist, so a version
must depend on the policy text only: front matter (new change records, a new description) does not change it.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from .records import ChangeRecord

MANIFEST_NAME = "policy-versions.json"

# The same front-matter rule as MkDocs (mkdocs.utils.meta.YAML_RE), so the text we hash is the text MkDocs renders:
# a first line '---', the YAML, then a closing '---' (or '...') line.
_FRONT_MATTER_RE = re.compile(r"^-{3}[ \t]*\n(.*?\n)(?:\.{3}|-{3})[ \t]*\n", re.DOTALL)


@dataclass(frozen=True)
class VersionEntry:
    """One version of a policy's text; ``url`` is relative to the site root, like MkDocs' page.url."""

    version: str
    effective: str | None  # YYYY-MM-DD
    url: str
    current: bool


@dataclass(frozen=True)
class HistoryChange:
    """A change taken from the repository's history (before the adoption date): a commit that changed the text."""

    date: str  # YYYY-MM-DD, the commit's date (UTC); the text took effect that day
    summary: str  # the commit's subject line
    version: str  # the text it introduced
    commit: str


@dataclass(frozen=True)
class Policy:
    """Everything the manifest says about one policy page."""

    id: str
    title: str
    url: str
    version: str
    changes: tuple[ChangeRecord, ...]  # newest first
    # Filled from git history when it is available; otherwise just the current version (see current_only()).
    versions: tuple[VersionEntry, ...] = ()
    # The version each record introduced, in the order of ``changes``; empty when git history is not available.
    change_versions: tuple[str | None, ...] = ()
    # With an adoption date: the commits before it that changed the text, newest first.
    history_changes: tuple[HistoryChange, ...] = ()


def normalise_newlines(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")


def split_front_matter(text: str) -> tuple[str | None, str]:
    """Split a Markdown file into (front-matter YAML or None, body); newlines come back as LF."""
    text = normalise_newlines(text)
    if text.startswith("\ufeff"):
        text = text[1:]
    match = _FRONT_MATTER_RE.match(text)
    if match is None:
        return None, text
    return match.group(1), text[match.end() :]


def policy_version(markdown_body: str) -> str:
    """sha256 hex of the Markdown after the front matter: CRLF/CR -> LF, stripped, UTF-8."""
    return hashlib.sha256(normalise_newlines(markdown_body).strip().encode("utf-8")).hexdigest()


def source_version(source: str) -> str:
    """The version of a whole Markdown file (front matter included in ``source``, ignored in the hash)."""
    return policy_version(split_front_matter(source)[1])


def current_only(policy: Policy) -> tuple[VersionEntry, ...]:
    """The versions list when no history is known: the current text, effective from the latest change."""
    effective = policy.changes[0].effective.isoformat() if policy.changes else None
    return (VersionEntry(version=policy.version, effective=effective, url=policy.url, current=True),)


def build_manifest(policies: Iterable[Policy]) -> dict[str, Any]:
    """The policy-versions.json document, policies ordered by id so that builds are reproducible."""
    return {"policies": [_policy_dict(p) for p in sorted(policies, key=lambda p: p.id)]}


def dump_manifest(manifest: dict[str, Any]) -> str:
    """Stable JSON text of build_manifest's document: sorted keys, one policy per line, UTF-8 characters kept,
    trailing newline.

    One line per policy keeps a diff between two builds readable; ``indent`` would take 3x as long, as it
    turns off the json module's C encoder (0.11 s against 0.04 s for 500 policies)."""
    lines = ",\n".join("    " + json.dumps(p, sort_keys=True, ensure_ascii=False) for p in manifest["policies"])
    return '{\n  "policies": [\n' + lines + "\n  ]\n}\n" if lines else '{\n  "policies": []\n}\n'


def _policy_dict(policy: Policy) -> dict[str, Any]:
    versions = policy.versions or current_only(policy)
    return {
        "id": policy.id,
        "title": policy.title,
        "url": policy.url,
        "version": policy.version,
        "changes": _changes(policy),
        "versions": [
            {"version": v.version, "effective": v.effective, "url": v.url, "current": v.current} for v in versions
        ],
    }


def _changes(policy: Policy) -> list[dict[str, Any]]:
    """Records and changes from the history, newest first (a record before a commit of the same day: records
    follow the adoption). A change from the history says so, names its commit, and has material null: whether
    it was material is not known, so it is never announced."""
    records = [
        _change_dict(c, v) for c, v in zip(policy.changes, policy.change_versions or [None] * len(policy.changes))
    ]
    history = [
        {"date": h.date, "effective": h.date, "summary": h.summary, "material": None, "version": h.version,
         "source": "history", "commit": h.commit}
        for h in policy.history_changes
    ]
    merged = records + history
    merged.sort(key=lambda c: str(c["date"]), reverse=True)  # stable: records stay ahead of commits of their day
    return merged


def _change_dict(change: ChangeRecord, version: str | None) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "date": change.date.isoformat(),
        "effective": change.effective.isoformat(),
        "summary": change.summary,
        "material": change.material,
    }
    if version is not None:  # the body this change introduced (known from git history)
        entry["version"] = version
    return entry
