"""Weave: how the book's chapters become pages.

Everything here reads the chapters with the tangler's own model
(``tools/chunks.py`` and the expansion of ``tools/tangle.py``), so the book and
the C++ cannot disagree. It discovers chapters, chunks, files and headers on
its own; a new chapter needs nothing here.

* ``{chunk}`` renders one part of a chunk as pbrt does: a title bar
  ``⟨Name⟩ ≡`` (``+≡`` for an append) with links to the first and the next
  part, the code with every ``<<Ref>>`` line a link ``⟨Ref⟩``, the whole chunk
  fully expanded behind a toggle with a button that copies it, and a footer
  linking to where the chunk is used, the file a root writes, and the API
  entries the part defines.
* ``{result}`chNN/key``` quotes a number a chapter's program wrote to
  ``figures/chNN/results.tsv``; a missing file or key is an error.
* ``{chunkref}`chNN:Name``` links to a chunk from any page.
* ``{chapters} 01 05`` is one part of the front page's map: a toctree and one
  line per chapter (its front-matter ``summary``, else its first sentence).
* ``{chunk-index}``, ``{file-index}``, ``{tangled-file} PATH`` and
  ``{api-header} NAME`` are the index pages, the page of each tangled file and
  the API page of each header; the pages under ``files/`` and ``api/`` are
  written by this extension before Sphinx looks for sources.
* Every chapter page gets a box saying how to build, run and test it and
  which files it writes, with a download of those files.
"""

from __future__ import annotations

import html
import os
import posixpath
import hashlib
import re
import shutil
import sys
import xml.etree.ElementTree as ET
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from docutils import nodes
from docutils.parsers.rst import Directive, directives
from docutils.statemachine import StringList
from sphinx.util import logging

BOOK = Path(__file__).resolve().parents[1]
ROOT = BOOK.parent
sys.path.insert(0, str(ROOT / "tools"))
import chunks  # noqa: E402
import tangle  # noqa: E402

logger = logging.getLogger(__name__)

DOXYGEN_XML = ROOT / "build" / "doxygen" / "xml"
GENERATED = ("files", "api")   # folders of book/ this extension writes (not committed)
DOWNLOADS = "downloads"        # folder of the HTML output holding each chapter's sources
CHAPTER = re.compile(r"^(?P<number>\d\d)-(?P<slug>[a-z0-9-]+)\.md$")


# ---------------------------------------------------------------- the model of the whole book

@dataclass
class ChapterInfo:
    """One chapter: where it is, what it is called, and its chunks."""

    path: str                 # "chapters/01-self-attention.md"
    number: str               # "01"
    model: chunks.Chapter
    title: str = ""
    summary: str = ""

    @property
    def docname(self) -> str:
        return "chapters/" + Path(self.path).stem

    @property
    def short(self) -> str:   # "ch01"
        return f"ch{self.number}"

    @property
    def program(self) -> str:  # "ch01_self_attention"
        return "ch" + Path(self.path).stem.replace("-", "_")


@dataclass
class FileInfo:
    """One tangled file: its chapter, its root chunk and every chunk expanded into it."""

    path: str                 # relative to tangled/, e.g. "include/attn/self_attention.hpp"
    chapter: ChapterInfo
    root: str
    chunks: list[str]
    text: str
    lines: list[tangle.Line]

    @property
    def docname(self) -> str:
        return "files/" + self.path


@dataclass
class ApiEntry:
    """A documented declaration of a header, and the chunk part that writes it."""

    kind: str                 # "function", "class", "struct", "typedef", ...
    name: str                 # qualified, e.g. "attn::softmax_rows"
    args: str
    line: int
    refid: str = ""           # Doxygen's id, which Breathe makes an anchor of
    header: str = ""          # tangled path of the header, e.g. "include/attn/measure.hpp"
    part: chunks.Part | None = None
    overloaded: bool = False
    member: bool = False      # a class's member: shown on its class's entry, linked on its own

    @property
    def directive(self) -> str:
        kinds = {"function": "doxygenfunction", "class": "doxygenclass", "struct": "doxygenstruct",
                 "typedef": "doxygentypedef", "variable": "doxygenvariable", "enum": "doxygenenum"}
        return kinds[self.kind]


