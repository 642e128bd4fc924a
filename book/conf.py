"""Sphinx configuration of the book (build with `make book`)."""

import sys
from pathlib import Path

BOOK = Path(__file__).resolve().parent
ROOT = BOOK.parent
sys.path.insert(0, str(BOOK / "_ext"))

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
exclude_patterns = ["_build", "Doxyfile", "_ext", "_static/**"]
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist"]
myst_heading_anchors = 3
source_suffix = {".md": "markdown"}

# The C++ domain cannot resolve names from other libraries; only the book's own are checked.
nitpicky = True
nitpick_ignore_regex = [
    (r"cpp:.*", r"(xt|std|boost|Gnuplot)(::.*)?"),
    (r"cpp:.*", r"[A-Z][A-Za-z]*"),  # template parameters: T, F, Body, ...
    (r"cpp:identifier", r"attn(::plot)?"),  # namespaces: listed as sections, not declarations
]

breathe_projects = {"attn": str(ROOT / "build" / "doxygen" / "xml")}
breathe_default_project = "attn"
breathe_domain_by_extension = {"hpp": "cpp"}
breathe_show_include = False

html_theme = "furo"
html_title = "Attention, in C++"
html_static_path = ["_static"]
html_css_files = ["book.css"]
html_last_updated_fmt = None
html_copy_source = False
pygments_style = "friendly"
pygments_dark_style = "monokai"
