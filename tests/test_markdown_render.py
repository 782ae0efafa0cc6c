"""Past-version HTML: the block-wise conversion must give exactly what python-markdown gives for the whole text."""

from __future__ import annotations

import itertools
import posixpath

import markdown
import pytest

from site_src.markdown_render import VersionRenderer, blocks, relative_url, site_root

EXTENSIONS = ["toc", "tables", "fenced_code", "attr_list", "md_in_html"]
CONFIGS = {"toc": {"permalink": True}}
BODY = """\
# Privacy Policy

We may share aggregate statistics with our partners.
Café customers (and 'others') are 50% of them.

## Contact {#contact}

- one

- two
    continued

Term | Value
--- | ---
a | b

A [link](cookies.md#kept) and *emphasis* & more.

Setext heading
--------------
"""


def whole(text: str) -> str:
    return markdown.Markdown(extensions=EXTENSIONS, extension_configs=CONFIGS).convert(text)


def test_versions_render_exactly_as_a_whole_conversion() -> None:
    bodies = [BODY, BODY.replace("our partners", "named partners"), BODY + "\n## Contact\n\nAgain.\n"]
    renderer = VersionRenderer(EXTENSIONS, CONFIGS, {})
    rendered = renderer.render(bodies, src_uri="privacy.md", page_url="privacy.md")
    assert rendered == [whole(b) for b in bodies]
    # One run for every block of every version; the heading "## Contact" alone (the run numbered it contact_1, as
    # "## Contact {#contact}" came first); the third text whole (it has that heading twice).
    assert renderer.conversions == 3


def test_blocks_no_page_can_change_are_converted_once_for_every_policy() -> None:
    renderer = VersionRenderer(EXTENSIONS, CONFIGS, {"cookies.md": "cookies/"})
    first = renderer.render([BODY], src_uri="privacy.md", page_url="privacy/versions/2026-01-10/")
    # The same headings and table on another policy, one level deeper: reused; the link is converted again.
    other = BODY.replace("# Privacy Policy", "# Cookie Policy")
    second = renderer.render([other], src_uri="cookie.md", page_url="a/cookie/versions/2026-01-10/")
    assert renderer.conversions == 2
    runs: list[str] = []
    convert = renderer._convert
    renderer._convert = lambda text: (runs.append(text), convert(text))[1]  # type: ignore[method-assign]
    third = BODY.replace("# Privacy Policy", "# Terms")
    assert renderer.render([third], src_uri="terms.md", page_url="terms/") == [whole(third).replace('href="cookies.md#kept"', 'href="../cookies/#kept"')]
    assert len(runs) == 1 and "# Terms" in runs[0] and "[link]" in runs[0]
    assert "## Contact {#contact}" not in runs[0] and "Term | Value" not in runs[0]  # reused, not converted again
    assert 'href="../../../cookies/#kept"' in first[0] and 'href="../../../../cookies/#kept"' in second[0]
    assert second == [whole(other).replace('href="cookies.md#kept"', 'href="../../../../cookies/#kept"')]
    # A heading that only the whole text would number (contact_1) is never reused into another text.
    clash = renderer.render(["## Contact\n\nText.\n\n## Contact {#contact}\n"], src_uri="c.md", page_url="c/")
    assert clash == [whole("## Contact\n\nText.\n\n## Contact {#contact}\n")]


def test_plain_prose_skips_python_markdown_but_not_syntax() -> None:
    renderer = VersionRenderer(EXTENSIONS, CONFIGS, {})
    assert renderer.render(["Plain words, only.\nSecond line."], src_uri="p.md", page_url="p/") == ["<p>Plain words, only.\nSecond line.</p>"]
    assert renderer.conversions == 0
    assert renderer.render(["Some *stress*."], src_uri="p.md", page_url="p/") == ["<p>Some <em>stress</em>.</p>"]


def test_unknown_extension_turns_the_prose_shortcut_off() -> None:
    renderer = VersionRenderer(["smarty"], {}, {})
    assert renderer.render(["It's plain."], src_uri="p.md", page_url="p/") == ["<p>It&rsquo;s plain.</p>"]


def test_relative_links_are_rewritten_for_the_version_page() -> None:
    renderer = VersionRenderer(EXTENSIONS, CONFIGS, {"cookies.md": "cookies/", "privacy.md": "privacy/"})
    html = renderer.render(["See [cookies](cookies.md#kept) and ![x](img/a.png) and [out](https://x.org/)."],
                           src_uri="privacy.md", page_url="privacy/versions/2026-01-10/")[0]
    assert 'href="../../../cookies/#kept"' in html and 'src="../../../img/a.png"' in html and 'href="https://x.org/"' in html


