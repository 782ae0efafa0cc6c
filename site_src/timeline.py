"""Which text each change introduced, every past version of a policy, and unrecorded edits (pure).

A change record's version is the page body at the first commit whose front matter holds that record; the
version before it is the body at the previous change's commit (or at the file's first commit). A record
that is not committed yet introduced the working-tree text, which is what MkDocs builds. With an adoption
date, every commit on or before it that changed the body is a change too (adopting a repository's history),
and after it only records count.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date

from .history import FileHistory, Revision
from .records import ChangeRecord, RecordError, load_meta
from .versions import VersionEntry, policy_version, split_front_matter

# The `changes:` key and its indented block; the date of each record in it.
_CHANGES_BLOCK_RE = re.compile(r"^changes:[ \t]*(?:#.*)?\n((?:(?:[ \t-].*)?\n)*)", re.MULTILINE)
_DATE_LINE_RE = re.compile(r"^[ \t]*(?:-[ \t]+)?date:[ \t]*[\"']?(\d{4}-\d{2}-\d{2})[\"']?[ \t]*(?:#.*)?$", re.MULTILINE)
_DIFF_LINES = 12  # a warning, not a report: enough to find the edit
_LINE_CHARS = 160


@dataclass(frozen=True)
class ChangeText:
    """One change with the text before it and the text it introduced (Markdown bodies): a change record, or a
    commit taken from the repository's history (``revision`` set; ``record`` then holds the commit's date and
    subject, and its ``material`` means nothing)."""

    record: ChangeRecord
    before: str | None  # None when the change came with the file's first text: nothing to compare
    after: str
    commit: str | None  # the commit that added the record; None while it is uncommitted
    revision: Revision | None = None  # the commit this change was taken from, when it comes from the history

    @property
    def from_history(self) -> bool:
        return self.revision is not None


@dataclass(frozen=True)
class PastVersion:
    """A policy text and the date from which it was in force; ``url`` is relative to the site root."""

    version: str
    effective: date
    url: str
    current: bool
    body: str
    same_day: int = 1  # 2 for the second text that took effect on that date, and so on (its URL ends in -2)

    def entry(self) -> VersionEntry:
        """This version as a policy-versions.json entry."""
        return VersionEntry(version=self.version, effective=self.effective.isoformat(), url=self.url, current=self.current)


@dataclass(frozen=True)
class Timeline:
    changes: tuple[ChangeText, ...]  # newest first: records and, with an adoption date, commits from the history
    versions: tuple[PastVersion, ...]  # newest first, one per text change, each with its own URL
    unrecorded_diff: str | None  # a short diff when the page changed with no new record


@dataclass(frozen=True)
class _Entry:
    key: tuple[date, float, int]  # chronological order: day, then commit order (uncommitted last)
    at: int | None  # index of the revision that introduced it; None: the working tree
    record: ChangeRecord
    revision: Revision | None = None


def _body(source: str) -> str:
    """The Markdown after the front matter, LF line ends, without surrounding blank lines."""
    return split_front_matter(source)[1].strip() + "\n"


def _record_keys(meta: str | None) -> list[tuple[str, str]]:
    """(date, summary) of each record in a past revision's front matter; tolerant, old front matter may be broken."""
    try:
        raw = load_meta(meta, "<history>").get("changes")
    except RecordError:
        return []
    if not isinstance(raw, list):
        return []
    return [(str(c.get("date", "")).strip(), " ".join(str(c.get("summary", "")).split())) for c in raw if isinstance(c, dict)]


def _record_dates(meta: str | None) -> list[str]:
    """The record dates in a past revision's front matter. A YAML parse of every revision costs more than the
    whole history read, so block-style lists (the documented form) are scanned; anything else is parsed."""
    if meta is None or "changes" not in meta:
        return []
    block = _CHANGES_BLOCK_RE.search(meta)
    if block is None:
        return [day for day, _ in _record_keys(meta)]
    return _DATE_LINE_RE.findall(block.group(1))


def _introduced_at(record: ChangeRecord, rank: int, same_day: int, metas: list[str | None], dates: list[list[str]]) -> int | None:
    """Index of the first revision holding the record, found by its date (the summary may have been reworded
    since); among several records of one day, by summary, else as the rank-th of that day. None: not committed."""
    day = record.date.isoformat()
    if same_day > 1:
        for i, meta in enumerate(metas):
            if day in dates[i] and (day, record.summary) in _record_keys(meta):
                return i
    for i, days in enumerate(dates):
        if days.count(day) > rank:
            return i
    return None


def history_summary(revision: Revision) -> str:
    """What a change taken from the history is called: its commit's subject line."""
    return revision.subject or "(a commit without a message)"


