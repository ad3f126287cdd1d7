"""Seeded augmentation on arrays: :func:`augment`, the same warps as ``stn augment``."""

from __future__ import annotations

import json

import numpy as np

from . import _native
from ._arrays import from_raw, to_numpy


class Augmented:
    """What :func:`augment` returns: ``images`` (the input's layout and dtype), ``masks`` and
    ``keypoints`` when given (else None), and ``warps``: each sample's sampling map, as
    ``stn augment`` records it in ``augment.jsonl`` (``{"stages": [...]}``, output side first, in
    normalized coordinates)."""

    __slots__ = ("images", "masks", "keypoints", "_warps", "_json")

    def __init__(self, images, masks, keypoints, warps_json):
        self.images = images
        self.masks = masks
        self.keypoints = keypoints
        self._json = warps_json  # parsed when first asked for
        self._warps = None

    @property
    def warps(self):
        """Each sample's warp, as ``augment.jsonl`` records it (``{"stages": [...]}``)."""
        if self._warps is None:
            self._warps = [json.loads(w) for w in self._json]
        return self._warps

    def __iter__(self):
        return iter((self.images, self.masks, self.keypoints, self.warps))

    def __repr__(self):
        shape = getattr(self.images, "shape", None)
        return f"Augmented(images {tuple(shape) if shape is not None else '?'}, {len(self._json)} warps)"


def _layout(a, layout):
    if layout is None:
        layout = {2: "HW", 3: "HWC", 4: "NCHW"}.get(a.ndim)
        if layout is None:
            raise ValueError(f"images: shape {a.shape}: HW, HWC or NCHW (or give layout=)")
    layout = layout.upper()
    if layout not in ("HW", "HWC", "NHWC", "NCHW", "CHW"):
        raise ValueError(f"layout {layout!r}: one of HW, HWC, CHW, NHWC, NCHW")
    if a.ndim != len(layout):
        raise ValueError(f"images: shape {a.shape} does not have the {len(layout)} axes of layout {layout}")
    return layout


def _to_nchw(a, layout):
    if layout == "HW":
        return a[None, None]
    if layout == "HWC":
        return a.transpose(2, 0, 1)[None]
    if layout == "CHW":
        return a[None]
    if layout == "NHWC":
        return a.transpose(0, 3, 1, 2)
    return a


def _from_nchw(a, layout):
    if layout == "HW":
        return a[0, 0]
    if layout == "HWC":
        return a[0].transpose(1, 2, 0)
    if layout == "CHW":
        return a[0]
    if layout == "NHWC":
        return a.transpose(0, 2, 3, 1)
    return a


def augment(images, spec, seed, masks=None, keypoints=None, *, epoch=0, indices=None, layout=None,
            mask_fill=0):
    """Random warps of a batch, as ``stn augment`` draws them.

    ``images``: one image (HW, HWC) or a batch (NCHW; NHWC or CHW with ``layout=``), NumPy or
    anything with DLPack; uint8 (0-255, rounded back to uint8) or float (0-1 for 8-bit
    images; kept as they are). ``spec``: ``stn augment``'s spec (``"affine:rot=30,scale=0.8-1.2;
    tps:0.05"``, plus ``mode=``/``padding=`` items). Sample ``i``'s warp comes from (``seed``,
    ``epoch``, ``indices[i]``) alone (default index ``i``): the same as ``stn augment --seed
    SEED`` gives copy ``epoch`` of its ``i``-th image, whatever the batch size or thread count.
    ``masks``: labels (N, H, W) or (N, C, H, W) (HW for one image), warped with nearest sampling
    (``mask_fill`` where the warp reads outside); ``keypoints``: per sample, (K, 2) points in
    pixels, (x, y) = (column, row), moved with the image. Returns :class:`Augmented`.
    """
    a, back = to_numpy(images, "images")
    layout = _layout(a, layout)
    dtype = a.dtype
    if dtype == np.uint8:
        x = a.astype(np.float32) / np.float32(255.0)
    elif dtype.kind == "f":
        x = a
    else:
        raise TypeError(f"images: uint8 or float elements, not {dtype}")
    x = np.ascontiguousarray(_to_nchw(x, layout), dtype=np.float32)
    n = x.shape[0]
    single = layout in ("HW", "HWC", "CHW")
    m = None
    if masks is not None:
        m_arr, _ = to_numpy(masks, "masks")
        mask_dtype, mask_ndim = m_arr.dtype, m_arr.ndim
        if single:
            m_arr = m_arr[None]
        if m_arr.ndim == 3:
            m_arr = m_arr[:, None]
        m = np.ascontiguousarray(m_arr, dtype=np.float32)
    points = None
    if keypoints is not None:
        kp = [keypoints] if single else list(keypoints)
        points = [np.asarray(p, dtype=np.float64).reshape(-1, 2).tolist() for p in kp]
    if indices is not None:
        indices = [int(i) for i in indices]
    raw, raw_masks, moved, warps = _native._augment(
        x, spec, int(seed), int(epoch), indices, m, float(mask_fill), points
    )
    out = from_raw(raw, np.float32)
    if dtype == np.uint8:
        # As stn's own 8-bit output: clamped and scaled in float32, rounded half away from zero.
        scaled = np.clip(out, np.float32(0.0), np.float32(1.0)) * np.float32(255.0)
        out = np.floor(scaled.astype(np.float64) + 0.5).astype(np.uint8)
    elif dtype != np.float32:
        out = out.astype(dtype)
    out = back(_from_nchw(out, layout))
    out_masks = None
    if raw_masks is not None:
        mm = from_raw(raw_masks, np.float32)
        if mask_ndim == (2 if single else 3):
            mm = mm[:, 0]
        if single:
            mm = mm[0]
        out_masks = mm if mask_dtype == np.float32 else mm.astype(mask_dtype)
    out_points = None
    if moved is not None:
        out_points = [np.asarray(p, dtype=np.float64).reshape(-1, 2) for p in moved]
        if single:
            out_points = out_points[0]
    return Augmented(out, out_masks, out_points, warps)
