"""Code whose long lines wrap on a phone, each continuation under its own line's indent.

Every highlighted block (chunks, tangled files, plain code) comes from the
builder's highlighter; this wraps its output so that each line of code is a
``<span class="line">`` that knows its indentation (``--i``, in columns). On a
desktop the spans change nothing; the book's CSS for narrow screens makes them
blocks that wrap with a hanging indent instead of scrolling sideways.
"""

from __future__ import annotations

import re

PRE = re.compile(r"(?P<open><pre[^>]*>)(?P<body>.*?)(?P<close></pre>)", re.S)
TAG = re.compile(r"<[^>]+>")


def wrap_lines(highlighted: str) -> str:
    """The highlighted HTML with each line of its ``<pre>`` in a ``span.line``.

    Pygments closes and reopens its spans at every line end, so each line is
    well-formed HTML on its own."""
    def lines(match: re.Match) -> str:
        body = match["body"]
        ends_with_newline = body.endswith("\n")
        out = []
        for line in (body[:-1] if ends_with_newline else body).split("\n"):
            text = TAG.sub("", line).expandtabs()
            indent = len(text) - len(text.lstrip(" "))
            style = f' style="--i:{indent}"' if indent else ""
            out.append(f'<span class="line"{style}>{line}\n</span>')
        if out and not ends_with_newline:
            out[-1] = out[-1][:-len("\n</span>")] + "</span>"
        return match["open"] + "".join(out) + match["close"]

    return PRE.sub(lines, highlighted, count=1)


def wrap_highlighter(app) -> None:
    """Make the HTML builder's highlighter wrap the lines of every block it highlights."""
    highlighter = getattr(app.builder, "highlighter", None)
    if highlighter is None or getattr(highlighter, "attn_lines", False):
        return
    original = highlighter.highlight_block

    def highlight_block(*args, **kwargs) -> str:
        return wrap_lines(original(*args, **kwargs))

    highlighter.highlight_block = highlight_block
    highlighter.attn_lines = True


def setup(app) -> None:
    app.connect("builder-inited", wrap_highlighter)
