"""The build's promises, tested by driving `make` in a small copy of the repository.

The copy holds the real Makefile, tools/, figures/style.gp and book/Doxyfile, and two tiny
chapters whose programs compile in a second: what is tested is what make decides to tangle,
compile and run, and what it leaves in tangled/, build/ and figures/.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

ONE = """\
# 1. One

The first chapter's prose.

```{chunk} programs/ch01_one.cpp
:file: programs/ch01_one.cpp
#include <cstdio>
#include <string>
#include <sys/stat.h>
#include "one/greet.hpp"

int main(int argc, char** argv)
{
    <<Read the arguments>>
    <<Write the results>>
}
```

Reading the arguments:

```{chunk} Read the arguments
std::string out = "figures/ch01";
int seed = 1;
for (int i = 1; i + 1 < argc; i += 2) {
    const std::string arg = argv[i];
    if (arg == "--out") out = argv[i + 1];
    else if (arg == "--seed") seed = std::stoi(argv[i + 1]);
}
```

Writing them:

```{chunk} Write the results
mkdir(out.c_str(), 0755);
std::FILE* file = std::fopen((out + "/results.tsv").c_str(), "w");
std::fprintf(file, "seed\\t%d\\ngreeting\\t%s\\n", seed, one::greeting());
std::fclose(file);
std::printf("wrote %s\\n", out.c_str());
```

```{chunk} one/greet.hpp
:file: include/one/greet.hpp
#pragma once
namespace one {
/// The greeting.
inline const char* greeting() { return "hello"; }
}  // namespace one
```
"""

TWO = ONE.replace("# 1. One", "# 2. Two").replace("ch01_one", "ch02_two").replace("figures/ch01", "figures/ch02") \
    .replace('#include "one/greet.hpp"', "").replace("one::greeting()", '"two"') \
    .split("```{chunk} one/greet.hpp")[0]


def make(repo: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    # The copy is built as a reader builds it, whatever make this test runs under:
    # none of the outer make's flags or variables (`make test SANITIZE=1` puts
    # SANITIZE=1 in the environment of everything it runs).
    outer = {"MFLAGS", "SANITIZE", "FORCE", "ONE_RUN"}
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAKE") and k not in outer}
    done = subprocess.run(["make", "--no-print-directory", *args], cwd=repo, capture_output=True, text=True, env=env)
    if check:
        assert done.returncode == 0, done.stdout + done.stderr
    return done


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    """A copy of the press with two chapters, tangled, compiled and run once."""
    repo = tmp_path_factory.mktemp("press") / "repo"
    (repo / "chapters").mkdir(parents=True)
    (repo / "tests").mkdir()
    (repo / "figures").mkdir()
    (repo / "book").mkdir()
    shutil.copy(ROOT / "Makefile", repo)
    shutil.copytree(ROOT / "tools", repo / "tools", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "figures/style.gp", repo / "figures")
    shutil.copy(ROOT / "book/Doxyfile", repo / "book")
    (repo / "chapters/01-one.md").write_text(ONE)
    (repo / "chapters/02-two.md").write_text(TWO)
    make(repo, "figures")
    return repo


@pytest.fixture
def repo(built, tmp_path) -> Path:
    """A fresh copy of the built repository for one test (mtimes kept)."""
    copy = tmp_path / "repo"
    shutil.copytree(built, copy, symlinks=True)
    return copy


def compiles(output: str) -> list[str]:
    return re.findall(r"compile  (\w+)", output)


def runs(output: str) -> list[str]:
    return re.findall(r"run      (\w+) ->", output)


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))


# ------------------------------------------------------------------ edits that should cost seconds


def test_nothing_to_do_after_a_build(repo):
    done = make(repo, "figures")
    assert not compiles(done.stdout) and not runs(done.stdout), done.stdout
    assert "tangle" not in done.stdout


def test_prose_edit_that_adds_lines_recompiles_and_reruns_nothing(repo):
    """Before: the markers and #line numbers shifted, so the program recompiled and reran."""
    obj = repo / "build/obj/ch01_one.o"
    before = obj.stat().st_mtime_ns
    edit(repo / "chapters/01-one.md", "The first chapter's prose.\n",
         "The first chapter's prose.\n\nTwo new\nlines of prose, and a paragraph.\n")
    dry = make(repo, "-n", "figures")
    assert not compiles(dry.stdout) and "g++" not in dry.stdout and "run_chapter" not in dry.stdout, dry.stdout
    done = make(repo, "figures")
    assert not compiles(done.stdout) and not runs(done.stdout), done.stdout
    assert "doxygen" not in done.stdout
    assert obj.stat().st_mtime_ns == before
    # the copies themselves do follow the chapter's lines
    fence = (repo / "chapters/01-one.md").read_text().splitlines().index("```{chunk} Read the arguments") + 1
    assert f"// ⟨Read the arguments⟩ 01-one.md:{fence}" in (repo / "tangled/programs/ch01_one.cpp").read_text()
    assert f'#line {fence + 1} "chapters/01-one.md"' in (repo / "build/tangled/programs/ch01_one.cpp").read_text()


