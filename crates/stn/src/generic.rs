//! The generic path: the same ops as [`crate::ops`], written with Burn tensor ops only (gather,
//! floor, clamp, matmul), so they run on any backend and Burn's autodiff differentiates them.
//! [`crate::ops`] uses it where no native kernel exists; the functions here force it, so it
//! can be tested against the native kernels.
//!
//! It follows PyTorch's CPU kernel step by step (un-normalize, pad the coordinate, taps and
//! weights, gather). Differences from the native path: rounding (a different summation order,
//! ~1 ulp), and a NaN grid coordinate reads as the value at index 0 with weight NaN instead of
//! PyTorch's exact NaN rules. It is slower and uses more memory (one gathered (N, C, P) tensor
//! per tap).

use burn::tensor::{Int, Tensor, TensorData};
use stn_kernels::{base_coords, Interpolation, Padding, SampleOptions, Tps};

use crate::error::Result;
use crate::ops::{self, Route};

/// [`ops::grid_sample`] on the generic path.
pub fn grid_sample<const D: usize>(
    input: Tensor<D>,
    grid: Tensor<D>,
    options: SampleOptions,
) -> Result<Tensor<D>> {
    ops::grid_sample_routed(Route::Generic, input, grid, options)
}

/// [`ops::affine_sample`] on the generic path.
pub fn affine_sample<const D: usize>(
    input: Tensor<D>,
    theta: Tensor<3>,
    out_size: &[usize],
    options: SampleOptions,
) -> Result<Tensor<D>> {
    ops::affine_sample_routed(Route::Generic, input, theta, out_size, options)
}

/// [`ops::projective_sample`] on the generic path.
pub fn projective_sample(
    input: Tensor<4>,
    params: Tensor<2>,
    out_size: [usize; 2],
    options: SampleOptions,
) -> Result<Tensor<4>> {
    ops::projective_sample_routed(Route::Generic, input, params, out_size, options)
}

/// [`ops::tps_sample`] on the generic path.
pub fn tps_sample(
    input: Tensor<4>,
    theta: Tensor<3>,
    tps: Tps,
    out_size: [usize; 2],
    options: SampleOptions,
) -> Result<Tensor<4>> {
    ops::tps_sample_routed(Route::Generic, input, theta, tps, out_size, options)
}

/// [`ops::affine_grid`] on the generic path.
pub fn affine_grid<const G: usize>(
    theta: Tensor<3>,
    size: &[usize],
    align_corners: bool,
) -> Result<Tensor<G>> {
    ops::affine_grid_routed(Route::Generic, theta, size, align_corners)
}

/// [`ops::projective_grid`] on the generic path.
pub fn projective_grid(params: Tensor<2>, size: [usize; 4], align_corners: bool) -> Result<Tensor<4>> {
    ops::projective_grid_routed(Route::Generic, params, size, align_corners)
}

/// [`ops::tps_grid`] on the generic path.
pub fn tps_grid(theta: Tensor<3>, tps: Tps, size: [usize; 4], align_corners: bool) -> Result<Tensor<4>> {
    ops::tps_grid_routed(Route::Generic, theta, tps, size, align_corners)
}

// ---------------------------------------------------------------- sampling

/// One interpolation tap along an axis: integer index (clamped into range) and weight (zero
/// where the tap falls outside under zero padding).
struct Tap {
    index: Tensor<2, Int>,
    weight: Tensor<2>,
}

/// PyTorch's `reflect_coordinates`: reflects `x` into [low2 / 2, high2 / 2], repeatedly.
fn reflect(x: Tensor<2>, low2: f64, high2: f64) -> Tensor<2> {
    if low2 == high2 {
        return x.zeros_like();
    }
    let min = low2 / 2.0;
    let span = (high2 - low2) / 2.0;
    let d = (x - min).abs();
    let flips = d.clone().div_scalar(span).floor();
    let extra = d - flips.clone().mul_scalar(span);
    let half = flips.clone().div_scalar(2.0).floor();
    let even = (flips - half.mul_scalar(2.0)).equal_elem(0.0);
    let odd_val = extra.clone().neg().add_scalar(span + min);
    odd_val.mask_where(even, extra.add_scalar(min))
}

/// Applies the padding mode to a coordinate in pixel space (PyTorch's `compute_coordinates`).
fn pad_coord(x: Tensor<2>, size: usize, padding: Padding, align: bool) -> Tensor<2> {
    let hi = (size - 1) as f64;
    match padding {
        Padding::Zeros => x,
        Padding::Border => x.clamp(0.0, hi),
        Padding::Reflection => {
            let r = if align { reflect(x, 0.0, 2.0 * hi) } else { reflect(x, -1.0, 2.0 * size as f64 - 1.0) };
            r.clamp(0.0, hi)
        }
    }
}

