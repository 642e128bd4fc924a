"""The tangler's promises on hostile input: paths it checks, nothing written on any error, no traceback.

Each test here failed on the tangler before these checks: a path alias tangled with exit 0,
a directory path left a traceback and '.tangle-*' files, deep nesting raised RecursionError,
and so on (see the comment on each).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from test_tangle import GOOD, ROOT, chapter, run, snapshot

sys.path.insert(0, str(ROOT / "tools"))
import book_model  # noqa: E402
import tangle  # noqa: E402


def trees(tmp_path: Path) -> dict[str, dict[str, bytes]]:
    return {d: snapshot(tmp_path / d) if (tmp_path / d).is_dir() else {} for d in ("tangled", "build")}


def leftovers(tmp_path: Path) -> list[str]:
    return [str(p) for p in tmp_path.rglob(".tangle-*")]


def refused(tmp_path: Path, text: str, line: int, message: str) -> str:
    """Tangle GOOD, then GOOD changed plus ``text``: the second run must fail at ``line`` and change nothing."""
    good = chapter(tmp_path, GOOD, "00-good.md")
    status, output = run(tmp_path, good)
    assert status == 0, output
    before = trees(tmp_path)
    good.write_text(GOOD.replace("2 * x", "4 * x"))
    bad = chapter(tmp_path, text)
    status, output = run(tmp_path, good, bad)
    assert status == 1, output
    assert "Traceback" not in output, output
    assert f"chapters/01-test.md:{line}: " in output and message in output, output
    assert "nothing written" in output
    assert trees(tmp_path) == before
    assert not leftovers(tmp_path)
    return output


def root(path: str, body: str = "int x;", name: str = "f") -> str:
    return f"```{{chunk}} {name}\n:file: {path}\n{body}\n```\n"


# ------------------------------------------------------------------ paths

# Before: './a.hpp' beside 'a.hpp' tangled with exit 0 (one file written twice, check-tangle stale
# for ever); 'a/', a directory, 'a' beside 'a/b' and a 300-character path ended in a traceback
# after a partial write.
PATHS = [
    ("dot alias", root("include/lib.hpp") + "\n" + root("./include/lib.hpp", name="g"), 7, "not in normal form"),
    ("double slash", root("a//b.hpp"), 2, "write 'a/b.hpp'"),
    ("dot inside", root("a/./b.hpp"), 2, "write 'a/b.hpp'"),
    ("trailing slash", root("a/"), 2, "names a directory"),
    ("the tree itself", root("."), 2, "names a directory"),
    ("file then its directory", root("a") + "\n" + root("a/b", name="g"), 6, "would be inside 'a'"),
    ("directory then its file", root("a/b") + "\n" + root("a", name="g"), 6, "is a directory of 'a/b'"),
    ("differ only in case", root("A.hpp") + "\n" + root("a.hpp", name="g"), 6, "differs only in case"),
    ("300 characters", root("d/" * 100 + "x.hpp"), 2, "the limit is 200"),
    ("long component", root("x" * 150 + ".hpp"), 2, "longer than 100 bytes"),
    ("space", root("my file.hpp"), 2, "only letters, digits"),
    ("the tangler's temporary name", root(".tangle-x.hpp"), 2, "the tangler's own"),
]


@pytest.mark.parametrize("what,text,line,message", PATHS, ids=[p[0] for p in PATHS])
def test_bad_paths_are_refused_before_anything_is_written(tmp_path, what, text, line, message):
    refused(tmp_path, text, line, message)


def test_alias_of_a_file_in_another_chapter_is_refused(tmp_path):
    refused(tmp_path, root("./include/lib.hpp"), 2, "write 'include/lib.hpp'")


def test_symlinked_directory_inside_tangled_is_refused(tmp_path):
    """Before: the tangler wrote through the link, outside the tree."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (tmp_path / "tangled").mkdir()
    (tmp_path / "tangled/include").symlink_to(outside, target_is_directory=True)
    status, output = run(tmp_path, chapter(tmp_path, GOOD))
    assert status == 1, output
    assert "chapters/01-test.md:5: tangled/include is a symbolic link" in output, output
    assert "Traceback" not in output
    assert list(outside.iterdir()) == []
    assert not (tmp_path / "build/tangled").exists()


