"""The Zensical adapter: builds a site of policies with Zensical, which reads mkdocs.yml but runs no MkDocs plugin.

Zensical has no plugin hooks. It honours `custom_dir` template overrides, exposes ``zensical.build(config_file,
options)``, empties its output folder on every build, and its MiniJinja templates cannot call Python. So a
build here (1) reads the pages and validates their change records as the plugin does, starts the same history
worker and writes the banner, the feed link and the feedback form as already-rendered partials into a
temporary overrides folder, (2) runs Zensical on a copy of mkdocs.yml that points at that folder, and (3) puts
the status lines into the policy pages and writes the history pages, the feed, the manifest and the page shell
into the output. Everything the site promises is worked out by the generator-free core, as under MkDocs.
"""

from __future__ import annotations

import datetime as dt
import importlib
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from markupsafe import Markup

from .banner import BuildDateError, PolicyChanges, active_changes, build_date
from .feed import FEED_NAME
from .history import HistoryUnavailable, locate_repository
from .history_job import Finish, Outcome, PolicyOutcome, PolicySource, ShellSource, SiteInfo, changes_url
from .history_pages import write_feed
from .history_worker import HistoryWorker
from .partials import BANNER_TEMPLATE, FORM_TEMPLATE, MANAGE_TEMPLATE, FeedbackForm, environment, render_status
from .policy_build import NO_SITE_URL, PolicyBuildError, adoption_date, feedback_form, unrecorded_edit, unused_pattern
from .policy_pages import PatternError, PolicyPatterns, path_policy_id
from .project import PolicyOptions, ProjectError, SourcePage, Tagged, dump_config, list_pages, load_config, page_title
from .project import policy_options
from .records import PolicyMeta, RecordError, check_unique_policy_ids, load_meta, parse_policy_meta
from .redline import REDLINE_CSS
from .shell import SHELL_NAME, ShellError, make_shell, root_path
from .status import PolicyStatus, insert_status, status_from_records
from .versions import MANIFEST_NAME, Policy, build_manifest, dump_manifest, policy_version, split_front_matter

log = logging.getLogger("policy_site")

HERE = Path(__file__).parent
TEMPLATES = HERE / "zensical_overrides"
ASSETS = {name: HERE / "assets" / name for name in ("policy.css", "zensical.css", "feedback.js")}
HISTORY_CSS = "assets/policy/history.css"
FORM_PAGE_TEMPLATE = "feedback.html"
# Stand-ins for template expressions in partials rendered here (a NUL never occurs in our HTML).
_URL_TOKEN = re.compile("\x00url:([^\x00]*)\x00")
_PAGE_TOKEN = "\x00page\x00"
_ARTICLE = re.compile(r'(<article class="md-content__inner md-typeset"[^>]*>)(.*?)(</article>)', re.DOTALL)


class BuildFailed(Exception):
    """The build failed; the message is one sentence for the writer."""


@dataclass
class _Policy:
    page: SourcePage
    display_path: str
    meta: PolicyMeta
    version: str
    source: str
    title: str


@dataclass
class Result:
    """What a build did: its warnings (which fail a strict build) and what the history worker reported."""

    warnings: list[str] = field(default_factory=list)
    outcome: Outcome | None = None
    site_dir: Path | None = None


def build(config_file: Path, site_dir: Path | None = None, *, strict: bool = False,
          run: Callable[[str, dict[str, Any]], None] | None = None) -> Result:
    """Build the site of ``config_file`` (mkdocs.yml) with Zensical into ``site_dir`` (default: its site_dir).
    Raises BuildFailed; with ``strict``, a warning fails the build too (after the site is written, as MkDocs)."""
    config_file = config_file.resolve()
    root = config_file.parent
    try:
        config = load_config(config_file)
        options = policy_options(config)
    except ProjectError as e:
        raise BuildFailed(str(e)) from None
    out = (site_dir or root / str(config.get("site_dir") or "site")).resolve()
    result = Result(site_dir=out)
    if not options.enabled:
        log.warning("mkdocs.yml: the policy plugin is not listed under plugins; building without it.")
    with _Build(config_file, config, options, out, result) as job:
        job.prepare()
        job.generate(strict, run)
        job.finish()
    if strict and result.warnings:
        raise BuildFailed(f"Aborted with {len(result.warnings)} warnings in strict mode!")
    return result


