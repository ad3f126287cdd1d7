#!/usr/bin/env python3
"""The kernel tables of docs/performance.md from one run of each benchmark.

Usage: python3 tools/kernel_table.py OURS.json PEER.json [BASE.json]

OURS.json: `cargo run --release -p stn-kernels --example bench -- --json OURS.json`;
PEER.json: `tools/peer/bench_grid_sample.py --json PEER.json` (same cases, same session).
Prints the speed table (ms ours / PyTorch and the ratios, a cross on a ratio outside its target:
fwd and fb at most 0.50, gs fwd and gs fb at most 1.00) and the traffic table (bytes each
figure must move, the GB/s reached, the share of a copy of the same bytes timed in the same
run). With BASE.json (another run of ours, e.g. with a path switched off) a third table gives
the time of OURS over BASE per figure.
"""
import json
import sys

FIGS = ["fwd", "fb", "gs_fwd", "gs_fb"]
TARGET = {"fwd": 0.5, "fb": 0.5, "gs_fwd": 1.0, "gs_fb": 1.0}


def key(r):
    return (r["case"], r["mode"], r["padding"])


def fmt(v):
    if v is None:
        return "-"
    if v >= 100:
        return f"{v:.0f}"
    if v >= 10:
        return f"{v:.1f}"
    if v >= 1:
        return f"{v:.2f}"
    return f"{v:.3f}"


def main():
    if len(sys.argv) not in (3, 4):
        sys.exit(__doc__)
    ours = json.load(open(sys.argv[1]))["rows"]
    peer = {key(r): r for r in json.load(open(sys.argv[2]))["rows"]}
    base = {key(r): r for r in json.load(open(sys.argv[3]))["rows"]} if len(sys.argv) == 4 else None
    print("| case | mode | padding | fwd ms (ours / torch) | fb ms | gs fwd ms | gs fb ms "
          "| fwd ratio | fb ratio | gs fwd ratio | gs fb ratio |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    misses = 0
    for r in ours:
        p = peer.get(key(r))
        if p is None:
            continue
        ms = [f"{fmt(r[f + '_ms'])} / {fmt(p[f + '_ms'])}" for f in FIGS]
        ratios = []
        for f in FIGS:
            q = r[f + "_ms"] / p[f + "_ms"]
            miss = round(q, 2) > TARGET[f]
            misses += miss
            ratios.append(f"{q:.2f}" + (" ✗" if miss else ""))
        print(f"| {r['case']} | {r['mode']} | {r['padding']} | " + " | ".join(ms + ratios) + " |")
    print(f"\n{misses} ratios outside their targets.\n")
    print("| case | mode | padding | fwd: MB, GB/s, share of copy | fb | gs fwd | gs fb "
          "| copy GB/s (fwd, fb, gs fwd, gs fb) |")
    print("|---|---|---|---:|---:|---:|---:|---:|")
    for r in ours:
        cells = []
        for f in FIGS:
            gbs, copy = r.get(f + "_gbs"), r.get(f + "_copy_gbs")
            share = f"{100 * gbs / copy:.0f}%" if gbs and copy else "-"
            cells.append(f"{r[f + '_bytes'] / 1e6:.1f}, {gbs or 0:.1f}, {share}")
        copies = ", ".join(f"{r.get(f + '_copy_gbs') or 0:.0f}" for f in FIGS)
        print(f"| {r['case']} | {r['mode']} | {r['padding']} | " + " | ".join(cells) + f" | {copies} |")
    if base:
        print("\n| case | mode | padding | fwd | fb | gs fwd | gs fb |  (time, ours / base)")
        print("|---|---|---|---:|---:|---:|---:|")
        for r in ours:
            b = base.get(key(r))
            if b is None:
                continue
            cells = [f"{r[f + '_ms'] / b[f + '_ms']:.2f}" for f in FIGS]
            print(f"| {r['case']} | {r['mode']} | {r['padding']} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
