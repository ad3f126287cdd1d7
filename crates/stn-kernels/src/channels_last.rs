//! Channels-last sampling and its backward for many channels (f32, C >= [`MIN_CHANNELS`], x86-64 AVX2).
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
//!
//! The backward ([`backward`]) keeps the layout: the input gradient of a block accumulates in a
//! zeroed scratch of the same shape (one vector read-modify-write per tap and 8 channels, in the
//! staged scatter's order) that is transposed back to the planes ([`transpose_out`]); the
//! coordinate gradients' per-channel sums come from the transposed input, 8 channels at a time,
//! and are transposed back to positions before they are added channel by channel in order.
//! Scratches that a call's tasks share come from one buffer kept between calls ([`take_shared`],
//! [`Slots`]).

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

/// Channels per block of the backward (8, 16 or 32): 16 for nearest and bilinear, 32 for
/// bicubic (measured on a Zen 2 on 16x64x56x56, bilinear `fb` 6.5 ms at 16 and 32 against 7.3
/// at 8; bicubic 11.0 at 32 against 13.4 at 16 and 11.3 at 64, whose two scratches, input and
/// its gradient, leave the L2 cache). Never more than `c` rounded up to a power of two.
pub(crate) fn backward_block(c: usize, taps: usize) -> usize {
    let most = if taps >= 16 { 32 } else { 16 };
    c.next_power_of_two().clamp(8, most)
}

/// Whether the channels-last path is on (`STN_KERNELS_NO_CHANNELS_LAST=1` turns it off, to
/// compare with the staged path).
pub(crate) fn enabled() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var_os("STN_KERNELS_NO_CHANNELS_LAST").is_none())
}

/// Floats a scratch buffer is allocated with beyond its size, so that [`aligned`] can start it
/// on a cache line.
pub(crate) const SLACK: usize = 16;

/// The first 64-byte aligned float of `v`'s capacity (allocated with [`SLACK`] floats more than
/// needed): a pixel's row of 16 channels is then one cache line, not two.
pub(crate) fn aligned(v: &mut Vec<f32>) -> *mut f32 {
    let p = v.spare_capacity_mut().as_mut_ptr() as *mut f32;
    // Rounds up within the slack (a float pointer is 4-byte aligned: at most 15 floats on).
    p.wrapping_add(p.align_offset(64))
}

/// The shared scratch kept between calls (see [`take_shared`]).
static SHARED: std::sync::Mutex<Vec<f32>> = std::sync::Mutex::new(Vec::new());

/// A buffer with room for `floats` floats (and [`SLACK`]) for a shared scratch: the one kept
/// from an earlier call if it is large enough, else a new one (`None` if it cannot be
/// allocated). Kept because a call from a thread other than the main one (a rayon or tokio
/// worker) gets its memory from that thread's malloc arena, whose heaps are at most 64 MiB: a
/// scratch of tens of MiB then often takes a fresh heap and returns it on free, paying its
/// page faults on every call (measured on 2x64x224x224 bilinear: forward 9.5 ms against 3.3).
/// Give it back with [`give_back_shared`]; at most one buffer (the largest given back, of at
/// most [`SHARED_FLOATS`] floats) stays allocated between calls.
pub(crate) fn take_shared(floats: usize) -> Option<Vec<f32>> {
    let kept = std::mem::take(&mut *SHARED.lock().unwrap_or_else(|e| e.into_inner()));
    if kept.capacity() >= floats + SLACK {
        return Some(kept);
    }
    drop(kept);
    let mut v = Vec::new();
    v.try_reserve_exact(floats + SLACK).ok()?;
    Some(v)
}

/// Keeps `v` for the next [`take_shared`] unless a larger buffer is kept already or `v` is
/// larger than [`SHARED_FLOATS`] (a single block of a very large image: freed now).
pub(crate) fn give_back_shared(v: Vec<f32>) {
    if v.capacity() > SHARED_FLOATS + SLACK {
        return;
    }
    let mut kept = SHARED.lock().unwrap_or_else(|e| e.into_inner());
    if v.capacity() > kept.capacity() {
        *kept = v;
    }
}

