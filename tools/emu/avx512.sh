#!/usr/bin/env bash
# The kernels' bitwise comparison on an emulated AVX-512 CPU, on any x86-64 Linux machine.
#
# The AVX-512 paths of stn-kernels run where asked for (STN_KERNELS_AVX512=1) on CPUs that have
# AVX-512; a machine without it never runs them. This script boots Linux in Bochs (Debian's build emulates AVX-512F,
# CD, BW, DQ and VL; CPU model Skylake-X) with the kernels' test program as its only user program,
# runs the determinism digests there (the AVX-512 paths, STN_KERNELS_AVX512=1, which no CPU gets
# by default, and with them the staged path for every channel count, STN_KERNELS_NO_FUSED=1 with
# STN_KERNELS_NO_CHANNELS_LAST=1),
# and compares them line by line with the
# generic engine's digests computed on this machine (STN_KERNELS_GENERIC=1, the reference of
# every build). Any difference, or a guest without AVX-512, fails.
#
# Everything comes from Debian (Bochs, its BIOS, ISOLINUX, xorriso, busybox, cpio and the cloud
# kernel's package) and cargo. Bochs runs some 40 million guest instructions a second: about 3
# minutes, boot included, after the static build; it measures nothing about speed.
#
# Usage: tools/emu/avx512.sh [WORK_DIR]   (CARGO_TARGET_DIR as for the tests)
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
work="${1:-$(mktemp -d)}"
mkdir -p "$work"
work="$(cd "$work" && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/stn-target}"

# 1. The emulator and the boot tools.
need=(bochs bochsbios vgabios isolinux syslinux-common xorriso busybox-static cpio)
missing=()
for p in "${need[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
sudo=""
if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
if [ "${#missing[@]}" -gt 0 ]; then
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# 2. A Linux kernel: Debian's cloud build (small, serial console built in).
if [ ! -f "$work/vmlinuz" ]; then
    pkg="$(apt-cache depends linux-image-cloud-amd64 | awk '/Depends: linux-image-/ { print $2; exit }')"
    if [ -z "$pkg" ]; then
        $sudo apt-get update -qq
        pkg="$(apt-cache depends linux-image-cloud-amd64 | awk '/Depends: linux-image-/ { print $2; exit }')"
    fi
    (cd "$work" && apt-get download -q "$pkg" >/dev/null 2>&1)
    deb="$(ls "$work"/linux-image-*.deb | head -1)"
    mkdir -p "$work/kernel"
    dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$work/kernel" --wildcards './boot/vmlinuz-*'
    cp "$work"/kernel/boot/vmlinuz-* "$work/vmlinuz"
    rm -rf "$work/kernel" "$deb"
fi

# 3. The kernels' test program, linked statically (the guest has no C library), with
# `--cfg stn_emu`: the AVX-512 gathers keep their index in zmm0-15 (Bochs 2.7 raises #UD for a
# VSIB index in zmm16-31, which the architecture allows; src/simd.rs, gather16_ps). Nothing
# else differs from the product's build.
bin="$(cd "$root" && RUSTC_WORKSPACE_WRAPPER= RUSTFLAGS="-C target-feature=+crt-static --cfg stn_emu" \
    cargo test --release -p stn-kernels --test kernels --target x86_64-unknown-linux-gnu --no-run \
    --message-format=json \
    | python3 -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "kernels":
        print(m["executable"])')"
if [ -z "$bin" ] || [ ! -x "$bin" ]; then
    echo "avx512.sh: building the static test program failed" >&2
    exit 1
fi
test_name="determinism::builds_agree_bitwise"

# 4. The reference: the generic engine on this machine.
STN_DETERMINISM_CHILD=1 STN_KERNELS_GENERIC=1 "$bin" "$test_name" --exact --nocapture --test-threads=1 \
    | sed -n 's/^.*DIGEST //p' > "$work/reference.txt"
if [ "$(wc -l < "$work/reference.txt")" -lt 100 ]; then
    echo "avx512.sh: the reference run printed too few digests" >&2
    exit 1
fi

# 5. The guest: busybox, the test program and a script run as init, on an ISOLINUX CD.
rm -rf "$work/rootfs" "$work/iso"
mkdir -p "$work"/rootfs/{bin,proc,dev,sys,tmp,t} "$work/iso/isolinux"
cp /bin/busybox "$work/rootfs/bin/"
cp "$bin" "$work/rootfs/t/kernels"
cp "$work/reference.txt" "$work/rootfs/t/reference.txt"
cat > "$work/rootfs/init" <<EOF
#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t devtmpfs dev /dev
echo "STN-EMU-FLAGS \$(grep -o 'avx512[a-z]*' /proc/cpuinfo | sort -u | tr '\n' ' ')"
cd /t
for v in AVX512 STAGED; do
    # The staged run turns off both the register-held and the channels-last path.
    case \$v in STAGED) also="STN_KERNELS_NO_FUSED=1 STN_KERNELS_NO_CHANNELS_LAST=1" ;; *) also=STN_EMU_RUN=1 ;; esac
    env STN_KERNELS_AVX512=1 \$also STN_DETERMINISM_CHILD=1 ./kernels $test_name --exact --nocapture --test-threads=1 > /tmp/out 2>&1
    rc=\$?
    sed -n 's/^.*DIGEST //p' /tmp/out > /tmp/\$v.txt
    echo "STN-EMU-RC \$v \$rc \$(wc -l < /tmp/\$v.txt)"
    [ \$rc = 0 ] || tail -20 /tmp/out
    # The serial console is slow: only the results that differ are printed.
    if cmp -s /t/reference.txt /tmp/\$v.txt; then
        echo "STN-EMU-SAME \$v"
    else
        echo "STN-EMU-DIFF \$v"
        grep -vxFf /t/reference.txt /tmp/\$v.txt | head -20
    fi
