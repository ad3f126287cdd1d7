#!/usr/bin/env python3
"""Ratios from tools/build/compare_builds.sh's folder: each figure of the new build over the
old one (below 1 = faster), and both against the Python peer of the same run.

    python3 tools/build/compare_table.py OUT_DIR

Times are the median over the rounds of each build; a ratio's range is over the rounds.
"""
import glob
import json
import math
import os
import statistics
import sys

FIGS = ["fwd", "fb", "gs_fwd", "gs_fb"]


def rounds(out, kind, who):
    docs = []
    for p in sorted(glob.glob(os.path.join(out, f"{kind}-{who}-*.json*"))):
        text = open(p).read().strip()
        if not text:
            continue
        if p.endswith(".jsonl"):
            docs.append([json.loads(l) for l in text.splitlines() if l.startswith("{")])
        else:
            docs.append(json.loads(text))
    return docs


def med(xs):
    return statistics.median(xs) if xs else float("nan")


def main():
    out = sys.argv[1]
    peer_k = {(r["case"], r["mode"], r["padding"]): r for r in json.load(open(os.path.join(out, "peer-kernels.json")))["rows"]}
    old, new = rounds(out, "bench", "old"), rounds(out, "bench", "new")
    print(f"rounds: old {len(old)}, new {len(new)}\n")
    print("| case | mode | padding | " + " | ".join(f"{f} new/old" for f in FIGS) + " | " + " | ".join(f"{f} old/torch, new/torch" for f in FIGS) + " |")
    print("|---|---|---|" + "---:|" * 8)
    per_fig = {f: [] for f in FIGS}
    for row in old[0]["kernels"]:
        key = (row["case"], row["mode"], row["padding"])
        o = {f: med([next(r for r in d["kernels"] if (r["case"], r["mode"], r["padding"]) == key)[f"{f}_ms"] for d in old]) for f in FIGS}
        n = {f: med([next(r for r in d["kernels"] if (r["case"], r["mode"], r["padding"]) == key)[f"{f}_ms"] for d in new]) for f in FIGS}
        p = peer_k.get(key)
        cells = []
        for f in FIGS:
            per_fig[f].append(n[f] / o[f])
            cells.append(f"{n[f] / o[f]:.2f}")
        for f in FIGS:
            cells.append(f"{o[f] / p[f + '_ms']:.2f}, {n[f] / p[f + '_ms']:.2f}" if p else "-")
        print(f"| {key[0]} | {key[1]} | {key[2]} | " + " | ".join(cells) + " |")
    print()
    for f in FIGS:
        xs = per_fig[f]
        gm = math.exp(sum(math.log(x) for x in xs) / len(xs))
        print(f"kernels {f}: new/old geometric mean {gm:.3f}, range {min(xs):.2f}-{max(xs):.2f} over {len(xs)} rows")
    peer_c = json.load(open(os.path.join(out, "peer-cnn.json")))
    print("\n| model figure | old ms | new ms | new/old | old/torch | new/torch |\n|---|---:|---:|---:|---:|---:|")
    for k in ["stcnn_train_ms", "stcnn_infer_ms", "cnn_train_ms", "cnn_infer_ms"]:
        o, n = med([d[k] for d in old]), med([d[k] for d in new])
        rng = [dn[k] / do[k] for do, dn in zip(old, new)]
        print(f"| {k} | {o:.2f} | {n:.2f} | {n / o:.3f} ({min(rng):.3f}-{max(rng):.3f}) | {o / peer_c[k]:.2f} | {n / peer_c[k]:.2f} |")
    ao, an = rounds(out, "augment", "old"), rounds(out, "augment", "new")
    if ao and an:
        print("\n| augmentation | old img/s | new img/s | new/old (speed) |\n|---|---:|---:|---:|")
        for r in ao[0]["rows"]:
            key = (r["op"], r["shape"])
            o = med([next(x for x in d["rows"] if (x["op"], x["shape"]) == key)["img_per_s"] for d in ao])
            n = med([next(x for x in d["rows"] if (x["op"], x["shape"]) == key)["img_per_s"] for d in an])
            print(f"| {key[0]} {key[1]} | {o:.0f} | {n:.0f} | {n / o:.3f} |")
    to, tn = rounds(out, "tables", "old"), rounds(out, "tables", "new")
    if to and tn:
        print("\n| table | old img/s | new img/s | new/old (speed) | peer img/s (same runs) |\n|---|---:|---:|---:|---:|")
        for t in ["digits10k", "photos300", "digits100k"]:
            o = med([x["images_per_s"] for d in to for x in d if x["who"] == "stn" and x["table"] == t])
            n = med([x["images_per_s"] for d in tn for x in d if x["who"] == "stn" and x["table"] == t])
            p = [x["images_per_s"] for d in to + tn for x in d if x["who"] == "peer" and x["table"] == t]
            print(f"| {t} | {o:.0f} | {n:.0f} | {n / o:.3f} | {med(p):.0f} |" if p else f"| {t} | {o:.0f} | {n:.0f} | {n / o:.3f} | - |")


if __name__ == "__main__":
    main()
