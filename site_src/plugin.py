"""The `policy` MkDocs plugin: a thin adapter from MkDocs events to the pure modules beside it.

records.py validates change records, policy_pages.py finds policy pages by the `policies` patterns and gives
them ids, versions.py hashes policy text and writes the manifest, banner.py decides which changes every page
announces, and the history worker (history_worker.py, in a second process) works out each policy's versions
(from change records, and with `adopted` from git history too) and writes its change history, its past versions
and the feed while MkDocs renders the site (each history page in the shell of the 404 page, which MkDocs renders
first: shell.py); status.py turns its first answer into each policy page's status line. policy-shell.html, the
same shell with absolute URLs, is written for the feedback service. The theme
overrides (overrides/) and assets (assets/) ship in this package, so a site enables the plugin and copies no
templates.
"""

from __future__ import annotations

import datetime as dt
import os
import posixpath
import time
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup
from mkdocs.config.defaults import MkDocsConfig
from mkdocs.exceptions import PluginError
from mkdocs.plugins import BasePlugin, event_priority, get_plugin_logger
from mkdocs.structure.files import File, Files
from mkdocs.structure.nav import Navigation
from mkdocs.structure.pages import Page
from mkdocs.utils.templates import TemplateContext

from .banner import BuildDateError, PolicyChanges, active_changes, build_date, human_date
from .config import PolicyConfig
from .feed import FEED_NAME
from .history import HistoryUnavailable, locate_repository
from .history_job import Finish, Outcome, PolicySource, ShellSource, SiteInfo, Statuses, changes_url
from .history_worker import HistoryWorker
from .partials import FeedbackForm, render_status
from .policy_build import NO_SITE_URL, PolicyBuildError, adoption_date, feedback_form, unrecorded_edit, unused_pattern
from .policy_pages import PatternError, PolicyPatterns, path_policy_id
from .records import PolicyMeta, RecordError, check_unique_policy_ids, load_meta, parse_policy_meta
from .redline import REDLINE_CSS
from .shell import SHELL_NAME, ShellError, make_shell
from .status import PolicyStatus, insert_status, status_from_records
from .versions import MANIFEST_NAME, HistoryChange, Policy, VersionEntry, build_manifest, dump_manifest
from .versions import policy_version, split_front_matter

log = get_plugin_logger(__name__)

HERE = Path(__file__).parent
OVERRIDES = HERE / "overrides"
ASSETS = {"assets/policy/policy.css": HERE / "assets" / "policy.css", "assets/policy/feedback.js": HERE / "assets" / "feedback.js"}
# Templates may include the theme's own version of a template they override, e.g. "theme/partials/search.html".
THEME_PREFIX = "theme"
FORM_TEMPLATE = "feedback.html"
BANNER_TEMPLATE = "partials/policy-banner.html"
HISTORY_CSS = "assets/policy/history.css"


@dataclass
class _PolicyPage:
    page: Page
    path: str
    meta: PolicyMeta
    version: str
    source: str


