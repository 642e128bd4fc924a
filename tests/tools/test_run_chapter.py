"""The run of a chapter's program: the published folder is the old run or the new one, whole."""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools"))
import run_chapter  # noqa: E402


def program(tmp_path: Path) -> Path:
    """A stand-in for a chapter's program: writes new.tsv into its --out folder."""
    path = tmp_path / "ch99_program"
    path.write_text('#!/bin/sh\nmkdir -p "$2" && echo new > "$2/new.tsv"\n')
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def arguments(tmp_path: Path) -> list[str]:
    runs = tmp_path / "run"
    return ["--program", str(program(tmp_path)), "--out", str(tmp_path / "figures/ch99"),
            "--stamp", str(runs / "ch99.stamp"), "--log", str(runs / "ch99.log"),
            "--lock", str(runs / ".lock")]


def old_run(tmp_path: Path) -> Path:
    out = tmp_path / "figures/ch99"
    out.mkdir(parents=True)
    (out / "old.tsv").write_text("old\n")
    return out


def test_a_run_replaces_the_published_folder(tmp_path):
    out = old_run(tmp_path)
    assert run_chapter.main(arguments(tmp_path)) == 0
    assert sorted(p.name for p in out.iterdir()) == ["new.tsv"]


# Before: Ctrl-C between moving the old folder aside and moving the new one in deleted the new
# one and left no published folder at all, while the message said "left as it was".
def test_ctrl_c_between_the_renames_leaves_the_old_run(tmp_path, monkeypatch, capsys):
    out = old_run(tmp_path)
    renames = []
    real_rename = os.rename

    def interrupted_rename(source, target):
        renames.append((source, target))
        if len(renames) == 2:            # the old run is aside, the new one not yet in
            raise KeyboardInterrupt
        return real_rename(source, target)

    monkeypatch.setattr(run_chapter.os, "rename", interrupted_rename)
    assert run_chapter.main(arguments(tmp_path)) == 130
    assert sorted(p.name for p in out.iterdir()) == ["old.tsv"]
    assert not list(out.parent.glob("ch99.*"))
    assert "left as it was" in capsys.readouterr().err
