#!/usr/bin/env python3
"""Write the independent references the table tests compare with: what Pillow and PyTorch
make of the fixture images, so a bug in stn's shared core (decoding, the warp, the sampler,
quantizing) shows in the table writer's and the augmenter's tests instead of being compared
with itself.

Made once and committed (crates/stn-table/tests/fixtures/reference/); run again only when the
fixtures change. Needs torch, numpy, pyarrow and Pillow (tools/peer's setup, for example):

    python tools/reference/make_references.py --augmented AUG.parquet

1. Rectification (`rectify/`): every good row of every fixture table, warped by one constant
   affine theta (THETA below; the test builds a tutorial model whose localization net outputs
   exactly it: zero regression weights, THETA as the bias). Pillow decodes the row's source
   file (EXIF orientation applied, `ImageOps.exif_transpose`, then the row's mode); rows that
   the tool resized (fixed-shape tensors) are read from the table with pyarrow. PyTorch warps
   at the input's size (the tutorial model's output is 28 x 28 for a 28 x 28 localization
   input, scaled by image size / 28): `affine_grid` + `grid_sample`, bilinear, zeros,
   align_corners=False, in float32; then 8 bits, rounded to nearest.
2. Augmentation (`augment/`): the augmented copy of `hf_bytes.parquet` that stn wrote with
   AUGMENT (spec, seed, copies) gives each copy's warp (the `stn_augment` column: stn draws
   the random parameters, which are stn's own); PyTorch applies each warp to the source image
   (affine: `affine_grid`; projective: the homogeneous grid divided through) with
   `grid_sample`. The warps are committed too, so the test checks that stn still draws them.

`reference.json` lists every reference image with the table rows it stands for.
"""
import argparse
import json
from pathlib import Path

import numpy as np
import PIL
import pyarrow as pa
import pyarrow.parquet as pq
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "crates" / "stn-table" / "tests" / "fixtures"
OUT = FIXTURES / "reference"

# Rotation by about 19 degrees, anisotropic scale, shear and a shift (output -> input,
# normalized coordinates): far from the identity, most of each image still in view.
THETA = [0.85, -0.3, 0.1, 0.25, 0.9, -0.05]
# What the augmentation test runs (matrix ops only: a spline's inverse is stn's own).
AUGMENT = {
    "spec": "affine:rot=30,scale=0.8-1.2,shift=0.1,shear=10;hflip;perspective:0.3,p=0.5",
    "seed": 7,
    "copies": 2,
    "table": "hf_bytes.parquet",
}
MODE_CHANNELS = {"L": 1, "LA": 2, "RGB": 3, "RGBA": 4}


def pillow_pixels(source, mode):
    """The row's source file as Pillow decodes it: (H, W, C) float32 in [0, 1]."""
    img = Image.open(FIXTURES / source)
    img = ImageOps.exif_transpose(img)
    if mode is not None and img.mode != mode:
        img = img.convert(mode)
    a = np.asarray(img)
    if a.ndim == 2:
        a = a[:, :, None]
    assert a.dtype == np.uint8, (source, a.dtype)
    return a


def tensor_rows(table, column, shape):
    """Fixed-shape tensor rows (tool-resized) straight from the table: list of (H, W, C) u8."""
    col = pq.read_table(FIXTURES / table).column(column).combine_chunks()
    if isinstance(col.type, pa.BaseExtensionType):
        col = col.storage
    flat = col.flatten()
    while pa.types.is_list(flat.type) or pa.types.is_large_list(flat.type) or pa.types.is_fixed_size_list(flat.type):
        flat = flat.flatten()
    return list(np.asarray(flat).reshape([len(col)] + shape))


def to_float(a):
    # stn decodes 8-bit samples as v / 255 in float32.
    return torch.from_numpy(a.astype(np.float32) / np.float32(255.0)).permute(2, 0, 1)[None]


def quantize(y):
    # stn's 8-bit output: clamp to [0, 1], times 255, rounded to nearest (half away from zero).
    v = np.clip(y[0].permute(1, 2, 0).numpy(), 0.0, 1.0) * np.float32(255.0)
    return np.floor(v + np.float32(0.5)).astype(np.uint8)


def save(a, path):
    c = a.shape[2]
    mode = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}[c]
    img = Image.fromarray(a[:, :, 0] if c == 1 else a, mode)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, optimize=False, compress_level=6)


