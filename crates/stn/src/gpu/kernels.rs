//! The CubeCL kernels of the GPU path (f32). One thread per output position (looping over the
//! channels) for sampling; the input gradient accumulates in 64-bit fixed point with integer
//! atomics, so its bits never depend on the order in which threads arrive; every other
//! reduction runs in a fixed order (per-chunk partial sums, then the chunks in order).
//!
//! Layouts shared with `super`:
//! - `consts` (f32, [`CONSTS_LEN`]): per input axis `d` (x, y, z) at `8 * d`: size, size - 1,
//!   un-normalization scale, shift, reflection low, reflection twice-span, empty (0/1); the
//!   output index offset `h` at [`C_OUT_H`]; the transform constants (see
//!   [`stn_kernels::PixelMap`]) at [`C_RATIO`] (3x3), [`C_SCALE`], [`C_OFFSET`], [`C_OUT_A`],
//!   [`C_OUT_B`]; the positions per sample at [`C_POSITIONS`].
//! - `coefs` (N, 16 [+ 2K]): the row-major 4x4 coefficients `G` of each sample (pixel or
//!   normalized space), then for a spline the K x then K y displacements.
//! - `basis` (positions, K): the spline basis.

// Kernel code: `old + lo < old` is the carry of a 32-bit add, which wraps on the device by
// design; a comptime branch (`if comptime!(..)`) cannot merge with a runtime one.
#![allow(clippy::panicking_overflow_checks, clippy::collapsible_if)]

use cubecl::prelude::*;

/// Source of the sample points: a grid tensor.
pub const SRC_GRID: u32 = 0;
/// Source: affine matrices.
pub const SRC_AFFINE: u32 = 1;
/// Source: homographies.
pub const SRC_PROJ: u32 = 2;
/// Source: a thin-plate spline.
pub const SRC_TPS: u32 = 3;

/// Nearest-neighbour sampling.
pub const MODE_NEAREST: u32 = 0;
/// Bilinear / trilinear sampling.
pub const MODE_LINEAR: u32 = 1;
/// Bicubic sampling.
pub const MODE_CUBIC: u32 = 2;

/// Zeros padding.
pub const PAD_ZEROS: u32 = 0;
/// Border padding.
pub const PAD_BORDER: u32 = 1;
/// Reflection padding.
pub const PAD_REFLECT: u32 = 2;

/// Output index offset.
pub const C_OUT_H: usize = 24;
/// `ratio[d][e]` at `C_RATIO + 3 * d + e`.
pub const C_RATIO: usize = 32;
/// Input scale per axis.
pub const C_SCALE: usize = 41;
/// Input offset per axis.
pub const C_OFFSET: usize = 44;
/// Output slope per axis.
pub const C_OUT_A: usize = 47;
/// Output intercept per axis.
pub const C_OUT_B: usize = 50;
/// Positions per sample (for the fixed-point range).
pub const C_POSITIONS: usize = 53;
/// Length of `consts`.
pub const CONSTS_LEN: usize = 56;

/// Positions per thread in the chunked reductions.
pub const CHUNK: usize = 256;
/// Elements per thread in the max-magnitude reduction.
pub const MAX_CHUNK: usize = 4096;

const TWO_P32: f32 = 4294967296.0;
const TWO_M32: f32 = 1.0 / 4294967296.0;

// ---------------------------------------------------------------- per-axis math

#[cube]
fn axc<F: Float>(consts: &Tensor<F>, #[comptime] d: usize, #[comptime] f: usize) -> F {
    consts[comptime!(d * 8 + f)]
}

/// Clip to [0, size - 1]; NaN becomes 0.
#[cube]
fn clip<F: Float>(x: F, maxv: F) -> F {
    let lo = select(x > F::new(0.0), x, F::new(0.0));
    select(lo < maxv, lo, maxv)
}

#[cube]
fn reflect<F: Float>(x: F, consts: &Tensor<F>, #[comptime] d: usize) -> F {
    let low = axc(consts, d, 4usize);
    let twice = axc(consts, d, 5usize);
    let a = (x - low).abs();
    let extra = a - (a / twice).trunc() * twice;
    let other = twice - extra;
    let r = select(other < extra, other, extra) + low;
    select(axc(consts, d, 6usize) > F::new(0.5), F::new(0.0), r)
}

/// The padded coordinate (forward).
#[cube]
fn pad_fwd<F: Float>(x: F, consts: &Tensor<F>, #[comptime] d: usize, #[comptime] pad: u32) -> F {
    if comptime!(pad == PAD_BORDER) {
        clip::<F>(x, axc(consts, d, 1usize))
    } else if comptime!(pad == PAD_REFLECT) {
        clip::<F>(reflect(x, consts, d), axc(consts, d, 1usize))
    } else {
        x
    }
}

/// The padded coordinate and d(padded)/d(x).
#[cube]
fn pad_grad<F: Float>(x: F, consts: &Tensor<F>, #[comptime] d: usize, #[comptime] pad: u32) -> (F, F) {
    let maxv = axc(consts, d, 1usize);
    let one = F::new(1.0);
    let zero = F::new(0.0);
    let mut r = x;
    let mut g = one;
    if comptime!(pad == PAD_REFLECT) {
        let low = axc(consts, d, 4usize);
        let twice = axc(consts, d, 5usize);
        let dd = x - low;
        let a = dd.abs();
        let extra = a - (a / twice).trunc() * twice;
        let other = twice - extra;
        let flip = extra > other;
        let sgn = select(dd < zero, -one, one);
        let empty = axc(consts, d, 6usize) > F::new(0.5);
        r = select(empty, zero, select(flip, other, extra) + low);
        g = select(empty, zero, select(flip, -sgn, sgn));
    }
    if comptime!(pad != PAD_ZEROS) {
        let below = r <= zero;
        let above = r >= maxv;
        g = select(below || above, zero, g);
        r = select(below, zero, select(above, maxv, r));
    }
    (r, g)
}

/// Whether the integral float `i` indexes inside axis `d` (false for NaN).
#[cube]
fn inside<F: Float>(i: F, consts: &Tensor<F>, #[comptime] d: usize) -> bool {
    i > F::new(-1.0) && i < axc(consts, d, 0usize)
}

/// The element index of an integral float, 0 where not `ok`.
#[cube]
fn index<F: Float>(ok: bool, i: F) -> usize {
    let v = select(ok, i, F::new(0.0));
    u32::cast_from(v) as usize
}

/// Keys cubic weights of the taps at -1, 0, 1, 2 for the fraction `s` (A = -0.75).
#[cube]
fn cubic_w<F: Float>(s: F) -> (F, F, F, F) {
    let a = F::new(-0.75);
    let one = F::new(1.0);
    let x0 = s + one;
    let w0 = ((a * x0 - F::new(5.0) * a) * x0 + F::new(8.0) * a) * x0 - F::new(4.0) * a;
    let w1 = ((a + F::new(2.0)) * s - (a + F::new(3.0))) * s * s + one;
    let x2 = one - s;
    let w2 = ((a + F::new(2.0)) * x2 - (a + F::new(3.0))) * x2 * x2 + one;
    let x3 = F::new(2.0) - s;
    let w3 = ((a * x3 - F::new(5.0) * a) * x3 + F::new(8.0) * a) * x3 - F::new(4.0) * a;
    (w0, w1, w2, w3)
}

