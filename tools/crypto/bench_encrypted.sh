#!/usr/bin/env bash
# Rectifying an encrypted table against the same table in plaintext: the same digits written by
# pyarrow with every column encrypted (AES-GCM, 256-bit data key, encrypted footer), rectified
# into an encrypted output, against the plaintext table rectified into a plaintext output.
# Alternates the two, RUNS times each, and prints the median wall times and their ratio.
#   tools/crypto/bench_encrypted.sh RUN_DIR [ROWS=5000] [RUNS=7]
# Needs a Python with pyarrow and cryptography (STN_PYTHON, default python3) and a release build
# of stn (STN, default target/release/stn).
set -euo pipefail
run=$1; rows=${2:-5000}; runs=${3:-7}
py=${STN_PYTHON:-python3}
stn=${STN:-${CARGO_TARGET_DIR:-target}/release/stn}
here=$(cd "$(dirname "$0")" && pwd)
dir=$(mktemp -d); trap 'rm -rf "$dir"' EXIT
"$stn" export-digits --rows "$rows" --out "$dir/plain.parquet" >/dev/null
"$py" -c 'import base64, json, os; print(json.dumps({k: base64.b64encode(os.urandom(32)).decode() for k in ["f", "i", "o"]}))' >"$dir/keys.json"
"$py" "$here/encrypted_tables.py" write "$dir/plain.parquet" "$dir/enc" "$dir/keys.json" >/dev/null
enc="$dir/enc/aesgcm_uniform_256.parquet"
time_one() { # prints seconds
    rm -f "$dir/out.parquet"
    local t0 t1; t0=$(date +%s%N); "$@" >/dev/null 2>&1; t1=$(date +%s%N)
    echo "$(( (t1 - t0) / 1000 ))e-6"
}
a=(); b=()
for _ in $(seq "$runs"); do
    a+=("$(time_one "$stn" rectify --model "$run" --table "$enc" --keys "$dir/keys.json" --out "$dir/out.parquet")")
    b+=("$(time_one "$stn" rectify --model "$run" --table "$dir/plain.parquet" --out "$dir/out.parquet")")
done
"$py" - "${a[*]}" "${b[*]}" "$rows" <<'PY'
import statistics, sys
a = [float(x) for x in sys.argv[1].split()]; b = [float(x) for x in sys.argv[2].split()]
ratios = [x / y for x, y in zip(a, b)]
print(f"{sys.argv[3]} rows, {len(a)} runs each: encrypted {statistics.median(a):.3f} s, "
      f"plaintext {statistics.median(b):.3f} s, ratio encrypted/plaintext median "
      f"{statistics.median(ratios):.3f} (min {min(ratios):.3f}, max {max(ratios):.3f})")
PY