def rectify_reference(x):
    _, c, h, w = x.shape
    theta = torch.tensor(THETA, dtype=torch.float32).view(1, 2, 3)
    # The tutorial model's output size (28 x 28) scaled by image size / localization size (28).
    oh, ow = max(1, round(28 * h / 28)), max(1, round(28 * w / 28))
    grid = F.affine_grid(theta, (1, c, oh, ow), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def base(n, align):
    # PyTorch's normalized pixel centres.
    if align:
        return torch.linspace(-1.0, 1.0, n, dtype=torch.float64) if n > 1 else torch.zeros(1, dtype=torch.float64)
    return (torch.arange(n, dtype=torch.float64) * 2 + 1) / n - 1


def warp_reference(x, warp, opts):
    _, c, h, w = x.shape
    stages = warp["stages"]
    m = np.eye(3) if not stages else np.array(stages[0]["matrix"], dtype=np.float64)
    assert len(stages) <= 1 and (not stages or "matrix" in stages[0]), warp
    align = opts["align_corners"]
    if np.allclose(m[2], [0.0, 0.0, 1.0], atol=0.0):
        theta = torch.tensor(m[:2], dtype=torch.float32)[None]
        grid = F.affine_grid(theta, (1, c, h, w), align_corners=align)
    else:
        # Projective: stn normalizes by m[2][2] and samples in float32.
        p = torch.tensor(m / m[2, 2], dtype=torch.float32)
        ys, xs = torch.meshgrid(base(h, align).float(), base(w, align).float(), indexing="ij")
        u = p[0, 0] * xs + p[0, 1] * ys + p[0, 2]
        v = p[1, 0] * xs + p[1, 1] * ys + p[1, 2]
        q = p[2, 0] * xs + p[2, 1] * ys + p[2, 2]
        grid = torch.stack([u / q, v / q], dim=-1)[None]
    return F.grid_sample(x, grid, mode=opts["mode"], padding_mode=opts["padding"], align_corners=align)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--augmented",
        required=True,
        help=f"stn augment's copy of {AUGMENT['table']}: stn augment --table ... --augment SPEC --seed "
        f"{AUGMENT['seed']} --copies {AUGMENT['copies']}",
    )
    a = ap.parse_args()
    torch.set_num_threads(1)
    manifest = json.loads((FIXTURES / "manifest.json").read_text())
    listing = {
        "generator": "tools/reference/make_references.py",
        "versions": {"torch": torch.__version__, "pillow": PIL.__version__, "numpy": np.__version__},
        "theta": THETA,
        "model": "tutorial, localization input 28 x 28, bilinear, zeros, align_corners=false",
        "rectify": {},
        "augment": {**AUGMENT, "rows": []},
    }
    done = {}
    for table, info in sorted(manifest.items()):
        if table.startswith("_") or not all(r["ok"] for r in info["rows"]):
            continue
        resized = None
        for i, row in enumerate(info["rows"]):
            if row.get("resized"):
                if resized is None:
                    resized = tensor_rows(table, info["column"], row["resized"] + [3])
                pixels, key = resized[i], f"{Path(table).stem}-{i}"
            else:
                mode = row.get("mode")
                key = f"{Path(row['source']).name.replace('.', '_')}-{mode}"
                if key not in done:
                    done[key] = pillow_pixels(row["source"], mode)
                pixels = done[key]
            name = f"rectify/{key}.png"
            save(quantize(rectify_reference(to_float(pixels))), OUT / name)
            listing["rectify"].setdefault(table, []).append(name)

    # Augmentation: the warps stn drew, applied by PyTorch to Pillow's pixels.
    aug = pq.read_table(a.augmented).to_pylist()
    rows = manifest[AUGMENT["table"]]["rows"]
    assert len(aug) == len(rows) * AUGMENT["copies"], (len(aug), len(rows))
    spec_opts = {"mode": "bilinear", "padding": "zeros", "align_corners": False}
    for r, out_row in enumerate(aug):
        src = rows[r // AUGMENT["copies"]]
        warp = json.loads(out_row["stn_augment"])
        pixels = pillow_pixels(src["source"], src.get("mode"))
        y = warp_reference(to_float(pixels), warp, spec_opts)
        name = f"augment/row-{r}.png"
        save(quantize(y), OUT / name)
        listing["augment"]["rows"].append({"image": name, "copy": out_row["stn_copy"], "warp": warp})
    (OUT / "reference.json").write_text(json.dumps(listing, indent=1) + "\n")
    print(f"wrote {sum(len(v) for v in listing['rectify'].values())} rectified rows "
          f"({len(list((OUT / 'rectify').iterdir()))} images) and {len(aug)} augmented rows to {OUT}")


if __name__ == "__main__":
    main()
