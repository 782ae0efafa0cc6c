"""Which pages are policies without a ``policy_id``, and the ids their paths give them (pure; never imports MkDocs).

The plugin option ``policies`` lists glob patterns relative to docs_dir (``*`` within a folder name, ``**`` for
any number of folders, ``!`` in front to leave pages out), so that an existing repository of policies can be
adopted without editing every file. A matching page without ``policy_id`` takes its id from its path:
``hr/leave.md`` is ``hr/leave``. An id must never change silently, so a page whose id comes from its path
and whose file was renamed (after the adoption date, when there is one) fails the build, naming the id it had
before (renamed_id_error).
"""

from __future__ import annotations

import datetime as dt
import posixpath
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from .history import FileHistory

MARKDOWN_SUFFIXES = (".md", ".markdown", ".mdown", ".mkdn", ".mkd")
_NOT_SLUG = re.compile(r"[^a-z0-9]+")


class PatternError(ValueError):
    """A ``policies`` pattern cannot be used; the message names it and says what is expected."""


def _segment(part: str) -> str:
    """Regex for one folder or file name of a pattern: ``*`` and ``?`` never cross a ``/``."""
    out, i = [], 0
    while i < len(part):
        c = part[i]
        if c == "*":
            out.append("[^/]*")
            while i + 1 < len(part) and part[i + 1] == "*":
                i += 1
        elif c == "?":
            out.append("[^/]")
        elif c == "[" and "]" in part[i + 2 :]:
            end = part.index("]", i + 2)
            inner = part[i + 1 : end]
            if inner.startswith("!"):
                inner = "^" + inner[1:]
            out.append("[" + inner.replace("\\", "\\\\").replace("/", "") + "]")
            i = end
        else:
            out.append(re.escape(c))
        i += 1
    return "".join(out)


def translate(pattern: str) -> re.Pattern[str]:
    """A compiled regex that matches a page's src_uri (``hr/leave.md``) exactly when the glob does."""
    parts = pattern.split("/")
    regex = ""
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if part == "**":
            regex += ".*" if last else "(?:[^/]+/)*"
        else:
            regex += _segment(part) + ("" if last else "/")
    return re.compile(regex)


@dataclass(frozen=True)
class PolicyPatterns:
    """The ``policies`` option, compiled: which documentation pages are policy pages."""

    include: tuple[tuple[str, re.Pattern[str]], ...] = ()
    exclude: tuple[tuple[str, re.Pattern[str]], ...] = ()

    @classmethod
    def parse(cls, patterns: Sequence[str]) -> PolicyPatterns:
        """Check and compile the patterns; raise PatternError naming the first bad one."""
        include: list[tuple[str, re.Pattern[str]]] = []
        exclude: list[tuple[str, re.Pattern[str]]] = []
        for index, raw in enumerate(patterns):
            pattern = raw[1:] if isinstance(raw, str) and raw.startswith("!") else raw
            where = f"policies[{index}]"
            if not isinstance(pattern, str) or not pattern.strip("/ "):
                raise PatternError(f"mkdocs.yml: {where} must be a glob pattern relative to docs_dir such as 'policies/**/*.md', got {raw!r}.")
            if pattern.startswith("/") or "\\" in pattern or ".." in pattern.split("/") or "." in pattern.split("/"):
                raise PatternError(
                    f"mkdocs.yml: {where} must be relative to docs_dir, with '/' between folders and no '.' or '..' "
                    f"(for example 'policies/**/*.md'), got {raw!r}."
                )
            (exclude if raw.startswith("!") else include).append((raw, translate(pattern)))
        if exclude and not include:
            raise PatternError("mkdocs.yml: policies lists only exclusions ('!...'); add the patterns of the policy pages first.")
        return cls(tuple(include), tuple(exclude))

    def matches(self, src_uri: str) -> bool:
        """True when the page at ``src_uri`` (relative to docs_dir, '/' between folders) is a policy page."""
        if not any(regex.fullmatch(src_uri) for _, regex in self.include):
            return False
        return not any(regex.fullmatch(src_uri) for _, regex in self.exclude)

    def unused(self, src_uris: Iterable[str]) -> list[str]:
        """The patterns (exclusions too) that match none of these pages: most likely a typo."""
        uris = list(src_uris)
        return [raw for raw, regex in (*self.include, *self.exclude) if not any(regex.fullmatch(u) for u in uris)]


def path_policy_id(src_uri: str) -> str:
    """The id a page's path gives it: the path relative to docs_dir without ``.md``, each name made a slug
    (``HR/Leave Policy.md`` -> ``hr/leave-policy``). Raises ValueError when a name has no letter or digit to keep."""
    stem, suffix = posixpath.splitext(src_uri)
    if suffix.lower() not in MARKDOWN_SUFFIXES:
        stem = src_uri
    parts = []
    for name in stem.split("/"):
        ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode("ascii")
        slug = _NOT_SLUG.sub("-", ascii_name.lower()).strip("-")
        if not slug:
            raise ValueError(f"no policy id can be made from the path {src_uri!r}")
        parts.append(slug)
    return "/".join(parts)


def renamed_id_error(
    display_path: str, policy_id: str, src_uri: str, history: FileHistory, adopted: dt.date | None = None
) -> str | None:
    """The build error for a page whose id comes from its path when its file had another path, and so another
    id, in its history (the newest such rename); None when the id never changed.

    With an adoption date, only a rename after it counts: before it the site did not exist, so no id had been
    published (a repository reorganised into folders years ago adopts without pinning an id per file)."""
    name = history.name
    prefix = name[: len(name) - len(src_uri)] if name.endswith(src_uri) else None
    shown_prefix = display_path[: len(display_path) - len(src_uri)] if display_path.endswith(src_uri) else ""
    newer = None
    for revision in reversed(history.revisions):  # newest first
        if revision.path == name or (newer is not None and revision.path == newer.path):
            newer = revision
            continue
        old_id: str | None = None
        if prefix is not None and revision.path.startswith(prefix):
            try:
                old_id = path_policy_id(revision.path[len(prefix) :])
            except ValueError:
                old_id = None
        if old_id == policy_id:
            newer = revision
            continue  # renamed without changing the id (a change of case, say)
        if adopted is not None and newer is not None and newer.date.date() <= adopted:
            return None  # renamed before the site took over: the id it has since is the first one published
        old_path = shown_prefix + revision.path[len(prefix) :] if old_id is not None and prefix is not None else revision.path
        when = f" on {newer.date.date().isoformat()}" if newer is not None else ""
        if old_id is None:
            return (
                f"{display_path}: its policy id comes from its path ({policy_id!r}), but the file was moved here from "
                f"{old_path}{when}, outside the folder its id is taken from. Ids must never change silently: add "
                f"policy_id to its front matter with the id it was published under (policy_id: {policy_id} if it was "
                "never published under another)."
            )
        return (
            f"{display_path}: its policy id comes from its path ({policy_id!r}), but the file was renamed from "
            f"{old_path}{when}, when its id was {old_id!r}. Ids must never change silently: add 'policy_id: {old_id}' "
            f"to its front matter to keep that id (or 'policy_id: {policy_id}' if {old_id!r} was never published)."
        )
    return None
