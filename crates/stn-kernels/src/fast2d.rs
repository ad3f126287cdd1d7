//! The 2-D fast path of the engine: the same arithmetic as the generic engine
//! ([`crate::engine`]), laid out structure-of-arrays over a chunk of output positions and
//! free of per-position branches, so the compiler vectorizes it; on x86-64 it is compiled a
//! second time with AVX2 and picked at run time. Results are bitwise identical to the
//! generic engine (tested), which stays the reference and serves 3-D.

use rayon::prelude::*;

use crate::coords::{cubic_coefficients, cubic_derivatives, Axis, PAD_ZEROS};
use crate::engine::{BackwardOut, Plan, Source, SyncPtr, CHUNK, SCATTER_GROUP};
use crate::float::Float;

/// Interpolation codes (const generic parameters).
pub(crate) const NEAREST: u8 = 0;
/// See [`NEAREST`].
pub(crate) const LINEAR: u8 = 1;
/// See [`NEAREST`].
pub(crate) const CUBIC: u8 = 2;

/// True when the fast path can index the input with `i32` offsets.
pub(crate) fn applicable<T, const D: usize>(plan: &Plan<T, D>) -> bool {
    D == 2 && plan.in_plane < i32::MAX as usize / 2
}

/// SIMD levels of the fast path: the portable build, AVX2, AVX-512.
const PORTABLE: u8 = 0;
const AVX2: u8 = 1;
const AVX512: u8 = 2;

/// The build of the fast path this CPU runs: AVX2 where the CPU has AVX2 and FMA, else the
/// portable one (`STN_KERNELS_NO_SIMD=1` forces it). The AVX-512 paths run only when asked for
/// (`STN_KERNELS_AVX512=1`) on a CPU with AVX-512F: measured on the one AVX-512 CPU this project
/// ran on (AMD Zen 4), their masked gathers made the forward 0.97-1.74x as slow as the AVX2
/// paths' scalar loads (docs/performance.md#kernels-on-avx-512), so no CPU gets them by
/// default. All builds give the same bits (`tests/determinism.rs`).
fn simd_level() -> u8 {
    #[cfg(target_arch = "x86_64")]
    {
        static LEVEL: std::sync::OnceLock<u8> = std::sync::OnceLock::new();
        *LEVEL.get_or_init(|| {
            if std::env::var_os("STN_KERNELS_NO_SIMD").is_some()
                || !std::is_x86_feature_detected!("avx2")
                || !std::is_x86_feature_detected!("fma")
            {
                PORTABLE
            } else if std::env::var_os("STN_KERNELS_AVX512").is_some()
                && std::is_x86_feature_detected!("avx512f")
            {
                AVX512
            } else {
                AVX2
            }
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        PORTABLE
    }
}

/// The taps of a chunk, structure-of-arrays: `K` per position.
struct Taps<T, const K: usize> {
    o: [[i32; CHUNK]; K],
    w: [[T; CHUNK]; K],
    /// 1 where the tap lies inside the input, else 0 (a float mask selects as fast as the data).
    m: [[T; CHUNK]; K],
    /// d(weight)/d(x), d(weight)/d(y) (backward only).
    dw: [[[T; CHUNK]; K]; 2],
}

impl<T: Float, const K: usize> Taps<T, K> {
    fn new() -> Box<Self> {
        Box::new(Taps {
            o: [[0; CHUNK]; K],
            w: [[T::ZERO; CHUNK]; K],
            m: [[T::ZERO; CHUNK]; K],
            dw: [[[T::ZERO; CHUNK]; K]; 2],
        })
    }
}

#[inline(always)]
fn flag<T: Float>(b: bool) -> T {
    if b {
        T::ONE
    } else {
        T::ZERO
    }
}

/// Index clamped into the axis (NaN to 0), for a load that is always in bounds.
#[inline(always)]
fn clamp_index<T: Float>(v: T, a: &Axis<T>) -> i32 {
    let c = if v > T::ZERO { v } else { T::ZERO };
    let c = if c < a.max_val { c } else { a.max_val };
    // SAFETY: c is finite and within [0, size - 1] < i32::MAX.
    unsafe { c.to_i32_unchecked() }
}

/// Padded coordinate and its derivative, with the 2-D NaN rule of `coords::nan_linear`.
#[inline(always)]
fn pad_linear<T: Float, const PAD: u8, const BWD: bool>(x: T, a: &Axis<T>) -> (T, T) {
    if BWD {
        let (xp, m) = a.pad_grad::<PAD>(x);
        if PAD != PAD_ZEROS {
            let nan = x.is_nan();
            (if nan { T::ZERO } else { xp }, if nan { T::ZERO } else { m })
        } else {
            (xp, m)
        }
    } else {
        (a.pad::<PAD>(x), T::ONE)
    }
}

/// Builds the taps of positions 0..len from pixel coordinates `xs`, `ys`.
#[inline(always)]
fn build<T: Float, const MODE: u8, const PAD: u8, const K: usize, const BWD: bool>(
    ax: &Axis<T>,
    ay: &Axis<T>,
    xs: &[T; CHUNK],
    ys: &[T; CHUNK],
    len: usize,
    t: &mut Taps<T, K>,
    with_dw: bool,
) {
    let wx = ay.stride as i32; // row stride = W
    match MODE {
        NEAREST => {
            for p in 0..len {
                let x = ax.pad::<PAD>(xs[p]).round_even();
                let y = ay.pad::<PAD>(ys[p]).round_even();
                t.m[0][p] = flag(ax.in_range(x) & ay.in_range(y));
                t.o[0][p] = clamp_index(y, ay) * wx + clamp_index(x, ax);
                t.w[0][p] = T::ONE;
            }
        }
        LINEAR => {
            for p in 0..len {
                let (x, mx) = pad_linear::<T, PAD, BWD>(xs[p], ax);
                let (y, my) = pad_linear::<T, PAD, BWD>(ys[p], ay);
                let (x0, y0) = (x.floor(), y.floor());
                let (fx, fy) = (x - x0, y - y0);
                let (x1, y1) = (x0 + T::ONE, y0 + T::ONE);
                let (vx0, vx1, vy0, vy1) =
                    (ax.in_range(x0), ax.in_range(x1), ay.in_range(y0), ay.in_range(y1));
                let (cx0, cx1) = (clamp_index(x0, ax), clamp_index(x1, ax));
                let (ry0, ry1) = (clamp_index(y0, ay) * wx, clamp_index(y1, ay) * wx);
                let (wx0, wy0) = (T::ONE - fx, T::ONE - fy);
                t.o[0][p] = ry0 + cx0;
                t.o[1][p] = ry0 + cx1;
                t.o[2][p] = ry1 + cx0;
                t.o[3][p] = ry1 + cx1;
                t.w[0][p] = wy0 * wx0;
                t.w[1][p] = wy0 * fx;
                t.w[2][p] = fy * wx0;
                t.w[3][p] = fy * fx;
                t.m[0][p] = flag(vy0 & vx0);
                t.m[1][p] = flag(vy0 & vx1);
                t.m[2][p] = flag(vy1 & vx0);
                t.m[3][p] = flag(vy1 & vx1);
                if BWD && with_dw {
                    t.dw[0][0][p] = wy0 * -mx;
                    t.dw[0][1][p] = wy0 * mx;
                    t.dw[0][2][p] = fy * -mx;
                    t.dw[0][3][p] = fy * mx;
                    t.dw[1][0][p] = -my * wx0;
                    t.dw[1][1][p] = -my * fx;
                    t.dw[1][2][p] = my * wx0;
                    t.dw[1][3][p] = my * fx;
                }
            }
        }
        _ => {
            for p in 0..len {
                let (x, y) = (xs[p], ys[p]);
                let (x0, y0) = (x.floor(), y.floor());
                let (cx, cy) = (cubic_coefficients(x - x0), cubic_coefficients(y - y0));
                let mut ox = [0i32; 4];
                let mut oy = [0i32; 4];
                let mut vx = [false; 4];
                let mut vy = [false; 4];
                for i in 0..4 {
                    let d = T::from_f64(i as f64 - 1.0);
                    let qx = ax.pad::<PAD>(x0 + d).trunc();
                    let qy = ay.pad::<PAD>(y0 + d).trunc();
                    vx[i] = ax.in_range(qx);
                    vy[i] = ay.in_range(qy);
                    ox[i] = clamp_index(qx, ax);
                    oy[i] = clamp_index(qy, ay) * wx;
                }
                for j in 0..4 {
                    for i in 0..4 {
                        let k = j * 4 + i;
                        t.o[k][p] = oy[j] + ox[i];
                        t.w[k][p] = cy[j] * cx[i];
                        t.m[k][p] = flag(vy[j] & vx[i]);
                    }
                }
                if BWD && with_dw {
                    let (dx, dy) = (cubic_derivatives(x - x0), cubic_derivatives(y - y0));
                    for j in 0..4 {
                        for i in 0..4 {
                            let k = j * 4 + i;
                            t.dw[0][k][p] = cy[j] * dx[i];
                            t.dw[1][k][p] = dy[j] * cx[i];
                        }
                    }
                }
            }
        }
    }
}

/// Interpolated values of positions 0..len in one channel plane; `simd` picks the AVX2 gathers.
#[inline(always)]
/// Writes through `out` (which may be uninitialized memory) positions 0..len.
/// `bilinear`: the taps are those of bilinear interpolation (K = 4, in `build`'s order).
fn gather<T: Float, const K: usize>(
    t: &Taps<T, K>,
    plane: &[T],
    out: *mut T,
    len: usize,
    simd: u8,
    bilinear: bool,
) {
    #[cfg(target_arch = "x86_64")]
    if simd != PORTABLE {
        use crate::simd::*;
        use std::any::TypeId;
        // SAFETY: `simd` names a level detected at run time; masked-off lanes are not loaded and
        // the others index inside the plane. The casts are between identical types (TypeId checked).
        unsafe {
            if TypeId::of::<T>() == TypeId::of::<f32>() {
                let c = |x: &[[T; CHUNK]; K]| &*(x as *const [[T; CHUNK]; K] as *const [[f32; CHUNK]; K]);
                let out = out as *mut f32;
                let pl = plane.as_ptr() as *const f32;
                if K == 4 && bilinear {
                    let c4 =
                        |x: &[[T; CHUNK]; K]| &*(x as *const [[T; CHUNK]; K] as *const [[f32; CHUNK]; 4]);
                    let o4 = &*(&t.o as *const [[i32; CHUNK]; K] as *const [[i32; CHUNK]; 4]);
                    return if simd == AVX512 {
                        gather_f32_bilinear_512(o4, c4(&t.w), c4(&t.m), pl, out, len)
                    } else {
                        gather_f32_bilinear(o4, c4(&t.w), c4(&t.m), pl, out, len)
                    };
                }
                return if simd == AVX512 {
                    gather_f32_512(&t.o, c(&t.w), c(&t.m), pl, out, len)
                } else {
                    gather_f32(&t.o, c(&t.w), c(&t.m), pl, out, len)
                };
            }
            if TypeId::of::<T>() == TypeId::of::<f64>() {
                let c = |x: &[[T; CHUNK]; K]| &*(x as *const [[T; CHUNK]; K] as *const [[f64; CHUNK]; K]);
                let out = out as *mut f64;
                let pl = plane.as_ptr() as *const f64;
                return if simd == AVX512 {
                    gather_f64_512(&t.o, c(&t.w), c(&t.m), pl, out, len)
                } else {
                    gather_f64(&t.o, c(&t.w), c(&t.m), pl, out, len)
                };
            }
        }
    }
    let _ = (simd, bilinear);
    let ptr = plane.as_ptr();
    for p in 0..len {
        let mut acc = T::ZERO;
        for k in 0..K {
            // SAFETY: offsets are clamped into the plane; the load is unconditional so it vectorizes.
            let raw = unsafe { *ptr.add(t.o[k][p] as usize) };
            let v = if t.m[k][p] != T::ZERO { raw } else { T::ZERO };
            if K == 1 {
                acc = v;
            } else {
                acc = if k == 0 { t.w[k][p] * v } else { acc + t.w[k][p] * v };
            }
        }
        // SAFETY: the caller hands `len` writable elements.
        unsafe { out.add(p).write(acc) };
    }
}

/// Chunks whose taps the staged path builds before reading the channels (a run of 512
/// positions: each channel plane is then read for the whole run while it is in cache); 2 for
/// bicubic, whose 16 taps per position would push a longer run's taps out of the cache.
const fn run_chunks(k: usize) -> usize {
    if k >= 16 {
        2
    } else {
        8
    }
}

/// Whether the register-held path of [`crate::fused`] takes `c` channels of `T` (f32, few
/// channels, x86-64, not switched off).
#[inline(always)]
fn fused_applies<T: Float>(c: usize) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::any::TypeId::of::<T>() == std::any::TypeId::of::<f32>()
            && c <= crate::fused::MAX_FUSED_C
            && crate::fused::enabled()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = c;
        false
    }
}

