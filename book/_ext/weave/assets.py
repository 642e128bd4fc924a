"""Offline assets: MathJax from Debian's libjs-mathjax, and Debian's furo made to work offline.

conf.py stages both into a folder of ``html_static_path`` before the build, so
the built book requests nothing from any other host and works from any folder.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

MATHJAX_SOURCE = Path("/usr/share/javascript/mathjax")
MATHJAX_PARTS = ["MathJax.js", "config/TeX-AMS_CHTML.js", "extensions", "jax/input/TeX", "jax/output/CommonHTML",
                 "jax/element", "fonts/HTML-CSS/TeX/woff"]
FURO_STATIC = Path("/usr/lib/python3/dist-packages/furo/theme/furo/static")
NORMALIZE_CSS = Path("/usr/share/javascript/normalize.css/normalize.css")


def write_if_changed(path: Path, text: str) -> None:
    if not path.is_file() or path.read_text(encoding="utf-8") != text:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")


def copy_if_newer(source: Path, dest: Path) -> None:
    if dest.is_file() and dest.stat().st_mtime >= source.stat().st_mtime and dest.stat().st_size == source.stat().st_size:
        return
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(source.resolve(), dest)


def stage_mathjax(target: Path) -> Path:
    """Copy the part of Debian's MathJax 2 the book uses into ``target/mathjax``; return ``target``."""
    dest = target / "mathjax"
    if not (MATHJAX_SOURCE / "MathJax.js").is_file():
        raise RuntimeError(f"MathJax is missing from {MATHJAX_SOURCE}: install libjs-mathjax ('make deps')")
    for part in MATHJAX_PARTS:
        source = MATHJAX_SOURCE / part
        if source.is_dir():
            for file in source.rglob("*"):
                if file.is_file():
                    copy_if_newer(file, dest / part / file.relative_to(source))
        else:
            copy_if_newer(source, dest / part)
    return target


def stage_theme_fixes(target: Path) -> Path:
    """Make Debian's furo work from any folder, offline, in dark mode: fix copies of its two assets.

    Debian's furo.css imports normalize.css from the absolute path /javascript/...
    (served only by a Debian web server), and its furo.js is an ES module loaded as
    a classic script. The fixed copies, in ``target``, replace the theme's own
    (files of html_static_path win over the theme's): normalize.css inlined, and
    the scrollspy it imports put in front of furo.js.
    """
    css = (FURO_STATIC / "styles" / "furo.css").read_text(encoding="utf-8")
    css = re.sub(r"@import url\(/javascript/normalize\.css/normalize\.css\);",
                 lambda _: NORMALIZE_CSS.read_text(encoding="utf-8") + "\n", css)
    # Its sass compiler also dropped the rule that makes "auto" follow the system's dark mode.
    dark = re.search(r'body\[data-theme="dark"\] \{(?P<vars>[^}]*)\}', css)
    if dark and "prefers-color-scheme" not in css:
        css += ('\n@media screen and (prefers-color-scheme: dark) {\n'
                f'  body:not([data-theme="light"]) {{{dark["vars"]}}}\n'
                '  body:not([data-theme="light"]) .only-light { display: none !important; }\n'
                '  body:not([data-theme="light"]) .only-dark { display: block !important; }\n}\n')
    js = (FURO_STATIC / "scripts" / "furo.js").read_text(encoding="utf-8")
    js = js.replace('import Gumshoe from "./gumshoe-patched.js";',
                    "// Gumshoe comes from gumshoe-patched.js, above.")
    gumshoe = (FURO_STATIC / "scripts" / "gumshoe-patched.js").read_text(encoding="utf-8")
    write_if_changed(target / "styles" / "furo.css", css)
    write_if_changed(target / "scripts" / "furo.js", gumshoe + "\n" + js)
    return target
