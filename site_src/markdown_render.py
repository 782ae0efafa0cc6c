"""Policy text to HTML for past-version pages, with the site's Markdown extensions (pure; never imports MkDocs).

A site of 500 policies has ~3,600 past versions, and python-markdown takes ~3-4 ms for one policy page: too
slow for the build's budget. Versions of one policy share all but a paragraph or two, so a policy's versions
are cut into blocks (at blank lines), every distinct block of every version is converted in ONE Markdown run
(blocks separated by an HTML comment that the converter passes through), and each version is put together
from its blocks; a block no page could change (no link, image or raw HTML: a heading, a recurring clause) is
converted once per build for every policy. Text the cut could change (fenced code, reference links,
footnotes, raw HTML other than a comment alone on its lines, indented blocks), or a joined result with a duplicate
id, is converted whole instead, so the output is always what a whole conversion gives.
"""

from __future__ import annotations

import posixpath
import re
import xml.etree.ElementTree as etree
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

import markdown  # type: ignore[import-untyped]
from markdown.extensions import Extension  # type: ignore[import-untyped]
from markdown.treeprocessors import Treeprocessor  # type: ignore[import-untyped]

_MARK = "<!--policy-block-->"
# Constructs whose meaning reaches across blank lines, or that a cut could break: convert such a text whole.
# (An HTML comment alone on its line is the one kind of raw HTML a cut cannot change, when it is a block of its
# own: blocks() checks that. Linters leave many such comments in policy repositories.)
_NOT_BLOCKWISE = re.compile(
    r"^ {0,3}(?:```|~~~)|^ {0,3}\[[^\]]+\]:|\[\^|^\*\[|\[TOC\]|^[ \t]+<|^<(?!!--(?:(?!-->).)*-->[ \t]*$)", re.MULTILINE
)
_COMMENT = re.compile(r"<!--(?:(?!-->).)*-->[ \t]*")
_LIST_ITEM = re.compile(r" {0,3}(?:[-*+]|\d+[.)])[ \t]")
# An indented line after a blank one continues what came before (a list item's next paragraph, a code block
# with a blank line inside): cut there, it would become a code block of its own. (Indented code at the very
# start goes whole too: highlighting extensions number code blocks per document.)
_INDENTED_AFTER_BLANK = re.compile(r"(?:^|\n[ \t]*\n)(?: {4}|\t)")
_ID = re.compile(r'\sid="([^"]*)"')
_NUMBERED = re.compile(r".+_\d+")  # an id toc numbered: a heading whose text came before in the same conversion
# Extensions that give a paragraph of plain prose (see _PROSE) no markup beyond <p>: with only these, such
# paragraphs skip python-markdown altogether (most of a policy's text, and most of the conversion time).
_PROSE_SAFE = {
    "abbr", "admonition", "attr_list", "codehilite", "def_list", "fenced_code", "footnotes", "md_in_html", "meta",
    "sane_lists", "tables", "toc", "pymdownx.details", "pymdownx.highlight", "pymdownx.inlinehilite",
    "pymdownx.superfences", "pymdownx.tabbed",
}
# A paragraph that starts with a letter and holds no character any of those extensions (or core Markdown) treats
# as syntax, and no line that could start a list, quote, heading, table, definition or setext underline.
_PROSE = re.compile(r"""[^\W\d_][^\\`*_{}\[\]<>&!#|~:^=\n]*(?:\n(?:[^\W\d_]|[("'])[^\\`*_{}\[\]<>&!#|~:^=\n]*)*""")
_DOTS = frozenset((".", ".."))  # path segments relative_url leaves to posixpath.relpath


