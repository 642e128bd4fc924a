"""Figures: numbered by chapter, each linked to the code that drew it and to the data it shows.

A chapter's program writes ``figures/chNN/NAME.svg`` (or ``.gif``) and the
numbers behind it in ``NAME.tsv``. Every figure of the book gets, under its
caption, a link to the part of the program that draws it (the one part whose
code names the file; the program itself when none or several do) and a link to
its ``.tsv``, copied into the HTML output so that the link works offline.

With ``numfig``, Sphinx numbers figures across the whole book (Figure 97);
``number_by_chapter`` makes that Figure 15.3 on chapter 15's page.
"""

from __future__ import annotations

import re
from pathlib import Path

from docutils import nodes

from weave.assets import copy_if_newer
from weave.links import chunk_link, part_label, relative_file_uri
from weave.state import ROOT, the_book

FIGURE_FILE = re.compile(r"(?:^|/)figures/(?P<short>ch\d\d)/(?P<name>[^/]+\.(?:svg|gif|png))$")
DRAWN = (".svg", ".gif", ".png")


def figure_file(figure: nodes.figure) -> re.Match | None:
    """``figures/chNN/NAME.svg`` of the figure's image, if the figure shows one a program drew."""
    image = next(iter(figure.findall(nodes.image)), None)
    return FIGURE_FILE.search(image["uri"]) if image is not None else None


def links(env, short: str, name: str) -> nodes.paragraph | None:
    """"Code: ⟨Draw the pattern⟩ · Data: pattern.tsv" for figure ``name`` of chapter ``short``."""
    book = the_book()
    chapter = book.chapter(short)
    if chapter is None:
        return None
    para = nodes.paragraph(classes=["figure-links"])
    source = book.figure_source(chapter, name)
    if source.part is not None:
        para += nodes.Text("Code: ")
        link = chunk_link(env, chapter, source.part.name, source.part.index, part_label(source.part))
        link["classes"] += ["figure-code"] + ([] if source.exact else ["figure-code-program"])
        para += link
    data = Path(name).with_suffix(".tsv").name
    if (ROOT / "figures" / short / data).is_file():
        if len(para):
            para += nodes.Text(" · ")
        para += nodes.Text("Data: ")
        para += nodes.reference("", data, refuri=relative_file_uri(env, f"figures/{short}/{data}"),
                                classes=["figure-data"])
    return para if len(para) else None


def add_links(env, doctree: nodes.document) -> None:
    """Put the links under the caption of every figure a chapter's program drew."""
    for figure in doctree.findall(nodes.figure):
        found = figure_file(figure)
        para = links(env, found["short"], found["name"]) if found else None
        if para is None:
            continue
        legend = next((c for c in figure.children if isinstance(c, nodes.legend)), None)
        if legend is None:
            legend = nodes.legend()
            figure += legend
        legend += para


def copy_data(app, exception) -> None:
    """Copy the data of every drawn figure (``figures/chNN/NAME.tsv``) into the HTML output."""
    if exception is not None or app.builder.format != "html":
        return
    for data in sorted((ROOT / "figures").glob("ch[0-9][0-9]/*.tsv")):
        if any(data.with_suffix(suffix).is_file() for suffix in DRAWN):
            copy_if_newer(data, Path(app.outdir) / data.relative_to(ROOT))


def restore_book_numbers(app, env) -> list[str]:
    """Before Sphinx numbers the figures: give it back its own numbers of the last build, so
    that it sees which pages' numbers changed (not every page, as it would against ours)."""
    if hasattr(env, "attn_book_fignumbers"):
        env.toc_fignumbers = env.attn_book_fignumbers
    return []


def number_by_chapter(app, env) -> list[str]:
    """After Sphinx numbered the figures (and tables, code) across the book: number them within
    each chapter, prefixed by its number, in the order Sphinx found them."""
    # Sphinx's numbers are a tuple per figure, shown joined by "." ((7, 3) is "7.3").
    env.attn_book_fignumbers = env.toc_fignumbers
    numbered = {}
    for docname, kinds in env.toc_fignumbers.items():
        chapter = the_book().chapter(docname)
        if chapter is None or not chapter.number:
            numbered[docname] = kinds
            continue
        prefix = (int(chapter.number),) if int(chapter.number) else ()   # the appendix: 1, 2, ...
        numbered[docname] = {kind: {ident: prefix + (k + 1,)
                                    for k, ident in enumerate(sorted(numbers, key=numbers.get))}
                             for kind, numbers in kinds.items()}
    env.toc_fignumbers = numbered
    return []


def setup(app) -> None:
    app.connect("env-get-updated", restore_book_numbers, priority=400)
    app.connect("env-get-updated", number_by_chapter, priority=600)
    app.connect("build-finished", copy_data)