/// A tap at integer-valued coordinate `xi` with weight `w`; outside taps get weight 0.
fn tap(xi: Tensor<2>, w: Tensor<2>, size: usize) -> Tap {
    let hi = (size - 1) as f64;
    let outside = xi.clone().lower_elem(0.0).bool_or(xi.clone().greater_elem(hi));
    Tap { index: xi.clamp(0.0, hi).int(), weight: w.mask_fill(outside, 0.0) }
}

/// Keys' cubic convolution weights (A = -0.75) for fractional offset `t`, as PyTorch.
fn cubic_weights(t: Tensor<2>) -> [Tensor<2>; 4] {
    const A: f64 = -0.75;
    let c1 =
        |x: Tensor<2>| (x.clone().mul_scalar(A + 2.0).sub_scalar(A + 3.0) * x.clone() * x).add_scalar(1.0);
    let c2 = |x: Tensor<2>| {
        ((x.clone().mul_scalar(A).sub_scalar(5.0 * A) * x.clone()).add_scalar(8.0 * A) * x)
            .sub_scalar(4.0 * A)
    };
    let u = t.clone().neg().add_scalar(1.0);
    [c2(t.clone().add_scalar(1.0)), c1(t), c1(u.clone()), c2(u.add_scalar(1.0))]
}

/// Taps of one axis for normalized coordinates `g` (N, P).
fn axis_taps(g: Tensor<2>, size: usize, o: &SampleOptions) -> Vec<Tap> {
    let s = size as f64;
    let x = if o.align_corners {
        g.add_scalar(1.0).div_scalar(2.0).mul_scalar(s - 1.0)
    } else {
        g.add_scalar(1.0).mul_scalar(s).sub_scalar(1.0).div_scalar(2.0)
    };
    match o.mode {
        Interpolation::Nearest => {
            let x = pad_coord(x, size, o.padding, o.align_corners).round();
            let one = x.ones_like();
            vec![tap(x, one, size)]
        }
        Interpolation::Bilinear => {
            let x = pad_coord(x, size, o.padding, o.align_corners);
            let x0 = x.clone().floor();
            let t = x - x0.clone();
            let w0 = t.clone().neg().add_scalar(1.0);
            vec![tap(x0.clone(), w0, size), tap(x0.add_scalar(1.0), t, size)]
        }
        Interpolation::Bicubic => {
            let x0 = x.clone().floor();
            let t = x - x0.clone();
            cubic_weights(t)
                .into_iter()
                .enumerate()
                .map(|(i, w)| {
                    let xi = x0.clone().add_scalar(i as f64 - 1.0);
                    let xi = pad_coord(xi, size, o.padding, o.align_corners);
                    tap(xi, w, size)
                })
                .collect()
        }
    }
}

/// Sampling on validated arguments (see [`ops::grid_sample`]).
pub(crate) fn sample_unchecked<const D: usize>(
    input: Tensor<D>,
    grid: Tensor<D>,
    o: &SampleOptions,
) -> Tensor<D> {
    let idims = input.dims();
    let gdims = grid.dims();
    let (n, c, nd) = (idims[0], idims[1], D - 2);
    let spatial = &idims[2..];
    let plane: usize = spatial.iter().product();
    let p: usize = gdims[1..D - 1].iter().product();
    let grid = grid.reshape([n, p, nd]);
    // Axis a (x, y, z) reads grid column a; its size and stride in the flattened plane.
    let mut axes: Vec<(Vec<Tap>, usize)> = Vec::with_capacity(nd);
    let mut stride = 1;
    for a in 0..nd {
        let size = spatial[nd - 1 - a];
        let g = grid.clone().narrow(2, a, 1).reshape([n, p]);
        axes.push((axis_taps(g, size, o), stride));
        stride *= size;
    }
    let flat = input.reshape([n, c, plane]);
    let mut out: Option<Tensor<3>> = None;
    let mut combo = vec![0usize; nd];
    loop {
        let mut index: Option<Tensor<2, Int>> = None;
        let mut weight: Option<Tensor<2>> = None;
        for (a, (taps, stride)) in axes.iter().enumerate() {
            let t = &taps[combo[a]];
            let i = t.index.clone().mul_scalar(*stride as i64);
            index = Some(index.map_or(i.clone(), |acc| acc + i));
            weight = Some(weight.map_or(t.weight.clone(), |acc| acc * t.weight.clone()));
        }
        let (index, weight) = (index.expect("nd >= 2"), weight.expect("nd >= 2"));
        let gathered = flat.clone().gather(2, index.unsqueeze_dim::<3>(1).expand([n, c, p]));
        let term = gathered * weight.unsqueeze_dim::<3>(1);
        out = Some(match out {
            Some(acc) => acc + term,
            None => term,
        });
        // Next combination of taps (odometer over axes).
        let mut a = 0;
        while a < nd {
            combo[a] += 1;
            if combo[a] < axes[a].0.len() {
                break;
            }
            combo[a] = 0;
            a += 1;
        }
        if a == nd {
            break;
        }
    }
    let mut shape = vec![n, c];
    shape.extend_from_slice(&gdims[1..D - 1]);
    let shape: [usize; D] = shape.try_into().expect("rank D");
    out.expect("at least one tap").reshape(shape)
}

