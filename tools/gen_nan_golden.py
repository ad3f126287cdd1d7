#!/usr/bin/env python3
"""NaN grid coordinates in PyTorch's CPU grid_sample: reference outputs and gradients.

Run with the peer's Python (see ../shared/peer/setup.sh):
    /tmp/peer/venv/bin/python tools/gen_nan_golden.py > crates/stn-kernels/tests/golden_nan/nan.json

Each (dims, mode, padding, align_corners, dtype) case runs in its own process, because
PyTorch's 2-D bilinear backward crashes (SIGSEGV) on NaN under border/reflection padding;
for those cases only the forward is recorded ("backward": null). NaN is written as null.
"""
import json
import subprocess
import sys

CHILD = r'''
import json, sys, torch, torch.nn.functional as F
dim, mode, pad, ac, dt, stage = sys.argv[1:7]
dt = dict(f64=torch.float64, f32=torch.float32)[dt]
nan = float("nan")
if dim == "2":
    x = torch.arange(1., 1 + 2 * 3 * 4, dtype=torch.float64).reshape(1, 2, 3, 4)
    g = torch.tensor([[[[nan, 0.2], [0.3, nan], [nan, nan], [0.1, 0.1]]]], dtype=torch.float64)
else:
    x = torch.arange(1., 1 + 2 * 3 * 4 * 5, dtype=torch.float64).reshape(1, 2, 3, 4, 5)
    g = torch.tensor([[[[[nan, 0.2, 0.1], [0.3, nan, 0.1], [0.1, 0.1, nan], [nan, nan, nan], [0.1, 0.1, 0.1]]]]],
                     dtype=torch.float64)
xx = x.to(dt).clone().requires_grad_(True)
gg = g.to(dt).clone().requires_grad_(True)
o = F.grid_sample(xx, gg, mode=mode, padding_mode=pad, align_corners=(ac == "1"))
res = {"input": {"shape": list(x.shape), "data": x.flatten().tolist()},
       "grid": {"shape": list(g.shape), "data": g.flatten().tolist()},
       "output": o.detach().double().flatten().tolist()}
if stage == "bwd":
    o.backward(torch.ones_like(o))
    res["grad_input"] = xx.grad.double().flatten().tolist()
    res["grad_grid"] = gg.grad.double().flatten().tolist()
print(json.dumps(res).replace("NaN", "null"))
'''


def run(args):
    p = subprocess.run([sys.executable, "-c", CHILD, *args], capture_output=True, text=True)
    return json.loads(p.stdout) if p.returncode == 0 else None


def main():
    import torch
    cases = []
    for dim in ("2", "3"):
        for mode in ("bilinear", "nearest", "bicubic"):
            if dim == "3" and mode == "bicubic":
                continue
            for pad in ("zeros", "border", "reflection"):
                for ac in ("0", "1"):
                    for dt in ("f64", "f32"):
                        args = [dim, mode, pad, ac, dt]
                        full = run(args + ["bwd"])
                        case = {"dims": int(dim), "mode": mode, "padding_mode": pad, "align_corners": ac == "1",
                                "dtype": dt, "backward": full is not None}
                        res = full if full is not None else run(args + ["fwd"])
                        case.update(res)
                        cases.append(case)
                        print(dim, mode, pad, ac, dt, "backward" if full else "forward only", file=sys.stderr)
    json.dump({"torch": torch.__version__, "cases": cases}, sys.stdout, separators=(",", ":"))


if __name__ == "__main__":
    main()
