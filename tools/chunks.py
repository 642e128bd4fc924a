"""The chunk model: what a chapter's ``{chunk}`` blocks say.

One parser serves both the tangler (``tangle.py``) and the weave extension
(``book/_ext/weave.py``): markdown-it, the parser MyST itself uses, so both
read exactly the same fences.

A chunk is a fenced MyST directive::

    ```{chunk} Scale the scores
    :lang: cpp
    scores /= std::sqrt(static_cast<T>(d_k));
    ```

* the argument is the chunk's name;
* ``:file: PATH`` makes it a root, written to ``tangled/PATH``;
* a second block with the same name appends to it;
* a line holding only ``<<Name>>`` expands that chunk, indented as the line is.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from markdown_it import MarkdownIt

DIRECTIVE = "{chunk}"
KNOWN_OPTIONS = ("file", "lang")
REFERENCE = re.compile(r"^(?P<indent>[ \t]*)<<(?P<name>[^<>]+)>>[ \t]*$")
OPTION = re.compile(r"^:(?P<key>[A-Za-z_-]+):(?:[ \t]+(?P<value>.*))?$")
COMMENT = {"cpp": "//", "c": "//", "python": "#", "make": "#", "gnuplot": "#", "sh": "#"}


@dataclass(frozen=True)
class Problem:
    """An error or warning tied to a line of a chapter (lines count from 1)."""

    path: str
    line: int
    message: str
    warning: bool = False

    def __str__(self) -> str:
        kind = "warning: " if self.warning else ""
        return f"{self.path}:{self.line}: {kind}{self.message}"


@dataclass
class Part:
    """One fenced block: the whole chunk, or one of its appended parts."""

    name: str
    chapter: str          # path of the chapter, e.g. "chapters/01-self-attention.md"
    fence_line: int       # line of the opening fence
    body_line: int        # line of the first code line (after options)
    lines: list[str]
    options: dict[str, str]
    index: int = 0        # 0 for the defining block, 1, 2, ... for appends

    @property
    def references(self) -> list[tuple[int, str]]:
        """(chapter line, name) of every ``<<Name>>`` line in this part."""
        found = []
        for offset, text in enumerate(self.lines):
            match = REFERENCE.match(text)
            if match:
                found.append((self.body_line + offset, match["name"].strip()))
        return found


@dataclass
class Chunk:
    """A named chunk: its parts in the order the chapter gives them."""

    name: str
    parts: list[Part] = field(default_factory=list)

    @property
    def file(self) -> str | None:
        for part in self.parts:
            if "file" in part.options:
                return part.options["file"]
        return None

    @property
    def lang(self) -> str:
        for part in self.parts:
            if "lang" in part.options:
                return part.options["lang"]
        return "cpp"


@dataclass
class Chapter:
    """The chunks of one chapter, with the problems found while reading it."""

    path: str
    chunks: dict[str, Chunk] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)

    @property
    def parts(self) -> list[Part]:
        return sorted((p for c in self.chunks.values() for p in c.parts), key=lambda p: p.fence_line)

    def users(self, name: str) -> list[Part]:
        """The parts that reference chunk ``name``."""
        return [p for p in self.parts if any(ref == name for _, ref in p.references)]

    def part_at(self, line: int) -> Part | None:
        """The part whose fence opens at ``line``."""
        for part in self.parts:
            if part.fence_line == line:
                return part
        return None

    def error(self, line: int, message: str) -> None:
        self.problems.append(Problem(self.path, line, message))


def slug(text: str) -> str:
    """A stable anchor for a chunk name: lower case words joined by '-'."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "chunk"


def _is_closing_fence(line: str, markup: str) -> bool:
    stripped = line.strip()
    return (len(stripped) >= len(markup) and set(stripped) == {markup[0]})


def _split_options(content: str) -> tuple[list[tuple[str, str | None]], list[str]]:
    """Split a directive's body into leading ``:key: value`` options and code lines."""
    lines = content.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    options = []
    while lines and OPTION.match(lines[0]):
        match = OPTION.match(lines.pop(0))
        options.append((match["key"], match["value"]))
    return options, lines


def _check_file_path(chapter: Chapter, line: int, path: str) -> bool:
    pure = PurePosixPath(path)
    if not path or pure.is_absolute() or path.startswith("\\") or re.match(r"^[A-Za-z]:", path):
        chapter.error(line, f"file path '{path}' must be relative to tangled/")
        return False
    if ".." in pure.parts:
        chapter.error(line, f"file path '{path}' escapes tangled/")
        return False
    return True


def read_chapter(path: str | Path, text: str | None = None, display: str | None = None) -> Chapter:
    """Read every ``{chunk}`` block of one chapter.

    ``display`` is the path used in messages (default: ``path`` as given).
    """
    path = Path(path)
    if text is None:
        text = path.read_text(encoding="utf-8")
    chapter = Chapter(display or str(path))
    source_lines = text.split("\n")
    tokens = MarkdownIt("commonmark").parse(text)
    for token in tokens:
        if token.type != "fence":
            continue
        info = token.info.strip()
        if not (info == DIRECTIVE or info.startswith(DIRECTIVE + " ")):
            continue
        fence_line = token.map[0] + 1
        last = token.map[1] - 1
        if last <= token.map[0] or last >= len(source_lines) or not _is_closing_fence(source_lines[last], token.markup):
            chapter.error(fence_line, "chunk fence is never closed")
            continue
        name = " ".join(info[len(DIRECTIVE):].split())
        if not name:
            chapter.error(fence_line, "chunk has no name")
            continue
        options, lines = _split_options(token.content)
        bad = False
        parsed: dict[str, str] = {}
        for offset, (key, value) in enumerate(options):
            if key not in KNOWN_OPTIONS:
                chapter.error(fence_line + 1 + offset, f"unknown chunk option ':{key}:' (known: {', '.join(KNOWN_OPTIONS)})")
                bad = True
            elif not value or not value.strip():
                chapter.error(fence_line + 1 + offset, f"chunk option ':{key}:' needs a value")
                bad = True
            else:
                parsed[key] = value.strip()
        if "file" in parsed and not _check_file_path(chapter, fence_line + 1, parsed["file"]):
            bad = True
        if bad:
            continue
        chunk = chapter.chunks.setdefault(name, Chunk(name))
        if "file" in parsed and chunk.file and chunk.file != parsed["file"]:
            chapter.error(fence_line, f"chunk '{name}' already writes '{chunk.file}'")
            continue
        chunk.parts.append(Part(name=name, chapter=chapter.path, fence_line=fence_line,
                                body_line=fence_line + 1 + len(options), lines=lines,
                                options=parsed, index=len(chunk.parts)))
    return chapter
