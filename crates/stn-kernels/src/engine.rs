//! The sampling engine: one generic forward and backward over any source of sample points
//! (a grid, an affine or projective matrix, a thin-plate spline), any interpolation and padding.
//!
//! Work is split into fixed blocks of output positions of one sample, independent of the
//! thread count. Every gradient element is accumulated in the same order whatever the
//! schedule (input gradients in ascending output position, in groups of [`SCATTER_GROUP`]
//! positions tap by tap; for one sample of one channel, two halves added in order; parameter
//! gradients per block and then block by block), so results are bitwise identical for any
//! number of threads.

use rayon::prelude::*;

use crate::coords::{axis_taps, Axis, AxisTaps};
use crate::float::Float;

/// Output positions handled together: coordinates and taps are computed for a chunk,
/// then reused for every channel.
pub(crate) const CHUNK: usize = 64;

/// Positions whose input-gradient contributions are added together, tap by tap: every path
/// (generic, staged, register-held) adds in this order, so they agree bit for bit.
pub(crate) const SCATTER_GROUP: usize = 8;

/// Where the sample points come from. Coordinates are input pixel coordinates before padding.
pub(crate) trait Source<T: Float, const D: usize>: Sync {
    /// Per-block partial sums of the parameter gradient.
    type Acc: Send;
    /// A zeroed accumulator.
    fn new_acc(&self) -> Self::Acc;
    /// Pixel coordinates of output positions `p0 .. p0 + len` of sample `n`, per axis (x, y, z).
    fn coords(&self, n: usize, p0: usize, len: usize, xs: &mut [[T; CHUNK]; D]);
    /// Takes d(loss)/d(pixel coordinate) of those positions.
    fn backward(
        &self,
        n: usize,
        p0: usize,
        len: usize,
        xs: &[[T; CHUNK]; D],
        g: &[[T; CHUNK]; D],
        acc: &mut Self::Acc,
    );
}

/// Sizes of one sampling problem.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Plan<T, const D: usize> {
    pub n: usize,
    pub c: usize,
    /// Input axes in (x, y, z) order.
    pub axes: [Axis<T>; D],
    /// Elements of one input channel plane.
    pub in_plane: usize,
    /// Output positions per sample (one output channel plane).
    pub out_plane: usize,
}

impl<T: Float, const D: usize> Plan<T, D> {
    /// Output positions per block: about 32K multiply-adds of work, a multiple of [`CHUNK`].
    pub fn block(&self) -> usize {
        let per_pos = self.c.max(1);
        let b = (32768 / per_pos).max(CHUNK);
        b.div_ceil(CHUNK) * CHUNK
    }
    pub fn blocks_per_sample(&self) -> usize {
        self.out_plane.div_ceil(self.block())
    }
    /// Blocks a parallel task takes at least, so that small blocks (small images) are
    /// scheduled in groups of about a block's worth of work. Scheduling only: results never
    /// depend on it.
    pub fn min_blocks_per_task(&self) -> usize {
        let per_block = self.block().min(self.out_plane) * self.c.max(1);
        (32768 / per_block.max(1)).max(1)
    }
}

/// A raw pointer that may cross threads; every use writes a region no other task touches.
#[derive(Clone, Copy)]
pub(crate) struct SyncPtr<T>(pub *mut T);
unsafe impl<T: Send> Send for SyncPtr<T> {}
unsafe impl<T: Send> Sync for SyncPtr<T> {}

impl<T> SyncPtr<T> {
    /// # Safety
    /// `i` is in bounds of the buffer and no other thread accesses element `i` meanwhile.
    #[inline(always)]
    pub unsafe fn at(self, i: usize) -> *mut T {
        self.0.add(i)
    }
}

/// Taps of a chunk of output positions: `K` per position (offset, weight, derivatives, mask).
struct ChunkTaps<T, const D: usize, const K: usize> {
    off: Vec<[usize; K]>,
    w: Vec<[T; K]>,
    dw: Vec<[[T; K]; D]>,
    mask: Vec<u32>,
}

