"""Change history pages, past-version pages and the feed, written into the built site (pure; never imports MkDocs).

Runs in the history worker (history_worker.py), beside MkDocs: each policy's timeline is worked out as soon as
MkDocs has read the page (add), its redlines and version HTML whenever the worker has nothing more urgent to do
(prepare, or guess before MkDocs hands the page over), and the pages are written once the banner is known
(finish). Past versions are not MkDocs pages, so the search index never holds superseded text. Each page is the site's
own shell (shell.py: the 404 page the generator rendered, its title and content area left open) around content
rendered here, so the history looks like every other page of the site.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import jinja2
from markupsafe import Markup, escape

from .banner import human_date
from .feed import FEED_NAME, FeedPolicy, build_feed, change_anchor, day_indexes
from .history import FileHistory, Revision
from .history_job import Finish, Outcome, PolicyOutcome, PolicySource, ShellSource, SiteInfo, Statuses, changes_url
from .history_job import history_base
from .history_job import versions_url
from .markdown_render import VersionRenderer, site_root
from .policy_pages import PolicyPatterns, path_policy_id, renamed_id_error
from .records import ChangeRecord, load_meta, parse_policy_meta
from .redline import redline_html
from .shell import Shell, make_shell
from .status import PolicyStatus, status_from_versions
from .timeline import PastVersion, Timeline, build_timeline
from .versions import HistoryChange, policy_version, split_front_matter

TEMPLATES = Path(__file__).parent / "templates"
HISTORY_CSS = "assets/policy/history.css"


@dataclass(frozen=True)
class _Change:
    record: ChangeRecord
    anchor: str
    redline: Markup | None
    before_url: str | None
    after_url: str | None
    revision: Revision | None = None  # set for a change taken from the repository's history


@dataclass(frozen=True)
class _Content:
    """A policy's change entries with their redlines, and the HTML of each version: all its pages need but the
    title. Worked out from the file, its records and its URL, so it can be done before the plugin's message."""

    source: str
    records: tuple[ChangeRecord, ...]
    url: str
    timeline: Timeline
    changes: tuple[_Change, ...] | None = None  # None: only the timeline is worked out yet
    bodies: tuple[Markup, ...] = ()


@dataclass
class _Timed:
    """A policy whose timeline is known (what the status line and the manifest need); pages still to prepare."""

    policy: PolicySource
    content: _Content
    outcome: PolicyOutcome
    status: PolicyStatus


@dataclass
class _Prepared:
    policy: PolicySource
    changes: tuple[_Change, ...]
    versions: tuple[PastVersion, ...]
    bodies: tuple[Markup, ...]
    outcome: PolicyOutcome
    rendered: list[_Rendered] = field(default_factory=list)  # the content of every page of the policy


@dataclass(frozen=True)
class _Rendered:
    """A page's content, rendered before the shell is known, with its title and description."""

    url: str
    title: str
    description: str
    content: bytes


def _environment() -> jinja2.Environment:
    # auto_reload off: otherwise every page's get_template() stats the template files again.
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True, keep_trailing_newline=True, auto_reload=False
    )
    env.filters["policy_date"] = human_date
    return env


