"""The pages this extension writes, and the directives that fill them.

Before Sphinx looks for sources, ``generate_pages`` writes under ``book/files``
one page per tangled file (``{tangled-file} PATH``: the whole file, each chunk
marker a link) and under ``book/api`` one page per header (``{api-header}
PATH``: its Breathe entries, each linked to its chunk); ``{api-pages}`` and
``{file-pages}`` are their toctrees. ``{tangled-output}`` shows what the
tangler makes of a page, computed, not written.
"""

from __future__ import annotations

import html
import re
from pathlib import Path

from docutils import nodes
from docutils.parsers.rst import Directive, directives

from book_model import clean_text, read_book, twin_text
from chunks import COMMENT
from weave.assets import write_if_changed
from weave.doxygen import api_docname
from weave.links import chunk_uri, highlight, parse_markdown
from weave.state import BOOK_DIR, DOXYGEN_XML, ROOT, the_api, the_book

GENERATED = ("files", "api")   # folders of book/ this extension writes (not committed)


def generate_pages(app) -> None:
    """Write the pages of every tangled file and every header under book/files and book/api."""
    book, api = the_book(), the_api()
    wanted: dict[Path, str] = {}
    for info in book.files.values():
        chapter = info.chapter
        see = f" Its API reference: {{doc}}`/{api_docname(info.path)}`." if info.path in api else ""
        wanted[BOOK_DIR / f"{info.docname}.md"] = (
            f"# {info.path}\n\n"
            f"`tangled/{info.path}`, written by {{doc}}`/{chapter.docname}` from its chunk "
            f"{{chunkref}}`{chapter.short}:{info.root}`. Each comment `⟨Name⟩` links to the chunk "
            f"whose code follows it.{see}\n\n"
            f"```{{tangled-file}} {info.path}\n```\n")
    for path in api:
        chapter = book.files[path].chapter
        wanted[BOOK_DIR / f"{api_docname(path)}.md"] = (
            f"# {path[len('include/'):]}\n\n"
            f"Written in {{doc}}`/{chapter.docname}`; the whole file is {{doc}}`/{book.files[path].docname}`.\n\n"
            f"```{{api-header}} {path}\n```\n")
    for folder in GENERATED:
        for old in sorted((BOOK_DIR / folder).rglob("*.md")) if (BOOK_DIR / folder).is_dir() else []:
            if old not in wanted:
                old.unlink()
    for path, text in wanted.items():
        write_if_changed(path, text)


class TangledFile(Directive):
    """```{tangled-file} include/attn/x.hpp``` — the whole tangled file, each chunk marker a link."""

    required_arguments = 1

    def run(self) -> list[nodes.Node]:
        env = self.state.document.settings.env
        info = the_book().files.get(self.arguments[0])
        if info is None:
            raise self.error(f"the tangler writes no file '{self.arguments[0]}'")
        env.note_dependency(str(ROOT / info.chapter.path))
        lang = info.chapter.model.chunks[info.root].lang
        comment = COMMENT.get(lang, "//")
        marker = re.compile(rf"^(?P<indent>\s*){re.escape(comment)} ⟨(?P<name>.+)⟩(?P<sign> \+≡)? (?P<where>\S+:\d+)$")
        lines, marks = [], []
        for text in info.text.rstrip("\n").split("\n"):
            match = marker.match(text)
            if match and match["name"] in info.chapter.model.chunks:
                lines.append(f"{match['indent']}{comment} __attn_mark_{len(marks)}__")
                marks.append(match)
            else:
                lines.append(text)
        highlighted = highlight(env, "\n".join(lines), lang, (env.docname, 1))
        if highlighted is None:
            return [nodes.literal_block(info.text, info.text, language=lang)]

        def link(found: re.Match) -> str:
            match = marks[int(found["k"])]
            chunk = info.chapter.model.chunks[match["name"]]
            line = int(match["where"].rsplit(":", 1)[1])
            index = next((p.index for p in chunk.parts if p.fence_line == line), 0)
            uri = chunk_uri(env, info.chapter, match["name"], index)
            return (f'<span class="c1">{html.escape(comment)} <a class="chunk-ref" href="{html.escape(uri)}">'
                    f'⟨{html.escape(match["name"])}⟩</a>{html.escape(match["sign"] or "")} '
                    f'{html.escape(match["where"])}</span>')

        highlighted = re.sub(r'<span class="c1">[^<]*__attn_mark_(?P<k>\d+)__</span>', link, highlighted)
        return [nodes.raw("", f'<div class="highlight-{lang} notranslate tangled-file">{highlighted}</div>',
                          format="html")]