def test_symlinked_file_inside_the_twin_is_refused(tmp_path):
    path = chapter(tmp_path, GOOD)
    assert run(tmp_path, path)[0] == 0
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me\n")
    twin = tmp_path / "build/tangled/include/lib.hpp"
    twin.unlink()
    twin.symlink_to(victim)
    status, output = run(tmp_path, path)
    assert status == 1 and "build/tangled/include/lib.hpp is a symbolic link" in output, output
    assert victim.read_text() == "keep me\n"


def test_directory_where_a_file_goes_is_replaced_when_it_holds_only_stale_files(tmp_path):
    path = chapter(tmp_path, GOOD)
    stray = tmp_path / "tangled/include/lib.hpp/old.hpp"
    stray.parent.mkdir(parents=True)
    stray.write_text("old\n")
    status, output = run(tmp_path, path)
    assert status == 0, output
    assert (tmp_path / "tangled/include/lib.hpp").read_text().startswith("// Generated")


# ------------------------------------------------------------------ chunks that were silently dropped or mangled


def test_tab_after_the_directive_is_a_chunk(tmp_path):
    """Before: '```{chunk}<TAB>Name' was not a chunk for the tangler (MyST shows it as one)."""
    status, output = run(tmp_path, chapter(tmp_path, "```{chunk}\tf\n:file: f.hpp\nint tabbed;\n```\n"))
    assert status == 0, output
    assert "int tabbed;" in (tmp_path / "tangled/f.hpp").read_text()


def test_chunk_after_a_byte_order_mark(tmp_path):
    """Before: a chapter starting with a BOM lost its first chunk (Sphinx drops the BOM and shows it)."""
    path = tmp_path / "chapters/01-test.md"
    path.parent.mkdir(parents=True)
    path.write_bytes("\ufeff```{chunk} f\n:file: f.hpp\nint bom;\n```\n".encode("utf-8"))
    status, output = run(tmp_path, path)
    assert status == 0, output
    assert "int bom;" in (tmp_path / "tangled/f.hpp").read_text()
    assert '#line 3 "chapters/01-test.md"' in (tmp_path / "build/tangled/f.hpp").read_text()


def test_colon_fence_chunk_is_tangled(tmp_path):
    """The book enables MyST's colon fences; a ':::{chunk}' is a chunk for the weave, so for the tangler too."""
    status, output = run(tmp_path, chapter(tmp_path, ":::{chunk} f\n:file: f.hpp\nint colon;\n:::\n"))
    assert status == 0, output
    assert "int colon;" in (tmp_path / "tangled/f.hpp").read_text()


def test_name_with_angle_brackets_is_refused(tmp_path):
    """Before: '<<Foo<T>>>' was not a reference and went verbatim into the C++."""
    refused(tmp_path, root("f.hpp", "<<Foo<T>>>") + "\n```{chunk} Foo<T>\nint y;\n```\n", 3, "not a reference")
    refused(tmp_path, root("f.hpp", "<<Foo>>") + "\n```{chunk} Foo<T>\nint y;\n```\n", 6, "may not contain '<'")


def test_reference_with_irregular_spaces_resolves(tmp_path):
    """Before: 'Foo  Bar' was normalised where defined but not where referenced: 'undefined chunk'."""
    text = root("f.hpp", "<<Say  \t hello>>") + "\n```{chunk} Say   hello\nint hello;\n```\n"
    status, output = run(tmp_path, chapter(tmp_path, text))
    assert status == 0, output
    assert "int hello;" in (tmp_path / "tangled/f.hpp").read_text()
    assert "never used" not in output


def test_deep_nesting_expands(tmp_path):
    """Before: about a thousand nested chunks raised RecursionError."""
    depth = 1500
    text = root("deep.hpp", "<<C0>>") + "".join(f"\n```{{chunk}} C{i}\n<<C{i + 1}>>\n```\n" for i in range(depth))
    text += f"\n```{{chunk}} C{depth}\nint bottom;\n```\n"
    status, output = run(tmp_path, chapter(tmp_path, text))
    assert status == 0, output
    assert "RecursionError" not in output
    assert "int bottom;" in (tmp_path / "tangled/deep.hpp").read_text()


