"""Anchors and links between the book's pages, and the small node builders pages share."""

from __future__ import annotations

import posixpath

from docutils import nodes
from docutils.parsers.rst import Directive
from docutils.statemachine import StringList

from book_model import BookChapter
from chunks import Part, slug
from weave.doxygen import ApiEntry, api_docname


def anchor(name: str, index: int = 0) -> str:
    """The stable anchor of part ``index`` of chunk ``name`` on its chapter's page."""
    base = f"chunk-{slug(name)}"
    return base if index == 0 else f"{base}-{index + 1}"


def relative_uri(env, target_doc: str, fragment: str = "") -> str:
    """The URI of ``target_doc`` (a docname) as seen from the page being read."""
    current = env.docname
    if target_doc == current:
        uri = ""
    else:
        uri = env.app.builder.get_relative_uri(current, target_doc)
    return uri + (f"#{fragment}" if fragment else "")


def relative_file_uri(env, target: str) -> str:
    """The URI of a file of the HTML output (not a page), e.g. a download."""
    return posixpath.relpath(target, posixpath.dirname(env.docname) or ".")


def part_label(part: Part) -> str:
    """How a link to one part reads: "⟨Name⟩", or "⟨Name⟩ part 2" for an append."""
    return f"⟨{part.name}⟩" + (f" part {part.index + 1}" if part.index else "")


def chunk_uri(env, chapter: BookChapter, name: str, index: int = 0) -> str:
    return relative_uri(env, chapter.docname, anchor(name, index))


def name_ref(text: str, refuri: str, classes: list[str] | None = None) -> nodes.reference:
    """A link whose text is a chunk's name, shown exactly (no typographic quotes)."""
    ref = nodes.reference("", text, refuri=refuri, classes=classes or [])
    ref["support_smartquotes"] = False
    return ref


def chunk_link(env, chapter: BookChapter, name: str, index: int = 0, text: str | None = None) -> nodes.reference:
    return name_ref(text or f"⟨{name}⟩", chunk_uri(env, chapter, name, index), ["chunk-link"])


def page_link(text: str, docname: str, classes: list[str] | None = None):
    """A checked cross-reference to a page (resolved by Sphinx, so -n catches a wrong one)."""
    from sphinx import addnodes
    ref = addnodes.pending_xref("", refdomain="std", reftype="doc", reftarget="/" + docname,
                                refexplicit=True, refwarn=True)
    ref += nodes.inline(text, text, classes=classes or [])
    return ref


def api_link(env, entry: ApiEntry):
    """A link to an API entry: the anchor Breathe makes of Doxygen's id, so each overload has its own."""
    suffix = "()" if entry.kind == "function" or (entry.member and entry.args.startswith("(")) else ""
    ref = nodes.reference("", "", refuri=relative_uri(env, api_docname(entry.header), entry.refid),
                          classes=["api-link"])
    ref += nodes.literal(entry.name + suffix, entry.name + suffix, classes=["xref", "cpp"])
    return ref


def highlight(env, code: str, lang: str, location) -> str | None:
    builder = env.app.builder
    if not hasattr(builder, "highlighter"):
        return None
    return builder.highlighter.highlight_block(code, lang, location=location)


def parse_markdown(directive: Directive, lines: list[str], source: str) -> list[nodes.Node]:
    """Nodes of Markdown written by a directive, parsed in the directive's page."""
    container = nodes.section()
    container.document = directive.state.document
    directive.state.nested_parse(StringList(lines, source=source), directive.content_offset, container,
                                 match_titles=False)
    return container.children


def joined(items: list[nodes.Node], sep: str = ", ") -> list:
    out: list = []
    for k, item in enumerate(items):
        if k:
            out.append(sep)
        out.append(item)
    return out
