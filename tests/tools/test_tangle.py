"""Tests of the tangler: what it writes, and every kind of bad input it must refuse."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools"))
import tangle  # noqa: E402

GOOD = """\
# A chapter

Some prose.

```{chunk} lib.hpp
:file: include/lib.hpp
#pragma once
namespace lib {
    <<Define the function>>
}
```

```{chunk} Define the function
inline int twice(int x)
{
	<<Double it>>
}
```

```{chunk} Double it
return 2 * x;
```

More prose, then an append:

```{chunk} Define the function
inline int thrice(int x) { return 3 * x; }
```

```cpp
// a plain fence: shown, never tangled
```
"""


def chapter(tmp_path: Path, text: str, name: str = "01-test.md") -> Path:
    path = tmp_path / "chapters" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def run(tmp_path: Path, *chapters: Path, check: bool = False) -> tuple[int, str]:
    """Run the tangler as make does, from tmp_path; return (exit status, stderr + stdout)."""
    args = [sys.executable, str(ROOT / "tools" / "tangle.py")]
    if check:
        args.append("--check")
    args += [str(c.relative_to(tmp_path)) for c in chapters]
    done = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True)
    return done.returncode, done.stderr + done.stdout


def snapshot(directory: Path) -> dict[str, bytes]:
    return {p.relative_to(directory).as_posix(): p.read_bytes() for p in directory.rglob("*") if p.is_file()}


# ------------------------------------------------------------------ what it writes


def test_writes_clean_file_with_banner_markers_and_indentation(tmp_path):
    status, output = run(tmp_path, chapter(tmp_path, GOOD))
    assert status == 0, output
    text = (tmp_path / "tangled/include/lib.hpp").read_text()
    lines = text.splitlines()
    assert lines[0].startswith("// Generated from chapters/01-test.md")
    assert "#line" not in text
    assert "    // ⟨Define the function⟩ 01-test.md:13" in lines
    assert "    inline int twice(int x)" in lines
    assert "    \t// ⟨Double it⟩ 01-test.md:20" in lines      # tab kept, indentation added
    assert "    \treturn 2 * x;" in lines
    assert "    // ⟨Define the function⟩ +≡ 01-test.md:26" in lines  # the append, marked
    assert "    inline int thrice(int x) { return 3 * x; }" in lines
    assert "plain fence" not in text


def test_twin_has_line_directives_pointing_at_the_chapter(tmp_path):
    run(tmp_path, chapter(tmp_path, GOOD))
    twin = (tmp_path / "build/tangled/include/lib.hpp").read_text().splitlines()
    assert '#line 7 "chapters/01-test.md"' in twin
    at = twin.index('#line 21 "chapters/01-test.md"')
    assert twin[at + 1] == "    \treturn 2 * x;"
    assert not any("⟨" in line for line in twin)


def test_compiler_errors_point_at_the_chapter_line(tmp_path):
    """Inject an error into a copy of chapter 1 and read g++'s message."""
    source = (ROOT / "chapters/01-self-attention.md").read_text(encoding="utf-8")
    marker = "    const std::size_t m = K.shape(0), d_k = K.shape(1), d_v = V.shape(1);\n"
    assert marker in source
    broken = source.replace(marker, marker + "    this_is_not_cpp;\n", 1)
    expected_line = broken[: broken.index("this_is_not_cpp")].count("\n") + 1
    path = chapter(tmp_path, broken, "01-self-attention.md")
    instruments = chapter(tmp_path, (ROOT / "chapters/00-instruments.md").read_text(encoding="utf-8"),
                          "00-instruments.md")   # chapter 1 includes the appendix's header
    status, output = run(tmp_path, instruments, path)
    assert status == 0, output
    compile_ = subprocess.run(
        ["g++", "-std=c++17", "-fsyntax-only", "-Ibuild/tangled/include", "build/tangled/programs/ch01_self_attention.cpp"],
        cwd=tmp_path, capture_output=True, text=True)
    assert compile_.returncode != 0
    assert f"chapters/01-self-attention.md:{expected_line}:" in compile_.stderr
    assert "this_is_not_cpp" in compile_.stderr


def test_writes_only_files_that_changed(tmp_path):
    path = chapter(tmp_path, GOOD + "\n```{chunk} other\n:file: other.txt\n:lang: sh\necho hi\n```\n")
    run(tmp_path, path)
    target = tmp_path / "tangled/include/lib.hpp"
    other = tmp_path / "tangled/other.txt"
    before, before_other = target.stat().st_mtime_ns, other.stat().st_mtime_ns
    path.write_text(path.read_text().replace("echo hi", "echo hello"))
    status, output = run(tmp_path, path)
    assert status == 0, output
    assert target.stat().st_mtime_ns == before
    assert other.stat().st_mtime_ns != before_other
    assert other.read_text().splitlines()[0].startswith("# Generated")


def test_removes_files_no_chunk_makes_any_more(tmp_path):
    path = chapter(tmp_path, GOOD + "\n```{chunk} gone\n:file: src/gone.cpp\nint x;\n```\n")
    run(tmp_path, path)
    assert (tmp_path / "tangled/src/gone.cpp").is_file()
    path.write_text(GOOD)
    status, output = run(tmp_path, path)
    assert status == 0, output
    assert not (tmp_path / "tangled/src").exists()
    assert not (tmp_path / "build/tangled/src").exists()