class ApiHeader(Directive):
    """```{api-header} include/attn/x.hpp``` — the Breathe entries of one header, each linked to its chunk."""

    required_arguments = 1

    def run(self) -> list[nodes.Node]:
        env = self.state.document.settings.env
        path = self.arguments[0]
        entries = the_api().get(path)
        if entries is None:
            raise self.error(f"no header '{path}' among the tangled files")
        env.note_dependency(str(DOXYGEN_XML / "index.xml"))
        info = the_book().files[path]
        lines = []
        if not [e for e in entries if not e.member]:
            lines += ["This header documents nothing with `///` comments.", ""]
        for entry in (e for e in entries if not e.member):
            target = entry.name
            if entry.overloaded and entry.kind == "function":
                target += re.sub(r"\s*=\s*[^,)]+", "", entry.args)
            lines += [f"```{{{entry.directive}}} {target}", ":project: attn"]
            if entry.kind in ("class", "struct"):
                lines += [":members:"]
            lines += ["```", ""]
            if entry.part is not None:
                suffix = f" part {entry.part.index + 1}" if entry.part.index else ""
                lines += [f"Written in {{chunkref}}`{info.chapter.short}:{entry.part.name}`{suffix}, "
                          f"{{doc}}`{info.chapter.title.replace('`', '')} </{info.chapter.docname}>`.", ""]
            if entry.kind == "function" and entry.name.endswith("attention"):
                lines += ["A kernel: it keeps {ref}`the contract every kernel keeps "
                          "<kernel-contract>` (shapes, options, masks, NaN, range).", ""]
        return parse_markdown(self, lines, f"api-{path}")


class ApiPages(Directive):
    """A toctree of the API pages, one per header."""

    def run(self) -> list[nodes.Node]:
        lines = ["```{toctree}", ":maxdepth: 1", ""] + [api_docname(p) for p in the_api()] + ["```"]
        return parse_markdown(self, lines, "api-pages")


class FilePages(Directive):
    """A hidden toctree of the tangled files' pages."""

    def run(self) -> list[nodes.Node]:
        lines = ["```{toctree}", ":hidden:", ":maxdepth: 1", ""] + [f.docname for f in the_book().files.values()]
        return parse_markdown(self, lines + ["```"], "file-pages")


class TangledOutput(Directive):
    """What the tangler makes of a page: its messages, and each file in both its copies.

    Without content, the page itself is tangled (so a page can show its own
    chunks being tangled); with content, the content is a chapter of its own.
    Nothing is written: the output is computed by the tangler's functions and shown.
    """

    has_content = True
    option_spec = {"name": directives.unchanged}

    def run(self) -> list[nodes.Node]:
        source, _ = self.state_machine.get_source_and_line(self.lineno)
        if self.content:
            name = self.options.get("name", "chapters/99-example.md")
            book = read_book([name], texts={name: "\n".join(self.content) + "\n"})
        else:
            book = read_book([Path(source).resolve()], base=ROOT)
        problems = sorted(set(book.problems), key=lambda p: (p.line, p.message))
        errors = [p for p in problems if not p.warning]
        messages = [str(p) for p in problems]
        if errors:
            messages.append(f"tangle: {len(errors)} error(s); nothing written")
        else:
            messages.append(f"tangle: {len(book.roots)} file(s) from 1 chapter(s)")
        text = "\n".join(messages)
        out: list[nodes.Node] = [nodes.paragraph(text="The tangler says:"),
                                 nodes.literal_block(text, text, language="text", classes=["tangle-messages"])]
        if errors:
            return out
        for root in book.roots:
            for label, body, folder in (("the clean copy", clean_text(root), "tangled"),
                                        ("the compiler's twin", twin_text(root), "build/tangled")):
                para = nodes.paragraph()
                para += nodes.Text(f"{label.capitalize()}, ")
                para += nodes.literal("", f"{folder}/{root.path}")
                para += nodes.Text(":")
                out.append(para)
                out.append(nodes.literal_block(body, body, language=root.lang))
        return out
