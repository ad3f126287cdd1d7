#!/usr/bin/env python3
"""Runs SQL statements on an Arrow Flight SQL endpoint with the ADBC Flight SQL driver (as an
analyst's tool would) and writes the last statement's result to a Parquet file.

Usage: python adbc_query.py grpc://HOST:PORT OUT.parquet STATEMENT [STATEMENT ...]
       python adbc_query.py grpc+tls://HOST:PORT OUT.parquet STATEMENT ...   (mutual TLS)
Needs adbc-driver-flightsql and pyarrow. Exit 1 with the driver's message on an error.
For a cluster that speaks mutual TLS, STN_TLS_CA, STN_TLS_CERT and STN_TLS_KEY name the
cluster's CA and this client's certificate and key (PEM files).
"""
import os
import sys

import adbc_driver_flightsql.dbapi as flight_sql
import pyarrow.parquet as pq
from adbc_driver_flightsql import DatabaseOptions


def main():
    url, out, *statements = sys.argv[1:]
    kwargs = {DatabaseOptions.TIMEOUT_QUERY.value: "300", DatabaseOptions.WITH_MAX_MSG_SIZE.value: str(64 << 20)}
    for env, option in [
        ("STN_TLS_CA", DatabaseOptions.TLS_ROOT_CERTS),
        ("STN_TLS_CERT", DatabaseOptions.MTLS_CERT_CHAIN),
        ("STN_TLS_KEY", DatabaseOptions.MTLS_PRIVATE_KEY),
    ]:
        if os.environ.get(env):
            with open(os.environ[env], encoding="ascii") as f:
                kwargs[option.value] = f.read()
    try:
        with flight_sql.connect(url, autocommit=True, db_kwargs=kwargs) as conn, conn.cursor() as cur:
            for s in statements:
                cur.execute(s)
            table = cur.fetch_arrow_table()
    except Exception as e:  # noqa: BLE001 - the driver's error is the result
        print(f"{type(e).__name__}: {e}", file=sys.stderr)
        sys.exit(1)
    pq.write_table(table, out)
    print(table.num_rows)


if __name__ == "__main__":
    main()
