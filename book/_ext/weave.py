"""Weave: how the book's chapters become pages.

* ``{chunk}`` renders a chunk as pbrt does: a title bar ``⟨Name⟩ ≡`` (``+≡`` for
  an append), the code, and a footer linking to where the chunk is used and,
  for roots, naming the file it writes. It reads chunks with the tangler's own
  model (``tools/chunks.py``), so the book and the C++ cannot disagree.
* ``{result}`key``` quotes a number a chapter's program wrote to
  ``figures/chNN/results.tsv``; a missing file or key is an error.
* ``{api-reference}`` writes one Breathe section per tangled header.
"""

from __future__ import annotations

import html
import re
import sys
from functools import lru_cache
from pathlib import Path

from docutils import nodes
from docutils.parsers.rst import Directive, directives
from sphinx.util import logging

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools"))
import chunks  # noqa: E402

logger = logging.getLogger(__name__)


@lru_cache(maxsize=None)
def _read(path: str, mtime: float) -> chunks.Chapter:
    return chunks.read_chapter(path, display=str(Path(path).relative_to(ROOT)) if path.startswith(str(ROOT)) else path)


def chapter_model(source: str) -> chunks.Chapter:
    """The chunk model of the chapter at ``source`` (cached while the file is unchanged)."""
    real = str(Path(source).resolve())
    return _read(real, Path(real).stat().st_mtime)


def anchor(chapter: chunks.Chapter, name: str, index: int = 0) -> str:
    """The stable anchor of part ``index`` of chunk ``name``."""
    base = f"chunk-{chunks.slug(name)}"
    return base if index == 0 else f"{base}-{index + 1}"


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
        model = chapter_model(source)
        chunk = model.chunks.get(name)
        part = next((p for p in chunk.parts if "\n".join(p.lines) == "\n".join(self.content)), None) if chunk else None
        if part is None:
            raise self.error(f"chunk '{name}' is not in the tangler's model of {source}")
        env.note_dependency(str(ROOT / "tools" / "chunks.py"))

        box = nodes.container(classes=["chunk"])
        box["ids"].append(anchor(model, name, part.index))
        title = nodes.paragraph(classes=["chunk-title"])
        if part.index:
            title += nodes.reference("", f"⟨{name}⟩", refuri=f"#{anchor(model, name)}", classes=["chunk-name"])
            title += nodes.Text(" +≡")
        else:
            title += nodes.inline("", f"⟨{name}⟩", classes=["chunk-name"])
            title += nodes.Text(" ≡")
        box += title

        box += self.code_node(env, model, part, chunk.lang)

        footer = nodes.paragraph(classes=["chunk-footer"])
        users = model.users(name)
        if users:
            footer += nodes.Text("Used in ")
            for k, user in enumerate(dict((u.name, u) for u in users).values()):
                if k:
                    footer += nodes.Text(", ")
                footer += nodes.reference("", f"⟨{user.name}⟩", refuri=f"#{anchor(model, user.name)}")
            footer += nodes.Text(". ")
        if chunk.file and part.index == 0:
            footer += nodes.Text("Writes ")
            footer += nodes.literal("", f"tangled/{chunk.file}")
            footer += nodes.Text(".")
        if len(footer):
            box += footer
        return [box]


    @staticmethod
    def code_node(env, model: chunks.Chapter, part: chunks.Part, lang: str) -> nodes.Node:
        """The highlighted code, each ``<<Ref>>`` line shown as a link ``⟨Ref⟩``."""
        code_lines, refs = [], []
        for text in part.lines:
            match = chunks.REFERENCE.match(text)
            if match:
                code_lines.append(f"{match['indent']}__attn_ref_{len(refs)}__")
                refs.append(match["name"].strip())
            else:
                code_lines.append(text)
        code = "\n".join(code_lines)
        builder = env.app.builder
        if not hasattr(builder, "highlighter"):
            return nodes.literal_block(code, "\n".join(part.lines), language=lang)
        highlighted = builder.highlighter.highlight_block(code, lang, location=(part.chapter, part.body_line))

        def link(match: re.Match) -> str:
            name = refs[int(match["k"])]
            return (f'<a class="chunk-ref" href="#{anchor(model, name)}">'
                    f'⟨{html.escape(name)}⟩</a>')

        highlighted = re.sub(r'(?:<span class="[^"]*">)?__attn_ref_(?P<k>\d+)__(?:</span>)?', link, highlighted)
        return nodes.raw("", f'<div class="highlight-{lang} notranslate chunk-code">{highlighted}</div>',
                         format="html")


def result_role(name, rawtext, text, lineno, inliner, options=None, content=None):
    """{result}`ch01/key`: the value the chapter's program wrote for ``key``."""
    env = inliner.document.settings.env
    chapter, _, key = text.partition("/")
    path = ROOT / "figures" / chapter / "results.tsv"
    if not key or not path.is_file():
        msg = inliner.reporter.error(f"no results file {path.relative_to(ROOT)} for {{result}}`{text}` "
                                     f"(run 'make run-{chapter}')", line=lineno)
        return [inliner.problematic(rawtext, rawtext, msg)], [msg]
    env.note_dependency(str(path))
    values = dict(line.split("\t", 1) for line in path.read_text(encoding="utf-8").splitlines() if "\t" in line)
    if key not in values:
        msg = inliner.reporter.error(f"{path.relative_to(ROOT)} has no result '{key}'", line=lineno)
        return [inliner.problematic(rawtext, rawtext, msg)], [msg]
    return [nodes.inline(rawtext, values[key], classes=["result"])], []


class ApiReference(Directive):
    """One section per header of tangled/include/attn, each a Breathe ``doxygenfile``."""

    has_content = False

    def run(self) -> list[nodes.Node]:
        xml = ROOT / "build" / "doxygen" / "xml"
        namespaces = sorted(p.stem[len("namespace"):].replace("_1_1", "::") for p in xml.glob("namespaceattn*.xml"))
        text = []
        for namespace in namespaces:
            text += [f"## Namespace `{namespace}`", "", f"```{{doxygennamespace}} {namespace}", ":project: attn",
                     ":content-only:", ":members:", "```", ""]
        from docutils.statemachine import StringList
        container = nodes.section()
        container.document = self.state.document
        self.state.nested_parse(StringList(text, source="api-reference"), self.content_offset, container,
                                match_titles=True)
        return container.children


class ChapterList(Directive):
    """```{chapters} 06 14``` — a toctree of the chapters numbered 06 to 14 that exist."""

    required_arguments = 2

    def run(self) -> list[nodes.Node]:
        first, last = (int(a) for a in self.arguments)
        found = sorted(p for p in (ROOT / "chapters").glob("[0-9][0-9]-*.md") if first <= int(p.name[:2]) <= last)
        if not found:
            return [nodes.paragraph(text="(These chapters are being written.)")]
        from sphinx import addnodes
        toctree = addnodes.toctree()
        toctree["parent"] = self.state.document.settings.env.docname
        docnames = [f"chapters/{p.stem}" for p in found]
        toctree["entries"] = [(None, d) for d in docnames]
        toctree["includefiles"] = docnames
        for key, value in dict(maxdepth=1, caption=None, glob=False, hidden=False, includehidden=False,
                               numbered=0, titlesonly=False).items():
            toctree[key] = value
        self.state.document.settings.env.note_dependency(str(ROOT / "chapters"))
        return [nodes.compound("", toctree, classes=["toctree-wrapper"])]


def setup(app):
    app.add_directive("chapters", ChapterList)
    app.add_directive("chunk", ChunkDirective)
    app.add_role("result", result_role)
    app.add_directive("api-reference", ApiReference)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
