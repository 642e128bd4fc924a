"""Tests of the book model (tools/book_model.py): the one entry through which the tangler
and the weave read, check and expand the chapters."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools"))
import book_model  # noqa: E402
import tangle  # noqa: E402
from book_model import read_book  # noqa: E402

LIBRARY = """\
# 01. Scores

The first chapter computes scores. It has a second sentence.

```{chunk} attn/scores.hpp
:file: include/attn/scores.hpp
#pragma once
<<Compute the scores>>
```

```{chunk} Compute the scores
inline int score(int q, int k) { return q * k; }
```

```{chunk} programs/ch01_scores.cpp
:file: programs/ch01_scores.cpp
#include "attn/scores.hpp"
int main()
{
    <<Draw the scores>>
    <<Draw every head>>
}
```

```{chunk} Draw the scores
plot(out / "scores.svg");
```

```{chunk} Draw every head
for (int h = 0; h < 2; ++h)
    plot(out / ("head" + std::to_string(h) + ".svg"));
```

Appended later:

```{chunk} Compute the scores
inline int twice(int x) { return 2 * x; }
```
"""

SECOND = """\
---
summary: The second chapter, in one line.
---
# 02. Broken

```{chunk} programs/ch02_broken.cpp
:file: programs/ch02_broken.cpp
<<Nowhere>>
```
"""


@pytest.fixture
def book(tmp_path: Path) -> book_model.Book:
    (tmp_path / "chapters").mkdir()
    (tmp_path / "chapters" / "01-scores.md").write_text(LIBRARY, encoding="utf-8")
    (tmp_path / "chapters" / "02-broken.md").write_text(SECOND, encoding="utf-8")
    return read_book(book_model.chapter_paths(tmp_path), base=tmp_path)


def test_chapters_have_their_names_titles_and_summaries(book):
    first, second = book.chapters
    assert (first.path, first.number, first.short, first.program, first.docname) == (
        "chapters/01-scores.md", "01", "ch01", "ch01_scores", "chapters/01-scores")
    assert first.title == "01. Scores"
    assert first.summary == "The first chapter computes scores."
    assert second.summary == "The second chapter, in one line."
    assert book.chapter("ch02") is second and book.chapter("02") is second
    assert book.chapter("chapters/02-broken") is second and book.chapter("ch99") is None


def test_problems_are_named_by_chapter_and_line_and_stop_that_chapter_only(book):
    assert [str(p) for p in book.errors] == ["chapters/02-broken.md:8: undefined chunk 'Nowhere'"]
    assert book.has_errors(book.chapter("ch02")) and not book.has_errors(book.chapter("ch01"))
    assert sorted(book.files) == ["include/attn/scores.hpp", "programs/ch01_scores.cpp"]


def test_files_know_their_chapter_root_and_chunks(book):
    program = book.files["programs/ch01_scores.cpp"]
    assert program.chapter is book.chapter("ch01") and program.root == "programs/ch01_scores.cpp"
    assert program.chunks == ["programs/ch01_scores.cpp", "Draw the scores", "Draw every head"]
    assert program.docname == "files/programs/ch01_scores.cpp"
    header = book.files["include/attn/scores.hpp"]
    assert header.text.splitlines()[1:] == ["#pragma once", "// ⟨Compute the scores⟩ 01-scores.md:11",
                                            "inline int score(int q, int k) { return q * k; }",
                                            "// ⟨Compute the scores⟩ +≡ 01-scores.md:36",
                                            "inline int twice(int x) { return 2 * x; }"]
    assert book.files_using(book.chapter("ch01"), "Compute the scores") == [header]


def test_a_tangled_line_leads_back_to_its_part(book):
    part = book.part_of_line("include/attn/scores.hpp", 6)
    assert (part.name, part.index) == ("Compute the scores", 1)
    marker = book.part_of_line("include/attn/scores.hpp", 3)      # a marker: the code after it
    assert (marker.name, marker.index) == ("Compute the scores", 0)
    assert book.part_of_line("include/nothing.hpp", 1) is None


def test_a_figure_leads_to_the_part_that_names_its_file(book):
    chapter = book.chapter("ch01")
    found = book.figure_source(chapter, "scores.svg")
    assert found.exact and found.part.name == "Draw the scores"
    numbered = book.figure_source(chapter, "head1.svg")   # the name is built around a number
    assert numbered.exact and numbered.part.name == "Draw every head"


@pytest.mark.parametrize("code, filename", [
    ('plot(out / ("error_" + kind + ".svg"));', "error_random.svg"),        # a first piece
    ('plot(out / (key + "_accuracy.svg"));', "copy_accuracy.svg"),         # a last piece
    ('plot_heads(out, "attentions");', "attentions_layer0_head1.svg"),      # a stem another function extends
])
def test_a_figure_whose_name_is_built_leads_to_the_part_that_builds_it(code, filename):
    text = LIBRARY.replace('plot(out / "scores.svg");', code)
    book = read_book(["01-scores.md"], texts={"01-scores.md": text})
    found = book.figure_source(book.chapters[0], filename)
    assert found.exact and found.part.name == "Draw the scores"


def test_a_figure_no_part_names_leads_to_the_program(book):
    found = book.figure_source(book.chapter("ch01"), "missing.svg")
    assert not found.exact and found.part.name == "programs/ch01_scores.cpp" and found.candidates == []


def test_a_figure_several_parts_name_leads_to_the_program(tmp_path):
    text = LIBRARY.replace('"head" + std::to_string(h) + ".svg"', '"scores.svg"')
    book = read_book(["01-scores.md"], texts={"01-scores.md": text})
    found = book.figure_source(book.chapters[0], "scores.svg")
    assert not found.exact and len(found.candidates) == 2


def test_a_chunk_expands_as_the_tangler_expands_it(book):
    model = book.chapter("ch01").model
    lines = book_model.expand_chunk(model, "programs/ch01_scores.cpp")
    assert [line.text for line in lines][3:7] == ["    // ⟨Draw the scores⟩ 01-scores.md:25",
                                                  '    plot(out / "scores.svg");',
                                                  "    // ⟨Draw every head⟩ 01-scores.md:29",
                                                  "    for (int h = 0; h < 2; ++h)"]
    assert book_model.expand_chunk(book.chapter("ch02").model, "programs/ch02_broken.cpp") is None


def test_text_given_for_a_path_is_read_instead_of_the_file():
    book = read_book(["chapters/99-example.md"], texts={"chapters/99-example.md": LIBRARY})
    assert book.chapters[0].path == "chapters/99-example.md" and len(book.roots) == 2


def test_a_missing_chapter_is_a_problem_not_a_crash(tmp_path):
    book = read_book([tmp_path / "01-none.md"])
    assert [p.message for p in book.errors] == ["cannot read chapter: No such file or directory"]


def test_deep_nesting_lists_every_chunk_in_order():
    text = "```{chunk} a.hpp\n:file: a.hpp\n<<C0>>\n```\n"
    text += "".join(f"\n```{{chunk}} C{i}\n<<C{i + 1}>>\n```\n" for i in range(2000)) + "\n```{chunk} C2000\nx\n```\n"
    book = read_book(["01-deep.md"], texts={"01-deep.md": text})
    assert book.files["a.hpp"].chunks == ["a.hpp"] + [f"C{i}" for i in range(2001)]


def test_the_tangler_and_the_weave_see_the_same_book(monkeypatch):
    monkeypatch.chdir(ROOT)    # the tangler names chapters as make gives them; the weave, relative to ROOT
    roots, problems = tangle.tangle([str(p.relative_to(ROOT)) for p in book_model.chapter_paths(ROOT)])
    book = read_book(book_model.chapter_paths(ROOT), base=ROOT)
    assert [r.path for r in roots] == [r.path for r in book.roots]
    assert {r.path: tangle.clean_text(r) for r in roots} == {p: f.text for p, f in book.files.items()}
    assert not [p for p in problems if not p.warning] and not book.errors