@dataclass
class Book:
    chapters: list[ChapterInfo] = field(default_factory=list)
    files: dict[str, FileInfo] = field(default_factory=dict)
    problems: list[chunks.Problem] = field(default_factory=list)
    api: dict[str, list[ApiEntry]] = field(default_factory=dict)   # header path -> entries

    def chapter(self, key: str) -> ChapterInfo | None:
        """The chapter named by "ch01", "01", its docname or its path."""
        for info in self.chapters:
            if key in (info.short, info.number, info.docname, info.path):
                return info
        return None

    def files_of(self, chapter: ChapterInfo) -> list[FileInfo]:
        return [f for f in self.files.values() if f.chapter is chapter]

    def files_using(self, chapter: ChapterInfo, name: str) -> list[FileInfo]:
        return [f for f in self.files_of(chapter) if name in f.chunks]

    def api_of_part(self, part: chunks.Part) -> list[ApiEntry]:
        return [e for entries in self.api.values() for e in entries if e.part is part]


def first_heading_and_summary(text: str) -> tuple[str, str]:
    """The chapter's title (its first heading) and its one line for the front page.

    The line is the front matter's ``summary:`` if there is one, else the first
    sentence of the first paragraph after the title.
    """
    summary = ""
    front = re.match(r"^---\n(?P<body>.*?)\n---\n", text, re.S)
    if front:
        found = re.search(r"^summary:\s*(?P<s>.+)$", front["body"], re.M)
        if found:
            summary = found["s"].strip().strip("\"'")
        text = text[front.end():]
    from markdown_it import MarkdownIt
    tokens = MarkdownIt("commonmark").parse(text)
    title, seen_title = "", False
    for k, token in enumerate(tokens):
        if token.type == "heading_open" and token.tag == "h1" and not seen_title:
            title, seen_title = tokens[k + 1].content.strip(), True
        elif token.type == "paragraph_open" and seen_title and not summary:
            paragraph = " ".join(tokens[k + 1].content.split())
            sentence = re.split(r"(?<=[.!?])\s+(?=[A-Z*_(\"“])", paragraph, maxsplit=1)[0]
            summary = sentence
            break
    return title, summary


def chapter_paths() -> list[Path]:
    return sorted(p for p in (ROOT / "chapters").glob("[0-9][0-9]-*.md") if CHAPTER.match(p.name))


def read_book() -> Book:
    """Read every chapter as the tangler does and expand every root as it does."""
    book = Book()
    models = []
    for path in chapter_paths():
        display = path.relative_to(ROOT).as_posix()
        text = path.read_text(encoding="utf-8")
        model = chunks.read_chapter(path, text=text, display=display)
        title, summary = first_heading_and_summary(text)
        book.chapters.append(ChapterInfo(display, path.name[:2], model, title, summary))
        models.append(model)
    roots = tangle_models(models)
    for model in models:
        book.problems.extend(model.problems)
    by_model = {id(c.model): c for c in book.chapters}
    for root in roots:
        info = by_model[id(root.chapter)]
        name = next(c.name for c in root.chapter.chunks.values() if c.file == root.path)
        book.files[root.path] = FileInfo(root.path, info, name, expanded_names(root.chapter, name),
                                         tangle.clean_text(root), root.lines)
    book.files = dict(sorted(book.files.items()))
    read_api(book)
    return book


def tangle_models(models: list[chunks.Chapter]) -> list[tangle.Root]:
    """Check and expand chapters exactly as tools/tangle.py does (problems land in each model)."""
    for model in models:
        tangle.check_references(model)
        tangle.find_cycles(model)
    return tangle.collect_roots([m for m in models if not any(not p.warning for p in m.problems)])


def expanded_names(chapter: chunks.Chapter, name: str) -> list[str]:
    """Every chunk expanded into chunk ``name`` (itself first), in the order they appear."""
    seen: list[str] = []

    def walk(current: str) -> None:
        if current in seen or current not in chapter.chunks:
            return
        seen.append(current)
        for part in chapter.chunks[current].parts:
            for _, ref in part.references:
                walk(ref)

    walk(name)
    return seen


def part_of_line(book: Book, path: str, line: int) -> chunks.Part | None:
    """The chunk part that wrote line ``line`` (from 1) of tangled file ``path``."""
    info = book.files.get(path)
    if info is None:
        return None
    # A declaration's line may be a generated marker; the code after it is the chunk's.
    for source in info.lines[line - 1:line + 2]:
        if source.chapter is None:
            continue
        for part in info.chapter.model.parts:
            if part.body_line <= source.number < part.body_line + len(part.lines):
                return part
    return None


