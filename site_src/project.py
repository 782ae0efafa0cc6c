"""A site's mkdocs.yml and docs/ read without MkDocs (pure; never imports a generator): what the adapters of
generators other than MkDocs need to find the pages, their URLs and titles, and the `policy` plugin's options.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .policy_pages import MARKDOWN_SUFFIXES


class ProjectError(ValueError):
    """mkdocs.yml cannot be read, or the policy plugin's options are wrong (one sentence naming the fix)."""


@dataclass(frozen=True)
class Tagged:
    """A YAML node with a tag we do not interpret (``!!python/name:...``), kept to be written back as it was."""

    tag: str
    value: Any


class _Loader(yaml.SafeLoader):
    pass


def _env(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
    """MkDocs' ``!ENV VAR`` / ``!ENV [VAR, OTHER, default]``: the first variable set, else the default."""
    if isinstance(node, yaml.ScalarNode):
        names, default = [loader.construct_scalar(node)], None
    else:
        items = loader.construct_sequence(node)  # type: ignore[arg-type]
        names, default = items[:-1], items[-1] if len(items) > 1 else None
    for name in names:
        if isinstance(name, str) and name in os.environ:
            return yaml.safe_load(os.environ[name]) if os.environ[name] else ""
    return default


def _tagged(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> Tagged:
    tag = node.tag
    if isinstance(node, yaml.ScalarNode):
        return Tagged(tag, loader.construct_scalar(node))
    if isinstance(node, yaml.SequenceNode):
        return Tagged(tag, loader.construct_sequence(node, deep=True))
    return Tagged(tag, loader.construct_mapping(node, deep=True))  # type: ignore[arg-type]


_Loader.add_constructor("!ENV", _env)
_Loader.add_multi_constructor("tag:yaml.org,2002:python/", _tagged)
_Loader.add_multi_constructor("!", _tagged)


class _Dumper(yaml.SafeDumper):
    pass


def _represent_tagged(dumper: yaml.SafeDumper, data: Tagged) -> yaml.Node:
    if isinstance(data.value, Mapping):
        return dumper.represent_mapping(data.tag, data.value)
    if isinstance(data.value, list):
        return dumper.represent_sequence(data.tag, data.value)
    return dumper.represent_scalar(data.tag, str(data.value))


_Dumper.add_representer(Tagged, _represent_tagged)


def load_config(path: Path) -> dict[str, Any]:
    """mkdocs.yml as a dict, ``!ENV`` resolved as MkDocs resolves it."""
    try:
        with open(path, encoding="utf-8") as f:
            config = yaml.load(f, Loader=_Loader)  # noqa: S506 - our SafeLoader subclass, constructing no objects
    except OSError as e:
        raise ProjectError(f"{path}: cannot be read ({e.strerror}).") from None
    except yaml.YAMLError as e:
        raise ProjectError(f"{path}: not valid YAML ({e}).") from None
    if not isinstance(config, dict):
        raise ProjectError(f"{path}: must be a mapping of settings.")
    return config


def dump_config(config: Mapping[str, Any]) -> str:
    """YAML text of a config read by load_config (tags it did not interpret written back)."""
    return yaml.dump(dict(config), Dumper=_Dumper, sort_keys=False, allow_unicode=True)


@dataclass(frozen=True)
class PolicyOptions:
    """The `policy` plugin's options (config.py's PolicyConfig, read without MkDocs), with its defaults."""

    banner_days: int = 30
    consent_policy: str = "privacy"
    form_endpoint: str = "/api/feedback"
    withdraw_endpoint: str = "/api/withdraw"
    manage_endpoint: str = "/api/manage"
    require_history: bool = True
    policies: tuple[str, ...] = ()
    adopted: object = None
    enabled: bool = True  # the plugin is listed in mkdocs.yml


_OPTION_TYPES: dict[str, type | tuple[type, ...]] = {
    "banner_days": int, "consent_policy": str, "form_endpoint": str, "withdraw_endpoint": str, "manage_endpoint": str,
    "require_history": bool,
    "policies": list, "adopted": (str, dt.date),
}


def plugin_entries(config: Mapping[str, Any]) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """(name, options) of each plugin listed in mkdocs.yml (a list of names or one-key mappings, or a mapping)."""
    plugins = config.get("plugins")
    if plugins is None:
        plugins = ["search"]
    if isinstance(plugins, Mapping):
        plugins = [{k: v} for k, v in plugins.items()]
    for entry in plugins if isinstance(plugins, list) else []:
        if isinstance(entry, str):
            yield entry, {}
        elif isinstance(entry, Mapping) and len(entry) == 1:
            name, options = next(iter(entry.items()))
            yield str(name), options if isinstance(options, Mapping) else {}


def policy_options(config: Mapping[str, Any]) -> PolicyOptions:
    """The options under ``plugins: - policy:``; a wrong type or an unknown option is an error, as in MkDocs."""
    for name, options in plugin_entries(config):
        if name != "policy":
            continue
        values: dict[str, Any] = {}
        value: Any
        for key, value in options.items():
            if key == "enabled":
                continue
            wanted = _OPTION_TYPES.get(key)
            if wanted is None:
                raise ProjectError(f"mkdocs.yml: the policy plugin has no option {key!r}.")
            if value is None and key == "adopted":
                continue
            if not isinstance(value, wanted) or (wanted is int and isinstance(value, bool)):
                raise ProjectError(f"mkdocs.yml: the policy plugin's option {key} has the wrong type ({value!r}).")
            if isinstance(value, list):  # policies
                if not all(isinstance(v, str) for v in value):
                    raise ProjectError("mkdocs.yml: the policy plugin's option policies must be a list of patterns.")
                value = tuple(value)
            values[key] = value
        return PolicyOptions(**values, enabled=options.get("enabled", True) is not False)
    return PolicyOptions(enabled=False)


@dataclass(frozen=True)
class SourcePage:
    """One Markdown page of docs_dir, with the URL the generators give it."""

    src_uri: str  # privacy.md, relative to docs_dir
    path: Path
    url: str  # privacy/ (or privacy.html without directory URLs)
    nav_title: str | None = None
    meta: Mapping[str, Any] = field(default_factory=dict)


def page_url(src_uri: str, use_directory_urls: bool = True) -> str:
    """The URL of a page relative to the site root, as MkDocs and Zensical make it."""
    stem, _ = os.path.splitext(src_uri)
    folder, name = os.path.split(stem)
    if name.lower() in ("index", "readme"):
        return (folder + "/") if folder else ""
    if not use_directory_urls:
        return stem + ".html"
    return stem + "/"


def nav_titles(nav: Any) -> dict[str, str]:
    """src_uri -> title given in mkdocs.yml's nav (``- Privacy Policy: privacy.md``)."""
    found: dict[str, str] = {}

    def walk(items: Any) -> None:
        for item in items if isinstance(items, list) else []:
            if isinstance(item, Mapping):
                for title, target in item.items():
                    if isinstance(target, str):
                        found.setdefault(target, str(title))
                    else:
                        walk(target)

    walk(nav)
    return found


def list_pages(config: Mapping[str, Any], docs_dir: Path) -> list[SourcePage]:
    """Every Markdown page under docs_dir, in MkDocs' order (index first in each folder, then by name), leaving
    out what MkDocs leaves out by default (hidden files and folders, templates/)."""
    use_directory_urls = config.get("use_directory_urls", True) is not False
    titles = nav_titles(config.get("nav"))
    pages = []
    for folder, dirs, names in os.walk(docs_dir):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        relative = Path(folder).relative_to(docs_dir).as_posix()
        if relative == "templates" or relative.startswith("templates/"):
            continue
        for name in sorted(names, key=lambda n: (os.path.splitext(n)[0].lower() not in ("index", "readme"), n)):
            if name.startswith(".") or not name.endswith(MARKDOWN_SUFFIXES):
                continue
            src_uri = name if relative == "." else f"{relative}/{name}"
            pages.append(SourcePage(src_uri, Path(folder, name), page_url(src_uri, use_directory_urls), titles.get(src_uri)))
    return sorted(pages, key=lambda p: _mkdocs_order(p.src_uri))


def _mkdocs_order(src_uri: str) -> tuple[tuple[int, str], ...]:
    # MkDocs sorts files with index/README first within each folder.
    parts = src_uri.split("/")
    return tuple((0 if i == len(parts) - 1 and os.path.splitext(p)[0].lower() in ("index", "readme") else 1, p)
                 for i, p in enumerate(parts))


_HEADING = re.compile(r"^#\s+(.+?)\s*#*\s*$", re.MULTILINE)


def page_title(meta: Mapping[str, Any], nav_title: str | None, body: str, src_uri: str) -> str:
    """A page's title as the plugin names it: front matter, else the nav's title, else its first heading, else
    its file name (as MkDocs gives it)."""
    if meta.get("title"):
        return str(meta["title"])
    if nav_title:
        return nav_title
    heading = _HEADING.search(body)
    if heading:
        return re.sub(r"\s*\{[^}]*\}$", "", heading.group(1)).strip()
    stem = os.path.splitext(os.path.basename(src_uri))[0]
    if stem.lower() in ("index", "readme"):
        folder = os.path.basename(os.path.dirname(src_uri))
        return folder.replace("-", " ").replace("_", " ").capitalize() if folder else "Home"
    return stem.replace("-", " ").replace("_", " ").capitalize()