@pytest.mark.parametrize("body", [
    "- one\n\n    The item's second paragraph.\n\n- two\n",  # a loose list item with two paragraphs
    "Para.\n\n    code\n\n    more code\n",  # an indented code block with a blank line inside
    "    code first\n\nPara.\n",
])
def test_indented_continuations_convert_whole(body: str) -> None:
    assert blocks(body) is None
    renderer = VersionRenderer(EXTENSIONS, CONFIGS, {})
    assert renderer.render([body, body + "\nMore.\n"], src_uri="p.md", page_url="p/") == [whole(body), whole(body + "\nMore.\n")]


@pytest.mark.parametrize("body", [
    "# P\n\n### Under a heading\n- one\n\n- two\n\nEnd.\n",  # the list starts in the heading's block
    "# P\n\n  * one, indented\n\n  *\ttwo\n\nEnd.\n",  # items indented by up to three spaces
])
def test_loose_list_stays_one_list_across_blank_lines(body: str) -> None:
    renderer = VersionRenderer(EXTENSIONS, CONFIGS, {})
    assert renderer.render([body], src_uri="p.md", page_url="p/") == [whole(body)]
    assert whole(body).count("<ul>") == 1


def test_comment_lines_are_cut_around_with_the_blank_line_python_markdown_puts_after_them() -> None:
    bodies = ["<!-- lint: off -->\n\n# P\n\n- a\n\n<!-- lint: on -->\n\nText.\n\n<!-- end -->\n", "# P\n\nText.\n\n<!-- end -->\n"]
    assert blocks(bodies[0]) == ["<!-- lint: off -->", "# P", "- a", "<!-- lint: on -->", "Text.", "<!-- end -->"]
    renderer = VersionRenderer(EXTENSIONS, CONFIGS, {})
    assert renderer.render(bodies, src_uri="p.md", page_url="p/") == [whole(b) for b in bodies]
    assert renderer.conversions == 1
    assert blocks("Text\n<!-- inside a block -->\n\nMore.\n") is None and blocks("<!-- c --> and text\n") is None


def test_heading_another_version_had_keeps_its_id_without_a_whole_conversion() -> None:
    bodies = ["# P\n\n## Cookies\n\nOld.\n", "# P\n\n## Cookies.\n\nNew.\n"]  # both headings are #cookies
    renderer = VersionRenderer(EXTENSIONS, CONFIGS, {})
    converted: list[str] = []
    convert = renderer._convert
    renderer._convert = lambda text: (converted.append(text), convert(text))[1]  # type: ignore[method-assign]
    assert renderer.render(bodies, src_uri="p.md", page_url="p/") == [whole(b) for b in bodies]
    assert converted[1:] == ["## Cookies."]  # after the one run, that heading alone: no version converted whole


def test_meta_extension_turns_block_wise_conversion_off() -> None:
    bodies = ["# Title\n\nText.\n", "Note: first\n\n# Title\n"]
    renderer = VersionRenderer(["meta", "toc"], {}, {})
    expected = [markdown.Markdown(extensions=["meta", "toc"]).convert(b) for b in bodies]
    assert renderer.render(bodies, src_uri="p.md", page_url="p/") == expected


def test_blocks_refuses_text_a_cut_could_change() -> None:
    assert blocks("Para\n\n```\ncode\n\nmore\n```\n") is None
    assert blocks("See [a][1].\n\n[1]: https://x.org/\n") is None
    assert blocks("- a\n\n- b\n\nPara\n") == ["- a\n\n- b", "Para"]
    assert relative_url("", "privacy/changes/") == "../../" and relative_url("privacy/", "privacy/") == "./"
    assert relative_url("../x.md", "privacy/versions/2026-01-10/") == "../../../../x.md"  # a link that leaves the site


@pytest.mark.parametrize("url", ["", "privacy/", "privacy/changes/", "a/b/versions/2026-01-10/", "terms.html", "a/terms.html"])
def test_site_root_is_relative_url_to_the_root(url: str) -> None:
    assert site_root(url) == relative_url("", url)


def test_relative_url_gives_what_posixpath_relpath_gives() -> None:
    # relative_url counts segments itself for URLs as MkDocs makes them; anything else goes to relpath.
    def by_relpath(target: str, page_url: str) -> str:
        here = posixpath.dirname(page_url.rstrip("/")) if not page_url.endswith("/") else page_url.rstrip("/")
        rel = posixpath.relpath(target or ".", here or ".")
        rel = rel.rstrip("/") + "/" if target.endswith("/") or target == "" else rel
        return "./" if rel in (".", "./") else rel

    parts = ["", "a", "b", "x.html", ".", ".."]
    urls = {lead + "/".join(p) + tail for n in range(3) for p in itertools.product(parts, repeat=n) for lead in ("", "/")
            for tail in ("", "/")} | {"a/b/x.html", "a/b/versions/2026-01-10/", "b/a/changes/"}
    assert all(relative_url(t, u) == by_relpath(t, u) for t in urls for u in urls)