class HistorySite:
    """Collects policies as they come and writes their history pages at the end.

    add() works out a policy's timeline (cheap, and what the plugin waits for: statuses()); prepare() does the
    CPU-heavy part (redlines, version HTML, pages rendered with a gap for the banner) whenever the worker has no
    message to read; guess() does the same for a page MkDocs has not handed over yet, read from disk as the
    plugin will read it, so that on a small site the heavy part is not all left for after the last page;
    finish() prepares what is left and writes every page."""

    def __init__(self, site: SiteInfo, histories: Callable[[], dict[Path, FileHistory]]) -> None:
        self.site = site
        self._histories = histories
        self._timed: list[_Timed] = []
        self._waiting: deque[_Timed] = deque()
        self._prepared: list[_Prepared] = []
        self._renderer = VersionRenderer(site.extensions, site.extension_configs, site.page_urls)
        self._env = _environment()
        self._patterns = PolicyPatterns.parse(site.policy_patterns)
        self._unread: deque[tuple[str, str]] = deque(site.sources)  # pages not handed over yet, to guess
        self._handed: set[str] = set()
        self._guessed: dict[str, _Content] = {}
        self.timings: dict[str, float] = {
            "history": 0.0, "timeline": 0.0, "redline": 0.0, "markdown": 0.0, "render": 0.0, "write": 0.0,
            "guessed": 0, "guesses_used": 0,
        }

    def _history(self, path: str) -> FileHistory:
        began = time.perf_counter()
        history = self._histories()[Path(path)]
        self.timings["history"] += time.perf_counter() - began
        return history

    def _timeline(self, history: FileHistory, source: str, records: tuple[ChangeRecord, ...], url: str) -> _Content:
        began = time.perf_counter()
        timeline = build_timeline(history, records, source, history_base(url), self.site.adopted)
        self.timings["timeline"] += time.perf_counter() - began
        return _Content(source, records, url, timeline)

    def add(self, policy: PolicySource) -> None:
        """Work out one policy's timeline, its versions and its status line."""
        self._handed.add(policy.src_uri)
        history = self._history(policy.path)
        # MkDocs reads pages as utf-8-sig; reading here keeps the pipe from the plugin small (it must never fill).
        source = policy.source if policy.source is not None else Path(policy.path).read_text(encoding="utf-8-sig")
        content = self._guessed.pop(policy.src_uri, None)
        if content is not None and (content.source, content.records, content.url) == (source, policy.records, policy.url):
            self.timings["guesses_used"] += 1
        else:
            content = self._timeline(history, source, policy.records, policy.url)
        timeline = content.timeline
        introduced = {id(c.record): policy_version(c.after) for c in timeline.changes if not c.from_history}
        from_history = tuple(
            HistoryChange(c.record.date.isoformat(), c.record.summary, policy_version(c.after), c.revision.commit)
            for c in timeline.changes if c.revision is not None
        )
        records = content.records  # equal to policy.records; the timeline's records are these very objects
        outcome = PolicyOutcome(
            policy.policy_id, policy.display_path, tuple(v.entry() for v in timeline.versions),
            tuple(introduced.get(id(r)) for r in records), timeline.unrecorded_diff, from_history,
        )
        status = status_from_versions(timeline.versions, self.site.build_date or dt.date.today())
        if policy.id_from_path:
            error = renamed_id_error(policy.display_path, policy.policy_id, policy.src_uri, history, self.site.adopted)
            if error is not None:
                status = PolicyStatus(status.effective, status.versions, status.in_force, error)
        timed = _Timed(policy, content, outcome, status)
        self._timed.append(timed)
        self._waiting.append(timed)

    def statuses(self) -> Statuses:
        """The status line of every policy added so far, by src_uri."""
        return Statuses({t.policy.src_uri: t.status for t in self._timed})

    def guess(self) -> bool:
        """Read the next page MkDocs has not handed over yet as the plugin will, and when it is a policy page,
        work out its timeline, redlines and version HTML (add() checks that the plugin saw the same file and
        records). False when no page is left to guess."""
        while self._unread:
            src_uri, path = self._unread.popleft()
            if src_uri in self._handed:
                continue
            try:
                source = Path(path).read_text(encoding="utf-8-sig")
                path_id = path_policy_id(src_uri) if self._patterns.matches(src_uri) else None
                meta = parse_policy_meta(load_meta(split_front_matter(source)[0], src_uri), src_uri, path_id)
            except (OSError, UnicodeDecodeError, ValueError):  # RecordError is one: the plugin will say what is wrong
                continue
            if meta is None:
                continue
            url = self.site.page_urls.get(src_uri)
            if url is None:
                continue
            content = self._timeline(self._history(path), source, meta.changes, url)
            self._guessed[src_uri] = self._content(content, src_uri)
            self.timings["guessed"] += 1
            return True
        return False

    def _content(self, content: _Content, src_uri: str) -> _Content:
        """Add the redlines and the version HTML to a policy's timeline."""
        if content.changes is not None:
            return content
        began = time.perf_counter()
        timeline, records = content.timeline, content.records
        by_version = {v.version: v.url for v in reversed(timeline.versions)}  # the newest URL of a text wins
        record_index = {id(r): i for r, i in zip(records, day_indexes(records))}
        history_days: dict[dt.date, int] = {}
        changes: list[_Change] = []
        for text in reversed(timeline.changes):  # oldest first, so that a day's anchors number in order
            record = text.record
            if text.revision is not None:
                history_days[record.date] = history_days.get(record.date, 0) + 1
                anchor = history_anchor(record.date, history_days[record.date])
            else:
                anchor = change_anchor(record, record_index.get(id(record), 0))
            redline = None if text.before is None else Markup(redline_html(text.before, text.after))
            before_url = None if text.before is None else by_version.get(policy_version(text.before))
            changes.append(_Change(record, anchor, redline, before_url, by_version.get(policy_version(text.after)), text.revision))
        changes.reverse()
        converted = time.perf_counter()
        self.timings["redline"] += converted - began
        page_url = history_base(content.url) + "versions/0000-00-00/"  # every version page sits at the same depth
        bodies = self._renderer.render([v.body for v in timeline.versions], src_uri=src_uri, page_url=page_url)
        self.timings["markdown"] += time.perf_counter() - converted
        return _Content(content.source, records, content.url, timeline, tuple(changes), tuple(Markup(b) for b in bodies))

    def prepare(self) -> bool:
        """Prepare the pages of the next policy added (redlines, version HTML, the content of each page); False
        when none is waiting."""
        if not self._waiting:
            return False
        timed = self._waiting.popleft()
        content = self._content(timed.content, timed.policy.src_uri)
        assert content.changes is not None
        prepared = _Prepared(timed.policy, content.changes, content.timeline.versions, content.bodies, timed.outcome)
        began = time.perf_counter()
        if self.site.build_date is not None:
            prepared.rendered = list(self._pages(prepared, self.site.build_date, self.site.feed_url))
        self.timings["render"] += time.perf_counter() - began
        self._prepared.append(prepared)
        # Make the folders now, while MkDocs still renders: on a busy or just-emptied disk each mkdir can take
        # ~0.5 ms (bench/README.md), and in finish() that time would add to the end of the build.
        for url in (changes_url(content.url), *(v.url for v in content.timeline.versions)):
            os.makedirs(os.path.join(self.site.site_dir, url), exist_ok=True)
        return True

    def finish(self, finish: Finish, shell: ShellSource) -> Outcome:
        """Write every change history page and every version page into the site's own shell (the page the
        generator rendered, ``shell``), and the feed; say what each policy's versions are."""
        while self.prepare():
            pass
        if shell.html is None:
            return Outcome(error=shell.error or "the generator rendered no 404 page to take the history pages' shell from.")
        began = time.perf_counter()
        written = 0
        shells_by_root: dict[str, Shell] = {}  # by the page's depth ("../../"): one shell for its URLs

        def around(url: str, title: str, description: str) -> tuple[bytes, bytes]:
            root = site_root(url)
            parsed = shells_by_root.get(root)
            if parsed is None:
                parsed = shells_by_root[root] = Shell.parse(make_shell(
                    shell.html or "", shell.page_url, site_url=self.site.site_url, target_url=url, description=True,
                    extra_head=f'  <link rel="stylesheet" href="{root}{HISTORY_CSS}">\n  ',
                ))
            before, after = parsed.around(f"{title} - {self.site.site_name}", description)
            return before.encode("utf-8"), after.encode("utf-8")

        # Pages rendered in prepare() are used as they are; any other page is rendered here.
        early = finish.build_date == self.site.build_date and finish.feed_url == self.site.feed_url
        for prepared in self._prepared:
            pages = prepared.rendered if early and prepared.rendered else self._pages(prepared, finish.build_date, finish.feed_url)
            for page in pages:
                before, after = around(page.url, page.title, page.description)
                _write_file(os.path.join(self.site.site_dir, page.url), before, page.content, after)
                written += 1
        if finish.feed_url is not None:
            write_feed(self.site, [p.policy for p in self._prepared], finish.build_date, history=True)
        self.timings["write"] += time.perf_counter() - began
        self.timings["conversions"] = self._renderer.conversions
        self.timings["worker_cpu"] = time.process_time()  # the worker process's whole CPU time so far
        return Outcome(tuple(p.outcome for p in self._prepared), written, timings=dict(self.timings))

    def _render(self, url: str, template: str, context: dict[str, object], feed_url: str | None, build_date: dt.date) -> str:
        """The content of one page (what goes in the shell's content area); links start from ``root``."""
        root = site_root(url)
        return self._env.get_template(template).render(
            site=self.site, root=root, feed_href=None if feed_url is None else root + feed_url, build_date=build_date, **context,
        )

    def _pages(self, prepared: _Prepared, build_date: dt.date, feed_url: str | None) -> Iterator[_Rendered]:
        """The content of every page of a policy: its change history, its list of versions and each version."""
        policy, versions = prepared.policy, prepared.versions
        history, listing = changes_url(policy.url), versions_url(policy.url)
        common: dict[str, object] = dict(policy=policy, versions=versions, changes_url=history, versions_url=listing)
        yield _Rendered(
            history, f"{policy.title}: change history",
            f"Every change to the {policy.title}, newest first, with the words removed and added.",
            self._render(history, "changes.html", dict(common, changes=prepared.changes), feed_url, build_date).encode("utf-8"),
        )
        yield _Rendered(
            listing, f"{policy.title}: all versions",
            f"Every text the {policy.title} has had, newest first, each with the dates it applied.",
            self._render(listing, "versions.html", common, feed_url, build_date).encode("utf-8"),
        )
        if not versions:
            return
        # Hundreds of version pages differ only in a few fields: render version.html once per policy with a marker
        # in each (_VERSION_MARKERS), then fill them in for each version (a tenth of the time of a Jinja run each).
        skeleton = _MARKER.split(self._render(versions[0].url, "version.html", dict(common, **_VERSION_MARKERS), feed_url, build_date))
        for i, (version, body) in enumerate(zip(versions, prepared.bodies)):
            status, notice = _status(version, versions[i - 1] if i else None, build_date)
            when = _version_date(version)
            fields = {
                "kind": "info" if version.current else "warning",
                "status": escape(status),
                "notice": escape(notice),
                "heading": "" if "<h1" in body else f"<h1>{escape(policy.title)}</h1>",
                "body": body,
            }
            content = "".join(fields[part] if n % 2 else part for n, part in enumerate(skeleton))
            yield _Rendered(
                version.url, f"{policy.title}, version of {when}", f"The {policy.title} as in force from {when}. {status}.",
                content.encode("utf-8"),
            )