/// The private scratches of one call's tasks, carved from one buffer kept between calls
/// ([`take_shared`]) when they fit in [`SHARED_FLOATS`]: allocating them task by task from the
/// workers' malloc arenas changes what those arenas can reuse and can cost the call's large
/// outputs fresh pages (measured: the 2x64x224x224 bilinear forward after such a backward 9.5
/// ms against 3.3). A task takes a free slot; when none is free (or nothing is kept) it
/// allocates its own buffer.
pub(crate) struct Slots {
    buf: Vec<f32>,
    base: *mut f32,
    /// Floats per slot (a multiple of 16: each slot starts on a cache line).
    each: usize,
    free: std::sync::Mutex<Vec<usize>>,
}

// SAFETY: each slot is handed to one task at a time (the free list is behind a mutex).
unsafe impl Sync for Slots {}
// SAFETY: as above; the buffer is owned.
unsafe impl Send for Slots {}

impl Slots {
    /// Room for `count` slots of `floats` floats each.
    pub(crate) fn new(count: usize, floats: usize) -> Slots {
        let each = floats.div_ceil(16) * 16;
        let total = count.checked_mul(each).filter(|&t| t > 0 && t <= SHARED_FLOATS);
        let mut buf = total.and_then(take_shared).unwrap_or_default();
        let (base, free) = if buf.capacity() == 0 {
            (std::ptr::null_mut(), Vec::new())
        } else {
            (aligned(&mut buf), (0..count).rev().collect())
        };
        Slots { buf, base, each, free: std::sync::Mutex::new(free) }
    }

    /// A free slot, or a buffer of the slot's size of the task's own.
    pub(crate) fn take(&self) -> Slot<'_> {
        let idx = self.free.lock().unwrap_or_else(|e| e.into_inner()).pop();
        match idx {
            // SAFETY: slot i lies inside the buffer's capacity (`count * each` floats after the
            // aligned start, within the slack).
            Some(i) => Slot {
                ptr: unsafe { self.base.add(i * self.each) },
                idx: Some(i),
                own: Vec::new(),
                slots: self,
            },
            None => {
                let mut own = Vec::with_capacity(self.each + SLACK);
                Slot { ptr: aligned(&mut own), idx: None, own, slots: self }
            }
        }
    }
}

impl Drop for Slots {
    fn drop(&mut self) {
        if self.buf.capacity() > 0 {
            give_back_shared(std::mem::take(&mut self.buf));
        }
    }
}

/// A task's scratch from [`Slots`]: `ptr` has room for the slot's floats, 64-byte aligned.
pub(crate) struct Slot<'a> {
    /// The scratch's first float.
    pub ptr: *mut f32,
    idx: Option<usize>,
    /// The task's own buffer when no slot was free (kept alive while `ptr` points into it).
    #[allow(dead_code)]
    own: Vec<f32>,
    slots: &'a Slots,
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        if let Some(i) = self.idx {
            self.slots.free.lock().unwrap_or_else(|e| e.into_inner()).push(i);
        }
    }
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

/// Writes pixels `p_begin..p_end` of a block's scratch back to its channel planes:
/// `out[ch * in_plane + p] = scratch[p * cp + ch]` for `ch < c` (the padding is dropped).
///
/// # Safety
/// AVX2 is available; `scratch` holds `p_end` rows of `cp` floats; `out` has room for `c`
/// planes of `in_plane` floats that no other thread touches; `cp` is a multiple of 8 and at
/// least `c`; `p_end <= in_plane`.
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn transpose_out(
    scratch: *const f32,
    cp: usize,
    c: usize,
    out: *mut f32,
    in_plane: usize,
    p_begin: usize,
    p_end: usize,
) {
    let whole = p_begin + (p_end - p_begin) / 8 * 8;
    for cg in (0..c).step_by(8) {
        let mut p = p_begin;
        while p < whole {
            let mut r = [_mm256_setzero_ps(); 8];
            for (j, rj) in r.iter_mut().enumerate() {
                *rj = _mm256_loadu_ps(scratch.add((p + j) * cp + cg));
            }
            transpose8(&mut r);
            for (i, ri) in r.iter().enumerate().take((c - cg).min(8)) {
                _mm256_storeu_ps(out.add((cg + i) * in_plane + p), *ri);
            }
            p += 8;
        }
    }
    for p in whole..p_end {
        for ch in 0..c {
            *out.add(ch * in_plane + p) = *scratch.add(p * cp + ch);
        }
    }
}