def doxygen_compounds(kinds: tuple[str, ...]) -> list[Path]:
    """The XML files of Doxygen's current compounds of these kinds (as its index lists them)."""
    index = DOXYGEN_XML / "index.xml"
    if not index.is_file():
        return []
    return [DOXYGEN_XML / f"{c.get('refid')}.xml" for c in ET.parse(index).getroot().findall("compound")
            if c.get("kind") in kinds and (DOXYGEN_XML / f"{c.get('refid')}.xml").is_file()]


def read_api(book: Book) -> None:
    """What Doxygen documented in each header, each entry tied to the chunk part that writes it."""
    book.api = {path: [] for path in book.files if path.startswith("include/") and path.endswith(".hpp")}
    if not (DOXYGEN_XML / "index.xml").is_file():
        return
    seen: set[tuple[str, str]] = set()
    for xml_file in doxygen_compounds(("namespace", "class", "struct")):
        compound = ET.parse(xml_file).getroot().find("compounddef")
        if compound is None:
            continue
        found = []
        if compound.get("kind") in ("class", "struct"):
            found.append((compound.get("kind"), compound.findtext("compoundname"), "", compound.find("location"),
                          compound.get("id")))
            for member in compound.findall("sectiondef/memberdef"):
                documented = "".join(member.find("briefdescription").itertext()).strip() or \
                    "".join(member.find("detaileddescription").itertext()).strip()
                if documented and member.get("prot") == "public" and member.get("kind") in ("function", "variable"):
                    found.append(("member", member.findtext("qualifiedname"), member.findtext("argsstring") or "",
                                  member.find("location"), member.get("id")))
        elif compound.get("kind") == "namespace":
            for member in compound.iter("memberdef"):
                if member.get("kind") not in ("function", "typedef", "variable", "enum"):
                    continue
                found.append((member.get("kind"), member.findtext("qualifiedname"),
                              member.findtext("argsstring") or "", member.find("location"), member.get("id")))
        for kind, name, args, location, refid in found:
            if location is None or "::detail" in name or (name, args) in seen:
                continue
            seen.add((name, args))
            path = "include/" + location.get("file", "")
            if path not in book.api:
                continue
            line = int(location.get("line", "0"))
            book.api[path].append(ApiEntry(kind, name, args, line, refid, path, part_of_line(book, path, line),
                                           member=kind == "member"))
    names = [e.name for entries in book.api.values() for e in entries if not e.member]
    for entries in book.api.values():
        entries.sort(key=lambda e: e.line)
        for entry in entries:
            entry.overloaded = names.count(entry.name) > 1  # overloads may live in different headers


_BOOK: Book | None = None


def the_book() -> Book:
    global _BOOK
    if _BOOK is None:
        _BOOK = read_book()
    return _BOOK


# ---------------------------------------------------------------- anchors and links

def anchor(name: str, index: int = 0) -> str:
    """The stable anchor of part ``index`` of chunk ``name`` on its chapter's page."""
    base = f"chunk-{chunks.slug(name)}"
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


def part_label(part: chunks.Part) -> str:
    """How a link to one part reads: "⟨Name⟩", or "⟨Name⟩ part 2" for an append."""
    return f"⟨{part.name}⟩" + (f" part {part.index + 1}" if part.index else "")


def chunk_uri(env, chapter: ChapterInfo, name: str, index: int = 0) -> str:
    return relative_uri(env, chapter.docname, anchor(name, index))


def name_ref(text: str, refuri: str, classes: list[str] | None = None) -> nodes.reference:
    """A link whose text is a chunk's name, shown exactly (no typographic quotes)."""
    ref = nodes.reference("", text, refuri=refuri, classes=classes or [])
    ref["support_smartquotes"] = False
    return ref


def chunk_link(env, chapter: ChapterInfo, name: str, index: int = 0, text: str | None = None) -> nodes.reference:
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


# ---------------------------------------------------------------- {chunk}

