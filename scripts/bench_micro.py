#!/usr/bin/env python3
"""Micro-benchmarks: runs the ordo-one/benchmark suites in Benchmarks/ (release build, malloc
counted) and prints, per operation, wall-clock time and heap allocations at p50.

Usage: scripts/bench_micro.py [--output-dir docs]
With --output-dir it rewrites the bench-micro table in docs/benchmarks.md.
"""
import argparse
import os
import re
import subprocess
import sys
import time

from benchlib import update_markdown  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
SUITES = ("WireBenchmarks", "MediaBenchmarks")


def parse(output):
    """(suite, operation, p50 ns, p50 mallocs) for each benchmark in the tool's text output."""
    rows, suite, name, figures = [], None, None, {}
    lines = output.splitlines()
    for index, line in enumerate(lines):
        stripped = line.strip()
        if stripped in SUITES:
            suite = stripped
        elif index + 1 < len(lines) and lines[index + 1].startswith("╒") and stripped and not stripped.startswith("│"):
            name, figures = stripped, {}
        elif stripped.startswith("│") and name:
            cells = [cell.strip() for cell in stripped.strip("│").split("│")]
            if cells[0].startswith("Time (wall clock) (ns)"):
                figures["ns"] = int(cells[3])
            elif cells[0].startswith("Malloc (total)"):
                figures["mallocs"] = int(cells[3])
        elif stripped.startswith("╘") and name:
            rows.append((suite, name, figures.get("ns"), figures.get("mallocs")))
            name = None
    return rows


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--output-dir")
    args = parser.parse_args()
    process = subprocess.Popen(["swift", "package", "--allow-writing-to-package-directory", "benchmark", "--no-progress"],
                               cwd=os.path.join(ROOT, "Benchmarks"), stdout=subprocess.PIPE, text=True)
    output = []
    for line in process.stdout:
        sys.stderr.write(line)
        output.append(line)
    if process.wait() != 0:
        sys.exit(process.returncode)
    rows = parse("".join(output))
    if not rows:
        sys.exit("no benchmark results found in the output")
    lines = ["| suite | operation | time (p50) | allocations (p50) |", "| --- | --- | ---: | ---: |"]
    for suite, name, ns, mallocs in rows:
        time_text = "–" if ns is None else (f"{ns} ns" if ns < 10_000 else f"{ns / 1000:.1f} µs")
        lines.append(f"| {suite} | {name} | {time_text} | {'–' if mallocs is None else mallocs} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.output_dir:
        update_markdown(os.path.join(args.output_dir, "benchmarks.md"), "bench-micro",
                        f"Latest run: {time.strftime('%Y-%m-%d')} (`make bench-micro`).\n\n" + text)


if __name__ == "__main__":
    main()
