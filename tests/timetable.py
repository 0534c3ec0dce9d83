"""Where the test time goes: a Markdown table per test module from pytest's JUnit XML files.

    make test PYTEST_ARGS=--junitxml=.mlcp/after.xml
    python -m tests.timetable before.xml after.xml

Each column pair is one run: the tests of the module and the minutes they took, setup and
teardown included (so a module's shared fixture, such as a champion trained once, counts in
the module that first asked for it, and the session stack in the first test of each worker).
With two workers the minutes of a run add up to more than its wall time: the closing line
(pytest's, and `time`'s) is the wall time. Standard library only.
"""

from __future__ import annotations

import sys
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path


def per_module(path: Path) -> tuple[Counter, Counter, float]:
    """Tests and seconds per module of one JUnit XML file, and the run's own time."""
    root = ET.parse(path).getroot()
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    tests, seconds = Counter(), Counter()
    for case in root.iter("testcase"):
        module = case.get("classname", "").split(".")[-1] or "?"
        tests[module] += 1
        seconds[module] += float(case.get("time") or 0)
    return tests, seconds, float(suite.get("time") or 0)


def table(paths: list[Path]) -> str:
    runs = [per_module(p) for p in paths]
    modules = sorted(
        {m for tests, _, _ in runs for m in tests},
        key=lambda m: (-max(r[1][m] for r in runs), m),
    )
    head = "| module | " + " | ".join(f"tests | min ({p.stem})" for p in paths) + " |"
    rule = "|---|" + "---:|---:|" * len(paths)
    rows = [
        f"| `{m}` | " + " | ".join(f"{t[m]} | {s[m] / 60:.1f}" for t, s, _ in runs) + " |"
        for m in modules
    ]
    total = "| **sum** | " + " | ".join(
        f"{sum(t.values())} | {sum(s.values()) / 60:.1f}" for t, s, _ in runs
    )
    wall = "| **wall (pytest)** | " + " | ".join(f" | {w / 60:.1f}" for _, _, w in runs)
    return "\n".join([head, rule, *rows, total + " |", wall + " |"])


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args:
        print(__doc__.strip().splitlines()[0], file=sys.stderr)
        print("usage: python -m tests.timetable RUN.xml [RUN.xml ...]", file=sys.stderr)
        return 2
    print(table([Path(a) for a in args]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
