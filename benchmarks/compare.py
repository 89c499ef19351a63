"""Every benchmark on two versions of framebroker, in one run: ``python benchmarks/compare.py REF``.

``REF`` (a commit, a tag, a branch) is checked out into a temporary git worktree; each
benchmark then runs on it and on this checkout, alternately and ``--rounds`` times, so both
see the same machine at about the same moment. The same virtual environment runs both: the
version under test comes first on ``PYTHONPATH``, and the servers a benchmark starts inherit
it. Printed: each benchmark's own tables, then a comparison of every numeric cell the two
versions' tables share (the best round of each, where a column's header says whether higher
is better, else the median), as after/before.

Each version runs its own benchmark scripts (a script imports the modules of its version);
a benchmark that fails on either version is reported and skipped.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

DEFAULTS: dict[str, list[str]] = {
    "bench_tracker.py": [],
    "bench_rest.py": ["--seconds", "4"],
    "bench_frames.py": [],
    "bench_socketio.py": [],
    "bench_live_fanout.py": [],
    "bench_webrtc.py": [],
    "bench_people.py": ["--seconds", "10", "--listeners", "0", "10"],
}
"""The benchmarks compared, each shortened where it takes options for it."""

HIGHER_IS_BETTER = re.compile(r"req/s|fps|frames/s|per s|throughput|/s\b", re.I)
LOWER_IS_BETTER = re.compile(r"ms|µs|us\b|latency|p50|p99|cpu|seconds|time", re.I)

Table = dict[tuple[str, ...], dict[str, float]]


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def tables(text: str) -> dict[int, tuple[list[str], Table]]:
    """Markdown tables in a benchmark's output: per table, its header and, by the row's
    non-numeric cells, its numeric ones by column."""
    out: dict[int, tuple[list[str], Table]] = {}
    lines = text.splitlines()
    i = number = 0
    while i < len(lines) - 1:
        if lines[i].lstrip().startswith("|") and re.match(r"\s*\|[\s:|-]+\|\s*$", lines[i + 1]):
            header = _cells(lines[i])
            rows: Table = {}
            i += 2
            while i < len(lines) and lines[i].lstrip().startswith("|"):
                cells = _cells(lines[i])
                key, values = [], {}
                for name, cell in zip(header, cells, strict=False):
                    match = re.fullmatch(r"[~≈]?(-?\d+(?:\.\d+)?)\s*(?:x|%|ms|µs|s)?", cell)
                    if match is None:
                        key.append(cell)
                    else:
                        values[name] = float(match.group(1))
                rows[tuple(key)] = values
                i += 1
            out[number] = (header, rows)
            number += 1
        else:
            i += 1
    return out


def run(script: str, args: list[str], root: Path) -> str | None:
    src = root / "src"
    env = {**os.environ, "PYTHONPATH": f"{src}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    done = subprocess.run(
        [sys.executable, str(root / "benchmarks" / script), *args],
        cwd=root / "benchmarks",
        check=False,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    if done.returncode != 0:
        print(f"   {script} failed on {root}: {done.stderr.strip().splitlines()[-1:]}")
        return None
    return done.stdout


def pick(column: str, values: list[float]) -> float:
    if HIGHER_IS_BETTER.search(column):
        return max(values)
    if LOWER_IS_BETTER.search(column):
        return min(values)
    return statistics.median(values)


def compare(before: list[str], after: list[str]) -> list[str]:
    """Rows of ``| table | row | column | before | after | after/before |``."""
    merged: dict[str, dict[tuple[int, tuple[str, ...], str], list[float]]] = {
        "before": defaultdict(list),
        "after": defaultdict(list),
    }
    for side, outputs in (("before", before), ("after", after)):
        for text in outputs:
            for number, (_, rows) in tables(text).items():
                for key, values in rows.items():
                    for column, value in values.items():
                        merged[side][(number, key, column)].append(value)
    lines = []
    for cell, a_values in merged["after"].items():
        b_values = merged["before"].get(cell)
        if not b_values:
            continue
        number, key, column = cell
        b, a = pick(column, b_values), pick(column, a_values)
        ratio = f"{a / b:.2f}" if b else "-"
        label = " / ".join(key) or "-"
        lines.append(f"| {number} | {label} | {column} | {b:g} | {a:g} | {ratio} |")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("ref", help="the version to compare against (commit, tag, branch)")
    parser.add_argument("--rounds", type=int, default=2, help="runs of each benchmark per side")
    parser.add_argument("--only", nargs="+", default=list(DEFAULTS), help="benchmarks to run")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="framebroker-before-") as tmp:
        tree = Path(tmp) / "before"
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree), args.ref],
            check=True,
            capture_output=True,
        )
        # The benchmarks read test data from ../shared beside their checkout.
        shared = ROOT.parent / "shared"
        if shared.is_dir():
            (Path(tmp) / "shared").symlink_to(shared)
        try:
            for script in args.only:
                print(f"\n## {script}: before ({args.ref}) against after (this checkout)\n")
                outputs: dict[str, list[str]] = {"before": [], "after": []}
                for _ in range(args.rounds):
                    for side, root in (("before", tree), ("after", ROOT)):
                        text = run(script, DEFAULTS.get(script, []), root)
                        if text is not None:
                            outputs[side].append(text)
                for side in ("before", "after"):
                    if outputs[side]:
                        print(f"### {side}, last round\n\n{outputs[side][-1]}")
                rows = compare(outputs["before"], outputs["after"])
                if rows:
                    print("| table | row | column | before | after | after/before |")
                    print("|---:|---|---|---:|---:|---:|")
                    print("\n".join(rows))
        finally:
            subprocess.run(
                ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)],
                check=False,
                capture_output=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