def test_code_edit_recompiles_and_reruns_only_its_program(repo):
    edit(repo / "chapters/02-two.md", "std::printf(", "std::printf(\"two: \");\nstd::printf(")
    dry = make(repo, "-n", "figures")
    assert compiles(dry.stdout) == ["ch02_two"], dry.stdout
    done = make(repo, "figures")
    assert compiles(done.stdout) == ["ch02_two"], done.stdout
    assert runs(done.stdout) == ["ch02_two"], done.stdout


def test_header_edit_recompiles_the_programs_that_include_it(repo):
    edit(repo / "chapters/01-one.md", 'return "hello";', 'return "hi";')
    done = make(repo, "figures")
    assert compiles(done.stdout) == ["ch01_one"], done.stdout
    assert runs(done.stdout) == ["ch01_one"]
    assert "hi" in (repo / "figures/ch01/results.tsv").read_text()
    assert "doxygen  tangled/include" in done.stdout


def test_make_n_tells_the_truth(repo):
    """Before: `make -n` showed every program rebuilt (the tangle stamp, remade, made every twin look new)."""
    dry = make(repo, "-n", "ch01", "ch02")
    assert "g++" not in dry.stdout, dry.stdout
    edit(repo / "chapters/01-one.md", "int seed = 1;", "int seed = 2;")
    dry = make(repo, "-n", "ch01", "ch02")
    assert compiles(dry.stdout) == ["ch01_one"], dry.stdout
    done = make(repo, "ch01", "ch02")
    assert compiles(done.stdout) == ["ch01_one"], done.stdout


def test_relinked_identical_program_is_not_run_again(repo):
    (repo / "build/bin/ch01_one").touch()
    done = make(repo, "figures")
    assert not runs(done.stdout) and "ch01_one: program and inputs unchanged" in done.stdout, done.stdout


# ------------------------------------------------------------------ generated state the build sees


def test_make_tangle_refuses_a_hand_edit_and_force_discards_it(repo):
    """Before: check-tangle said 'run make tangle', and make tangle said 'Nothing to be done'."""
    header = repo / "tangled/include/one/greet.hpp"
    original = header.read_text()
    with header.open("a") as handle:
        handle.write("x\n")
    assert make(repo, "check-tangle", check=False).returncode != 0
    done = make(repo, "tangle", check=False)
    assert done.returncode != 0
    assert "tangled/include/one/greet.hpp was edited by hand" in done.stderr, done.stderr
    assert "make tangle FORCE=1" in done.stderr
    assert "chapters/01-one.md:" in done.stderr
    assert header.read_text() == original + "x\n"
    make(repo, "tangle", "FORCE=1")
    assert header.read_text() == original
    make(repo, "check-tangle")


def test_deleted_twin_file_is_written_again(repo):
    """Before: the next compile failed until build/tangle.stamp was removed by hand."""
    twin = repo / "build/tangled/programs/ch01_one.cpp"
    text = twin.read_text()
    twin.unlink()
    done = make(repo, "ch01")
    assert twin.read_text() == text
    assert not compiles(done.stdout), done.stdout       # its key did not change
    edit(repo / "chapters/01-one.md", "int seed = 1;", "int seed = 3;")
    twin.unlink()
    done = make(repo, "ch01")
    assert compiles(done.stdout) == ["ch01_one"], done.stdout