/// d(weight)/d(s) of [`cubic_w`].
#[cube]
fn cubic_dw<F: Float>(s: F) -> (F, F, F, F) {
    let a = F::new(-0.75);
    let one = F::new(1.0);
    let two = F::new(2.0);
    let three = F::new(3.0);
    let eight = F::new(8.0);
    let ten = F::new(10.0);
    let x0 = -one - s;
    let g0 = (-three * a * x0 - ten * a) * x0 - eight * a;
    let x1 = -s;
    let g1 = (-three * (a + two) * x1 - two * (a + three)) * x1;
    let x2 = one - s;
    let g2 = (three * (a + two) * x2 - two * (a + three)) * x2;
    let x3 = two - s;
    let g3 = (three * a * x3 - ten * a) * x3 + eight * a;
    (-g0, -g1, -g2, -g3)
}

/// A cubic tap `k` (0..4) of axis `d` from the floor `x0`: (inside, element index).
#[cube]
fn cubic_tap<F: Float>(
    x0: F,
    consts: &Tensor<F>,
    #[comptime] k: u32,
    #[comptime] d: usize,
    #[comptime] pad: u32,
) -> (bool, usize) {
    let q = pad_fwd(x0 + F::new(comptime!(k as f32 - 1.0)), consts, d, pad).trunc();
    let ok = inside(q, consts, d);
    (ok, index::<F>(ok, q))
}

/// Number of elements of `t` by its shape (the buffer may be larger).
#[cube]
fn numel<F: Float>(t: &Tensor<F>) -> usize {
    let mut n = 1usize;
    for r in 0..t.rank() {
        n *= t.shape(r);
    }
    n
}

/// [`numel`] of an output.
#[cube]
fn numel_mut<F: Float>(t: &mut Tensor<F>) -> usize {
    let mut n = 1usize;
    for r in 0..t.rank() {
        n *= t.shape(r);
    }
    n
}

// ---------------------------------------------------------------- sample points

/// Pixel (or normalized, with normalized constants) coordinates of 2-D output position
/// (n, i, j) = p.
#[cube]
fn coords2<F: Float>(
    src: &Tensor<F>,
    coefs: &Tensor<F>,
    basis: &Tensor<F>,
    consts: &Tensor<F>,
    n: usize,
    i: usize,
    j: usize,
    p: usize,
    #[comptime] kind: u32,
) -> (F, F) {
    let one = F::new(1.0);
    if comptime!(kind == SRC_GRID) {
        let o = n * src.stride(0) + i * src.stride(1) + j * src.stride(2);
        let gx = src[o];
        let gy = src[o + src.stride(3)];
        let x = (gx + one) * axc(consts, 0usize, 2usize) - axc(consts, 0usize, 3usize);
        let y = (gy + one) * axc(consts, 1usize, 2usize) - axc(consts, 1usize, 3usize);
        (x, y)
    } else {
        let c = n * coefs.stride(0);
        let h = consts[C_OUT_H];
        let u = F::cast_from(j as u32) + h;
        let v = F::cast_from(i as u32) + h;
        let mut x = coefs[c] * u + (coefs[c + 1] * v + coefs[c + 2]);
        let mut y = coefs[c + 4] * u + (coefs[c + 5] * v + coefs[c + 6]);
        if comptime!(kind == SRC_PROJ) {
            let den = coefs[c + 8] * u + (coefs[c + 9] * v + coefs[c + 10]);
            x /= den;
            y /= den;
        }
        if comptime!(kind == SRC_TPS) {
            let k = basis.shape(1);
            let row = p * k;
            let mut sx = F::new(0.0);
            let mut sy = F::new(0.0);
            for t in 0..k {
                let m = basis[row + t];
                sx += m * coefs[c + 16 + t];
                sy += m * coefs[c + 16 + k + t];
            }
            x += consts[C_SCALE] * sx;
            y += consts[C_SCALE + 1] * sy;
        }
        (x, y)
    }
}

/// Coordinates of 3-D output position (n, k, i, j) (grid or affine source).
#[cube]
fn coords3<F: Float>(
    src: &Tensor<F>,
    coefs: &Tensor<F>,
    consts: &Tensor<F>,
    n: usize,
    k: usize,
    i: usize,
    j: usize,
    #[comptime] kind: u32,
) -> (F, F, F) {
    let one = F::new(1.0);
    if comptime!(kind == SRC_GRID) {
        let o = n * src.stride(0) + k * src.stride(1) + i * src.stride(2) + j * src.stride(3);
        let s4 = src.stride(4);
        let x = (src[o] + one) * axc(consts, 0usize, 2usize) - axc(consts, 0usize, 3usize);
        let y = (src[o + s4] + one) * axc(consts, 1usize, 2usize) - axc(consts, 1usize, 3usize);
        let z = (src[o + 2 * s4] + one) * axc(consts, 2usize, 2usize) - axc(consts, 2usize, 3usize);
        (x, y, z)
    } else {
        let c = n * coefs.stride(0);
        let h = consts[C_OUT_H];
        let u = F::cast_from(j as u32) + h;
        let v = F::cast_from(i as u32) + h;
        let w = F::cast_from(k as u32) + h;
        let x = coefs[c] * u + ((coefs[c + 1] * v + coefs[c + 2] * w) + coefs[c + 3]);
        let y = coefs[c + 4] * u + ((coefs[c + 5] * v + coefs[c + 6] * w) + coefs[c + 7]);
        let z = coefs[c + 8] * u + ((coefs[c + 9] * v + coefs[c + 10] * w) + coefs[c + 11]);
        (x, y, z)
    }
}

/// Entry (r, c) of sample n's transform H in normalized coordinates.
#[cube]
fn hval<F: Float>(
    params: &Tensor<F>,
    n: usize,
    r: usize,
    c: usize,
    #[comptime] kind: u32,
    #[comptime] dims: usize,
) -> F {
    let one = F::new(1.0);
    let zero = F::new(0.0);
    // A spline's matrix is the identity, as are the rows an affine matrix does not store.
    let mut v = select(r == c, one, zero);
    if comptime!(kind == SRC_AFFINE) {
        if r < dims {
            v = params[n * params.stride(0) + r * params.stride(1) + c * params.stride(2)];
        }
    } else if comptime!(kind == SRC_PROJ) {
        let m = r * 3 + c;
        if m < 8 {
            v = params[n * params.stride(0) + m * params.stride(1)];
        }
    }
    v
}

/// Per-sample coefficients `G = S_in · H · T_out` (and a spline's displacements): one thread per
/// sample.
#[cube(launch)]
pub fn coefs_kernel<F: Float>(
    params: &Tensor<F>,
    consts: &Tensor<F>,
    ctrl: &Tensor<F>,
    coefs: &mut Tensor<F>,
    #[comptime] kind: u32,
    #[comptime] dims: usize,
    #[define(F)] _dtype: ElemType,
) {
    let n = ABSOLUTE_POS;
    if n >= coefs.shape(0) {
        terminate!();
    }
    let c = n * coefs.stride(0);
    for t in 0..16usize {
        coefs[c + t] = F::new(0.0);
    }
    let dd = dims;
    let mut den_b = hval(params, n, dd, dd, kind, dims);
    for e in 0..dims {
        den_b += hval(params, n, dd, e, kind, dims) * consts[C_OUT_B + e];
    }
    for d in 0..dims {
        let s = consts[C_SCALE + d];
        let o = consts[C_OFFSET + d];
        let mut num_b = F::new(0.0);
        for e in 0..dims {
            let a = consts[C_OUT_A + e];
            coefs[c + d * 4 + e] = hval(params, n, d, e, kind, dims) * consts[C_RATIO + d * 3 + e]
                + hval(params, n, dd, e, kind, dims) * (o * a);
            num_b += hval(params, n, d, e, kind, dims) * consts[C_OUT_B + e];
        }
        coefs[c + d * 4 + dd] = s * (num_b + hval(params, n, d, dd, kind, dims)) + o * den_b;
    }
    for e in 0..dims {
        coefs[c + dd * 4 + e] = hval(params, n, dd, e, kind, dims) * consts[C_OUT_A + e];
    }
    coefs[c + dd * 4 + dd] = den_b;
    if comptime!(kind == SRC_TPS) {
        let k = ctrl.shape(0) / 2;
        for t in 0..k {
            let o = n * params.stride(0) + t * params.stride(1);
            coefs[c + 16 + t] = params[o] - ctrl[2 * t];
            coefs[c + 16 + k + t] = params[o + params.stride(2)] - ctrl[2 * t + 1];
        }
    }
}