def test_check_names_stale_missing_and_extra_files(tmp_path):
    path = chapter(tmp_path, GOOD)
    run(tmp_path, path)
    status, _ = run(tmp_path, path, check=True)
    assert status == 0
    (tmp_path / "tangled/include/lib.hpp").write_text("edited by hand\n")
    (tmp_path / "tangled/stray.hpp").write_text("x\n")
    status, output = run(tmp_path, path, check=True)
    assert status == 1
    assert "tangled/include/lib.hpp: differs from its chapter" in output
    assert "tangled/stray.hpp: made by no chunk" in output
    assert (tmp_path / "tangled/include/lib.hpp").read_text() == "edited by hand\n"  # check writes nothing


def test_chunk_names_are_scoped_per_chapter(tmp_path):
    one = chapter(tmp_path, "```{chunk} a.hpp\n:file: a.hpp\n<<Body>>\n```\n\n```{chunk} Body\nint a;\n```\n", "01-a.md")
    two = chapter(tmp_path, "```{chunk} b.hpp\n:file: b.hpp\n<<Body>>\n```\n\n```{chunk} Body\nint b;\n```\n", "02-b.md")
    status, output = run(tmp_path, one, two)
    assert status == 0, output
    assert "int a;" in (tmp_path / "tangled/a.hpp").read_text()
    assert "int b;" in (tmp_path / "tangled/b.hpp").read_text()


def test_unused_chunk_is_a_warning_not_an_error(tmp_path):
    status, output = run(tmp_path, chapter(tmp_path, GOOD + "\n```{chunk} Lonely\nint x;\n```\n"))
    assert status == 0
    assert "chapters/01-test.md:34: warning: chunk 'Lonely' is never used" in output


# ------------------------------------------------------------------ bad input: message, line, nothing written

BAD = [
    ("undefined reference", "```{chunk} f\n:file: f.hpp\n<<Missing>>\n```\n", 3, "undefined chunk 'Missing'"),
    ("cycle", "```{chunk} f\n:file: f.hpp\n<<A>>\n```\n\n```{chunk} A\n<<B>>\n```\n\n```{chunk} B\n<<A>>\n```\n",
     11, "reference cycle"),
    ("self reference", "```{chunk} f\n:file: f.hpp\n<<f>>\n```\n", 3, "reference cycle"),
    ("absolute path", "```{chunk} f\n:file: /etc/passwd\nx\n```\n", 2, "must be relative"),
    ("escaping path", "```{chunk} f\n:file: ../outside.hpp\nx\n```\n", 2, "escapes tangled/"),
    ("no name", "text\n\n```{chunk}\n:file: f.hpp\nx\n```\n", 3, "chunk has no name"),
    ("unknown option", "```{chunk} f\n:file: f.hpp\n:colour: red\nx\n```\n", 3, "unknown chunk option ':colour:'"),
    ("option without value", "```{chunk} f\n:file:\nx\n```\n", 2, "needs a value"),
    ("fence left open", "prose\n\n```{chunk} f\n:file: f.hpp\nint x;\n", 3, "never closed"),
    ("same file twice in a chapter", "```{chunk} f\n:file: f.hpp\nx\n```\n\n```{chunk} g\n:file: f.hpp\ny\n```\n",
     6, "already written by chapters/01-test.md:1"),
    ("one chunk, two files", "```{chunk} f\n:file: f.hpp\nx\n```\n\n```{chunk} f\n:file: g.hpp\ny\n```\n",
     6, "already writes 'f.hpp'"),
]


@pytest.mark.parametrize("what,text,line,message", BAD, ids=[b[0] for b in BAD])
def test_bad_input_is_refused_with_its_line_and_writes_nothing(tmp_path, what, text, line, message):
    good = chapter(tmp_path, GOOD, "00-good.md")
    status, output = run(tmp_path, good)
    assert status == 0, output
    before = snapshot(tmp_path / "tangled"), snapshot(tmp_path / "build/tangled")
    good.write_text(GOOD.replace("2 * x", "4 * x"))  # a real change that must NOT be written
    bad = chapter(tmp_path, text)
    status, output = run(tmp_path, good, bad)
    assert status == 1
    assert f"chapters/01-test.md:{line}: " in output and message in output, output
    assert "nothing written" in output
    assert (snapshot(tmp_path / "tangled"), snapshot(tmp_path / "build/tangled")) == before


def test_file_defined_in_two_chapters_is_refused(tmp_path):
    one = chapter(tmp_path, "```{chunk} f\n:file: f.hpp\nx\n```\n", "01-a.md")
    two = chapter(tmp_path, "intro\n\n```{chunk} g\n:file: f.hpp\ny\n```\n", "02-b.md")
    status, output = run(tmp_path, one, two)
    assert status == 1
    assert "chapters/02-b.md:3: file 'f.hpp' is already written by chapters/01-a.md:1" in output
    assert not (tmp_path / "tangled").exists()


def test_missing_chapter_is_an_error(tmp_path):
    status, output = run(tmp_path, tmp_path / "chapters/99-none.md")
    assert status == 1
    assert "cannot read chapter" in output


def test_the_book_itself_is_in_sync():
    """tangled/ matches chapters/ (what `make check-tangle` checks)."""
    chapters = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "chapters").glob("[0-9][0-9]-*.md"))
    done = subprocess.run([sys.executable, "tools/tangle.py", "--check", *chapters], cwd=ROOT,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_twin_and_clean_copy_hold_the_same_code():
    """Dropping markers and #line from the two copies leaves the same lines."""
    roots, problems = tangle.tangle(sorted(str(p) for p in (ROOT / "chapters").glob("[0-9][0-9]-*.md")))
    assert not [p for p in problems if not p.warning]
    for root in roots:
        clean = [l for l in tangle.clean_text(root).splitlines() if not re.match(r"^\s*(//|#) ⟨", l)]
        twin = [l for l in tangle.twin_text(root).splitlines() if not l.startswith("#line ")]
        assert clean == twin, root.path
