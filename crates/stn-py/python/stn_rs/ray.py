"""Ray Data glue: a callable class for ``Dataset.map_batches(..., batch_format="pyarrow")``.

::

    import ray, stn_rs.ray

    ds = ray.data.read_parquet("digits.parquet")
    out = ds.map_batches(
        stn_rs.ray.Rectify,
        fn_constructor_kwargs={"run_dir": "runs/rts-st", "threads": 1},
        batch_format="pyarrow", batch_size=256, concurrency=2, num_cpus=1,
    )

Each actor builds its own :class:`stn_rs.Rectifier` (from the picklable arguments) with its own
thread pool of ``threads`` threads: give Ray's ``num_cpus`` the same number, so the actors on a
node share its cores as Ray schedules them. Every batch comes back with all its columns plus
``stn_image`` (in the image column's own convention: Ray's tensor columns stay tensors),
``stn_theta`` and ``stn_error`` (null, or why the row failed), as ``Rectifier.rectify_table``.
"""

from __future__ import annotations

from . import _native


class Rectify:
    """Rectifies each batch of a Ray Dataset (``batch_format="pyarrow"``).

    ``run_dir``: a run folder (``stn train``'s ``--out`` or ``stn import-torch``'s); or
    ``torch``: PyTorch weights (``.pt``/``.safetensors``) with ``arch`` and ``normalize`` as
    ``Rectifier.from_torch``. ``column``: the image column (found by its convention when None).
    ``threads``: this actor's thread pool (default 1, one actor per CPU Ray gives it). Other
    keyword arguments are ``rectify_table``'s options (``format``, ``batch_size``, ...).
    """

    def __init__(self, run_dir=None, *, torch=None, arch="tutorial", normalize=(0.1307, 0.3081),
                 column=None, threads=1, **options):
        if (run_dir is None) == (torch is None):
            raise ValueError("stn_rs.ray.Rectify: give run_dir (a run folder) or torch (weights), not both")
        if run_dir is not None:
            self.rectifier = _native.Rectifier(run_dir, threads=threads)
        else:
            self.rectifier = _native.Rectifier.from_torch(torch, arch=arch, normalize=normalize, threads=threads)
        self.column = column
        self.options = options

    def __call__(self, batch):
        return self.rectifier.rectify_table(batch, self.column, **self.options)
