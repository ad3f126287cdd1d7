#!/usr/bin/env python3
"""Where a build's time goes, from the report of `cargo build --timings` (or test/clippy).

    python3 tools/build/timings_table.py BEFORE.html [AFTER.html] [--top 15]

Per package, the seconds of its units summed (each unit's wall time; cargo runs as many at once as there are cores) (library, build script and its run, tests,
programs), their share of the total, and the split into the front end (until the
metadata is written: what `cargo check` also pays) and code generation (the rest: LLVM and the
link). With two reports, the same packages side by side. Prints Markdown.
"""
import json
import re
import sys
from collections import defaultdict


def load(path):
    html = open(path, encoding="utf-8").read()
    m = re.search(r"const UNIT_DATA = (\[.*?\]);\n", html, re.S)
    if not m:
        sys.exit(f"{path}: no UNIT_DATA (not a cargo timings report?)")
    units = json.loads(m.group(1))
    wall = max(u["start"] + u["duration"] for u in units)
    per = defaultdict(lambda: [0.0, 0.0, 0])  # total, front end, units
    for u in units:
        d = u["duration"]
        # Newer cargo splits a unit into sections (frontend, codegen); older ones give rmeta_time.
        sections = dict(u.get("sections") or [])
        front = sections["frontend"]["end"] if "frontend" in sections else (u.get("rmeta_time") or d)
        p = per[u["name"]]
        p[0] += d
        p[1] += min(front, d)
        p[2] += 1
    return per, wall, sum(p[0] for p in per.values())


def fmt(p, total):
    if p is None:
        return "-", "-", "-", "-"
    t, f, _ = p
    return f"{t:.0f}", f"{100 * t / total:.1f}%", f"{f:.0f}", f"{t - f:.0f}"


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    top = 15
    if "--top" in sys.argv:
        top = int(sys.argv[sys.argv.index("--top") + 1])
        args = [a for a in args if a != str(top)]
    reports = [load(a) for a in args]
    first = reports[0][0]
    names = sorted(first, key=lambda n: -first[n][0])[:top]
    head = "| package | " + " | ".join(
        f"{label} unit s | share | front end s | codegen s" for label in (["before", "after"] if len(reports) == 2 else ["CPU s"])
    )
    if len(reports) == 1:
        head = "| package | unit s | share | front end s | codegen s"
    print(head + " |")
    print("|---|" + "---:|" * (4 * len(reports)))
    for n in names:
        cells = []
        for per, _, total in reports:
            cells += fmt(per.get(n), total)
        print(f"| {n} | " + " | ".join(cells) + " |")
    for label, (per, wall, total) in zip(["before", "after"] if len(reports) == 2 else [""], reports):
        front = sum(p[1] for p in per.values())
        print(f"\n{label} total: {total / 60:.1f} unit-min ({front / 60:.1f} front end, {(total - front) / 60:.1f} codegen), "
              f"{wall / 60:.1f} min wall, {sum(p[2] for p in per.values())} units, {len(per)} packages")


if __name__ == "__main__":
    main()
