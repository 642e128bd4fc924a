"""Checking and expanding chunks: what a chapter's chunks become as files.

``check_references`` and ``find_cycles`` report what is wrong with one
chapter's chunks; ``expand`` writes a chunk out with everything it uses;
``collect_roots`` expands every root chunk (a ``:file:``) into a ``Root``,
whose three texts are what the tangler writes: ``clean_text`` (tangled/),
``twin_text`` (the compiler's copy, with ``#line``) and ``key_text`` (what
make compares). Nothing here touches the file system: ``book_model`` is the
one entry that reads chapters and uses this.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from chunks import COMMENT, REFERENCE, Chapter, Problem, normalise_name

C_LIKE = {"cpp", "c"}
MAX_LINES = 1_000_000   # a root that expands to more is an error (e.g. chunks that use each other twice over)


@dataclass
class Line:
    """One output line and where it comes from (None for generated lines).

    ``origin`` is set on a line that follows a seam, a place where the tangler
    inserts a marker or ``#line``: the chapter line to blame if the seam falls
    inside a raw string literal or a continued line.
    """

    text: str
    chapter: str | None = None
    number: int | None = None
    origin: tuple[str, int] | None = None


@dataclass
class Root:
    path: str          # relative to tangled/
    chapter: Chapter
    lang: str
    lines: list[Line]
    line: int = 0      # the fence line of the root chunk (where its problems are reported)


class ExpansionError(Exception):
    def __init__(self, line: int, message: str):
        super().__init__(message)
        self.line = line


# ---------------------------------------------------------------- checking the chunks


def find_cycles(chapter: Chapter) -> None:
    """Report every reference that closes a cycle of chunks (iteratively: chunks may nest deeply)."""
    state: dict[str, str] = {}

    def refs(name: str) -> list[tuple[int, str]]:
        return [ref for part in chapter.chunks[name].parts for ref in part.references]

    for start in chapter.chunks:
        if start in state:
            continue
        state[start] = "open"
        stack = [(start, iter(refs(start)))]
        while stack:
            name, pending = stack[-1]
            step = next(pending, None)
            if step is None:
                state[name] = "done"
                stack.pop()
                continue
            line, ref = step
            if ref not in chapter.chunks:
                continue
            if state.get(ref) == "open":
                chapter.error(line, f"reference cycle: '{ref}' expands itself through '{name}'")
            elif ref not in state:
                state[ref] = "open"
                stack.append((ref, iter(refs(ref))))


def check_references(chapter: Chapter) -> None:
    """Report undefined references and warn about chunks nothing uses."""
    used = set()
    for part in chapter.parts:
        for line, ref in part.references:
            used.add(ref)
            if ref not in chapter.chunks:
                chapter.error(line, f"undefined chunk '{ref}'")
    for chunk in chapter.chunks.values():
        if chunk.file is None and chunk.name not in used:
            first = chunk.parts[0]
            chapter.problems.append(Problem(chapter.path, first.fence_line,
                                            f"chunk '{chunk.name}' is never used", warning=True))


# ---------------------------------------------------------------- expanding


def _items(chapter: Chapter, name: str):
    for part in chapter.chunks[name].parts:
        yield part, None, None
        for offset, text in enumerate(part.lines):
            yield part, offset, text


def expand(chapter: Chapter, name: str, indent: str, comment: str, out: list[Line], marked: bool) -> None:
    """Append chunk ``name`` to ``out``, every line prefixed with ``indent``.

    Iterative, so that chunks nested a thousand deep expand like any others.
    Raises ExpansionError on a cycle or on more than MAX_LINES lines.
    """
    chapter_file = Path(chapter.path).name
    limit = len(out) + MAX_LINES
    # each frame: (the chunk's items, indent, marked, name, where its reference is)
    stack = [(_items(chapter, name), indent, marked, name, None)]
    pending: tuple[str, int] | None = None     # origin of the next line: it follows a seam

    def emit(line: Line) -> None:
        nonlocal pending
        if line.origin is None:
            line.origin = pending
        pending = None
        out.append(line)

    while stack:
        items, ind, mark, current, where = stack[-1]
        item = next(items, None)
        if item is None:
            stack.pop()
            if stack:
                pending = where        # back in the using chunk: a seam, blamed on the reference
            continue
        part, offset, text = item
        if offset is None:             # a part begins
            origin = where if part.index == 0 and where else (chapter.path, part.fence_line)
            if mark:
                sign = " +≡" if part.index else ""
                emit(Line(f"{ind}{comment} ⟨{current}⟩{sign} {chapter_file}:{part.fence_line}", origin=origin))
            elif part.index:
                pending = origin
            continue
        line = part.body_line + offset
        match = REFERENCE.match(text)
        if match:
            ref = normalise_name(match["name"])
            if ref not in chapter.chunks:
                raise ExpansionError(line, f"undefined chunk '{ref}'")
            if any(frame[3] == ref for frame in stack):
                raise ExpansionError(line, f"reference cycle: '{ref}' expands itself through '{current}'")
            stack.append((_items(chapter, ref), ind + match["indent"], True, ref, (chapter.path, line)))
            continue
        emit(Line(ind + text if text else "", chapter.path, line))
        if len(out) > limit:
            raise ExpansionError(chapter.chunks[name].parts[0].fence_line,
                                 f"chunk '{name}' expands to more than {MAX_LINES} lines")


# ---------------------------------------------------------------- seams: where inserted lines would change the code

RAW_PREFIXES = {"R", "u8R", "uR", "UR", "LR"}


def scan_cpp_line(text: str, raw: str | None, comment: bool) -> tuple[str | None, bool]:
    """The lexical state after one line of C++: (raw string delimiter if inside one, inside /* */)."""
    i, n = 0, len(text)
    while i < n:
        if raw is not None:
            end = text.find(")" + raw + '"', i)
            if end < 0:
                return raw, comment
            i, raw = end + len(raw) + 2, None
            continue
        if comment:
            end = text.find("*/", i)
            if end < 0:
                return raw, comment
            i, comment = end + 2, False
            continue
        c = text[i]
        if text.startswith("//", i):
            break
        if text.startswith("/*", i):
            i, comment = i + 2, True
            continue
        if c in "\"'":
            j = i + 1
            while j < n and text[j] != c:
                j += 2 if text[j] == "\\" else 1
            i = j + 1
            continue
        if c.isdigit() or (c == "." and i + 1 < n and text[i + 1].isdigit()):
            j = i + 1                                   # a pp-number, digit separators included
            while j < n and (text[j].isalnum() or text[j] in "._"
                             or (text[j] == "'" and j + 1 < n and text[j + 1].isalnum())
                             or (text[j] in "+-" and text[j - 1] in "eEpP")):
                j += 1
            i = j
            continue
        if c.isalpha() or c == "_":
            j = i + 1
            while j < n and (text[j].isalnum() or text[j] == "_"):
                j += 1
            word = text[i:j]
            if word in RAW_PREFIXES and j < n and text[j] == '"':
                open_ = text.find("(", j + 1)
                if open_ < 0:
                    return raw, comment                 # ill-formed; the compiler will say so
                raw, i = text[j + 1:open_], open_ + 1
                continue
            i = j
            continue
        i += 1
    return raw, comment


def check_seams(root: Root) -> list[Problem]:
    """Refuse a reference, or a chunk's end or next part, that falls inside a raw string literal or
    right after a line ending in '\\': the markers and ``#line`` lines the tangler inserts there
    would become part of the string or of the continued line (a macro, say)."""
    problems = []
    raw: str | None = None
    raw_where: tuple[str, int] | None = None
    comment = False
    splice = False
    c_like = root.lang in C_LIKE
    started = False
    for line in root.lines:
        if line.origin is not None and started and (raw is not None or splice):
            path, number = line.origin
            if raw is not None:
                opened = f" (opened at {raw_where[0]}:{raw_where[1]})" if raw_where else ""
                why = f"inside a raw string literal{opened}"
            else:
                why = "right after a line ending in '\\' (a macro or a continued line)"
            problems.append(Problem(path, number, f"this reference or chunk boundary falls {why}: the tangler's "
                                                  f"marker and #line lines would be inserted into it; move the "
                                                  f"reference out (file {root.path})"))
        if line.chapter is None:
            continue
        started = True
        if c_like:
            was_raw = raw
            raw, comment = scan_cpp_line(line.text, raw, comment)
            if raw is not None and was_raw is None:
                raw_where = (line.chapter, line.number)
        splice = raw is None and line.text.rstrip(" \t").endswith("\\")
    return problems


# ---------------------------------------------------------------- the roots


def banner(chapter: Chapter, comment: str) -> Line:
    return Line(f"{comment} Generated from {chapter.path} by tools/tangle.py; edit the chapter, not this file.")


def collect_roots(chapters: list[Chapter]) -> list[Root]:
    """Expand every root chunk; report files defined twice, paths that are one file on some system
    (differing only in case) and files whose path would be another file's directory."""
    roots: list[Root] = []
    owner: dict[str, tuple[str, Chapter, int]] = {}      # casefolded path -> (path, chapter, line)
    dirs: dict[str, tuple[str, Chapter, int]] = {}       # casefolded directory -> the first file under it
    for chapter in chapters:
        for chunk in chapter.chunks.values():
            if chunk.file is None:
                continue
            path = chunk.file
            folded = path.casefold()
            first = chunk.parts[0]
            where = (path, chapter, first.fence_line)
            if folded in owner:
                other, other_chapter, line = owner[folded]
                if other == path:
                    chapter.error(first.fence_line, f"file '{path}' is already written by {other_chapter.path}:{line}")
                else:
                    chapter.error(first.fence_line, f"file '{path}' differs only in case from '{other}' written "
                                                    f"by {other_chapter.path}:{line} (one file on macOS and Windows)")
                continue
            if folded in dirs:
                other, other_chapter, line = dirs[folded]
                chapter.error(first.fence_line, f"file '{path}' is a directory of '{other}' written by "
                                                f"{other_chapter.path}:{line}")
                continue
            parents = ["/".join(folded.split("/")[:k]) for k in range(1, folded.count("/") + 1)]
            clash = next((p for p in parents if p in owner), None)
            if clash is not None:
                other, other_chapter, line = owner[clash]
                chapter.error(first.fence_line, f"file '{path}' would be inside '{other}', a file written by "
                                                f"{other_chapter.path}:{line}")
                continue
            owner[folded] = where
            for p in parents:
                dirs.setdefault(p, where)
            comment = COMMENT.get(chunk.lang, "//")
            lines = [banner(chapter, comment)]
            try:
                expand(chapter, chunk.name, "", comment, lines, marked=False)
            except ExpansionError as error:
                chapter.error(error.line, str(error))
                continue
            root = Root(path, chapter, chunk.lang, lines, first.fence_line)
            for problem in check_seams(root):
                chapter.problems.append(problem)
            roots.append(root)
    return roots


def clean_text(root: Root) -> str:
    return "\n".join(line.text for line in root.lines) + "\n"


def twin_text(root: Root) -> str:
    """The compiler's copy: no markers, ``#line`` wherever the source jumps."""
    if root.lang not in C_LIKE:
        return clean_text(root)
    out = []
    expected: tuple[str | None, int | None] = (None, None)
    for line in root.lines:
        if line.chapter is None:
            if line is root.lines[0]:
                out.append(line.text)
            continue
        if (line.chapter, line.number) != expected:
            out.append(f'#line {line.number} "{line.chapter}"')
        out.append(line.text)
        expected = (line.chapter, line.number + 1)
    return "\n".join(out) + "\n"


MARKER_LINE = re.compile(r":\d+$")


def key_text(root: Root) -> str:
    """The clean copy without its chapter line numbers: it changes only when the code does.

    Both copies differ from it only in line numbers (the markers' and the ``#line``s'), so
    a compile or a Doxygen run that depends on the key is repeated only when the code
    changes; a binary built before a prose edit keeps the old line numbers in its debug
    information until its code next changes."""
    return "\n".join(MARKER_LINE.sub("", line.text) if line.chapter is None else line.text
                     for line in root.lines) + "\n"
