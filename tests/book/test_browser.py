"""The browser check must catch each kind of mistake, and only mistakes (a fixture site with one per page)."""

from pathlib import Path

import pytest

import browser

FIXTURE = Path(__file__).resolve().parent / "fixture"


@pytest.fixture(scope="module")
def fixture_report():
    problems, pages = browser.check_site(FIXTURE)
    return problems, pages


def test_every_page_of_the_fixture_is_loaded(fixture_report):
    _, pages = fixture_report
    assert pages == len(list(FIXTURE.rglob("*.html")))


def test_each_deliberate_mistake_is_found_and_nothing_else(fixture_report):
    problems, _ = fixture_report
    found = {(p.page, p.kind) for p in problems}
    assert found == {
        ("broken-image.html", "image"),
        ("broken-image.html", "request"),      # the 404 itself
        ("broken-anchor.html", "anchor"),
        ("broken-link.html", "link"),
        ("js-error.html", "javascript"),
        ("external.html", "external"),
        ("external.html", "image"),            # it never arrives: no name resolves but 127.0.0.1
        ("math-error.html", "math"),
        ("long-chunk-line.html", "chunk-line"),
        ("repeated-box.html", "admonition"),
        ("narrow-figure.html", "figure"),
        ("bare-figure.html", "figure"),
    }, "\n".join(map(str, problems))


def test_problems_name_what_is_wrong(fixture_report):
    problems, _ = fixture_report
    text = "\n".join(map(str, problems))
    assert "figures/missing.svg" in text
    assert "#nowhere" in text and "good.html" in text
    assert "absent.html" in text
    assert "no_such_function" in text
    assert "http://example.com/logo.png" in text
    assert "\\frac{1}{" in text
    assert "⟨Too long⟩ line 1: 89 columns" in text
    assert "'Build, run and test this chapter' is on the page twice" in text
    assert "ok.svg is 200 px wide in a 1400 px window" in text
    assert "ok.svg has no number, no link to its code, no link to its data" in text


def test_a_good_figure_box_and_line_pass(fixture_report):
    """good.html has a figure with its number and links, two different notes, a line of 88 columns."""
    problems, _ = fixture_report
    assert not [p for p in problems if p.page == "good.html"]


def test_links_and_pages_elsewhere_are_not_requests(fixture_report):
    problems, _ = fixture_report
    assert not [p for p in problems if p.page in ("good.html", "index.html", "sub/index.html")]


BOOK = Path(__file__).resolve().parents[2] / "build" / "book" / "html"


@pytest.mark.skipif(not (BOOK / "index.html").is_file(), reason="the book is not built (make book)")
def test_copy_expanded_puts_the_whole_expanded_chunk_on_the_clipboard():
    import json

    chapter = sorted((BOOK / "chapters").glob("*.html"))[0].relative_to(BOOK).as_posix()
    server = browser.LocalServer(BOOK)
    chromium = browser.Browser(1)
    try:
        tab = chromium.tabs[0]
        tab.call("Page.bringToFront")
        tab.call("Browser.grantPermissions", {"permissions": ["clipboardReadWrite", "clipboardSanitizedWrite"],
                                              "origin": server.origin})
        chromium.visit([(chapter, f"{server.origin}/{chapter}")], lambda t: None)
        # The first chunk that uses others: its expanded text is longer than what the page shows.
        x, y, expected = json.loads(tab.evaluate("""(() => {
          const chunk = Array.from(document.querySelectorAll('div.chunk')).find(c => c.querySelector('a.chunk-ref'));
          const button = chunk.querySelector('button.chunk-copy');
          button.scrollIntoView({block: 'center', behavior: 'instant'});
          const r = button.getBoundingClientRect();
          return JSON.stringify([r.x + r.width / 2, r.y + r.height / 2,
                                 document.getElementById(button.dataset.target).textContent]);
        })()"""))
        for kind in ("mousePressed", "mouseReleased"):  # a real click: the clipboard wants a user's gesture
            tab.call("Input.dispatchMouseEvent", {"type": kind, "x": x, "y": y, "button": "left", "clickCount": 1})
        chromium.devtools.pump(0.3)
        copied = tab.evaluate("navigator.clipboard.readText()")
    finally:
        chromium.close()
        server.close()
    assert "⟨" not in expected.split("\n")[0]
    assert copied.strip() == expected.strip()
    assert len(copied.split("\n")) > 3


@pytest.mark.skipif(not (BOOK / "_static" / "mathjax").is_dir(), reason="the book is not built (make book)")
def test_math_mathjax_cannot_typeset_is_found(tmp_path):
    """With the book's own MathJax: a TeX error and an undefined macro are problems, good math is not."""
    import re

    page = (BOOK / "chapters" / "01-self-attention.html").read_text(encoding="utf-8")
    scripts = "".join(re.findall(r'<script type="text/x-mathjax-config">.*?</script>|'
                                 r'<script[^>]*src="[^"]*mathjax/MathJax\.js[^"]*"[^>]*></script>', page, re.S))
    (tmp_path / "_static").symlink_to(BOOK / "_static")
    head = f'<!doctype html><html><head><meta charset="utf-8"><link rel="icon" href="data:,">' \
           f'{scripts.replace("../_static", "_static")}</head><body>'
    for name, math in (("index", r"\(\frac{1}{2}\)"), ("error", r"\(\frac{1}{2\)"), ("undefined", r"\(\nosuchmacro x\)")):
        (tmp_path / f"{name}.html").write_text(f"{head}<p>{math}</p></body></html>", encoding="utf-8")
    problems, _ = browser.check_site(tmp_path)
    assert {(p.page, p.kind) for p in problems} == {("error.html", "math"), ("undefined.html", "math")}, \
        "\n".join(map(str, problems))
    assert any("nosuchmacro" in p.detail for p in problems)
