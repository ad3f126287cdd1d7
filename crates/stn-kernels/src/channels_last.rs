//! Channels-last forward sampling for many channels (f32, C >= [`MIN_CHANNELS`], x86-64 AVX2).
//!
//! The staged fast path ([`crate::fast2d`]) reads every tap of every channel with a gather
//! (one lane per output position, one plane at a time): one gathered value per tap and output
//! value, and with bicubic's 16 taps that is most of its time. With many channels the values
//! a position needs are contiguous once the input is channels-last. So here a block of
//! channels ([`block`]: 16, or 64 for bicubic) of one sample is first transposed into a scratch
//! buffer (pixel-major, the block's channels of a pixel side by side, padded with zeros to the
//! block, and one row of zeros after the last pixel that the taps outside the input read), and
//! each tap then reads 8 channels with one plain vector load; the values of 8 positions are
//! transposed back in registers and stored to the channel planes of the output. No gathers.
//!
//! The taps are those of `fast2d::build`, and each value is computed with the operations of
//! `fast2d::gather` (the portable path) in the same order: the first tap's product, then each
//! next product added, a tap outside the input reading 0 (nearest: the value itself). So the
//! results are bitwise identical to it and to the generic engine (tested in
//! `determinism.rs`); the transposes only move bits.
//!
//! Memory: one block's scratch per thread (`(H * W + 1) * block` floats, at most
//! [`PRIVATE_FLOATS`]); for larger blocks, or when samples x blocks are too few to keep the
//! threads busy, the blocks of a group share one scratch of up to [`SHARED_FLOATS`] floats (at
//! least one block, whatever its size), written by all threads before they sample it in bands
//! of positions. If the scratch cannot be allocated, the staged path runs instead (same bits).

#![cfg(target_arch = "x86_64")]

use std::arch::x86_64::*;

use crate::engine::CHUNK;

/// The fewest channels the channels-last path takes (fewer go to the register-held or the
/// staged path).
pub(crate) const MIN_CHANNELS: usize = 8;

/// Whether the path pays off for `c` channels, `k` taps per position and planes of `in_plane`
/// pixels. It moves the input twice more (transposed, then read); nearest reads one value per
/// output and is bound by memory traffic alone once a block's scratch leaves the caches, where
/// the staged path moves less (measured on a Zen 2: 1x16x1024x1024 nearest 0.89x slower here,
/// 1x32x512x512 1.3x faster; bilinear and bicubic faster at every size measured).
pub(crate) fn worth_it(c: usize, k: usize, in_plane: usize) -> bool {
    k > 1 || in_plane.saturating_mul(block(c, k)) <= 8 << 20
}

/// The most floats of a task's own scratch (8 MiB); larger blocks are transposed into a shared one.
pub(crate) const PRIVATE_FLOATS: usize = 2 << 20;

/// The most floats of the shared scratch of large images (64 MiB), unless one block needs more.
pub(crate) const SHARED_FLOATS: usize = 16 << 20;

/// Channels transposed and sampled together (8, 16, 32 or 64): 16 for nearest and bilinear,
/// where a pixel's row in the scratch is then one cache line and a block's scratch stays in
/// cache longer; 64 for bicubic, whose taps cost more to compute than to read and are computed
/// once per block. Never more than `c` rounded up to a power of two.
pub(crate) fn block(c: usize, taps: usize) -> usize {
    let most = if taps >= 16 { 64 } else { 16 };
    c.next_power_of_two().clamp(8, most)
}

/// Whether the channels-last path is on (`STN_KERNELS_NO_CHANNELS_LAST=1` turns it off, to
/// compare with the staged path).
pub(crate) fn enabled() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var_os("STN_KERNELS_NO_CHANNELS_LAST").is_none())
}

/// Transposes 8 vectors of 8 as an 8 x 8 matrix (row i of the result holds element i of
/// every input vector, in order). Moves bits only.
#[inline(always)]
unsafe fn transpose8(r: &mut [__m256; 8]) {
    let t0 = _mm256_unpacklo_ps(r[0], r[1]);
    let t1 = _mm256_unpackhi_ps(r[0], r[1]);
    let t2 = _mm256_unpacklo_ps(r[2], r[3]);
    let t3 = _mm256_unpackhi_ps(r[2], r[3]);
    let t4 = _mm256_unpacklo_ps(r[4], r[5]);
    let t5 = _mm256_unpackhi_ps(r[4], r[5]);
    let t6 = _mm256_unpacklo_ps(r[6], r[7]);
    let t7 = _mm256_unpackhi_ps(r[6], r[7]);
    let s0 = _mm256_shuffle_ps::<0x44>(t0, t2);
    let s1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
    let s2 = _mm256_shuffle_ps::<0x44>(t1, t3);
    let s3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
    let s4 = _mm256_shuffle_ps::<0x44>(t4, t6);
    let s5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
    let s6 = _mm256_shuffle_ps::<0x44>(t5, t7);
    let s7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
    r[0] = _mm256_permute2f128_ps::<0x20>(s0, s4);
    r[1] = _mm256_permute2f128_ps::<0x20>(s1, s5);
    r[2] = _mm256_permute2f128_ps::<0x20>(s2, s6);
    r[3] = _mm256_permute2f128_ps::<0x20>(s3, s7);
    r[4] = _mm256_permute2f128_ps::<0x31>(s0, s4);
    r[5] = _mm256_permute2f128_ps::<0x31>(s1, s5);
    r[6] = _mm256_permute2f128_ps::<0x31>(s2, s6);
    r[7] = _mm256_permute2f128_ps::<0x31>(s3, s7);
}