impl<T: Float, const D: usize, const K: usize> ChunkTaps<T, D, K> {
    fn new(with_derivatives: bool) -> Self {
        Self {
            off: vec![[0; K]; CHUNK],
            w: vec![[T::ZERO; K]; CHUNK],
            dw: if with_derivatives { vec![[[T::ZERO; K]; D]; CHUNK] } else { Vec::new() },
            mask: vec![0; CHUNK],
        }
    }
}

const fn full_mask(k: usize) -> u32 {
    if k >= 32 {
        u32::MAX
    } else {
        (1u32 << k) - 1
    }
}

/// Combines per-axis taps into the `K = P^D` taps of a point (x fastest, PyTorch's order).
#[inline(always)]
fn point_taps<T: Float, const D: usize, const P: usize, const K: usize, const PAD: u8, const BWD: bool>(
    x: [T; D],
    axes: &[Axis<T>; D],
    off: &mut [usize; K],
    w: &mut [T; K],
    dw: Option<&mut [[T; K]; D]>,
) -> u32 {
    let d3 = D == 3;
    let at: [AxisTaps<T, P>; D] = std::array::from_fn(|d| {
        if d3 {
            axis_taps::<T, P, PAD, true, BWD>(x[d], &axes[d])
        } else {
            axis_taps::<T, P, PAD, false, BWD>(x[d], &axes[d])
        }
    });
    let mut mask = 0u32;
    for k in 0..K {
        let mut idx = [0usize; D];
        let mut rem = k;
        for i in idx.iter_mut() {
            *i = rem % P;
            rem /= P;
        }
        let mut o = 0usize;
        let mut wk = T::ONE;
        let mut valid = true;
        for d in (0..D).rev() {
            o += at[d].off[idx[d]];
            wk = if d == D - 1 { at[d].w[idx[d]] } else { wk * at[d].w[idx[d]] };
            valid &= at[d].valid[idx[d]];
        }
        off[k] = o;
        w[k] = wk;
        if valid {
            mask |= 1 << k;
        }
    }
    if let Some(dw) = dw {
        for (dd, dwd) in dw.iter_mut().enumerate() {
            for (k, dwk) in dwd.iter_mut().enumerate() {
                let mut rem = k;
                let mut idx = [0usize; D];
                for i in idx.iter_mut() {
                    *i = rem % P;
                    rem /= P;
                }
                let mut v = T::ONE;
                for d in (0..D).rev() {
                    let f = if d == dd { at[d].dw[idx[d]] } else { at[d].w[idx[d]] };
                    v = if d == D - 1 { f } else { v * f };
                }
                *dwk = v;
            }
        }
    }
    mask
}

/// The interpolated value of one point in one channel plane.
#[inline(always)]
fn gather<T: Float, const K: usize>(plane: &[T], off: &[usize; K], w: &[T; K], mask: u32) -> T {
    // SAFETY (both branches): offsets of valid taps index inside the plane, invalid ones are 0.
    if K == 1 {
        return if mask & 1 != 0 { unsafe { *plane.get_unchecked(off[0]) } } else { T::ZERO };
    }
    if mask == full_mask(K) {
        let mut acc = w[0] * unsafe { *plane.get_unchecked(off[0]) };
        for k in 1..K {
            acc += w[k] * unsafe { *plane.get_unchecked(off[k]) };
        }
        acc
    } else {
        // A tap outside reads as 0 and is still multiplied by its weight (PyTorch's masked gather).
        let mut acc = T::ZERO;
        for k in 0..K {
            let v = if mask >> k & 1 != 0 { unsafe { *plane.get_unchecked(off[k]) } } else { T::ZERO };
            acc = if k == 0 { w[k] * v } else { acc + w[k] * v };
        }
        acc
    }
}

/// Forward pass: `out` has shape (N, C, out_plane), fully overwritten.
pub(crate) fn forward<
    T: Float,
    S: Source<T, D>,
    const D: usize,
    const P: usize,
    const K: usize,
    const PAD: u8,
