"""stn-rs: spatial transformer networks in Rust, from Python.

A trained spatial transformer (a run folder of ``stn train``, or PyTorch weights imported with
``stn import-torch``) rectifies images and image tables held by pyarrow, pandas, polars, Daft,
Ray Data or DuckDB, zero-copy through the Arrow PyCapsule interface::

    import pyarrow.parquet as pq
    import stn_rs

    r = stn_rs.Rectifier("runs/rts-st", threads=2)
    out = r.rectify_table(pq.read_table("digits.parquet"))   # + stn_image, stn_theta, stn_error

The work runs in Rust with the GIL released, in the instance's own thread pool. Engine glue:
``stn_rs.daft.Rectify`` (a ``@daft.cls``), ``stn_rs.ray.Rectify`` (for ``map_batches``) and
``stn_rs.datafusion_functions(run_dir)`` (the SQL functions for datafusion-python). On arrays
(NumPy, PyTorch, DLPack): ``affine_grid``, ``grid_sample`` and ``warp_affine`` with PyTorch's
semantics, and ``augment``, ``stn augment``'s seeded warps.
"""

from ._native import Rectifier, StnFunction, __version__, datafusion_functions, keep_freed_memory
from .augment import Augmented, augment
from .kernels import affine_grid, grid_sample, warp_affine

__all__ = [
    "Augmented",
    "Rectifier",
    "StnFunction",
    "__version__",
    "affine_grid",
    "augment",
    "datafusion_functions",
    "grid_sample",
    "keep_freed_memory",
    "warp_affine",
]