def chapter_of_source(source: str) -> tuple[ChapterInfo | None, chunks.Chapter]:
    """The chapter (if it is one) and the chunk model of the page at ``source``."""
    real = Path(source).resolve()
    try:
        display = real.relative_to(ROOT).as_posix()
    except ValueError:
        display = str(real)
    info = the_book().chapter(display)
    if info is not None:
        return info, info.model
    return None, chunks.read_chapter(real, display=display)


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
        env.note_dependency(str(ROOT / "tools" / "chunks.py"))
        env.note_dependency(str(ROOT / "tools" / "tangle.py"))
        slugs = [n for n in model.chunks if chunks.slug(n) == chunks.slug(name)]
        if len(slugs) > 1:
            logger.warning(f"chunks {' and '.join(repr(s) for s in slugs)} have the same anchor; rename one",
                           location=(env.docname, line))
        if info is not None and book_has_error(info):
            raise self.error("the tangler reports errors in this chapter; run 'make tangle'")

        box = nodes.container(classes=["chunk"])
        box["ids"].append(anchor(name, part.index))
        box += self.title_bar(env, model, chunk, part)
        box += self.code_node(env, model, part, chunk.lang)
        expanded_id = f"{anchor(name, part.index)}-expanded"
        box += self.expanded_node(env, model, chunk, part, expanded_id)
        footer = self.footer(env, info, model, chunk, part)
        if len(footer):
            box += footer
        return [box]

    @staticmethod
    def title_bar(env, model: chunks.Chapter, chunk: chunks.Chunk, part: chunks.Part) -> nodes.Node:
        title = nodes.container(classes=["chunk-title"])
        head = nodes.paragraph(classes=["chunk-head"])
        head += name_ref(f"⟨{chunk.name}⟩", f"#{anchor(chunk.name)}", ["chunk-name"])
        head += nodes.Text(" +≡" if part.index else " ≡")
        title += head
        nav = []
        if part.index:
            nav.append(nodes.reference("", "↑ first part", refuri=f"#{anchor(chunk.name)}",
                                       classes=["chunk-first"]))
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
        highlighted = highlight(env, code, lang, (part.chapter, part.body_line))
        if highlighted is None:
            return nodes.literal_block(code, "\n".join(part.lines), language=lang)

        def link(match: re.Match) -> str:
            name = refs[int(match["k"])]
            return f'<a class="chunk-ref" href="#{anchor(name)}">⟨{html.escape(name)}⟩</a>'

        highlighted = re.sub(r'(?:<span class="[^"]*">)?__attn_ref_(?P<k>\d+)__(?:</span>)?', link, highlighted)
        highlighted = highlighted.replace("<pre>", '<pre class="chunk-pre">', 1)
        return nodes.raw("", f'<div class="highlight-{lang} notranslate chunk-code">{highlighted}</div>',
                         format="html")

    @staticmethod
    def expanded_node(env, model: chunks.Chapter, chunk: chunks.Chunk, part: chunks.Part, ident: str) -> nodes.Node:
        """The whole chunk with every reference expanded, behind a toggle (as the tangler expands it)."""
        comment = chunks.COMMENT.get(chunk.lang, "//")
        out: list[tangle.Line] = []
        try:
            tangle.expand(model, chunk.name, "", comment, out, marked=False)
        except (KeyError, RecursionError):
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

    @staticmethod
    def footer(env, info: ChapterInfo | None, model: chunks.Chapter, chunk: chunks.Chunk,
               part: chunks.Part) -> nodes.Node:
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
            entries = book.api_of_part(part)
            if entries:
                footer += nodes.Text("API: ")
                for k, entry in enumerate(entries):
                    if k:
                        footer += nodes.Text(", ")
                    footer += api_link(env, entry)
                footer += nodes.Text(".")
        return footer


def book_has_error(info: ChapterInfo) -> bool:
    return any(not p.warning and p.path == info.path for p in the_book().problems)


# ---------------------------------------------------------------- {result} and {chunkref}

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


def chunkref_role(name, rawtext, text, lineno, inliner, options=None, content=None):
    """{chunkref}`ch01:Name` links to chunk ``Name`` of chapter 1 from any page."""
    env = inliner.document.settings.env
    short, _, chunk_name = text.partition(":")
    chunk_name = " ".join(chunk_name.split())
    info = the_book().chapter(short.strip())
    if info is None or chunk_name not in info.model.chunks:
        msg = inliner.reporter.error(f"no chunk '{chunk_name}' in chapter '{short}'", line=lineno)
        return [inliner.problematic(rawtext, rawtext, msg)], [msg]
    return [chunk_link(env, info, chunk_name)], []


# ---------------------------------------------------------------- the front page's map

def parse_markdown(directive: Directive, lines: list[str], source: str) -> list[nodes.Node]:
    container = nodes.section()
    container.document = directive.state.document
    directive.state.nested_parse(StringList(lines, source=source), directive.content_offset, container,
                                 match_titles=False)
    return container.children


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