/// Writes the (normalized) grid of the coefficients: one thread per position.
#[cube(launch)]
pub fn grid_kernel<F: Float>(
    coefs: &Tensor<F>,
    basis: &Tensor<F>,
    consts: &Tensor<F>,
    grid: &mut Tensor<F>,
    #[comptime] kind: u32,
    #[comptime] dims: usize,
    #[define(F)] _dtype: ElemType,
) {
    let wo = grid.shape(dims);
    let ho = grid.shape(dims - 1);
    let total = numel_mut(grid) / dims;
    if ABSOLUTE_POS >= total {
        terminate!();
    }
    let pos = ABSOLUTE_POS;
    let j = pos % wo;
    let i = (pos / wo) % ho;
    let o = pos * dims;
    if comptime!(dims == 2) {
        let n = pos / (wo * ho);
        let (x, y) = coords2(coefs, coefs, basis, consts, n, i, j, pos % (wo * ho), kind);
        grid[o] = x;
        grid[o + 1] = y;
    } else {
        let dz = grid.shape(1);
        let k = (pos / (wo * ho)) % dz;
        let n = pos / (wo * ho * dz);
        let (x, y, z) = coords3(coefs, coefs, consts, n, k, i, j, kind);
        grid[o] = x;
        grid[o + 1] = y;
        grid[o + 2] = z;
    }
}

// ---------------------------------------------------------------- 2-D sampling

/// 2-D forward: one thread per output position (n, i, j), all channels.
#[cube(launch)]
pub fn sample2d_kernel<F: Float>(
    input: &Tensor<F>,
    src: &Tensor<F>,
    coefs: &Tensor<F>,
    basis: &Tensor<F>,
    consts: &Tensor<F>,
    output: &mut Tensor<F>,
    #[comptime] kind: u32,
    #[comptime] mode: u32,
    #[comptime] pad: u32,
    #[define(F)] _dtype: ElemType,
) {
    let wo = output.shape(3);
    let ho = output.shape(2);
    if ABSOLUTE_POS >= output.shape(0) * ho * wo {
        terminate!();
    }
    let j = ABSOLUTE_POS % wo;
    let i = (ABSOLUTE_POS / wo) % ho;
    let n = ABSOLUTE_POS / (wo * ho);
    let (x, y) = coords2(src, coefs, basis, consts, n, i, j, i * wo + j, kind);
    let channels = input.shape(1);
    let (s1, s2, s3) = (input.stride(1), input.stride(2), input.stride(3));
    let ib = n * input.stride(0);
    let ob = n * output.stride(0) + i * output.stride(2) + j * output.stride(3);
    let os1 = output.stride(1);
    let zero = F::new(0.0);
    let one = F::new(1.0);
    if comptime!(mode == MODE_NEAREST) {
        let rx = pad_fwd(x, consts, 0usize, pad).round();
        let ry = pad_fwd(y, consts, 1usize, pad).round();
        let ok = inside(rx, consts, 0usize) && inside(ry, consts, 1usize);
        let off = ib + index::<F>(ok, ry) * s2 + index::<F>(ok, rx) * s3;
        for c in 0..channels {
            output[ob + c * os1] = select(ok, input[off + c * s1], zero);
        }
    } else if comptime!(mode == MODE_LINEAR) {
        let xp = pad_fwd(x, consts, 0usize, pad);
        let yp = pad_fwd(y, consts, 1usize, pad);
        let x0 = xp.floor();
        let y0 = yp.floor();
        let fx = xp - x0;
        let fy = yp - y0;
        let (x1, y1) = (x0 + one, y0 + one);
        let (ox0, ox1) = (inside(x0, consts, 0usize), inside(x1, consts, 0usize));
        let (oy0, oy1) = (inside(y0, consts, 1usize), inside(y1, consts, 1usize));
        let (ix0, ix1) = (index::<F>(ox0, x0) * s3, index::<F>(ox1, x1) * s3);
        let (iy0, iy1) = (index::<F>(oy0, y0) * s2, index::<F>(oy1, y1) * s2);
        let (wx0, wy0) = (one - fx, one - fy);
        for c in 0..channels {
            let b = ib + c * s1;
            let v00 = select(oy0 && ox0, input[b + iy0 + ix0], zero);
            let v01 = select(oy0 && ox1, input[b + iy0 + ix1], zero);
            let v10 = select(oy1 && ox0, input[b + iy1 + ix0], zero);
            let v11 = select(oy1 && ox1, input[b + iy1 + ix1], zero);
            output[ob + c * os1] = (v00 * wx0 + v01 * fx) * wy0 + (v10 * wx0 + v11 * fx) * fy;
        }
    } else {
        let x0 = x.floor();
        let y0 = y.floor();
        let (cx0, cx1, cx2, cx3) = cubic_w::<F>(x - x0);
        let (cy0, cy1, cy2, cy3) = cubic_w::<F>(y - y0);
        let (ox0, ix0) = cubic_tap(x0, consts, 0u32, 0usize, pad);
        let (ox1, ix1) = cubic_tap(x0, consts, 1u32, 0usize, pad);
        let (ox2, ix2) = cubic_tap(x0, consts, 2u32, 0usize, pad);
        let (ox3, ix3) = cubic_tap(x0, consts, 3u32, 0usize, pad);
        let (oy0, iy0) = cubic_tap(y0, consts, 0u32, 1usize, pad);
        let (oy1, iy1) = cubic_tap(y0, consts, 1u32, 1usize, pad);
        let (oy2, iy2) = cubic_tap(y0, consts, 2u32, 1usize, pad);
        let (oy3, iy3) = cubic_tap(y0, consts, 3u32, 1usize, pad);
        for c in 0..channels {
            let b = ib + c * s1;
            let r0 = cubic_row(
                input,
                b + iy0 * s2,
                s3,
                ox0,
                ox1,
                ox2,
                ox3,
                ix0,
                ix1,
                ix2,
                ix3,
                cx0,
                cx1,
                cx2,
                cx3,
            );
            let r1 = cubic_row(
                input,
                b + iy1 * s2,
                s3,
                ox0,
                ox1,
                ox2,
                ox3,
                ix0,
                ix1,
                ix2,
                ix3,
                cx0,
                cx1,
                cx2,
                cx3,
            );
            let r2 = cubic_row(
                input,
                b + iy2 * s2,
                s3,
                ox0,
                ox1,
                ox2,
                ox3,
                ix0,
                ix1,
                ix2,
                ix3,
                cx0,
                cx1,
                cx2,
                cx3,
            );
            let r3 = cubic_row(
                input,
                b + iy3 * s2,
                s3,
                ox0,
                ox1,
                ox2,
                ox3,
                ix0,
                ix1,
                ix2,
                ix3,
                cx0,
                cx1,
                cx2,
                cx3,
            );
            let v = select(oy0, r0, zero) * cy0
                + select(oy1, r1, zero) * cy1
                + select(oy2, r2, zero) * cy2
                + select(oy3, r3, zero) * cy3;
            output[ob + c * os1] = v;
        }
    }
}