def test_deep_cycle_is_found(tmp_path):
    depth = 1500
    text = root("deep.hpp", "<<C0>>") + "".join(f"\n```{{chunk}} C{i}\n<<C{(i + 1) % depth}>>\n```\n"
                                                for i in range(depth))
    status, output = run(tmp_path, chapter(tmp_path, text))
    assert status == 1 and "reference cycle" in output and "Traceback" not in output, output


def test_exponential_expansion_is_refused(tmp_path):
    text = root("big.hpp", "<<C0>>")
    for i in range(21):      # 2**21 lines: past the limit, and not so many that a tangler without one hangs
        text += f"\n```{{chunk}} C{i}\n<<C{i + 1}>>\n<<C{i + 1}>>\n```\n"
    text += "\n```{chunk} C21\nint x;\n```\n"
    refused(tmp_path, text, 1, "expands to more than")


# ------------------------------------------------------------------ seams in raw strings and continued lines

SEAMS = [
    ("reference in a raw string",
     root("f.hpp", 'const char* s = R"(\n<<Body>>\n)";') + "\n```{chunk} Body\ntext\n```\n", 4, "raw string"),
    ("reference in a raw string with a delimiter",
     root("f.hpp", 'auto s = u8R"xy(a)"\n<<Body>>\n)xy";') + "\n```{chunk} Body\ntext\n```\n", 4, "raw string"),
    ("reference after a macro continuation",
     root("f.hpp", "#define TWICE(x) \\\n<<Body>>") + "\n```{chunk} Body\n(2 * (x))\n```\n", 4, "ending in '\\'"),
    ("chunk that ends with a continuation",
     root("f.hpp", "<<Body>>\nint after;") + "\n```{chunk} Body\n#define M \\\n```\n", 3, "ending in '\\'"),
]


@pytest.mark.parametrize("what,text,line,message", SEAMS, ids=[s[0] for s in SEAMS])
def test_reference_inside_raw_string_or_continuation_is_refused(tmp_path, what, text, line, message):
    """Before: #line and marker lines were injected into the string or macro, with no diagnostic."""
    refused(tmp_path, text, line, message)


def test_strings_comments_and_digit_separators_are_not_seams(tmp_path):
    body = ('const char* s = "R\\"(";  // not a raw string\n'
            "int n = 1'000'000;  /* R\"( in a comment */\n"
            "char q = '\"';\n"
            'const char* t = R"(one line)";\n'
            "<<Body>>\n"
            "int after;")
    status, output = run(tmp_path, chapter(tmp_path, root("f.hpp", body) + "\n```{chunk} Body\nint b;\n```\n"))
    assert status == 0, output


# ------------------------------------------------------------------ reading


def test_non_utf8_chapter_is_reported_at_its_line(tmp_path):
    """Before: 'chapters/01-test.md:1: cannot read chapter: ... position 123'."""
    path = tmp_path / "chapters/01-test.md"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"# Title\n\nplain\ncaf\xe9 au lait\n")
    status, output = run(tmp_path, path)
    assert status == 1
    assert "chapters/01-test.md:4: not UTF-8: byte 0xe9 at column 4" in output, output
    assert "Traceback" not in output


# ------------------------------------------------------------------ the write phase: all or nothing


def in_process(tmp_path: Path, monkeypatch, *chapters: Path, extra: tuple[str, ...] = ()) -> int:
    monkeypatch.chdir(tmp_path)
    return tangle.main([*extra, *(str(c.relative_to(tmp_path)) for c in chapters)])


@pytest.mark.parametrize("fail_at", [1, 2, 5, 9])
def test_error_while_writing_undoes_everything(tmp_path, monkeypatch, capsys, fail_at):
    path = chapter(tmp_path, GOOD + "\n" + root("src/one.cpp", name="one") + "\n" + root("src/two.cpp", name="two"))
    assert in_process(tmp_path, monkeypatch, path) == 0
    before = trees(tmp_path)
    path.write_text(GOOD.replace("2 * x", "4 * x") + "\n" + root("src/one.cpp", "int y;", name="one")
                    + "\n" + root("other/three.cpp", name="three"))
    real_rename, calls = os.rename, []

    def failing_rename(src, dst):
        calls.append(dst)
        if len(calls) == fail_at:
            raise OSError(28, "No space left on device")
        return real_rename(src, dst)

    monkeypatch.setattr(os, "rename", failing_rename)
    status = in_process(tmp_path, monkeypatch, path)
    err = capsys.readouterr().err
    if len(calls) < fail_at:
        pytest.skip("fewer steps than that")
    assert status == 1, err
    assert "No space left on device" in err and "nothing written" in err, err
    assert trees(tmp_path) == before
    assert not leftovers(tmp_path)