class _Build:
    def __init__(self, config_file: Path, config: dict[str, Any], options: PolicyOptions, out: Path, result: Result) -> None:
        self.config_file = config_file
        self.root = config_file.parent
        self.config = config
        self.options = options
        self.out = out
        self.result = result
        self.docs_dir = (self.root / str(config.get("docs_dir") or "docs")).resolve()
        self.site_url: str | None = config.get("site_url") or None
        self.feed_url = FEED_NAME if self.site_url else None
        self.policies: list[_Policy] = []
        self.form_pages: list[str] = []
        self.worker: HistoryWorker | None = None
        self.history = False
        self.statuses: dict[str, PolicyStatus] = {}
        self.outcomes: dict[str, PolicyOutcome] = {}  # by policy id: its versions, from the history worker
        self.temp = Path(tempfile.mkdtemp(prefix="policy-site-"))
        self.overrides = self.temp / "overrides"
        # Zensical wants its output inside the project: build there and move the result when asked for elsewhere.
        self.inside = self.out.is_relative_to(self.root)
        self.output = self.out if self.inside else self.root / ".cache" / "policy-site" / f"site-{os.getpid()}"
        self.zensical_config = self.root / f".policy-site-zensical-{os.getpid()}.yml"
        self.today = dt.date.today()
        self.patterns = PolicyPatterns()
        self.adopted: dt.date | None = None

    def __enter__(self) -> _Build:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.worker is not None:
            self.worker.close()
        shutil.rmtree(self.temp, ignore_errors=True)
        self.zensical_config.unlink(missing_ok=True)
        if not self.inside:
            shutil.rmtree(self.output, ignore_errors=True)

    def warn(self, message: str) -> None:
        self.result.warnings.append(message)
        log.warning(message)

    def prepare(self) -> None:
        """Options, the history worker, every page's records, the banner: what the pages need before rendering."""
        if self.options.banner_days < 0:
            raise BuildFailed(f"policy: banner_days must be 0 or more, got {self.options.banner_days}.")
        try:
            self.patterns = PolicyPatterns.parse(self.options.policies)
            self.adopted = adoption_date(self.options.adopted)
            self.today = build_date(os.environ.get("SOURCE_DATE_EPOCH"))
        except (PatternError, PolicyBuildError, BuildDateError) as e:
            message = str(e)
            raise BuildFailed(message if message.startswith("policy:") or isinstance(e, BuildDateError) else f"policy: {message}") from None
        if self.feed_url is None:
            self.warn(NO_SITE_URL.format(feed=FEED_NAME))
        if not self.docs_dir.is_dir():
            raise BuildFailed(f"mkdocs.yml: the docs_dir {self.docs_dir} does not exist.")
        if self.options.enabled:
            self._start_history()
        pages = list_pages(self.config, self.docs_dir)
        for pattern in self.patterns.unused(p.src_uri for p in pages):
            self.warn(unused_pattern(pattern, str(self.config.get("docs_dir") or "docs")))
        if self.worker is not None:
            self.worker.send(self._site_info(pages))
        for page in pages:
            self._read(page)
        try:
            check_unique_policy_ids((p.display_path, p.meta.policy_id) for p in self.policies)
        except RecordError as e:
            raise BuildFailed(str(e)) from None
        statuses = None
        if self.worker is not None:
            self.worker.send(Finish(self.feed_url, self.today))
            statuses = self.worker.statuses()
            errors = sorted(s.error for s in statuses.policies.values() if s.error is not None)
            if errors:
                raise BuildFailed("\n".join(errors))
            self.history = self.history and statuses.history
        self.statuses = {
            p.page.src_uri: (statuses.policies.get(p.page.src_uri) if statuses else None) or status_from_records(p.meta.changes)
            for p in self.policies
        }

    def _start_history(self) -> None:
        try:
            locate_repository(self.root)
        except HistoryUnavailable as e:
            if self.options.require_history:
                raise BuildFailed(f"policy: {e}") from None
            log.info(f"Building without change history pages or past versions (require_history: false): {e}")
            return
        self.worker = HistoryWorker(self.root, str(self.docs_dir))
        self.history = True

    def _site_info(self, pages: list[SourcePage]) -> SiteInfo:
        extensions, configs = _markdown_extensions(self.config.get("markdown_extensions"))
        theme = self.config.get("theme") if isinstance(self.config.get("theme"), Mapping) else {}
        assert isinstance(theme, Mapping)
        return SiteInfo(
            site_name=str(self.config.get("site_name") or ""), site_url=self.site_url, site_dir=str(self.output),
            lang=str(theme.get("language") or "en"), direction=str(theme.get("direction") or "ltr"), palette=None,
            stylesheets=(), favicon="", copyright=self.config.get("copyright"), extensions=extensions,
            extension_configs=configs, page_urls={p.src_uri: p.url for p in pages},
            history_paths=tuple(str(p.path) for p in pages), feed_url=self.feed_url, build_date=self.today,
            adopted=self.adopted, sources=tuple((p.src_uri, str(p.path)) for p in pages),
            policy_patterns=tuple(self.options.policies),
        )

    def _read(self, page: SourcePage) -> None:
        """Validate one page's front matter, as the plugin's on_page_markdown does, and hand a policy to the worker."""
        display = Path(os.path.relpath(page.path, self.root)).as_posix()
        source = page.path.read_text(encoding="utf-8-sig")
        meta_text, body = split_front_matter(source)
        path_id = None
        if self.options.enabled and self.patterns.matches(page.src_uri):
            try:
                path_id = path_policy_id(page.src_uri)
            except ValueError:
                raise BuildFailed(
                    f"{display}: this page matches the policies patterns, but its path has no letter or digit to make a "
                    "policy id from; add policy_id to its front matter."
                ) from None
        try:
            front = load_meta(meta_text, display)
            meta = parse_policy_meta(front, display, path_id) if self.options.enabled else None
        except RecordError as e:
            raise BuildFailed(str(e)) from None
        if front.get("template") == FORM_PAGE_TEMPLATE:
            self.form_pages.append(display)
        if meta is None:
            return
        title = page_title(front, page.nav_title, body, page.src_uri)
        policy = _Policy(page, display, meta, policy_version(body), source, title)
        self.policies.append(policy)
        if self.worker is not None:
            self.worker.send(PolicySource(
                meta.policy_id, title, page.url, page.src_uri, str(page.path), display, None, meta.changes, meta.id_from_path
            ))

    def generate(self, strict: bool, run: Callable[[str, dict[str, Any]], None] | None) -> None:
        """Write the overrides and the config Zensical reads, and run Zensical."""
        write_overrides(self.overrides, self._custom_dir(), self._banner(), self._form(), self.site_name, self.feed_url,
                        root_path(self.site_url), with_history=self.worker is not None,
                        manage_url=self.options.manage_endpoint)
        config = dict(self.config)
        theme = dict(config.get("theme") or {}) if isinstance(config.get("theme"), Mapping) else {"name": config.get("theme")}
        theme["custom_dir"] = str(self.overrides)
        config["theme"] = theme
        # Relative to the project, as Zensical expects them (it panics on some absolute paths).
        config["site_dir"] = os.path.relpath(self.output, self.root)
        config["docs_dir"] = os.path.relpath(self.docs_dir, self.root)
        config["extra_css"] = [*(config.get("extra_css") or []), "assets/policy/policy.css", "assets/policy/zensical.css"]
        self.zensical_config.write_text(dump_config(config), encoding="utf-8")
        if run is None:
            import zensical

            run = zensical.build
        log.info(f"Building with Zensical into {self.out}")
        try:
            run(str(self.zensical_config), {"clean": False, "strict": strict})
        except KeyboardInterrupt:
            raise
        except BaseException as e:  # noqa: BLE001 - Zensical raises RuntimeError, and a panic in its Rust core is a BaseException
            raise BuildFailed(f"zensical: {e}") from None

    @property
    def site_name(self) -> str:
        return str(self.config.get("site_name") or "")

    def _custom_dir(self) -> Path | None:
        theme = self.config.get("theme")
        custom = theme.get("custom_dir") if isinstance(theme, Mapping) else None
        return (self.root / str(custom)).resolve() if custom else None

    def _banner(self) -> list[Any]:
        if not self.options.enabled:
            return []
        sources = [
            PolicyChanges(p.meta.policy_id, p.title, p.page.url, p.meta.changes, changes_url(p.page.url) if self.history else None)
            for p in self.policies
        ]
        return active_changes(sources, self.today, self.options.banner_days)

    def _form(self) -> FeedbackForm | None:
        try:
            return feedback_form(
                ((p.meta.policy_id, p.version, p.title, p.page.url) for p in self.policies), self.form_pages,
                consent_policy=self.options.consent_policy, action=self.options.form_endpoint,
                withdraw_action=self.options.withdraw_endpoint,
            )
        except PolicyBuildError as e:
            raise BuildFailed(str(e)) from None

    def finish(self) -> None:
        """Status lines, history pages, feed, manifest and shell, into what Zensical wrote."""
        for p in self.policies:
            status = self.statuses.get(p.page.src_uri)
            if status is not None:
                # With the newline after it that these pages have always had (from the template it once came from).
                html = render_status(status, p.page.url, self.today, history=self.history, feed_url=self.feed_url)
                _insert_into_page(self.output / _output_file(p.page.url), html + "\n")
        page_404 = self.output / "404.html"
        shell_page = page_404.read_text(encoding="utf-8") if page_404.is_file() else None
        if self.worker is not None:
            self.worker.send_shell(ShellSource(shell_page))
            outcome = self.worker.result()
            self.worker.close()
            self.worker = None
            self._collect(outcome)
        elif self.feed_url is not None:
            write_feed(self._plain_site(), [self._source(p) for p in self.policies], self.today, history=False)
        manifest = build_manifest(self._manifest_policies())
        (self.output / MANIFEST_NAME).write_text(dump_manifest(manifest), encoding="utf-8")
        if shell_page is None:
            raise BuildFailed(f"policy: Zensical rendered no 404.html to make {SHELL_NAME} from.")
        try:
            shell = make_shell(shell_page, "404.html", site_url=self.site_url)
        except ShellError as e:
            raise BuildFailed(f"policy: {e}") from None
        (self.output / SHELL_NAME).write_text(shell, encoding="utf-8")
        if not self.inside:
            shutil.rmtree(self.out, ignore_errors=True)
            self.out.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(self.output), str(self.out))

    def _collect(self, outcome: Outcome) -> None:
        self.result.outcome = outcome
        if outcome.error is not None:
            if outcome.history_unavailable and not self.options.require_history:
                log.info(f"Built without change history pages or past versions (require_history: false): {outcome.error}")
                self.history = False
                return
            raise BuildFailed(f"policy: {outcome.error}")
        self.outcomes = {r.policy_id: r for r in outcome.policies}
        for r in outcome.policies:
            if r.unrecorded_diff is not None:
                self.warn(unrecorded_edit(r.display_path, r.unrecorded_diff))

    def _manifest_policies(self) -> list[Policy]:
        policies = []
        for p in self.policies:
            r = self.outcomes.get(p.meta.policy_id)
            policies.append(Policy(
                id=p.meta.policy_id, title=p.title, url=p.page.url, version=p.version, changes=p.meta.changes,
                versions=r.versions if r else (), change_versions=r.change_versions if r else (),
                history_changes=r.history_changes if r else (),
            ))
        return policies

    def _source(self, p: _Policy) -> PolicySource:
        return PolicySource(p.meta.policy_id, p.title, p.page.url, p.page.src_uri, str(p.page.path), p.display_path, p.source, p.meta.changes)

    def _plain_site(self) -> SiteInfo:
        return SiteInfo(self.site_name, self.site_url, str(self.output), "en", "ltr", None, (), "", None, (), {}, {}, ())