/// One row of a bicubic tap block: sum over the 4 x taps.
#[cube]
#[allow(clippy::too_many_arguments)]
fn cubic_row<F: Float>(
    input: &Tensor<F>,
    row: usize,
    s3: usize,
    o0: bool,
    o1: bool,
    o2: bool,
    o3: bool,
    i0: usize,
    i1: usize,
    i2: usize,
    i3: usize,
    c0: F,
    c1: F,
    c2: F,
    c3: F,
) -> F {
    let zero = F::new(0.0);
    select(o0, input[row + i0 * s3], zero) * c0
        + select(o1, input[row + i1 * s3], zero) * c1
        + select(o2, input[row + i2 * s3], zero) * c2
        + select(o3, input[row + i3 * s3], zero) * c3
}

// ---------------------------------------------------------------- fixed-point accumulation

/// Adds `v` to input-gradient element `e`: three u32 words per element (low, high, non-finite
/// flags). Integer addition commutes, so the total is the same in any order.
#[cube]
fn fx_add<F: Float>(acc: &mut Tensor<Atomic<u32>>, e: usize, v: F, scale: F) {
    let vf = f32::cast_from(v);
    if vf.is_nan() || vf.is_inf() {
        let bit = select(vf.is_nan(), 1u32, select(vf > 0.0f32, 2u32, 4u32));
        acc[3 * e + 2].fetch_or(bit);
    } else {
        let xr = (v * scale).round();
        if xr != F::new(0.0) {
            let hi_f = (xr * F::new(TWO_M32)).floor();
            let lo_f = xr - hi_f * F::new(TWO_P32);
            let lo = u32::cast_from(lo_f);
            let hi = u32::reinterpret(i32::cast_from(hi_f));
            let old = acc[3 * e].fetch_add(lo);
            let carry = select(old + lo < old, 1u32, 0u32);
            acc[3 * e + 1].fetch_add(hi + carry);
        }
    }
}

/// Per chunk of `MAX_CHUNK` elements of `t` (any rank, any strides): the largest finite |value|.
#[cube(launch)]
pub fn absmax_kernel<F: Float>(t: &Tensor<F>, part: &mut Tensor<F>, #[define(F)] _dtype: ElemType) {
    let total = numel(t);
    let chunk = ABSOLUTE_POS;
    if chunk * MAX_CHUNK >= total {
        terminate!();
    }
    let stop = (chunk + 1) * MAX_CHUNK;
    let end = select(stop < total, stop, total);
    let rank = t.rank();
    let mut m = 0.0f32;
    for lin in chunk * MAX_CHUNK..end {
        let mut rest = lin;
        let mut off = 0usize;
        for rr in 0..rank {
            let r = rank - 1 - rr;
            let s = t.shape(r);
            off += (rest % s) * t.stride(r);
            rest /= s;
        }
        let a = f32::cast_from(t[off].abs());
        let fin = !(a.is_nan() || a.is_inf());
        m = select(fin && a > m, a, m);
    }
    part[chunk] = F::cast_from(m);
}

/// The fixed-point scale from the per-chunk maxima: `scale[0] = 2^k`, `scale[1] = 2^-k` with
/// `max * 4 * positions * 2^k < 2^62`. One thread.
#[cube(launch)]
pub fn fx_scale_kernel<F: Float>(
    part: &Tensor<F>,
    consts: &Tensor<F>,
    scale: &mut Tensor<F>,
    #[define(F)] _dtype: ElemType,
) {
    if ABSOLUTE_POS >= 1 {
        terminate!();
    }
    let mut m = F::new(0.0);
    for c in 0..part.shape(0) {
        let v = part[c];
        m = select(v > m, v, m);
    }
    let t = f32::cast_from(m) * f32::cast_from(consts[C_POSITIONS]) * 4.0f32;
    let e = i32::cast_from((u32::reinterpret(t) >> 23) & 255u32) - 127i32;
    let k = clamp(61i32 - e, -126i32, 126i32);
    scale[0] = F::cast_from(f32::reinterpret(u32::cast_from(k + 127i32) << 23));
    scale[1] = F::cast_from(f32::reinterpret(u32::cast_from(127i32 - k) << 23));
}

/// Converts the fixed-point sums to floats (contiguous output).
#[cube(launch)]
pub fn fx_finish_kernel<F: Float>(
    acc: &Tensor<u32>,
    scale: &Tensor<F>,
    out: &mut Tensor<F>,
    #[define(F)] _dtype: ElemType,
) {
    let e = ABSOLUTE_POS;
    if e >= numel_mut(out) {
        terminate!();
    }
    let lo = acc[3 * e];
    let hi = acc[3 * e + 1];
    let flags = acc[3 * e + 2];
    let neg = i32::reinterpret(hi) < 0i32;
    // |value| as (mhi, mlo): two's complement negation where negative, so no cancellation.
    let nlo = (u32::MAX - lo) + 1u32;
    let nhi = (u32::MAX - hi) + select(lo == 0u32, 1u32, 0u32);
    let mlo = select(neg, nlo, lo);
    let mhi = select(neg, nhi, hi);
    let mag = (f32::cast_from(mhi) * TWO_P32 + f32::cast_from(mlo)) * f32::cast_from(scale[1]);
    let mut v = select(neg, -mag, mag);
    if flags != 0u32 {
        let nan = (flags & 1u32) != 0u32 || (flags & 6u32) == 6u32;
        v = select(
            nan,
            f32::reinterpret(0x7fc0_0000u32),
            select(
                (flags & 2u32) != 0u32,
                f32::reinterpret(0x7f80_0000u32),
                f32::reinterpret(0xff80_0000u32),
            ),
        );
    }
    out[e] = F::cast_from(v);
}

