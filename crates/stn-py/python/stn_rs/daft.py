"""Daft glue: ``stn_rs.daft.Rectify``, a ``@daft.cls`` whose batch methods rectify an image
column of a Daft DataFrame.

::

    import daft, stn_rs.daft

    df = daft.read_parquet("photos.parquet")                  # any image column: Image, bytes, tensor
    rectify = stn_rs.daft.Rectify("runs/rts-st", threads=1)  # one instance per worker, built there
    df = df.with_columns({
        "rectified": rectify(df["image"]),          # Daft Image (decoded), null where a row failed
        "theta": rectify.theta(df["image"]),        # list[float32], the transformer's parameters
        "error": rectify.error(df["image"]),        # null, or why the row failed
    })

``__call__`` takes a Daft ``Image`` column (``col.decode_image()`` first for encoded bytes; or
use :meth:`Rectify.encoded`, which takes encoded bytes, Hugging Face structs or tensors and
returns encoded bytes). The arguments are picklable (a path and numbers): Daft builds the model
on each worker; ``threads`` is the size of each instance's own pool, so several instances on one
machine share its cores (pair it with ``daft.cls``'s ``cpus`` through ``Rectify.with_options``
if you change it).
"""

from __future__ import annotations

import daft
import pyarrow as pa

from . import _native


def _register_daft_types():
    """Daft registers its pyarrow extension type (``daft.super_extension``) only when it first
    converts to pyarrow itself; until then pyarrow would hand our output back as the bare
    storage struct, which Daft cannot take as an Image. Registered here first."""
    try:
        from daft.datatype import get_super_ext_type
    except ImportError:  # a Daft without it registers the type at import
        return
    get_super_ext_type()


def _array(column):
    """One array of a table's column, with its extension type (Daft's Image) kept."""
    t = column.type
    storage = getattr(t, "storage_type", t)
    arr = column.combine_chunks() if column.num_chunks else pa.array([], type=storage)
    if isinstance(t, pa.ExtensionType) and not isinstance(arr.type, pa.ExtensionType):
        arr = pa.ExtensionArray.from_storage(t, arr.cast(storage))
    return arr


def _rectifier(run_dir, torch, arch, normalize, threads):
    if (run_dir is None) == (torch is None):
        raise ValueError("stn_rs.daft.Rectify: give run_dir (a run folder) or torch (weights), not both")
    if run_dir is not None:
        return _native.Rectifier(run_dir, threads=threads)
    return _native.Rectifier.from_torch(torch, arch=arch, normalize=normalize, threads=threads)


@daft.cls(max_concurrency=None)
class Rectify:
    """A trained spatial transformer as Daft batch functions (see the module's documentation).

    ``run_dir`` or ``torch`` (with ``arch`` and ``normalize``) as ``stn_rs.ray.Rectify``;
    ``threads`` (default 1) the instance's pool; other keyword arguments are
    ``rectify_table``'s options.
    """

    def __init__(self, run_dir=None, *, torch=None, arch="tutorial", normalize=(0.1307, 0.3081),
                 threads=1, **options):
        self.rectifier = _rectifier(run_dir, torch, arch, normalize, threads)
        self.options = options
        _register_daft_types()

    def _rectified(self, images):
        return self.rectifier.rectify(images, **self.options)

    @daft.method.batch(return_dtype=daft.DataType.image())
    def __call__(self, images: daft.Series) -> pa.Array:
        """The rectified images of a Daft ``Image`` column (null where a row failed)."""
        out = _array(self._rectified(images).column("stn_image"))
        if not str(out.type).startswith("extension<daft"):
            raise TypeError(
                f"stn_rs.daft.Rectify(...)(column): a Daft Image column is expected, not {images.datatype()}; "
                "decode it first (col.decode_image()) or call .encoded(column) for encoded bytes"
            )
        return out

    @daft.method.batch(return_dtype=daft.DataType.binary())
    def encoded(self, images: daft.Series) -> pa.Array:
        """The rectified images encoded (PNG by default; ``format="jpeg"`` in the options), from
        a column of encoded bytes, Hugging Face image structs or tensors."""
        out = _array(self._rectified(images).column("stn_image"))
        if pa.types.is_struct(out.type) and "bytes" in [f.name for f in out.type]:
            out = out.field("bytes")
        if not (pa.types.is_binary(out.type) or pa.types.is_large_binary(out.type)):
            raise TypeError(
                f"stn_rs.daft.Rectify.encoded: a column of encoded images is expected, not {images.datatype()}; "
                "call the instance itself for Daft Image columns"
            )
        return out

    @daft.method.batch(return_dtype=daft.DataType.list(daft.DataType.float32()))
    def theta(self, images: daft.Series) -> pa.Array:
        """The transformer's parameters of each image (localization only); nulls where a row failed."""
        theta = _array(self.rectifier.theta(images, **self.options).column("stn_theta"))
        return theta.cast(pa.list_(pa.float32()))

    @daft.method.batch(return_dtype=daft.DataType.string())
    def error(self, images: daft.Series) -> pa.Array:
        """Null where the row rectifies, else why it does not."""
        return _array(self._rectified(images).column("stn_error"))
