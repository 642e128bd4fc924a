"""```{chunk} Name``` — one part of a named chunk, rendered as pbrt renders its fragments.

A title bar ``⟨Name⟩ ≡`` (``+≡`` for an append) with links to the first and
the next part; the code with every ``<<Ref>>`` line a link ``⟨Ref⟩``; the whole
chunk fully expanded behind a toggle, with a button that copies it; a footer
linking to where the chunk is used, the file a root writes, and the API entries
the part defines.
"""

from __future__ import annotations

import html
import re
from pathlib import Path

from docutils import nodes
from docutils.parsers.rst import Directive, directives
from sphinx.util import logging

from book_model import BookChapter, expand_chunk
from chunks import REFERENCE, Chapter, Chunk, Part, read_chapter, slug
from weave.doxygen import entries_of_part
from weave.links import anchor, api_link, highlight, name_ref, page_link, part_label
from weave.state import ROOT, TOOLS, the_api, the_book

logger = logging.getLogger(__name__)


def chapter_of_source(source: str) -> tuple[BookChapter | None, Chapter]:
    """The chapter (if it is one) and the chunk model of the page at ``source``."""
    real = Path(source).resolve()
    try:
        display = real.relative_to(ROOT).as_posix()
    except ValueError:
        display = str(real)
    info = the_book().chapter(display)
    if info is not None:
        return info, info.model
    return None, read_chapter(real, display=display)


class ChunkDirective(Directive):
    """```{chunk} Name``` — one part of a named chunk."""

    has_content = True
    required_arguments = 1
    final_argument_whitespace = True
    option_spec = {"file": directives.unchanged_required, "lang": directives.unchanged_required}

    def run(self) -> list[nodes.Node]:
        env = self.state.document.settings.env
        source, line = self.state_machine.get_source_and_line(self.lineno)
        name = " ".join(self.arguments[0].split())
        info, model = chapter_of_source(source)
        chunk = model.chunks.get(name)
        part = None
        if chunk:
            part = next((p for p in chunk.parts if p.fence_line == line), None) or next(
                (p for p in chunk.parts if "\n".join(p.lines) == "\n".join(self.content)), None)
        if part is None:
            raise self.error(f"chunk '{name}' is not in the tangler's model of {source}")
        for tool in TOOLS:
            env.note_dependency(str(tool))
        slugs = [n for n in model.chunks if slug(n) == slug(name)]
        if len(slugs) > 1:
            logger.warning(f"chunks {' and '.join(repr(s) for s in slugs)} have the same anchor; rename one",
                           location=(env.docname, line))
        if info is not None and the_book().has_errors(info):
            raise self.error("the tangler reports errors in this chapter; run 'make tangle'")

        box = nodes.container(classes=["chunk"])
        box["ids"].append(anchor(name, part.index))
        box += title_bar(chunk, part)
        box += code_node(env, part, chunk.lang)
        box += expanded_node(env, model, chunk, part, f"{anchor(name, part.index)}-expanded")
        footer = footer_node(env, info, model, chunk, part)
        if len(footer):
            box += footer
        return [box]


def title_bar(chunk: Chunk, part: Part) -> nodes.Node:
    title = nodes.container(classes=["chunk-title"])
    head = nodes.paragraph(classes=["chunk-head"])
    head += name_ref(f"⟨{chunk.name}⟩", f"#{anchor(chunk.name)}", ["chunk-name"])
    head += nodes.Text("\u00a0+≡" if part.index else "\u00a0≡")   # never alone on a line
    title += head
    nav = []
    if part.index:
        nav.append(nodes.reference("", "↑ first part", refuri=f"#{anchor(chunk.name)}", classes=["chunk-first"]))
    if part.index + 1 < len(chunk.parts):
        nav.append(nodes.reference("", "next part ↓", refuri=f"#{anchor(chunk.name, part.index + 1)}",
                                   classes=["chunk-next"]))
    if nav:
        links = nodes.paragraph(classes=["chunk-nav"])
        for k, link in enumerate(nav):
            if k:
                links += nodes.Text(" · ")
            links += link
        title += links
    button = (f'<button type="button" class="chunk-copy" data-target="{anchor(chunk.name, part.index)}-expanded"'
              f' title="Copy ⟨{html.escape(chunk.name)}⟩ with every chunk it uses expanded">copy expanded</button>')
    title += nodes.raw("", button, format="html")
    return title