/// One forward block (positions p_begin..p_end of sample n).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn forward_block<T: Float, S: Source<T, 2>, const MODE: u8, const PAD: u8, const K: usize, const SIMD: u8>(
    plan: &Plan<T, 2>,
    src: &S,
    input: &[T],
    outp: SyncPtr<T>,
    n: usize,
    p_begin: usize,
    p_end: usize,
    taps: &mut Vec<Box<Taps<T, K>>>,
) {
    let mut xs = [[T::ZERO; CHUNK]; 2];
    let [ax, ay] = &plan.axes;
    let fused = SIMD != PORTABLE && fused_applies::<T>(plan.c);
    if !fused {
        // Runs of up to `run_chunks(K)` chunks: their taps are built once, then each channel reads one
        // plane for the whole run (the plane stays in cache; the output is written in runs).
        let mut p0 = p_begin;
        while p0 < p_end {
            let run_end = (p0 + run_chunks(K) * CHUNK).min(p_end);
            let mut i = 0;
            let mut q = p0;
            while q < run_end {
                let len = CHUNK.min(run_end - q);
                if taps.len() <= i {
                    taps.push(Taps::new());
                }
                src.coords(n, q, len, &mut xs);
                build::<T, MODE, PAD, K, false>(ax, ay, &xs[0], &xs[1], len, &mut taps[i], false);
                q += len;
                i += 1;
            }
            for c in 0..plan.c {
                let plane = &input[(n * plan.c + c) * plan.in_plane..][..plan.in_plane];
                let base = (n * plan.c + c) * plan.out_plane;
                let (mut i, mut q) = (0, p0);
                while q < run_end {
                    let len = CHUNK.min(run_end - q);
                    // SAFETY: this block alone writes positions p_begin..p_end of sample n.
                    let out = unsafe { outp.at(base + q) };
                    gather(&taps[i], plane, out, len, SIMD, MODE == LINEAR);
                    q += len;
                    i += 1;
                }
            }
            p0 = run_end;
        }
        return;
    }
    let mut p0 = p_begin;
    while p0 < p_end {
        let len = CHUNK.min(p_end - p0);
        src.coords(n, p0, len, &mut xs);
        #[cfg(target_arch = "x86_64")]
        if fused {
            // SAFETY: T is f32 (checked by `fused_applies`), so the casts are between identical
            // types; SIMD names a level detected at run time (AVX2 at least); this block alone
            // writes positions p_begin..p_end of sample n.
            unsafe {
                let f = |a: &Axis<T>| &*(a as *const Axis<T> as *const Axis<f32>);
                let c = |x: &[T; CHUNK]| &*(x as *const [T; CHUNK] as *const [f32; CHUNK]);
                let planes = crate::fused::Planes {
                    input: input.as_ptr().add(n * plan.c * plan.in_plane) as *const f32,
                    in_plane: plan.in_plane,
                    out: outp.at(n * plan.c * plan.out_plane + p0) as *mut f32,
                    out_plane: plan.out_plane,
                    c: plan.c,
                };
                if SIMD == AVX512 && MODE != CUBIC {
                    crate::fused512::forward::<MODE, PAD>(f(ax), f(ay), c(&xs[0]), c(&xs[1]), len, planes);
                } else {
                    crate::fused::forward::<MODE, PAD>(f(ax), f(ay), c(&xs[0]), c(&xs[1]), len, planes);
                }
            }
            p0 += len;
            continue;
        }
        p0 += len;
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn forward_block_avx2<T: Float, S: Source<T, 2>, const MODE: u8, const PAD: u8, const K: usize>(
    plan: &Plan<T, 2>,
    src: &S,
    input: &[T],
    outp: SyncPtr<T>,
    n: usize,
    p_begin: usize,
    p_end: usize,
    taps: &mut Vec<Box<Taps<T, K>>>,
) {
    forward_block::<T, S, MODE, PAD, K, AVX2>(plan, src, input, outp, n, p_begin, p_end, taps)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn forward_block_avx512<T: Float, S: Source<T, 2>, const MODE: u8, const PAD: u8, const K: usize>(
    plan: &Plan<T, 2>,
    src: &S,
    input: &[T],
    outp: SyncPtr<T>,
    n: usize,
    p_begin: usize,
    p_end: usize,
    taps: &mut Vec<Box<Taps<T, K>>>,
) {
    forward_block::<T, S, MODE, PAD, K, AVX512>(plan, src, input, outp, n, p_begin, p_end, taps)
}

/// Forward pass of the fast path: writes every element of `out` (N, C, out_plane), which
/// may be uninitialized memory.
pub(crate) fn forward<T: Float, S: Source<T, 2>, const MODE: u8, const PAD: u8, const K: usize>(
    plan: &Plan<T, 2>,
    src: &S,
    input: &[T],
    out: *mut T,
) {
    let block = plan.block();
    let nb = plan.blocks_per_sample();
    let outp = SyncPtr(out);
    let level = simd_level();
    let min_len = plan.min_blocks_per_task();
    #[cfg(target_arch = "x86_64")]
    if level != PORTABLE
        && channels_last_applies::<T>(plan.c, K, plan.in_plane)
        && forward_channels_last::<T, S, MODE, PAD, K>(plan, src, input, out)
    {
        return;
    }
    (0..plan.n * nb).into_par_iter().with_min_len(min_len).for_each_init(Vec::new, |taps, u| {
        let (n, b) = (u / nb, u % nb);
        let p_begin = b * block;
        let p_end = (p_begin + block).min(plan.out_plane);
        #[cfg(target_arch = "x86_64")]
        {
            // SAFETY (both): the level's features were detected at run time.
            if level == AVX512 {
                unsafe {
                    forward_block_avx512::<T, S, MODE, PAD, K>(
                        plan, src, input, outp, n, p_begin, p_end, taps,
                    )
                };
                return;
            }
            if level == AVX2 {
                unsafe {
                    forward_block_avx2::<T, S, MODE, PAD, K>(plan, src, input, outp, n, p_begin, p_end, taps)
                };
                return;
            }
        }
        let _ = level;
        forward_block::<T, S, MODE, PAD, K, PORTABLE>(plan, src, input, outp, n, p_begin, p_end, taps);
    });
}

/// Whether the channels-last path of [`crate::channels_last`] takes `c` channels of `T` (f32,
/// many channels, not switched off) with `k` taps per position from planes of `in_plane`
/// pixels; the caller checks that the CPU has AVX2.
#[cfg(target_arch = "x86_64")]
fn channels_last_applies<T: Float>(c: usize, k: usize, in_plane: usize) -> bool {
    std::any::TypeId::of::<T>() == std::any::TypeId::of::<f32>()
        && c >= crate::channels_last::MIN_CHANNELS
        && crate::channels_last::worth_it(c, k, in_plane)
        && crate::channels_last::enabled()
}

/// The forward pass through the channels-last path (T is f32, the CPU has AVX2); returns
/// `false`, having written nothing, when its scratch cannot be allocated (the caller then takes
/// the staged path). Small and mid-sized images, in enough (sample, block of channels) tasks
/// to keep the threads busy: each task transposes its block into its own scratch (it stays in
/// cache) and samples it. Otherwise, the blocks go in groups: all threads transpose a group's
/// blocks into one shared scratch, then sample it in bands of output positions.
#[cfg(target_arch = "x86_64")]
fn forward_channels_last<T: Float, S: Source<T, 2>, const MODE: u8, const PAD: u8, const K: usize>(
    plan: &Plan<T, 2>,
    src: &S,
    input: &[T],
    out: *mut T,
) -> bool {
    use crate::channels_last as cl;
    let cb = cl::block(plan.c, K);
    let blocks = plan.c.div_ceil(cb);
    let tasks = plan.n * blocks;
    let threads = rayon::current_num_threads();
    // Bands of output positions that give `gt` blocks' tasks enough of them for the threads.
    let bands_for = |gt: usize| (4 * threads).div_ceil(gt).clamp(1, plan.out_plane.div_ceil(4 * CHUNK));
    let outp = SyncPtr(out as *mut f32);
    // SAFETY: T is f32 (checked by `channels_last_applies`).
    let input = unsafe { std::slice::from_raw_parts(input.as_ptr() as *const f32, input.len()) };
    // A block's scratch: its pixels, then the row of zeros. Every pixel row is written by the
    // transpose before it is read, the row of zeros before the sampling; the floats stay spare
    // capacity (no slice ever covers them).
    let scratch_len = (plan.in_plane + 1) * cb;
    let work = |task: usize, band: usize, bands: usize| {
        let (n, c0) = (task / blocks, (task % blocks) * cb);
        let per_band = plan.out_plane.div_ceil(bands).div_ceil(CHUNK) * CHUNK;
        let q = (band * per_band).min(plan.out_plane);
        ChannelsLastTask { cb, n, c0, q, p_end: (q + per_band).min(plan.out_plane), input, outp }
    };
    if bands_for(tasks) == 1 && scratch_len <= cl::PRIVATE_FLOATS {
        // Enough tasks: each transposes its block into its own scratch (still in cache) and samples it.
        let init =
            || (Taps::<T, K>::new(), vec![0f32; 8 * cb], Vec::<f32>::with_capacity(scratch_len + cl::SLACK));
        (0..tasks).into_par_iter().for_each_init(init, |(taps, tile, scratch), task| {
            let scr = cl::aligned(scratch);
            // SAFETY: the caller checked AVX2; the scratch has room for `scratch_len` floats.
            unsafe {
                channels_last_task_avx2::<T, S, MODE, PAD, K>(
                    plan,
                    src,
                    &work(task, 0, 1),
                    taps,
                    tile,
                    scr,
                    true,
                )
            };
        });
        return true;
    }
    // Few tasks for the threads (large images): the blocks of a group are transposed by all
    // threads into one shared scratch, then sampled band by band.
    let group = (cl::SHARED_FLOATS / scratch_len).clamp(1, tasks);
    let Some(mut shared) = cl::take_shared(group * scratch_len) else {
        return false;
    };
    let base = SyncPtr(cl::aligned(&mut shared));
    for t0 in (0..tasks).step_by(group) {
        let gt = group.min(tasks - t0);
        let bands = bands_for(gt);
        // SAFETY: the caller checked AVX2; the shared scratch has room for `gt` blocks.
        unsafe { transpose_blocks(plan, input, cb, (t0, gt), base) };
        let init = || (Taps::<T, K>::new(), vec![0f32; 8 * cb]);
        (0..gt * bands).into_par_iter().for_each_init(init, |(taps, tile), u| {
            let (i, band) = (u / bands, u % bands);
            // SAFETY: the caller checked AVX2; block i's scratch was written above and is only read now.
            unsafe {
                let scr = base.at(i * scratch_len);
                channels_last_task_avx2::<T, S, MODE, PAD, K>(
                    plan,
                    src,
                    &work(t0 + i, band, bands),
                    taps,
                    tile,
                    scr,
                    false,
                )
            };
        });
    }
    cl::give_back_shared(shared);
    true
}

/// One task of [`forward_channels_last`]: sample `n`, channels `c0..c0 + cb` (or fewer),
/// output positions `q..p_end`.
#[cfg(target_arch = "x86_64")]
struct ChannelsLastTask<'a> {
    cb: usize,
    n: usize,
    c0: usize,
    q: usize,
    p_end: usize,
    input: &'a [f32],
    outp: SyncPtr<f32>,
}

/// See [`ChannelsLastTask`]; compiled with AVX2 so that `build` is vectorized as in the staged path.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn channels_last_task_avx2<
    T: Float,
    S: Source<T, 2>,
    const MODE: u8,
    const PAD: u8,
    const K: usize,
>(
    plan: &Plan<T, 2>,
    src: &S,
    work: &ChannelsLastTask,
    taps: &mut Taps<T, K>,
    tile: &mut [f32],
    scr: *mut f32,
    transpose: bool,
) {
    use crate::channels_last as cl;
    let cb = work.cb;
    let (n, c0) = (work.n, work.c0);
    let c = cb.min(plan.c - c0);
    if transpose {
        let planes = &work.input[(n * plan.c + c0) * plan.in_plane..][..c * plan.in_plane];
        cl::transpose_in(planes.as_ptr(), plan.in_plane, c, cb, scr, 0, plan.in_plane);
        std::ptr::write_bytes(scr.add(plan.in_plane * cb), 0, cb);
    }
    let [ax, ay] = &plan.axes;
    let mut xs = [[T::ZERO; CHUNK]; 2];
    let mut q = work.q;
    while q < work.p_end {
        let len = CHUNK.min(work.p_end - q);
        src.coords(n, q, len, &mut xs);
        build::<T, MODE, PAD, K, false>(ax, ay, &xs[0], &xs[1], len, taps, false);
        let f = |x: &[[T; CHUNK]; K]| &*(x as *const [[T; CHUNK]; K] as *const [[f32; CHUNK]; K]);
        let target = cl::Target {
            scratch: scr as *const f32,
            zero_row: plan.in_plane,
            c,
            // This task alone writes positions q..q + len of channels c0..c0 + c of sample n.
            out: work.outp.at((n * plan.c + c0) * plan.out_plane + q),
            out_plane: plan.out_plane,
            tile: tile.as_mut_ptr(),
        };
        // The taps index the plane (clamped); the scratch was written above.
        match cb {
            8 => cl::sample::<K, 1>(&taps.o, f(&taps.w), f(&taps.m), len, &target),
            16 => cl::sample::<K, 2>(&taps.o, f(&taps.w), f(&taps.m), len, &target),
            32 => cl::sample::<K, 4>(&taps.o, f(&taps.w), f(&taps.m), len, &target),
            _ => cl::sample::<K, 8>(&taps.o, f(&taps.w), f(&taps.m), len, &target),
        }
        q += len;
    }
}

/// Whether the channels-last backward takes `c` channels of `T` (f32, many channels, not
/// switched off); the caller checks that the CPU has AVX2.
#[cfg(target_arch = "x86_64")]
fn channels_last_backward_applies<T: Float>(c: usize) -> bool {
    use crate::channels_last as cl;
    std::any::TypeId::of::<T>() == std::any::TypeId::of::<f32>() && c >= cl::MIN_CHANNELS && cl::enabled()
}

/// Whether a block's scratch of the backward (`k` taps per position, planes of `in_plane`
/// pixels) fits a task's own ([`crate::channels_last::PRIVATE_FLOATS`]).
#[cfg(target_arch = "x86_64")]
fn channels_last_private_fits(c: usize, k: usize, in_plane: usize) -> bool {
    use crate::channels_last as cl;
    (in_plane + 1).saturating_mul(cl::backward_block(c, k)) <= cl::PRIVATE_FLOATS
}

/// Scratch of one task of the channels-last backward.
#[cfg(target_arch = "x86_64")]
struct ChannelsLastBackScratch<'a, T, const K: usize> {
    taps: Box<Taps<T, K>>,
    xs: [[T; CHUNK]; 2],
    /// The coordinate gradients of every chunk of the task's positions.
    g: Vec<[[T; CHUNK]; 2]>,
    tile: Vec<f32>,
    /// A block's input scratch (where the task transposes the input itself; written before it
    /// is read).
    input: Option<crate::channels_last::Slot<'a>>,
    /// A block's input-gradient scratch (when the input gradient is wanted).
    grad_input: Option<crate::channels_last::Slot<'a>>,
}

#[cfg(target_arch = "x86_64")]
impl<'a, T: Float, const K: usize> ChannelsLastBackScratch<'a, T, K> {
    /// Scratch for blocks of `cb` channels, with a block's input and input-gradient scratch
    /// from `slots` where wanted.
    fn new(cb: usize, slots: &'a crate::channels_last::Slots, input: bool, grad_input: bool) -> Self {
        ChannelsLastBackScratch {
            taps: Taps::new(),
            xs: [[T::ZERO; CHUNK]; 2],
            g: Vec::new(),
            tile: vec![0f32; 32 * cb],
            input: input.then(|| slots.take()),
            grad_input: grad_input.then(|| slots.take()),
        }
    }

    /// Zeroed coordinate gradients for positions `q0..q1`.
    fn reset_g(&mut self, q0: usize, q1: usize) {
        self.g.clear();
        self.g.resize((q1 - q0).div_ceil(CHUNK), [[T::ZERO; CHUNK]; 2]);
    }

    /// Hands the coordinate gradients of positions `q0..q1` (kept in `g`, whose first chunk
    /// starts at position `origin`) to the source, chunk by chunk in order, as the staged path does.
    fn hand_to<S: Source<T, 2>>(
        &mut self,
        src: &S,
        n: usize,
        (q0, q1): (usize, usize),
        origin: usize,
        acc: &mut S::Acc,
    ) {
        let mut q = q0;
        while q < q1 {
            let len = CHUNK.min(q1 - q);
            src.coords(n, q, len, &mut self.xs);
            src.backward(n, q, len, &self.xs, &self.g[(q - origin) / CHUNK], acc);
            q += len;
        }
    }
}

/// The channels-last backward with one task per sample (T is f32, the CPU has AVX2): for each
/// block of channels ([`crate::channels_last::backward_block`]), the block's input is
/// transposed into the task's scratch (for the coordinate gradients), its input gradient is
/// accumulated in a zeroed scratch and transposed back to the planes, which must hold zeros
/// (`sample::run_backward` allocates them zeroed). Every chunk's coordinate gradients are kept
/// until the last block has added its channels, then handed to the source, one accumulator
/// per block of positions as in the staged path. Results are bitwise those of the staged path
/// (see [`crate::channels_last::backward`]).
#[cfg(target_arch = "x86_64")]
fn backward_channels_last<T: Float, S: Source<T, 2>, const MODE: u8, const PAD: u8, const K: usize>(
    plan: &Plan<T, 2>,
    src: &S,
    input: &[T],
    grad_out: &[T],
    grad_input: Option<&mut [T]>,
    need_params: bool,
) -> Vec<S::Acc> {
    use crate::channels_last as cl;
    let cb = cl::backward_block(plan.c, K);
    let coord_grads = need_params && MODE != NEAREST;
    let scratch_len = (plan.in_plane + 1) * cb;
    let need_input = grad_input.is_some();
    let gins: Vec<Option<&mut [T]>> = match grad_input {
        Some(g) => g.chunks_mut(plan.c * plan.in_plane).map(Some).collect(),
        None => (0..plan.n).map(|_| None).collect(),
    };
    let per_task = usize::from(coord_grads) + usize::from(need_input);
    let slots = cl::Slots::new(per_task * rayon::current_num_threads(), scratch_len);
    let init = || ChannelsLastBackScratch::<T, K>::new(cb, &slots, coord_grads, need_input);
    let (block, nb) = (plan.block(), plan.blocks_per_sample());
    let per_n: Vec<Vec<S::Acc>> = gins
        .into_par_iter()
        .enumerate()
        .map_init(init, |st, (n, gin_n)| {
            st.reset_g(0, plan.out_plane);
            let gin = gin_n.map_or(std::ptr::null_mut(), |g| g.as_mut_ptr() as *mut f32);
            for c0 in (0..plan.c).step_by(cb) {
                let c = cb.min(plan.c - c0);
                // SAFETY: the caller checked AVX2 and that T is f32; the scratches have room for
                // a block (allocated above where used); this task alone writes sample n's
                // input-gradient planes (`gin`, or null).
                unsafe {
                    let in_scr = if coord_grads {
                        let scr =
                            st.input.as_ref().expect("allocated when coordinate gradients are wanted").ptr;
                        let planes = input.as_ptr().add((n * plan.c + c0) * plan.in_plane) as *const f32;
                        cl::transpose_in(planes, plan.in_plane, c, cb, scr, 0, plan.in_plane);
                        std::ptr::write_bytes(scr.add(plan.in_plane * cb), 0, cb);
                        scr as *const f32
                    } else {
                        std::ptr::null()
                    };
                    let gin_scr = if gin.is_null() {
                        std::ptr::null_mut()
                    } else {
                        let scr =
                            st.grad_input.as_ref().expect("allocated when the input gradient is wanted").ptr;
                        std::ptr::write_bytes(scr, 0, scratch_len);
                        scr
                    };
                    channels_last_backward_avx2::<T, S, MODE, PAD, K>(
                        plan,
                        src,
                        grad_out,
                        (n, c0, cb),
                        (0, plan.out_plane),
                        (in_scr, gin_scr),
                        st,
                    );
                    if !gin.is_null() {
                        let out = gin.add(c0 * plan.in_plane);
                        cl::transpose_out(gin_scr, cb, c, out, plan.in_plane, 0, plan.in_plane);
                    }
                }
            }
            let mut out = Vec::new();
            if need_params {
                for b in 0..nb {
                    let mut acc = src.new_acc();
                    st.hand_to(src, n, (b * block, ((b + 1) * block).min(plan.out_plane)), 0, &mut acc);
                    out.push(acc);
                }
            }
            out
        })
        .collect();
    per_n.into_iter().flatten().collect()
}

/// Pixels per task of a parallel transpose into a shared scratch.
#[cfg(target_arch = "x86_64")]
const TRANSPOSE_PIXELS: usize = 16384;

/// Transposes the blocks of channels `t0..t0 + count` of the input (block `t`: sample
/// `t / blocks`, channels from `(t % blocks) * cb`) into consecutive scratches of
/// `(in_plane + 1) * cb` floats from `base`, rows of zeros included: all threads, in pieces of
/// [`TRANSPOSE_PIXELS`] pixels.
///
/// # Safety
/// AVX2 is available; `base` has room for `count` scratches, which nothing else touches meanwhile.
#[cfg(target_arch = "x86_64")]
unsafe fn transpose_blocks<T: Float>(
    plan: &Plan<T, 2>,
    input: &[f32],
    cb: usize,
    (t0, count): (usize, usize),
    base: SyncPtr<f32>,
) {
    let blocks = plan.c.div_ceil(cb);
    let scratch_len = (plan.in_plane + 1) * cb;
    let pieces = plan.in_plane.div_ceil(TRANSPOSE_PIXELS);
    (0..count * pieces).into_par_iter().for_each(|u| {
        let (i, b) = (u / pieces, u % pieces);
        let t = t0 + i;
        let c0 = (t % blocks) * cb;
        let c = cb.min(plan.c - c0);
        let planes = &input[((t / blocks) * plan.c + c0) * plan.in_plane..][..c * plan.in_plane];
        // SAFETY: AVX2 (the caller's contract); this piece alone writes its pixels' rows of
        // scratch i (and the first piece its row of zeros), inside the room.
        unsafe {
            let scr = base.at(i * scratch_len);
            let p1 = ((b + 1) * TRANSPOSE_PIXELS).min(plan.in_plane);
            crate::channels_last::transpose_in(
                planes.as_ptr(),
                plan.in_plane,
                c,
                cb,
                scr,
                b * TRANSPOSE_PIXELS,
                p1,
            );
            if b == 0 {
                std::ptr::write_bytes(scr.add(plan.in_plane * cb), 0, cb);
            }
        }
    });
}

/// The coordinate gradients of few samples through the channels-last path (T is f32, the CPU
/// has AVX2, linear or cubic): every block of channels of every sample is transposed by all
/// threads into one shared scratch, then each (sample, block of positions) task, as in the
/// staged path, adds its positions' gradients block of channels by block in order and hands
/// them to the source. `None`, having done nothing, when the scratch would exceed
/// [`crate::channels_last::SHARED_FLOATS`] or cannot be allocated (the caller takes the staged path).
#[cfg(target_arch = "x86_64")]
fn coord_grads_channels_last<T: Float, S: Source<T, 2>, const MODE: u8, const PAD: u8, const K: usize>(
    plan: &Plan<T, 2>,
    src: &S,
    input: &[T],
    grad_out: &[T],
) -> Option<Vec<S::Acc>> {
    use crate::channels_last as cl;
    let cb = cl::backward_block(plan.c, K);
    let blocks = plan.c.div_ceil(cb);
    let scratch_len = (plan.in_plane + 1) * cb;
    let total = (plan.n * blocks).checked_mul(scratch_len).filter(|&t| t <= cl::SHARED_FLOATS)?;
    let mut shared = cl::take_shared(total)?;
    let base = SyncPtr(cl::aligned(&mut shared));
    // SAFETY: the caller checked AVX2 and that T is f32; the shared scratch has room for every block.
    unsafe {
        let input = std::slice::from_raw_parts(input.as_ptr() as *const f32, input.len());
        transpose_blocks(plan, input, cb, (0, plan.n * blocks), base);
    }
    let (block, nb) = (plan.block(), plan.blocks_per_sample());
    let no_slots = cl::Slots::new(0, 0);
    let init = || ChannelsLastBackScratch::<T, K>::new(cb, &no_slots, false, false);
    let accs = (0..plan.n * nb)
        .into_par_iter()
        .with_min_len(plan.min_blocks_per_task())
        .map_init(init, |st, u| {
            let (n, b) = (u / nb, u % nb);
            let range = (b * block, ((b + 1) * block).min(plan.out_plane));
            st.reset_g(range.0, range.1);
            for i in 0..blocks {
                // SAFETY: as above; scratch n * blocks + i was written above and is only read now.
                unsafe {
                    let scr = base.at((n * blocks + i) * scratch_len) as *const f32;
                    channels_last_backward_avx2::<T, S, MODE, PAD, K>(
                        plan,
                        src,
                        grad_out,
                        (n, i * cb, cb),
                        range,
                        (scr, std::ptr::null_mut()),
                        st,
                    );
                }
            }
            let mut acc = src.new_acc();
            st.hand_to(src, n, range, range.0, &mut acc);
            acc
        })
        .collect();
    cl::give_back_shared(shared);
    Some(accs)
}

/// The input gradient of few samples through the channels-last path (T is f32, the CPU has
/// AVX2), one task per (sample, block of channels), each accumulating its block over every
/// position in its own scratch and transposing it back to the planes, which must hold zeros.
/// Returns `false`, having done nothing, when those tasks are fewer than the threads (the
/// staged path then also splits the positions).
#[cfg(target_arch = "x86_64")]
fn input_grads_channels_last<T: Float, S: Source<T, 2>, const MODE: u8, const PAD: u8, const K: usize>(
    plan: &Plan<T, 2>,
    src: &S,
    grad_out: &[T],
    gin: &mut [T],
) -> bool {
    use crate::channels_last as cl;
    let cb = cl::backward_block(plan.c, K);
    if plan.n * plan.c.div_ceil(cb) < rayon::current_num_threads() {
        return false;
    }
    let scratch_len = (plan.in_plane + 1) * cb;
    let tasks: Vec<(usize, usize, &mut [T])> = gin
        .chunks_mut(plan.c * plan.in_plane)
        .enumerate()
        .flat_map(|(n, planes)| {
            planes.chunks_mut(cb * plan.in_plane).enumerate().map(move |(i, g)| (n, i * cb, g))
        })
        .collect();
    let slots = cl::Slots::new(rayon::current_num_threads(), scratch_len);
    let init = || ChannelsLastBackScratch::<T, K>::new(cb, &slots, false, true);
    tasks.into_par_iter().for_each_init(init, |st, (n, c0, g)| {
        // SAFETY: the caller checked AVX2 and that T is f32; the task's scratch has room for a
        // block; this task alone writes the block's planes `g`.
        unsafe {
            let scr = st.grad_input.as_ref().expect("allocated above").ptr;
            std::ptr::write_bytes(scr, 0, scratch_len);
            channels_last_backward_avx2::<T, S, MODE, PAD, K>(
                plan,
                src,
                grad_out,
                (n, c0, cb),
                (0, plan.out_plane),
                (std::ptr::null(), scr),
                st,
            );
            let c = g.len() / plan.in_plane;
            cl::transpose_out(scr, cb, c, g.as_mut_ptr() as *mut f32, plan.in_plane, 0, plan.in_plane);
        }
    });
    true
}

/// Positions `q0..q1` of one block of channels (`c0..c0 + cb`, or fewer) of sample `n` in the
/// channels-last backward: coordinate gradients added to `st.g` (chunk `i` of the range at
/// `st.g[i]`) if `in_scr` is not null, input-gradient adds into `gin_scr` if not null.
/// Compiled with AVX2 so that `build` is vectorized as in the staged path.
///
/// # Safety
/// AVX2 is available; T is f32; `in_scr` is null or the block's transposed input (with its row
/// of zeros); `gin_scr` is null or a block's input-gradient scratch, this thread's alone;
/// `st.g` holds the range's chunks where coordinate gradients are wanted.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn channels_last_backward_avx2<
    T: Float,
    S: Source<T, 2>,
    const MODE: u8,
    const PAD: u8,
    const K: usize,
>(
    plan: &Plan<T, 2>,
    src: &S,
    grad_out: &[T],
    (n, c0, cb): (usize, usize, usize),
    (q0, q1): (usize, usize),
    (in_scr, gin_scr): (*const f32, *mut f32),
    st: &mut ChannelsLastBackScratch<T, K>,
) {
    use crate::channels_last as cl;
    let c = cb.min(plan.c - c0);
    let coord_grads = !in_scr.is_null();
    let [ax, ay] = &plan.axes;
    let f = |x: &[[T; CHUNK]; K]| &*(x as *const [[T; CHUNK]; K] as *const [[f32; CHUNK]; K]);
    let mut no_g = [[0f32; CHUNK]; 2];
    let mut q = q0;
    while q < q1 {
        let len = CHUNK.min(q1 - q);
        src.coords(n, q, len, &mut st.xs);
        build::<T, MODE, PAD, K, true>(ax, ay, &st.xs[0], &st.xs[1], len, &mut st.taps, coord_grads);
        let target = cl::BackTarget {
            input: in_scr,
            grad_input: gin_scr,
            zero_row: plan.in_plane,
            c,
            grad_out: grad_out.as_ptr().add((n * plan.c + c0) * plan.out_plane + q) as *const f32,
            out_plane: plan.out_plane,
            tile: st.tile.as_mut_ptr(),
        };
        let t = &*st.taps;
        let dw = &*(&t.dw as *const [[[T; CHUNK]; K]; 2] as *const [[[f32; CHUNK]; K]; 2]);
        let g = if coord_grads {
            &mut *(&mut st.g[(q - q0) / CHUNK] as *mut [[T; CHUNK]; 2] as *mut [[f32; CHUNK]; 2])
        } else {
            &mut no_g
        };
        match cb {
            8 => cl::backward::<K, 1>(&t.o, f(&t.w), f(&t.m), dw, len, &target, g),
            16 => cl::backward::<K, 2>(&t.o, f(&t.w), f(&t.m), dw, len, &target, g),
            32 => cl::backward::<K, 4>(&t.o, f(&t.w), f(&t.m), dw, len, &target, g),
            _ => cl::backward::<K, 8>(&t.o, f(&t.w), f(&t.m), dw, len, &target, g),
        }
        q += len;
    }
}

/// Scratch of one backward task.
struct Scratch<T, const K: usize> {
    /// Taps, coordinates and coordinate gradients of the chunks of a run (the register-held
    /// path uses the first coordinates and gradients only).
    taps: Vec<Box<Taps<T, K>>>,
    xs: Vec<[[T; CHUNK]; 2]>,
    g: Vec<[[T; CHUNK]; 2]>,
}

impl<T: Float, const K: usize> Scratch<T, K> {
    fn new() -> Self {
        Scratch { taps: Vec::new(), xs: vec![[[T::ZERO; CHUNK]; 2]], g: vec![[[T::ZERO; CHUNK]; 2]] }
    }

    /// Room for `chunks` chunks.
    fn reserve(&mut self, chunks: usize) {
        while self.taps.len() < chunks {
            self.taps.push(Taps::new());
        }
        if self.xs.len() < chunks {
            self.xs.resize(chunks, [[T::ZERO; CHUNK]; 2]);
            self.g.resize(chunks, [[T::ZERO; CHUNK]; 2]);
        }
    }
}

/// One backward block: scatter into `gin` (the sample's input-gradient planes) if given,
/// coordinate gradients if `coord_grads`, handed to the source if `params`.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn backward_block<
    T: Float,
    S: Source<T, 2>,
    const MODE: u8,
    const PAD: u8,
    const K: usize,
    const SIMD: u8,
>(
    plan: &Plan<T, 2>,
    src: &S,
    input: &[T],
    grad_out: &[T],
    mut gin: Option<&mut [T]>,
    (n, p_begin, p_end): (usize, usize, usize),
    (coord_grads, params): (bool, bool),
    acc: &mut S::Acc,
    st: &mut Scratch<T, K>,
) {
    let [ax, ay] = &plan.axes;
    let fused = SIMD != PORTABLE && fused_applies::<T>(plan.c);
    if !fused {
        // Runs of up to `run_chunks(K)` chunks: taps built once, then channel by channel (each channel's
        // planes stay in cache for the whole run). Per element the sums keep their order:
        // input gradients chunk by chunk in each plane, coordinate gradients channel by channel.
        st.reserve(run_chunks(K));
        let mut p0 = p_begin;
        while p0 < p_end {
            let run_end = (p0 + run_chunks(K) * CHUNK).min(p_end);
            let (mut i, mut q) = (0, p0);
            while q < run_end {
                let len = CHUNK.min(run_end - q);
                src.coords(n, q, len, &mut st.xs[i]);
                let xs = &st.xs[i];
                build::<T, MODE, PAD, K, true>(ax, ay, &xs[0], &xs[1], len, &mut st.taps[i], coord_grads);
                for gd in st.g[i].iter_mut() {
                    gd[..len].fill(T::ZERO);
                }
                q += len;
                i += 1;
            }
            for c in 0..plan.c {
                let plane = &input[(n * plan.c + c) * plan.in_plane..][..plan.in_plane];
                let (mut i, mut q) = (0, p0);
                while q < run_end {
                    let len = CHUNK.min(run_end - q);
                    let t = &*st.taps[i];
                    let go = &grad_out[(n * plan.c + c) * plan.out_plane + q..][..len];
                    if let Some(gin) = gin.as_deref_mut() {
                        let gplane = &mut gin[c * plan.in_plane..][..plan.in_plane];
                        scatter::<T, K, SIMD>(t, gplane, go, len);
                    }
                    if coord_grads {
                        add_coord_grads::<T, K, SIMD>(t, plane, go, &mut st.g[i], len);
                    }
                    q += len;
                    i += 1;
                }
            }
            if params {
                let (mut i, mut q) = (0, p0);
                while q < run_end {
                    let len = CHUNK.min(run_end - q);
                    src.backward(n, q, len, &st.xs[i], &st.g[i], acc);
                    q += len;
                    i += 1;
                }
            }
            p0 = run_end;
        }
        return;
    }
    let mut p0 = p_begin;
    while p0 < p_end {
        let len = CHUNK.min(p_end - p0);
        src.coords(n, p0, len, &mut st.xs[0]);
        #[cfg(target_arch = "x86_64")]
        {
            // SAFETY: T is f32 (checked by `fused_applies`), so the casts are between identical
            // types; SIMD names a level detected at run time (AVX2 at least); the task owns `gin`.
            unsafe {
                let f = |a: &Axis<T>| &*(a as *const Axis<T> as *const Axis<f32>);
                let c = |x: &[T; CHUNK]| &*(x as *const [T; CHUNK] as *const [f32; CHUNK]);
                let planes = crate::fused::BackwardPlanes {
                    input: input.as_ptr().add(n * plan.c * plan.in_plane) as *const f32,
                    in_plane: plan.in_plane,
                    grad_out: grad_out.as_ptr().add(n * plan.c * plan.out_plane + p0) as *const f32,
                    out_plane: plan.out_plane,
                    grad_input: gin
                        .as_deref_mut()
                        .map_or(std::ptr::null_mut(), |g| g.as_mut_ptr() as *mut f32),
                    c: plan.c,
                };
                let g = &mut *(&mut st.g[0] as *mut [[T; CHUNK]; 2] as *mut [[f32; CHUNK]; 2]);
                let xs = &st.xs[0];
                crate::fused::backward::<MODE, PAD>(
                    f(ax),
                    f(ay),
                    c(&xs[0]),
                    c(&xs[1]),
                    len,
                    planes,
                    coord_grads,
                    g,
                );
            }
        }
        if params {
            src.backward(n, p0, len, &st.xs[0], &st.g[0], acc);
        }
        p0 += len;
    }
}

/// Adds this channel's share of d(loss)/d(coordinates) to `g`.
#[inline(always)]
fn add_coord_grads<T: Float, const K: usize, const SIMD: u8>(
    t: &Taps<T, K>,
    plane: &[T],
    go: &[T],
    g: &mut [[T; CHUNK]; 2],
    len: usize,
) {
    #[cfg(target_arch = "x86_64")]
    if SIMD != PORTABLE {
        use std::any::TypeId;
        // SAFETY: SIMD names a level detected at run time (AVX2 at least); offsets are clamped into the plane;
        // the casts are between identical types (TypeId checked).
        unsafe {
            if TypeId::of::<T>() == TypeId::of::<f32>() {
                let c = |x: &[[T; CHUNK]; K]| &*(x as *const [[T; CHUNK]; K] as *const [[f32; CHUNK]; K]);
                let dw = &*(&t.dw as *const [[[T; CHUNK]; K]; 2] as *const [[[f32; CHUNK]; K]; 2]);
                let go = std::slice::from_raw_parts(go.as_ptr() as *const f32, go.len());
                let g = &mut *(g as *mut [[T; CHUNK]; 2] as *mut [[f32; CHUNK]; 2]);
                return crate::simd::coord_grads_f32(
                    &t.o,
                    c(&t.m),
                    dw,
                    plane.as_ptr() as *const f32,
                    go,
                    g,
                    len,
                );
            }
            if TypeId::of::<T>() == TypeId::of::<f64>() {
                let c = |x: &[[T; CHUNK]; K]| &*(x as *const [[T; CHUNK]; K] as *const [[f64; CHUNK]; K]);
                let dw = &*(&t.dw as *const [[[T; CHUNK]; K]; 2] as *const [[[f64; CHUNK]; K]; 2]);
                let go = std::slice::from_raw_parts(go.as_ptr() as *const f64, go.len());
                let g = &mut *(g as *mut [[T; CHUNK]; 2] as *mut [[f64; CHUNK]; 2]);
                return crate::simd::coord_grads_f64(
                    &t.o,
                    c(&t.m),
                    dw,
                    plane.as_ptr() as *const f64,
                    go,
                    g,
                    len,
                );
            }
        }
    }
    // SAFETY: offsets are clamped into the plane.
    unsafe { coord_grads_tail(&t.o, &t.m, &t.dw, plane.as_ptr(), go, g, 0, len) }
}

/// Adds `g * w_k` to every valid tap, in groups of [`SCATTER_GROUP`] positions and within a
/// group tap by tap and position by position (the order the register-held path of
/// [`crate::fused`] keeps 8 positions in registers):
/// neighbouring positions hit neighbouring elements, so the read-modify-writes of one tap do
/// not wait on each other (position-major order chains them through memory). The order is
/// fixed, so the result does not depend on the thread count.
#[inline(always)]
fn scatter<T: Float, const K: usize, const SIMD: u8>(t: &Taps<T, K>, gplane: &mut [T], go: &[T], len: usize) {
    #[cfg(target_arch = "x86_64")]
    if SIMD != PORTABLE && std::any::TypeId::of::<T>() == std::any::TypeId::of::<f32>() {
        // SAFETY: SIMD names a level detected at run time (AVX2 at least); T is f32, so the
        // casts are between identical types; valid offsets index inside the plane, which this
        // task owns; `go` holds `len` values.
        unsafe {
            let c = |x: &[[T; CHUNK]; K]| &*(x as *const [[T; CHUNK]; K] as *const [[f32; CHUNK]; K]);
            let go = std::slice::from_raw_parts(go.as_ptr() as *const f32, len);
            return crate::simd::scatter_f32(
                &t.o,
                c(&t.w),
                c(&t.m),
                go,
                gplane.as_mut_ptr() as *mut f32,
                len,
            );
        }
    }
    let ptr = gplane.as_mut_ptr();
    for g0 in (0..len).step_by(SCATTER_GROUP) {
        let g1 = (g0 + SCATTER_GROUP).min(len);
        for k in 0..K {
            for p in g0..g1 {
                if t.m[k][p] != T::ZERO {
                    // SAFETY: valid offsets index inside the plane; this task owns the plane.
                    unsafe { *ptr.add(t.o[k][p] as usize) += t.w[k][p] * go[p] };
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn backward_block_avx2<T: Float, S: Source<T, 2>, const MODE: u8, const PAD: u8, const K: usize>(
    plan: &Plan<T, 2>,
    src: &S,
    input: &[T],
    grad_out: &[T],
    gin: Option<&mut [T]>,
    range: (usize, usize, usize),
    flags: (bool, bool),
    acc: &mut S::Acc,
    st: &mut Scratch<T, K>,
) {
    backward_block::<T, S, MODE, PAD, K, AVX2>(plan, src, input, grad_out, gin, range, flags, acc, st)
}

#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn run_backward_block<T: Float, S: Source<T, 2>, const MODE: u8, const PAD: u8, const K: usize>(
    avx2: bool,
    plan: &Plan<T, 2>,
    src: &S,
    input: &[T],
    grad_out: &[T],
    gin: Option<&mut [T]>,
    range: (usize, usize, usize),
    flags: (bool, bool),
    acc: &mut S::Acc,
    st: &mut Scratch<T, K>,
) {
    #[cfg(target_arch = "x86_64")]
    if avx2 {
        // SAFETY: AVX2 and FMA were detected at run time.
        unsafe {
            backward_block_avx2::<T, S, MODE, PAD, K>(plan, src, input, grad_out, gin, range, flags, acc, st)
        };
        return;
    }
    let _ = avx2;
    backward_block::<T, S, MODE, PAD, K, PORTABLE>(plan, src, input, grad_out, gin, range, flags, acc, st)
}

/// Backward pass of the fast path; same contract and accumulation order as `engine::backward`.
pub(crate) fn backward<T: Float, S: Source<T, 2>, const MODE: u8, const PAD: u8, const K: usize>(
    plan: &Plan<T, 2>,
    src: &S,
    input: &[T],
    grad_out: &[T],
    mut grad_input: Option<Vec<T>>,
    need_params: bool,
) -> BackwardOut<T, S::Acc> {
    let block = plan.block();
    let nb = plan.blocks_per_sample();
    let need_input = grad_input.is_some();
    let coord_grads = need_params && MODE != NEAREST;
    let avx2 = simd_level() != PORTABLE;
    let new_scratch = Scratch::<T, K>::new;
    let range = |n: usize, b: usize| (n, b * block, ((b + 1) * block).min(plan.out_plane));
    let mut accs: Vec<S::Acc> = Vec::new();
    let per_sample = need_input && plan.n >= 4;
    // The channels-last path (many channels, f32): per sample for many samples; for few, the
    // coordinate gradients from one shared transposed input and the input gradient per block
    // of channels, each where it applies.
    #[cfg(target_arch = "x86_64")]
    let cl_on = avx2 && channels_last_backward_applies::<T>(plan.c);
    #[cfg(not(target_arch = "x86_64"))]
    let cl_on = false;
    #[cfg(target_arch = "x86_64")]
    let cl_private = cl_on && channels_last_private_fits(plan.c, K, plan.in_plane);
    #[cfg(target_arch = "x86_64")]
    if cl_private && (per_sample || (need_params && plan.n >= rayon::current_num_threads())) {
        let accs = backward_channels_last::<T, S, MODE, PAD, K>(
            plan,
            src,
            input,
            grad_out,
            grad_input.as_deref_mut(),
            need_params,
        );
        return BackwardOut { grad_input, accs };
    }
    if need_params && !per_sample {
        #[cfg(target_arch = "x86_64")]
        if cl_on && coord_grads {
            if let Some(a) = coord_grads_channels_last::<T, S, MODE, PAD, K>(plan, src, input, grad_out) {
                accs = a;
            }
        }
    }
    if need_params && !per_sample && accs.is_empty() {
        accs = (0..plan.n * nb)
            .into_par_iter()
            .with_min_len(plan.min_blocks_per_task())
            .map_init(new_scratch, |st, u| {
                let (n, b) = (u / nb, u % nb);
                let mut acc = src.new_acc();
                run_backward_block::<T, S, MODE, PAD, K>(
                    avx2,
                    plan,
                    src,
                    input,
                    grad_out,
                    None,
                    range(n, b),
                    (coord_grads, true),
                    &mut acc,
                    st,
                );
                acc
            })
            .collect();
    }
    if per_sample {
        let gin = grad_input.as_mut().expect("per_sample implies need_input");
        let per_n: Vec<Vec<S::Acc>> = gin
            .par_chunks_mut(plan.c * plan.in_plane)
            .enumerate()
            .map_init(new_scratch, |st, (n, gin_n)| {
                let mut out = Vec::new();
                for b in 0..nb {
                    let mut acc = src.new_acc();
                    run_backward_block::<T, S, MODE, PAD, K>(
                        avx2,
                        plan,
                        src,
                        input,
                        grad_out,
                        Some(&mut *gin_n),
                        range(n, b),
                        (coord_grads, need_params),
                        &mut acc,
                        st,
                    );
                    if need_params {
                        out.push(acc);
                    }
                }
                out
            })
            .collect();
        if need_params {
            accs = per_n.into_iter().flatten().collect();
        }
    } else if let Some(gin) = grad_input.as_mut() {
        #[cfg(target_arch = "x86_64")]
        if cl_private && input_grads_channels_last::<T, S, MODE, PAD, K>(plan, src, grad_out, gin) {
            return BackwardOut { grad_input, accs };
        }
        // Few samples: one task per (sample, channel group), positions in order.
        let plane_len = plan.in_plane;
        crate::engine::few_samples_scatter(
            gin,
            plan.n,
            plan.c,
            plane_len,
            plan.out_plane,
            |n, c0, range, gin_g| {
                let nc = gin_g.len() / plane_len;
                let mut st = new_scratch();
                run_group::<T, S, MODE, PAD, K>(
                    avx2,
                    plan,
                    src,
                    (input, grad_out, gin_g),
                    (n, c0, nc),
                    range,
                    &mut st,
                );
            },
        );
    }
    BackwardOut { grad_input, accs }
}

/// Input-gradient scatter of channels `c0 .. c0 + nc` of sample `n`, positions `p_begin .. p_end`.
fn run_group<T: Float, S: Source<T, 2>, const MODE: u8, const PAD: u8, const K: usize>(
    avx2: bool,
    plan: &Plan<T, 2>,
    src: &S,
    (input, grad_out, gin_g): (&[T], &[T], &mut [T]),
    (n, c0, nc): (usize, usize, usize),
    (p_begin, p_end): (usize, usize),
    st: &mut Scratch<T, K>,
) {
    // This sample's group of channels, seen as a one-sample problem.
    let one = Plan { n: 1, c: nc, ..*plan };
    let input_g = &input[(n * plan.c + c0) * plan.in_plane..][..nc * plan.in_plane];
    let go_g = &grad_out[(n * plan.c + c0) * plan.out_plane..][..nc * plan.out_plane];
    let nsrc = NthSample { inner: src, n };
    run_backward_block::<T, NthSample<'_, S>, MODE, PAD, K>(
        avx2,
        &one,
        &nsrc,
        input_g,
        go_g,
        Some(gin_g),
        (0, p_begin, p_end),
        (false, false),
        &mut (),
        st,
    );
}

/// A source restricted to sample `n`, seen as sample 0.
struct NthSample<'a, S> {
    inner: &'a S,
    n: usize,
}

impl<T: Float, S: Source<T, 2>> Source<T, 2> for NthSample<'_, S> {
    type Acc = ();
    fn new_acc(&self) {}
    #[inline(always)]
    fn coords(&self, _n: usize, p0: usize, len: usize, xs: &mut [[T; CHUNK]; 2]) {
        self.inner.coords(self.n, p0, len, xs)
    }
    fn backward(&self, _: usize, _: usize, _: usize, _: &[[T; CHUNK]; 2], _: &[[T; CHUNK]; 2], _: &mut ()) {}
}

/// The portable loop of the coordinate gradients, positions `from .. len`.
///
/// # Safety
/// Every offset indexes inside the plane (offsets are clamped).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn coord_grads_tail<T: crate::float::Float, const K: usize>(
    o: &[[i32; CHUNK]; K],
    m: &[[T; CHUNK]; K],
    dw: &[[[T; CHUNK]; K]; 2],
    plane: *const T,
    go: &[T],
    g: &mut [[T; CHUNK]; 2],
    from: usize,
    len: usize,
) {
    for p in from..len {
        let mut vals = [T::ZERO; K];
        for k in 0..K {
            let raw = *plane.add(o[k][p] as usize);
            vals[k] = if m[k][p] != T::ZERO { raw } else { T::ZERO };
        }
        for d in 0..2 {
            let mut s = vals[0] * dw[d][0][p];
            for k in 1..K {
                s += vals[k] * dw[d][k][p];
            }
            g[d][p] += s * go[p];
        }
    }
}