# The fields of version.html that differ between a policy's versions, as markers (a NUL never occurs in our HTML).
_VERSION_MARKERS = {name: Markup(f"\x00{name}\x00") for name in ("kind", "status", "notice", "heading", "body")}
_MARKER = re.compile("\x00(" + "|".join(_VERSION_MARKERS) + ")\x00")


def history_anchor(day: dt.date, same_day: int = 1) -> str:
    """The id of a change taken from the history on the change history page: ``history-2024-06-03`` (``-2`` for
    the second commit of that day that changed the text)."""
    return f"history-{day.isoformat()}" + (f"-{same_day}" if same_day > 1 else "")


def _version_date(version: PastVersion) -> str:
    """A version's date as its title shows it: ``3 June 2024``, ``3 June 2024 (2)`` for the day's second text."""
    return human_date(version.effective) + (f" ({version.same_day})" if version.same_day > 1 else "")


def _write_file(directory: str, *parts: bytes) -> None:
    """Write ``directory``/index.html from its parts (no joined copy of each 30 KB page)."""
    path = os.path.join(directory, "index.html")
    try:
        out = open(path, "wb")  # noqa: SIM115 - the folder is usually there already (made in add())
    except FileNotFoundError:
        os.makedirs(directory, exist_ok=True)
        out = open(path, "wb")  # noqa: SIM115
    with out:
        for part in parts:
            out.write(part)


