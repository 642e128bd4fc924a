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
    }, "\n".join(map(str, problems))


def test_problems_name_what_is_wrong(fixture_report):
    problems, _ = fixture_report
    text = "\n".join(map(str, problems))
    assert "figures/missing.svg" in text
    assert "#nowhere" in text and "good.html" in text
    assert "absent.html" in text
    assert "no_such_function" in text
    assert "http://example.com/logo.png" in text


def test_links_and_pages_elsewhere_are_not_requests(fixture_report):
    problems, _ = fixture_report
    assert not [p for p in problems if p.page in ("good.html", "index.html", "sub/index.html")]