/// What the backward of one chunk reads and writes, for a block of `8 * G` channels.
pub(crate) struct BackTarget {
    /// The block's input scratch (see [`transpose_in`]) with its row of zeros at `zero_row`;
    /// null when no coordinate gradients are wanted.
    pub input: *const f32,
    /// The block's input-gradient scratch (same layout, accumulated in place; its row at
    /// `zero_row` takes the adds of taps outside the input and is never read); null when no
    /// input gradient is wanted.
    pub grad_input: *mut f32,
    /// The sample's pixel count: the row past the last pixel.
    pub zero_row: usize,
    /// Channels of the block (at most `8 * G`; the rest of a row is padding).
    pub c: usize,
    /// The output gradient of the block's first channel at the chunk's first position;
    /// channel `ch` is `out_plane` further per channel.
    pub grad_out: *const f32,
    /// Output positions per channel.
    pub out_plane: usize,
    /// Room for `32 * 8 * G` floats.
    pub tile: *mut f32,
}

/// The backward of positions 0..len of a chunk for a block of `8 * G` channels, from its taps
/// (`K` per position, `fast2d::build`'s order, with the weights' derivatives `dw` when
/// coordinate gradients are wanted):
///
/// - input gradients: for each group of 8 positions ([`crate::engine::SCATTER_GROUP`]), tap by
///   tap and position by position, the row of the tap's pixel gains `w * grad_out`, all the
///   block's channels with one vector add each: per element the adds of the staged scatter in
///   its order (taps outside the input add to the row of `zero_row` instead of being skipped);
/// - coordinate gradients: `g[d][p]` gains, channel by channel in order, `s * grad_out` with
///   `s` the sum over the taps of `value * dw` (first product, then each next one added), as
///   `fast2d::coord_grads_tail` computes it; the sums are computed for 8 channels at once and
///   transposed back to positions, so each `g[d][p]` adds its channels' terms in order.
///
/// # Safety
/// AVX2 is available; the scratches hold `zero_row + 1` rows of `8 * G` floats, the
/// input-gradient one this thread's alone; every offset indexes the sample's plane
/// (`< zero_row`); `grad_out` holds `len` positions of `c` channels as documented in
/// [`BackTarget`]; `len <= CHUNK`.
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn backward<const K: usize, const G: usize>(
    o: &[[i32; CHUNK]; K],
    w: &[[f32; CHUNK]; K],
    m: &[[f32; CHUNK]; K],
    dw: &[[[f32; CHUNK]; K]; 2],
    len: usize,
    t: &BackTarget,
    g: &mut [[f32; CHUNK]; 2],
) {
    // A full block compiled on its own: its loops over channels have constant bounds.
    if t.c == 8 * G {
        backward_impl::<K, G, true>(o, w, m, dw, len, t, g)
    } else {
        backward_impl::<K, G, false>(o, w, m, dw, len, t, g)
    }
}

