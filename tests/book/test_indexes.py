"""The book's chunk and file indexes list exactly what the tangler knows.

Reads the built pages (build/book/html) and compares them with the tangler's
own model (tools/tangle.py), computed here independently of the weave.
"""

from __future__ import annotations

import functools
import os
import urllib.parse
from html.parser import HTMLParser
from pathlib import Path

import pytest

import chunks
import tangle

ROOT = Path(__file__).resolve().parents[2]
HTML = ROOT / "build" / "book" / "html"
CHAPTERS = sorted((ROOT / "chapters").glob("[0-9][0-9]-*.md"))

pytestmark = pytest.mark.skipif(not (HTML / "chunks.html").is_file(),
                                reason="the book is not built (make book)")


class Page(HTMLParser):
    """The table rows of a page (each cell: its text and its links' hrefs and texts) and every id on it."""

    def __init__(self, path: Path):
        super().__init__()
        self.rows: list[list[tuple[str, list[str]]]] = []
        self.link_texts: dict[int, list[str]] = {}
        self._link: list | None = None
        self.ids: set[str] = set()
        self._cell: list | None = None
        self._row: list | None = None
        self.feed(path.read_text(encoding="utf-8"))

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if "id" in attrs:
            self.ids.add(attrs["id"])
        if tag == "tr":
            self._row = []
        elif tag in ("td", "th") and self._row is not None:
            self._cell = ["", []]
        elif tag == "a" and self._cell is not None and "href" in attrs:
            self._cell[1].append(attrs["href"])
            self._link = [""]
            self._cell.append(self._link)

    def handle_endtag(self, tag):
        if tag == "a":
            self._link = None
        if tag in ("td", "th") and self._cell is not None:
            texts = [" ".join(link[0].split()) for link in self._cell[2:]]
            self._row.append((" ".join(self._cell[0].split()), self._cell[1], texts))
            self._cell = None
        elif tag == "tr" and self._row is not None:
            self.rows.append(self._row)
            self._row = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell[0] += data
        if self._link is not None:
            self._link[0] += data


@functools.lru_cache(maxsize=None)
def tangler_model():
    """(chapters by path, roots) exactly as tools/tangle.py computes them."""
    paths = [p.relative_to(ROOT).as_posix() for p in CHAPTERS]
    models = {p: chunks.read_chapter(ROOT / p, display=p) for p in paths}
    here = os.getcwd()
    os.chdir(ROOT)  # the tangler names chapters by the paths it is given, as 'make tangle' gives them
    try:
        roots, problems = tangle.tangle(paths)
    finally:
        os.chdir(here)
    assert not [p for p in problems if not p.warning], problems
    return models, roots


def part_containing(model: chunks.Chapter, line: int) -> chunks.Part:
    for part in model.parts:
        if part.body_line <= line < part.body_line + len(part.lines):
            return part
    raise AssertionError(f"line {line} of {model.path} is in no chunk")


def chunk_of_href(href: str) -> tuple[str, str]:
    """("chapters/01-self-attention", "chunk-slug") of a link in the index."""
    parsed = urllib.parse.urlparse(href)
    return parsed.path.removesuffix(".html"), parsed.fragment


def test_the_chunk_index_lists_every_chunk_of_every_chapter_and_nothing_else():
    models, _ = tangler_model()
    page = Page(HTML / "chunks.html")
    listed = set()
    for row in page.rows[1:]:
        if row[0][0] == "chunk":
            continue
        name_text, hrefs, _ = row[0]
        assert name_text.startswith("⟨") and name_text.endswith("⟩"), row
        listed.add((chunk_of_href(hrefs[0])[0], name_text[1:-1]))
    expected = {("chapters/" + Path(path).stem, name) for path, model in models.items() for name in model.chunks}
    assert listed == expected


def test_the_chunk_index_says_where_each_part_is_defined_and_where_it_is_used():
    models, roots = tangler_model()
    page = Page(HTML / "chunks.html")
    by_name = {}
    for row in page.rows:
        if row[0][0].startswith("⟨"):
            by_name[(chunk_of_href(row[0][1][0])[0], row[0][0][1:-1])] = row
    for path, model in models.items():
        doc = "chapters/" + Path(path).stem
        for name, chunk in model.chunks.items():
            row = by_name[(doc, name)]
            assert row[1][2] == [f"line {p.fence_line}" for p in chunk.parts]
            labels = [f"⟨{p.name}⟩" + (f" part {p.index + 1}" if p.index else "") for p in model.users(name)]
            assert row[2][2] == labels, row
            used_in = {r.path for r in roots if r.chapter.path == path and any(
                line.chapter is not None and part_containing(model, line.number).name == name for line in r.lines)}
            assert set(row[3][2]) == used_in, (name, row)


def test_the_file_index_lists_every_tangled_file_with_its_chapter_and_chunks():
    models, roots = tangler_model()
    page = Page(HTML / "files.html")
    rows = {row[0][0]: row for row in page.rows[1:]}
    assert set(rows) == {root.path for root in roots}
    on_disk = {p.relative_to(ROOT / "tangled").as_posix() for p in (ROOT / "tangled").rglob("*") if p.is_file()}
    assert set(rows) == on_disk
    for root in roots:
        row = rows[root.path]
        assert row[1][1][0].endswith(Path(root.chapter.path).stem + ".html")
        expanded = []
        for line in root.lines:
            if line.chapter is not None:
                name = part_containing(models[root.chapter.path], line.number).name
                if name not in expanded:
                    expanded.append(name)
        root_name = row[2][0][1:-1]
        assert models[root.chapter.path].chunks[root_name].file == root.path
        listed = [t[1:-1] for t in row[3][2]]
        assert set([root_name] + listed) == set(expanded), root.path


def test_every_part_of_every_chunk_has_its_anchor_on_its_chapter_page():
    models, _ = tangler_model()
    for path, model in models.items():
        page = Page(HTML / "chapters" / (Path(path).stem + ".html"))
        for part in model.parts:
            slug = "chunk-" + chunks.slug(part.name) + (f"-{part.index + 1}" if part.index else "")
            assert slug in page.ids, (path, part.name, part.index)


def test_every_tangled_file_has_a_page_and_every_chapter_a_download():
    _, roots = tangler_model()
    for root in roots:
        assert (HTML / "files" / (root.path + ".html")).is_file(), root.path
    for chapter in CHAPTERS:
        program = "ch" + chapter.stem.replace("-", "_")
        if any(r.chapter.path.endswith(chapter.name) for r in roots):
            assert (HTML / "downloads" / f"{program}-sources.zip").is_file()


def test_the_front_page_lists_every_chapter_and_every_chapter_says_how_to_run_it():
    index = (HTML / "index.html").read_text(encoding="utf-8")
    for chapter in CHAPTERS:
        assert f'href="chapters/{chapter.stem}.html"' in index, chapter.name
        page = (HTML / "chapters" / f"{chapter.stem}.html").read_text(encoding="utf-8")
        short = "ch" + chapter.name[:2]
        assert "Build, run and test this chapter" in page and f">run-{short}<" in page, chapter.name