/// Lanes 0..n of 8 set (for a masked store of the first `n` <= 8 elements).
#[inline(always)]
unsafe fn first_lanes(n: usize) -> __m256i {
    _mm256_cmpgt_epi32(_mm256_set1_epi32(n as i32), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7))
}

/// Writes pixels `p_begin..p_end` of one sample into its scratch: `scratch[p * cp + ch] =
/// input[ch * in_plane + p]` for `ch < c`, 0 for `c <= ch < cp`.
///
/// # Safety
/// AVX2 is available; `input` holds `c` planes of `in_plane` floats; `scratch` has room for
/// `p_end * cp` floats; `cp` is a multiple of 8 and at least `c`; `p_end <= in_plane`.
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn transpose_in(
    input: *const f32,
    in_plane: usize,
    c: usize,
    cp: usize,
    scratch: *mut f32,
    p_begin: usize,
    p_end: usize,
) {
    // Eight channels at a time along the whole range: eight input streams that the hardware
    // prefetches (all the channels at once would be too many streams).
    let whole = p_begin + (p_end - p_begin) / 8 * 8;
    for cg in (0..cp).step_by(8) {
        let mut p = p_begin;
        while p < whole {
            let mut r = [_mm256_setzero_ps(); 8];
            for (i, ri) in r.iter_mut().enumerate() {
                if cg + i < c {
                    *ri = _mm256_loadu_ps(input.add((cg + i) * in_plane + p));
                }
            }
            transpose8(&mut r);
            for (j, rj) in r.iter().enumerate() {
                _mm256_storeu_ps(scratch.add((p + j) * cp + cg), *rj);
            }
            p += 8;
        }
    }
    for p in whole..p_end {
        for ch in 0..cp {
            let v = if ch < c { *input.add(ch * in_plane + p) } else { 0.0 };
            *scratch.add(p * cp + ch) = v;
        }
    }
}

/// Where one chunk's results go and what they read.
pub(crate) struct Target {
    /// The block's scratch (see [`transpose_in`]; rows of `8 * G` floats for [`sample`]) with its
    /// row of zeros at `zero_row`.
    pub scratch: *const f32,
    /// The row of zeros (the sample's pixel count).
    pub zero_row: usize,
    /// Channels of the block to write (at most `8 * G`; the rest of a row is padding).
    pub c: usize,
    /// The output of channel 0 at the chunk's first position; channel `ch` is `out_plane` further per channel.
    pub out: *mut f32,
    /// Output positions per channel.
    pub out_plane: usize,
    /// Room for 8 rows of `8 * G` floats (one per position of a group).
    pub tile: *mut f32,
}

/// Samples positions 0..len of a chunk from its taps (`K` per position, in `fast2d::build`'s
/// order: offset, weight, inside flag) for every channel of a block of `8 * G`.
///
/// # Safety
/// AVX2 is available; the scratch's rows are `8 * G` floats; every offset indexes the sample's plane (`< zero_row`);
/// the pointers of `t` are valid as documented there and the output positions 0..len of its
/// channels are this call's alone; `len <= CHUNK`.
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn sample<const K: usize, const G: usize>(
    o: &[[i32; CHUNK]; K],
    w: &[[f32; CHUNK]; K],
    m: &[[f32; CHUNK]; K],
    len: usize,
    t: &Target,
) {
    let (scr, cp, tile) = (t.scratch, 8 * G, t.tile);
    let mut j0 = 0;
    while j0 < len {
        let n = 8.min(len - j0);
        // Each position's values, channels side by side: one row of the tile per position. The
        // G vectors of a position are G independent sums, each in the portable path's order.
        for j in 0..n {
            let p = j0 + j;
            let row = |k: usize| scr.add(if m[k][p] != 0.0 { o[k][p] as usize } else { t.zero_row } * cp);
            let r0 = row(0);
            let mut acc = [_mm256_setzero_ps(); G];
            if K == 1 {
                for (g, a) in acc.iter_mut().enumerate() {
                    *a = _mm256_loadu_ps(r0.add(8 * g));
                }
            } else {
                let w0 = _mm256_set1_ps(w[0][p]);
                for (g, a) in acc.iter_mut().enumerate() {
                    *a = _mm256_mul_ps(w0, _mm256_loadu_ps(r0.add(8 * g)));
                }
                for k in 1..K {
                    let (rk, wk) = (row(k), _mm256_set1_ps(w[k][p]));
                    for (g, a) in acc.iter_mut().enumerate() {
                        *a = _mm256_add_ps(*a, _mm256_mul_ps(wk, _mm256_loadu_ps(rk.add(8 * g))));
                    }
                }
            }
            for (g, a) in acc.iter().enumerate() {
                _mm256_storeu_ps(tile.add(j * cp + 8 * g), *a);
            }
        }
        // Transposed back: 8 positions of 8 channels per step, each channel's run stored to its plane.
        let lanes = first_lanes(n);
        for cg in (0..cp).step_by(8) {
            let mut r = [_mm256_setzero_ps(); 8];
            for (j, rj) in r.iter_mut().enumerate() {
                *rj = _mm256_loadu_ps(tile.add(j * cp + cg));
            }
            transpose8(&mut r);
            for (i, ri) in r.iter().enumerate().take(t.c.saturating_sub(cg).min(8)) {
                let dst = t.out.add((cg + i) * t.out_plane + j0);
                if n == 8 {
                    _mm256_storeu_ps(dst, *ri);
                } else {
                    _mm256_maskstore_ps(dst, lanes, *ri);
                }
            }
        }
        j0 += 8;
    }
}