def code_node(env, part: Part, lang: str) -> nodes.Node:
    """The highlighted code, each ``<<Ref>>`` line shown as a link ``⟨Ref⟩``."""
    code_lines, refs = [], []
    for text in part.lines:
        match = REFERENCE.match(text)
        if match:
            code_lines.append(f"{match['indent']}__attn_ref_{len(refs)}__")
            refs.append(match["name"].strip())
        else:
            code_lines.append(text)
    code = "\n".join(code_lines)
    highlighted = highlight(env, code, lang, (part.chapter, part.body_line))
    if highlighted is None:
        return nodes.literal_block(code, "\n".join(part.lines), language=lang)

    def link(match: re.Match) -> str:
        name = refs[int(match["k"])]
        return f'<a class="chunk-ref" href="#{anchor(name)}">⟨{html.escape(name)}⟩</a>'

    highlighted = re.sub(r'(?:<span class="(?!line")[^"]*">)?__attn_ref_(?P<k>\d+)__(?:</span>)?', link, highlighted)
    highlighted = highlighted.replace("<pre>", '<pre class="chunk-pre">', 1)
    return nodes.raw("", f'<div class="highlight-{lang} notranslate chunk-code">{highlighted}</div>',
                     format="html")


def expanded_node(env, model: Chapter, chunk: Chunk, part: Part, ident: str) -> nodes.Node:
    """The whole chunk with every reference expanded, behind a toggle (as the tangler expands it)."""
    out = expand_chunk(model, chunk.name)
    if out is None:
        return nodes.container()
    text = "\n".join(line.text for line in out)
    highlighted = highlight(env, text, chunk.lang, (part.chapter, part.body_line))
    if highlighted is None:
        return nodes.literal_block(text, text, language=chunk.lang)
    highlighted = highlighted.replace("<pre>", f'<pre class="chunk-pre" id="{ident}">', 1)
    has_refs = any(c.references for c in chunk.parts) or len(chunk.parts) > 1
    opened = "" if has_refs else ' class="chunk-plain"'
    summary = (f"⟨{html.escape(chunk.name)}⟩ fully expanded ({len(out)} lines)" if has_refs
               else f"⟨{html.escape(chunk.name)}⟩ as the tangler writes it")
    return nodes.raw("", f'<details class="chunk-expanded"><summary{opened}>{summary}</summary>'
                         f'<div class="highlight-{chunk.lang} notranslate">{highlighted}</div></details>',
                     format="html")


def footer_node(env, info: BookChapter | None, model: Chapter, chunk: Chunk, part: Part) -> nodes.Node:
    footer = nodes.paragraph(classes=["chunk-footer"])
    users = model.users(chunk.name)
    if users:
        footer += nodes.Text("Used in ")
        for k, user in enumerate(users):
            if k:
                footer += nodes.Text(", ")
            footer += name_ref(part_label(user), f"#{anchor(user.name, user.index)}")
        footer += nodes.Text(". ")
    book = the_book()
    if chunk.file and part.index == 0:
        footer += nodes.Text("File: ")
        if info is not None and chunk.file in book.files:
            footer += page_link(f"tangled/{chunk.file}", book.files[chunk.file].docname, ["chunk-file"])
        else:
            footer += nodes.literal("", f"tangled/{chunk.file}")
        footer += nodes.Text(". ")
    if info is not None:
        entries = entries_of_part(the_api(), part)
        if entries:
            footer += nodes.Text("API: ")
            for k, entry in enumerate(entries):
                if k:
                    footer += nodes.Text(", ")
                footer += api_link(env, entry)
            footer += nodes.Text(".")
    return footer
