#!/usr/bin/python3
"""Run one chapter's program for the build, and say which published runs are no longer what they were.

    tools/run_chapter.py --program build/bin/ch01_x --out figures/ch01 --stamp build/run/ch01.stamp \\
                         --log build/run/ch01.log --lock build/run/.lock [--input FILE ...]
    tools/run_chapter.py --stale --runs build/run --figures figures ch00 ch01 ...

A run writes its figures into a fresh folder that replaces ``--out`` only when
the program succeeds, one run at a time (``--lock``). The stamp records what
the run was made of and what it published: a hash of the program and of every
input, and the name, size and modification time of every published file. The
run is skipped (the stamp refreshed, the figures kept) when the program and
inputs hash as before and the folder is as published: a relinked but identical
program reruns nothing. ``--stale`` prints the chapters whose published folder
is missing or no longer as the stamp says (a program run by hand into it, say),
which the Makefile then runs again.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def published(folder: Path) -> dict[str, list[int]] | None:
    """name -> [size, mtime in ns] of every file in ``folder``; None if it is not a folder."""
    if not folder.is_dir() or folder.is_symlink():
        return None
    found = {}
    for path in sorted(folder.rglob("*")):
        if path.is_symlink() or not path.is_dir():
            info = path.lstat()
            found[path.relative_to(folder).as_posix()] = [info.st_size, info.st_mtime_ns]
    return found


def read_stamp(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def stale(runs: Path, figures: Path, chapters: list[str]) -> list[str]:
    """The chapters with a stamp whose published folder is missing or changed since."""
    found = []
    for short in chapters:
        stamp = read_stamp(runs / f"{short}.stamp")
        if stamp is None:
            continue            # no stamp (or an unreadable one): make runs it anyway
        if published(figures / short) != stamp.get("figures"):
            found.append(short)
    return found


def write_stamp(path: Path, record: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def run(args: argparse.Namespace) -> int:
    program, out, stamp_path = Path(args.program), Path(args.out), Path(args.stamp)
    stamp_path.parent.mkdir(parents=True, exist_ok=True)
    record = {"program": str(program), "program_sha256": sha256_file(program), "args": args.arg,
              "inputs": {name: sha256_file(Path(name)) for name in sorted(args.input)}}
    old = read_stamp(stamp_path)
    if (old is not None and all(old.get(k) == v for k, v in record.items())
            and old.get("figures") is not None and published(out) == old["figures"]):
        print(f"  run      {program.name}: program and inputs unchanged, {out} kept", flush=True)
        os.utime(stamp_path)
        return 0
    print(f"  run      {program.name} -> {out} (timed: alone, after the build)", flush=True)
    partial = out.with_name(out.name + ".partial")
    previous = out.with_name(out.name + ".previous")
    shutil.rmtree(partial, ignore_errors=True)
    partial.parent.mkdir(parents=True, exist_ok=True)
    log = Path(args.log)
    try:
        with open(args.lock, "w") as lock, log.open("w") as log_file:
            fcntl.flock(lock, fcntl.LOCK_EX)
            done = subprocess.run([str(program), "--out", str(partial), *args.arg],
                                  stdout=log_file, stderr=subprocess.STDOUT)
        if done.returncode != 0:
            sys.stdout.write(log.read_text(encoding="utf-8", errors="replace"))
            print(f"run: {program} failed (exit {done.returncode}); {out} left as it was", file=sys.stderr)
            shutil.rmtree(partial, ignore_errors=True)
            stamp_path.unlink(missing_ok=True)
            return 1
        shutil.rmtree(previous, ignore_errors=True)
        if out.exists() or out.is_symlink():
            os.rename(out, previous)
        os.rename(partial, out)
        shutil.rmtree(previous, ignore_errors=True)
    except KeyboardInterrupt:
        if not (out.exists() or out.is_symlink()) and previous.exists():
            os.rename(previous, out)  # interrupted between the two renames: undo the first
        shutil.rmtree(partial, ignore_errors=True)
        stamp_path.unlink(missing_ok=True)
        print(f"run: interrupted; {out} left as it was", file=sys.stderr)
        return 130
    record["figures"] = published(out)
    write_stamp(stamp_path, record)
    print(f"  figures  {out}: {len(record['figures'])} files", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("chapters", nargs="*", help="with --stale: the chapters to look at (ch00 ch01 ...)")
    parser.add_argument("--stale", action="store_true", help="print the chapters whose published run changed")
    parser.add_argument("--runs", default="build/run", help="with --stale: the folder of run stamps")
    parser.add_argument("--figures", default="figures", help="with --stale: where runs publish")
    parser.add_argument("--program")
    parser.add_argument("--out")
    parser.add_argument("--stamp")
    parser.add_argument("--log")
    parser.add_argument("--lock")
    parser.add_argument("--input", action="append", default=[], help="a file the run reads (repeatable)")
    parser.add_argument("--arg", action="append", default=[], help="an argument for the program (repeatable)")
    args = parser.parse_args(argv)
    if args.stale:
        print(" ".join(stale(Path(args.runs), Path(args.figures), args.chapters)))
        return 0
    missing = [f"--{k}" for k in ("program", "out", "stamp", "log", "lock") if getattr(args, k) is None]
    if missing:
        parser.error(f"missing {' '.join(missing)}")
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
