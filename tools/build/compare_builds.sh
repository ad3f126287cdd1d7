#!/usr/bin/env bash
# Two builds of `stn` side by side in one run (before and after a change of the build profile,
# say), alternating, with the Python peers in the same run: the kernel table and the tutorial
# ST-CNN's training and inference throughput (`stn bench`, against tools/peer/bench_grid_sample.py
# and bench_cnn.py), augmentation (`stn bench --augment`, against bench_augment.py with kornia)
# and table rectification (tools/tables/bench_rectify.sh, against rectify_table_peer.py).
# Needs the peer's venv (tools/peer, as bench_rectify.sh says). JSON per run under OUT_DIR;
# tools/build/compare_table.py OUT_DIR prints the ratios.
#
#   bash tools/build/compare_builds.sh OLD_STN NEW_STN [OUT_DIR] [ROUNDS]
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
old="$1"
new="$2"
out="${3:-/tmp/stn-compare}"
rounds="${4:-2}"
py="${PEER_PYTHON:-/tmp/peer/venv/bin/python}"
mkdir -p "$out"
# The peers once (kept when already there: rerun with an empty OUT_DIR to measure them again).
[ -s "$out/peer-kernels.json" ] || "$py" "$root/tools/peer/bench_grid_sample.py" --json "$out/peer-kernels.json" > "$out/peer-kernels.txt"
[ -s "$out/peer-cnn.json" ] || "$py" "$root/tools/peer/bench_cnn.py" --json > "$out/peer-cnn.json"
[ -s "$out/peer-augment.json" ] || "$py" "$root/tools/peer/bench_augment.py" --json > "$out/peer-augment.json"
for round in $(seq 1 "$rounds"); do
    for who in old new; do
        bin="$old"
        [ "$who" = new ] && bin="$new"
        "$bin" bench --json > "$out/bench-$who-$round.json"
        "$bin" bench --augment --json > "$out/augment-$who-$round.json"
        STN_BIN="$bin" bash "$root/tools/tables/bench_rectify.sh" "$out/tables" 1 > "$out/tables-$who-$round.jsonl"
    done
done
echo "results in $out"
