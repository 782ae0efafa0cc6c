"""Word-level redline between two versions of a policy, as accessible HTML that needs no JavaScript (pure).

The diff runs on the prose a reader sees, not on Markdown syntax: headings, paragraphs and list items become
plain-text blocks first, so a moved link target or re-wrapped line is not reported as a change. Removed words
are `<del>` and added words `<ins>`, each opened by visually hidden text ("removed: ", "added: ") so that
a screen reader announces the change and colour is never the only signal.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from difflib import SequenceMatcher
from functools import lru_cache
from html import escape
from typing import Any

Segment = tuple[str, str]  # (op, text); op is "equal", "delete" or "insert"

_TOKEN_RE = re.compile(r"\w+(?:['’.\-]\w+)*|\s+|[^\w\s]")
_ITEM_RE = re.compile(r"^\s{0,3}(?:[-*+]|\d+[.)])\s+")
_RULE_RE = re.compile(r"[-*_=\s]{3,}|\|?[\s:|-]+\|?")  # a thematic break, a setext underline, a table rule
# (a character the syntax needs, pattern, replacement): the check skips a regex that cannot match.
_INLINE = [
    ("[", re.compile(r"!?\[([^\]]*)\]\([^)]*\)"), r"\1"),  # links and images: keep the words
    ("[", re.compile(r"\[([^\]]*)\]\[[^\]]*\]"), r"\1"),  # reference links
    ("{", re.compile(r"\{:?\s*[#.][^}]*\}"), ""),  # attr_list: {#id .class}
    ("<", re.compile(r"<(https?://[^>]+)>"), r"\1"),  # autolinks
    ("<", re.compile(r"</?[A-Za-z][^>]*>"), ""),  # inline HTML tags
    ("*", re.compile(r"\*+"), ""),  # emphasis
    ("`", re.compile(r"`+"), ""),  # code
    ("_", re.compile(r"(?<!\w)_+|_+(?!\w)"), ""),  # emphasis, but not snake_case
]
_PAIR_RATIO = 0.4  # below this, a removed and an added paragraph are shown as such, not as one edit

REDLINE_CSS = """\
.visually-hidden{position:absolute!important;width:1px;height:1px;padding:0;margin:-1px;overflow:hidden;
clip:rect(0,0,0,0);white-space:nowrap;border:0}
.policy-redline del{text-decoration:line-through;background:#ffe3e3;color:#8a1c1c}
.policy-redline ins{text-decoration:underline;background:#ddf4dd;color:#14532d}
"""


@dataclass(frozen=True)
class Block:
    """One heading, paragraph or list item of the redline, as segments of unchanged, removed and added text."""

    kind: str  # "heading", "item" or "paragraph"
    segments: tuple[Segment, ...]

    @property
    def changed(self) -> bool:
        return any(op != "equal" for op, _ in self.segments)


@lru_cache(maxsize=16384)  # versions of one policy share most paragraphs: each is cleaned once per build
def _inline(text: str) -> str:
    for needed, pattern, replacement in _INLINE:
        if needed in text:
            text = pattern.sub(replacement, text)
    return " ".join(text.split())


def plain_blocks(markdown: str) -> list[tuple[str, str]]:
    """Split a Markdown body into (kind, plain text) blocks: headings, list items and paragraphs."""
    return list(_plain_blocks(markdown))


@lru_cache(maxsize=256)  # each version is the "after" of one change and the "before" of the next
def _plain_blocks(markdown: str) -> tuple[tuple[str, str], ...]:
    blocks: list[tuple[str, list[str]]] = []
    for line in markdown.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        stripped = line.strip().lstrip(">").strip()
        if not stripped or _RULE_RE.fullmatch(stripped):
            blocks.append(("", []))  # a blank line or a rule ends the block
        elif stripped.startswith("#"):
            blocks.append(("heading", [stripped.lstrip("#")]))
            blocks.append(("", []))
        elif _ITEM_RE.match(line):
            blocks.append(("item", [_ITEM_RE.sub("", line, count=1)]))
        elif blocks and blocks[-1][0]:
            blocks[-1][1].append(stripped)
        else:
            blocks.append(("paragraph", [stripped]))
    result = [(kind, _inline(" ".join(lines))) for kind, lines in blocks if kind]
    return tuple((kind, text) for kind, text in result if text)


def word_diff(old: str, new: str) -> list[Segment]:
    """Diff two plain texts word by word into (op, text) segments; equal+delete rebuild `old`, equal+insert `new`."""
    a, b = _TOKEN_RE.findall(old), _TOKEN_RE.findall(new)
    ops = _opcodes(a, b)
    out: list[Segment] = []
    removed: list[str] = []
    added: list[str] = []

    def flush() -> None:
        if removed:
            out.append(("delete", "".join(removed)))
        if added:
            out.append(("insert", "".join(added)))
        removed.clear()
        added.clear()

    for k, (tag, i1, i2, j1, j2) in enumerate(ops):
        if tag != "equal":
            removed.extend(a[i1:i2])
            added.extend(b[j1:j2])
            continue
        text = "".join(a[i1:i2])
        # One space between two replaced words joins them: "old words" -> "new words", not word-by-word.
        follows = ops[k + 1][0] == "replace" if k + 1 < len(ops) else False
        if text.isspace() and removed and added and follows:
            removed.append(text)
            added.append(text)
            continue
        flush()
        out.append(("equal", text))
    flush()
    merged: list[Segment] = []
    for op, text in out:  # the cut-off head and tail can leave two equal segments side by side
        if merged and merged[-1][0] == op:
            merged[-1] = (op, merged[-1][1] + text)
        else:
            merged.append((op, text))
    return merged


def _opcodes(a: list[str], b: list[str]) -> list[tuple[str, int, int, int, int]]:
    """SequenceMatcher opcodes of two token lists, with the common head and tail cut off first: an edit to one
    sentence then costs a diff of that sentence, not of the paragraph."""
    # Spaces are half of all tokens: as junk they only extend matches, which keeps long paragraphs fast.
    return _trimmed_opcodes(a, b, str.isspace)


def _trimmed_opcodes(a: Sequence[Any], b: Sequence[Any], junk: Callable[[Any], bool] | None) -> list[tuple[str, int, int, int, int]]:
    """SequenceMatcher opcodes with the common head and tail cut off first (equal runs at both ends)."""
    shorter = min(len(a), len(b))
    head = 0
    while head < shorter and a[head] == b[head]:
        head += 1
    tail = 0
    while tail < shorter - head and a[-1 - tail] == b[-1 - tail]:
        tail += 1
    ops = [("equal", 0, head, 0, head)] if head else []
    if head < len(a) - tail or head < len(b) - tail:
        middle = SequenceMatcher(junk, a[head : len(a) - tail], b[head : len(b) - tail], autojunk=False)
        ops += [(tag, i1 + head, i2 + head, j1 + head, j2 + head) for tag, i1, i2, j1, j2 in middle.get_opcodes()]
    if tail:
        ops.append(("equal", len(a) - tail, len(a), len(b) - tail, len(b)))
    return ops


def _similarity(a: str, b: str) -> float:
    """Share of words two paragraphs have in common (Dice coefficient over word multisets): cheap, order-blind."""
    x, y = Counter(a.lower().split()), Counter(b.lower().split())
    total = sum(x.values()) + sum(y.values())
    return 2 * sum((x & y).values()) / total if total else 1.0


def _pair(old: Sequence[tuple[str, str]], new: Sequence[tuple[str, str]]) -> list[Block]:
    """Match changed blocks in order by similarity: an edited paragraph is one block, not a removal and an addition."""
    blocks: list[Block] = []
    j = 0
    for kind, text in old:
        scores = [_similarity(text, t) for _, t in new[j:]]
        best = max(range(len(scores)), key=scores.__getitem__, default=None)
        if best is None or scores[best] < _PAIR_RATIO:
            blocks.append(Block(kind, (("delete", text),)))
            continue
        blocks += [Block(k, (("insert", t),)) for k, t in new[j : j + best]]
        blocks.append(Block(new[j + best][0], tuple(word_diff(text, new[j + best][1]))))
        j += best + 1
    blocks += [Block(k, (("insert", t),)) for k, t in new[j:]]
    return blocks


def redline_blocks(old_markdown: str, new_markdown: str) -> list[Block]:
    """The whole redline from one Markdown body to another, block by block, unchanged blocks included."""
    old, new = _plain_blocks(old_markdown), _plain_blocks(new_markdown)
    blocks: list[Block] = []
    for tag, i1, i2, j1, j2 in _trimmed_opcodes(old, new, None):
        if tag == "equal":
            blocks += [Block(kind, (("equal", text),)) for kind, text in old[i1:i2]]
        else:
            blocks += _pair(old[i1:i2], new[j1:j2])
    return blocks


def _html_blocks(old_markdown: str, new_markdown: str) -> list[tuple[str, str, bool]]:
    """redline_blocks as (kind, HTML, changed), without a Block for each unchanged one (most of them)."""
    old, new = _plain_blocks(old_markdown), _plain_blocks(new_markdown)
    out: list[tuple[str, str, bool]] = []
    for tag, i1, i2, j1, j2 in _trimmed_opcodes(old, new, None):
        if tag == "equal":
            out += [(kind, _unchanged_html(kind, text), False) for kind, text in old[i1:i2]]
            continue
        for block in _pair(old[i1:i2], new[j1:j2]):
            changed = block.changed
            out.append((block.kind, _render_block(block) if changed else _block_html(block), changed))
    return out


def _segment_html(op: str, text: str) -> str:
    if op == "delete":
        return f'<del><span class="visually-hidden">removed: </span>{escape(text)}</del>'
    if op == "insert":
        return f'<ins><span class="visually-hidden">added: </span>{escape(text)}</ins>'
    return escape(text)


def _block_html(block: Block) -> str:
    if not block.changed:
        return _unchanged_html(block.kind, "".join(text for _, text in block.segments))
    return _render_block(block)


@lru_cache(maxsize=16384)  # an unchanged paragraph recurs in every redline of its policy
def _unchanged_html(kind: str, text: str) -> str:
    return _render_block(Block(kind, (("equal", text),)))


def _render_block(block: Block) -> str:
    inner = "".join(_segment_html(op, text) for op, text in block.segments)
    if block.kind == "heading":
        return f'<p class="redline-heading"><strong>{inner}</strong></p>'
    return f'<p class="redline-{block.kind}">{"• " if block.kind == "item" else ""}{inner}</p>'


def redline_html(old_markdown: str, new_markdown: str, *, context: int = 1) -> str:
    """Render the redline as HTML: changed blocks whole, `context` unchanged blocks around them and every heading;
    other unchanged paragraphs fold into a <details> element, which opens without JavaScript."""
    blocks = _html_blocks(old_markdown, new_markdown)
    changed = [i for i, (_, _, is_changed) in enumerate(blocks) if is_changed]
    if not changed:
        return '<div class="policy-redline"><p>The wording did not change.</p></div>'
    near = {i for c in changed for i in range(c - context, c + context + 1)}
    parts: list[str] = ['<div class="policy-redline">']
    folded: list[str] = []
    for i, (kind, html, _) in enumerate(blocks):
        if i in near or kind == "heading":
            parts.append(_fold(folded))
            parts.append(html)
        else:
            folded.append(html)
    parts += [_fold(folded), "</div>"]
    return "\n".join(p for p in parts if p)


def _fold(folded: list[str]) -> str:
    if not folded:
        return ""
    noun = "paragraph" if len(folded) == 1 else "paragraphs"
    html = f"<details><summary>{len(folded)} unchanged {noun}</summary>\n" + "\n".join(folded) + "\n</details>"
    folded.clear()
    return html