class PolicyPlugin(BasePlugin[PolicyConfig]):  # type: ignore[no-untyped-call]
    """Change banner, policy versions manifest and feedback form for a site of policies."""

    def __init__(self) -> None:
        self._pages: list[_PolicyPage] = []
        self._form_pages: list[str] = []  # pages that show the feedback form
        # Set by the change-history work: history pages exist at "<policy url>changes/", the feed at feed_url,
        # and versions[policy_id] lists every version, newest first.
        self.history_pages = False
        self.feed_url: str | None = None
        self.versions: dict[str, tuple[VersionEntry, ...]] = {}
        self.change_versions: dict[str, tuple[str | None, ...]] = {}
        self.history_changes: dict[str, tuple[HistoryChange, ...]] = {}
        self._patterns = PolicyPatterns()
        self._adopted: dt.date | None = None
        self._statuses: dict[str, PolicyStatus] = {}  # by src_uri: what each policy page's status line says
        self._worker: HistoryWorker | None = None
        self._site: SiteInfo | None = None
        self.outcome: Outcome | None = None  # what the history worker reported (timings for the bench)
        self._today: dt.date | None = None
        self._shell_page: str | None = None  # the 404 page as the theme rendered it: the site's page shell

    def on_config(self, config: MkDocsConfig) -> MkDocsConfig:
        """Put the shipped overrides after the site's own custom_dir and before the theme, add our CSS, and start
        reading the git history (or refuse a shallow clone) before MkDocs reads a single page."""
        if self.config.banner_days < 0:
            raise PluginError(f"policy: banner_days must be 0 or more, got {self.config.banner_days}.")
        try:
            self._patterns = PolicyPatterns.parse(self.config.policies)
        except PatternError as e:
            raise PluginError(f"policy: {e}") from None
        self._adopted = _adoption_date(self.config.adopted)
        dirs = config.theme.dirs
        dirs.insert(1 if config.theme.custom_dir else 0, str(OVERRIDES))
        config.extra_css.append("assets/policy/policy.css")
        self.feed_url = FEED_NAME if config.site_url else None
        if self.feed_url is None:
            log.warning(NO_SITE_URL.format(feed=FEED_NAME))
        self._start_history(Path(config.config_file_path or "mkdocs.yml").resolve().parent, config.docs_dir)
        return config

    def _start_history(self, root: Path, docs_dir: str) -> None:
        self._close_worker()
        self.history_pages = False
        try:
            locate_repository(root)
        except HistoryUnavailable as e:
            if self.config.require_history:
                raise PluginError(f"policy: {e}") from None
            # info, not a warning: the site asked for this, so --strict must still pass.
            log.info(f"Building without change history pages or past versions (require_history: false): {e}")
            return
        self._worker = HistoryWorker(root, docs_dir)
        self.history_pages = True

    def on_pre_build(self, *, config: MkDocsConfig) -> None:
        """Forget the previous build's pages (mkdocs serve rebuilds with the same plugin instance)."""
        self._pages = []
        self._form_pages = []
        self._statuses = {}
        self._shell_page = None

    def on_files(self, files: Files, *, config: MkDocsConfig) -> Files:
        """Ship the plugin's CSS and JavaScript with the site, and tell the history worker about the site."""
        for uri, path in ASSETS.items():
            files.append(File.generated(config, uri, abs_src_path=str(path)))
        pages = files.documentation_pages()
        for pattern in self._patterns.unused(f.src_uri for f in pages):
            log.warning(unused_pattern(pattern, config.docs_dir))
        if self._worker is None:
            return files
        files.append(File.generated(config, HISTORY_CSS, content=REDLINE_CSS + HERE.joinpath("assets", "history.css").read_text()))
        try:  # known now, so the worker can render its pages while MkDocs reads them (on_env checks it again)
            today = build_date(os.environ.get("SOURCE_DATE_EPOCH"))
        except BuildDateError as e:
            raise PluginError(str(e)) from None
        self._site = SiteInfo(
            site_name=config.site_name,
            site_url=config.site_url,
            site_dir=config.site_dir,
            lang=str(config.theme.get("language") or "en"),
            direction=str(config.theme.get("direction") or "ltr"),
            palette=_palette(config),
            stylesheets=(*_theme_stylesheets(config), *config.extra_css, HISTORY_CSS),
            favicon=str(config.theme.get("favicon") or "assets/images/favicon.png"),
            copyright=config.copyright,
            extensions=tuple(config.markdown_extensions),
            extension_configs=dict(config.mdx_configs),
            page_urls={f.src_uri: f.url for f in pages},
            history_paths=tuple(f.abs_src_path for f in pages if f.abs_src_path is not None),
            feed_url=self.feed_url,
            build_date=today,
            adopted=self._adopted,
            sources=tuple((f.src_uri, f.abs_src_path) for f in pages if f.abs_src_path is not None),
            policy_patterns=tuple(self.config.policies),
        )
        self._worker.send(self._site)
        return files

    def on_page_markdown(self, markdown: str, *, page: Page, config: MkDocsConfig, files: Files) -> str:
        """Validate the page's change records and remember policy pages with the version of their text."""
        path = _display_path(page, config)
        source = page.file.content_string  # reads the file on every access: once here
        meta_text, body = split_front_matter(source)
        path_id = None
        if self._patterns.matches(page.file.src_uri):
            try:
                path_id = path_policy_id(page.file.src_uri)
            except ValueError:
                raise PluginError(
                    f"{path}: this page matches the policies patterns, but its path has no letter or digit to make a "
                    "policy id from; add policy_id to its front matter."
                ) from None
        try:
            meta = parse_policy_meta(_front_matter(page.meta, markdown, meta_text, path), path, path_id)
        except RecordError as e:
            raise PluginError(str(e)) from None
        if page.meta.get("template") == FORM_TEMPLATE:
            self._form_pages.append(path)
        if meta is not None:
            self._pages.append(_PolicyPage(page, path, meta, policy_version(body), source))
        return markdown

    def on_page_content(self, html: str, *, page: Page, config: MkDocsConfig, files: Files) -> str:
        """Hand a policy page to the history worker as soon as its title is known, so it works while MkDocs does."""
        if self._worker is not None and self._pages and self._pages[-1].page is page and page.file.abs_src_path:
            p = self._pages[-1]
            self._worker.send(PolicySource(
                p.meta.policy_id, _title(page), page.url, page.file.src_uri, page.file.abs_src_path, p.path, None,
                p.meta.changes, p.meta.id_from_path,
            ), flush=False)  # Finish, in on_env, flushes the last of them
        return html

    def on_env(self, env: jinja2.Environment, *, config: MkDocsConfig, files: Files) -> jinja2.Environment:
        """Give every template (pages, 404.html, feedback.html) the banner and form data, once all pages are read."""
        try:
            check_unique_policy_ids((p.path, p.meta.policy_id) for p in self._pages)
            today = build_date(os.environ.get("SOURCE_DATE_EPOCH"))
        except (RecordError, BuildDateError) as e:
            raise PluginError(str(e)) from None
        theme_dirs = config.theme.dirs[config.theme.dirs.index(str(OVERRIDES)) + 1 :]
        env.loader = jinja2.ChoiceLoader(
            [env.loader, jinja2.PrefixLoader({THEME_PREFIX: jinja2.FileSystemLoader(theme_dirs)})]  # type: ignore[list-item]
        )
        env.filters["policy_date"] = human_date
        banner = active_changes((self._banner_source(p) for p in self._pages), today, self.config.banner_days)
        env.globals["policy_banner"] = banner
        env.globals["policy_feed_url"] = self.feed_url
        env.globals["policy_form"] = self._feedback_form()
        env.globals["policy_manage_url"] = self.config.manage_endpoint

        @lru_cache(maxsize=None)
        def banner_html(base_url: str) -> Markup:
            # The banner is the same on every page at one depth: render it once per base_url, not per page.
            root = base_url.rstrip("/") + "/"
            return Markup(env.get_template(BANNER_TEMPLATE).render(policy_banner=banner, policy_root=root)) if banner else Markup("")

        env.globals["policy_banner_html"] = banner_html
        statuses = Statuses(history=False)
        if self._worker is not None:
            self._worker.send(Finish(self.feed_url, today))
            began = time.perf_counter()
            statuses = self._worker.statuses()
            log.debug(f"Waited {time.perf_counter() - began:.2f} s for the status lines.")
        errors = [s.error for s in statuses.policies.values() if s.error is not None]
        if errors:
            raise PluginError("\n".join(sorted(errors)))
        self.history_pages = self.history_pages and statuses.history
        self._statuses = {
            p.page.file.src_uri: statuses.policies.get(p.page.file.src_uri) or status_from_records(p.meta.changes)
            for p in self._pages
        }
        self._today = today
        return env

    @event_priority(-50)  # after the search plugin has indexed the page: the status line is not policy text
    def on_page_context(self, context: TemplateContext, *, page: Page, config: MkDocsConfig, nav: Navigation) -> TemplateContext:
        """Put the status line (in force since, change history, versions, feed) under a policy page's title."""
        status = self._statuses.get(page.file.src_uri)
        if status is None or page.content is None or self._today is None:
            return context
        html = render_status(status, page.url, self._today, history=self.history_pages, feed_url=self.feed_url)
        page.content = insert_status(page.content, html)
        return context

    def on_post_template(self, output_content: str, *, template_name: str, config: MkDocsConfig) -> str:
        """Keep the 404 page as rendered (the first page MkDocs renders): the history pages take its shell."""
        if template_name == "404.html":
            self._shell_page = output_content
            if self._worker is not None:
                self._worker.send_shell(ShellSource(output_content))
        return output_content

    def on_post_build(self, *, config: MkDocsConfig) -> None:
        """Collect the change history from the worker, warn about unrecorded edits, write the manifest and the feed."""
        if self._worker is not None:
            try:
                began = time.perf_counter()
                outcome = self._worker.result()
                log.debug(f"Waited {time.perf_counter() - began:.2f} s for the change history worker.")
                self._collect(outcome)
            finally:
                self._close_worker()
        elif self.feed_url is not None:
            # Imported here: with a history worker (the usual case) only the worker uses history_pages, and the
            # forked worker imports it itself, on its own core, while git reads the history.
            from .history_pages import write_feed

            today = self._today or dt.datetime.now(dt.timezone.utc).date()
            write_feed(_plain_site(config), [self._source(p) for p in self._pages], today, history=False)
        manifest = build_manifest(self.policies())
        Path(config.site_dir, MANIFEST_NAME).write_text(dump_manifest(manifest), encoding="utf-8")
        self._write_shell(config)

    def _write_shell(self, config: MkDocsConfig) -> None:
        """Write policy-shell.html, the site's page shell for the form service (shell.py)."""
        if self._shell_page is None:
            raise PluginError(f"policy: the theme rendered no 404.html to make {SHELL_NAME} from; use the Material theme.")
        try:
            shell = make_shell(self._shell_page, "404.html", site_url=config.site_url)
        except ShellError as e:
            raise PluginError(f"policy: {e}") from None
        Path(config.site_dir, SHELL_NAME).write_text(shell, encoding="utf-8")

    def on_build_error(self, *, error: Exception) -> None:
        """Stop the history worker when the build fails part-way."""
        self._close_worker()

    def _collect(self, outcome: Outcome) -> None:
        self.outcome = outcome
        if outcome.error is not None:
            if outcome.history_unavailable and not self.config.require_history:
                log.info(f"Built without change history pages or past versions (require_history: false): {outcome.error}")
                return
            raise PluginError(f"policy: {outcome.error}")
        for result in outcome.policies:
            self.versions[result.policy_id] = result.versions
            self.change_versions[result.policy_id] = result.change_versions
            self.history_changes[result.policy_id] = result.history_changes
            if result.unrecorded_diff is not None:
                # A warning, so that `mkdocs build --strict` fails: MkDocs counts warnings up to the end of on_post_build.
                log.warning(unrecorded_edit(result.display_path, result.unrecorded_diff))
        log.debug(f"Change history: {outcome.pages_written} pages; timings {dict(outcome.timings)}")

    def _close_worker(self) -> None:
        if self._worker is not None:
            self._worker.close()
            self._worker = None

    def _source(self, p: _PolicyPage) -> PolicySource:
        return PolicySource(
            p.meta.policy_id, _title(p.page), p.page.url, p.page.file.src_uri, p.page.file.abs_src_path or "", p.path,
            p.source, p.meta.changes,
        )

    def policies(self) -> list[Policy]:
        """Every policy page of this build, as the manifest describes it."""
        return [
            Policy(
                id=p.meta.policy_id,
                title=_title(p.page),
                url=p.page.url,
                version=p.version,
                changes=p.meta.changes,
                versions=self.versions.get(p.meta.policy_id, ()),
                change_versions=self.change_versions.get(p.meta.policy_id, ()),
                history_changes=self.history_changes.get(p.meta.policy_id, ()),
            )
            for p in self._pages
        ]

    def _banner_source(self, p: _PolicyPage) -> PolicyChanges:
        history = changes_url(p.page.url) if self.history_pages else None
        return PolicyChanges(p.meta.policy_id, _title(p.page), p.page.url, p.meta.changes, history)

    def _feedback_form(self) -> FeedbackForm | None:
        try:
            return feedback_form(
                ((p.meta.policy_id, p.version, _title(p.page), p.page.url) for p in self._pages), self._form_pages,
                consent_policy=self.config.consent_policy, action=self.config.form_endpoint,
                withdraw_action=self.config.withdraw_endpoint,
            )
        except PolicyBuildError as e:
            raise PluginError(str(e)) from None


