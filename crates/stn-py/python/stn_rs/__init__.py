"""stn-rs: spatial transformer networks in Rust, from Python.

A trained spatial transformer (a run folder of ``stn train``, or PyTorch weights imported with
``stn import-torch``) rectifies images and image tables held by pyarrow, pandas, polars, Daft,
Ray Data or DuckDB, zero-copy through the Arrow PyCapsule interface::

    import pyarrow.parquet as pq
    import stn_rs

    r = stn_rs.Rectifier("runs/rts-st", threads=2)
    out = r.rectify_table(pq.read_table("digits.parquet"))   # + stn_image, stn_theta, stn_error

The work runs in Rust with the GIL released, in the instance's own thread pool. Engine glue:
``stn_rs.daft.Rectify`` and ``stn_rs.ray.Rectify``.
"""

from ._native import Rectifier, __version__

__all__ = ["Rectifier", "__version__"]
