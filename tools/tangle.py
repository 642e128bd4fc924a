#!/usr/bin/python3
"""Tangle the book's chapters into C++ sources.

    tools/tangle.py [--check] [--force] [--tangled DIR] [--twin DIR] [--state DIR] chapters/*.md

Writes two copies of every root chunk:

* ``tangled/PATH``: the clean copy that is committed and read, each expansion
  marked by a comment naming the chunk and its chapter line;
* ``build/tangled/PATH``: the compiler's twin, with ``#line`` directives so
  that errors point at the chapter's own lines;

and, under ``build/tangle/`` (the state), what make needs to rebuild only what
changed: ``keys/PATH``, the clean copy without line numbers (rewritten only
when the code itself changes: compiles and Doxygen depend on it, so a prose
edit that moves code down a chapter recompiles nothing); ``roots.list``, the
tangled paths; ``manifest.json``, a hash of every file written to tangled/ (so a
file edited by hand is refused, never silently overwritten: ``--force``
discards the edit); and ``outputs.mk``, every file written, which the Makefile
includes so that a missing or hand-edited output makes the tangler run again.

Everything is validated first, chapters and the file system both; on any
error nothing is written. Then only files whose content changed are written,
and files that no chunk makes any more are removed, as one transaction: an
error while writing (or Ctrl-C) undoes what was done. ``--check`` writes
nothing and names every stale file in tangled/.
"""

from __future__ import annotations

import _signal  # the C module: the handler below must not wait for the imports of 'signal'
import sys


def _interrupted_starting(signum, frame) -> None:
    print("tangle: interrupted; nothing written", file=sys.stderr)
    raise SystemExit(130)


if __name__ == "__main__":   # Ctrl-C while starting up: a message, not a traceback (replaced below)
    _signal.signal(_signal.SIGINT, _interrupted_starting)

import argparse  # noqa: E402
import signal  # noqa: E402
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from chunks import (COMMENT, REFERENCE, TEMP_PREFIX, Chapter, Problem, normalise_name,  # noqa: E402
                    read_chapter)

C_LIKE = {"cpp", "c"}
WRITTEN = False        # set once the write phase has finished


def _interrupted(signum, frame) -> None:
    """Ctrl-C outside the write phase: say so, without a traceback (the write phase defers it)."""
    done = "every file was written" if WRITTEN else "nothing written"
    print(f"tangle: interrupted; {done}", file=sys.stderr)
    raise SystemExit(130)

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


def tangle(paths: list[str]) -> tuple[list[Root], list[Problem]]:
    chapters = []
    problems: list[Problem] = []
    for path in paths:
        try:
            chapters.append(read_chapter(path))
        except OSError as error:
            problems.append(Problem(path, 1, f"cannot read chapter: {error.strerror or error}"))
    for chapter in chapters:
        check_references(chapter)
        find_cycles(chapter)
    roots = collect_roots([c for c in chapters if not any(not p.warning for p in c.problems)])
    for chapter in chapters:
        problems.extend(chapter.problems)
    unique = list(dict.fromkeys(problems))
    return roots, sorted(unique, key=lambda p: (p.path, p.line, p.message))


# ---------------------------------------------------------------- the file system


def scan(directory: Path) -> dict[str, str]:
    """Every entry below ``directory`` (symbolic links not followed): path -> file, dir, link or other."""
    entries: dict[str, str] = {}
    if not directory.is_dir():
        return entries
    stack = [""]
    while stack:
        rel = stack.pop()
        with os.scandir(directory / rel if rel else directory) as it:
            for entry in it:
                path = f"{rel}/{entry.name}" if rel else entry.name
                if entry.is_symlink():
                    entries[path] = "link"
                elif entry.is_dir(follow_symlinks=False):
                    entries[path] = "dir"
                    stack.append(path)
                elif entry.is_file(follow_symlinks=False):
                    entries[path] = "file"
                else:
                    entries[path] = "other"
    return entries


def existing_files(directory: Path) -> set[str]:
    return {path for path, kind in scan(directory).items() if kind != "dir"}


