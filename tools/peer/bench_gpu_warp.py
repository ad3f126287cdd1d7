#!/usr/bin/env python3
"""PyTorch CUDA eager reference for `stn bench --device cuda` (the GPU issue's benchmark).

Run on a machine with an NVIDIA GPU and torch with CUDA:
    python tools/peer/bench_gpu_warp.py [--shape 256x3x224x224] [--reps 50] [--peak-gbs 4800]

Times, float32, bilinear, zeros padding, align_corners=False, a mild rotation and zoom, output
the input's size, CUDA events around each call (medians):
  fwd : F.affine_grid + F.grid_sample, no_grad
  fb  : the same with autograd, out.sum().backward() -> grads to the input and theta
Bandwidth counts only the bytes each must move (as `stn bench`): fwd 2 x input bytes (read the
input, write the output), fb 5 x (plus read the output gradient and the input, write the input
gradient). --peak-gbs is the device's memory bandwidth for the roofline share (H200: 4800).
Also reports whether two fb runs give bitwise equal input gradients (PyTorch's CUDA backward
adds with float atomics).
"""
import argparse
import json
import math
import statistics

import torch
import torch.nn.functional as F


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", default="256x3x224x224")
    ap.add_argument("--reps", type=int, default=50)
    ap.add_argument("--peak-gbs", type=float, default=0.0)
    ap.add_argument("--json")
    a = ap.parse_args()
    n, c, h, w = (int(v) for v in a.shape.split("x"))
    dev = torch.device("cuda")
    torch.manual_seed(0)
    x = torch.rand(n, c, h, w, device=dev) * 2 - 1
    cs, sn = math.cos(0.1) * 0.9, math.sin(0.1) * 0.9
    theta = torch.tensor([[cs, -sn, 0.05], [sn, cs, -0.05]], device=dev).expand(n, 2, 3).contiguous()

    def timed(fn):
        for _ in range(5):
            fn()
        torch.cuda.synchronize()
        ts = []
        for _ in range(a.reps):
            s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            s.record()
            fn()
            e.record()
            torch.cuda.synchronize()
            ts.append(s.elapsed_time(e))
        return statistics.median(ts)

    def fwd():
        with torch.no_grad():
            g = F.affine_grid(theta, (n, c, h, w), align_corners=False)
            return F.grid_sample(x, g, mode="bilinear", padding_mode="zeros", align_corners=False)

    xg = x.clone().requires_grad_(True)
    tg = theta.clone().requires_grad_(True)

    def fb():
        xg.grad = None
        tg.grad = None
        g = F.affine_grid(tg, (n, c, h, w), align_corners=False)
        out = F.grid_sample(xg, g, mode="bilinear", padding_mode="zeros", align_corners=False)
        out.sum().backward()
        return xg.grad

    fwd_ms, fb_ms = timed(fwd), timed(fb)
    g1 = fb().clone()
    g2 = fb().clone()
    bytes_ = n * c * h * w * 4
    r = {
        "device": torch.cuda.get_device_name(0),
        "torch": torch.__version__,
        "shape": [n, c, h, w],
        "fwd_ms": fwd_ms,
        "fb_ms": fb_ms,
        "fwd_gbs": 2 * bytes_ / fwd_ms / 1e6,
        "fb_gbs": 5 * bytes_ / fb_ms / 1e6,
        "input_grad_bitwise_repeatable": bool(torch.equal(g1, g2)),
    }
    if a.peak_gbs > 0:
        r["fwd_roofline_share"] = r["fwd_gbs"] / a.peak_gbs
        r["fb_roofline_share"] = r["fb_gbs"] / a.peak_gbs
    print(json.dumps(r, indent=2))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(r, f, indent=2)


if __name__ == "__main__":
    main()
