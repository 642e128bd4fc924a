"""Sphinx 5.3's C++ domain works out a declaration's id again at every lookup.

Each cross-reference that names a symbol of the book compares the key with the id of
every declaration in its scope, and the id is rebuilt from the declaration's syntax tree
each time: the book's API reference made that a third of Sphinx's time. The id depends
only on the declaration and the symbol it belongs to, so it is kept per declaration and
worked out again only when the symbol changes (as when parallel reads are merged).
"""

from __future__ import annotations

from sphinx.domains import cpp


def remember_declaration_ids() -> None:
    original = cpp.ASTDeclaration.get_newest_id
    if getattr(original, "remembered", False):
        return

    def get_newest_id(self) -> str:
        kept = self.__dict__.get("_weave_newest_id")
        if kept is not None and kept[0] is self.symbol:
            return kept[1]
        newest = original(self)
        self._weave_newest_id = (self.symbol, newest)
        return newest

    get_newest_id.remembered = True
    cpp.ASTDeclaration.get_newest_id = get_newest_id