# ---------------------------------------------------------------- indexes

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


def joined(items: list[nodes.Node], sep: str = ", ") -> list:
    out: list = []
    for k, item in enumerate(items):
        if k:
            out.append(sep)
        out.append(item)
    return out


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
        book = the_book()
        rows = []
        for info in book.files.values():
            env.note_dependency(str(ROOT / info.chapter.path))
            rows.append([[page_link(info.path, info.docname, ["file-link"])],
                         [page_link(info.chapter.title, info.chapter.docname)],
                         [chunk_link(env, info.chapter, info.root)],
                         joined([chunk_link(env, info.chapter, n) for n in info.chunks[1:]]) or ["—"]])
        return [table(["file (under tangled/)", "chapter", "root chunk", "chunks expanded into it"], rows,
                      [25, 20, 20, 35], ["file-index"])]


class TangledFile(Directive):
    """```{tangled-file} include/attn/x.hpp``` — the whole tangled file, each chunk marker a link."""

    required_arguments = 1

    def run(self) -> list[nodes.Node]:
        env = self.state.document.settings.env
        book = the_book()
        info = book.files.get(self.arguments[0])
        if info is None:
            raise self.error(f"the tangler writes no file '{self.arguments[0]}'")
        env.note_dependency(str(ROOT / info.chapter.path))
        lang = info.chapter.model.chunks[info.root].lang
        comment = chunks.COMMENT.get(lang, "//")
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


def files_box(env, info: ChapterInfo) -> list[nodes.Node]:
    """The chapter's "how to build, run and test" and "files this chapter writes" boxes."""
    book = the_book()
    box = nodes.admonition(classes=["tip", "chapter-run"])
    box += nodes.title(text="Build, run and test this chapter")
    items = nodes.bullet_list()

    def item(command: str, what: str) -> None:
        para = nodes.paragraph()
        para += nodes.literal(command, command)
        para += nodes.Text(" " + what)
        items.append(nodes.list_item("", para))

    item(f"make {info.short}", f"builds its program, build/bin/{info.program};")
    item(f"make run-{info.short}", f"runs it: the figures and the numbers quoted here go to figures/{info.short}/;")
    if (ROOT / "tests" / f"{info.program}_test.cpp").is_file():
        item(f"make test-{info.short}", f"runs its tests, tests/{info.program}_test.cpp;")
    item(f"build/bin/{info.program} --help", "lists its options (--out DIR, --seed N, --quick, ...).")
    box += items
    machine = machine_paragraph(env, info)
    if machine is not None:
        box += machine
    files = book.files_of(info)
    if not files:
        return [box]
    written = nodes.admonition(classes=["note", "chapter-files"])
    written += nodes.title(text="Files this chapter writes")
    listing = nodes.bullet_list()
    for f in files:
        para = nodes.paragraph()
        para += page_link(f"tangled/{f.path}", f.docname)
        para += nodes.Text(" from ")
        para += chunk_link(env, info, f.root)
        entries = book.api.get(f.path)
        if entries is not None:
            para += nodes.Text(" (")
            para += page_link("API", api_docname(f.path))
            para += nodes.Text(")")
        listing.append(nodes.list_item("", para))
    written += listing
    para = nodes.paragraph()
    archive = download_name(info)
    para += nodes.reference("", f"Download {archive}", refuri=relative_file_uri(env, f"{DOWNLOADS}/{archive}"),
                            classes=["chapter-download"])
    para += nodes.Text(f" ({len(files)} file{'s' if len(files) != 1 else ''}, as under tangled/).")
    written += para
    return [box, written]


def machine_paragraph(env, info: ChapterInfo) -> nodes.paragraph | None:
    """"Measured on ...": the machine the chapter's program recorded in its results.tsv."""
    path = ROOT / "figures" / info.short / "results.tsv"
    if not path.is_file():
        return None
    env.note_dependency(str(path))
    values = dict(line.split("\t", 1) for line in path.read_text(encoding="utf-8").splitlines()
                  if "\t" in line)
    if "cpu_model" not in values:
        return None
    para = nodes.paragraph(classes=["measured-on"])
    para += nodes.strong(text="Measured on ")
    para += nodes.Text(f"{values['cpu_model']}, {values.get('cpu_cores', '?')} cores; OpenBLAS "
                       f"{values.get('blas_core', '?')} core ({values.get('blas_core_origin', '?')}), "
                       f"{values.get('blas_threads', '?')} threads unless a figure names its own. "
                       "How the numbers are taken: ")
    para += page_link("Instruments", "chapters/00-instruments")
    para += nodes.Text(".")
    if os.environ.get("GITHUB_ACTIONS") == "true":
        para += nodes.Text(" This copy of the book was built by continuous integration on a "
                           "shared runner: its timings are that machine's, taken beside "
                           "other people's work.")
    return para