def write_overrides(folder: Path, custom_dir: Path | None, banner: list[Any], form: FeedbackForm | None, site_name: str,
                    feed_url: str | None, root: str, *, with_history: bool, manage_url: str) -> None:
    """The custom_dir Zensical reads: our templates, the partials rendered for this build, our assets, and the
    site's own custom_dir over them (the site's files win, as under MkDocs)."""
    env = environment()
    shutil.copytree(TEMPLATES, folder, dirs_exist_ok=True)
    partials = folder / "partials"
    partials.mkdir(parents=True, exist_ok=True)
    banner_html = ""
    if banner:
        banner_html = env.get_template(BANNER_TEMPLATE).render(policy_banner=banner, policy_root="\x00url:\x00")
        banner_html = re.sub('\x00url:\x00([^"]*)"', lambda m: f'\x00url:{m.group(1)}\x00"', banner_html)
    (partials / "policy-banner.html").write_text(_as_template(banner_html), encoding="utf-8")
    head = ""
    if feed_url is not None:
        head = (f'\n  <link rel="alternate" type="application/atom+xml" href="\x00url:{feed_url}\x00" '
                f'title="{Markup.escape(site_name)}: policy changes">\n')
    (partials / "policy-head.html").write_text(_as_template(head), encoding="utf-8")
    form_html = ""
    if form is not None:
        form_html = env.get_template(FORM_TEMPLATE).render(
            form=form, form_page=Markup(_PAGE_TOKEN), policy_href=Markup(f"\x00url:{form.policy_url}\x00"),
        )
        form_html = form_html.replace(_PAGE_TOKEN, "\x00page:" + root + "\x00")
    (partials / "policy-form.html").write_text(_as_template(form_html), encoding="utf-8")
    manage = env.get_template(MANAGE_TEMPLATE).render(policy_manage_url=manage_url)
    (partials / "policy-manage.html").write_text(_as_template(manage), encoding="utf-8")
    assets = folder / "assets" / "policy"
    assets.mkdir(parents=True, exist_ok=True)
    for name, path in ASSETS.items():
        shutil.copyfile(path, assets / name)
    if with_history:
        (assets / "history.css").write_text(REDLINE_CSS + (HERE / "assets" / "history.css").read_text(encoding="utf-8"), encoding="utf-8")
    if custom_dir is not None:
        if not custom_dir.is_dir():
            raise BuildFailed(f"mkdocs.yml: the theme's custom_dir {custom_dir} does not exist.")
        shutil.copytree(custom_dir, folder, dirs_exist_ok=True)