>(
    plan: &Plan<T, D>,
    src: &S,
    input: &[T],
    out: &mut [T],
) {
    let block = plan.block();
    let nb = plan.blocks_per_sample();
    let outp = SyncPtr(out.as_mut_ptr());
    (0..plan.n * nb).into_par_iter().for_each(|u| {
        let (n, b) = (u / nb, u % nb);
        let p_begin = b * block;
        let p_end = (p_begin + block).min(plan.out_plane);
        let mut taps = ChunkTaps::<T, D, K>::new(false);
        let mut xs = [[T::ZERO; CHUNK]; D];
        let mut p0 = p_begin;
        while p0 < p_end {
            let len = CHUNK.min(p_end - p0);
            src.coords(n, p0, len, &mut xs);
            for i in 0..len {
                let x: [T; D] = std::array::from_fn(|d| xs[d][i]);
                taps.mask[i] = point_taps::<T, D, P, K, PAD, false>(
                    x,
                    &plan.axes,
                    &mut taps.off[i],
                    &mut taps.w[i],
                    None,
                );
            }
            for c in 0..plan.c {
                let plane = &input[(n * plan.c + c) * plan.in_plane..][..plan.in_plane];
                let base = (n * plan.c + c) * plan.out_plane + p0;
                for i in 0..len {
                    let v = gather::<T, K>(plane, &taps.off[i], &taps.w[i], taps.mask[i]);
                    // SAFETY: block (n, b) alone writes positions p_begin..p_end of sample n.
                    unsafe { *outp.at(base + i) = v };
                }
            }
            p0 += len;
        }
    });
}

/// What a backward pass produces besides the input gradient: the parameter partial sums,
/// one per (sample, block), in order.
pub(crate) struct BackwardOut<T, A> {
    pub grad_input: Option<Vec<T>>,
    pub accs: Vec<A>,
}

/// Backward pass. `grad_out` has shape (N, C, out_plane). Returns the input gradient if
/// `need_input`, and per-block parameter accumulators (fed through `src.backward`) if `need_params`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn backward<
    T: Float,
    S: Source<T, D>,
    const D: usize,
    const P: usize,
    const K: usize,
    const PAD: u8,