def _front_matter(parsed: Mapping[str, Any], markdown: str, meta_text: str | None, path: str) -> Mapping[str, Any]:
    """The page's YAML front matter as a dict, from MkDocs' parse when it reads as ours would.

    MkDocs parses the same block by the same rule with libyaml too, so parsing it again would double the cost
    (0.27 s for 500 pages). Ours is used when MkDocs dropped the block (an impossible date such as 2026-13-01, a
    syntax error: MkDocs then leaves the block at the top of the page's Markdown, and meta empty unless another
    plugin filled it), so that the build fails naming the line instead of losing the records without a word,
    and when the parses could differ (see _reads_as_ours)."""
    if meta_text is None:
        return {}  # no YAML block (MkDocs' MultiMarkdown-style meta is not front matter for policies)
    if not parsed or markdown.startswith("---") or not _reads_as_ours(parsed):
        return load_meta(meta_text, path)
    return parsed


def _reads_as_ours(meta: Mapping[str, Any]) -> bool:
    """True when MkDocs' parse of the fields we read equals ours. The loaders differ in one thing: MkDocs' turns
    a timestamp into a date (or datetime), ours keeps the text. The results agree for a record's date and
    effective written YYYY-MM-DD, and anywhere else a date means the parses differ."""
    if _holds_date(meta.get("policy_id")):
        return False
    changes = meta.get("changes")
    if not isinstance(changes, list):
        return not _holds_date(changes)
    for record in changes:
        if not isinstance(record, dict):
            if _holds_date(record):
                return False
            continue
        for key, value in record.items():
            if _holds_date(key) or (_holds_date(value) and not (key in ("date", "effective") and type(value) is dt.date)):
                return False
    return True


