"""The kernels with PyTorch's argument names and semantics, on NumPy arrays, PyTorch tensors or
anything with DLPack (CPU; float32 or float64, N, C, H, W or N, C, D, H, W):

- :func:`affine_grid` is ``torch.nn.functional.affine_grid``;
- :func:`grid_sample` is ``torch.nn.functional.grid_sample``;
- :func:`warp_affine` is ``grid_sample(input, affine_grid(theta, size), ...)`` in one pass,
  without the grid (theta in PyTorch's normalized coordinates, not kornia's pixels).

Results are computed in the input's precision, bitwise the same for any thread count, and come
back as the input's kind (NumPy in, NumPy out; a tensor in, a tensor out). No gradients: these
are for inference and preprocessing (train with ``stn`` or the Burn op).
"""

from __future__ import annotations

import numpy as np

from . import _native
from ._arrays import from_raw, to_numpy


def _float(a, name, like=None):
    if like is not None:
        dtype = like.dtype
    elif a.dtype in (np.float32, np.float64):
        dtype = a.dtype
    else:
        raise TypeError(f"{name}: float32 or float64 elements, not {a.dtype}")
    return np.ascontiguousarray(a, dtype=dtype)


def affine_grid(theta, size, align_corners=False):
    """The sampling grid (N, H, W, 2) or (N, D, H, W, 3) of ``theta`` (N, 2, 3) or (N, 3, 4)
    for an output of ``size`` (N, C, H, W) or (N, C, D, H, W)."""
    t, back = to_numpy(theta, "theta")
    t = _float(t, "theta")
    return back(from_raw(_native._affine_grid(t, [int(s) for s in size], bool(align_corners)), t.dtype))


def grid_sample(input, grid, mode="bilinear", padding_mode="zeros", align_corners=False):
    """``input`` sampled at ``grid`` (coordinates in [-1, 1], x first); ``mode`` bilinear,
    nearest or bicubic (2-D); ``padding_mode`` zeros, border or reflection."""
    x, back = to_numpy(input, "input")
    x = _float(x, "input")
    g, _ = to_numpy(grid, "grid")
    g = _float(g, "grid", like=x)
    return back(from_raw(_native._grid_sample(x, g, mode, padding_mode, bool(align_corners)), x.dtype))


def warp_affine(input, theta, size=None, mode="bilinear", padding_mode="zeros", align_corners=False):
    """``grid_sample(input, affine_grid(theta, size), ...)`` fused. ``size``: the output's
    (N, C, H, W) as ``affine_grid`` takes it, or just its spatial size (H, W); default the
    input's."""
    x, back = to_numpy(input, "input")
    x = _float(x, "input")
    t, _ = to_numpy(theta, "theta")
    t = _float(t, "theta", like=x)
    spatial = x.ndim - 2
    if size is None:
        out = list(x.shape[2:])
    else:
        size = [int(s) for s in size]
        if len(size) == spatial + 2:
            if size[:2] != list(x.shape[:2]):
                raise ValueError(f"size {size}: N and C must be the input's {list(x.shape[:2])}")
            out = size[2:]
        elif len(size) == spatial:
            out = size
        else:
            raise ValueError(f"size {size}: (N, C, *spatial) or the spatial size alone, for a {x.ndim}-D input")
    return back(from_raw(_native._warp_affine(x, t, out, mode, padding_mode, bool(align_corners)), x.dtype))