def download_name(info: ChapterInfo) -> str:
    return f"{info.program}-sources.zip"


def api_docname(path: str) -> str:
    return "api/" + Path(path).stem


class ApiHeader(Directive):
    """```{api-header} include/attn/x.hpp``` — the Breathe entries of one header, each linked to its chunk."""

    required_arguments = 1

    def run(self) -> list[nodes.Node]:
        env = self.state.document.settings.env
        book = the_book()
        path = self.arguments[0]
        entries = book.api.get(path)
        if entries is None:
            raise self.error(f"no header '{path}' among the tangled files")
        env.note_dependency(str(DOXYGEN_XML / "index.xml"))
        info = book.files[path]
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
                lines += [f"{{chunkref}}`{info.chapter.short}:{entry.part.name}`{suffix}, "
                          f"{{doc}}`{info.chapter.title.replace('`', '')} </{info.chapter.docname}>`.", ""]
                lines[-2] = "Written in " + lines[-2]
            if entry.kind == "function" and entry.name.endswith("attention"):
                lines += ["A kernel: it keeps {ref}`the contract every kernel keeps "
                          "<kernel-contract>` (shapes, options, masks, NaN, range).", ""]
        return parse_markdown(self, lines, f"api-{path}")


# ---------------------------------------------------------------- the tangler at work, on a page

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
            model = chunks.read_chapter(name, text="\n".join(self.content) + "\n", display=name)
        else:
            real = Path(source).resolve()
            model = chunks.read_chapter(real, display=real.relative_to(ROOT).as_posix())
        roots = tangle_models([model])
        out: list[nodes.Node] = []
        problems = sorted(set(model.problems), key=lambda p: (p.line, p.message))
        errors = [p for p in problems if not p.warning]
        messages = [str(p) for p in problems]
        if errors:
            messages.append(f"tangle: {len(errors)} error(s); nothing written")
        else:
            messages.append(f"tangle: {len(roots)} file(s) from 1 chapter(s)")
        text = "\n".join(messages)
        out.append(nodes.paragraph(text="The tangler says:"))
        out.append(nodes.literal_block(text, text, language="text", classes=["tangle-messages"]))
        if errors:
            return out
        for root in roots:
            for label, body, folder in (("the clean copy", tangle.clean_text(root), "tangled"),
                                        ("the compiler's twin", tangle.twin_text(root), "build/tangled")):
                para = nodes.paragraph()
                para += nodes.Text(f"{label.capitalize()}, ")
                para += nodes.literal("", f"{folder}/{root.path}")
                para += nodes.Text(":")
                out.append(para)
                block = nodes.literal_block(body, body, language=root.lang)
                out.append(block)
        return out


# ---------------------------------------------------------------- generated pages

def write_if_changed(path: Path, text: str) -> None:
    if not path.is_file() or path.read_text(encoding="utf-8") != text:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")


def generate_pages(app) -> None:
    """Write the pages of every tangled file and every header under book/files and book/api."""
    book = the_book()
    wanted: dict[Path, str] = {}
    for info in book.files.values():
        chapter = info.chapter
        api = f" Its API reference: {{doc}}`/{api_docname(info.path)}`." if info.path in book.api else ""
        wanted[BOOK / f"{info.docname}.md"] = (
            f"# {info.path}\n\n"
            f"`tangled/{info.path}`, written by {{doc}}`/{chapter.docname}` from its chunk "
            f"{{chunkref}}`{chapter.short}:{info.root}`. Each comment `⟨Name⟩` links to the chunk "
            f"whose code follows it.{api}\n\n"
            f"```{{tangled-file}} {info.path}\n```\n")
    for path, entries in book.api.items():
        chapter = book.files[path].chapter
        wanted[BOOK / f"{api_docname(path)}.md"] = (
            f"# {path[len('include/'):]}\n\n"
            f"Written in {{doc}}`/{chapter.docname}`; the whole file is {{doc}}`/{book.files[path].docname}`.\n\n"
            f"```{{api-header}} {path}\n```\n")
    for folder in GENERATED:
        for old in sorted((BOOK / folder).rglob("*.md")) if (BOOK / folder).is_dir() else []:
            if old not in wanted:
                old.unlink()
    for path, text in wanted.items():
        write_if_changed(path, text)


