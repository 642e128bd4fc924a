"""The lists of the book: the front page's map of chapters, the chunk index and the file index.

* ``{chapters} 01 05`` is one part of the front page's map: a toctree and one
  line per chapter (its front-matter ``summary``, else its first sentence).
* ``{chunk-index}`` lists every chunk of every chapter, ``{file-index}`` every
  tangled file.
"""

from __future__ import annotations

from docutils import nodes
from docutils.parsers.rst import Directive, directives

from weave.links import chunk_link, joined, page_link, parse_markdown, part_label
from weave.state import ROOT, the_book


class ChapterList(Directive):
    """```{chapters} 06 14``` — the chapters numbered 06 to 14 that exist, one line each.

    The title is the chapter's first heading; the line is its front-matter
    ``summary`` or else the first sentence of its first paragraph.
    """

    required_arguments = 2
    optional_arguments = 0
    final_argument_whitespace = True
    option_spec = {"caption": directives.unchanged}

    def run(self) -> list[nodes.Node]:
        first, last = (int(a) for a in self.arguments[:2])
        found = [c for c in the_book().chapters if first <= int(c.number) <= last]
        if not found:
            return [nodes.paragraph(text="(These chapters are being written.)")]
        env = self.state.document.settings.env
        for info in found:
            env.note_dependency(str(ROOT / info.path))
        caption = self.options.get("caption")
        text = ["```{toctree}", ":hidden:", ":maxdepth: 2"] + ([f":caption: {caption}"] if caption else []) + [""]
        text += [info.docname for info in found] + ["```", ""]
        for info in found:
            title = info.title.replace("`", "")
            text.append(f"- {{doc}}`{title} <{info.docname}>` — {info.summary}")
        return parse_markdown(self, text, "chapters")


def table(headers: list[str], rows: list[list[nodes.Node | str]], widths: list[int], classes: list[str]) -> nodes.table:
    tab = nodes.table(classes=classes)
    group = nodes.tgroup(cols=len(headers))
    tab += group
    for width in widths:
        group += nodes.colspec(colwidth=width)
    head = nodes.thead()
    group += head
    row = nodes.row()
    for h in headers:
        row += nodes.entry("", nodes.paragraph(text=h))
    head += row
    body = nodes.tbody()
    group += body
    for cells in rows:
        row = nodes.row()
        for cell in cells:
            entry = nodes.entry()
            para = nodes.paragraph()
            for item in (cell if isinstance(cell, list) else [cell]):
                para += nodes.Text(item) if isinstance(item, str) else item
            entry += para
            row += entry
        body += row
    return tab


class ChunkIndex(Directive):
    """Every chunk of every chapter: where each part is defined, where it is used, which files use it."""

    def run(self) -> list[nodes.Node]:
        env = self.state.document.settings.env
        book = the_book()
        result: list[nodes.Node] = []
        for info in book.chapters:
            env.note_dependency(str(ROOT / info.path))
            section = nodes.section(ids=[f"chunks-{info.short}"])
            section += nodes.title(text=info.title)
            rows = []
            for name in sorted(info.model.chunks, key=str.casefold):
                chunk = info.model.chunks[name]
                defined = joined([chunk_link(env, info, name, p.index, f"line {p.fence_line}") for p in chunk.parts])
                users = info.model.users(name)
                used = joined([chunk_link(env, info, u.name, u.index, part_label(u)) for u in users]) or ["—"]
                files = [page_link(f.path, f.docname) for f in book.files_using(info, name)]
                rows.append([[chunk_link(env, info, name)], defined, used, joined(files) or ["—"]])
            section += table(["chunk", "defined at", "used in", "tangled into"], rows, [30, 15, 30, 25],
                             ["chunk-index"])
            result.append(section)
        return result


class FileIndex(Directive):
    """Every tangled file: its chapter, its root chunk and the chunks expanded into it."""

    def run(self) -> list[nodes.Node]:
        env = self.state.document.settings.env
        rows = []
        for info in the_book().files.values():
            env.note_dependency(str(ROOT / info.chapter.path))
            rows.append([[page_link(info.path, info.docname, ["file-link"])],
                         [page_link(info.chapter.title, info.chapter.docname)],
                         [chunk_link(env, info.chapter, info.root)],
                         joined([chunk_link(env, info.chapter, n) for n in info.chunks[1:]]) or ["—"]])
        return [table(["file (under tangled/)", "chapter", "root chunk", "chunks expanded into it"], rows,
                      [25, 20, 20, 35], ["file-index"])]
