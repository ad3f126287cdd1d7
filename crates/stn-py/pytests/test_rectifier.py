"""stn_rs.Rectifier on Arrow data from pyarrow, pandas, polars and DuckDB, against the command
line's output for the same tables (the binding must convert, never change what the core does),
with bad rows, bad input, threads, pickling and the GIL."""

import pickle
import threading
import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import stn_rs
from conftest import TABLES, stn

ADDED = ["stn_image", "stn_theta", "stn_error"]
# One table of each convention: Hugging Face bytes, plain binary, Ray's fixed-shape tensors (an
# extension type), Daft's image struct, Spark's ImageSchema, img2dataset's JPEG column, paths.
CONVENTIONS = [
    "hf_bytes.parquet",
    "pyarrow_binary.parquet",
    "ray_fixed.parquet",
    "ray_native.parquet",
    "ray_variable.parquet",
    "daft_image.parquet",
    "spark_image.parquet",
    "img2dataset.parquet",
    "hf_paths.parquet",
]


def cli_output(run_dir, table, tmp_path):
    out = tmp_path / f"cli-{table}"
    stn("rectify", "--model", run_dir, "--table", TABLES / table, "--out", out)
    return pq.read_table(out)


@pytest.mark.parametrize("table", CONVENTIONS)
def test_tables_of_every_convention_come_back_as_the_command_line_writes_them(run_dir, table, tmp_path):
    r = stn_rs.Rectifier(str(run_dir), threads=2)
    given = pq.read_table(TABLES / table)
    got = r.rectify_table(given, base_dir=TABLES)
    want = cli_output(run_dir, table, tmp_path)
    assert isinstance(got, pa.Table)
    assert got.column_names == want.column_names
    assert got.column_names[-3:] == ADDED
    # The same types and field metadata (extension types of Ray and Daft included), and the
    # table's own metadata kept (pyarrow gives fewer footer keys than the file has).
    for a, b in zip(got.schema, want.schema):
        assert a.equals(b, check_metadata=True), f"{table}: {a} / {b}"
    for k, v in (given.schema.metadata or {}).items():
        if k != b"huggingface":
            assert got.schema.metadata[k] == v, k
    for name in got.column_names:
        assert got.column(name).combine_chunks().equals(want.column(name).combine_chunks()), f"{table}: {name}"
    # The run's lineage: the model's hash and the options, as in the command line's output.
    assert b"stn.lineage" in got.schema.metadata
    assert r.model_id.encode() in got.schema.metadata[b"stn.lineage"]


def test_pandas_polars_and_duckdb_inputs_give_the_same_rows(run_dir):
    pd = pytest.importorskip("pandas")
    pl = pytest.importorskip("polars")
    duckdb = pytest.importorskip("duckdb")
    r = stn_rs.Rectifier(str(run_dir), threads=2)
    path = TABLES / "pyarrow_binary.parquet"
    base = r.rectify_table(pq.read_table(path))
    inputs = {
        "pandas": pd.read_parquet(path),
        "polars": pl.read_parquet(path),
        "duckdb": duckdb.sql(f"SELECT * FROM '{path}'"),
    }
    for who, data in inputs.items():
        got = r.rectify_table(data)
        assert got.num_rows == base.num_rows, who
        for name in ADDED:
            a = got.column(name).combine_chunks()
            b = base.column(name).combine_chunks()
            # polars hands binary over as binary_view / large_binary: the values are what count.
            assert a.to_pylist() == b.to_pylist(), f"{who}: {name}"


def test_a_column_alone_gives_its_rectified_images_and_thetas(run_dir):
    r = stn_rs.Rectifier(str(run_dir))
    table = pq.read_table(TABLES / "hf_bytes.parquet")
    whole = r.rectify_table(table)
    only = r.rectify(table.column("image"))
    assert only.column_names == ADDED
    for name in ADDED:
        assert only.column(name).combine_chunks().equals(whole.column(name).combine_chunks()), name
    theta = r.theta(table.column("image").combine_chunks())
    assert theta.column_names == ["stn_theta", "stn_error"]
    assert theta.column("stn_theta").to_pylist() == whole.column("stn_theta").to_pylist()
    assert r.num_params == 6 and len(theta.column("stn_theta")[0].as_py()) == 6


def test_explain_decomposes_theta_as_documented(run_dir):
    """Rectifier.explain against the documented formulas computed here with numpy, for images
    and for their theta column alike; bad rows explain as null."""
    import numpy as np

    r = stn_rs.Rectifier(str(run_dir))
    table = pq.read_table(TABLES / "hf_bytes.parquet")
    theta = r.theta(table.column("image").combine_chunks()).column("stn_theta").combine_chunks()
    from_images = r.explain(table.column("image").combine_chunks())
    from_theta = r.explain(theta)
    assert from_images.equals(from_theta)
    assert from_images.column_names[:8] == ["family", "angle_deg", "scale_x", "scale_y", "shear", "tx", "ty", "zoom"]
    t = np.array(theta.to_pylist(), dtype=np.float64)
    a11, a12, a21, a22 = t[:, 0], t[:, 1], t[:, 3], t[:, 4]
    det = a11 * a22 - a12 * a21
    sx = np.hypot(a11, a21)
    want = {
        "angle_deg": np.degrees(np.arctan2(a21, a11)),
        "scale_x": sx,
        "scale_y": det / sx,
        "shear": (a11 * a12 + a21 * a22) / sx**2,
        "tx": t[:, 2],
        "ty": t[:, 5],
        "zoom": np.abs(det),
    }
    for name, values in want.items():
        np.testing.assert_allclose(from_images[name].to_numpy(), values, rtol=1e-12, atol=1e-12, err_msg=name)
    assert set(from_images["family"].to_pylist()) == {"affine"}
    assert from_images["reflection"].to_pylist() == list(det < 0)
    bad = r.explain(pq.read_table(TABLES / "bad_rows.parquet").column("image").combine_chunks(), base_dir=TABLES)
    assert bad["family"].null_count > 0 and bad["family"].null_count < bad.num_rows
    with pytest.raises(ValueError, match="has 6 parameters, got 2"):
        r.explain(pa.array([[1.0, 2.0]]))


