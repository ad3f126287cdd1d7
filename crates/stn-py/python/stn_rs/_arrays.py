"""Arrays in and out: NumPy arrays as they are; PyTorch tensors and anything else with DLPack
through ``numpy.from_dlpack`` (CPU memory, no copy); results go back as the input's kind."""

from __future__ import annotations

import numpy as np


def to_numpy(x, name):
    """``x`` as a NumPy array, and a function that turns a NumPy result back into x's kind."""
    if isinstance(x, np.ndarray):
        return x, lambda a: a
    module = type(x).__module__.split(".")[0]
    if hasattr(x, "__dlpack__"):
        if module == "torch" and getattr(x, "requires_grad", False):
            x = x.detach()
        try:
            a = np.from_dlpack(x)
        except (BufferError, RuntimeError, TypeError) as e:
            raise TypeError(f"{name}: cannot read the array through DLPack (CPU memory only): {e}") from e
        if module == "torch":
            import torch

            return a, lambda r: torch.from_dlpack(r)
        return a, lambda r: r
    try:
        return np.asarray(x), lambda a: a
    except Exception as e:  # noqa: BLE001 - any failure here is the argument's
        raise TypeError(f"{name}: an array (NumPy, or anything with DLPack) is expected, not {type(x).__name__}") from e


def from_raw(raw, dtype):
    """A ``(bytearray, shape)`` from the native module as a writable NumPy array."""
    data, shape = raw
    return np.frombuffer(data, dtype=dtype).reshape(shape)