def build_timeline(
    history: FileHistory, records: Sequence[ChangeRecord], current_source: str, policy_url: str, adopted: date | None = None
) -> Timeline:
    """Tie each record to the text it introduced and list the policy's versions, from git history and the working tree.

    ``current_source`` is the working-tree file (front matter included); ``policy_url`` is the page URL relative to
    the site root (``privacy/``); past versions live at ``<policy_url>versions/<effective>/`` (``-2``, ``-3``, ...
    for later texts of the same day). With ``adopted``, every first-parent commit on or before that day (UTC)
    that changed the text after the front matter is a change too, dated by the commit, unless a change record
    came with it.
    """
    revisions = history.revisions
    bodies = [_body(r.text) for r in revisions]
    metas = [split_front_matter(r.text)[0] for r in revisions]
    dates = [_record_dates(meta) for meta in metas]
    current = _body(current_source)
    # Oldest first; the writer lists records newest first, so records of one day come in reverse list order.
    order = sorted(range(len(records)), key=lambda n: (records[n].date, -n))
    chronological = [records[n] for n in order]
    ranks = [sum(1 for o in chronological[:n] if o.date == r.date) for n, r in enumerate(chronological)]
    days = [sum(1 for o in chronological if o.date == r.date) for r in chronological]
    at = [_introduced_at(r, rank, n, metas, dates) for r, rank, n in zip(chronological, ranks, days)]
    uncommitted = float(len(revisions))
    entries = [
        _Entry((r.date, uncommitted if i is None else i, n), i, r) for n, (r, i) in enumerate(zip(chronological, at))
    ]
    if adopted is not None:
        entries += _history_entries(revisions, bodies, adopted, {i for i in at if i is not None})
        entries.sort(key=lambda e: e.key)

    def text_at(index: int | None) -> str:
        return current if index is None else bodies[index]

    changes: list[ChangeText] = []
    for n, entry in enumerate(entries):
        if n > 0:
            before: str | None = text_at(entries[n - 1].at)
        else:
            before = bodies[0] if revisions and entry.at != 0 else None
        index = entry.at
        commit = None if index is None else revisions[index].commit
        changes.append(ChangeText(entry.record, before, text_at(index), commit, entry.revision))

    candidates: list[tuple[date, str]] = []
    if revisions and (not entries or entries[0].at != 0):
        candidates.append((revisions[0].date.date(), bodies[0]))  # the text before any record
    candidates += [(c.record.effective, c.after) for c in changes]
    versions = _distinct_versions(candidates, policy_url, policy_version(current))

    latest = max((e.at for e in entries), key=lambda i: len(revisions) if i is None else i) if entries else (0 if revisions else None)
    baseline = text_at(latest)
    return Timeline(tuple(reversed(changes)), versions, unrecorded_edit(baseline, current))


def _history_entries(revisions: Sequence[Revision], bodies: list[str], adopted: date, recorded: set[int]) -> list[_Entry]:
    """A change for each commit on or before the adoption date that changed the text (a commit that changed the
    front matter only is none), except where a change record came with the commit: the record says it better."""
    entries = []
    for i, revision in enumerate(revisions):
        day = revision.date.date()
        if day > adopted or (i > 0 and bodies[i] == bodies[i - 1]) or i in recorded:
            continue
        record = ChangeRecord(date=day, summary=history_summary(revision), effective=day, material=False)
        entries.append(_Entry((day, i, -1), i, record, revision))
    return entries


def _distinct_versions(candidates: list[tuple[date, str]], policy_url: str, current_version: str) -> tuple[PastVersion, ...]:
    """One version per text change, oldest to newest in; returned newest first with the current text marked.

    Every text keeps its own URL: the first to take effect on a day is ``versions/<day>/``, later ones of the same
    day ``versions/<day>-2/`` and so on, so a version published once is never overwritten by a later one."""
    kept: list[tuple[date, str, str]] = []
    for effective, body in candidates:
        version = policy_version(body)
        if kept and kept[-1][1] == version:
            continue  # a record that left the text alone (a front-matter-only change) keeps the earlier URL
        kept.append((effective, version, body))
    current_index = max((i for i, k in enumerate(kept) if k[1] == current_version), default=None)
    seen: dict[date, int] = {}
    numbered = []
    for effective, _, _ in kept:
        seen[effective] = seen.get(effective, 0) + 1
        numbered.append(seen[effective])
    return tuple(
        PastVersion(version, effective, version_url(policy_url, effective, n), i == current_index, body, n)
        for i, ((effective, version, body), n) in reversed(list(enumerate(zip(kept, numbered))))
    )


def version_url(policy_url: str, effective: date, same_day: int = 1) -> str:
    """The URL of a past version, relative to the site root: ``privacy/versions/2026-06-03-2/`` for the second
    text that took effect on that day."""
    suffix = f"-{same_day}" if same_day > 1 else ""
    return f"{policy_url}versions/{effective.isoformat()}{suffix}/"


def unrecorded_edit(recorded: str, current: str) -> str | None:
    """A short unified diff from the recorded body to the current one, or None when they are the same version."""
    if policy_version(recorded) == policy_version(current):
        return None
    old, new = recorded.strip().splitlines(), current.strip().splitlines()
    lines = [
        line if len(line) <= _LINE_CHARS else line[: _LINE_CHARS - 3] + "..."
        for line in difflib.unified_diff(old, new, "recorded", "working tree", n=1, lineterm="")
    ]
    if len(lines) > _DIFF_LINES:
        lines = lines[:_DIFF_LINES] + [f"... ({len(lines) - _DIFF_LINES} more diff lines)"]
    return "\n".join(lines)