def relative_url(target: str, page_url: str) -> str:
    """``target`` (relative to the site root, like page.url) as a link from the page at ``page_url``."""
    here = posixpath.dirname(page_url.rstrip("/")) if not page_url.endswith("/") else page_url.rstrip("/")
    start, path = here.split("/"), target.split("/")
    if here.startswith("/") or target.startswith("/") or not _DOTS.isdisjoint(start) or not _DOTS.isdisjoint(path):
        rel = posixpath.relpath(target or ".", here or ".")
    else:
        # What relpath gives for such paths, without its abspath (a getcwd each) on every policy page.
        start, path = [s for s in start if s], [p for p in path if p]
        common = len(posixpath.commonprefix([start, path]))  # segment by segment, as relpath counts them
        rel = "/".join([".."] * (len(start) - common) + path[common:]) or "."
    if target.endswith("/") or target == "":
        rel = rel.rstrip("/") + "/"
    return "./" if rel in (".", "./") else rel


def site_root(page_url: str) -> str:
    """``relative_url("", page_url)`` for a URL as MkDocs makes them (no leading slash, no dot segments), by
    counting folders: it is computed for each of thousands of generated pages."""
    return "../" * page_url.count("/") or "./"


class _Links(Treeprocessor):  # type: ignore[misc]
    """Rewrite relative links of a policy's source (``cookies.md#x``) into links from the generated page."""

    def __init__(self, md: markdown.Markdown, page_urls: Mapping[str, str]) -> None:
        super().__init__(md)
        self.page_urls = page_urls
        self.src_uri = ""
        self.page_url = ""

    def run(self, root: etree.Element) -> None:
        for element in root.iter():
            key = "href" if element.tag == "a" else "src" if element.tag == "img" else None
            value = element.get(key) if key else None
            if key and value:
                element.set(key, self.rewrite(value))

    def rewrite(self, url: str) -> str:
        parts = urlsplit(url)
        if parts.scheme or parts.netloc or not parts.path or parts.path.startswith("/"):
            return url
        target = posixpath.normpath(posixpath.join(posixpath.dirname(self.src_uri), parts.path)).lstrip("/")
        fragment = f"#{parts.fragment}" if parts.fragment else ""
        site_path = self.page_urls.get(target, target)  # a page's URL, or a static file at its own path
        return relative_url(site_path, self.page_url) + fragment


class _LinksExtension(Extension):  # type: ignore[misc]
    def __init__(self, page_urls: Mapping[str, str]) -> None:
        super().__init__()
        self.page_urls = page_urls
        self.processor: _Links | None = None

    def extendMarkdown(self, md: markdown.Markdown) -> None:  # noqa: N802 - python-markdown's name
        self.processor = _Links(md, self.page_urls)
        md.treeprocessors.register(self.processor, "policy_links", 1)  # after every other treeprocessor


def blocks(body: str) -> list[str] | None:
    """Cut a Markdown body into blocks that convert alone exactly as in the whole text; None when it cannot be cut."""
    # The characters every such construct needs, checked first: most policy text has none of them.
    if any(c in body for c in "`~[<*") and _NOT_BLOCKWISE.search(body):
        return None
    if ("\n    " in body or "\n\t" in body or body.startswith(("    ", "\t"))) and _INDENTED_AFTER_BLANK.search(body):
        return None  # (the substring test first: the pattern alone scans slowly, 0.3 s for a large site)
    out: list[str] = []
    for block in re.split(r"\n[ \t]*\n", body.strip("\n")):
        block = block.strip("\n")
        if not block.strip():
            continue
        # A loose list or a quote continues across blank lines: keep such neighbours together (the list may start
        # under a heading in the block before; joining too much only converts more text at once).
        joins = out and (
            (_LIST_ITEM.match(block) and any(_LIST_ITEM.match(line) for line in out[-1].split("\n")))
            or (block.startswith(">") and any(line.startswith(">") for line in out[-1].split("\n")))
        )
        if joins:
            out[-1] += "\n\n" + block
        else:
            out.append(block)
    if "\n<!--" in "\n" + body and any("\n<!--" in "\n" + b and not _COMMENT.fullmatch(b) for b in out):
        return None  # a comment line inside a block: python-markdown's blank line after it would depend on the cut
    return out


