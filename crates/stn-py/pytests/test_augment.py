"""stn_rs.augment against `stn augment --table` (the same keys give the same pixels and warps),
with masks and keypoints checked by independent arithmetic."""

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import stn_rs
from conftest import stn

SPEC = "affine:rot=40,scale=0.8-1.2,shift=0.1"


def images(n=12, h=20, w=24, c=3, seed=5):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([(xx * 10) % 256, (yy * 12) % 256, (xx * yy) % 256], -1)[..., :c]
    return ((base[None] + rng.integers(0, 40, (n, 1, 1, c))) % 256).astype(np.uint8)


def test_the_same_keys_give_what_stn_augment_writes(tmp_path):
    x = images()  # N, H, W, C uint8
    table = pa.table({
        "id": np.arange(len(x)),
        "image": pa.FixedShapeTensorArray.from_numpy_ndarray(x),
    })
    src, out = tmp_path / "in.parquet", tmp_path / "aug.parquet"
    pq.write_table(table, src)
    spec = SPEC + ";tps:0.05"
    p = stn("augment", "--spec", spec, "--table", src, "--out", out, "--copies", 2, "--seed", 11)
    assert p.returncode == 0, p.stderr
    written = pq.read_table(out).sort_by([("stn_copy", "ascending"), ("id", "ascending")])
    for copy in (0, 1):
        rows = written.filter(pa.compute.equal(written["stn_copy"], copy))
        want = rows["image"].combine_chunks().to_numpy_ndarray()  # the image column, warped
        got = stn_rs.augment(x, spec, seed=11, epoch=copy, layout="NHWC")
        assert got.images.dtype == np.uint8 and got.images.shape == x.shape
        np.testing.assert_array_equal(got.images, want)
        assert got.warps == [json.loads(s) for s in rows["stn_augment"].to_pylist()]
        assert not np.array_equal(got.images, x)


def test_a_sample_depends_on_its_key_alone():
    x = images(n=6, c=1)[..., 0]  # N, H, W gray: as a batch N, 1, H, W
    batch = x[:, None]
    whole = stn_rs.augment(batch, SPEC, seed=3, epoch=2)
    part = stn_rs.augment(batch[3:5], SPEC, seed=3, epoch=2, indices=[3, 4])
    np.testing.assert_array_equal(part.images, whole.images[3:5])
    one = stn_rs.augment(x[4], SPEC, seed=3, epoch=2, indices=[4])  # HW, one image
    np.testing.assert_array_equal(one.images, whole.images[4, 0])
    other = stn_rs.augment(batch, SPEC, seed=4, epoch=2)
    assert not np.array_equal(other.images, whole.images)
    # float in, float out (no rounding), close to the 8-bit result
    f = stn_rs.augment(batch.astype(np.float32) / 255, SPEC, seed=3, epoch=2)
    assert f.images.dtype == np.float32
    assert np.abs(f.images * 255 - whole.images).max() <= 0.5 + 1e-3


def to_norm(v, n):  # align_corners=False, pixel centres at integers
    return (2 * v + 1) / n - 1


def to_pixel(v, n):
    return ((v + 1) * n - 1) / 2


def test_masks_and_keypoints_move_with_the_image():
    n, h, w = 5, 16, 20
    x = images(n=n, h=h, w=w, c=1).transpose(0, 3, 1, 2)
    masks = np.random.default_rng(1).integers(1, 4, (n, h, w)).astype(np.int64)
    points = [np.array([[3.0, 4.0], [10.5, 7.25], [w - 1.0, h - 1.0]]) for _ in range(n)]
    out = stn_rs.augment(x, "affine:rot=25,scale=0.9-1.1", seed=9, masks=masks, keypoints=points, mask_fill=-1)
    assert out.masks.shape == masks.shape and out.masks.dtype == masks.dtype
    assert set(np.unique(out.masks)) <= {-1, 1, 2, 3}
    for i, warp in enumerate(out.warps):
        (stage,) = warp["stages"]
        m = np.array(stage["matrix"])  # output -> input, normalized (x, y, 1)
        inv = np.linalg.inv(m)
        for p, q in zip(points[i], out.keypoints[i]):
            v = inv @ np.array([to_norm(p[0], w), to_norm(p[1], h), 1.0])
            want = [to_pixel(v[0] / v[2], w), to_pixel(v[1] / v[2], h)]
            np.testing.assert_allclose(q, want, atol=1e-9)
        # the mask is read where the image is: nearest pixel of the sampling map
        yy, xx = 8, 9
        s = m @ np.array([to_norm(xx, w), to_norm(yy, h), 1.0])
        sx, sy = to_pixel(s[0] / s[2], w), to_pixel(s[1] / s[2], h)
        if 0.6 < sx < w - 1.6 and 0.6 < sy < h - 1.6 and abs(sx % 1 - 0.5) > 1e-6 and abs(sy % 1 - 0.5) > 1e-6:
            assert out.masks[i, yy, xx] == masks[i, int(np.floor(sy + 0.5)), int(np.floor(sx + 0.5))]


def test_bad_input_raises_with_the_reason():
    x = images(n=2, c=1)[..., 0][:, None]
    with pytest.raises(ValueError, match="rott|unknown|rot"):
        stn_rs.augment(x, "affine:rott=3", seed=0)
    with pytest.raises(TypeError, match="uint8 or float"):
        stn_rs.augment(x.astype(np.int16), SPEC, seed=0)
    with pytest.raises(ValueError, match="masks"):
        stn_rs.augment(x, SPEC, seed=0, masks=np.zeros((2, 3, 3)))
    with pytest.raises(ValueError, match="keypoints"):
        stn_rs.augment(x, SPEC, seed=0, keypoints=[np.zeros((1, 2))])
    with pytest.raises(ValueError, match="indices"):
        stn_rs.augment(x, SPEC, seed=0, indices=[1])
    with pytest.raises(ValueError, match="layout|axes|shape"):
        stn_rs.augment(np.zeros((2, 2, 2, 2, 2), np.uint8), SPEC, seed=0)


def test_keep_freed_memory_applies_on_glibc():
    import platform

    applied = stn_rs.keep_freed_memory()
    assert applied == (platform.system() == "Linux" and platform.libc_ver()[0] == "glibc")
