#!/usr/bin/env python3
"""Delta Lake tables as a Python user writes and reads them (the `deltalake` package), for
stn's tests.

    delta_tool.py make OUT PARQUET... [--split N] [--column-mapping] [--partition-by COL]
                  [--delete-rows I,J,...]
        writes the Parquet files' rows as a Delta table at OUT (a folder, or s3://BUCKET/PREFIX):
        version 0 holds the first file, each further file is one more version (an append);
        --split N: the rows of one file, the first N in version 0 and the rest in version 1.
        --column-mapping: the table maps its columns to physical names ("name" mode).
        --partition-by COL: the table is partitioned by COL (a folder of data files per value,
        the column's values kept only in the log).
        --delete-rows: one more version deletes those rows of the first data file with a
        deletion vector (inline, as Spark and Databricks write them: delta-rs's Python package
        cannot write deletion vectors, so this commit is written here by the protocol's rules).
    delta_tool.py read TABLE [--version N]
        reads the table with `deltalake` (deletion vectors and column mapping applied) and
        prints one JSON line: {"version", "rows", "columns", "ids", "theta_lengths", "history"}
        ("ids": the `id` column in row order when there is one).
    delta_tool.py append TABLE PARQUET
        appends the rows of a Parquet file (another writer's commit).
    delta_tool.py change-schema TABLE
        overwrites the table with one row of other columns (another writer's metadata change).
    delta_tool.py compare OUTPUT REFERENCE
        compares a rectified output (a Delta table, or Parquet files) with a rectified Parquet
        reference row by row, by `id`: prints {"rows", "ids", "differ"} (ids sorted; "differ":
        the ids whose stn_theta, stn_image or stn_error differ from the reference's).

For s3:// tables the endpoint and credentials come from the environment (AWS_ENDPOINT_URL,
AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION). Needs deltalake, pyarrow and pyroaring.
"""
import json
import os
import struct
import sys
import time

Z85 = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#"
PORTABLE_MAGIC = 1681511377


def z85(data):
    data = data + b"\0" * (-len(data) % 4)
    out = []
    for i in range(0, len(data), 4):
        v = struct.unpack(">I", data[i : i + 4])[0]
        chars = []
        for _ in range(5):
            v, r = divmod(v, 85)
            chars.append(Z85[r])
        out.extend(reversed(chars))
    return "".join(out)


def storage_options(uri):
    if not uri.startswith("s3://"):
        return None
    opts = {"AWS_ALLOW_HTTP": "true", "AWS_S3_ALLOW_UNSAFE_RENAME": "true"}
    for k in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION"):
        if os.environ.get(k):
            opts[k] = os.environ[k]
    return opts


def log_lines(uri, version):
    name = f"_delta_log/{version:020d}.json"
    if uri.startswith("s3://"):
        import boto3

        bucket, _, prefix = uri[5:].partition("/")
        s3 = boto3.client("s3", endpoint_url=os.environ.get("AWS_ENDPOINT_URL"))
        body = s3.get_object(Bucket=bucket, Key=f"{prefix.rstrip('/')}/{name}")["Body"].read()
        return [json.loads(l) for l in body.decode().splitlines() if l.strip()]
    with open(os.path.join(uri, name)) as f:
        return [json.loads(l) for l in f if l.strip()]


def put_log(uri, version, actions):
    name = f"_delta_log/{version:020d}.json"
    body = "\n".join(json.dumps(a) for a in actions).encode()
    if uri.startswith("s3://"):
        import boto3

        bucket, _, prefix = uri[5:].partition("/")
        s3 = boto3.client("s3", endpoint_url=os.environ.get("AWS_ENDPOINT_URL"))
        s3.put_object(Bucket=bucket, Key=f"{prefix.rstrip('/')}/{name}", Body=body, IfNoneMatch="*")
        return
    path = os.path.join(uri, name)
    with open(path, "xb") as f:
        f.write(body)


def delete_rows(uri, rows):
    """One more version: the first data file of version 0 with a deletion vector of `rows`."""
    from deltalake import DeltaTable
    from pyroaring import BitMap

    dt = DeltaTable(uri, storage_options=storage_options(uri))
    version = dt.version()
    first = log_lines(uri, 0)
    add = next(a["add"] for a in first if "add" in a)
    meta = None
    protocol = None
    for v in range(version + 1):
        for a in log_lines(uri, v):
            meta = a.get("metaData", meta)
            protocol = a.get("protocol", protocol)
    bitmap = BitMap(rows).serialize()
    treemap = struct.pack("<Q", 1) + struct.pack("<I", 0) + bitmap
    raw = struct.pack("<I", PORTABLE_MAGIC) + treemap
    dv = {
        "storageType": "i",
        "pathOrInlineDv": z85(raw),
        "sizeInBytes": len(raw),
        "cardinality": len(set(rows)),
    }
    now = int(time.time() * 1000)
    reader = ["deletionVectors"]
    writer = ["deletionVectors"]
    if meta["configuration"].get("delta.columnMapping.mode", "none") != "none":
        reader.append("columnMapping")
        writer.append("columnMapping")
    for f in protocol.get("readerFeatures") or []:
        if f not in reader:
            reader.append(f)
    for f in protocol.get("writerFeatures") or []:
        if f not in writer:
            writer.append(f)
    meta = dict(meta)
    meta["configuration"] = dict(meta["configuration"], **{"delta.enableDeletionVectors": "true"})
    actions = [
        {"commitInfo": {"timestamp": now, "operation": "DELETE", "operationParameters": {"predicate": "[]"},
                        "engineInfo": "stn delta_tool.py"}},
        {"protocol": {"minReaderVersion": 3, "minWriterVersion": 7, "readerFeatures": reader,
                      "writerFeatures": writer}},
        {"metaData": meta},
        {"remove": {"path": add["path"], "deletionTimestamp": now, "dataChange": True,
                    "extendedFileMetadata": True, "partitionValues": add["partitionValues"], "size": add["size"]}},
        {"add": dict({k: v for k, v in add.items() if v is not None}, modificationTime=now, deletionVector=dv)},
    ]
    put_log(uri, version + 1, actions)


