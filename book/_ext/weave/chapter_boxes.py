"""What every chapter page gets besides its text: how to build, run and test it, and its files.

After its opening paragraphs, a chapter gets a box with the commands that
build, run and test it (and the machine its numbers were measured on), and a
box listing the files it writes with a download of them all, a zip file
written when the build finishes.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

from docutils import nodes

from book_model import BookChapter
from weave.doxygen import api_docname
from weave.links import chunk_link, page_link, relative_file_uri
from weave.roles import read_results, results_path
from weave.state import ROOT, the_api, the_book

DOWNLOADS = "downloads"        # folder of the HTML output holding each chapter's sources


def download_name(info: BookChapter) -> str:
    return f"{info.program}-sources.zip"


def run_box(env, info: BookChapter) -> nodes.Node:
    """The "Build, run and test this chapter" box."""
    box = nodes.admonition(classes=["tip", "chapter-run"])
    box += nodes.title(text="Build, run and test this chapter")
    items = nodes.bullet_list()

    def item(command: str, what: str) -> None:
        para = nodes.paragraph()
        para += nodes.literal(command, command)
        para += nodes.Text(" " + what)
        items.append(nodes.list_item("", para))

    item(f"make {info.short}", f"builds its program, build/bin/{info.program};")
    item(f"make run-{info.short}", f"runs it: the figures and the numbers quoted here go to figures/{info.short}/;")
    if (ROOT / "tests" / f"{info.program}_test.cpp").is_file():
        item(f"make test-{info.short}", f"runs its tests, tests/{info.program}_test.cpp;")
    item(f"build/bin/{info.program} --help", "lists its options (--out DIR, --seed N, --quick, ...).")
    box += items
    machine = machine_paragraph(env, info)
    if machine is not None:
        box += machine
    return box


def files_box(env, info: BookChapter) -> nodes.Node | None:
    """The "Files this chapter writes" box, with the download of them all."""
    files = the_book().files_of(info)
    if not files:
        return None
    written = nodes.admonition(classes=["note", "chapter-files"])
    written += nodes.title(text="Files this chapter writes")
    listing = nodes.bullet_list()
    for f in files:
        para = nodes.paragraph()
        para += page_link(f"tangled/{f.path}", f.docname)
        para += nodes.Text(" from ")
        para += chunk_link(env, info, f.root)
        if f.path in the_api():
            para += nodes.Text(" (")
            para += page_link("API", api_docname(f.path))
            para += nodes.Text(")")
        listing.append(nodes.list_item("", para))
    written += listing
    para = nodes.paragraph()
    archive = download_name(info)
    para += nodes.reference("", f"Download {archive}", refuri=relative_file_uri(env, f"{DOWNLOADS}/{archive}"),
                            classes=["chapter-download"])
    para += nodes.Text(f" ({len(files)} file{'s' if len(files) != 1 else ''}, as under tangled/).")
    written += para
    return written


def machine_paragraph(env, info: BookChapter) -> nodes.paragraph | None:
    """"Measured on ...": the machine the chapter's program recorded in its results.tsv."""
    path = results_path(info.short)
    if not path.is_file():
        return None
    env.note_dependency(str(path))
    values = read_results(path)
    if "cpu_model" not in values:
        return None
    para = nodes.paragraph(classes=["measured-on"])
    para += nodes.strong(text="Measured on ")
    para += nodes.Text(f"{values['cpu_model']}, {values.get('cpu_cores', '?')} cores; OpenBLAS "
                       f"{values.get('blas_core', '?')} core ({values.get('blas_core_origin', '?')}), "
                       f"{values.get('blas_threads', '?')} threads unless a figure names its own. "
                       "How the numbers are taken: ")
    para += page_link("Instruments", "chapters/00-instruments")
    para += nodes.Text(".")
    if os.environ.get("GITHUB_ACTIONS") == "true":
        para += nodes.Text(" This copy of the book was built by continuous integration on a "
                           "shared runner: its timings are that machine's, taken beside "
                           "other people's work.")
    return para


def add_boxes(env, info: BookChapter, doctree: nodes.document) -> None:
    """Put the chapter's boxes after its opening paragraphs (before its first section)."""
    boxes = [box for box in (run_box(env, info), files_box(env, info)) if box is not None]
    top = next(iter(doctree.findall(nodes.section)), None)
    if top is None:
        return
    sub = next((c for c in top.children if isinstance(c, nodes.section)), None)
    if sub is None:
        top.extend(boxes)
    else:
        position = top.index(sub)
        for k, box in enumerate(boxes):
            top.insert(position + k, box)


def write_downloads(app, exception) -> None:
    """Write each chapter's sources as a zip file (stable bytes, so rebuilds do not change it)."""
    if exception is not None or app.builder.format != "html":
        return
    book = the_book()
    out = Path(app.outdir) / DOWNLOADS
    out.mkdir(parents=True, exist_ok=True)
    for info in book.chapters:
        files = book.files_of(info)
        if not files:
            continue
        target = out / download_name(info)
        tmp = target.with_suffix(".partial")
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            for f in files:
                entry = zipfile.ZipInfo(f"{info.program}/{f.path}", date_time=(2000, 1, 1, 0, 0, 0))
                entry.external_attr = 0o644 << 16
                archive.writestr(entry, f.text, compress_type=zipfile.ZIP_DEFLATED)
        tmp.replace(target)
