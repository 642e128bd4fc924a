"""The book as this build sees it: read once per build, shared by every page.

Also decides which pages Sphinx must read again when what one page shows of
another chapter changed.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

BOOK_DIR = Path(__file__).resolve().parents[2]     # book/
ROOT = BOOK_DIR.parent

from book_model import Book, chapter_paths, read_book  # noqa: E402 (weave/__init__ puts tools/ on the path)
from weave.doxygen import Api, read_api  # noqa: E402

DOXYGEN_XML = ROOT / "build" / "doxygen" / "xml"
TOOLS = [ROOT / "tools" / name for name in ("chunks.py", "expand.py", "book_model.py")]

_BOOK: Book | None = None
_API: Api | None = None


def load() -> Book:
    """Read every chapter (as the tangler does) and what Doxygen says of every header."""
    global _BOOK, _API
    _BOOK = read_book(chapter_paths(ROOT), base=ROOT)
    _API = read_api(_BOOK, DOXYGEN_XML)
    return _BOOK


def the_book() -> Book:
    if _BOOK is None:
        load()
    return _BOOK


def the_api() -> Api:
    if _API is None:
        load()
    return _API


def signature(book: Book, api: Api) -> str:
    """A hash of what one page may show of another chapter: the chapters' titles and
    summaries, every chunk's name and parts, every file's chunks, the API entries and
    the tangler's problems; and of the weave itself, which renders every page. Line
    numbers and code are left out: the pages that show them (the chapter itself, its
    files' pages, the indexes) name the chapter as a dependency, so Sphinx reads them
    again whenever the chapter changes."""
    digest = hashlib.sha256()
    for source in sorted(Path(__file__).parent.glob("*.py")):
        digest.update(source.read_bytes())

    def add(*items) -> None:
        digest.update(repr(items).encode("utf-8"))

    for info in book.chapters:
        add(info.path, info.title, info.summary)
        for chunk in info.model.chunks.values():
            add(chunk.name, [(p.index, p.options) for p in chunk.parts])
    for path, f in book.files.items():
        add(path, f.root, f.chunks)
    for header, entries in api.items():
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
    current = signature(the_book(), the_api())
    if getattr(env, "attn_book_signature", None) == current:
        return []
    env.attn_book_signature = current
    return sorted(env.found_docs)


def forget_vanished_doxygen_files(app, env, added, changed, removed) -> list[str]:
    """Pages that read a Doxygen XML file that no longer exists are read again.

    Breathe remembers which XML file each page read and, on the next build, asks each
    for its date; a header entity that went away (a class that became an alias, say)
    has no file any more, and Breathe stops with "Cannot find file". Run before it,
    this drops such files from its memory and returns their pages as outdated.
    """
    files = getattr(env, "breathe_file_state", {})
    gone = [name for name in files if not Path(name).exists()]
    pages = {page for name in gone for page in files.pop(name)[1]}
    return sorted(pages - set(removed))