/// 2-D backward: one thread per output position. Scatters d(loss)/d(input) into `acc` when
/// `want_input`, and writes d(loss)/d(pixel coordinate) (times the un-normalization scale for a
/// grid source: the grid's gradient) into `gpos` (N, H_out, W_out, 2) when `want_coords`.
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
pub fn sample2d_bwd_kernel<F: Float>(
    gout: &Tensor<F>,
    input: &Tensor<F>,
    src: &Tensor<F>,
    coefs: &Tensor<F>,
    basis: &Tensor<F>,
    consts: &Tensor<F>,
    scale: &Tensor<F>,
    acc: &mut Tensor<Atomic<u32>>,
    gpos: &mut Tensor<F>,
    #[comptime] kind: u32,
    #[comptime] mode: u32,
    #[comptime] pad: u32,
    #[comptime] want_input: bool,
    #[comptime] want_coords: bool,
    #[define(F)] _dtype: ElemType,
) {
    let wo = gout.shape(3);
    let ho = gout.shape(2);
    if ABSOLUTE_POS >= gout.shape(0) * ho * wo {
        terminate!();
    }
    let j = ABSOLUTE_POS % wo;
    let i = (ABSOLUTE_POS / wo) % ho;
    let n = ABSOLUTE_POS / (wo * ho);
    let (x, y) = coords2(src, coefs, basis, consts, n, i, j, i * wo + j, kind);
    let channels = input.shape(1);
    let (h, w) = (input.shape(2), input.shape(3));
    let (s1, s2, s3) = (input.stride(1), input.stride(2), input.stride(3));
    let ib = n * input.stride(0);
    // The input gradient is contiguous (N, C, H, W).
    let eb = n * channels * h * w;
    let gb = n * gout.stride(0) + i * gout.stride(2) + j * gout.stride(3);
    let gs1 = gout.stride(1);
    let sc = scale[0];
    let zero = F::new(0.0);
    let one = F::new(1.0);
    let mut gx = zero;
    let mut gy = zero;
    if comptime!(mode == MODE_NEAREST) {
        let rx = pad_fwd(x, consts, 0usize, pad).round();
        let ry = pad_fwd(y, consts, 1usize, pad).round();
        let ok = inside(rx, consts, 0usize) && inside(ry, consts, 1usize);
        if comptime!(want_input) {
            if ok {
                let e = eb + index::<F>(ok, ry) * w + index::<F>(ok, rx);
                for c in 0..channels {
                    fx_add::<F>(acc, e + c * h * w, gout[gb + c * gs1], sc);
                }
            }
        }
    } else if comptime!(mode == MODE_LINEAR) {
        let (xp, mx) = pad_grad(x, consts, 0usize, pad);
        let (yp, my) = pad_grad(y, consts, 1usize, pad);
        let x0 = xp.floor();
        let y0 = yp.floor();
        let fx = xp - x0;
        let fy = yp - y0;
        let (x1, y1) = (x0 + one, y0 + one);
        let (ox0, ox1) = (inside(x0, consts, 0usize), inside(x1, consts, 0usize));
        let (oy0, oy1) = (inside(y0, consts, 1usize), inside(y1, consts, 1usize));
        let (jx0, jx1) = (index::<F>(ox0, x0), index::<F>(ox1, x1));
        let (jy0, jy1) = (index::<F>(oy0, y0), index::<F>(oy1, y1));
        let (wx0, wy0) = (one - fx, one - fy);
        for c in 0..channels {
            let g = gout[gb + c * gs1];
            if comptime!(want_input) {
                let e = eb + c * h * w;
                if oy0 && ox0 {
                    fx_add::<F>(acc, e + jy0 * w + jx0, g * (wx0 * wy0), sc);
                }
                if oy0 && ox1 {
                    fx_add::<F>(acc, e + jy0 * w + jx1, g * (fx * wy0), sc);
                }
                if oy1 && ox0 {
                    fx_add::<F>(acc, e + jy1 * w + jx0, g * (wx0 * fy), sc);
                }
                if oy1 && ox1 {
                    fx_add::<F>(acc, e + jy1 * w + jx1, g * (fx * fy), sc);
                }
            }
            if comptime!(want_coords) {
                let b = ib + c * s1;
                let v00 = select(oy0 && ox0, input[b + jy0 * s2 + jx0 * s3], zero);
                let v01 = select(oy0 && ox1, input[b + jy0 * s2 + jx1 * s3], zero);
                let v10 = select(oy1 && ox0, input[b + jy1 * s2 + jx0 * s3], zero);
                let v11 = select(oy1 && ox1, input[b + jy1 * s2 + jx1 * s3], zero);
                gx += g * ((v01 - v00) * wy0 + (v11 - v10) * fy);
                gy += g * ((v10 - v00) * wx0 + (v11 - v01) * fx);
            }
        }
        gx *= mx;
        gy *= my;
    } else {
        let x0 = x.floor();
        let y0 = y.floor();
        let (cx0, cx1, cx2, cx3) = cubic_w::<F>(x - x0);
        let (cy0, cy1, cy2, cy3) = cubic_w::<F>(y - y0);
        let (dx0, dx1, dx2, dx3) = cubic_dw::<F>(x - x0);
        let (dy0, dy1, dy2, dy3) = cubic_dw::<F>(y - y0);
        let (ox0, ix0) = cubic_tap(x0, consts, 0u32, 0usize, pad);
        let (ox1, ix1) = cubic_tap(x0, consts, 1u32, 0usize, pad);
        let (ox2, ix2) = cubic_tap(x0, consts, 2u32, 0usize, pad);
        let (ox3, ix3) = cubic_tap(x0, consts, 3u32, 0usize, pad);
        let (oy0, iy0) = cubic_tap(y0, consts, 0u32, 1usize, pad);
        let (oy1, iy1) = cubic_tap(y0, consts, 1u32, 1usize, pad);
        let (oy2, iy2) = cubic_tap(y0, consts, 2u32, 1usize, pad);
        let (oy3, iy3) = cubic_tap(y0, consts, 3u32, 1usize, pad);
        for c in 0..channels {
            let g = gout[gb + c * gs1];
            if comptime!(want_input) {
                let e = eb + c * h * w;
                cubic_scatter_row::<F>(
                    acc,
                    e + iy0 * w,
                    oy0,
                    g * cy0,
                    ox0,
                    ox1,
                    ox2,
                    ox3,
                    ix0,
                    ix1,
                    ix2,
                    ix3,
                    cx0,
                    cx1,
                    cx2,
                    cx3,
                    sc,
                );
                cubic_scatter_row::<F>(
                    acc,
                    e + iy1 * w,
                    oy1,
                    g * cy1,
                    ox0,
                    ox1,
                    ox2,
                    ox3,
                    ix0,
                    ix1,
                    ix2,
                    ix3,
                    cx0,
                    cx1,
                    cx2,
                    cx3,
                    sc,
                );
                cubic_scatter_row::<F>(
                    acc,
                    e + iy2 * w,
                    oy2,
                    g * cy2,
                    ox0,
                    ox1,
                    ox2,
                    ox3,
                    ix0,
                    ix1,
                    ix2,
                    ix3,
                    cx0,
                    cx1,
                    cx2,
                    cx3,
                    sc,
                );
                cubic_scatter_row::<F>(
                    acc,
                    e + iy3 * w,
                    oy3,
                    g * cy3,
                    ox0,
                    ox1,
                    ox2,
                    ox3,
                    ix0,
                    ix1,
                    ix2,
                    ix3,
                    cx0,
                    cx1,
                    cx2,
                    cx3,
                    sc,
                );
            }
            if comptime!(want_coords) {
                let b = ib + c * s1;
                let r0 = select(oy0, one, zero);
                let r1 = select(oy1, one, zero);
                let r2 = select(oy2, one, zero);
                let r3 = select(oy3, one, zero);
                let a0 = cubic_row(
                    input,
                    b + iy0 * s2,
                    s3,
                    ox0,
                    ox1,
                    ox2,
                    ox3,
                    ix0,
                    ix1,
                    ix2,
                    ix3,
                    cx0,
                    cx1,
                    cx2,
                    cx3,
                ) * r0;
                let a1 = cubic_row(
                    input,
                    b + iy1 * s2,
                    s3,
                    ox0,
                    ox1,
                    ox2,
                    ox3,
                    ix0,
                    ix1,
                    ix2,
                    ix3,
                    cx0,
                    cx1,
                    cx2,
                    cx3,
                ) * r1;
                let a2 = cubic_row(
                    input,
                    b + iy2 * s2,
                    s3,
                    ox0,
                    ox1,
                    ox2,
                    ox3,
                    ix0,
                    ix1,
                    ix2,
                    ix3,
                    cx0,
                    cx1,
                    cx2,
                    cx3,
                ) * r2;
                let a3 = cubic_row(
                    input,
                    b + iy3 * s2,
                    s3,
                    ox0,
                    ox1,
                    ox2,
                    ox3,
                    ix0,
                    ix1,
                    ix2,
                    ix3,
                    cx0,
                    cx1,
                    cx2,
                    cx3,
                ) * r3;
                let d0 = cubic_row(
                    input,
                    b + iy0 * s2,
                    s3,
                    ox0,
                    ox1,
                    ox2,
                    ox3,
                    ix0,
                    ix1,
                    ix2,
                    ix3,
                    dx0,
                    dx1,
                    dx2,
                    dx3,
                ) * r0;
                let d1 = cubic_row(
                    input,
                    b + iy1 * s2,
                    s3,
                    ox0,
                    ox1,
                    ox2,
                    ox3,
                    ix0,
                    ix1,
                    ix2,
                    ix3,
                    dx0,
                    dx1,
                    dx2,
                    dx3,
                ) * r1;
                let d2 = cubic_row(
                    input,
                    b + iy2 * s2,
                    s3,
                    ox0,
                    ox1,
                    ox2,
                    ox3,
                    ix0,
                    ix1,
                    ix2,
                    ix3,
                    dx0,
                    dx1,
                    dx2,
                    dx3,
                ) * r2;
                let d3 = cubic_row(
                    input,
                    b + iy3 * s2,
                    s3,
                    ox0,
                    ox1,
                    ox2,
                    ox3,
                    ix0,
                    ix1,
                    ix2,
                    ix3,
                    dx0,
                    dx1,
                    dx2,
                    dx3,
                ) * r3;
                gx += g * (d0 * cy0 + d1 * cy1 + d2 * cy2 + d3 * cy3);
                gy += g * (a0 * dy0 + a1 * dy1 + a2 * dy2 + a3 * dy3);
            }
        }
    }
    if comptime!(want_coords) {
        let o = ((n * ho + i) * wo + j) * 2;
        if comptime!(kind == SRC_GRID) {
            gpos[o] = gx * axc(consts, 0usize, 2usize);
            gpos[o + 1] = gy * axc(consts, 1usize, 2usize);
        } else {
            gpos[o] = gx;
            gpos[o + 1] = gy;
        }
    }
}

