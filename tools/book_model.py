"""The book as a whole: every chapter read, checked and expanded, in one call.

``read_book(paths)`` is the one entry through which both the tangler
(``tangle.py``) and the weave (``book/_ext/weave``) see the chapters, so the
files the tangler writes and the pages the weave shows cannot disagree::

    book = read_book(["chapters/01-self-attention.md", ...])
    book.problems          # every error and warning, sorted, each once
    book.roots             # each root chunk expanded (nothing written)
    book.files[path]       # a tangled file: its chapter, root chunk and chunks
    book.chapter("ch01")   # a chapter: its title, summary and chunk model

It knows nothing of Sphinx or docutils, so it is tested like the tangler.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from chunks import COMMENT, Chapter, Part, Problem, read_chapter
from expand import (ExpansionError, Line, Root, check_references, clean_text,  # noqa: F401 (re-exported)
                    collect_roots, expand, find_cycles, key_text, twin_text)

CHAPTER_NAME = re.compile(r"^(?P<number>\d\d)-(?P<slug>[a-z0-9-]+)\.md$")
STRING = re.compile(r'"((?:[^"\\\n]|\\.)*)"')   # a C++ string literal's text


@dataclass
class BookChapter:
    """One chapter: where it is, what it is called, and its chunks."""

    path: str                 # "chapters/01-self-attention.md" (as the book names it)
    number: str               # "01"
    model: Chapter
    text: str = ""            # the chapter's Markdown

    @cached_property
    def title(self) -> str:
        return first_heading_and_summary(self.text)[0]

    @cached_property
    def summary(self) -> str:
        return first_heading_and_summary(self.text)[1]

    @property
    def docname(self) -> str:  # "chapters/01-self-attention"
        return "chapters/" + Path(self.path).stem

    @property
    def short(self) -> str:    # "ch01"
        return f"ch{self.number}"

    @property
    def program(self) -> str:  # "ch01_self_attention"
        return "ch" + Path(self.path).stem.replace("-", "_")


@dataclass
class BookFile:
    """One tangled file: its chapter, its root chunk and every chunk expanded into it."""

    path: str                 # relative to tangled/, e.g. "include/attn/self_attention.hpp"
    chapter: BookChapter
    root: str                 # the root chunk's name
    chunks: list[str]         # the root first, then every chunk it expands, in order
    expanded: Root

    @property
    def text(self) -> str:
        return clean_text(self.expanded)

    @property
    def lines(self) -> list[Line]:
        return self.expanded.lines

    @property
    def docname(self) -> str:
        return "files/" + self.path


@dataclass
class FigureSource:
    """The chunk part that draws a figure: the one part of the chapter's program naming its
    file, or else (none or several do) the program's root, with ``exact`` False."""

    part: Part | None
    exact: bool
    candidates: list[Part] = field(default_factory=list)


@dataclass
class Book:
    chapters: list[BookChapter] = field(default_factory=list)
    files: dict[str, BookFile] = field(default_factory=dict)
    roots: list[Root] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if not p.warning]

    def chapter(self, key: str) -> BookChapter | None:
        """The chapter named by "ch01", "01", its docname or its path."""
        for info in self.chapters:
            if key in (info.short, info.number, info.docname, info.path):
                return info
        return None

    def has_errors(self, chapter: BookChapter) -> bool:
        return any(p.path == chapter.path for p in self.errors)

    def files_of(self, chapter: BookChapter) -> list[BookFile]:
        return [f for f in self.files.values() if f.chapter is chapter]

    def files_using(self, chapter: BookChapter, name: str) -> list[BookFile]:
        return [f for f in self.files_of(chapter) if name in f.chunks]

    def part_of_line(self, path: str, line: int) -> Part | None:
        """The chunk part that wrote line ``line`` (from 1) of tangled file ``path``."""
        info = self.files.get(path)
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

    def figure_source(self, chapter: BookChapter, filename: str) -> FigureSource:
        """Which part of ``chapter``'s program draws the figure file ``filename`` ("x.svg").

        The first of these that finds exactly one part: a part whose code names the file
        in a string ("x.svg"); a part that builds the name from pieces, a string that
        begins or ends it on a line that also names the file's extension ("x_" + kind +
        ".svg"); a part with a string that begins it up to a '_' ("x", for "x_2.svg").
        Otherwise the program's root chunk, not exact."""
        programs = [f for f in self.files_of(chapter) if f.path.startswith("programs/")]
        parts: list[Part] = []
        for f in programs:
            for name in f.chunks:
                parts += [p for p in chapter.model.chunks[name].parts if p not in parts]
        stem, extension = filename.rsplit(".", 1) if "." in filename else (filename, "")

        def piece(text: str) -> bool:
            return len(text) >= 4 and text != f".{extension}" and text != filename and \
                (filename.startswith(text) or filename.endswith(text))

        def naming(line: str) -> bool:
            return f'.{extension}"' in line and any(piece(t) for t in STRING.findall(line))

        def starting(line: str) -> bool:
            return any(len(t) >= 4 and stem.startswith(t + "_") for t in STRING.findall(line))

        tiers = [lambda line: f'"{filename}"' in line, naming, starting]
        candidates: list[Part] = []
        for test in tiers:
            named = [p for p in parts if any(test(line) for line in p.lines)]
            if len(named) == 1:
                return FigureSource(named[0], True, named)
            candidates = candidates or named
        root = chapter.model.chunks[programs[0].root].parts[0] if programs else None
        return FigureSource(root, False, candidates)


