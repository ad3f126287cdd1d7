#!/usr/bin/env python3
"""S3 as a Python user reaches it (boto3, pyarrow), for stn's tests and trials with an
S3-compatible server (AWS_ENDPOINT_URL, e.g. moto's server on loopback).

    s3_tool.py serve PORT                 runs moto's S3 server on 127.0.0.1:PORT (until killed)
    s3_tool.py serve-auth PORT            the same, checking credentials: prints (one JSON line) the
                                          access key ID and secret of the one user allowed in
    s3_tool.py proxy PORT TARGET_PORT     forwards 127.0.0.1:PORT to 127.0.0.1:TARGET_PORT (until
                                          killed: a server that stops, its data kept behind it)
    s3_tool.py mkbucket BUCKET            creates a bucket
    s3_tool.py put LOCAL s3://BUCKET/KEY  uploads a file
    s3_tool.py ls s3://BUCKET/PREFIX      prints the keys under PREFIX, one per line
    s3_tool.py read s3://BUCKET/KEY       reads a Parquet object (or prefix) with pyarrow through
                                          S3; prints {"rows": N, "columns": {NAME: sha256}}, the
                                          rows hashed in a canonical order
    s3_tool.py read LOCAL_PATH            the same for a local file or folder

Credentials and endpoint come from the environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
AWS_REGION, AWS_ENDPOINT_URL). Needs boto3 and pyarrow; `serve` needs moto[server].
"""
import hashlib
import json
import os
import sys


def client():
    import boto3

    return boto3.client("s3", endpoint_url=os.environ.get("AWS_ENDPOINT_URL"))


def split(url):
    assert url.startswith("s3://"), url
    bucket, _, key = url[5:].partition("/")
    return bucket, key


def read(target):
    import pyarrow.dataset as ds
    import pyarrow.fs as pafs

    if target.startswith("s3://"):
        endpoint = os.environ.get("AWS_ENDPOINT_URL", "")
        scheme = "http" if endpoint.startswith("http://") else "https"
        fs = pafs.S3FileSystem(
            endpoint_override=endpoint.split("://", 1)[-1] or None,
            scheme=scheme,
            region=os.environ.get("AWS_REGION", "us-east-1"),
        )
        path = target[5:]
    else:
        fs, path = None, target
    table = ds.dataset(path, format="parquet", filesystem=fs).to_table()
    # The rows in a canonical order (files and row groups may come in any order).
    rows = sorted(table.to_pylist(), key=repr)
    cols = {}
    for name in table.column_names:
        h = hashlib.sha256()
        for r in rows:
            h.update(repr(r[name]).encode())
        cols[name] = h.hexdigest()
    print(json.dumps({"rows": table.num_rows, "columns": cols}, sort_keys=True))


def main(argv):
    cmd, *rest = argv
    if cmd == "serve":
        from moto.server import ThreadedMotoServer

        server = ThreadedMotoServer(ip_address="127.0.0.1", port=int(rest[0]), verbose=False)
        server.start()
        print("serving", flush=True)
        import time

        while True:
            time.sleep(3600)
    elif cmd == "serve-auth":
        # moto checks signatures and IAM policies after this many requests: the three below.
        os.environ["INITIAL_NO_AUTH_ACTION_COUNT"] = "3"
        import boto3
        from moto.server import ThreadedMotoServer

        server = ThreadedMotoServer(ip_address="127.0.0.1", port=int(rest[0]), verbose=False)
        server.start()
        iam = boto3.client(
            "iam",
            endpoint_url=f"http://127.0.0.1:{rest[0]}",
            region_name="us-east-1",
            aws_access_key_id="bootstrap",
            aws_secret_access_key="bootstrap",
        )
        iam.create_user(UserName="stn")
        key = iam.create_access_key(UserName="stn")["AccessKey"]
        iam.put_user_policy(
            UserName="stn",
            PolicyName="all-s3",
            PolicyDocument=json.dumps(
                {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}
            ),
        )
        print(json.dumps({"key": key["AccessKeyId"], "secret": key["SecretAccessKey"]}), flush=True)
        import time

        while True:
            time.sleep(3600)
    elif cmd == "proxy":
        import socket
        import threading

        def pipe(a, b):
            try:
                while True:
                    data = a.recv(65536)
                    if not data:
                        break
                    b.sendall(data)
            except OSError:
                pass
            finally:
                for s_ in (a, b):
                    try:
                        s_.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass

        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", int(rest[0])))
        listener.listen(64)
        print("proxying", flush=True)
        while True:
            conn, _ = listener.accept()
            upstream = socket.create_connection(("127.0.0.1", int(rest[1])))
            threading.Thread(target=pipe, args=(conn, upstream), daemon=True).start()
            threading.Thread(target=pipe, args=(upstream, conn), daemon=True).start()
    elif cmd == "mkbucket":
        client().create_bucket(Bucket=rest[0])
    elif cmd == "put":
        bucket, key = split(rest[1])
        client().upload_file(rest[0], bucket, key)
    elif cmd == "ls":
        bucket, prefix = split(rest[0])
        for page in client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for o in page.get("Contents", []):
                print(o["Key"])
    elif cmd == "read":
        read(rest[0])
    else:
        sys.exit(f"s3_tool: unknown command {cmd}")


if __name__ == "__main__":
    main(sys.argv[1:])