/// Scatters one row (4 x taps) of a bicubic block with row weight `gr` (the output gradient
/// times the y weight).
#[cube]
#[allow(clippy::too_many_arguments)]
fn cubic_scatter_row<F: Float>(
    acc: &mut Tensor<Atomic<u32>>,
    row: usize,
    row_ok: bool,
    gr: F,
    o0: bool,
    o1: bool,
    o2: bool,
    o3: bool,
    i0: usize,
    i1: usize,
    i2: usize,
    i3: usize,
    c0: F,
    c1: F,
    c2: F,
    c3: F,
    sc: F,
) {
    if row_ok {
        if o0 {
            fx_add::<F>(acc, row + i0, gr * c0, sc);
        }
        if o1 {
            fx_add::<F>(acc, row + i1, gr * c1, sc);
        }
        if o2 {
            fx_add::<F>(acc, row + i2, gr * c2, sc);
        }
        if o3 {
            fx_add::<F>(acc, row + i3, gr * c3, sc);
        }
    }
}

// ---------------------------------------------------------------- 3-D sampling

/// 3-D forward (nearest or trilinear): one thread per output position (n, k, i, j).
#[cube(launch)]
pub fn sample3d_kernel<F: Float>(
    input: &Tensor<F>,
    src: &Tensor<F>,
    coefs: &Tensor<F>,
    consts: &Tensor<F>,
    output: &mut Tensor<F>,
    #[comptime] kind: u32,
    #[comptime] mode: u32,
    #[comptime] pad: u32,
    #[define(F)] _dtype: ElemType,
) {
    let wo = output.shape(4);
    let ho = output.shape(3);
    let dz = output.shape(2);
    if ABSOLUTE_POS >= output.shape(0) * dz * ho * wo {
        terminate!();
    }
    let j = ABSOLUTE_POS % wo;
    let i = (ABSOLUTE_POS / wo) % ho;
    let k = (ABSOLUTE_POS / (wo * ho)) % dz;
    let n = ABSOLUTE_POS / (wo * ho * dz);
    let (x, y, z) = coords3(src, coefs, consts, n, k, i, j, kind);
    let channels = input.shape(1);
    let (s1, s2, s3, s4) = (input.stride(1), input.stride(2), input.stride(3), input.stride(4));
    let ib = n * input.stride(0);
    let ob = n * output.stride(0) + k * output.stride(2) + i * output.stride(3) + j * output.stride(4);
    let os1 = output.stride(1);
    let zero = F::new(0.0);
    let one = F::new(1.0);
    if comptime!(mode == MODE_NEAREST) {
        let rx = pad_fwd(x, consts, 0usize, pad).round();
        let ry = pad_fwd(y, consts, 1usize, pad).round();
        let rz = pad_fwd(z, consts, 2usize, pad).round();
        let ok = inside(rx, consts, 0usize) && inside(ry, consts, 1usize) && inside(rz, consts, 2usize);
        let off = ib + index::<F>(ok, rz) * s2 + index::<F>(ok, ry) * s3 + index::<F>(ok, rx) * s4;
        for c in 0..channels {
            output[ob + c * os1] = select(ok, input[off + c * s1], zero);
        }
    } else {
        let xp = pad_fwd(x, consts, 0usize, pad);
        let yp = pad_fwd(y, consts, 1usize, pad);
        let zp = pad_fwd(z, consts, 2usize, pad);
        let (x0, y0, z0) = (xp.floor(), yp.floor(), zp.floor());
        let (fx, fy, fz) = (xp - x0, yp - y0, zp - z0);
        let (x1, y1, z1) = (x0 + one, y0 + one, z0 + one);
        let (ox0, ox1) = (inside(x0, consts, 0usize), inside(x1, consts, 0usize));
        let (oy0, oy1) = (inside(y0, consts, 1usize), inside(y1, consts, 1usize));
        let (oz0, oz1) = (inside(z0, consts, 2usize), inside(z1, consts, 2usize));
        let (ix0, ix1) = (index::<F>(ox0, x0) * s4, index::<F>(ox1, x1) * s4);
        let (iy0, iy1) = (index::<F>(oy0, y0) * s3, index::<F>(oy1, y1) * s3);
        let (iz0, iz1) = (index::<F>(oz0, z0) * s2, index::<F>(oz1, z1) * s2);
        let (wx0, wy0, wz0) = (one - fx, one - fy, one - fz);
        for c in 0..channels {
            let b = ib + c * s1;
            let p0 = tri_plane(input, b + iz0, iy0, iy1, ix0, ix1, oy0, oy1, ox0, ox1, wx0, fx, wy0, fy);
            let p1 = tri_plane(input, b + iz1, iy0, iy1, ix0, ix1, oy0, oy1, ox0, ox1, wx0, fx, wy0, fy);
            output[ob + c * os1] = select(oz0, p0, zero) * wz0 + select(oz1, p1, zero) * fz;
        }
    }
}

/// One z plane of a trilinear block.
#[cube]
#[allow(clippy::too_many_arguments)]
fn tri_plane<F: Float>(
    input: &Tensor<F>,
    b: usize,
    iy0: usize,
    iy1: usize,
    ix0: usize,
    ix1: usize,
    oy0: bool,
    oy1: bool,
    ox0: bool,
    ox1: bool,
    wx0: F,
    fx: F,
    wy0: F,
    fy: F,
) -> F {
    let zero = F::new(0.0);
    let v00 = select(oy0 && ox0, input[b + iy0 + ix0], zero);
    let v01 = select(oy0 && ox1, input[b + iy0 + ix1], zero);
    let v10 = select(oy1 && ox0, input[b + iy1 + ix0], zero);
    let v11 = select(oy1 && ox1, input[b + iy1 + ix1], zero);
    (v00 * wx0 + v01 * fx) * wy0 + (v10 * wx0 + v11 * fx) * fy
}