// ---------------------------------------------------------------- grids

/// Homogeneous base points (P, d + 1) of the output pixels, x fastest: PyTorch's base grid.
fn base_points(spatial: &[usize], align: bool) -> (Vec<f64>, usize) {
    let d = spatial.len();
    let bases: Vec<Vec<f64>> = (0..d).map(|a| base_coords::<f64>(spatial[d - 1 - a], align)).collect();
    let p: usize = spatial.iter().product();
    let mut v = Vec::with_capacity(p * (d + 1));
    for i in 0..p {
        let mut rem = i;
        for b in &bases {
            v.push(b[rem % b.len()]);
            rem /= b.len();
        }
        v.push(1.0);
    }
    (v, p)
}

fn host<const R: usize>(v: Vec<f64>, shape: [usize; R], like: &Tensor<3>) -> Tensor<R> {
    Tensor::from_data(TensorData::new(v, shape), (&like.device(), like.dtype()))
}

fn host2<const R: usize>(v: Vec<f64>, shape: [usize; R], like: &Tensor<2>) -> Tensor<R> {
    Tensor::from_data(TensorData::new(v, shape), (&like.device(), like.dtype()))
}

fn grid_shape<const G: usize>(size: &[usize]) -> [usize; G] {
    let mut s = vec![size[0]];
    s.extend_from_slice(&size[2..]);
    s.push(size.len() - 2);
    s.try_into().expect("grid rank")
}

/// `affine_grid` on validated arguments: base points times theta transposed.
pub(crate) fn affine_grid_unchecked<const G: usize>(
    theta: Tensor<3>,
    size: &[usize],
    align: bool,
) -> Tensor<G> {
    let d = size.len() - 2;
    let n = size[0];
    let (base, p) = base_points(&size[2..], align);
    let base = host(base, [1, p, d + 1], &theta).repeat_dim(0, n);
    base.matmul(theta.swap_dims(1, 2)).reshape(grid_shape::<G>(size))
}

/// `projective_grid` on validated arguments: (x, y, w) = H (x, y, 1), then (x / w, y / w).
pub(crate) fn projective_grid_unchecked(params: Tensor<2>, size: &[usize], align: bool) -> Tensor<4> {
    let n = size[0];
    let (base, p) = base_points(&size[2..], align);
    let base = host2(base, [1, p, 3], &params).repeat_dim(0, n);
    let h = Tensor::cat(vec![params.clone(), params.ones_like().narrow(1, 0, 1)], 1).reshape([n, 3, 3]);
    let q = base.matmul(h.swap_dims(1, 2));
    let xy = q.clone().narrow(2, 0, 2);
    let w = q.narrow(2, 2, 1);
    (xy / w).reshape(grid_shape::<4>(size))
}

/// `tps_grid` on validated arguments. The grid is affine in theta: grid = base + B (theta -
/// control points), with B (P, K) read off the kernels' own TPS grid (one unit displacement
/// per control point), so the spline's numerics stay in stn-kernels.
pub(crate) fn tps_grid_unchecked(
    theta: Tensor<3>,
    tps: Tps,
    size: &[usize],
    align: bool,
) -> Result<Tensor<4>> {
    let (n, h, w) = (size[0], size[2], size[3]);
    let k = tps.num_points();
    let p = h * w;
    let ident = tps.identity::<f64>(1);
    let base =
        stn_kernels::tps_grid(stn_kernels::TensorRef::new(&ident, &[1, k, 2]), &tps, &[1, 1, h, w], align)?;
    let mut unit = Vec::with_capacity(k * k * 2);
    for j in 0..k {
        let mut t = ident.clone();
        t[2 * j] += 1.0;
        unit.extend_from_slice(&t);
    }
    let moved =
        stn_kernels::tps_grid(stn_kernels::TensorRef::new(&unit, &[k, k, 2]), &tps, &[k, 1, h, w], align)?;
    // B[q, j] = x-displacement of pixel q when point j moves by 1 in x.
    let mut b = vec![0.0; p * k];
    for j in 0..k {
        for q in 0..p {
            b[q * k + j] = moved.data[(j * p + q) * 2] - base.data[q * 2];
        }
    }
    let b = host(b, [1, p, k], &theta).repeat_dim(0, n);
    let base = host(base.data, [1, p, 2], &theta).repeat_dim(0, n);
    let ctrl = host(ident, [1, k, 2], &theta).repeat_dim(0, n);
    Ok((base + b.matmul(theta - ctrl)).reshape([n, h, w, 2]))
}
