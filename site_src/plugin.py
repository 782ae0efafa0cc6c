"""The `policy` MkDocs plugin: a thin adapter from MkDocs events to the pure modules beside it.

records.py validates change records, versions.py hashes policy text and writes the manifest, banner.py decides
which changes every page announces. The theme overrides (overrides/) and assets (assets/) ship in this package,
so a site enables the plugin and copies no templates.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import jinja2
from mkdocs.config.defaults import MkDocsConfig
from mkdocs.exceptions import PluginError
from mkdocs.plugins import BasePlugin, get_plugin_logger
from mkdocs.structure.files import File, Files
from mkdocs.structure.pages import Page

from .banner import BuildDateError, PolicyChanges, active_changes, build_date, human_date
from .config import PolicyConfig
from .records import PolicyMeta, RecordError, check_unique_policy_ids, load_meta, parse_policy_meta
from .versions import MANIFEST_NAME, Policy, VersionEntry, build_manifest, dump_manifest, split_front_matter
from .versions import policy_version

log = get_plugin_logger(__name__)

HERE = Path(__file__).parent
OVERRIDES = HERE / "overrides"
ASSETS = {"assets/policy/policy.css": HERE / "assets" / "policy.css", "assets/policy/feedback.js": HERE / "assets" / "feedback.js"}
# Templates may include the theme's own version of a template they override, e.g. "theme/partials/search.html".
THEME_PREFIX = "theme"
FORM_TEMPLATE = "feedback.html"


@dataclass(frozen=True)
class FeedbackForm:
    """What the feedback form template needs: where to post, and which policy version the visitor consents to."""

    action: str
    withdraw_action: str
    policy_id: str
    policy_version: str
    policy_title: str
    policy_url: str


@dataclass
class _PolicyPage:
    page: Page
    path: str
    meta: PolicyMeta
    version: str


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

    def on_config(self, config: MkDocsConfig) -> MkDocsConfig:
        """Put the shipped overrides after the site's own custom_dir and before the theme, and add our CSS."""
        if self.config.banner_days < 0:
            raise PluginError(f"policy: banner_days must be 0 or more, got {self.config.banner_days}.")
        dirs = config.theme.dirs
        dirs.insert(1 if config.theme.custom_dir else 0, str(OVERRIDES))
        config.extra_css.append("assets/policy/policy.css")
        return config

    def on_pre_build(self, *, config: MkDocsConfig) -> None:
        """Forget the previous build's pages (mkdocs serve rebuilds with the same plugin instance)."""
        self._pages = []
        self._form_pages = []

    def on_files(self, files: Files, *, config: MkDocsConfig) -> Files:
        """Ship the plugin's CSS and JavaScript with the site."""
        for uri, path in ASSETS.items():
            files.append(File.generated(config, uri, abs_src_path=str(path)))
        return files

    def on_page_markdown(self, markdown: str, *, page: Page, config: MkDocsConfig, files: Files) -> str:
        """Validate the page's change records and remember policy pages with the version of their text."""
        path = _display_path(page, config)
        # Parse the source ourselves: MkDocs silently drops front matter that YAML cannot parse (2026-13-01).
        meta_text, body = split_front_matter(page.file.content_string)
        try:
            meta = parse_policy_meta(load_meta(meta_text, path), path)
        except RecordError as e:
            raise PluginError(str(e)) from None
        if page.meta.get("template") == FORM_TEMPLATE:
            self._form_pages.append(path)
        if meta is not None:
            self._pages.append(_PolicyPage(page, path, meta, policy_version(body)))
        return markdown

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
        env.globals["policy_banner"] = active_changes(
            (self._banner_source(p) for p in self._pages), today, self.config.banner_days
        )
        env.globals["policy_feed_url"] = self.feed_url
        env.globals["policy_form"] = self._feedback_form()
        return env

    def on_post_build(self, *, config: MkDocsConfig) -> None:
        """Write site/policy-versions.json for the feedback service."""
        manifest = build_manifest(self.policies())
        Path(config.site_dir, MANIFEST_NAME).write_text(dump_manifest(manifest), encoding="utf-8")

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
            )
            for p in self._pages
        ]

    def _banner_source(self, p: _PolicyPage) -> PolicyChanges:
        changes_url = f"{p.page.url}changes/" if self.history_pages else None
        return PolicyChanges(p.meta.policy_id, _title(p.page), p.page.url, p.meta.changes, changes_url)

    def _feedback_form(self) -> FeedbackForm | None:
        wanted = self.config.consent_policy
        for p in self._pages:
            if p.meta.policy_id == wanted:
                return FeedbackForm(
                    self.config.form_endpoint, self.config.withdraw_endpoint, wanted, p.version, _title(p.page), p.page.url
                )
        if self._form_pages:
            raise PluginError(
                f"{self._form_pages[0]}: the feedback form asks for consent to policy {wanted!r}, but no page has "
                f"policy_id: {wanted}; add it to that policy page or set the plugin option consent_policy."
            )
        return None


def _display_path(page: Page, config: MkDocsConfig) -> str:
    """The page's path as the writer knows it, e.g. docs/privacy.md."""
    if page.file.abs_src_path is None:
        return page.file.src_uri
    root = Path(config.config_file_path or ".").parent
    return Path(os.path.relpath(page.file.abs_src_path, root)).as_posix()


def _title(page: Page) -> str:
    return str(page.meta.get("title") or page.title or page.file.name)
