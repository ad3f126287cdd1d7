"""PyTorch-trained weights from Python (no PyTorch installed): Rectifier.from_torch on the
tutorial's weights gives PyTorch's theta for the same 8-bit digits (the fixture made once with
PyTorch by tools/torch/make_torch_fixture.py), as does a run folder of `stn import-torch`."""

import json
import pickle

import numpy as np
import pyarrow as pa
import pytest

import stn_rs
from conftest import REPO, stn

TORCH = REPO / "crates" / "stn-models" / "tests" / "fixtures" / "torch"


def digits_and_theta():
    e = json.loads((TORCH / "expected.json").read_text())
    n = e["shape"][0]
    pixels = np.rint(np.array(e["inputs"], dtype=np.float64) * 255).astype(np.uint8).reshape(n, 28, 28, 1)
    # An Arrow fixed-shape tensor column (H, W, C): Ray Data's and Daft's way of holding pixels.
    column = pa.FixedShapeTensorArray.from_numpy_ndarray(pixels)
    return column, np.array(e["theta"], dtype=np.float32).reshape(n, 6)


@pytest.mark.parametrize("weights", ["tutorial.pt", "tutorial.safetensors", "checkpoint.pt"])
def test_from_torch_gives_pytorchs_theta(weights):
    column, want = digits_and_theta()
    r = stn_rs.Rectifier.from_torch(str(TORCH / weights), threads=2)
    got = np.array(r.theta(column).column("stn_theta").to_pylist(), dtype=np.float32)
    assert np.abs(got - want).max() <= 1e-5
    # The rectified digits come back as the same kind of column, one per digit.
    out = r.rectify(column)
    assert out.column("stn_error").null_count == len(column)
    assert out.schema.field("stn_image").type == column.type
    copy = pickle.loads(pickle.dumps(r))
    assert copy.model_id == r.model_id and copy.model_id.startswith("sha256:")
    assert np.array_equal(np.array(copy.theta(column).column("stn_theta").to_pylist(), dtype=np.float32), got)


def test_a_run_folder_from_stn_import_torch_is_the_same_model(tmp_path):
    column, want = digits_and_theta()
    p = stn("import-torch", TORCH / "tutorial.pt", "--arch", "tutorial", "--out", tmp_path / "run")
    assert p.returncode == 0, p.stderr
    r = stn_rs.Rectifier(str(tmp_path / "run"))
    got = np.array(r.theta(column).column("stn_theta").to_pylist(), dtype=np.float32)
    assert np.abs(got - want).max() <= 1e-5
    # The whole network came over, classifier too: `stn eval` runs it on the embedded test
    # digits (PyTorch's own accuracy on rotated ones was 93 %).
    p = stn("eval", "--model", tmp_path / "run", "--json")
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout.strip().splitlines()[-1])["error_rate"] < 0.1
    # Without the tutorial's normalization the net sees other inputs: another theta.
    raw = stn_rs.Rectifier.from_torch(str(TORCH / "tutorial.pt"), normalize=None)
    assert np.abs(np.array(raw.theta(column).column("stn_theta").to_pylist()) - want).max() > 1e-2


def test_wrong_weights_and_arguments_raise_with_the_reason(tmp_path):
    with pytest.raises(FileNotFoundError):
        stn_rs.Rectifier.from_torch(str(tmp_path / "none.pt"))
    with pytest.raises(ValueError, match=r"missing: fc_loc\.2\.bias"):
        stn_rs.Rectifier.from_torch(str(TORCH / "bad_missing.safetensors"))
    with pytest.raises(ValueError, match="architecture"):
        stn_rs.Rectifier.from_torch(str(TORCH / "tutorial.pt"), arch="resnet")
    with pytest.raises(ValueError, match=r"classifier \(arch tutorial-cnn\) \(8 problems\)"):
        stn_rs.Rectifier.from_torch(str(TORCH / "tutorial.pt"), arch="tutorial-cnn")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a pickle")
    with pytest.raises(ValueError, match="cannot read the weights"):
        stn_rs.Rectifier.from_torch(str(junk))
