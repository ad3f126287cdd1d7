#!/usr/bin/env python3
"""The Python package's speed, as ratios to its peers measured in the same run (2 threads):

1. `Rectifier.rectify_table` on the 10,000-digit table (read with pyarrow, rectified, written
   with pyarrow) against `stn rectify --table` on the same file (the whole command), images/s;
2. `stn_rs.augment` against kornia and albumentations on the augmentation benchmark's cases
   (bench_augment.py);
3. `stn_rs.warp_affine` against `grid_sample(input, affine_grid(theta))` of
   `torch.nn.functional` on the kernel cases (bench_grid_sample.py's a-e), forward, float32.

The process keeps freed memory for reuse (`stn_rs.keep_freed_memory()`, what the `stn` program
does at start): it applies to every library measured here.

Usage: python bench_python.py --stn PATH/TO/stn --model RUN_DIR [--min-time S] [--parts 123]
       [--json]. Needs stn_rs (the wheel), torch, kornia, albumentations, opencv-python-headless.
Prints a table per part with the ratio ours / peer (above 1: ours is faster).
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def median_time(fn, min_time, reps=3, warmup=1):
    from bench_augment import timeit

    return timeit(fn, min_time, reps=reps, warmup=warmup)


def part_tables(args):
    import pyarrow.parquet as pq
    import stn_rs

    tmp = Path(tempfile.mkdtemp(prefix="stn-bench-py-"))
    table = tmp / "digits.parquet"
    subprocess.run([args.stn, "export-digits", "--distortion", "rts", "--out", table], check=True,
                   capture_output=True)
    n = pq.read_metadata(table).num_rows
    count = [0]

    def cli():
        count[0] += 1
        out = tmp / f"cli-{count[0]}.parquet"
        # RAYON_NUM_THREADS (set below) gives the command the same thread count
        subprocess.run([args.stn, "rectify", "--table", table, "--model", args.model, "--out", out],
                       check=True, capture_output=True)

    r = stn_rs.Rectifier(args.model, threads=args.threads)

    def py():
        count[0] += 1
        out = r.rectify_table(pq.read_table(table))
        pq.write_table(out, tmp / f"py-{count[0]}.parquet")

    # Load the model outside the timed region only for Python; the command line loads it every
    # run (part of what a user waits for), a few milliseconds.
    cli_s = median_time(cli, args.min_time)
    py_s = median_time(py, args.min_time)
    return [{"case": f"rectify {n} digits (read, rectify, write)", "ours_per_s": n / py_s,
             "peer": "stn rectify --table", "peer_per_s": n / cli_s, "ratio": cli_s / py_s}]


def part_augment(args):
    import bench_augment as ba

    rows = []
    for shape in ba.SHAPES:
        for op in ba.OPS:
            ours = shape[0] / ba.timeit(ba.stn_rs_fn(op, shape), args.min_time)
            for lib, maker in (("kornia", ba.kornia_fn), ("albumentations", ba.albumentations_fn)):
                peer = shape[0] / ba.timeit(maker(op, shape), args.min_time)
                rows.append({"case": f"augment {op} {'x'.join(map(str, shape))}", "ours_per_s": ours,
                             "peer": lib, "peer_per_s": peer, "ratio": ours / peer})
    return rows


def part_kernels(args):
    import numpy as np
    import torch
    import torch.nn.functional as F
    import stn_rs
    from bench_grid_sample import CASES, MODES

    rows = []
    for key in args.cases:
        c = CASES[key]
        g = torch.Generator().manual_seed(0)
        x = torch.randn(c["N"], c["C"], c["H"], c["W"], generator=g)
        theta = torch.tensor([[0.9, -0.3, 0.05], [0.3, 0.9, -0.05]]).expand(c["N"], 2, 3).contiguous()
        size = (c["N"], c["C"], c["Ho"], c["Wo"])
        xn, tn = x.numpy(), theta.numpy()
        for mode in MODES:
            def ours():
                stn_rs.warp_affine(xn, tn, size, mode=mode)

            def peer():
                with torch.inference_mode():
                    F.grid_sample(x, F.affine_grid(theta, size, align_corners=False), mode=mode,
                                  align_corners=False)

            a = median_time(ours, args.min_time, reps=5, warmup=2)
            b = median_time(peer, args.min_time, reps=5, warmup=2)
            ok = np.abs(stn_rs.warp_affine(xn, tn, size, mode=mode) - F.grid_sample(
                x, F.affine_grid(theta, size, align_corners=False), mode=mode, align_corners=False).numpy()).max()
            rows.append({"case": f"warp_affine {key} {c['N']}x{c['C']}x{c['H']}x{c['W']} {mode}",
                         "ours_per_s": c["N"] / a, "peer": "torch.nn.functional", "peer_per_s": c["N"] / b,
                         "ratio": b / a, "max_abs_diff": float(ok)})
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stn", required=False, default=os.environ.get("STN_BIN", "stn"))
    ap.add_argument("--model", required=False)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--min-time", type=float, default=1.0)
    ap.add_argument("--parts", default="123")
    ap.add_argument("--cases", default="abcde")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    os.environ.setdefault("RAYON_NUM_THREADS", str(args.threads))
    import torch
    import cv2

    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    # As the stn program does (and stn_rs offers): freed memory is reused, not given back, so
    # large outputs do not pay first-touch page faults every call. For every library in this
    # process alike (kornia gains from it too).
    import stn_rs

    stn_rs.keep_freed_memory()
    rows = []
    if "1" in args.parts:
        if not args.model:
            sys.exit("--model RUN_DIR is needed for part 1")
        rows += part_tables(args)
    if "2" in args.parts:
        rows += part_augment(args)
    if "3" in args.parts:
        rows += part_kernels(args)
    if args.json:
        print(json.dumps({"threads": args.threads, "torch": torch.__version__, "rows": rows}, indent=1))
        return
    print("| case | ours /s | peer | peer /s | ours / peer |\n|---|---:|---|---:|---:|")
    for r in rows:
        print(f"| {r['case']} | {r['ours_per_s']:.0f} | {r['peer']} | {r['peer_per_s']:.0f} | {r['ratio']:.2f} |")


if __name__ == "__main__":
    main()