def expand_chunk(model: Chapter, name: str) -> list[Line] | None:
    """Chunk ``name`` with every chunk it uses expanded, unmarked (None if it cannot be)."""
    out: list[Line] = []
    try:
        expand(model, name, "", COMMENT.get(model.chunks[name].lang, "//"), out, marked=False)
    except (KeyError, ExpansionError):
        return None
    return out


def expanded_names(chapter: Chapter, name: str) -> list[str]:
    """Every chunk expanded into chunk ``name`` (itself first), in the order they appear."""
    seen: list[str] = []
    stack = [name]                  # iterative (chunks may nest thousands deep), in preorder
    while stack:
        current = stack.pop()
        if current in seen or current not in chapter.chunks:
            continue
        seen.append(current)
        refs = [ref for part in chapter.chunks[current].parts for _, ref in part.references]
        stack.extend(reversed(refs))
    return seen


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
            summary = re.split(r"(?<=[.!?])\s+(?=[A-Z*_(\"“])", paragraph, maxsplit=1)[0]
            break
    return title, summary


def chapter_paths(root: Path) -> list[Path]:
    """The chapters of the book whose top folder is ``root``, in order."""
    return sorted(p for p in (root / "chapters").glob("[0-9][0-9]-*.md") if CHAPTER_NAME.match(p.name))


def check(model: Chapter) -> None:
    """Add to the chapter's problems its undefined references, cycles and unused chunks."""
    check_references(model)
    find_cycles(model)


def read_book(paths: list[str | Path], base: Path | None = None,
              texts: dict[str, str] | None = None) -> Book:
    """Read, check and expand the chapters at ``paths`` as one book.

    Each chapter is named in messages by its path as given, or relative to
    ``base``. ``texts`` gives the text of a path instead of its file (a page may
    show a chapter of its own). Roots are expanded only for chapters without
    errors; the problems of every chapter are in ``book.problems``, sorted.
    """
    book = Book()
    problems: list[Problem] = []
    for path in paths:
        display = Path(path).resolve().relative_to(base).as_posix() if base else str(path)
        text = (texts or {}).get(str(path))
        try:
            model = read_chapter(path, text=text, display=display)
            if text is None and not model.problems:
                text = Path(path).read_text(encoding="utf-8")
        except OSError as error:
            problems.append(Problem(display, 1, f"cannot read chapter: {error.strerror or error}"))
            continue
        match = CHAPTER_NAME.match(Path(path).name)
        book.chapters.append(BookChapter(display, match["number"] if match else "", model, text or ""))
    for info in book.chapters:
        check(info.model)
    book.roots = collect_roots([c.model for c in book.chapters if not any(not p.warning for p in c.model.problems)])
    by_model = {id(c.model): c for c in book.chapters}
    for root in book.roots:
        info = by_model[id(root.chapter)]
        name = next(c.name for c in root.chapter.chunks.values() if c.file == root.path)
        book.files[root.path] = BookFile(root.path, info, name, expanded_names(root.chapter, name), root)
    book.files = dict(sorted(book.files.items()))
    for info in book.chapters:
        problems.extend(info.model.problems)
    book.problems = sorted(dict.fromkeys(problems), key=lambda p: (p.path, p.line, p.message))
    return book
