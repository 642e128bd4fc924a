"""Sphinx configuration of the book (build with `make book`)."""

import sys
from pathlib import Path

BOOK = Path(__file__).resolve().parent
ROOT = BOOK.parent
sys.path.insert(0, str(BOOK / "_ext"))

from weave import assets  # noqa: E402

project = "Attention, in C++"
author = "The authors of this book"
copyright = "2026, the authors"

extensions = [
    "myst_parser",
    "breathe",
    "sphinx_copybutton",
    "weave",
]

root_doc = "index"
exclude_patterns = ["_build", "Doxyfile", "_ext", "_static/**", "**/README.md"]
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist"]
myst_heading_anchors = 3
source_suffix = {".md": "markdown"}
# Figures are numbered within their chapter (the weave makes Sphinx's book-wide numbers 7.1, 7.2, ...).
numfig = True
numfig_format = {"figure": "Figure %s", "table": "Table %s", "code-block": "Listing %s", "section": "Section %s"}

# The C++ domain cannot resolve names from other libraries; only the book's own are checked.
nitpicky = True
nitpick_ignore_regex = [
    (r"cpp:.*", r"(xt|std|boost|Gnuplot)(::.*)?"),
    (r"cpp:.*", r"[A-Z][A-Za-z]*(<[A-Za-z, ]*>)?"),  # template parameters (T, F, Body, ...), Name<T>
]
# The namespaces Doxygen finds (attn, attn::plot, ...) are added to nitpick_ignore by the weave:
# they have no page of their own, only their members do.

breathe_projects = {"attn": str(ROOT / "build" / "doxygen" / "xml")}
breathe_default_project = "attn"
breathe_domain_by_extension = {"hpp": "cpp"}
breathe_show_include = False

html_theme = "furo"
html_title = "Attention, in C++"
html_favicon = "_static/favicon.svg"
# MathJax 2 from Debian's libjs-mathjax, only the files the book uses, copied next to the pages,
# and Debian's furo made to work offline from any folder: the book requests nothing from any other host.
STAGED = ROOT / "build" / "book" / "static"
assets.stage_mathjax(STAGED)
assets.stage_theme_fixes(STAGED)
html_static_path = ["_static", str(STAGED)]
mathjax_path = "mathjax/MathJax.js?config=TeX-AMS_CHTML"
myst_update_mathjax = False
mathjax2_config = {
    "tex2jax": {"inlineMath": [["\\(", "\\)"]], "displayMath": [["\\[", "\\]"]], "processEscapes": False},
    "CommonHTML": {"linebreaks": {"automatic": False}},
    "messageStyle": "none",
    "menuSettings": {"zoom": "None"},
    "showMathMenu": False,
}
html_css_files = ["book.css"]
html_theme_options = {"navigation_with_keys": True}

# The chunks' own "copy expanded" button replaces sphinx-copybutton's inside chunks.
copybutton_selector = "div.highlight pre:not(.chunk-pre)"
copybutton_prompt_text = "$ "
html_last_updated_fmt = None
html_copy_source = False
pygments_style = "friendly"
pygments_dark_style = "monokai"
