#!/usr/bin/env python3
"""Write a Parquet table of encoded images, the way a Python user would (pyarrow + Pillow).

Run:  /tmp/peer/venv/bin/python make_table.py --kind digits --rows 10000 --out digits.parquet
      /tmp/peer/venv/bin/python make_table.py --kind photos --rows 500  --out photos.parquet

Kinds:
  digits  the embedded MNIST digits (data/mnist10k of the project), each rotated by a random angle in
          +-45 deg and placed on a 42x42 canvas, PNG, gray (like the paper's RTS digits).
  photos  synthetic 640x480 RGB JPEG "photos" (smooth gradients + shapes), quality 90.
Columns: id (int64, from --first-id), label (int64, -1 for photos), image (struct<bytes: binary, path: string>,
the Hugging Face `datasets` Image convention, with its `huggingface` schema metadata) unless
--plain, which writes a plain `image: binary` column instead.
Row groups of --row-group rows (default 1000). Deterministic for a --seed.
"""
import argparse
import gzip
import io
import json
import os
import struct

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image, ImageDraw

HERE = os.path.dirname(os.path.abspath(__file__))


def read_idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    magic = struct.unpack(">I", data[:4])[0]
    ndim = magic & 0xFF
    dims = struct.unpack(">" + "I" * ndim, data[4:4 + 4 * ndim])
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def digits(rows, rng):
    d = os.path.join(HERE, "..", "..", "data", "mnist10k")  # the vendored copy in the project
    imgs = read_idx(os.path.join(d, "mnist10k-images-idx3-ubyte.gz"))
    labels = read_idx(os.path.join(d, "mnist10k-labels-idx1-ubyte.gz"))
    for i in range(rows):
        k = i % len(imgs)
        im = Image.fromarray(imgs[k]).rotate(float(rng.uniform(-45, 45)), resample=Image.BILINEAR)
        canvas = Image.new("L", (42, 42), 0)
        canvas.paste(im, (int(rng.integers(0, 15)), int(rng.integers(0, 15))))
        buf = io.BytesIO()
        canvas.save(buf, format="PNG")
        yield i, int(labels[k]), buf.getvalue()


def photos(rows, rng):
    yy, xx = np.mgrid[0:480, 0:640].astype(np.float32)
    for i in range(rows):
        a, b, c = rng.uniform(0, 1, 3)
        base = np.stack([
            127 + 100 * np.sin(xx / (40 + 60 * a) + b),
            127 + 100 * np.cos(yy / (30 + 50 * b) + c),
            127 + 100 * np.sin((xx + yy) / (50 + 40 * c)),
        ], axis=-1).clip(0, 255).astype(np.uint8)
        im = Image.fromarray(base, "RGB")
        draw = ImageDraw.Draw(im)
        for _ in range(6):
            x0, y0 = int(rng.integers(0, 560)), int(rng.integers(0, 400))
            draw.rectangle([x0, y0, x0 + int(rng.integers(20, 80)), y0 + int(rng.integers(20, 80))],
                           fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
        buf = io.BytesIO()
        im.save(buf, format="JPEG", quality=90)
        yield i, -1, buf.getvalue()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kind", choices=["digits", "photos"], default="digits")
    ap.add_argument("--rows", type=int, default=10000)
    ap.add_argument("--row-group", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--first-id", type=int, default=0, help="id of the first row (for several files)")
    ap.add_argument("--plain", action="store_true", help="image as a plain binary column")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    rng = np.random.default_rng(a.seed)
    gen = digits if a.kind == "digits" else photos
    ids, labels, blobs = [], [], []
    for i, lab, b in gen(a.rows, rng):
        ids.append(a.first_id + i)
        labels.append(lab)
        blobs.append(b)
    if a.plain:
        image = pa.array(blobs, pa.binary())
        meta = None
    else:
        image = pa.StructArray.from_arrays(
            [pa.array(blobs, pa.binary()), pa.array([None] * len(blobs), pa.string())],
            names=["bytes", "path"])
        meta = {b"huggingface": json.dumps({"info": {"features": {
            "id": {"dtype": "int64", "_type": "Value"},
            "label": {"dtype": "int64", "_type": "Value"},
            "image": {"_type": "Image"}}}}).encode()}
    table = pa.table({"id": pa.array(ids, pa.int64()), "label": pa.array(labels, pa.int64()),
                      "image": image})
    if meta:
        table = table.replace_schema_metadata(meta)
    pq.write_table(table, a.out, row_group_size=a.row_group)
    print(f"wrote {a.out}: {a.rows} rows, {os.path.getsize(a.out)} bytes")


if __name__ == "__main__":
    main()