/// 3-D backward: as [`sample2d_bwd_kernel`], `gpos` (N, D_out, H_out, W_out, 3).
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
pub fn sample3d_bwd_kernel<F: Float>(
    gout: &Tensor<F>,
    input: &Tensor<F>,
    src: &Tensor<F>,
    coefs: &Tensor<F>,
    consts: &Tensor<F>,
    scale: &Tensor<F>,
    acc: &mut Tensor<Atomic<u32>>,
    gpos: &mut Tensor<F>,
    #[comptime] kind: u32,
    #[comptime] mode: u32,
    #[comptime] pad: u32,
    #[comptime] want_input: bool,
    #[comptime] want_coords: bool,
    #[define(F)] _dtype: ElemType,
) {
    let wo = gout.shape(4);
    let ho = gout.shape(3);
    let dz = gout.shape(2);
    if ABSOLUTE_POS >= gout.shape(0) * dz * ho * wo {
        terminate!();
    }
    let j = ABSOLUTE_POS % wo;
    let i = (ABSOLUTE_POS / wo) % ho;
    let k = (ABSOLUTE_POS / (wo * ho)) % dz;
    let n = ABSOLUTE_POS / (wo * ho * dz);
    let (x, y, z) = coords3(src, coefs, consts, n, k, i, j, kind);
    let channels = input.shape(1);
    let (d, h, w) = (input.shape(2), input.shape(3), input.shape(4));
    let (s1, s2, s3, s4) = (input.stride(1), input.stride(2), input.stride(3), input.stride(4));
    let ib = n * input.stride(0);
    let plane = d * h * w;
    let eb = n * channels * plane;
    let gb = n * gout.stride(0) + k * gout.stride(2) + i * gout.stride(3) + j * gout.stride(4);
    let gs1 = gout.stride(1);
    let sc = scale[0];
    let zero = F::new(0.0);
    let one = F::new(1.0);
    let mut gx = zero;
    let mut gy = zero;
    let mut gz = zero;
    if comptime!(mode == MODE_NEAREST) {
        let rx = pad_fwd(x, consts, 0usize, pad).round();
        let ry = pad_fwd(y, consts, 1usize, pad).round();
        let rz = pad_fwd(z, consts, 2usize, pad).round();
        let ok = inside(rx, consts, 0usize) && inside(ry, consts, 1usize) && inside(rz, consts, 2usize);
        if comptime!(want_input) {
            if ok {
                let e = eb + (index::<F>(ok, rz) * h + index::<F>(ok, ry)) * w + index::<F>(ok, rx);
                for c in 0..channels {
                    fx_add::<F>(acc, e + c * plane, gout[gb + c * gs1], sc);
                }
            }
        }
    } else {
        let (xp, mx) = pad_grad(x, consts, 0usize, pad);
        let (yp, my) = pad_grad(y, consts, 1usize, pad);
        let (zp, mz) = pad_grad(z, consts, 2usize, pad);
        let (x0, y0, z0) = (xp.floor(), yp.floor(), zp.floor());
        let (fx, fy, fz) = (xp - x0, yp - y0, zp - z0);
        let (x1, y1, z1) = (x0 + one, y0 + one, z0 + one);
        let (ox0, ox1) = (inside(x0, consts, 0usize), inside(x1, consts, 0usize));
        let (oy0, oy1) = (inside(y0, consts, 1usize), inside(y1, consts, 1usize));
        let (oz0, oz1) = (inside(z0, consts, 2usize), inside(z1, consts, 2usize));
        let (jx0, jx1) = (index::<F>(ox0, x0), index::<F>(ox1, x1));
        let (jy0, jy1) = (index::<F>(oy0, y0), index::<F>(oy1, y1));
        let (jz0, jz1) = (index::<F>(oz0, z0), index::<F>(oz1, z1));
        let (wx0, wy0, wz0) = (one - fx, one - fy, one - fz);
        for c in 0..channels {
            let g = gout[gb + c * gs1];
            if comptime!(want_input) {
                let e = eb + c * plane;
                let r00 = e + (jz0 * h + jy0) * w;
                let r01 = e + (jz0 * h + jy1) * w;
                let r10 = e + (jz1 * h + jy0) * w;
                let r11 = e + (jz1 * h + jy1) * w;
                tri_scatter::<F>(acc, r00, oz0 && oy0, g * (wz0 * wy0), jx0, jx1, ox0, ox1, wx0, fx, sc);
                tri_scatter::<F>(acc, r01, oz0 && oy1, g * (wz0 * fy), jx0, jx1, ox0, ox1, wx0, fx, sc);
                tri_scatter::<F>(acc, r10, oz1 && oy0, g * (fz * wy0), jx0, jx1, ox0, ox1, wx0, fx, sc);
                tri_scatter::<F>(acc, r11, oz1 && oy1, g * (fz * fy), jx0, jx1, ox0, ox1, wx0, fx, sc);
            }
            if comptime!(want_coords) {
                let b = ib + c * s1;
                let v000 = select(oz0 && oy0 && ox0, input[b + jz0 * s2 + jy0 * s3 + jx0 * s4], zero);
                let v001 = select(oz0 && oy0 && ox1, input[b + jz0 * s2 + jy0 * s3 + jx1 * s4], zero);
                let v010 = select(oz0 && oy1 && ox0, input[b + jz0 * s2 + jy1 * s3 + jx0 * s4], zero);
                let v011 = select(oz0 && oy1 && ox1, input[b + jz0 * s2 + jy1 * s3 + jx1 * s4], zero);
                let v100 = select(oz1 && oy0 && ox0, input[b + jz1 * s2 + jy0 * s3 + jx0 * s4], zero);
                let v101 = select(oz1 && oy0 && ox1, input[b + jz1 * s2 + jy0 * s3 + jx1 * s4], zero);
                let v110 = select(oz1 && oy1 && ox0, input[b + jz1 * s2 + jy1 * s3 + jx0 * s4], zero);
                let v111 = select(oz1 && oy1 && ox1, input[b + jz1 * s2 + jy1 * s3 + jx1 * s4], zero);
                gx += g
                    * (((v001 - v000) * wy0 + (v011 - v010) * fy) * wz0
                        + ((v101 - v100) * wy0 + (v111 - v110) * fy) * fz);
                gy += g
                    * (((v010 - v000) * wx0 + (v011 - v001) * fx) * wz0
                        + ((v110 - v100) * wx0 + (v111 - v101) * fx) * fz);
                gz += g
                    * (((v100 - v000) * wx0 + (v101 - v001) * fx) * wy0
                        + ((v110 - v010) * wx0 + (v111 - v011) * fx) * fy);
            }
        }
        gx *= mx;
        gy *= my;
        gz *= mz;
    }
    if comptime!(want_coords) {
        let o = (((n * dz + k) * ho + i) * wo + j) * 3;
        if comptime!(kind == SRC_GRID) {
            gpos[o] = gx * axc(consts, 0usize, 2usize);
            gpos[o + 1] = gy * axc(consts, 1usize, 2usize);
            gpos[o + 2] = gz * axc(consts, 2usize, 2usize);
        } else {
            gpos[o] = gx;
            gpos[o + 1] = gy;
            gpos[o + 2] = gz;
        }
    }
}