def _status(version: PastVersion, newer: PastVersion | None, today: dt.date) -> tuple[str, str]:
    """The heading and sentence that say whether a version is the current text or a superseded one."""
    since = human_date(version.effective)
    if newer is None or version.current:
        if version.effective > today:
            return "Current text, not yet in force", f"This text takes effect on {since}."
        return "Current text", f"This is the current text, in force since {since}."
    if newer.effective <= version.effective:  # replaced the day it took effect (or, oddly, by an earlier date)
        if newer.effective > today:
            return "To be superseded", f"This text takes effect on {since}; a newer text replaces it on {human_date(newer.effective)}."
        return "Superseded", f"This text is no longer in force. It took effect on {since} and was replaced on {human_date(newer.effective)}."
    until = human_date(newer.effective - dt.timedelta(days=1))
    if newer.effective > today:
        return "To be superseded", (
            f"This text has been in force since {since}; a new text replaces it on {human_date(newer.effective)}."
        )
    return "Superseded", f"This text is no longer in force. It applied from {since} to {until}."


def write_feed(site: SiteInfo, policies: list[PolicySource], build_date: dt.date, *, history: bool) -> None:
    """Write changes.xml (every material change of every policy) into the site; without ``history`` the
    entries link to the policy pages, as there are no change history pages to link to."""
    assert site.site_url is not None
    feed = build_feed(
        [FeedPolicy(p.policy_id, p.title, history_base(p.url) if history else p.url, p.records, history) for p in policies],
        site_url=site.site_url, site_name=site.site_name, empty_updated=build_date,
    )
    Path(site.site_dir, FEED_NAME).write_bytes(feed)
