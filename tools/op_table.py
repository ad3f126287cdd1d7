#!/usr/bin/env python3
"""README table of the Burn op benchmark: op_table.py BURN_OP.json PEER.json [PEER_SAME_MALLOC.json]

BURN_OP.json: `cargo run --release -p stn --example op_bench -- --json BURN_OP.json`
PEER.json:    `tools/peer/bench_grid_sample.py --modes bilinear --json PEER.json`
"""
import json
import sys


def rows(path):
    return json.load(open(path))["rows"]


def find(rs, r):
    for q in rs:
        if q["case"] == r["case"] and q["mode"] == r["mode"] and q["padding"] == "zeros":
            return q
    return None


def main():
    ours = rows(sys.argv[1])
    peer = rows(sys.argv[2])
    same = rows(sys.argv[3]) if len(sys.argv) > 3 else None
    print("| case | fb raw / op ms | gs fb raw / op ms | loss ms | op/raw fb | op/raw gs fb "
          "| fb vs PyTorch | gs fb vs PyTorch |" + (" fb / gs fb vs PyTorch, same malloc |" if same else ""))
    print("|---|---:|---:|---:|---:|---:|---:|---:|" + ("---:|" if same else ""))
    for r in ours:
        p = find(peer, r)
        name = f"{r['case']} {r['N']}x{r['C']}x{r['H']}x{r['W']}"
        line = (f"| {name} | {r['raw_fb_ms']:.3g} / {r['fb_ms']:.3g} | {r['raw_gs_fb_ms']:.3g} / {r['gs_fb_ms']:.3g} "
                f"| {r['loss_ms']:.2g} | {r['op_over_raw_fb']:.2f} | {r['op_over_raw_gs_fb']:.2f} "
                f"| {r['fb_ms'] / p['fb_ms']:.2f} | {r['gs_fb_ms'] / p['gs_fb_ms']:.2f} |")
        if same:
            s = find(same, r)
            line += f" {r['fb_ms'] / s['fb_ms']:.2f} / {r['gs_fb_ms'] / s['gs_fb_ms']:.2f} |"
        print(line)


if __name__ == "__main__":
    main()
