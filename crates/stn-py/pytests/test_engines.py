"""The engine glue with the real packages: Daft (stn_rs.daft.Rectify), Ray Data
(stn_rs.ray.Rectify in map_batches) and datafusion-python (stn_rs.datafusion_functions), each
compared with Rectifier on the same rows."""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import stn_rs


@pytest.fixture(scope="module")
def table(digits):
    t = pq.read_table(digits).slice(0, 300)
    # one bad row: bytes that are no image
    image = t["image"].combine_chunks()
    bad = pa.array([{"bytes": b"not an image", "path": None}], type=image.type)
    return pa.table({"id": pa.concat_arrays([t["id"].combine_chunks(), pa.array([10_000], t["id"].type)]),
                     "image": pa.concat_arrays([image, bad])})


def test_daft_rectify_image_columns_and_encoded_bytes(run_dir, table):
    daft = pytest.importorskip("daft")
    import stn_rs.daft

    r = stn_rs.Rectifier(run_dir, threads=1)
    want = r.rectify_table(table)
    rectify = stn_rs.daft.Rectify(str(run_dir), threads=1)
    df = daft.from_arrow(table).with_column("png", daft.col("image")["bytes"])
    df = df.with_columns({
        "encoded": rectify.encoded(daft.col("png")),
        "theta": rectify.theta(daft.col("png")),
        "error": rectify.error(daft.col("png")),
    }).sort("id")
    got = df.to_arrow()
    assert got["encoded"].to_pylist() == want["stn_image"].combine_chunks().field("bytes").to_pylist()
    assert got["error"].to_pylist() == want["stn_error"].to_pylist()
    # the bad row: its reason, and nulls for theta (a list of nulls, as stn writes it: pyarrow
    # cannot read a null fixed-size list back from Parquet)
    assert "not a PNG or JPEG" in got["error"][-1].as_py()
    assert got["theta"][-1].as_py() == [None] * 6
    np.testing.assert_array_equal(
        np.array(got["theta"].to_pylist()[:-1], np.float32),
        np.array(want["stn_theta"].to_pylist()[:-1], np.float32),
    )
    # a Daft Image column (decoded in Daft) gives Daft images of the same pixels
    good = daft.from_arrow(table.slice(0, 300)).with_column(
        "img", daft.col("image")["bytes"].decode_image(mode="L")
    )
    out = good.with_column("rect", rectify(daft.col("img"))).sort("id").select("img", "rect").to_pydict()
    direct = r.rectify(good.sort("id").to_arrow()["img"]).column("stn_image").to_pylist()
    assert len(out["rect"]) == 300
    for a, b in zip(out["rect"], direct):
        np.testing.assert_array_equal(np.asarray(a).reshape(-1), np.frombuffer(bytes(b["data"]), np.uint8))
    with pytest.raises(Exception, match="Daft Image column"):
        good.with_column("x", rectify(daft.col("image")["bytes"])).collect()


@pytest.fixture(scope="module")
def ray_session():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()


def test_ray_map_batches_rectifies_every_row(run_dir, table, ray_session):
    import ray.data
    import stn_rs.ray

    want = stn_rs.Rectifier(run_dir, threads=1).rectify_table(table)
    ds = ray.data.from_arrow(table).map_batches(
        stn_rs.ray.Rectify,
        fn_constructor_kwargs={"run_dir": str(run_dir), "threads": 1},
        batch_format="pyarrow", batch_size=64, concurrency=2, num_cpus=1,
    )
    got = ds.to_arrow_refs()
    got = pa.concat_tables(ray.get(got)).sort_by("id")
    assert got.column_names == want.column_names
    assert got.num_rows == table.num_rows
    for name in ("id", "stn_theta", "stn_error"):
        assert got[name].to_pylist() == want[name].to_pylist(), name
    assert got["stn_image"].to_pylist() == want["stn_image"].to_pylist()
    with pytest.raises(ValueError, match="run_dir"):
        stn_rs.ray.Rectify()


def test_datafusion_sql_functions(run_dir, table, tmp_path):
    datafusion = pytest.importorskip("datafusion")
    src = tmp_path / "t.parquet"
    pq.write_table(table, src)
    r = stn_rs.Rectifier(run_dir, threads=1)
    want = r.rectify_table(table)
    ctx = datafusion.SessionContext()
    functions = stn_rs.datafusion_functions(run_dir)
    assert sorted(f.name for f in functions) == [
        "stn_error",
        "stn_explain",
        "stn_rectified",
        "stn_rectify",
        "stn_theta",
    ]
    for f in functions:
        ctx.register_udf(datafusion.udf(f))
    ctx.register_parquet("t", str(src))
    got = ctx.sql(
        "SELECT id, stn_rectify(image) AS img, stn_theta(image) AS theta, stn_error(image) AS err, "
        "stn_rectify(image, 'format=jpeg, jpeg_quality=80') AS jpeg, stn_explain(image) AS x FROM t ORDER BY id"
    ).to_arrow_table()
    # theta decomposed in SQL: what Rectifier.explain gives for the same theta.
    explained = r.explain(want["stn_theta"].combine_chunks())
    rows = got["x"].to_pylist()
    assert any(row is None for row in rows) and any(row is not None for row in rows), "bad and good rows"
    assert [row and row["angle_deg"] for row in rows] == explained["angle_deg"].to_pylist()
    assert [row and row["zoom"] for row in rows] == explained["zoom"].to_pylist()
    assert got.num_rows == table.num_rows
    assert got["img"].to_pylist() == want["stn_image"].to_pylist()
    assert got["theta"].to_pylist() == want["stn_theta"].to_pylist()
    assert got["err"].to_pylist() == want["stn_error"].to_pylist()
    assert got["jpeg"][0].as_py()["bytes"][:2] == b"\xff\xd8"


def test_datafusion_of_another_major_is_refused_not_crashed(run_dir, monkeypatch):
    datafusion = pytest.importorskip("datafusion")
    functions = stn_rs.datafusion_functions(run_dir)
    monkeypatch.setattr(datafusion, "__version__", "54.0.0")
    with pytest.raises(ImportError, match="datafusion 54.0.0 is installed.*DataFusion 55"):
        stn_rs.datafusion_functions(run_dir)
    with pytest.raises(ImportError, match="DataFusion 55"):
        datafusion.udf(functions[0])
    monkeypatch.undo()
    with pytest.raises(FileNotFoundError, match="no such run folder"):
        stn_rs.datafusion_functions(run_dir / "missing")
    with pytest.raises(ValueError, match="format"):
        stn_rs.datafusion_functions(run_dir, format="gif")