/// [`backward`], with `FULL` when the block has `8 * G` channels.
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn backward_impl<const K: usize, const G: usize, const FULL: bool>(
    o: &[[i32; CHUNK]; K],
    w: &[[f32; CHUNK]; K],
    m: &[[f32; CHUNK]; K],
    dw: &[[[f32; CHUNK]; K]; 2],
    len: usize,
    t: &BackTarget,
    g: &mut [[f32; CHUNK]; 2],
) {
    let cp = 8 * G;
    let c = if FULL { cp } else { t.c };
    // The tile: grad_out per position (row j: position j's channels), grad_out per channel (row
    // ch: channel ch's 8 positions), and the two sums per position.
    let by_pos = t.tile;
    let by_ch = t.tile.add(8 * cp);
    let sums = [t.tile.add(16 * cp), t.tile.add(24 * cp)];
    let row_of = |k: usize, p: usize| if m[k][p] != 0.0 { o[k][p] as usize } else { t.zero_row } * cp;
    let mut j0 = 0;
    while j0 < len {
        let n = 8.min(len - j0);
        let lanes = first_lanes(n);
        for cg in (0..cp).step_by(8) {
            let mut r = [_mm256_setzero_ps(); 8];
            for (i, ri) in r.iter_mut().enumerate().take(c.saturating_sub(cg).min(8)) {
                let src = t.grad_out.add((cg + i) * t.out_plane + j0);
                *ri = if n == 8 { _mm256_loadu_ps(src) } else { _mm256_maskload_ps(src, lanes) };
            }
            for (i, ri) in r.iter().enumerate() {
                _mm256_storeu_ps(by_ch.add((cg + i) * 8), *ri);
            }
            transpose8(&mut r);
            for (j, rj) in r.iter().enumerate() {
                _mm256_storeu_ps(by_pos.add(j * cp + cg), *rj);
            }
        }
        if !t.grad_input.is_null() {
            for k in 0..K {
                for j in 0..n {
                    let p = j0 + j;
                    let row = t.grad_input.add(row_of(k, p));
                    let wk = _mm256_set1_ps(w[k][p]);
                    for gi in 0..G {
                        let a = row.add(8 * gi);
                        let prod = _mm256_mul_ps(wk, _mm256_loadu_ps(by_pos.add(j * cp + 8 * gi)));
                        _mm256_storeu_ps(a, _mm256_add_ps(_mm256_loadu_ps(a), prod));
                    }
                }
            }
        }
        if !t.input.is_null() {
            for j in 0..n {
                let p = j0 + j;
                let mut s = [[_mm256_setzero_ps(); G]; 2];
                for k in 0..K {
                    let row = t.input.add(row_of(k, p));
                    let (a, b) = (_mm256_set1_ps(dw[0][k][p]), _mm256_set1_ps(dw[1][k][p]));
                    for gi in 0..G {
                        let v = _mm256_loadu_ps(row.add(8 * gi));
                        if k == 0 {
                            s[0][gi] = _mm256_mul_ps(v, a);
                            s[1][gi] = _mm256_mul_ps(v, b);
                        } else {
                            s[0][gi] = _mm256_add_ps(s[0][gi], _mm256_mul_ps(v, a));
                            s[1][gi] = _mm256_add_ps(s[1][gi], _mm256_mul_ps(v, b));
                        }
                    }
                }
                for d in 0..2 {
                    for gi in 0..G {
                        _mm256_storeu_ps(sums[d].add(j * cp + 8 * gi), s[d][gi]);
                    }
                }
            }
            for (d, gd) in g.iter_mut().enumerate() {
                let dst = gd.as_mut_ptr().add(j0);
                let mut acc = _mm256_loadu_ps(dst);
                for cg in (0..c).step_by(8) {
                    let mut r = [_mm256_setzero_ps(); 8];
                    for (j, rj) in r.iter_mut().enumerate() {
                        *rj = _mm256_loadu_ps(sums[d].add(j * cp + cg));
                    }
                    transpose8(&mut r);
                    for (i, ri) in r.iter().enumerate().take((c - cg).min(8)) {
                        acc =
                            _mm256_add_ps(acc, _mm256_mul_ps(*ri, _mm256_loadu_ps(by_ch.add((cg + i) * 8))));
                    }
                }
                if n == 8 {
                    _mm256_storeu_ps(dst, acc);
                } else {
                    _mm256_maskstore_ps(dst, lanes, acc);
                }
            }
        }
        j0 += 8;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The kept scratch is reused, and a buffer above the limit is never kept (it would hold a
    /// very large image's block for the life of the process).
    #[test]
    fn the_kept_scratch_is_reused_and_bounded() {
        give_back_shared(Vec::with_capacity(SHARED_FLOATS + SLACK + 64));
        let v = take_shared(8).expect("small buffer");
        assert!(v.capacity() <= SHARED_FLOATS + SLACK, "kept {} floats", v.capacity());
        let mid = Vec::<f32>::with_capacity(1 << 20);
        let (ptr, cap) = (mid.as_ptr(), mid.capacity());
        give_back_shared(mid);
        let again = take_shared(1000).expect("kept buffer");
        assert_eq!((again.as_ptr(), again.capacity()), (ptr, cap), "the kept buffer was not reused");
        give_back_shared(again);
        let slots = Slots::new(4, 1000);
        let (a, b) = (slots.take(), slots.take());
        assert_eq!(a.ptr as usize % 64, 0);
        assert_eq!(b.ptr as usize - a.ptr as usize, 4 * 1008, "slots are consecutive, 64-byte multiples");
        assert!(
            a.ptr as usize >= ptr as usize && (b.ptr as usize) < ptr as usize + cap * 4,
            "slots not from the kept buffer"
        );
    }
}
