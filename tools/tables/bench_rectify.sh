#!/usr/bin/env bash
# Table rectification, ours against the Python peer (pyarrow + Pillow + PyTorch), same machine,
# same run, alternating. Needs the peer's venv (tools/peer: `python3 -m venv /tmp/peer/venv &&
# /tmp/peer/venv/bin/pip install torch numpy pyarrow pillow`) and a release build of `stn`.
#
#   bash tools/tables/bench_rectify.sh [WORK_DIR] [ROUNDS]
#
# Writes the tables (make_table.py: 10,000 and 100,000 RTS digits, 300 photos), trains a small
# RTS model (speed does not depend on its weights), then per round and table runs
# `stn rectify --table` and `rectify_table_peer.py` under /usr/bin/time -v and prints one JSON
# line per run: images/s, seconds, peak RSS, output size, and our time split.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
work="${1:-/tmp/stn-table-bench}"
rounds="${2:-3}"
py="${PEER_PYTHON:-/tmp/peer/venv/bin/python}"
stn="${STN_BIN:-$root/target/release/stn}"
[ -x "$stn" ] || stn="${CARGO_TARGET_DIR:-$HOME/.cache/stn-target}/release/stn"
mkdir -p "$work"
cd "$work"
[ -f digits10k.parquet ] || "$py" "$root/tools/peer/make_table.py" --kind digits --rows 10000 --out digits10k.parquet
[ -f digits100k.parquet ] || "$py" "$root/tools/peer/make_table.py" --kind digits --rows 100000 --out digits100k.parquet
[ -f photos300.parquet ] || "$py" "$root/tools/peer/make_table.py" --kind photos --rows 300 --out photos300.parquet
[ -d run ] || "$stn" train --distortion rts --model st-cnn --epochs 1 --train-size 2000 --test-size 200 --out run >/dev/null
measure() { # name cmd...: runs it under time -v, prints "seconds rss_kb"
    local log; log=$(mktemp)
    /usr/bin/time -v "$@" >"$log.out" 2>"$log"
    local s rss
    s=$(grep "Elapsed (wall clock)" "$log" | awk '{print $NF}' | awk -F: '{ if (NF==3) print $1*3600+$2*60+$3; else print $1*60+$2 }')
    rss=$(grep "Maximum resident set size" "$log" | awk '{print $NF}')
    echo "$s $rss"
    cat "$log.out" >&2
    rm -f "$log" "$log.out"
}
for round in $(seq 1 "$rounds"); do
    for t in digits10k photos300 digits100k; do
        rows=$("$py" -c "import pyarrow.parquet as pq; print(pq.ParquetFile('$t.parquet').metadata.num_rows)")
        rm -f "ours-$t.parquet" "peer-$t.parquet"
        read -r s rss < <(measure "$stn" rectify --model run --table "$t.parquet" --out "ours-$t.parquet" --json)
        size=$(stat -c %s "ours-$t.parquet")
        echo "{\"round\": $round, \"who\": \"stn\", \"table\": \"$t\", \"rows\": $rows, \"seconds\": $s, \"images_per_s\": $(echo "$rows / $s" | bc -l | cut -c1-8), \"peak_rss_mb\": $((rss / 1024)), \"output_bytes\": $size}"
        if [ "$t" != digits100k ]; then
            read -r s rss < <(measure "$py" "$root/tools/peer/rectify_table_peer.py" --table "$t.parquet" --out "peer-$t.parquet")
            size=$(stat -c %s "peer-$t.parquet")
            echo "{\"round\": $round, \"who\": \"peer\", \"table\": \"$t\", \"rows\": $rows, \"seconds\": $s, \"images_per_s\": $(echo "$rows / $s" | bc -l | cut -c1-8), \"peak_rss_mb\": $((rss / 1024)), \"output_bytes\": $size}"
        fi
    done
done
