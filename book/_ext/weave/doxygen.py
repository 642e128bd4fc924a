"""What Doxygen documented in each header, each entry tied to the chunk part that writes it.

Reads Doxygen's XML (``build/doxygen/xml``) and the book model; knows nothing
of Sphinx, so it can be tested on its own.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

from book_model import Book
from chunks import Part

DIRECTIVES = {"function": "doxygenfunction", "class": "doxygenclass", "struct": "doxygenstruct",
              "typedef": "doxygentypedef", "variable": "doxygenvariable", "enum": "doxygenenum"}


@dataclass
class ApiEntry:
    """A documented declaration of a header, and the chunk part that writes it."""

    kind: str                 # "function", "class", "struct", "typedef", ...
    name: str                 # qualified, e.g. "attn::softmax_rows"
    args: str
    line: int
    refid: str = ""           # Doxygen's id, which Breathe makes an anchor of
    header: str = ""          # tangled path of the header, e.g. "include/attn/measure.hpp"
    part: Part | None = None
    overloaded: bool = False
    member: bool = False      # a class's member: shown on its class's entry, linked on its own

    @property
    def directive(self) -> str:
        return DIRECTIVES[self.kind]


Api = dict[str, list[ApiEntry]]   # header path (under tangled/) -> its entries, in file order


def compounds(xml: Path, kinds: tuple[str, ...]) -> list[Path]:
    """The XML files of Doxygen's current compounds of these kinds (as its index lists them)."""
    index = xml / "index.xml"
    if not index.is_file():
        return []
    return [xml / f"{c.get('refid')}.xml" for c in ET.parse(index).getroot().findall("compound")
            if c.get("kind") in kinds and (xml / f"{c.get('refid')}.xml").is_file()]


def namespaces(xml: Path) -> list[str]:
    """The namespaces Doxygen found (attn, attn::plot, ...)."""
    found = []
    for xml_file in compounds(xml, ("namespace",)):
        compound = ET.parse(xml_file).getroot().find("compounddef")
        if compound is not None:
            found.append(compound.findtext("compoundname"))
    return found


def _documented(member: ET.Element) -> bool:
    return bool("".join(member.find("briefdescription").itertext()).strip() or
                "".join(member.find("detaileddescription").itertext()).strip())


def _declarations(compound: ET.Element) -> list[tuple]:
    """(kind, name, args, location, refid) of what a compound declares that the book documents."""
    found = []
    if compound.get("kind") in ("class", "struct"):
        found.append((compound.get("kind"), compound.findtext("compoundname"), "", compound.find("location"),
                      compound.get("id")))
        for member in compound.findall("sectiondef/memberdef"):
            if _documented(member) and member.get("prot") == "public" and \
                    member.get("kind") in ("function", "variable"):
                found.append(("member", member.findtext("qualifiedname"), member.findtext("argsstring") or "",
                              member.find("location"), member.get("id")))
    elif compound.get("kind") == "namespace":
        for member in compound.iter("memberdef"):
            if member.get("kind") not in ("function", "typedef", "variable", "enum"):
                continue
            found.append((member.get("kind"), member.findtext("qualifiedname"),
                          member.findtext("argsstring") or "", member.find("location"), member.get("id")))
    return found


def read_api(book: Book, xml: Path) -> Api:
    """Every header's documented entries (an empty list for a header Doxygen has not read)."""
    api: Api = {path: [] for path in book.files if path.startswith("include/") and path.endswith(".hpp")}
    if not (xml / "index.xml").is_file():
        return api
    seen: set[tuple[str, str]] = set()
    for xml_file in compounds(xml, ("namespace", "class", "struct")):
        compound = ET.parse(xml_file).getroot().find("compounddef")
        if compound is None:
            continue
        for kind, name, args, location, refid in _declarations(compound):
            if location is None or "::detail" in name or (name, args) in seen:
                continue
            seen.add((name, args))
            path = "include/" + location.get("file", "")
            if path not in api:
                continue
            line = int(location.get("line", "0"))
            api[path].append(ApiEntry(kind, name, args, line, refid, path, book.part_of_line(path, line),
                                      member=kind == "member"))
    names = [e.name for entries in api.values() for e in entries if not e.member]
    for entries in api.values():
        entries.sort(key=lambda e: e.line)
        for entry in entries:
            entry.overloaded = names.count(entry.name) > 1  # overloads may live in different headers
    return api


def entries_of_part(api: Api, part: Part) -> list[ApiEntry]:
    return [e for entries in api.values() for e in entries if e.part is part]


def api_docname(path: str) -> str:
    """The page of a header's API: "include/attn/x.hpp" -> "api/x"."""
    return "api/" + Path(path).stem