def test_deleted_run_stamp_runs_again_before_the_book(repo):
    """Before: with `.SECONDARY:` every target was intermediate: `rm build/run/ch01.stamp; make book`
    said the book was up to date."""
    book = repo / "build/book/html/index.html"
    book.parent.mkdir(parents=True)
    book.touch()
    (repo / "build/run/ch01.stamp").unlink()
    dry = make(repo, "-n", "build/book/html/index.html")
    assert "run_chapter.py --program build/bin/ch01_one" in dry.stdout, dry.stdout
    assert "sphinx" in dry.stdout


def test_missing_figures_folder_runs_again(repo):
    """Before: moving figures/ch01 away left every later Sphinx run failing (image not readable)."""
    shutil.move(repo / "figures/ch01", repo / "elsewhere")
    done = make(repo, "figures")
    assert runs(done.stdout) == ["ch01_one"], done.stdout
    assert (repo / "figures/ch01/results.tsv").is_file()


def test_program_run_by_hand_into_figures_is_run_again(repo):
    """Before: `build/bin/chNN --seed 5` wrote into figures/chNN and `make book` said up to date."""
    subprocess.run(["build/bin/ch01_one", "--seed", "5"], cwd=repo, check=True, capture_output=True)
    assert "seed\t5" in (repo / "figures/ch01/results.tsv").read_text()
    done = make(repo, "figures")
    assert runs(done.stdout) == ["ch01_one"], done.stdout
    assert "seed\t1" in (repo / "figures/ch01/results.tsv").read_text()


def test_sanitized_runs_have_their_own_stamps_and_figures(repo):
    """Before: a SANITIZE=1 run refreshed build/run/chNN.stamp and figures/chNN for `make book`."""
    stamp = repo / "build/run/ch01.stamp"
    published = (repo / "figures/ch01/results.tsv").stat().st_mtime_ns
    before = stamp.stat().st_mtime_ns
    make(repo, "run-ch01", "SANITIZE=1")
    assert (repo / "build/sanitize/figures/ch01/results.tsv").is_file()
    assert (repo / "build/sanitize/run/ch01.stamp").is_file()
    assert stamp.stat().st_mtime_ns == before
    assert (repo / "figures/ch01/results.tsv").stat().st_mtime_ns == published
    refused = make(repo, "build/book/html/index.html", "SANITIZE=1", check=False)
    assert refused.returncode != 0 and "without SANITIZE=1" in refused.stderr


def test_added_chapter_is_tangled(repo):
    (repo / "chapters/03-three.md").write_text(TWO.replace("ch02_two", "ch03_three").replace("figures/ch02", "figures/ch03"))
    done = make(repo, "ch03")
    assert compiles(done.stdout) == ["ch03_three"], done.stdout
    (repo / "chapters/03-three.md").unlink()
    make(repo, "ch01")
    assert not (repo / "tangled/programs/ch03_three.cpp").exists()


def test_check_tangle_and_help_do_not_tangle(repo):
    """check-tangle must see the committed tangled/ as it is, so it (and help, clean) never tangles first."""
    edit(repo / "chapters/01-one.md", "int seed = 1;", "int seed = 4;")
    before = (repo / "tangled/programs/ch01_one.cpp").read_text()
    done = make(repo, "check-tangle", check=False)
    assert done.returncode != 0 and "tangled/programs/ch01_one.cpp: differs from its chapter" in done.stderr
    make(repo, "help")
    assert (repo / "tangled/programs/ch01_one.cpp").read_text() == before
    make(repo, "tangle")
    make(repo, "check-tangle")


def test_tangled_files_a_pull_brings_are_not_taken_for_hand_edits(repo):
    """A merge or pull writes tangled/ files the tangler did not write here; they are what
    the commit holds, so tangling goes on (it used to refuse them as hand edits)."""
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "base"], check=True)
    chapter = repo / "chapters/01-one.md"
    edit(chapter, "return \"hello\"", "return \"hi\"")
    make(repo, "tangle")
    subprocess.run([*git, "commit", "-qam", "the pulled change"], check=True)
    subprocess.run([*git, "checkout", "-q", "HEAD~1", "--", "tangled", "chapters"], check=True)
    make(repo, "tangle")  # this copy's manifest now differs from tangled/: as if pulled
    subprocess.run([*git, "checkout", "-q", "HEAD", "--", "tangled", "chapters"], check=True)
    done = make(repo, "tangle", check=False)
    assert done.returncode == 0, done.stderr
    make(repo, "check-tangle")