/// Scatters the two x taps of one (z, y) row of a trilinear block.
#[cube]
#[allow(clippy::too_many_arguments)]
fn tri_scatter<F: Float>(
    acc: &mut Tensor<Atomic<u32>>,
    row: usize,
    row_ok: bool,
    gr: F,
    jx0: usize,
    jx1: usize,
    ox0: bool,
    ox1: bool,
    wx0: F,
    fx: F,
    sc: F,
) {
    if row_ok {
        if ox0 {
            fx_add::<F>(acc, row + jx0, gr * wx0, sc);
        }
        if ox1 {
            fx_add::<F>(acc, row + jx1, gr * fx, sc);
        }
    }
}

// ---------------------------------------------------------------- parameter gradients

/// Output index (n, k, i, j) and the position within its sample, from a flat position.
#[cube]
fn gpos_offset<F: Float>(gpos: &Tensor<F>, n: usize, p: usize, #[comptime] dims: usize) -> usize {
    let wo = gpos.shape(dims);
    let ho = gpos.shape(dims - 1);
    let j = p % wo;
    let i = (p / wo) % ho;
    let mut o = n * gpos.stride(0) + i * gpos.stride(dims - 1) + j * gpos.stride(dims);
    if comptime!(dims == 3) {
        o += (p / (wo * ho)) * gpos.stride(1);
    }
    o
}

/// Partial sums over chunks of `CHUNK` positions of d(loss)/d(coefficient `q`): one thread per
/// (sample, chunk, q); `part` is (N, chunks, Q) with Q = 16 for a matrix, 2K for a spline.
#[cube(launch)]
pub fn param_partial_kernel<F: Float>(
    gpos: &Tensor<F>,
    coefs: &Tensor<F>,
    basis: &Tensor<F>,
    consts: &Tensor<F>,
    part: &mut Tensor<F>,
    #[comptime] kind: u32,
    #[comptime] dims: usize,
    #[define(F)] _dtype: ElemType,
) {
    let chunks = part.shape(1);
    let nq = part.shape(2);
    if ABSOLUTE_POS >= part.shape(0) * chunks * nq {
        terminate!();
    }
    let q = ABSOLUTE_POS % nq;
    let chunk = (ABSOLUTE_POS / nq) % chunks;
    let n = ABSOLUTE_POS / (nq * chunks);
    let wo = gpos.shape(dims);
    let ho = gpos.shape(dims - 1);
    let mut positions = wo * ho;
    if comptime!(dims == 3) {
        positions *= gpos.shape(1);
    }
    let ds = gpos.stride(dims + 1);
    let start = chunk * CHUNK;
    let stop = start + CHUNK;
    let end = select(stop < positions, stop, positions);
    let mut acc = F::new(0.0);
    let one = F::new(1.0);
    if comptime!(kind == SRC_TPS) {
        let k = basis.shape(1);
        let d = q / k;
        let t = q % k;
        let s = select(d == 0, consts[C_SCALE], consts[C_SCALE + 1]);
        for p in start..end {
            let o = gpos_offset(gpos, n, p, dims);
            acc += basis[p * k + t] * (gpos[o + d * ds] * s);
        }
    } else {
        let row = q / 4;
        let col = q % 4;
        let c = n * coefs.stride(0);
        let h = consts[C_OUT_H];
        if row <= dims && col <= dims {
            for p in start..end {
                let o = gpos_offset(gpos, n, p, dims);
                let j = p % wo;
                let i = (p / wo) % ho;
                let k = p / (wo * ho);
                let u = F::cast_from(j as u32) + h;
                let v = F::cast_from(i as u32) + h;
                let w = F::cast_from(k as u32) + h;
                let feat = select(col == dims, one, select(col == 0, u, select(col == 1, v, w)));
                if comptime!(kind == SRC_PROJ) {
                    let den = coefs[c + 8] * u + (coefs[c + 9] * v + coefs[c + 10]);
                    let r = one / den;
                    let gxr = gpos[o] * r;
                    let gyr = gpos[o + ds] * r;
                    if row == 2 {
                        let xs = (coefs[c] * u + (coefs[c + 1] * v + coefs[c + 2])) * r;
                        let ys = (coefs[c + 4] * u + (coefs[c + 5] * v + coefs[c + 6])) * r;
                        acc += -(gxr * xs + gyr * ys) * feat;
                    } else {
                        acc += select(row == 0, gxr, gyr) * feat;
                    }
                } else if row < dims {
                    acc += gpos[o + row * ds] * feat;
                }
            }
        }
    }
    part[ABSOLUTE_POS] = acc;
}

/// Sums the chunks in order: `out` (N, Q) from `part` (N, chunks, Q). One thread per (n, q).
#[cube(launch)]
pub fn chunk_sum_kernel<F: Float>(part: &Tensor<F>, out: &mut Tensor<F>, #[define(F)] _dtype: ElemType) {
    let chunks = part.shape(1);
    let nq = part.shape(2);
    if ABSOLUTE_POS >= part.shape(0) * nq {
        terminate!();
    }
    let q = ABSOLUTE_POS % nq;
    let n = ABSOLUTE_POS / nq;
    let mut acc = F::new(0.0);
    for c in 0..chunks {
        acc += part[(n * chunks + c) * nq + q];
    }
    out[ABSOLUTE_POS] = acc;
}

/// d(loss)/d(G) of sample n, entry (k, l), times `T_out^T` column j.
#[cube]
fn dg_t<F: Float>(
    dg: &Tensor<F>,
    consts: &Tensor<F>,
    n: usize,
    k: usize,
    j: usize,
    #[comptime] dims: usize,
) -> F {
    let b = n * 16 + k * 4;
    let mut v = dg[b + dims];
    if j < dims {
        v = dg[b + j] * consts[C_OUT_A + j] + dg[b + dims] * consts[C_OUT_B + j];
    }
    v
}

/// Parameter gradients from d(loss)/d(G) (N, 16): `dH = S_in^T · dG · T_out^T`, laid out as the
/// parameters. One thread per parameter element; `out` is contiguous in the parameters' shape.
#[cube(launch)]
pub fn param_finish_kernel<F: Float>(
    dg: &Tensor<F>,
    consts: &Tensor<F>,
    out: &mut Tensor<F>,
    #[comptime] kind: u32,
    #[comptime] dims: usize,
    #[define(F)] _dtype: ElemType,
) {
    let total = numel_mut(out);
    if ABSOLUTE_POS >= total {
        terminate!();
    }
    // affine: (N, D, D+1); projective: (N, 8)
    let per = total / out.shape(0);
    let n = ABSOLUTE_POS / per;
    let m = ABSOLUTE_POS % per;
    let mut r = m / 3;
    let mut cc = m % 3;
    if comptime!(kind == SRC_AFFINE) {
        r = m / (dims + 1);
        cc = m % (dims + 1);
    }
    let mut v = dg_t(dg, consts, n, dims, cc, dims);
    if r < dims {
        v = consts[C_SCALE + r] * dg_t(dg, consts, n, r, cc, dims);
    } else {
        for k in 0..dims {
            v += consts[C_OFFSET + k] * dg_t(dg, consts, n, k, cc, dims);
        }
    }
    out[ABSOLUTE_POS] = v;
}

/// A spline's parameter gradient from the summed (N, 2K): (N, K, 2), interleaved.
#[cube(launch)]
pub fn tps_finish_kernel<F: Float>(sums: &Tensor<F>, out: &mut Tensor<F>, #[define(F)] _dtype: ElemType) {
    if ABSOLUTE_POS >= numel_mut(out) {
        terminate!();
    }
    let k = out.shape(1);
    let d = ABSOLUTE_POS % 2;
    let t = (ABSOLUTE_POS / 2) % k;
    let n = ABSOLUTE_POS / (2 * k);
    out[ABSOLUTE_POS] = sums[n * 2 * k + d * k + t];
}
