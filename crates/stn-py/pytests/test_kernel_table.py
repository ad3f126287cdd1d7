"""tools/kernel_table.py, which makes docs/performance.md's kernel tables from rounds of runs:
the lowest median over the rounds on each side, the ratios against the targets with misses
marked, and the share of the copy bandwidth taken from the run that gave our figure."""

import json
import subprocess
import sys

from conftest import REPO

FIGS = ["fwd", "fb", "gs_fwd", "gs_fb"]


def peer_row(ms):
    return {"case": "a", "mode": "nearest", "padding": "zeros", **{f"{f}_ms": v for f, v in zip(FIGS, ms)}}


def our_row(ms, copy_ms, mb=2.0):
    row = peer_row(ms)
    for f, c in zip(FIGS, copy_ms):
        row[f"{f}_bytes"] = int(mb * 1e6)
        row[f"{f}_copy_ms"] = c
    return row


def write(path, rows):
    path.write_text(json.dumps({"rows": rows}))


def table(tmp_path):
    out = subprocess.run(
        [sys.executable, REPO / "tools" / "kernel_table.py",
         "--peer", str(tmp_path / "p_*.json"), "--ours", str(tmp_path / "n_*.json")],
        capture_output=True, text=True, check=True).stdout
    return [line for line in out.splitlines() if line.startswith("| a ")], out


def test_lowest_of_the_rounds_each_side_and_misses_marked(tmp_path):
    # Round 1: PyTorch slow; round 2: ours slow. The lowest of each side come from different rounds.
    write(tmp_path / "p_1_a.json", [peer_row([4.0, 4.0, 1.0, 2.0])])
    write(tmp_path / "p_2_a.json", [peer_row([2.0, 3.0, 2.0, 1.0])])
    write(tmp_path / "n_1_a.json", [our_row([0.5, 1.6, 1.1, 0.8], [0.1, 0.1, 0.1, 0.1])])
    write(tmp_path / "n_2_a.json", [our_row([0.9, 2.0, 1.5, 0.9], [0.2, 0.2, 0.2, 0.2])])
    (ratios, bytes_), out = table(tmp_path)
    cells = [c.strip() for c in ratios.strip("|").split("|")]
    # fwd 0.5/2.0, fb 1.6/3.0 (over 0.5), gs fwd 1.1/1.0 (over 1.0), gs fb 0.8/1.0
    assert cells[3:7] == ["0.5 / 2", "1.6 / 3", "1.1 / 1", "0.8 / 1"]
    assert cells[7:] == ["0.25", "0.53 ✗", "1.10 ✗", "0.80"]
    assert "2 of 4 ratios meet their targets" in out
    # 2 MB in 0.5 ms = 4.0 GB/s against that run's copy (2 MB in 0.1 ms = 20 GB/s): 20%.
    assert bytes_.split("|")[4].strip() == "2.0, 4.0, 20%"
    assert bytes_.strip().endswith("| 20, 20, 20, 20 |")


def test_the_copy_comes_from_the_run_of_our_lowest_figure(tmp_path):
    write(tmp_path / "p_1_a.json", [peer_row([1.0] * 4)])
    # Our best fwd is in round 2, whose copy was slow; round 1 had the fastest copy.
    write(tmp_path / "n_1_a.json", [our_row([0.8] * 4, [0.1] * 4)])
    write(tmp_path / "n_2_a.json", [our_row([0.4, 0.9, 0.9, 0.9], [0.4, 0.1, 0.1, 0.1])])
    (_, bytes_), _ = table(tmp_path)
    # 2 MB in 0.4 ms = 5 GB/s; copy of that run 2 MB in 0.4 ms = 5 GB/s: 100%, not 25%.
    assert bytes_.split("|")[4].strip() == "2.0, 5.0, 100%"
