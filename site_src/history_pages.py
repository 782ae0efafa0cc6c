"""Change history pages, past-version pages and the feed, written into the built site (pure; never imports MkDocs).

Runs in the history worker (history_worker.py), beside MkDocs: each policy's timeline, redlines and version HTML
are worked out as soon as MkDocs has read the page (add), and the pages are written once the banner is known
(finish). Past versions are not MkDocs pages, so the search index never holds superseded text.
"""

from __future__ import annotations

import datetime as dt
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import jinja2
from markupsafe import Markup

from .banner import human_date
from .feed import FEED_NAME, FeedPolicy, build_feed, change_anchor, day_indexes
from .history import FileHistory
from .history_job import Finish, Outcome, PolicyOutcome, PolicySource, SiteInfo, changes_url, history_base
from .markdown_render import VersionRenderer, site_root
from .redline import redline_html
from .timeline import PastVersion, build_timeline
from .versions import policy_version

TEMPLATES = Path(__file__).parent / "templates"
# Stands in for the banner when pages are rendered before it is known; a NUL never occurs in our HTML.
_BANNER_GAP = "\x00policy-banner\x00"


@dataclass(frozen=True)
class _Change:
    record: object
    anchor: str
    redline: Markup | None
    before_url: str | None
    after_url: str | None


@dataclass
class _Prepared:
    policy: PolicySource
    changes: list[_Change]
    versions: tuple[PastVersion, ...]
    bodies: list[Markup]
    outcome: PolicyOutcome
    rendered: list[_Rendered] = field(default_factory=list)  # every page of the policy, banner left out


@dataclass(frozen=True)
class _Rendered:
    """A page rendered before the banner was known: its HTML before and after the banner."""

    url: str
    base: str  # the page's relative base URL, which picks the banner
    head: bytes
    tail: bytes


def _environment() -> jinja2.Environment:
    # auto_reload off: otherwise every page's get_template() stats the template files again.
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True, keep_trailing_newline=True, auto_reload=False
    )
    env.filters["policy_date"] = human_date
    return env


def _base_url(page_url: str) -> str:
    """MkDocs' base_url for a page at ``page_url``: ``../..`` for ``privacy/changes/``."""
    return site_root(page_url).rstrip("/") or "."


def banner_bases(policy_urls: list[str]) -> set[str]:
    """The relative base URLs of every generated page of these policies (the banner is rendered once for each)."""
    bases = set()
    for url in policy_urls:
        bases.add(_base_url(changes_url(url)))
        bases.add(_base_url(history_base(url) + "versions/0000-00-00/"))
    return bases


