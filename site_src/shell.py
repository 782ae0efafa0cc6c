"""The site's shell: a page the generator rendered, with its title and content area left open (pure; never
imports a generator).

Every generator this project supports (MkDocs with Material, Zensical) renders a 404 page through the same
base template as every other page: header, logo, navigation, search, palette, footer and the change banner,
and no page-specific part (no table of contents, no active navigation item, no previous/next links, no
canonical link). Its title and the inside of its content area (Material's ``<article class="md-content__inner
md-typeset">``) are replaced by markers, and every relative URL in it is rewritten for where the shell is used:
absolute from the site root for the form service's shell (``policy-shell.html``), relative to the page for the
change history and version pages, so that those look like every other page of the site.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from markupsafe import escape

from .markdown_render import site_root

TITLE_MARKER = "<!--policy-site:title-->"
CONTENT_MARKER = "<!--policy-site:content-->"
# Only for the history pages (never in policy-shell.html): their own meta description.
DESCRIPTION_MARKER = "<!--policy-site:description-->"
SHELL_NAME = "policy-shell.html"

_TITLE = re.compile(r"(<title>)(.*?)(</title>)", re.DOTALL)
_ARTICLE = re.compile(r'<article class="md-content__inner md-typeset"[^>]*>')
# Zensical (and newer Material) put the skip link's target first in the content area: it belongs to the shell.
_SKIP_TARGET = re.compile(r'\s*<a id="__skip" tabindex="-1"></a>')
_DESCRIPTION = re.compile(r'(<meta name="description" content=")([^"]*)(")')
_URL_ATTRIBUTE = re.compile(r'(\s(?:href|src|action|formaction|poster|data|srcset)=")([^"]*)(")')
_SCOPE = re.compile(r'(__md_scope=new URL\(")([^"]*)(")')
_CONFIG = re.compile(r'(<script id="__config" type="application/json">)(.*?)(</script>)', re.DOTALL)
# The URLs in Material's __config (JSON written by its template: no escaped quote in a path).
_CONFIG_URL = re.compile(r'("(?:base|search)":\s*")([^"]*)(")')
_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


class ShellError(ValueError):
    """The rendered page has no title or no content area to leave open (not a Material or Zensical theme)."""


def root_path(site_url: str | None) -> str:
    """The path of the site's root on its host, from site_url: ``/`` or ``/policies/``."""
    path = urlsplit(site_url or "/").path or "/"
    return path if path.endswith("/") else path + "/"


def make_shell(html: str, page_url: str, *, site_url: str | None, target_url: str | None = None,
               description: bool = False, extra_head: str = "") -> str:
    """The shell of ``html``, a page rendered for ``page_url`` (``404.html`` for the 404 page): its title and
    content area replaced by TITLE_MARKER and CONTENT_MARKER (each once), and every relative URL rewritten as an
    absolute path from the site root (``target_url`` None) or relative to the page at ``target_url``.
    ``description`` also opens the meta description (DESCRIPTION_MARKER); ``extra_head`` goes before </head>."""
    title = _TITLE.search(html)
    article = _ARTICLE.search(html)
    if title is None or article is None:
        raise ShellError(
            f"the theme's {page_url} has no <title> or no <article class=\"md-content__inner md-typeset\"> to take "
            "the site's page shell from; use the Material theme (or Zensical)."
        )
    inner_start = article.end()
    skip = _SKIP_TARGET.match(html, inner_start)
    if skip is not None:
        inner_start = skip.end()
    inner_end = html.find("</article>", inner_start)
    if inner_end == -1:
        raise ShellError(f"the theme's {page_url} has a content area that is never closed.")
    head, middle, tail = html[: title.start(2)], html[title.end(2) : inner_start], html[inner_end:]
    root = root_path(site_url)

    def rewrite(part: str) -> str:
        return _rewrite_urls(part, page_url, root, target_url)

    head = rewrite(head)
    if description:
        head = _DESCRIPTION.sub(lambda m: m.group(1) + DESCRIPTION_MARKER + m.group(3), head, count=1)
    middle = rewrite(middle)
    if extra_head:
        middle = middle.replace("</head>", extra_head + "</head>", 1)
    return head + TITLE_MARKER + middle + "\n" + CONTENT_MARKER + "\n" + rewrite(tail)