class ApiPages(Directive):
    """A toctree of the API pages, one per header."""

    def run(self) -> list[nodes.Node]:
        book = the_book()
        lines = ["```{toctree}", ":maxdepth: 1", ""] + [api_docname(p) for p in book.api] + ["```"]
        return parse_markdown(self, lines, "api-pages")


class FilePages(Directive):
    """A hidden toctree of the tangled files' pages."""

    def run(self) -> list[nodes.Node]:
        book = the_book()
        lines = ["```{toctree}", ":hidden:", ":maxdepth: 1", ""] + [f.docname for f in book.files.values()] + ["```"]
        return parse_markdown(self, lines, "file-pages")


# ---------------------------------------------------------------- events

def on_builder_inited(app) -> None:
    global _BOOK
    _BOOK = read_book()
    for problem in _BOOK.problems:
        if not problem.warning:
            logger.warning(f"tangle: {problem}")
    generate_pages(app)
    # Namespaces have no page of their own; a signature's "attn::" names one, so it is not a broken link.
    for xml_file in doxygen_compounds(("namespace",)):
        compound = ET.parse(xml_file).getroot().find("compounddef")
        if compound is not None:
            app.config.nitpick_ignore.append(("cpp:identifier", compound.findtext("compoundname")))


def book_signature(book: Book) -> str:
    """A hash of what one page may show of another chapter: the chapters' titles and
    summaries, every chunk's name and parts, every file's chunks, the API entries and
    the tangler's problems. Line numbers and code are left out: the pages that show
    them (the chapter itself, its files' pages, the indexes) name the chapter as a
    dependency, so Sphinx reads them again whenever the chapter changes."""
    digest = hashlib.sha256()

    def add(*items) -> None:
        digest.update(repr(items).encode("utf-8"))

    for info in book.chapters:
        add(info.path, info.title, info.summary)
        for chunk in info.model.chunks.values():
            add(chunk.name, [(p.index, p.options) for p in chunk.parts])
    for path, f in book.files.items():
        add(path, f.root, f.chunks)
    for header, entries in book.api.items():
        add(header, [(e.kind, e.name, e.args, e.refid, e.member,
                      (e.part.name, e.part.index) if e.part else None) for e in entries])
    add([str(problem) for problem in book.problems])
    return digest.hexdigest()


def on_env_get_outdated(app, env, added, changed, removed) -> list[str]:
    """Every page is read again when what pages show of other chapters changed.

    A chunk renamed or added, a title, a file's chunks or an API entry can show on
    any page, so then every page is read again. An edit inside one chapter, prose or
    code, leaves that signature as it was, and Sphinx reads only the pages that name
    the chapter as a dependency.
    """
    signature = book_signature(the_book())
    if getattr(env, "attn_book_signature", None) == signature:
        return []
    env.attn_book_signature = signature
    return sorted(env.found_docs)


def on_doctree_read(app, doctree) -> None:
    """Give each chapter its build/run/test box and its files box, after its opening paragraphs."""
    env = app.env
    info = the_book().chapter(env.docname)
    if info is None:
        return
    print(f"  weave    {info.path}", flush=True)
    boxes = files_box(env, info)
    top = next(iter(doctree.findall(nodes.section)), None)
    if top is None:
        return
    sub = next((c for c in top.children if isinstance(c, nodes.section)), None)
    if sub is None:
        top.extend(boxes)
    else:
        position = top.index(sub)
        for k, box in enumerate(boxes):
            top.insert(position + k, box)


def on_build_finished(app, exception) -> None:
    """Write each chapter's sources as a zip file (stable bytes, so rebuilds do not change it)."""
    if exception is not None or app.builder.format != "html":
        return
    book = the_book()
    out = Path(app.outdir) / DOWNLOADS
    out.mkdir(parents=True, exist_ok=True)
    for info in book.chapters:
        files = book.files_of(info)
        if not files:
            continue
        target = out / download_name(info)
        tmp = target.with_suffix(".partial")
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            for f in files:
                entry = zipfile.ZipInfo(f"{info.program}/{f.path}", date_time=(2000, 1, 1, 0, 0, 0))
                entry.external_attr = 0o644 << 16
                archive.writestr(entry, f.text, compress_type=zipfile.ZIP_DEFLATED)
        tmp.replace(target)