def _same(target: Path, text: str) -> bool:
    try:
        return target.read_bytes() == text.encode("utf-8")
    except OSError:
        return False


def stale_files(directory: Path, wanted: dict[str, str]) -> list[tuple[str, str]]:
    """(file, why) for every file of ``directory`` that differs from ``wanted``."""
    entries = scan(directory)
    stale = []
    for path, text in sorted(wanted.items()):
        kind = entries.get(path)
        if kind is None:
            stale.append((path, "missing"))
        elif kind != "file":
            stale.append((path, {"dir": "is a directory", "link": "is a symbolic link"}.get(kind, "not a file")))
        elif not _same(directory / path, text):
            stale.append((path, "differs from its chapter"))
    for path in sorted(p for p, kind in entries.items() if kind != "dir" and p not in wanted):
        stale.append((path, "made by no chunk"))
    return stale


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class Tree:
    """One folder the tangler owns and what it must hold."""

    root: Path
    wanted: dict[str, str]
    owners: dict[str, tuple[str, int]]          # path -> (chapter, line) to name in messages
    manifest: dict[str, dict] | None = None     # for tangled/: what the tangler last wrote there


@dataclass
class Plan:
    removals: list[Path]
    directories: list[Path]      # to remove when they end up empty, deepest first
    writes: list[tuple[Path, str, tuple[str, int]]]


def plan_tree(tree: Tree, force: bool, problems: list[Problem]) -> Plan:
    """What to remove and write in one tree, refusing what must not be touched."""
    root = tree.root
    plan = Plan([], [], [])
    if (root.exists() or root.is_symlink()) and not root.is_dir():
        problems.append(Problem("tangle", 0, f"{root} is not a directory; the tangler writes its files there"))
        return plan
    entries = scan(root)

    def refuse(path: str, message: str) -> None:
        chapter, line = tree.owners.get(path, ("tangle", 0))
        problems.append(Problem(chapter, line, message))

    def edited_by_hand(path: str) -> bool:
        if tree.manifest is None or force or path not in tree.manifest:
            return False
        try:
            changed = sha256((root / path).read_bytes()) != tree.manifest[path].get("sha256")
        except OSError:
            return False
        return changed and not as_committed(root / path)

    for path, text in sorted(tree.wanted.items()):
        parts = path.split("/")
        for k in range(1, len(parts) + 1):
            sub = "/".join(parts[:k])
            kind = entries.get(sub)
            if kind in ("link", "other"):
                what = "a symbolic link" if kind == "link" else "not a regular file or directory"
                refuse(path, f"{root / sub} is {what}; the tangler writes only real files inside {root} "
                             f"(remove it, then tangle again)")
                break
        else:
            if entries.get(path) == "file" and _same(root / path, text):
                continue
            if entries.get(path) == "file" and edited_by_hand(path):
                chapter, _ = tree.owners.get(path, ("its chapter", 0))
                refuse(path, f"{root / path} was edited by hand since the tangler wrote it: move the edit into "
                             f"its chunk in {chapter} (each '⟨Name⟩ file:line' comment in the file names the "
                             f"chunk and its line), or discard it with 'make tangle FORCE=1'")
                continue
            plan.writes.append((root / path, text, tree.owners.get(path, ("tangle", 0))))
    for path, kind in sorted(entries.items()):
        if kind == "dir" or path in tree.wanted:
            continue
        if kind == "file" and edited_by_hand(path):
            record = tree.manifest[path]
            problems.append(Problem(record.get("chapter", "tangle"), record.get("line", 0),
                                    f"{root / path} is made by no chunk any more, but was edited by hand since "
                                    f"the tangler wrote it: move the edit into a chapter, or discard it with "
                                    f"'make tangle FORCE=1'"))
            continue
        plan.removals.append(root / path)
    plan.directories = [root / p for p, kind in sorted(entries.items(), key=lambda e: -e[0].count("/"))
                        if kind == "dir"]
    return plan


