"""docs/python.md's examples for the engines, the arrays and augmentation, run as written (in a
folder holding the files they name: the test model as runs/rts-st, the digits table, a table of
PNG bytes), so the page stays true."""

import re

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import REPO


def blocks(heading):
    text = (REPO / "docs" / "python.md").read_text()
    section = text.split(f"## {heading}", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, re.S)


@pytest.fixture
def folder(run_dir, digits, tmp_path, monkeypatch):
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "rts-st").symlink_to(run_dir)
    t = pq.read_table(digits).slice(0, 200)
    pq.write_table(t, tmp_path / "digits.parquet")
    pq.write_table(pa.table({"id": t["id"], "png": t["image"].combine_chunks().field("bytes")}),
                   tmp_path / "photos.parquet")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def run(code, name, **scope):
    exec(compile(code, name, "exec"), scope)
    return scope


def test_the_daft_example(folder):
    pytest.importorskip("daft")
    (code,) = blocks("Daft")
    df = run(code, "docs/python.md#daft")["df"].to_pydict()
    assert len(df["rectified"]) == 200 and all(e is None for e in df["error"])
    assert all(len(t) == 6 for t in df["theta"]) and all(p[:4] == b"\x89PNG" for p in df["png_out"])


def test_the_ray_example(folder):
    ray = pytest.importorskip("ray")
    (code,) = blocks("Ray Data")
    # 4 logical CPUs: the example's two actors hold one each, and reading the file needs more
    # (with 2, as on this machine, the read tasks would wait for the actors forever)
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        refs = run(code, "docs/python.md#ray-data")["table"]
        table = pa.concat_tables(ray.get(refs))
    finally:
        ray.shutdown()
    assert table.num_rows == 200 and table["stn_error"].null_count == 200


def test_the_datafusion_example(folder):
    pytest.importorskip("datafusion")
    (code,) = blocks("DataFusion (datafusion-python 55)")
    t = run(code, "docs/python.md#datafusion")["t"]
    assert t.num_rows == 200 and t["err"].null_count == 200


def test_the_array_examples(folder):
    (kernels,) = blocks("Arrays: the kernels with PyTorch's semantics")
    n, c = 3, 2
    x = np.random.default_rng(0).random((n, c, 32, 32), dtype=np.float32)
    theta = np.tile(np.array([[0.8, 0.1, 0.0], [-0.1, 0.8, 0.1]], np.float32), (n, 1, 1))
    out = run(kernels, "docs/python.md#arrays", x=x, theta=theta, n=n, c=c)["out"]
    assert out.shape == (n, c, 64, 64)
    (aug,) = blocks("Augmentation on arrays")
    batch = (x * 255).astype(np.uint8)
    labels = np.ones((n, 32, 32), np.int32)
    points = [np.array([[5.0, 6.0]])] * n
    out = run(aug, "docs/python.md#augmentation", stn_rs=__import__("stn_rs"), batch=batch, labels=labels,
              points=points)["out"]
    assert out.images.shape == batch.shape and len(out.warps) == n and out.keypoints[0].shape == (1, 2)