class HistorySite:
    """Collects policies as they come and writes their history pages at the end."""

    def __init__(self, site: SiteInfo, histories: Callable[[], dict[Path, FileHistory]]) -> None:
        self.site = site
        self._histories = histories
        self._prepared: list[_Prepared] = []
        self._renderer = VersionRenderer(site.extensions, site.extension_configs, site.page_urls)
        self._env = _environment()
        self.timings: dict[str, float] = {
            "history": 0.0, "timeline": 0.0, "redline": 0.0, "markdown": 0.0, "render": 0.0, "write": 0.0
        }

    def add(self, policy: PolicySource) -> None:
        """Work out one policy's timeline, redlines and version HTML (the CPU-heavy part)."""
        began = time.perf_counter()
        history = self._histories()[Path(policy.path)]
        tied = time.perf_counter()
        self.timings["history"] += tied - began
        base = history_base(policy.url)
        # MkDocs reads pages as utf-8-sig; reading here keeps the pipe from the plugin small (it must never fill).
        source = policy.source if policy.source is not None else Path(policy.path).read_text(encoding="utf-8-sig")
        timeline = build_timeline(history, policy.records, source, base)
        by_version = {v.version: v.url for v in reversed(timeline.versions)}  # the newest URL of a text wins
        texts = {id(c.record): c for c in timeline.changes}
        redlined = time.perf_counter()
        self.timings["timeline"] += redlined - tied
        changes: list[_Change] = []
        change_versions: list[str | None] = []
        for record, index in zip(policy.records, day_indexes(policy.records)):
            text = texts[id(record)]
            after = policy_version(text.after)
            change_versions.append(after)
            redline = None if text.before is None else Markup(redline_html(text.before, text.after))
            before_url = None if text.before is None else by_version.get(policy_version(text.before))
            changes.append(_Change(record, change_anchor(record, index), redline, before_url, by_version.get(after)))
        rendered = time.perf_counter()
        self.timings["redline"] += rendered - redlined
        page_url = base + "versions/0000-00-00/"  # every version page sits at the same depth
        bodies = self._renderer.render([v.body for v in timeline.versions], src_uri=policy.src_uri, page_url=page_url)
        self.timings["markdown"] += time.perf_counter() - rendered
        outcome = PolicyOutcome(
            policy.policy_id, policy.display_path, tuple(v.entry() for v in timeline.versions), tuple(change_versions),
            timeline.unrecorded_diff,
        )
        prepared = _Prepared(policy, changes, timeline.versions, [Markup(b) for b in bodies], outcome)
        converted = time.perf_counter()
        self._prerender(prepared)
        self.timings["render"] += time.perf_counter() - converted
        self._prepared.append(prepared)
        # Make the folders now, while MkDocs still reads pages: on a busy or just-emptied disk each mkdir can
        # take ~0.5 ms (bench/README.md), and in finish() that time would add to the end of the build.
        for url in (changes_url(policy.url), *(v.url for v in timeline.versions)):
            os.makedirs(os.path.join(self.site.site_dir, url), exist_ok=True)

    def finish(self, finish: Finish) -> Outcome:
        """Write every change history page, every version page and the feed; say what each policy's versions are."""
        began = time.perf_counter()
        written = 0
        # Pages rendered in add() only need their banner put in; any other page is rendered here.
        early = finish.build_date == self.site.build_date and finish.feed_url == self.site.feed_url
        banners: dict[str, bytes] = {base: html.encode("utf-8") for base, html in finish.banners.items()}
        for prepared in self._prepared:
            # The gap holds a whole <aside>: with no change to announce (an empty banner) the page is rendered again.
            if early and prepared.rendered and all(banners.get(page.base) for page in prepared.rendered):
                for page in prepared.rendered:
                    _write_file(os.path.join(self.site.site_dir, page.url), page.head, banners[page.base], page.tail)
                    written += 1
                continue
            for url, template, context in self._pages(prepared, finish.build_date):
                html = self._render(url, template, context, finish.banners.get(_base_url(url), ""), finish.feed_url, finish.build_date)
                _write_file(os.path.join(self.site.site_dir, url), html.encode("utf-8"))
                written += 1
        if finish.feed_url is not None:
            write_feed(self.site, [p.policy for p in self._prepared], finish.build_date, history=True)
        self.timings["write"] += time.perf_counter() - began
        self.timings["conversions"] = self._renderer.conversions
        self.timings["worker_cpu"] = time.process_time()  # the worker process's whole CPU time so far
        return Outcome(tuple(p.outcome for p in self._prepared), written, timings=dict(self.timings))

    def _prerender(self, prepared: _Prepared) -> None:
        """Render a policy's pages now, while MkDocs still reads pages, leaving a gap for the banner (which
        needs every policy's records, so it only comes with Finish)."""
        build_date = self.site.build_date
        if build_date is None:
            return
        for url, template, context in self._pages(prepared, build_date):
            html = self._render(url, template, context, _BANNER_GAP, self.site.feed_url, build_date)
            if html.count(_BANNER_GAP) != 1:
                prepared.rendered = []  # cannot happen with our templates; finish() renders them whole
                return
            head, _, tail = html.partition(_BANNER_GAP)
            prepared.rendered.append(_Rendered(url, _base_url(url), head.encode("utf-8"), tail.encode("utf-8")))

    def _render(self, url: str, template: str, context: dict[str, object], banner: str, feed_url: str | None, build_date: dt.date) -> str:
        root = site_root(url)
        return self._env.get_template(template).render(
            site=self.site, root=root, banner=Markup(banner), feed_href=None if feed_url is None else root + feed_url,
            build_date=build_date, **context,
        )

    def _pages(self, prepared: _Prepared, build_date: dt.date) -> list[tuple[str, str, dict[str, object]]]:
        """(url, template, context) of a policy's change history page and of each of its version pages."""
        policy, versions = prepared.policy, prepared.versions
        history = changes_url(policy.url)
        pages: list[tuple[str, str, dict[str, object]]] = [(history, "changes.html", dict(
            policy=policy, changes=prepared.changes, versions=versions, changes_url=history,
            title=f"{policy.title}: change history",
            description=f"Every change to the {policy.title}, newest first, with the words removed and added.",
        ))]
        for i, (version, body) in enumerate(zip(versions, prepared.bodies)):
            status, notice = _status(version, versions[i - 1] if i else None, build_date)
            when = human_date(version.effective)
            pages.append((version.url, "version.html", dict(
                policy=policy, version=version, body=body, status=status, notice=notice, has_h1="<h1" in body,
                changes_url=history, title=f"{policy.title}, version of {when}",
                description=f"The {policy.title} as in force from {when}. {status}.",
            )))
        return pages


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
