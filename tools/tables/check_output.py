#!/usr/bin/env python3
"""Read a table written by `stn rectify --table` back with pyarrow and DuckDB and check it
against its input: same rows in the same order, every input column unchanged (values, types,
field metadata), the schema metadata kept, and the three added columns.

Run:  python3 check_output.py IN.parquet OUT.parquet   (needs pyarrow and duckdb)
Prints one JSON line; exits 1 with the reason on the first mismatch.
"""
import json
import sys

import duckdb
import pyarrow.parquet as pq


def fail(msg):
    print(json.dumps({"ok": False, "error": msg}))
    sys.exit(1)


def main():
    src, out = sys.argv[1], sys.argv[2]
    a = pq.read_table(src)
    b = pq.read_table(out)
    if b.num_rows != a.num_rows:
        fail(f"{b.num_rows} rows, input has {a.num_rows}")
    names = b.schema.names
    if names[: len(a.schema.names)] != a.schema.names or names[len(a.schema.names):] != ["stn_image", "stn_theta", "stn_error"]:
        fail(f"columns {names}")
    for name in a.schema.names:
        fa, fb = a.schema.field(name), b.schema.field(name)
        if fa.type != fb.type or (fa.metadata or {}) != (fb.metadata or {}):
            fail(f"column {name}: {fa} vs {fb}")
        if not a.column(name).equals(b.column(name)):
            fail(f"column {name}: values differ")
    for k, v in (a.schema.metadata or {}).items():
        if k != b"huggingface" and (b.schema.metadata or {}).get(k) != v:
            fail(f"schema metadata {k!r} not kept")
    theta = b.column("stn_theta")
    errors = b.column("stn_error")
    images = b.column("stn_image")
    bad = len(errors) - errors.null_count
    # A failed row's theta is a list of nulls (Arrow C++ cannot read null fixed-size lists).
    null_thetas = sum(1 for t in theta.to_pylist() if t is None or all(v is None for v in t))
    if null_thetas != bad or images.null_count != bad:
        fail(f"{null_thetas} null thetas and {images.null_count} null images for {bad} errors")
    con = duckdb.connect()
    n, failed = con.execute(f"SELECT count(*), count(stn_error) FROM read_parquet('{out}')").fetchone()
    first = con.execute(f"SELECT len(stn_theta) FROM read_parquet('{out}') WHERE stn_theta IS NOT NULL LIMIT 1").fetchone()
    if n != a.num_rows:
        fail(f"DuckDB reads {n} rows")
    print(json.dumps({"ok": True, "rows": n, "failed": failed, "theta_len": first[0] if first else None,
                      "pyarrow_type": str(images.type)}))


if __name__ == "__main__":
    main()
