#!/usr/bin/env python3
"""Prints the dependencies whose features differ between two ways of building the workspace.

Cargo compiles a crate once per feature set, so a crate listed here is compiled again (with
everything that depends on it) when one build follows the other in the same target folder.
Each build is given as the arguments of `cargo tree`; the default compares the CI test build
(`--workspace --features gpu`, dev-dependencies included) with the demo's (`-p stn-cli`), the
workspace without gpu, and each library alone. Only `cargo tree` runs: nothing is compiled.

    python3 tools/build/feature-diff.py                      # the default comparisons
    python3 tools/build/feature-diff.py -- -p stn-sql        # the CI build against -p stn-sql
"""
import subprocess
import sys

REFERENCE = ["--workspace", "--features", "gpu", "-e", "normal,build,dev"]
DEFAULT = [
    ["-p", "stn-cli", "-e", "normal,build"],
    ["--workspace", "-e", "normal,build,dev"],
    ["-p", "stn-kernels", "-e", "normal,build,dev"],
    ["-p", "stn", "-e", "normal,build,dev"],
    ["-p", "stn-data", "-e", "normal,build,dev"],
    ["-p", "stn-models", "-e", "normal,build,dev"],
    ["-p", "stn-table", "-e", "normal,build,dev"],
    ["-p", "stn-sql", "-e", "normal,build,dev"],
    ["-p", "stn-cluster", "-e", "normal,build,dev"],
]


def features(args):
    """Package (name and version) -> the set of feature sets it is built with."""
    out = subprocess.run(
        ["cargo", "tree", *args, "-f", "{p}|{f}", "--prefix", "none"],
        check=True, capture_output=True, text=True,
    ).stdout
    found = {}
    for line in out.splitlines():
        line = line.removesuffix(" (*)").strip()
        if "|" not in line:
            continue
        pkg, feats = line.split("|", 1)
        key = " ".join(pkg.split()[:2])
        found.setdefault(key, set()).add(frozenset(f for f in feats.split(",") if f))
    return found


def main():
    argv = sys.argv[1:]
    builds = [argv[argv.index("--") + 1:]] if "--" in argv else DEFAULT
    reference = features(REFERENCE)
    differ = 0
    for build in builds:
        other = features(build)
        rows = []
        for pkg, sets in sorted(other.items()):
            if pkg.startswith("stn") or pkg not in reference or sets <= reference[pkg]:
                continue
            ref = set().union(*reference[pkg])
            rows.append(f"  {pkg}: without {sorted(ref - set().union(*sets))}")
        print(f"{' '.join(build)}: {len(rows)} dependencies built with other features than the CI build")
        print("\n".join(rows)) if rows else None
        differ += len(rows)
    sys.exit(1 if differ else 0)


if __name__ == "__main__":
    main()