def _holds_date(value: Any) -> bool:
    if isinstance(value, dt.date):  # datetime too
        return True
    if isinstance(value, dict):
        return any(_holds_date(k) or _holds_date(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_holds_date(v) for v in value)
    return False


def _adoption_date(value: object) -> dt.date | None:
    try:
        return adoption_date(value)
    except PolicyBuildError as e:
        raise PluginError(str(e)) from None


def _display_path(page: Page, config: MkDocsConfig) -> str:
    """The page's path as the writer knows it, e.g. docs/privacy.md."""
    if page.file.abs_src_path is None:
        return page.file.src_uri
    folder, name = os.path.split(page.file.abs_src_path)
    root = os.path.dirname(os.path.abspath(config.config_file_path or "mkdocs.yml"))
    return posixpath.normpath(posixpath.join(_relative_folder(folder, root), name))


@lru_cache(maxsize=256)
def _relative_folder(folder: str, root: str) -> str:
    # Cached per folder: os.path.relpath makes both paths absolute and splits them, for every page.
    return Path(os.path.relpath(folder, root)).as_posix()


def _title(page: Page) -> str:
    return str(page.meta.get("title") or page.title or page.file.name)


def _palette(config: MkDocsConfig) -> tuple[str, str, str] | None:
    """(scheme, primary, accent) of Material's first palette, as its base.html puts them on <body>."""
    palette = config.theme.get("palette")
    if isinstance(palette, list):
        palette = palette[0] if palette else None
    if not isinstance(palette, dict):
        return None
    return tuple(str(palette.get(k) or d).replace(" ", "-") for k, d in (("scheme", "default"), ("primary", "indigo"), ("accent", "indigo")))  # type: ignore[return-value]


def _theme_stylesheets(config: MkDocsConfig) -> list[str]:
    """The theme's built stylesheets (Material's main and palette CSS, whose names carry a hash), root-relative."""
    found: list[str] = []
    for pattern in ("main.*.min.css", "palette.*.min.css"):
        for directory in config.theme.dirs:
            hits = sorted(Path(directory, "assets", "stylesheets").glob(pattern))
            if hits:
                found.append(f"assets/stylesheets/{hits[0].name}")
                break
    return found if _palette(config) else found[:1]


def _plain_site(config: MkDocsConfig) -> SiteInfo:
    """The little of SiteInfo the feed needs, for a build without the history worker."""
    return SiteInfo(config.site_name, config.site_url, config.site_dir, "en", "ltr", None, (), "", None, (), {}, {}, ())