def make(out, files, column_mapping, rows, split, partition_by=None):
    import pyarrow.parquet as pq
    from deltalake import write_deltalake

    config = {"delta.columnMapping.mode": "name"} if column_mapping else None
    tables = [pq.read_table(f) for f in files]
    if split is not None:
        tables = [tables[0].slice(0, split), tables[0].slice(split)]
    for i, table in enumerate(tables):
        if i == 0:
            write_deltalake(out, table, configuration=config, partition_by=partition_by,
                            storage_options=storage_options(out))
        else:
            write_deltalake(out, table, mode="append", storage_options=storage_options(out))
    if rows:
        delete_rows(out, rows)


def load(uri):
    """A rectified output as a pyarrow table: a Delta table (with deltalake), else Parquet."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if uri.startswith("s3://") or os.path.isdir(os.path.join(uri, "_delta_log")):
        from deltalake import DeltaTable, QueryBuilder

        dt = DeltaTable(uri, storage_options=storage_options(uri))
        reader = QueryBuilder().register("t", dt).execute("SELECT * FROM t")
        return pa.table(reader.read_all()) if hasattr(reader, "read_all") else pa.table(reader)
    return pq.read_table(uri)


def compare(output, reference):
    out, ref = load(output), load(reference)

    def rows(t):
        cols = {c: t.column(c).to_pylist() for c in ("id", "stn_theta", "stn_image", "stn_error")}
        return {i: (list(th) if th is not None else None, im, er)
                for i, th, im, er in zip(cols["id"], cols["stn_theta"], cols["stn_image"], cols["stn_error"])}

    o, r = rows(out), rows(ref)
    differ = sorted(i for i in o if o[i] != r.get(i))
    print(json.dumps({"rows": out.num_rows, "ids": sorted(o), "differ": differ}))


def read(uri, version):
    from deltalake import DeltaTable

    import pyarrow as pa
    from deltalake import QueryBuilder

    dt = DeltaTable(uri, version=version, storage_options=storage_options(uri))
    # The DataFusion reader (deletion vectors and column mapping applied), in file order.
    reader = QueryBuilder().register("t", dt).execute("SELECT * FROM t")
    t = pa.table(reader.read_all()) if hasattr(reader, "read_all") else pa.table(reader)
    doc = {
        "version": dt.version(),
        "rows": t.num_rows,
        "columns": t.column_names,
        "history": [h.get("operation") for h in dt.history()],
    }
    if "id" in t.column_names:
        doc["ids"] = t.column("id").to_pylist()
    if "stn_theta" in t.column_names:
        doc["theta_lengths"] = sorted({len(v) for v in t.column("stn_theta").to_pylist() if v is not None})
        doc["theta_type"] = str(t.schema.field("stn_theta").type)
    print(json.dumps(doc))


def main(argv):
    cmd = argv[1]
    if cmd == "make":
        args = argv[2:]
        cm = "--column-mapping" in args
        rows = []
        if "--delete-rows" in args:
            i = args.index("--delete-rows")
            rows = [int(x) for x in args[i + 1].split(",")]
            del args[i : i + 2]
        split = None
        if "--split" in args:
            i = args.index("--split")
            split = int(args[i + 1])
            del args[i : i + 2]
        partition_by = None
        if "--partition-by" in args:
            i = args.index("--partition-by")
            partition_by = [args[i + 1]]
            del args[i : i + 2]
        args = [a for a in args if a != "--column-mapping"]
        make(args[0], args[1:], cm, rows, split, partition_by)
    elif cmd == "read":
        version = int(argv[argv.index("--version") + 1]) if "--version" in argv else None
        read(argv[2], version)
    elif cmd == "append":
        import pyarrow.parquet as pq
        from deltalake import write_deltalake

        write_deltalake(argv[2], pq.read_table(argv[3]), mode="append", storage_options=storage_options(argv[2]))
    elif cmd == "change-schema":
        import pyarrow as pa
        from deltalake import write_deltalake

        other = pa.table({"other": pa.array([1], pa.int64())})
        write_deltalake(argv[2], other, mode="overwrite", schema_mode="overwrite",
                        storage_options=storage_options(argv[2]))
    elif cmd == "compare":
        compare(argv[2], argv[3])
    else:
        sys.exit(f"unknown command {cmd}")


if __name__ == "__main__":
    main(sys.argv)