class VersionRenderer:
    """Converts policy versions with one reused Markdown instance (reset between texts)."""

    def __init__(self, extensions: Sequence[Any], configs: Mapping[str, Any], page_urls: Mapping[str, str]) -> None:
        names = {e.removeprefix("markdown.extensions.") if isinstance(e, str) else None for e in extensions}
        self._prose_fast = names <= _PROSE_SAFE
        # meta strips "Key: value" lines at the top of a document: whichever block came first in a joined run.
        self._blockwise = "meta" not in names
        self._links = _LinksExtension(page_urls)
        self._md = markdown.Markdown(extensions=[*extensions, self._links], extension_configs=dict(configs))
        # HTML of blocks no page could change (no link, image or raw HTML), kept for every later policy: headings
        # and boilerplate clauses recur across a site's policies.
        self._shared: dict[str, str] = {}
        self.conversions = 0  # Markdown runs, for the bench

    def _convert(self, text: str) -> str:
        self._md.reset()
        self.conversions += 1
        return str(self._md.convert(text))

    def render(self, bodies: Sequence[str], *, src_uri: str, page_url: str) -> list[str]:
        """HTML of each body, as linked from ``page_url`` (every body is one version of the page ``src_uri``)."""
        assert self._links.processor is not None
        self._links.processor.src_uri, self._links.processor.page_url = src_uri, page_url
        cut = [blocks(body) if self._blockwise else None for body in bodies]
        html: dict[str, str] = {}
        distinct = []
        for block in dict.fromkeys(b for parts in cut if parts is not None for b in parts):
            if self._prose_fast and _prose(block):
                html[block] = f"<p>{block}</p>"
            elif block in self._shared:
                html[block] = self._shared[block]
            else:
                distinct.append(block)
        if distinct:
            pieces = self._convert(f"\n\n{_MARK}\n\n".join(distinct)).split(_MARK)
            if len(pieces) == len(distinct):
                converted = {block: _piece(block, piece) for block, piece in zip(distinct, pieces)}
                for block, piece in converted.items():
                    # The one run numbers a heading whose text another version's heading had (contact_1): convert
                    # such a block alone, so that only a text with that heading twice goes whole (_needs_whole).
                    if "id=" in piece and any(_NUMBERED.fullmatch(i) for i in _ID.findall(piece)):
                        converted[block] = _piece(block, self._convert(block))
                html.update(converted)
                if self._prose_fast:  # only extensions known to number nothing per document
                    self._shared.update((b, h) for b, h in converted.items() if "[" not in b and "<" not in b)
            else:
                html = {}
        ids = {block: _ID.findall(piece) if "id=" in piece else [] for block, piece in html.items()}
        out: list[str] = []
        for body, parts in zip(bodies, cut):
            if parts is None or not html or _needs_whole(parts, [i for b in parts for i in ids[b]]):
                out.append(self._convert(body))
            else:
                out.append("\n".join(html[b] for b in parts).rstrip("\n"))
        return out


def _piece(block: str, html: str) -> str:
    """A block's HTML as it stands between its neighbours in a whole conversion: a comment keeps the blank line
    python-markdown puts after it."""
    return html.strip("\n") + ("\n" if _COMMENT.fullmatch(block) else "")


def _prose(block: str) -> bool:
    """A paragraph of plain prose: python-markdown would only wrap it in <p> (lines kept, nothing escaped)."""
    return _PROSE.fullmatch(block) is not None and " \n" not in block and "\t" not in block and not block.endswith(" ")


def _needs_whole(parts: Sequence[str], ids: Sequence[str]) -> bool:
    """True when the joined blocks may differ from a whole conversion: an id twice (toc numbers the second one
    in a whole text), or a heading id the one run de-duplicated (``contact_1``) that a whole text would not."""
    if len(ids) != len(set(ids)):
        return True
    return any(_NUMBERED.fullmatch(i) for i in ids)
