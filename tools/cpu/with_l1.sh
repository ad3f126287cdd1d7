#!/bin/bash
# with_l1.sh SIZE WAYS COMMAND [ARGS...]
#
# Runs COMMAND where /sys shows every CPU an unshared L1 data cache of SIZE (e.g. 48K) and WAYS
# ways, as another CPU would (gemm sizes its blocks from these files): bind mounts in a private
# mount namespace, so nothing changes outside COMMAND. Needs root and unshare(1). Exits 97 when
# the namespace or the mounts are refused.
set -u
size=$1 ways=$2
shift 2
dir=$(mktemp -d)
echo "$size" >"$dir/size"
echo "$ways" >"$dir/ways"
echo 0 >"$dir/shared"
unshare -m --propagation private true 2>/dev/null || exit 97
exec unshare -m --propagation private bash -c '
d=$1; shift
for c in /sys/devices/system/cpu/cpu*/cache/index0; do
  mount --bind "$d/size" "$c/size" && mount --bind "$d/ways" "$c/ways_of_associativity" &&
    mount --bind "$d/shared" "$c/shared_cpu_list" || exit 97
done
exec "$@"' _ "$dir" "$@"
