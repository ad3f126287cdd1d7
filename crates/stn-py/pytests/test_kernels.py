"""affine_grid, grid_sample and warp_affine against PyTorch's own outputs: the golden cases
(crates/stn-kernels/tests/golden, written by PyTorch's CPU kernels in float64)."""

import json

import numpy as np
import pytest

import stn_rs
from conftest import REPO

GOLDEN = REPO / "crates" / "stn-kernels" / "tests" / "golden"


def tensor(t, dtype=np.float64):
    return np.asarray(t["data"], dtype=dtype).reshape(t["shape"])


def cases(kind):
    for name in ("affine2d_down", "affine2d_up", "affine3d", "direct2d", "direct3d"):
        case = json.loads((GOLDEN / f"{name}.json").read_text())
        if case["kind"] == kind:
            for r in case["results"]:
                yield pytest.param(case, r, id=f"{name}-{r['mode']}-{r['padding_mode']}-{r['align_corners']}")


@pytest.mark.parametrize("case,result", list(cases("affine")))
def test_affine_cases_equal_pytorch(case, result):
    x, theta = tensor(case["input"]), tensor(case["theta"])
    size, ac = case["out_size"], result["align_corners"]
    grid = stn_rs.affine_grid(theta, size, align_corners=ac)
    np.testing.assert_allclose(grid, tensor(result["grid"]), rtol=0, atol=1e-12)
    want = tensor(result["output"])
    kw = dict(mode=result["mode"], padding_mode=result["padding_mode"], align_corners=ac)
    fused = stn_rs.warp_affine(x, theta, size, **kw)
    assert fused.dtype == np.float64 and fused.shape == want.shape
    np.testing.assert_allclose(fused, want, rtol=0, atol=1e-6)
    np.testing.assert_allclose(stn_rs.grid_sample(x, grid, **kw), want, rtol=0, atol=1e-6)
    # float32 in, float32 out, within float32's accuracy
    out32 = stn_rs.warp_affine(x.astype(np.float32), theta.astype(np.float32), size, **kw)
    assert out32.dtype == np.float32
    np.testing.assert_allclose(out32, want, rtol=0, atol=1e-4 * max(1.0, np.abs(want).max()))


@pytest.mark.parametrize("case,result", list(cases("direct")))
def test_hand_made_grids_equal_pytorch(case, result):
    x, grid = tensor(case["input"]), tensor(result["grid"])
    out = stn_rs.grid_sample(
        x, grid, mode=result["mode"], padding_mode=result["padding_mode"], align_corners=result["align_corners"]
    )
    np.testing.assert_allclose(out, tensor(result["output"]), rtol=0, atol=1e-6)


class DLPackOnly:
    """An array that offers nothing but DLPack (as a tensor of another library would)."""

    def __init__(self, a):
        self._a = a

    def __dlpack__(self, **kw):
        return self._a.__dlpack__(**kw)

    def __dlpack_device__(self):
        return self._a.__dlpack_device__()


def test_dlpack_inputs_and_non_contiguous_views_give_the_same_result():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 3, 9, 11)).astype(np.float32)
    theta = np.array([[[0.9, 0.2, 0.1], [-0.2, 1.1, 0.0]]] * 2, dtype=np.float32)
    want = stn_rs.warp_affine(x, theta)
    np.testing.assert_array_equal(stn_rs.warp_affine(DLPackOnly(x), DLPackOnly(theta)), want)
    # a transposed (non-contiguous) view of the same values
    xt = np.ascontiguousarray(x.transpose(0, 1, 3, 2)).transpose(0, 1, 3, 2)
    assert not xt.flags.c_contiguous
    np.testing.assert_array_equal(stn_rs.warp_affine(xt, theta), want)
    # the output size alone, or as affine_grid takes it
    small = stn_rs.warp_affine(x, theta, (5, 6))
    assert small.shape == (2, 3, 5, 6)
    np.testing.assert_array_equal(stn_rs.warp_affine(x, theta, (2, 3, 5, 6)), small)


def test_torch_tensors_come_back_as_tensors():
    torch = pytest.importorskip("torch")
    x = torch.rand(2, 1, 8, 8)
    theta = torch.tensor([[[1.0, 0.1, 0.0], [0.0, 1.0, 0.2]]] * 2)
    out = stn_rs.warp_affine(x, theta)
    ref = torch.nn.functional.grid_sample(x, torch.nn.functional.affine_grid(theta, x.shape, align_corners=False),
                                          align_corners=False)
    assert isinstance(out, torch.Tensor)
    assert torch.allclose(out, ref, atol=1e-6)


def test_bad_arguments_raise_with_the_reason():
    x = np.zeros((1, 1, 4, 4), np.float32)
    theta = np.zeros((1, 2, 3), np.float32)
    with pytest.raises(TypeError, match="float32 or float64"):
        stn_rs.warp_affine(x.astype(np.int32), theta)
    with pytest.raises(ValueError, match="theta"):
        stn_rs.warp_affine(x, np.zeros((2, 2, 3), np.float32))
    with pytest.raises(ValueError, match="mode"):
        stn_rs.grid_sample(x, np.zeros((1, 4, 4, 2), np.float32), mode="area")
    with pytest.raises(ValueError, match="padding_mode"):
        stn_rs.grid_sample(x, np.zeros((1, 4, 4, 2), np.float32), padding_mode="wrap")
    with pytest.raises(ValueError, match="bicubic|3-D|5-D|rank"):
        stn_rs.warp_affine(np.zeros((1, 1, 2, 2, 2)), np.zeros((1, 3, 4)), mode="bicubic")
    with pytest.raises(ValueError, match="grid"):
        stn_rs.grid_sample(x, np.zeros((1, 4, 4, 3), np.float32))
    with pytest.raises(TypeError):
        stn_rs.affine_grid("theta", (1, 1, 4, 4))
    with pytest.raises(ValueError, match="size"):
        stn_rs.warp_affine(x, theta, (1, 1, 1))