def test_interrupt_while_reading_prints_no_traceback(tmp_path, monkeypatch, capsys):
    path = chapter(tmp_path, GOOD)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(book_model, "read_chapter", interrupted)   # the tangler reads through the book model
    assert in_process(tmp_path, monkeypatch, path) == 130
    assert "interrupted; nothing written" in capsys.readouterr().err
    assert not (tmp_path / "tangled").exists()


def test_interrupt_while_writing_undoes_everything(tmp_path, monkeypatch, capsys):
    path = chapter(tmp_path, GOOD + "\n" + root("src/one.cpp", name="one"))
    assert in_process(tmp_path, monkeypatch, path) == 0
    before = trees(tmp_path)
    path.write_text(GOOD.replace("2 * x", "4 * x") + "\n" + root("src/one.cpp", "int y;", name="one"))
    real_write, calls = tangle.Transaction.write, []

    def write(self, *args):
        calls.append(args)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_write(self, *args)

    monkeypatch.setattr(tangle.Transaction, "write", write)
    assert in_process(tmp_path, monkeypatch, path) == 130
    assert trees(tmp_path) == before
    assert not leftovers(tmp_path)


# Before: a Ctrl-C while the interpreter shut down after a complete run killed the tangler
# (exit -2: Python gives SIGINT its default action back then). CI caught it once in a timed run.
def test_ctrl_c_after_a_complete_run_changes_nothing(tmp_path):
    """SIGINT at the moment the tangler exits: the run stands, exit 0, no message."""
    path = chapter(tmp_path, GOOD)
    script = ("import os, runpy, signal, sys\n"
              "exit = sys.exit\n"
              "def interrupted_exit(status):\n"
              "    os.kill(os.getpid(), signal.SIGINT)\n"
              "    exit(status)\n"
              "sys.exit = interrupted_exit\n"
              f"sys.argv = ['tangle.py', {str(path.relative_to(tmp_path))!r}, '--quiet']\n"
              f"runpy.run_path({str(ROOT / 'tools/tangle.py')!r}, run_name='__main__')\n")
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True)
    assert (done.returncode, done.stderr) == (0, ""), done.stderr
    assert trees(tmp_path)["tangled"]


def test_ctrl_c_leaves_old_or_new_never_half(tmp_path):
    """SIGINT at several moments of a real run: no traceback, and the trees are all old or all new."""
    text = GOOD + "".join("\n" + root(f"src/f{i}.cpp", f"int v{i} = {i};", name=f"f{i}") for i in range(300))
    path = chapter(tmp_path, text)
    assert run(tmp_path, path)[0] == 0
    old = trees(tmp_path)
    path.write_text(text.replace(" = ", " = 1 + "))
    args = [sys.executable, str(ROOT / "tools/tangle.py"), str(path.relative_to(tmp_path))]
    for delay in (0.3, 0.5, 0.7, 1.0):
        process = subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(delay)
        process.send_signal(signal.SIGINT)
        out, err = process.communicate()
        assert "Traceback" not in err, err
        now = trees(tmp_path)
        # Killed by the signal itself only before Python set its handlers: nothing written yet.
        killed_starting = process.returncode == -signal.SIGINT and now == old and not err
        assert process.returncode in (0, 130) or killed_starting, err
        assert not leftovers(tmp_path)
        if now != old:
            new_clean = {k: v for k, v in now["tangled"].items()}
            assert all(b"1 + " in v for k, v in new_clean.items() if k.startswith("src/")), "half-written"
            assert all(b"1 + " in v for k, v in now["build"].items() if "/src/" in k and "tangled/" in k)
            old = now
