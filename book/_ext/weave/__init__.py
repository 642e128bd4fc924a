"""Weave: how the book's chapters become pages.

Everything here reads the chapters through the tangler's own model, the one
entry ``read_book`` of ``tools/book_model.py``, so the book and the C++ cannot
disagree. It discovers chapters, chunks, files and headers on its own; a new
chapter needs nothing here. One module a job:

* ``state``: the book read once per build, and which pages to read again;
* ``doxygen``: what Doxygen documented, tied to the chunk parts (no Sphinx);
* ``links``: anchors and links between pages;
* ``chunk``: the ``{chunk}`` directive;
* ``roles``: ``{result}`` and ``{chunkref}``;
* ``indexes``: the front page's map, the chunk and file indexes;
* ``pages``: the pages of tangled files and headers, written before the build;
* ``chapter_boxes``: each chapter's build/run/test box and files box;
* ``figures``: figure numbers and each figure's links to its code and data;
* ``codelines``: code lines that wrap with a hanging indent on a phone;
* ``assets``: MathJax and the theme, offline (used by conf.py);
* ``speed``: Sphinx's C++ domain, made to remember declaration ids.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "tools"))   # book_model, chunks

from sphinx.util import logging  # noqa: E402

from weave import chapter_boxes, codelines, figures, pages, speed, state  # noqa: E402
from weave.chunk import ChunkDirective  # noqa: E402
from weave.doxygen import namespaces  # noqa: E402
from weave.indexes import ChapterList, ChunkIndex, FileIndex  # noqa: E402
from weave.roles import chunkref_role, result_role  # noqa: E402

logger = logging.getLogger(__name__)


def on_builder_inited(app) -> None:
    book = state.load()
    for problem in book.errors:
        logger.warning(f"tangle: {problem}")
    pages.generate_pages(app)
    # Namespaces have no page of their own; a signature's "attn::" names one, so it is not a broken link.
    for name in namespaces(state.DOXYGEN_XML):
        app.config.nitpick_ignore.append(("cpp:identifier", name))


def on_doctree_read(app, doctree) -> None:
    """A chapter gets its boxes; a figure, anywhere, its links to the code and data behind it."""
    info = state.the_book().chapter(app.env.docname)
    if info is not None:
        print(f"  weave    {info.path}", flush=True)
        chapter_boxes.add_boxes(app.env, info, doctree)
    figures.add_links(app.env, doctree)


def setup(app):
    app.add_directive("chapters", ChapterList)
    app.add_directive("chunk", ChunkDirective)
    app.add_directive("chunk-index", ChunkIndex)
    app.add_directive("file-index", FileIndex)
    app.add_directive("tangled-file", pages.TangledFile)
    app.add_directive("api-header", pages.ApiHeader)
    app.add_directive("api-pages", pages.ApiPages)
    app.add_directive("tangled-output", pages.TangledOutput)
    app.add_directive("file-pages", pages.FilePages)
    app.add_role("result", result_role)
    app.add_role("chunkref", chunkref_role)
    app.connect("builder-inited", on_builder_inited)
    app.connect("env-get-outdated", state.on_env_get_outdated)
    app.connect("env-get-outdated", state.forget_vanished_doxygen_files, priority=400)
    app.connect("doctree-read", on_doctree_read)
    app.connect("build-finished", chapter_boxes.write_downloads)
    speed.remember_declaration_ids()
    figures.setup(app)
    codelines.setup(app)
    app.add_js_file("book.js")
    return {"version": "3", "parallel_read_safe": True, "parallel_write_safe": True}
