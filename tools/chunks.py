"""The chunk model: what a chapter's ``{chunk}`` blocks say.

One parser serves both the tangler (``tangle.py``) and the weave extension
(``book/_ext/weave/``), both through ``book_model.py``: markdown-it, the parser
MyST itself uses, so both read exactly the same fences.

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

try:  # the plugins MyST uses for the extensions conf.py enables: parse the fences exactly as the book does
    from mdit_py_plugins.colon_fence import colon_fence_plugin
    from mdit_py_plugins.front_matter import front_matter_plugin
except ImportError:  # pragma: no cover - python3-mdit-py-plugins comes with python3-myst-parser
    colon_fence_plugin = front_matter_plugin = None

DIRECTIVE = "{chunk}"
KNOWN_OPTIONS = ("file", "lang")
REFERENCE = re.compile(r"^(?P<indent>[ \t]*)<<(?P<name>[^<>]+)>>[ \t]*$")
# A line that looks like a reference but is not one (a name with '<' or '>', text after it ...).
ALMOST_REFERENCE = re.compile(r"^[ \t]*<<.*>>[ \t]*$")
# Limits on a :file: path (relative to tangled/): short enough for every file system the
# book is built on, wherever the repository is checked out.
MAX_PATH_CHARS = 200
MAX_COMPONENT_BYTES = 100
TEMP_PREFIX = ".tangle-"   # the tangler's temporary files; no tangled path may use it
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
                found.append((self.body_line + offset, normalise_name(match["name"])))
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


def normalise_name(text: str) -> str:
    """A chunk name as the tangler keys it: runs of white space become one space."""
    return " ".join(text.split())


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


def check_file_path(path: str) -> str | None:
    """Why ``path`` cannot be a ``:file:`` (relative to tangled/), or None if it can.

    The path must be written in its one normal form, so that two spellings can
    never name one file: no '.', '..' or empty components, no '/' at either end.
    """
    if not path or path.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", path):
        return f"file path '{path}' must be relative to tangled/"
    if not re.fullmatch(r"[A-Za-z0-9._+/-]+", path):
        bad = "".join(sorted({c for c in path if not re.fullmatch(r"[A-Za-z0-9._+/-]", c)}))
        return (f"file path {path!r} may use only letters, digits and '. _ + - /' "
                f"(make and the compiler read it; found {bad!r})")
    parts = path.split("/")
    if ".." in parts:
        return f"file path '{path}' escapes tangled/"
    if path.endswith("/") or parts[-1] == ".":
        return f"file path '{path}' names a directory, not a file"
    normal = PurePosixPath(path).as_posix()
    if "" in parts or "." in parts or normal != path:
        return f"file path '{path}' is not in normal form: write '{normal}'"
    if len(path) > MAX_PATH_CHARS:
        return f"file path is {len(path)} characters long; the limit is {MAX_PATH_CHARS}"
    for part in parts:
        if len(part.encode("utf-8")) > MAX_COMPONENT_BYTES:
            return f"file path component '{part[:20]}...' is longer than {MAX_COMPONENT_BYTES} bytes"
        if part.startswith(TEMP_PREFIX):
            return f"file path '{path}': names starting with '{TEMP_PREFIX}' are the tangler's own"
    return None


def _check_file_path(chapter: Chapter, line: int, path: str) -> bool:
    why = check_file_path(path)
    if why:
        chapter.error(line, why)
        return False
    return True


def decode_chapter(chapter: Chapter, data: bytes) -> str | None:
    """The chapter's text (a leading byte-order mark dropped, as Sphinx drops it), or None
    after reporting, at its line and column, every line that is not UTF-8."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        for number, raw in enumerate(data.split(b"\n"), start=1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as error:
                column = len(raw[:error.start].decode("utf-8", errors="replace")) + 1
                chapter.error(number, f"not UTF-8: byte 0x{raw[error.start]:02x} at column {column} "
                                      "(save the chapter as UTF-8)")
                if len(chapter.problems) >= 10:
                    break
        return None
    return text[1:] if text.startswith("\ufeff") else text


def _parser() -> MarkdownIt:
    md = MarkdownIt("commonmark")
    if front_matter_plugin is not None:
        md.use(front_matter_plugin).use(colon_fence_plugin)
    return md


def read_chapter(path: str | Path, text: str | None = None, display: str | None = None) -> Chapter:
    """Read every ``{chunk}`` block of one chapter.

    ``display`` is the path used in messages (default: ``path`` as given).
    """
    path = Path(path)
    chapter = Chapter(display or str(path))
    if text is None:
        text = decode_chapter(chapter, path.read_bytes())
        if text is None:
            return chapter
    elif text.startswith("\ufeff"):
        text = text[1:]
    source_lines = text.split("\n")
    tokens = _parser().parse(text)
    for token in tokens:
        if token.type not in ("fence", "colon_fence") or token.map is None:
            continue
        info = token.info.strip()
        words = info.split(None, 1)     # as MyST reads a fence: the first word names the directive
        if not words or words[0] != DIRECTIVE:
            continue
        fence_line = token.map[0] + 1
        last = token.map[1] - 1
        if last <= token.map[0] or last >= len(source_lines) or not _is_closing_fence(source_lines[last], token.markup):
            chapter.error(fence_line, "chunk fence is never closed")
            continue
        name = normalise_name(words[1]) if len(words) > 1 else ""
        if not name:
            chapter.error(fence_line, "chunk has no name")
            continue
        if "<" in name or ">" in name:
            chapter.error(fence_line, f"chunk name '{name}' may not contain '<' or '>' (a reference could not name it)")
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
        body_line = fence_line + 1 + len(options)
        for offset, code in enumerate(lines):
            if ALMOST_REFERENCE.match(code) and not REFERENCE.match(code):
                chapter.error(body_line + offset, f"not a reference: '{code.strip()}' (a reference is a line "
                                                  "holding only <<Name>>, and a name has no '<' or '>')")
                bad = True
        if bad:
            continue
        chunk = chapter.chunks.setdefault(name, Chunk(name))
        if "file" in parsed and chunk.file and chunk.file != parsed["file"]:
            chapter.error(fence_line, f"chunk '{name}' already writes '{chunk.file}'")
            continue
        chunk.parts.append(Part(name=name, chapter=chapter.path, fence_line=fence_line,
                                body_line=body_line, lines=lines,
                                options=parsed, index=len(chunk.parts)))
    return chapter
