"""The book's roles: ``{result}`` quotes what a program wrote, ``{chunkref}`` links a chunk.

* ``{result}`chNN/key``` is the value chapter NN's program wrote for ``key`` to
  ``figures/chNN/results.tsv``; a missing file or key is an error.
* ``{chunkref}`chNN:Name``` links to chunk ``Name`` of chapter NN from any page.
"""

from __future__ import annotations

from pathlib import Path

from docutils import nodes

from weave.links import chunk_link
from weave.state import ROOT, the_book


def results_path(short: str) -> Path:
    """Where chapter ``short`` ("ch01")'s program writes its results."""
    return ROOT / "figures" / short / "results.tsv"


def read_results(path: Path) -> dict[str, str]:
    """A results.tsv: one ``key<TAB>value`` a line."""
    return dict(line.split("\t", 1) for line in path.read_text(encoding="utf-8").splitlines() if "\t" in line)


def result_role(name, rawtext, text, lineno, inliner, options=None, content=None):
    """{result}`ch01/key`: the value the chapter's program wrote for ``key``."""
    env = inliner.document.settings.env
    chapter, _, key = text.partition("/")
    path = results_path(chapter)
    if not key or not path.is_file():
        msg = inliner.reporter.error(f"no results file {path.relative_to(ROOT)} for {{result}}`{text}` "
                                     f"(run 'make run-{chapter}')", line=lineno)
        return [inliner.problematic(rawtext, rawtext, msg)], [msg]
    env.note_dependency(str(path))
    values = read_results(path)
    if key not in values:
        msg = inliner.reporter.error(f"{path.relative_to(ROOT)} has no result '{key}'", line=lineno)
        return [inliner.problematic(rawtext, rawtext, msg)], [msg]
    return [nodes.inline(rawtext, values[key], classes=["result"])], []


def chunkref_role(name, rawtext, text, lineno, inliner, options=None, content=None):
    """{chunkref}`ch01:Name` links to chunk ``Name`` of chapter 1 from any page."""
    env = inliner.document.settings.env
    short, _, chunk_name = text.partition(":")
    chunk_name = " ".join(chunk_name.split())
    info = the_book().chapter(short.strip())
    if info is None or chunk_name not in info.model.chunks:
        msg = inliner.reporter.error(f"no chunk '{chunk_name}' in chapter '{short}'", line=lineno)
        return [inliner.problematic(rawtext, rawtext, msg)], [msg]
    return [chunk_link(env, info, chunk_name)], []