class Transaction:
    """File system changes that can all be undone: on any exception, everything done is undone."""

    def __init__(self) -> None:
        self.undo: list = []
        self.trash: dict[Path, Path] = {}
        self.count = 0

    def makedirs(self, directory: Path) -> None:
        missing = []
        while not directory.is_dir():
            missing.append(directory)
            directory = directory.parent
        for d in reversed(missing):
            d.mkdir()
            self.undo.append(lambda d=d: d.rmdir())

    def _trash(self, root: Path, target: Path) -> None:
        """Move ``target`` aside (into a folder of the tree's own), so that it can be put back."""
        if root not in self.trash:
            self.makedirs(root)
            self.trash[root] = Path(tempfile.mkdtemp(prefix=TEMP_PREFIX + "trash-", dir=root))
            self.undo.append(lambda t=self.trash[root]: shutil.rmtree(t, ignore_errors=True))
        self.count += 1
        aside = self.trash[root] / str(self.count)
        os.rename(target, aside)
        self.undo.append(lambda: os.rename(aside, target))

    def remove(self, root: Path, target: Path) -> None:
        self._trash(root, target)

    def remove_if_empty(self, directory: Path) -> None:
        if directory.is_dir() and not directory.is_symlink() and not any(directory.iterdir()):
            directory.rmdir()
            self.undo.append(lambda: directory.mkdir())

    def write(self, root: Path, target: Path, text: str) -> None:
        self.makedirs(target.parent)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=TEMP_PREFIX)
        self.undo.append(lambda: os.path.lexists(tmp) and os.unlink(tmp))
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(tmp, 0o644)
        if os.path.lexists(target):
            if target.is_dir() and not target.is_symlink():
                self.remove_if_empty(target)
            else:
                self._trash(root, target)
        os.rename(tmp, target)
        self.undo.append(lambda: os.unlink(target))

    def rollback(self) -> None:
        for step in reversed(self.undo):
            try:
                step()
            except OSError:
                pass
        self.undo.clear()

    def commit(self) -> None:
        for folder in self.trash.values():
            shutil.rmtree(folder, ignore_errors=True)
        self.undo.clear()


class WriteError(Exception):
    def __init__(self, problem: Problem):
        super().__init__(str(problem))
        self.problem = problem