# ---------------------------------------------------------------- offline MathJax

MATHJAX_SOURCE = Path("/usr/share/javascript/mathjax")
MATHJAX_PARTS = ["MathJax.js", "config/TeX-AMS_CHTML.js", "extensions", "jax/input/TeX", "jax/output/CommonHTML",
                 "jax/element", "fonts/HTML-CSS/TeX/woff"]


def stage_mathjax(target: Path) -> Path:
    """Copy the part of Debian's MathJax 2 the book uses into ``target/mathjax``; return ``target``."""
    dest = target / "mathjax"
    if not (MATHJAX_SOURCE / "MathJax.js").is_file():
        raise RuntimeError(f"MathJax is missing from {MATHJAX_SOURCE}: install libjs-mathjax ('make deps')")
    for part in MATHJAX_PARTS:
        source = MATHJAX_SOURCE / part
        if source.is_dir():
            for file in source.rglob("*"):
                if file.is_file():
                    _copy_if_newer(file, dest / part / file.relative_to(source))
        else:
            _copy_if_newer(source, dest / part)
    return target


FURO_STATIC = Path("/usr/lib/python3/dist-packages/furo/theme/furo/static")
NORMALIZE_CSS = Path("/usr/share/javascript/normalize.css/normalize.css")


def stage_theme_fixes(target: Path) -> Path:
    """Make Debian's furo work from any folder, offline, in dark mode: fix copies of its two assets.

    Debian's furo.css imports normalize.css from the absolute path /javascript/...
    (served only by a Debian web server), and its furo.js is an ES module loaded as
    a classic script. The fixed copies, in ``target``, replace the theme's own
    (files of html_static_path win over the theme's): normalize.css inlined, and
    the scrollspy it imports put in front of furo.js.
    """
    css = (FURO_STATIC / "styles" / "furo.css").read_text(encoding="utf-8")
    css = re.sub(r"@import url\(/javascript/normalize\.css/normalize\.css\);",
                 lambda _: NORMALIZE_CSS.read_text(encoding="utf-8") + "\n", css)
    # Its sass compiler also dropped the rule that makes "auto" follow the system's dark mode.
    dark = re.search(r'body\[data-theme="dark"\] \{(?P<vars>[^}]*)\}', css)
    if dark and "prefers-color-scheme" not in css:
        css += ('\n@media screen and (prefers-color-scheme: dark) {\n'
                f'  body:not([data-theme="light"]) {{{dark["vars"]}}}\n'
                '  body:not([data-theme="light"]) .only-light { display: none !important; }\n'
                '  body:not([data-theme="light"]) .only-dark { display: block !important; }\n}\n')
    js = (FURO_STATIC / "scripts" / "furo.js").read_text(encoding="utf-8")
    js = js.replace('import Gumshoe from "./gumshoe-patched.js";',
                    "// Gumshoe comes from gumshoe-patched.js, above.")
    gumshoe = (FURO_STATIC / "scripts" / "gumshoe-patched.js").read_text(encoding="utf-8")
    write_if_changed(target / "styles" / "furo.css", css)
    write_if_changed(target / "scripts" / "furo.js", gumshoe + "\n" + js)
    return target


def _copy_if_newer(source: Path, dest: Path) -> None:
    if dest.is_file() and dest.stat().st_mtime >= source.stat().st_mtime and dest.stat().st_size == source.stat().st_size:
        return
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(source.resolve(), dest)


def setup(app):
    app.add_directive("chapters", ChapterList)
    app.add_directive("chunk", ChunkDirective)
    app.add_directive("chunk-index", ChunkIndex)
    app.add_directive("file-index", FileIndex)
    app.add_directive("tangled-file", TangledFile)
    app.add_directive("api-header", ApiHeader)
    app.add_directive("api-pages", ApiPages)
    app.add_directive("tangled-output", TangledOutput)
    app.add_directive("file-pages", FilePages)
    app.add_role("result", result_role)
    app.add_role("chunkref", chunkref_role)
    app.connect("builder-inited", on_builder_inited)
    app.connect("env-get-outdated", on_env_get_outdated)
    app.connect("doctree-read", on_doctree_read)
    app.connect("build-finished", on_build_finished)
    app.add_js_file("book.js")
    return {"version": "2", "parallel_read_safe": True, "parallel_write_safe": True}
