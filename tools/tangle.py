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
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from book_model import Root, clean_text, key_text, read_book, twin_text  # noqa: E402,F401 (tests use them)
from chunks import TEMP_PREFIX, Problem  # noqa: E402

WRITTEN = False        # set once the write phase has finished


def _interrupted(signum, frame) -> None:
    """Ctrl-C outside the write phase: say so, without a traceback (the write phase defers it)."""
    done = "every file was written" if WRITTEN else "nothing written"
    print(f"tangle: interrupted; {done}", file=sys.stderr)
    raise SystemExit(130)


def tangle(paths: list[str]) -> tuple[list[Root], list[Problem]]:
    """Every root of the chapters at ``paths`` expanded, and every problem found (sorted)."""
    book = read_book(paths)
    return book.roots, book.problems


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
    status = main()
    # The outcome is decided and reported. While the interpreter shuts down, Python gives
    # SIGINT back its default action, so a late Ctrl-C would kill the tangler after a
    # complete run: from here on it changes nothing, and is ignored.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sys.exit(status)
