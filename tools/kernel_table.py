#!/usr/bin/env python3
"""The kernel tables of docs/performance.md from rounds of benchmark runs.

On a noisy machine one run decides nothing, so the kernels are measured in rounds (each round
PyTorch, then ours, case by case) and every figure is the lowest median over the rounds, each
side. This script takes the JSON files of those runs and prints the two tables: times and ratios
against the targets, then the bytes, GB/s and share of the copy bandwidth (the copy measured in
the run that gave our lowest median).

    python3 tools/kernel_table.py --peer 'rounds/p_*.json' --ours 'rounds/n_*.json'

Peer files come from `tools/peer/bench_grid_sample.py --json`, ours from
`cargo run --release -p stn-kernels --example bench -- --json`. Standard library only.
"""
import argparse
import glob
import json
import sys

FIGURES = ["fwd", "fb", "gs_fwd", "gs_fb"]
TARGETS = {"fwd": 0.5, "fb": 0.5, "gs_fwd": 1.0, "gs_fb": 1.0}
MODES = ["bilinear", "nearest", "bicubic"]
PADDINGS = ["zeros", "border", "reflection"]


def lowest(pattern):
    """Row key -> the row whose figures are each the lowest over the files (and the count)."""
    files = sorted(glob.glob(pattern))
    if not files:
        sys.exit(f"no files match {pattern}")
    best, rounds = {}, {}
    for f in files:
        with open(f) as fh:
            rows = json.load(fh)["rows"]
        for row in rows:
            key = (row["case"], row["mode"], row["padding"])
            rounds[key] = rounds.get(key, 0) + 1
            if key not in best:
                best[key] = dict(row)
                continue
            b = best[key]
            for fig in FIGURES:
                if row[f"{fig}_ms"] < b[f"{fig}_ms"]:
                    b[f"{fig}_ms"] = row[f"{fig}_ms"]
                    # The copy of the same run: the share compares figures of one run.
                    if f"{fig}_copy_ms" in row:
                        b[f"{fig}_copy_ms"] = row[f"{fig}_copy_ms"]
    return best, rounds


def order(key):
    case, mode, pad = key
    return (case, PADDINGS.index(pad) if pad in PADDINGS else 9, MODES.index(mode) if mode in MODES else 9)


def fmt(ms):
    return f"{ms:.3g}"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--peer", required=True, help="glob of PyTorch JSON files (quote it)")
    ap.add_argument("--ours", required=True, help="glob of our JSON files (quote it)")
    a = ap.parse_args()
    peer, peer_rounds = lowest(a.peer)
    ours, our_rounds = lowest(a.ours)
    keys = sorted(set(peer) & set(ours), key=order)
    if not keys:
        sys.exit("no row is in both sets")
    met = total = 0
    print("| case | mode | padding | fwd ms (ours / torch) | fb ms | gs fwd ms | gs fb ms "
          "| fwd ratio | fb ratio | gs fwd ratio | gs fb ratio |")
    print("|---|---|---|" + "---:|" * 8)
    for key in keys:
        p, o = peer[key], ours[key]
        times = [f"{fmt(o[f'{f}_ms'])} / {fmt(p[f'{f}_ms'])}" for f in FIGURES]
        ratios = []
        for f in FIGURES:
            r = o[f"{f}_ms"] / p[f"{f}_ms"]
            ok = r <= TARGETS[f]
            met += ok
            total += 1
            ratios.append(f"{r:.2f}" + ("" if ok else " ✗"))
        print(f"| {key[0]} | {key[1]} | {key[2]} | " + " | ".join(times + ratios) + " |")
    print(f"\n{met} of {total} ratios meet their targets; rounds per row: PyTorch "
          f"{min(peer_rounds[k] for k in keys)}-{max(peer_rounds[k] for k in keys)}, ours "
          f"{min(our_rounds[k] for k in keys)}-{max(our_rounds[k] for k in keys)}.\n")
    print("| case | mode | padding | fwd: MB, GB/s, share of copy | fb | gs fwd | gs fb "
          "| copy GB/s (fwd, fb, gs fwd, gs fb) |")
    print("|---|---|---|---:|---:|---:|---:|---:|")
    for key in keys:
        o = ours[key]
        if f"{FIGURES[0]}_bytes" not in o:
            continue
        cells, copy = [], []
        for f in FIGURES:
            b = o[f"{f}_bytes"]
            gbs = b / (o[f"{f}_ms"] * 1e6)
            cgbs = b / (o[f"{f}_copy_ms"] * 1e6)
            cells.append(f"{b / 1e6:.1f}, {gbs:.1f}, {gbs / cgbs * 100:.0f}%")
            copy.append(f"{cgbs:.0f}")
        print(f"| {key[0]} | {key[1]} | {key[2]} | " + " | ".join(cells) + f" | {', '.join(copy)} |")


if __name__ == "__main__":
    main()
