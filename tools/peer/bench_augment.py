#!/usr/bin/env python3
"""The augmentation peers, timed the way `stn bench --augment` times ours.

kornia.augmentation (batched, torch tensors) and albumentations (one image at a time, HWC numpy
arrays, OpenCV underneath) on float32 batches, CPU, 2 threads: RandomAffine, RandomPerspective
and RandomThinPlateSpline on 32 x 3 x 256 x 256 and 256 x 1 x 28 x 28. The timed region covers
parameter sampling and application; the figure is the median over repetitions, in images/s.

Also `stn_rs` (the Python package's `stn_rs.augment` on NumPy batches; build and install the
wheel into the same environment) for the Python speed ratios (tools/peer/bench_python.py).

Usage: python bench_augment.py [--json] [--min-time S] [--threads T] [--libs kornia,albumentations,stn_rs]
Prints {"rows": [{"lib", "op", "shape", "img_per_s"}]} with --json, a table otherwise.
Needs torch, kornia, albumentations, opencv-python-headless, numpy.
"""
import argparse
import json
import statistics
import sys
import time

SHAPES = [(32, 3, 256, 256), (256, 1, 28, 28)]
OPS = ["RandomAffine", "RandomPerspective", "RandomThinPlateSpline"]
# The same ranges as `stn bench --augment` (see crates/stn-cli/src/commands/bench.rs).
AFFINE = dict(degrees=30.0, translate=0.1, scale=(0.8, 1.2), shear=10.0)
PERSPECTIVE = 0.5
TPS_SCALE = 0.1


def timeit(fn, min_time, reps=5, warmup=2):
    for _ in range(warmup):
        fn()
    times = []
    start = time.perf_counter()
    while len(times) < reps or time.perf_counter() - start < min_time:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
        if len(times) >= 1000:
            break
    return statistics.median(times)


def kornia_fn(op, shape):
    import torch
    import kornia.augmentation as K

    if op == "RandomAffine":
        t = AFFINE["translate"]
        aug = K.RandomAffine(degrees=AFFINE["degrees"], translate=(t, t), scale=AFFINE["scale"],
                             shear=AFFINE["shear"], p=1.0)
    elif op == "RandomPerspective":
        aug = K.RandomPerspective(distortion_scale=PERSPECTIVE, p=1.0)
    else:
        aug = K.RandomThinPlateSpline(scale=TPS_SCALE, p=1.0)
    x = torch.rand(*shape, dtype=torch.float32)

    def run():
        with torch.inference_mode():
            aug(x)

    return run


def albumentations_fn(op, shape):
    import numpy as np
    import albumentations as A

    if op == "RandomAffine":
        t = AFFINE["translate"]
        aug = A.Affine(rotate=(-AFFINE["degrees"], AFFINE["degrees"]), translate_percent=(-t, t),
                       scale=AFFINE["scale"], shear=(-AFFINE["shear"], AFFINE["shear"]), p=1.0)
    elif op == "RandomPerspective":
        # Corner offsets ~ N(0, scale) of the size, clipped: about kornia's distortion 0.5 / 2.
        aug = A.Perspective(scale=(0.05, PERSPECTIVE / 4), keep_size=True, p=1.0)
    else:
        aug = A.ThinPlateSpline(scale_range=(0.0, TPS_SCALE), num_control_points=3, p=1.0)
    n, c, h, w = shape
    rng = np.random.default_rng(0)
    images = [rng.random((h, w, c), dtype=np.float32) for _ in range(n)]

    def run():
        for im in images:
            aug(image=im)

    return run


# The same specs as `stn bench --augment` (crates/stn-cli/src/augment.rs BENCH_OPS).
STN_SPECS = {
    "RandomAffine": "affine:rot=30,scale=0.8-1.2,shift=0.1,shear=10",
    "RandomPerspective": "perspective:0.5",
    "RandomThinPlateSpline": "tps:0.1",
}


def stn_rs_fn(op, shape):
    import numpy as np
    import stn_rs

    x = np.random.default_rng(0).random(shape, dtype=np.float32)
    epoch = [0]

    def run():
        epoch[0] += 1  # new parameters every call, as the others draw them
        stn_rs.augment(x, STN_SPECS[op], seed=1, epoch=epoch[0])

    return run


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--min-time", type=float, default=1.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--libs", default="kornia,albumentations")
    args = ap.parse_args()
    import os

    os.environ.setdefault("RAYON_NUM_THREADS", str(args.threads))  # stn_rs's pool, before import
    import torch
    import cv2

    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    makers = {"kornia": kornia_fn, "albumentations": albumentations_fn, "stn_rs": stn_rs_fn}
    rows = []
    for lib in args.libs.split(","):
        if lib not in makers:
            sys.exit(f"unknown library {lib!r}; use kornia, albumentations, stn_rs")
        for shape in SHAPES:
            for op in OPS:
                fn = makers[lib](op, shape)
                sec = timeit(fn, args.min_time)
                rows.append({"lib": lib, "op": op, "shape": "x".join(map(str, shape)),
                             "img_per_s": shape[0] / sec})
                print(f"{lib} {op} {rows[-1]['shape']}: {rows[-1]['img_per_s']:.0f} img/s", file=sys.stderr)
    versions = {"torch": torch.__version__}
    try:
        import kornia
        import albumentations

        versions.update(kornia=kornia.__version__, albumentations=albumentations.__version__,
                        opencv=cv2.__version__)
    except ImportError:
        pass
    if args.json:
        print(json.dumps({"threads": args.threads, "versions": versions, "rows": rows}, indent=1))
    else:
        print("| lib | op | shape | img/s |\n|---|---|---|---:|")
        for r in rows:
            print(f"| {r['lib']} | {r['op']} | {r['shape']} | {r['img_per_s']:.0f} |")


if __name__ == "__main__":
    main()
