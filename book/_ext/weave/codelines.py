"""Code whose long lines wrap on a phone, each continuation under its own line's indent.

Every highlighted block (chunks, tangled files, plain code) comes from the
builder's highlighter; this wraps its output so that each line of code is a
``<span class="line">``, its leading white space a ``<span class="lead">`` and
its width in columns ``--i``. On a desktop the spans change nothing; the book's
CSS for narrow screens makes each line a block that wraps with a hanging indent
instead of scrolling sideways, and draws the indentation as a margin, capped so
that deeply indented lines keep room for their code.
"""

from __future__ import annotations

import re

PRE = re.compile(r"(?P<open><pre[^>]*>)(?P<body>.*?)(?P<close></pre>)", re.S)
TAG = re.compile(r"<[^>]+>")
# A line's leading white space: Pygments' own token, or text before any tag (after its empty first span).
LEAD = re.compile(r'^(?P<before>(?:<span></span>)?)(?:<span class="w">(?P<w>[ \t]+)</span>|(?P<t>[ \t]+))')


def wrap_lines(highlighted: str) -> str:
    """The highlighted HTML with each line of its ``<pre>`` in a ``span.line``.

    Pygments closes and reopens its spans at every line end, so each line is
    well-formed HTML on its own."""
    def lines(match: re.Match) -> str:
        body = match["body"]
        ends_with_newline = body.endswith("\n")
        out = []
        for line in (body[:-1] if ends_with_newline else body).split("\n"):
            lead = LEAD.match(line)
            style = ""
            if lead:
                space = lead["w"] or lead["t"]
                style = f' style="--i:{len(space.expandtabs())}"'
                line = f'{lead["before"]}<span class="lead">{space}</span>{line[lead.end():]}'
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