done
echo STN-EMU-END
# Let the console drain before the power goes.
sleep 2
poweroff -f
EOF
chmod +x "$work/rootfs/init"
(cd "$work/rootfs" && find . | cpio -o -H newc 2>/dev/null | gzip -1 > "$work/iso/initrd.gz")
cp "$work/vmlinuz" "$work/iso/vmlinuz"
cp /usr/lib/ISOLINUX/isolinux.bin /usr/lib/syslinux/modules/bios/ldlinux.c32 "$work/iso/isolinux/"
# XSAVES off: Bochs 2.7 reports the standard XSAVE size for the compacted format, and Linux then
# turns XSAVE (and with it AVX and AVX-512) off.
cat > "$work/iso/isolinux/isolinux.cfg" <<'EOF'
DEFAULT linux
PROMPT 0
TIMEOUT 0
LABEL linux
  KERNEL /vmlinuz
  APPEND initrd=/initrd.gz console=ttyS0,115200 loglevel=1 nosmp clearcpuid=xsaves,xsavec
EOF
xorriso -as mkisofs -quiet -o "$work/stn.iso" -b isolinux/isolinux.bin -c isolinux/boot.cat \
    -no-emul-boot -boot-load-size 4 -boot-info-table "$work/iso" 2>/dev/null
# No sound: where ALSA's library is installed (Chromium pulls it in) but no sound card exists,
# Bochs 2.7's speaker aborts at start ("buffer overflow detected"), seen on a fresh CI machine.
cat > "$work/bochsrc" <<EOF
megs: 1024
cpu: model=corei7_skylake_x, count=1, ips=400000000, reset_on_triple_fault=1
romimage: file=/usr/share/bochs/BIOS-bochs-latest
vgaromimage: file=/usr/share/bochs/VGABIOS-lgpl-latest
ata0-master: type=cdrom, path=$work/stn.iso, status=inserted
boot: cdrom
com1: enabled=1, mode=file, dev=$work/serial.log
clock: sync=none, time0=local
log: $work/bochs.log
panic: action=fatal
error: action=ignore
info: action=ignore
display_library: rfb, options="timeout=0"
speaker: enabled=0
sound: driver=dummy
EOF
# Debian's Bochs has its debugger built in: 'c' starts the machine.
printf 'c\nquit\n' > "$work/debugger.rc"
rm -f "$work/serial.log"
start=$(date +%s)
timeout 1800 bochs -q -f "$work/bochsrc" -rc "$work/debugger.rc" < /dev/null > "$work/bochs.out" 2>&1 || true
echo "avx512.sh: the emulated run took $(( $(date +%s) - start )) s"

# 6. The comparison.
# The console ends its lines with CR LF.
serial="$work/serial.txt"
tr -d '\r' < "$work/serial.log" > "$serial" 2>/dev/null || true
if ! grep -q '^STN-EMU-END' "$serial" 2>/dev/null; then
    echo "avx512.sh: the guest did not finish; the end of its console and of Bochs' output:" >&2
    tail -20 "$serial" >&2 2>/dev/null || true
    tail -20 "$work/bochs.out" >&2
    exit 1
fi
flags="$(sed -n 's/^STN-EMU-FLAGS //p' "$serial")"
echo "avx512.sh: guest CPU flags: $flags"
case " $flags " in *" avx512f "*) ;; *) echo "avx512.sh: the guest has no AVX-512F" >&2; exit 1 ;; esac
status=0
for v in AVX512 STAGED; do
    line="$(grep "^STN-EMU-RC $v " "$serial" || true)"
    count="${line##* }"
    if [ -z "$line" ] || [ "$(echo "$line" | cut -d' ' -f3)" != 0 ]; then
        echo "avx512.sh: the $v run failed in the guest:" >&2
        grep -A20 "^STN-EMU-RC $v" "$serial" >&2 || true
        status=1
    elif grep -q "^STN-EMU-SAME $v\$" "$serial"; then
        echo "avx512.sh: $v on AVX-512: $count results, bitwise those of the generic engine on this machine"
    else
        echo "avx512.sh: $v on AVX-512 differs from the generic engine ($count results against $(wc -l < "$work/reference.txt")); the guest's differing lines:" >&2
        sed -n "/^STN-EMU-DIFF $v\$/,/^STN-EMU-/p" "$serial" >&2
        status=1
    fi
done
exit $status