def apply(trees: list[Tree], plans: list[Plan]) -> list[str]:
    """Carry out every plan, or (on any error, Ctrl-C included) none of them. Returns what changed.

    SIGINT, SIGTERM and SIGHUP wait until the files are consistent (every change made);
    the tangler then exits as interrupted."""
    caught: list[int] = []
    old = {sig: signal.signal(sig, lambda number, frame: caught.append(number))
           for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    transaction = Transaction()
    changed: list[str] = []
    current: tuple[str, int] = ("tangle", 0)
    target: Path | None = None
    try:
        for tree, plan in zip(trees, plans):
            for target in plan.removals:
                current = ("tangle", 0)
                transaction.remove(tree.root, target)
                changed.append(f"removed {target}")
            for directory in plan.directories:
                transaction.remove_if_empty(directory)
            for target, text, current in plan.writes:
                transaction.write(tree.root, target, text)
                changed.append(f"wrote {target}")
        transaction.commit()
    except OSError as error:
        transaction.rollback()
        chapter, line = current
        raise WriteError(Problem(chapter, line, f"cannot write {target}: {error.strerror or error}")) from None
    except BaseException:
        transaction.rollback()
        raise
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
    global WRITTEN
    WRITTEN = True
    if caught:
        raise Interrupted()
    return changed


class Interrupted(Exception):
    """A signal arrived while the tangler was writing; it finished writing first."""


def outputs_makefile(paths: list[str], chapters: list[str]) -> str:
    lines = ["# Written by tools/tangle.py: the chapters it read and every file it wrote. The Makefile",
             "# includes this file, and remakes it (by tangling) when a chapter changed or an output",
             "# is missing or newer.",
             f"TANGLE_CHAPTERS := {' '.join(chapters)}",
             "TANGLE_OUTPUTS := \\"]
    lines += [f"  {p} \\" for p in sorted(paths)]
    return "\n".join(lines) + "\n\n"


def as_committed(path: Path) -> bool:
    """Whether `path` holds what git's HEAD holds: a checkout, pull or merge wrote it,
    not a hand (so a pull that brings new tangled files is not refused)."""
    repository = Path(__file__).resolve().parents[1]
    try:
        relative = path.resolve().relative_to(repository).as_posix()
        shown = subprocess.run(["git", "-C", str(repository), "show", f"HEAD:{relative}"],
                               capture_output=True, timeout=30)
        return shown.returncode == 0 and shown.stdout == path.read_bytes()
    except (ValueError, OSError, subprocess.SubprocessError):
        return False


def read_manifest(path: Path) -> dict[str, dict] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Tangle chapters into C++ sources.")
    parser.add_argument("chapters", nargs="+", help="chapter Markdown files")
    parser.add_argument("--tangled", default="tangled", help="where the clean copy goes (default: tangled)")
    parser.add_argument("--twin", default="build/tangled", help="where the #line copy goes (default: build/tangled)")
    parser.add_argument("--state", default="build/tangle",
                        help="keys, manifest and the makefile of outputs (default: build/tangle)")
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if tangled/ is stale")
    parser.add_argument("--force", action="store_true", help="overwrite files of tangled/ edited by hand")
    parser.add_argument("--quiet", action="store_true", help="say nothing when all is well")
    args = parser.parse_args(argv)
    try:
        return run(args)
    except KeyboardInterrupt:
        print("tangle: interrupted; nothing written", file=sys.stderr)
        return 130
    except Interrupted:
        print("tangle: interrupted; every file was written first, none is half-written", file=sys.stderr)
        return 130


def report(problems: list[Problem]) -> None:
    for problem in problems:
        print(problem if problem.line else f"{problem.path}: {problem.message}", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    roots, problems = tangle(args.chapters)
    report(problems)
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
            print(f"check-tangle: {len(stale)} stale file(s); run 'make tangle' (a file edited by hand is "
                  "refused: move the edit into its chapter, or discard it with 'make tangle FORCE=1')",
                  file=sys.stderr)
            return 1
        if not args.quiet:
            print(f"check-tangle: {len(clean)} files in sync with their chapters")
        return 0

    owners = {root.path: (root.chapter.path, root.line) for root in roots}
    twin, state = Path(args.twin), Path(args.state)
    manifest = {root.path: {"sha256": sha256(clean[root.path].encode("utf-8")),
                            "chapter": root.chapter.path, "line": root.line} for root in roots}
    state_files = {f"keys/{root.path}": key_text(root) for root in roots}
    state_files["roots.list"] = "".join(f"{path}\n" for path in sorted(clean))
    state_files["manifest.json"] = json.dumps(manifest, indent=1, sort_keys=True) + "\n"
    outputs = [str(d / p) for d in (tangled, twin) for p in clean] + [str(state / p) for p in state_files]
    state_files["outputs.mk"] = outputs_makefile(outputs, args.chapters)
    state_owners = {f"keys/{p}": o for p, o in owners.items()}
    trees = [Tree(tangled, clean, owners, read_manifest(state / "manifest.json") or {}),
             Tree(twin, {root.path: twin_text(root) for root in roots}, owners),
             Tree(state, state_files, state_owners)]
    problems = []
    plans = [plan_tree(tree, args.force, problems) for tree in trees]
    if problems:
        report(problems)
        print(f"tangle: {len(problems)} error(s); nothing written", file=sys.stderr)
        return 1
    try:
        changed = apply(trees, plans)
    except WriteError as error:
        report([error.problem])
        print("tangle: 1 error(s); nothing written", file=sys.stderr)
        return 1
    if not args.quiet:
        for line in changed:
            if not line.endswith(tuple(str(state / p) for p in ("manifest.json", "outputs.mk", "roots.list"))):
                print(f"tangle: {line}")
        print(f"tangle: {len(clean)} files from {len(args.chapters)} chapter(s), {len(changed)} written or removed")
    return 0


if __name__ == "__main__":
    signal.signal(signal.SIGINT, _interrupted)
    sys.exit(main())
