#!/usr/bin/python3
"""Run the book's test executables (Boost.Test) and, optionally, the tools' pytest suite.

    tools/run_tests.py [--pytest DIR] build/tests/ch01_self_attention_test ...

Each test case counts once. Prints one line per suite and ends with
``tests: N passed, N failed``; exits 1 if anything failed.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path


def run_boost(binary: str) -> tuple[int, int]:
    """Run one Boost.Test executable; return (passed, failed) test cases."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.xml"
        result = subprocess.run([binary, "--report_format=XML", "--report_level=detailed",
                                 f"--report_sink={report}", "--log_level=error"],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        passed = failed = 0
        if report.is_file() and report.stat().st_size:
            root = ET.parse(report).getroot()
            cases = root.iter("TestCase")
            for case in cases:
                if case.get("result") == "passed":
                    passed += 1
                elif case.get("result") != "skipped":
                    failed += 1
    if result.returncode != 0 or failed:
        print(result.stdout, end="")
        if result.returncode != 0 and not failed:
            failed = 1  # crashed before reporting a failing case
    name = Path(binary).name
    print(f"  {name:<40} {passed} passed, {failed} failed")
    return passed, failed


def run_pytest(directory: str) -> tuple[int, int]:
    with tempfile.TemporaryDirectory() as tmp:
        junit = Path(tmp) / "junit.xml"
        result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                                 f"--junitxml={junit}", directory],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        passed = failed = 0
        if junit.is_file():
            for suite in ET.parse(junit).getroot().iter("testsuite"):
                total = int(suite.get("tests", 0))
                bad = int(suite.get("failures", 0)) + int(suite.get("errors", 0))
                skipped = int(suite.get("skipped", 0))
                passed += total - bad - skipped
                failed += bad
    if result.returncode not in (0, 5) or failed:
        print(result.stdout, end="")
        failed = max(failed, 1)
    print(f"  {'pytest ' + directory:<40} {passed} passed, {failed} failed")
    return passed, failed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pytest", action="append", default=[], help="a pytest directory to run too")
    parser.add_argument("binaries", nargs="*")
    args = parser.parse_args()
    passed = failed = 0
    for directory in args.pytest:
        p, f = run_pytest(directory)
        passed, failed = passed + p, failed + f
    for binary in args.binaries:
        p, f = run_boost(binary)
        passed, failed = passed + p, failed + f
    print(f"tests: {passed} passed, {failed} failed")
    return 1 if failed or not passed else 0


if __name__ == "__main__":
    sys.exit(main())
