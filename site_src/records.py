"""Change records: parse and validate a policy page's front matter (pure; never imports MkDocs).

A policy page declares ``policy_id`` and, newest or oldest first as the writer likes, its ``changes``:

    policy_id: privacy
    changes:
      - date: 2026-11-20
        summary: Clarified how aggregate statistics are used.
        effective: 2026-12-20   # optional, defaults to date, never before it
        material: true          # optional, default true; false marks an editorial fix

Every error is one sentence naming the file, the record and the field.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import yaml

_DATE_RE = re.compile(r"\d{4}-\d{2}-\d{2}")
# A slug, or slugs in folders ("hr/leave"): the form of the ids a page's path gives it (policy_pages.py).
_SLUG_RE = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*(?:/[a-z0-9]+(?:-[a-z0-9]+)*)*")
_KEYS = ("date", "summary", "effective", "material")


class RecordError(ValueError):
    """A policy page's front matter is malformed; the message names the file, record and field."""


@dataclass(frozen=True)
class ChangeRecord:
    date: dt.date
    summary: str
    effective: dt.date
    material: bool


@dataclass(frozen=True)
class PolicyMeta:
    """The policy part of one page's front matter."""

    policy_id: str
    changes: tuple[ChangeRecord, ...]  # newest first
    id_from_path: bool = False  # no policy_id in the front matter: the page matched the plugin's `policies`


# libyaml's parser when PyYAML was built with it: the pure-Python one took 2.3 s for 500 pages' front matter.
_Base: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Loader(_Base):  # type: ignore[valid-type,misc]
    """SafeLoader that keeps dates as the text the writer typed.

    PyYAML raises on an impossible date such as 2026-13-01, and MkDocs then silently drops the whole front
    matter; keeping the text lets us name the field instead.
    """


def _keep_text(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
    return loader.construct_scalar(node)  # type: ignore[arg-type]


def _ignore_tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> Any:
    # MkDocs allows tags such as !ENV in front matter; their values are no business of ours.
    if isinstance(node, yaml.ScalarNode):
        return loader.construct_scalar(node)
    return None


_Loader.add_constructor("tag:yaml.org,2002:timestamp", _keep_text)
_Loader.add_multi_constructor("!", _ignore_tag)


def load_meta(meta_text: str | None, path: str) -> dict[str, Any]:
    """Parse front-matter YAML into a dict ({} when there is none); dates stay strings."""
    if meta_text is None:
        return {}
    try:
        data = yaml.load(meta_text, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 2}" if mark is not None else ""
        raise RecordError(f"{path}: the front matter is not valid YAML{where}; fix it or remove it.") from e
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise RecordError(f"{path}: the front matter must be a mapping of keys to values, got {_kind(data)}.")
    return data


def parse_policy_meta(meta: Mapping[str, Any], path: str, path_id: str | None = None) -> PolicyMeta | None:
    """Validate a page's front matter; None for a page that is not a policy page.

    ``path_id`` is the id the page's path gives it when the plugin's ``policies`` patterns match it: the page is
    then a policy page even without ``policy_id``."""
    policy_id = meta.get("policy_id")
    if policy_id is None:
        if path_id is not None:
            return PolicyMeta(path_id, parse_changes(meta.get("changes"), path), id_from_path=True)
        if "changes" in meta:
            raise RecordError(f"{path}: changes needs a policy_id in the same front matter; add policy_id: <slug>.")
        return None
    if not isinstance(policy_id, str) or not _SLUG_RE.fullmatch(policy_id):
        raise RecordError(
            f"{path}: policy_id must be a simple slug of lowercase letters, digits and hyphens, in folders "
            f"separated by '/' if you like (for example 'privacy' or 'hr/leave'), got {policy_id!r}."
        )
    return PolicyMeta(policy_id, parse_changes(meta.get("changes"), path))


def parse_changes(raw: Any, path: str) -> tuple[ChangeRecord, ...]:
    """Validate a ``changes`` list; the records come back newest first (by date, then effective date)."""
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise RecordError(f"{path}: changes must be a list of records (each line starting with '- '), got {_kind(raw)}.")
    records = [parse_record(item, path, i) for i, item in enumerate(raw)]
    # sorted() is stable, so records with equal dates keep the writer's order.
    return tuple(sorted(records, key=lambda r: (r.date, r.effective), reverse=True))


def parse_record(raw: Any, path: str, index: int) -> ChangeRecord:
    """Validate one change record, ``changes[index]`` of the file at ``path``."""
    where = f"{path}: changes[{index}]"
    if not isinstance(raw, dict):
        raise RecordError(f"{where} must be a mapping with date and summary, got {_kind(raw)}.")
    unknown = sorted(str(k) for k in raw if k not in _KEYS)
    if unknown:
        raise RecordError(f"{where}.{unknown[0]} is not a known field; use only {', '.join(_KEYS)}.")
    if "date" not in raw:
        raise RecordError(f"{where}.date is missing; add the publication date as YYYY-MM-DD.")
    date = _parse_date(raw["date"], f"{where}.date")
    summary = raw.get("summary")
    if not isinstance(summary, str) or not summary.strip():
        got = "nothing" if summary is None else repr(summary)
        raise RecordError(f"{where}.summary must be a sentence saying what changed, got {got}.")
    effective = date if raw.get("effective") is None else _parse_date(raw["effective"], f"{where}.effective")
    if effective < date:
        raise RecordError(
            f"{where}.effective ({effective.isoformat()}) is before its date ({date.isoformat()}); "
            "a change cannot take effect before it is published."
        )
    material = raw.get("material", True)
    if not isinstance(material, bool):
        raise RecordError(f"{where}.material must be true or false, got {material!r}.")
    return ChangeRecord(date=date, summary=" ".join(summary.split()), effective=effective, material=material)


def check_unique_policy_ids(pages: Iterable[tuple[str, str]]) -> None:
    """Refuse two pages with the same policy_id; ``pages`` holds (path, policy_id) pairs."""
    seen: dict[str, str] = {}
    for path, policy_id in pages:
        if policy_id in seen:
            raise RecordError(
                f"{path}: policy_id {policy_id!r} is already used by {seen[policy_id]}; give each policy page its own id."
            )
        seen[policy_id] = path


def _parse_date(value: Any, where: str) -> dt.date:
    # datetime is a subclass of date: a time of day has no place in a record, so refuse it explicitly.
    if isinstance(value, dt.datetime):
        raise RecordError(f"{where} must be YYYY-MM-DD without a time, got '{value.isoformat()}'.")
    if isinstance(value, dt.date):
        return value
    if isinstance(value, str) and _DATE_RE.fullmatch(value.strip()):
        try:
            return dt.date.fromisoformat(value.strip())
        except ValueError:
            pass
    shown = f"'{value}'" if isinstance(value, str) else repr(value)
    raise RecordError(f"{where} must be YYYY-MM-DD, got {shown}.")


def _kind(value: Any) -> str:
    names: dict[type, str] = {dict: "a mapping", list: "a list", str: "text"}
    return names.get(type(value), type(value).__name__)
