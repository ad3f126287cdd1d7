"""Shared fixtures of the stn_rs tests: the `stn` program (it trains the small model the tests
use and gives the command line's outputs to compare with), the repository's fixture tables."""

import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
TABLES = REPO / "crates" / "stn-table" / "tests" / "fixtures"


def stn_program():
    explicit = os.environ.get("STN_BIN")
    if explicit:
        return explicit
    target = os.environ.get("CARGO_TARGET_DIR", os.path.expanduser("~/.cache/stn-target"))
    for candidate in (Path(target) / "release" / "stn", REPO / "target" / "release" / "stn"):
        if candidate.is_file():
            return str(candidate)
    pytest.skip("no stn program: build it (cargo build --release --bin stn) or set STN_BIN")


def stn(*args, cwd=None):
    """Runs `stn ARGS`, returning its stdout; a failure fails the test with stderr."""
    p = subprocess.run([stn_program(), *map(str, args)], capture_output=True, text=True, cwd=cwd)
    assert p.returncode in (0, 1), f"stn {' '.join(map(str, args))}: {p.stderr}"
    return p


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory):
    """An ST-CNN briefly trained on RTS digits (theta is not the identity)."""
    d = tmp_path_factory.mktemp("model") / "run"
    p = stn("train", "--model", "st-cnn", "--epochs", "1", "--train-size", "256", "--test-size", "64", "--out", d)
    assert p.returncode == 0, p.stderr
    return d


@pytest.fixture(scope="session")
def digits(tmp_path_factory):
    """2,000 RTS digits as a Hugging Face style table (PNG bytes)."""
    out = tmp_path_factory.mktemp("digits") / "digits.parquet"
    p = stn("export-digits", "--distortion", "rts", "--seed", "7", "--rows", "2000", "--out", out)
    assert p.returncode == 0, p.stderr
    return out
