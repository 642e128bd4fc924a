#!/usr/bin/python3
"""Tangle the book's chapters into C++ sources.

    tools/tangle.py [--check] [--tangled DIR] [--twin DIR] chapters/*.md

Writes two copies of every root chunk:

* ``tangled/PATH``: the clean copy that is committed and read, each expansion
  marked by a comment naming the chunk and its chapter line;
* ``build/tangled/PATH``: the compiler's twin, with ``#line`` directives so
  that errors point at the chapter's own lines.

Everything is validated first; on any error nothing is written. Only files
whose content changed are written, and files that no chunk makes any more
are removed. ``--check`` writes nothing and names every stale file.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from chunks import COMMENT, REFERENCE, Chapter, Problem, read_chapter  # noqa: E402

C_LIKE = {"cpp", "c"}


@dataclass
class Line:
    """One output line and where it comes from (None for generated lines)."""

    text: str
    chapter: str | None = None
    number: int | None = None


@dataclass
class Root:
    path: str          # relative to tangled/
    chapter: Chapter
    lang: str
    lines: list[Line]


def find_cycles(chapter: Chapter) -> None:
    """Report every reference that closes a cycle of chunks."""
    state: dict[str, str] = {}

    def visit(name: str) -> None:
        state[name] = "open"
        for part in chapter.chunks[name].parts:
            for line, ref in part.references:
                if ref not in chapter.chunks:
                    continue
                if state.get(ref) == "open":
                    chapter.error(line, f"reference cycle: '{ref}' expands itself through '{name}'")
                elif ref not in state:
                    visit(ref)
        state[name] = "done"

    for name in chapter.chunks:
        if name not in state:
            visit(name)


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


def expand(chapter: Chapter, name: str, indent: str, comment: str, out: list[Line], marked: bool) -> None:
    """Append chunk ``name`` to ``out``, every line prefixed with ``indent``."""
    chapter_file = Path(chapter.path).name
    for part in chapter.chunks[name].parts:
        if marked:
            sign = " +≡" if part.index else ""
            out.append(Line(f"{indent}{comment} ⟨{name}⟩{sign} {chapter_file}:{part.fence_line}"))
        for offset, text in enumerate(part.lines):
            match = REFERENCE.match(text)
            if match:
                expand(chapter, match["name"].strip(), indent + match["indent"], comment, out, True)
            else:
                out.append(Line(indent + text if text else "", chapter.path, part.body_line + offset))


def banner(chapter: Chapter, comment: str) -> Line:
    return Line(f"{comment} Generated from {chapter.path} by tools/tangle.py; edit the chapter, not this file.")


def collect_roots(chapters: list[Chapter]) -> list[Root]:
    """Expand every root chunk; report files defined by more than one chunk."""
    roots: list[Root] = []
    owner: dict[str, tuple[Chapter, int]] = {}
    for chapter in chapters:
        for chunk in chapter.chunks.values():
            if chunk.file is None:
                continue
            first = chunk.parts[0]
            if chunk.file in owner:
                other, line = owner[chunk.file]
                chapter.error(first.fence_line, f"file '{chunk.file}' is already written by {other.path}:{line}")
                continue
            owner[chunk.file] = (chapter, first.fence_line)
            comment = COMMENT.get(chunk.lang, "//")
            lines = [banner(chapter, comment)]
            expand(chapter, chunk.name, "", comment, lines, marked=False)
            roots.append(Root(chunk.file, chapter, chunk.lang, lines))
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


def existing_files(directory: Path) -> set[str]:
    if not directory.is_dir():
        return set()
    return {p.relative_to(directory).as_posix() for p in directory.rglob("*") if p.is_file()}


def stale_files(directory: Path, wanted: dict[str, str]) -> list[tuple[str, str]]:
    """(file, why) for every file of ``directory`` that differs from ``wanted``."""
    stale = []
    for path, text in sorted(wanted.items()):
        target = directory / path
        if not target.is_file():
            stale.append((path, "missing"))
        elif target.read_text(encoding="utf-8") != text:
            stale.append((path, "differs from its chapter"))
    for path in sorted(existing_files(directory) - set(wanted)):
        stale.append((path, "made by no chunk"))
    return stale


def write_atomically(target: Path, text: str) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tangle-")
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, target)


def sync(directory: Path, wanted: dict[str, str]) -> list[str]:
    """Make ``directory`` hold exactly ``wanted``; return what changed."""
    changed = []
    for path, why in stale_files(directory, wanted):
        target = directory / path
        if path in wanted:
            write_atomically(target, wanted[path])
            changed.append(f"wrote {directory / path}")
        else:
            target.unlink()
            changed.append(f"removed {directory / path}")
    if directory.is_dir():
        for sub in sorted((p for p in directory.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
            if not any(sub.iterdir()):
                sub.rmdir()
    return changed


def tangle(paths: list[str]) -> tuple[list[Root], list[Problem]]:
    chapters = []
    problems: list[Problem] = []
    for path in paths:
        try:
            chapters.append(read_chapter(path))
        except (OSError, UnicodeDecodeError) as error:
            problems.append(Problem(path, 1, f"cannot read chapter: {error}"))
    for chapter in chapters:
        check_references(chapter)
        find_cycles(chapter)
    roots = collect_roots([c for c in chapters if not any(not p.warning for p in c.problems)])
    for chapter in chapters:
        problems.extend(chapter.problems)
    unique = list(dict.fromkeys(problems))
    return roots, sorted(unique, key=lambda p: (p.path, p.line, p.message))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Tangle chapters into C++ sources.")
    parser.add_argument("chapters", nargs="+", help="chapter Markdown files")
    parser.add_argument("--tangled", default="tangled", help="where the clean copy goes (default: tangled)")
    parser.add_argument("--twin", default="build/tangled", help="where the #line copy goes (default: build/tangled)")
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if tangled/ is stale")
    parser.add_argument("--quiet", action="store_true", help="say nothing when all is well")
    args = parser.parse_args(argv)

    roots, problems = tangle(args.chapters)
    for problem in problems:
        print(problem, file=sys.stderr)
    errors = [p for p in problems if not p.warning]
    if errors:
        print(f"tangle: {len(errors)} error(s); nothing written", file=sys.stderr)
        return 1

    clean = {root.path: clean_text(root) for root in roots}
    tangled = Path(args.tangled)
    if args.check:
        stale = stale_files(tangled, clean)
        for path, why in stale:
            print(f"stale: {tangled / path}: {why}", file=sys.stderr)
        if stale:
            print(f"check-tangle: {len(stale)} stale file(s); run 'make tangle'", file=sys.stderr)
            return 1
        if not args.quiet:
            print(f"check-tangle: {len(clean)} files in sync with their chapters")
        return 0

    changed = sync(tangled, clean)
    changed += sync(Path(args.twin), {root.path: twin_text(root) for root in roots})
    if not args.quiet:
        for line in changed:
            print(f"tangle: {line}")
        print(f"tangle: {len(clean)} files from {len(args.chapters)} chapter(s), {len(changed)} written or removed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
