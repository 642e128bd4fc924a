"""Figures: numbered per chapter, each with links to the code that drew it and its data."""

from __future__ import annotations


def add_links(env, doctree) -> None:
    pass


def setup(app) -> None:
    pass