>(
    plan: &Plan<T, D>,
    src: &S,
    input: &[T],
    grad_out: &[T],
    mut grad_input: Option<Vec<T>>,
    need_params: bool,
) -> BackwardOut<T, S::Acc> {
    let block = plan.block();
    let nb = plan.blocks_per_sample();
    let need_input = grad_input.is_some();
    // Nearest has no gradient to the coordinates: skip that work, the source sees zeros.
    let coord_grads = need_params && P > 1;
    let mut accs: Vec<S::Acc> = Vec::new();

    let per_sample = need_input && plan.n >= 4;
    if need_params && !per_sample {
        accs = (0..plan.n * nb)
            .into_par_iter()
            .map(|u| {
                let (n, b) = (u / nb, u % nb);
                let mut acc = src.new_acc();
                let mut st = State::<T, D, K>::new(coord_grads);
                st.run_block::<S, P, PAD>(
                    plan,
                    src,
                    input,
                    grad_out,
                    None,
                    (n, b, block),
                    (coord_grads, true),
                    &mut acc,
                );
                acc
            })
            .collect();
    }
    if per_sample {
        // One task per sample: it owns that sample's input-gradient planes.
        let gin = grad_input.as_mut().expect("per_sample implies need_input");
        let chunk = plan.c * plan.in_plane;
        let per_n: Vec<Vec<S::Acc>> = gin
            .par_chunks_mut(chunk)
            .enumerate()
            .map(|(n, gin_n)| {
                let mut st = State::<T, D, K>::new(coord_grads);
                let mut out = Vec::new();
                for b in 0..nb {
                    let mut acc = src.new_acc();
                    st.run_block::<S, P, PAD>(
                        plan,
                        src,
                        input,
                        grad_out,
                        Some(&mut *gin_n),
                        (n, b, block),
                        (coord_grads, need_params),
                        &mut acc,
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
        // Few samples: tasks of (sample, channel group, band of positions).
        let plane_len = plan.in_plane;
        let c = plan.c;
        few_samples_scatter(gin, plan.n, c, plane_len, plan.out_plane, |n, c0, (p_begin, p_end), gin_g| {
            let nc = gin_g.len() / plane_len;
            let mut taps = ChunkTaps::<T, D, K>::new(false);
            let mut xs = [[T::ZERO; CHUNK]; D];
            let mut p0 = p_begin;
            while p0 < p_end {
                let len = CHUNK.min(p_end - p0);
                src.coords(n, p0, len, &mut xs);
                for i in 0..len {
                    let x: [T; D] = std::array::from_fn(|d| xs[d][i]);
                    taps.mask[i] = point_taps::<T, D, P, K, PAD, true>(
                        x,
                        &plan.axes,
                        &mut taps.off[i],
                        &mut taps.w[i],
                        None,
                    );
                }
                for cc in 0..nc {
                    let go = &grad_out[(n * c + c0 + cc) * plan.out_plane + p0..][..len];
                    let gplane = &mut gin_g[cc * plane_len..][..plane_len];
                    scatter_chunk(gplane, &taps, go);
                }
                p0 += len;
            }
        });
    }
    BackwardOut { grad_input, accs }
}

/// The input gradient of few samples (fewer than 4), filling every core:
///
/// - Chains of (sample, group of channels), each split into bands of output positions. A
///   chain's bands run one after another, in order, so every sum has the order of one pass
///   over all positions (the order of the many-samples path) and no memory is added; the
///   chains run side by side, each worker taking the free chain with the most bands left, so
///   3 channels keep 2 cores busy to the end.
/// - One chain (one sample of one channel): two bands scatter at once, the second into private
///   planes that are then added, in order (one plane more of memory).
///
/// `run(n, first channel, positions, planes)` scatters positions `positions` of sample `n` into
/// `planes` (that group's input-gradient planes). The result is the same for any thread count.
pub(crate) fn few_samples_scatter<T: Float>(
    gin: &mut [T],
    n: usize,
    c: usize,
    plane_len: usize,
    out_plane: usize,
    run: impl Fn(usize, usize, (usize, usize), &mut [T]) + Sync,
) {
    let groups = c.min(8usize.div_ceil(n)).max(1);
    let per_group = c.div_ceil(groups);
    let chains = n * c.div_ceil(per_group);
    if chains == 1 && out_plane >= 8 * CHUNK {
        let half = out_plane.div_ceil(2).div_ceil(CHUNK) * CHUNK;
        let mut second = vec![T::ZERO; gin.len()];
        rayon::join(|| run(0, 0, (0, half), &mut gin[..]), || run(0, 0, (half, out_plane), &mut second[..]));
        const PART: usize = 1 << 14;
        gin.par_chunks_mut(PART).zip(second.par_chunks(PART)).for_each(|(g, s)| {
            for (g, v) in g.iter_mut().zip(s) {
                *g += *v;
            }
        });
        return;
    }
    // Bands: about 4 per chain and core (a core count of 8 assumed; scheduling only).
    let bands = (32usize.div_ceil(chains)).min((out_plane / (4 * CHUNK)).max(1));
    let per_band = out_plane.div_ceil(bands).div_ceil(CHUNK) * CHUNK;
    let bands = out_plane.div_ceil(per_band).max(1);
    struct Chain<'a, T> {
        n: usize,
        c0: usize,
        next: usize,
        planes: &'a mut [T],
    }
    let chains: Vec<std::sync::Mutex<Chain<'_, T>>> = gin
        .chunks_mut(c * plane_len)
        .enumerate()
        .flat_map(|(s, planes)| {
            planes.chunks_mut(per_group * plane_len).enumerate().map(move |(g, group)| {
                std::sync::Mutex::new(Chain { n: s, c0: g * per_group, next: 0, planes: group })
            })
        })
        .collect();
    let left = std::sync::atomic::AtomicUsize::new(chains.len() * bands);
    let workers = rayon::current_num_threads().min(chains.len() * bands).max(1);
    (0..workers).into_par_iter().for_each(|_| loop {
        if left.load(std::sync::atomic::Ordering::Acquire) == 0 {
            return;
        }
        // The free chain with the most bands left (ties: the first).
        let mut best: Option<std::sync::MutexGuard<'_, Chain<'_, T>>> = None;
        for ch in &chains {
            if let Ok(g) = ch.try_lock() {
                if g.next < bands && best.as_ref().is_none_or(|b| g.next < b.next) {
                    best = Some(g);
                }
            }
        }
        match best {
            Some(mut g) => {
                let b = g.next;
                let range = (b * per_band, ((b + 1) * per_band).min(out_plane));
                let (s, c0) = (g.n, g.c0);
                run(s, c0, range, &mut *g.planes);
                g.next += 1;
                left.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
            }
            None => std::thread::yield_now(),
        }
    });
}

/// Adds `g * w_k` to every valid tap of positions 0..len: in groups of [`SCATTER_GROUP`]
/// positions, and within a group tap by tap, position by position (the fixed order of the
/// fast paths too).
#[inline(always)]
fn scatter_chunk<T: Float, const D: usize, const K: usize>(
    plane: &mut [T],
    taps: &ChunkTaps<T, D, K>,
    go: &[T],
) {
    for g0 in (0..go.len()).step_by(SCATTER_GROUP) {
        let g1 = (g0 + SCATTER_GROUP).min(go.len());
        for k in 0..K {
            for i in g0..g1 {
                if taps.mask[i] >> k & 1 != 0 {
                    // SAFETY: offsets of valid taps index inside the plane.
                    unsafe { *plane.get_unchecked_mut(taps.off[i][k]) += taps.w[i][k] * go[i] };
                }
            }
        }
    }
}

/// Scratch of one backward task.
struct State<T, const D: usize, const K: usize> {
    taps: ChunkTaps<T, D, K>,
    xs: [[T; CHUNK]; D],
    g: [[T; CHUNK]; D],
}

impl<T: Float, const D: usize, const K: usize> State<T, D, K> {
    fn new(coord_grads: bool) -> Self {
        Self { taps: ChunkTaps::new(coord_grads), xs: [[T::ZERO; CHUNK]; D], g: [[T::ZERO; CHUNK]; D] }
    }

    /// One block of one sample: input-gradient scatter (if `gin`), coordinate gradients
    /// (if `coord_grads`), handed to the source chunk by chunk (if `params`).
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn run_block<S: Source<T, D>, const P: usize, const PAD: u8>(
        &mut self,
        plan: &Plan<T, D>,
        src: &S,
        input: &[T],
        grad_out: &[T],
        mut gin: Option<&mut [T]>,
        (n, b, block): (usize, usize, usize),
        (coord_grads, params): (bool, bool),
        acc: &mut S::Acc,
    ) {
        let p_begin = b * block;
        let p_end = (p_begin + block).min(plan.out_plane);
        let mut p0 = p_begin;
        while p0 < p_end {
            let len = CHUNK.min(p_end - p0);
            src.coords(n, p0, len, &mut self.xs);
            let taps = &mut self.taps;
            for i in 0..len {
                let x: [T; D] = std::array::from_fn(|d| self.xs[d][i]);
                let dw = if coord_grads { Some(&mut taps.dw[i]) } else { None };
                taps.mask[i] =
                    point_taps::<T, D, P, K, PAD, true>(x, &plan.axes, &mut taps.off[i], &mut taps.w[i], dw);
            }
            for gd in self.g.iter_mut() {
                gd[..len].fill(T::ZERO);
            }
            for c in 0..plan.c {
                let plane = &input[(n * plan.c + c) * plan.in_plane..][..plan.in_plane];
                let go = &grad_out[(n * plan.c + c) * plan.out_plane + p0..][..len];
                if let Some(gin) = gin.as_deref_mut() {
                    let gplane = &mut gin[c * plan.in_plane..][..plan.in_plane];
                    scatter_chunk(gplane, taps, go);
                }
                if coord_grads {
                    for i in 0..len {
                        let (off, dw, mask) = (&taps.off[i], &taps.dw[i], taps.mask[i]);
                        let mut vals = [T::ZERO; K];
                        for k in 0..K {
                            if mask >> k & 1 != 0 {
                                // SAFETY: valid offsets index inside the plane.
                                vals[k] = unsafe { *plane.get_unchecked(off[k]) };
                            }
                        }
                        for d in 0..D {
                            let mut s = vals[0] * dw[d][0];
                            for k in 1..K {
                                s += vals[k] * dw[d][k];
                            }
                            self.g[d][i] += s * go[i];
                        }
                    }
                }
            }
            if params {
                src.backward(n, p0, len, &self.xs, &self.g, acc);
            }
            p0 += len;
        }
    }
}
