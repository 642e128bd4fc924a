"""The weave's reading of Doxygen's XML (book/_ext/weave/doxygen.py): each documented entry of a
header tied to the chunk part that writes it."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools"))
sys.path.insert(0, str(ROOT / "book" / "_ext"))
pytest.importorskip("sphinx")
from book_model import read_book  # noqa: E402
from weave.doxygen import api_docname, entries_of_part, namespaces, read_api  # noqa: E402

CHAPTER = """\
# 01. Scores

```{chunk} attn/scores.hpp
:file: include/attn/scores.hpp
#pragma once
namespace attn {
<<Score one pair>>
<<Keep the scores>>
}
```

```{chunk} Score one pair
/// The score of one pair.
inline int score(int q, int k) { return q * k; }
```

```{chunk} Keep the scores
/// Scores, kept.
struct Scores {
    int total = 0;   ///< their sum
};
```
"""

INDEX = """<?xml version='1.0'?><doxygenindex>
<compound refid="namespaceattn" kind="namespace"><name>attn</name></compound>
<compound refid="structattn_1_1Scores" kind="struct"><name>attn::Scores</name></compound>
</doxygenindex>"""

NAMESPACE = """<?xml version='1.0'?><doxygen><compounddef id="namespaceattn" kind="namespace">
<compoundname>attn</compoundname>
<sectiondef kind="func"><memberdef kind="function" id="scores_8hpp_1a1" prot="public">
<qualifiedname>attn::score</qualifiedname><argsstring>(int q, int k)</argsstring>
<briefdescription><para>The score of one pair.</para></briefdescription><detaileddescription/>
<location file="attn/scores.hpp" line="6"/></memberdef></sectiondef>
</compounddef></doxygen>"""

STRUCT = """<?xml version='1.0'?><doxygen><compounddef id="structattn_1_1Scores" kind="struct">
<compoundname>attn::Scores</compoundname>
<sectiondef kind="public-attrib"><memberdef kind="variable" id="structattn_1_1Scores_1a2" prot="public">
<qualifiedname>attn::Scores::total</qualifiedname><argsstring></argsstring>
<briefdescription><para>their sum</para></briefdescription><detaileddescription/>
<location file="attn/scores.hpp" line="10"/></memberdef></sectiondef>
<location file="attn/scores.hpp" line="9"/>
</compounddef></doxygen>"""


@pytest.fixture
def xml(tmp_path: Path) -> Path:
    for name, text in (("index", INDEX), ("namespaceattn", NAMESPACE), ("structattn_1_1Scores", STRUCT)):
        (tmp_path / f"{name}.xml").write_text(text, encoding="utf-8")
    return tmp_path


def test_each_entry_is_tied_to_the_part_that_writes_it(xml):
    book = read_book(["chapters/01-scores.md"], texts={"chapters/01-scores.md": CHAPTER})
    api = read_api(book, xml)
    entries = api["include/attn/scores.hpp"]
    assert [(e.kind, e.name, e.member) for e in entries] == [
        ("function", "attn::score", False), ("struct", "attn::Scores", False),
        ("member", "attn::Scores::total", True)]     # a member is shown on its class's entry
    assert [e.directive for e in entries[:2]] == ["doxygenfunction", "doxygenstruct"]
    model = book.chapters[0].model
    assert [e.name for e in entries_of_part(api, model.chunks["Score one pair"].parts[0])] == ["attn::score"]
    assert [e.name for e in entries_of_part(api, model.chunks["Keep the scores"].parts[0])] == [
        "attn::Scores", "attn::Scores::total"]
    assert entries[0].refid == "scores_8hpp_1a1" and not entries[0].overloaded


def test_without_doxygen_every_header_has_an_empty_page(tmp_path):
    book = read_book(["chapters/01-scores.md"], texts={"chapters/01-scores.md": CHAPTER})
    assert read_api(book, tmp_path) == {"include/attn/scores.hpp": []}
    assert namespaces(tmp_path) == []
    assert api_docname("include/attn/scores.hpp") == "api/scores"


def test_namespaces_are_listed(xml):
    assert namespaces(xml) == ["attn"]


def test_pages_that_read_a_vanished_xml_file_are_read_again(tmp_path):
    """Breathe would stop at a file it remembers that is gone; the weave drops it first."""
    from types import SimpleNamespace

    from weave.state import forget_vanished_doxygen_files

    kept, gone = tmp_path / "kept.xml", tmp_path / "gone.xml"
    kept.write_text("<doxygen/>")
    env = SimpleNamespace(breathe_file_state={str(kept): (1.0, {"api/a"}),
                                              str(gone): (1.0, {"api/b", "api/c"})})
    outdated = forget_vanished_doxygen_files(None, env, set(), set(), {"api/c"})
    assert outdated == ["api/b"]
    assert list(env.breathe_file_state) == [str(kept)]