def test_bad_rows_get_their_reason_and_good_rows_are_kept(run_dir, tmp_path):
    r = stn_rs.Rectifier(str(run_dir))
    got = r.rectify_table(pq.read_table(TABLES / "bad_rows.parquet"), base_dir=TABLES)
    want = cli_output(run_dir, "bad_rows.parquet", tmp_path)
    errors = got.column("stn_error").to_pylist()
    assert errors == want.column("stn_error").to_pylist()
    assert sum(e is not None for e in errors) == 6 and sum(e is None for e in errors) == 2
    for e, img in zip(errors, got.column("stn_image").to_pylist()):
        assert (e is None) == (img is not None)


def test_paths_stay_inside_the_base_folder(run_dir, tmp_path):
    r = stn_rs.Rectifier(str(run_dir))
    secret = tmp_path / "secret.png"
    secret.write_bytes((TABLES / "images" / "d0.png").read_bytes())
    inside = tmp_path / "inside"
    inside.mkdir()
    table = pa.table({"image": pa.array([{"bytes": None, "path": str(secret)}, {"bytes": None, "path": "../secret.png"}],
                                        pa.struct([("bytes", pa.binary()), ("path", pa.string())]))})
    got = r.rectify_table(table, base_dir=inside)
    errors = got.column("stn_error").to_pylist()
    assert "is absolute" in errors[0] and "must stay inside" in errors[0]
    assert ".." in errors[1]
    assert got.column("stn_image").null_count == 2
    opened = r.rectify_table(table, base_dir=inside, allow_outside_paths=True)
    assert opened.column("stn_error").null_count == 2


def test_bad_input_raises_a_python_exception_with_the_reason(run_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match="no such run folder"):
        stn_rs.Rectifier(str(tmp_path / "nothing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError):
        stn_rs.Rectifier(str(tmp_path / "empty"))
    with pytest.raises(ValueError, match="threads"):
        stn_rs.Rectifier(str(run_dir), threads=0)
    r = stn_rs.Rectifier(str(run_dir))
    with pytest.raises(ValueError, match="no image column"):
        r.rectify_table(pa.table({"x": [1, 2, 3]}))
    with pytest.raises(ValueError, match="no column `picture`"):
        r.rectify_table(pq.read_table(TABLES / "hf_bytes.parquet"), column="picture")
    with pytest.raises(ValueError, match="format"):
        r.rectify_table(pq.read_table(TABLES / "hf_bytes.parquet"), format="gif")
    with pytest.raises(ValueError, match="jpeg_quality"):
        r.rectify_table(pq.read_table(TABLES / "hf_bytes.parquet"), format="jpeg", jpeg_quality=0)
    with pytest.raises(ValueError, match="PNG level"):
        r.rectify_table(pq.read_table(TABLES / "hf_bytes.parquet"), png_level=12)
    with pytest.raises(ValueError, match="unknown option `colour`"):
        r.rectify_table(pq.read_table(TABLES / "hf_bytes.parquet"), colour="red")
    with pytest.raises(ValueError, match="batch_size"):
        r.rectify_table(pq.read_table(TABLES / "hf_bytes.parquet"), batch_size=0)
    with pytest.raises((ValueError, TypeError)):
        r.rectify_table([1, 2, 3])
    with pytest.raises(ValueError, match="already has a column `stn_image`"):
        r.rectify_table(r.rectify_table(pq.read_table(TABLES / "hf_bytes.parquet")), column="image")


def test_pickled_copies_and_threads(run_dir):
    r = stn_rs.Rectifier(str(run_dir), threads=2)
    assert r.threads == 2
    copy = pickle.loads(pickle.dumps(r))
    assert copy.threads == 2 and copy.model_id == r.model_id
    assert stn_rs.Rectifier(str(run_dir), threads=1).threads == 1
    table = pq.read_table(TABLES / "hf_bytes.parquet")
    assert copy.rectify_table(table).equals(r.rectify_table(table))
    # Any thread count gives the same bits.
    assert stn_rs.Rectifier(str(run_dir), threads=1).rectify_table(table).equals(r.rectify_table(table))


def test_the_gil_is_released_while_the_work_runs(run_dir, digits):
    r = stn_rs.Rectifier(str(run_dir), threads=1)
    table = pa.concat_tables([pq.read_table(digits)] * 10)
    span = {}

    def work():
        span["start"] = time.perf_counter()
        r.rectify_table(table)
        span["end"] = time.perf_counter()

    t = threading.Thread(target=work)
    ticks = []
    t.start()
    while t.is_alive():
        ticks.append(time.perf_counter())
        time.sleep(0.001)
    t.join()
    inside = [x for x in ticks if span["start"] + 0.05 < x < span["end"] - 0.05]
    assert span["end"] - span["start"] > 0.2, "the table is large enough to see"
    # Python ran on this thread while the rectification ran on the other.
    assert len(inside) > 20, (len(inside), span)
