#!/usr/bin/env python3
"""The output digest of rectified tables, computed independently of stn (pyarrow and a
pure-Python PNG decoder), to check the `"output_digest"` that `stn rectify --json` prints.

    output_digest.py FILE.parquet [FILE.parquet ...]     prints the hex digest

The definition (docs/reliability.md, "The digests"): SHA-256 over every row of the files in order; a
failed row (null stn_image or stn_theta) is the byte 0; else the byte 1, stn_theta as little-endian f32,
the image's height, width and channels as little-endian u32, and its pixels as interleaved
8-bit values, row by row. Handles the PNG outputs of stn (8-bit gray, gray+alpha, RGB, RGBA,
non-interlaced) in Hugging Face struct<bytes, path> or plain binary columns.
"""
import hashlib
import struct
import sys
import zlib


def paeth(a, b, c):
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    if pa <= pb and pa <= pc:
        return a
    return b if pb <= pc else c


def decode_png(data):
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, ihdr = 8, b"", None
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            ihdr = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        elif kind == b"IEND":
            break
    width, height, depth, color, _, _, interlace = ihdr
    assert depth == 8 and interlace == 0, "8-bit, non-interlaced PNGs only"
    channels = {0: 1, 4: 2, 2: 3, 6: 4}[color]
    raw = zlib.decompress(idat)
    stride = width * channels
    out = bytearray(height * stride)
    prev = bytearray(stride)
    for y in range(height):
        f = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        for x in range(stride):
            a = line[x - channels] if x >= channels else 0
            b = prev[x]
            c = prev[x - channels] if x >= channels else 0
            if f == 1:
                line[x] = (line[x] + a) & 255
            elif f == 2:
                line[x] = (line[x] + b) & 255
            elif f == 3:
                line[x] = (line[x] + (a + b) // 2) & 255
            elif f == 4:
                line[x] = (line[x] + paeth(a, b, c)) & 255
        out[y * stride : (y + 1) * stride] = line
        prev = line
    return height, width, channels, bytes(out)


def main(paths):
    import pyarrow.parquet as pq

    h = hashlib.sha256()
    for path in paths:
        t = pq.read_table(path, columns=["stn_image", "stn_theta"])
        for image, theta in zip(t.column("stn_image").to_pylist(), t.column("stn_theta").to_pylist()):
            if theta is None or image is None:
                h.update(b"\x00")
                continue
            h.update(b"\x01")
            h.update(struct.pack("<%df" % len(theta), *theta))
            png = image["bytes"] if isinstance(image, dict) else image
            height, width, channels, pixels = decode_png(png)
            h.update(struct.pack("<III", height, width, channels))
            h.update(pixels)
    print(h.hexdigest())


if __name__ == "__main__":
    main(sys.argv[1:])
