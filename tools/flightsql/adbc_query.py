#!/usr/bin/env python3
"""Runs SQL statements on an Arrow Flight SQL endpoint with the ADBC Flight SQL driver (as an
analyst's tool would) and writes the last statement's result to a Parquet file.

Usage: python adbc_query.py grpc://HOST:PORT OUT.parquet STATEMENT [STATEMENT ...]
Needs adbc-driver-flightsql and pyarrow. Exit 1 with the driver's message on an error.
"""
import sys

import adbc_driver_flightsql.dbapi as flight_sql
import pyarrow.parquet as pq
from adbc_driver_flightsql import DatabaseOptions


def main():
    url, out, *statements = sys.argv[1:]
    kwargs = {DatabaseOptions.TIMEOUT_QUERY.value: "300", DatabaseOptions.WITH_MAX_MSG_SIZE.value: str(64 << 20)}
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