@dataclass(frozen=True)
class Shell:
    """A shell split at its markers, to fill in for many pages."""

    parts: tuple[str, ...]

    @classmethod
    def parse(cls, shell: str) -> Shell:
        return cls(tuple(re.split(f"({re.escape(TITLE_MARKER)}|{re.escape(CONTENT_MARKER)}|{re.escape(DESCRIPTION_MARKER)})", shell)))

    def fill(self, title: str, content: str, description: str = "") -> str:
        """The page with ``title`` (text, escaped here), ``content`` (HTML) and ``description`` (text)."""
        values = {TITLE_MARKER: str(escape(title)), CONTENT_MARKER: content, DESCRIPTION_MARKER: str(escape(description))}
        return "".join(values.get(part, part) if n % 2 else part for n, part in enumerate(self.parts))

    def around(self, title: str, description: str = "") -> tuple[str, str]:
        """(the HTML before the content, the HTML after it), for writing a page without joining it first."""
        filled = self.fill(title, "\x00", description)
        before, _, after = filled.partition("\x00")
        return before, after


def _rewrite_urls(html: str, page_url: str, root: str, target_url: str | None) -> str:
    page_dir = "" if page_url.endswith("/") else posixpath.dirname(page_url)

    def one(url: str) -> str:
        return _rebase(url, page_dir, root, target_url)

    def attribute(m: re.Match[str]) -> str:
        value = m.group(2)
        if m.group(1).strip().startswith("srcset"):
            value = ", ".join(" ".join([one(bits[0]), *bits[1:]]) for bits in (c.split() for c in value.split(",")) if bits)
        else:
            value = one(value)
        return m.group(1) + value + m.group(3)

    def config(m: re.Match[str]) -> str:
        body = _CONFIG_URL.sub(lambda u: u.group(1) + one(u.group(2)) + u.group(3), m.group(2))
        return m.group(1) + body + m.group(3)

    html = _URL_ATTRIBUTE.sub(attribute, html)
    html = _SCOPE.sub(lambda m: m.group(1) + one(m.group(2)) + m.group(3), html)
    return _CONFIG.sub(config, html)


def _rebase(url: str, page_dir: str, root: str, target_url: str | None) -> str:
    """``url`` as written on a page in ``page_dir``, as an absolute path (target_url None) or relative to the page
    at ``target_url``. URLs with a scheme or host, fragments alone and paths outside the site stay as they are."""
    if not url or url.startswith(("#", "//", "\x00")) or _SCHEME.match(url) or "<!--" in url or "{" in url:
        return url
    cut = min((i for i in (url.find("?"), url.find("#")) if i != -1), default=len(url))
    path, rest = url[:cut], url[cut:]
    if path.startswith("/"):
        if (path + "/").startswith(root) and len(path) + 1 == len(root):
            site_path = ""
        elif path.startswith(root):
            site_path = path[len(root) :]
        else:
            return url  # outside the site (another app on the host)
    else:
        site_path = posixpath.join(page_dir, path)
    folder = site_path == "" or site_path.endswith(("/", "/.")) or site_path in (".", "..") or path in ("", ".")
    site_path = posixpath.normpath(site_path) if site_path else ""
    if site_path in (".", ""):
        site_path = ""
    elif site_path.startswith(".."):
        return url  # above the site's root: nothing to rebase against
    elif folder:
        site_path += "/"
    if target_url is None:
        return root + site_path + rest
    return site_root(target_url) + site_path + rest  # by depth alone, so one shell serves every page at it