def _as_template(html: str) -> str:
    """Rendered HTML as a MiniJinja template that prints it as it is: every brace of writers' text becomes a
    character reference (so ``{{``, ``{%`` and ``{#`` stay text), and our stand-ins become the expressions
    they stand for."""
    html = html.replace("{", "&#123;").replace("}", "&#125;")

    def url(m: re.Match[str]) -> str:
        return "{{ policy_root }}" + quote(m.group(1), safe="/#?&=:;,.-_~!$()*+@%")

    uses_root = _URL_TOKEN.search(html) is not None
    html = _URL_TOKEN.sub(url, html)
    html = re.sub("\x00page:([^\x00]*)\x00", lambda m: quote(m.group(1), safe="/:.-_~%") + "{{ page.url }}", html)
    # The site root as seen from the page, as the MkDocs plugin builds links: base_url with one slash after it
    # ("./", "../", and "/" or "/policies/" on the 404 page, which is served at any depth).
    return (_ROOT if uses_root else "") + html


_ROOT = '{% if base_url[-1:] == "/" %}{% set policy_root = base_url %}{% else %}{% set policy_root = base_url ~ "/" %}{% endif %}'


def _output_file(url: str) -> str:
    return url + "index.html" if url == "" or url.endswith("/") else url


def _insert_into_page(path: Path, status_html: str) -> None:
    """Put the status line under the page's title, inside its content area."""
    html = path.read_text(encoding="utf-8")
    match = _ARTICLE.search(html)
    if match is None:
        raise BuildFailed(f"policy: {path} has no content area to put the policy's status line in.")
    inner = insert_status(match.group(2), status_html)
    path.write_text(html[: match.start(2)] + inner + html[match.end(2) :], encoding="utf-8")


def _markdown_extensions(value: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """markdown_extensions as MkDocs hands them to Markdown (its three built-ins first), for past versions."""
    names: list[Any] = ["toc", "tables", "fenced_code"]
    configs: dict[str, Any] = {}
    items = value if isinstance(value, list) else [value] if isinstance(value, (str, Mapping)) else []
    for item in items:
        if isinstance(item, str):
            name, options = item, None
        elif isinstance(item, Mapping) and len(item) == 1:
            name, options = next(iter(item.items()))
        else:
            continue
        if name not in names:
            names.append(name)
        if isinstance(options, Mapping):
            configs[name] = {k: _resolve(v) for k, v in options.items()}
    return tuple(names), configs


def _resolve(value: Any) -> Any:
    """``!!python/name:module.attr`` as the object (what MkDocs' loader gives the Markdown extension)."""
    if isinstance(value, Tagged) and value.tag.startswith("tag:yaml.org,2002:python/name:"):
        module, _, attr = value.tag.rsplit(":", 1)[1].rpartition(".")
        return getattr(importlib.import_module(module), attr)
    if isinstance(value, list):
        return [_resolve(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _resolve(v) for k, v in value.items()}
    return value
