"""The chapters as the page shows them: code that fits the column, no stray control
characters in the prose (a tab inside `$b \times n$` once rendered as "bimesn")."""
from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools"))
import chunks  # noqa: E402

COLUMNS = 88  # the page shows about 90 columns of code on a desktop
CHAPTERS = sorted((ROOT / "chapters").glob("[0-9][0-9]-*.md"))


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_every_chunk_line_fits_the_column(path: Path) -> None:
    chapter = chunks.read_chapter(path, text=path.read_text(encoding="utf-8"),
                                  display=f"chapters/{path.name}")
    long = [f"chapters/{path.name}:{part.body_line + k}: {len(line.expandtabs())} columns"
            for chunk in chapter.chunks.values() for part in chunk.parts
            for k, line in enumerate(part.lines) if len(line.expandtabs()) > COLUMNS]
    assert not long, "chunk lines over 88 columns:\n" + "\n".join(long)


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_prose_has_no_control_characters(path: Path) -> None:
    in_fence, bad = False, []
    for number, line in enumerate(path.read_text(encoding="utf-8").split("\n"), 1):
        if re.match(r"^\s*(`{3,}|~{3,}|:{3,})", line):
            in_fence = not in_fence if not line.strip().startswith(":::") else in_fence
        if not in_fence and re.search(r"[\x00-\x08\x0b-\x1f\x7f]|\t", line):
            bad.append(f"chapters/{path.name}:{number}")
    assert not bad, "control characters outside code blocks:\n" + "\n".join(bad)


def test_a_long_line_is_caught(tmp_path: Path) -> None:
    chapter = tmp_path / "99-x.md"
    chapter.write_text("# 99. X\n\n```{chunk} Too long\n" + "x" * 89 + "\n```\n", encoding="utf-8")
    with pytest.raises(AssertionError, match="99-x.md:4: 89 columns"):
        test_every_chunk_line_fits_the_column(chapter)


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_no_chapter_writes_the_run_box_the_weave_adds(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    assert "{admonition} Build, run and test this chapter" not in text, \
        f"chapters/{path.name}: the weave adds this box; a second one repeats it"


def option_blocks(text: str):
    """(line, options) of every directive other than a chunk: its leading ':key: value' lines."""
    lines = text.split("\n")
    for number, line in enumerate(lines, 1):
        if re.match(r"^`{3,}\{(?!chunk\})[\w-]+\}", line):
            options = []
            for following in lines[number:]:
                if not following.startswith(":"):
                    break
                options.append(following[1:])  # ":alt: text" is "alt: text"
            yield number, "\n".join(options)


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_directive_options_are_yaml(path: Path) -> None:
    """MyST reads a directive's options as YAML: an unquoted ': ' in an alt text breaks the page."""
    yaml = pytest.importorskip("yaml")
    bad = []
    for number, options in option_blocks(path.read_text(encoding="utf-8")):
        try:
            yaml.safe_load(options)
        except yaml.YAMLError as error:
            bad.append(f"chapters/{path.name}:{number}: {str(error).splitlines()[0]}")
    assert not bad, "directive options that are not YAML:\n" + "\n".join(bad)


def test_a_colon_in_an_alt_text_is_caught(tmp_path: Path) -> None:
    chapter = tmp_path / "99-x.md"
    chapter.write_text("# 99. X\n\n```{figure} a.svg\n:alt: Top: a pattern\n\nCaption.\n```\n",
                       encoding="utf-8")
    with pytest.raises(AssertionError, match="99-x.md:3"):
        test_directive_options_are_yaml(chapter)
