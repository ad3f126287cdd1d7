//! Algebraic properties of the public API, in f32 and f64:
//! - identity parameters reproduce the input exactly through every fused path;
//! - the grid generators agree with each other where their families overlap
//!   (TPS at the control points = identity, projective with h31 = h32 = 0 = affine,
//!   TPS of an affine map of the control points = that affine map);
//! - the fused warps equal grid generation followed by `grid_sample`, forward and backward.

// Index loops over several parallel arrays read better than zips here.
#![allow(clippy::needless_range_loop)]

use std::fmt::Debug;

use crate::common::*;
use stn_kernels::*;

const PADS: [Padding; 3] = [Padding::Zeros, Padding::Border, Padding::Reflection];
const MODES: [Interpolation; 3] = [Interpolation::Nearest, Interpolation::Bilinear, Interpolation::Bicubic];
const FAMILIES: [AffineFamily; 4] =
    [AffineFamily::Translation, AffineFamily::Attention, AffineFamily::Similarity, AffineFamily::Affine];

const ID2: [f64; 6] = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0];
const ID3: [f64; 12] = [1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0];

fn numel(shape: &[usize]) -> usize {
    shape.iter().product()
}

fn cast<T: Float>(v: &[f64]) -> Vec<T> {
    v.iter().map(|x| T::from_f64(*x)).collect()
}

fn repeat<T: Float>(one: &[f64], n: usize) -> Vec<T> {
    (0..n).flat_map(|_| one.iter().map(|v| T::from_f64(*v))).collect()
}

fn label(what: &str, o: &SampleOptions) -> String {
    format!("{what} {:?}/{:?}/align={}", o.mode, o.padding, o.align_corners)
}

// ---------------------------------------------------------------------------------------
// Identity parameters reproduce the input bit for bit
// ---------------------------------------------------------------------------------------

fn identity_2d<T: Float + Bits + Debug>(seed: u64, align: bool) {
    let mut rng = Rng::new(seed);
    for (h, w) in [(7usize, 9usize), (28, 28), (9, 7)] {
        let n = 2;
        let shape = [n, 3, h, w];
        let input: Vec<T> = rng.vec(numel(&shape), -1.0, 1.0);
        let x = TensorRef::new(&input, &shape);
        let out_size = [h, w];
        for mode in MODES {
            for pad in PADS {
                let o = SampleOptions::new(mode, pad, align);
                let what = |f: &str| label(&format!("{} identity {f} {h}x{w}", T::NAME), &o);

                let theta: Vec<T> = repeat(&ID2, n);
                let out = affine_sample(x, TensorRef::new(&theta, &[n, 2, 3]), &out_size, &o).unwrap();
                assert_eq!(out.shape, shape);
                assert_bits_eq(&out.data, &input, &what("affine_sample"));

                let hp: Vec<T> = repeat(&PROJECTIVE_IDENTITY, n);
                let out = projective_sample(x, TensorRef::new(&hp, &[n, PROJECTIVE_PARAMS]), &out_size, &o)
                    .unwrap();
                assert_bits_eq(&out.data, &input, &what("projective_sample"));

                for tps in [Tps::default(), Tps::new(3, 4).unwrap(), Tps::square(25).unwrap()] {
                    let k = tps.num_points();
                    let th: Vec<T> = tps.identity(n);
                    let out = tps_sample(x, TensorRef::new(&th, &[n, k, 2]), &tps, &out_size, &o).unwrap();
                    assert_bits_eq(&out.data, &input, &what(&format!("tps_sample {tps:?} (identity)")));
                    // The same parameters built from the control points.
                    let cp: Vec<T> = (0..n)
                        .flat_map(|_| tps.control_points())
                        .flat_map(|p| [T::from_f64(p[0]), T::from_f64(p[1])])
                        .collect();
                    let out = tps_sample(x, TensorRef::new(&cp, &[n, k, 2]), &tps, &out_size, &o).unwrap();
                    assert_bits_eq(&out.data, &input, &what(&format!("tps_sample {tps:?} (control points)")));
                }

                for fam in FAMILIES {
                    let p: Vec<T> = repeat(&fam.identity(), n);
                    let theta = fam.to_affine(TensorRef::new(&p, &[n, fam.num_params()])).unwrap();
                    let out = affine_sample(x, theta.view(), &out_size, &o).unwrap();
                    assert_bits_eq(&out.data, &input, &what(&format!("{fam:?}")));
                }
            }
        }
    }
}

fn identity_3d<T: Float + Bits + Debug>(seed: u64, align: bool) {
    let mut rng = Rng::new(seed);
    for (d, h, w) in [(3usize, 5usize, 7usize), (5, 4, 6)] {
        let n = 2;
        let shape = [n, 2, d, h, w];
        let input: Vec<T> = rng.vec(numel(&shape), -1.0, 1.0);
        let theta: Vec<T> = repeat(&ID3, n);
        for mode in [Interpolation::Nearest, Interpolation::Bilinear] {
            for pad in PADS {
                let o = SampleOptions::new(mode, pad, align);
                let out = affine_sample(
                    TensorRef::new(&input, &shape),
                    TensorRef::new(&theta, &[n, 3, 4]),
                    &[d, h, w],
                    &o,
                )
                .unwrap();
                assert_eq!(out.shape, shape);
                assert_bits_eq(
                    &out.data,
                    &input,
                    &label(&format!("{} 3-D identity {d}x{h}x{w}", T::NAME), &o),
                );
            }
        }
    }
}

#[test]
fn identity_reproduces_input_align_corners_f64() {
    identity_2d::<f64>(1, true);
    identity_3d::<f64>(2, true);
}

#[test]
fn identity_reproduces_input_align_corners_f32() {
    identity_2d::<f32>(3, true);
    identity_3d::<f32>(4, true);
}

#[test]
fn identity_reproduces_input_no_align_f64() {
    identity_2d::<f64>(5, false);
    identity_3d::<f64>(6, false);
}

#[test]
fn identity_reproduces_input_no_align_f32() {
    identity_2d::<f32>(7, false);
    identity_3d::<f32>(8, false);
}

// ---------------------------------------------------------------------------------------
// Grid generators agree where the families overlap
// ---------------------------------------------------------------------------------------

#[test]
fn tps_grid_at_control_points_is_base_grid() {
    for tps in [Tps::default(), Tps::new(3, 4).unwrap(), Tps::new(2, 2).unwrap(), Tps::square(36).unwrap()] {
        for (h, w) in [(5usize, 6usize), (28, 28), (1, 7), (8, 1)] {
            for align in [false, true] {
                let n = 2;
                let k = tps.num_points();
                let th: Vec<f64> = tps.identity(n);
                let g = tps_grid(TensorRef::new(&th, &[n, k, 2]), &tps, &[n, 1, h, w], align).unwrap();
                let theta: Vec<f64> = repeat(&ID2, n);
                let base = affine_grid(TensorRef::new(&theta, &[n, 2, 3]), &[n, 1, h, w], align).unwrap();
                assert_eq!(g.shape, base.shape);
                assert_close(&g.data, &base.data, 1e-12, &format!("tps {tps:?} {h}x{w} align={align}"));
                // And the base grid is PyTorch's: x varies along W, y along H.
                let xs = base_coords::<f64>(w, align);
                let ys = base_coords::<f64>(h, align);
                for i in 0..h {
                    for j in 0..w {
                        let p = (i * w + j) * 2;
                        assert!(
                            (base.data[p] - xs[j]).abs() < 1e-15 && (base.data[p + 1] - ys[i]).abs() < 1e-15
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn base_coords_match_pytorch_formula() {
    for n in 1..12usize {
        for align in [false, true] {
            let c = base_coords::<f64>(n, align);
            assert_eq!(c.len(), n);
            for (i, v) in c.iter().enumerate() {
                let want = if n == 1 {
                    0.0
                } else {
                    let lin = -1.0 + 2.0 * i as f64 / (n - 1) as f64;
                    if align {
                        lin
                    } else {
                        lin * (n - 1) as f64 / n as f64
                    }
                };
                assert!((v - want).abs() < 1e-15, "n={n} align={align} i={i}: {v} vs {want}");
                // Pixel centres: unnormalized coordinates are the integers 0..n-1.
                let p = unnormalize(*v, n, align);
                assert!((p - i as f64).abs() < 1e-12, "n={n} align={align} i={i}: pixel {p}");
            }
        }
    }
}

#[test]
fn projective_without_perspective_is_affine() {
    let mut rng = Rng::new(20);
    for align in [false, true] {
        for (h, w) in [(5usize, 6usize), (9, 7)] {
            let n = 3;
            let theta: Vec<f64> = (0..n * 6).map(|i| ID2[i % 6] + rng.uniform(-0.3, 0.3)).collect();
            let hp: Vec<f64> =
                theta.chunks(6).flat_map(|t| [t[0], t[1], t[2], t[3], t[4], t[5], 0.0, 0.0]).collect();
            let size = [n, 1, h, w];
            let ga = affine_grid(TensorRef::new(&theta, &[n, 2, 3]), &size, align).unwrap();
            let gp = projective_grid(TensorRef::new(&hp, &[n, 8]), &size, align).unwrap();
            assert_eq!(ga.shape, gp.shape);
            assert_close(&gp.data, &ga.data, 1e-12, &format!("projective vs affine grid align={align}"));
            // Their backwards agree too (on the first six parameters).
            let r: Vec<f64> = rng.vec(ga.data.len(), -1.0, 1.0);
            let da = affine_grid_backward(TensorRef::new(&r, &ga.shape), align).unwrap();
            let dp =
                projective_grid_backward(TensorRef::new(&r, &gp.shape), TensorRef::new(&hp, &[n, 8]), align)
                    .unwrap();
            let dp6: Vec<f64> = dp.data.chunks(8).flat_map(|c| c[..6].to_vec()).collect();
            assert_close(&dp6, &da.data, 1e-12, "projective vs affine grid backward");
        }
    }
}

fn projective_sample_without_perspective<T: Float + Bits + Debug>(seed: u64) {
    let mut rng = Rng::new(seed);
    let n = 2;
    let shape = [n, 3, 7, 9];
    let input: Vec<T> = rng.vec(numel(&shape), -1.0, 1.0);
    for mode in MODES {
        for pad in PADS {
            for align in [false, true] {
                for out_size in [[5usize, 6usize], [7, 9], [11, 4]] {
                    let o = SampleOptions::new(mode, pad, align);
                    let th64: Vec<f64> = (0..n * 6).map(|i| ID2[i % 6] + rng.uniform(-0.2, 0.2)).collect();
                    let hp64: Vec<f64> =
                        th64.chunks(6).flat_map(|t| [t[0], t[1], t[2], t[3], t[4], t[5], 0.0, 0.0]).collect();
                    let (theta, hp): (Vec<T>, Vec<T>) = (cast(&th64), cast(&hp64));
                    let x = TensorRef::new(&input, &shape);
                    let a = affine_sample(x, TensorRef::new(&theta, &[n, 2, 3]), &out_size, &o).unwrap();
                    let p = projective_sample(x, TensorRef::new(&hp, &[n, 8]), &out_size, &o).unwrap();
                    assert_eq!(a.shape, p.shape);
                    let what =
                        label(&format!("{} projective(h31=h32=0) vs affine {out_size:?}", T::NAME), &o);
                    assert_bits_eq(&p.data, &a.data, &what);
                }
            }
        }
    }
}

#[test]
fn projective_sample_without_perspective_is_affine_sample_f64() {
    projective_sample_without_perspective::<f64>(21);
}

#[test]
fn projective_sample_without_perspective_is_affine_sample_f32() {
    projective_sample_without_perspective::<f32>(22);
}

#[test]
fn tps_reproduces_affine_maps() {
    let mut rng = Rng::new(30);
    for tps in [Tps::default(), Tps::new(3, 4).unwrap(), Tps::square(25).unwrap()] {
        for align in [false, true] {
            let n = 2;
            let k = tps.num_points();
            let theta: Vec<f64> = (0..n * 6).map(|i| ID2[i % 6] + rng.uniform(-0.4, 0.4)).collect();
            let cp = tps.control_points();
            let targets: Vec<f64> = theta
                .chunks(6)
                .flat_map(|a| {
                    cp.iter()
                        .flat_map(|c| [a[0] * c[0] + a[1] * c[1] + a[2], a[3] * c[0] + a[4] * c[1] + a[5]])
                        .collect::<Vec<_>>()
                })
                .collect();
            for (h, w) in [(5usize, 6usize), (13, 11)] {
                let size = [n, 1, h, w];
                let gt = tps_grid(TensorRef::new(&targets, &[n, k, 2]), &tps, &size, align).unwrap();
                let ga = affine_grid(TensorRef::new(&theta, &[n, 2, 3]), &size, align).unwrap();
                assert_close(
                    &gt.data,
                    &ga.data,
                    1e-12,
                    &format!("tps {tps:?} affine round trip align={align}"),
                );
                // The fused TPS warp agrees with the fused affine warp as well.
                let shape = [n, 2, 9, 8];
                let input: Vec<f64> = rng.vec(numel(&shape), -1.0, 1.0);
                let o = SampleOptions::new(Interpolation::Bilinear, Padding::Zeros, align);
                let x = TensorRef::new(&input, &shape);
                let ot = tps_sample(x, TensorRef::new(&targets, &[n, k, 2]), &tps, &[h, w], &o).unwrap();
                let oa = affine_sample(x, TensorRef::new(&theta, &[n, 2, 3]), &[h, w], &o).unwrap();
                assert_close(
                    &ot.data,
                    &oa.data,
                    1e-10,
                    &format!("tps_sample {tps:?} vs affine_sample align={align}"),
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Fused warps == grid generation + grid_sample, forward and backward
// ---------------------------------------------------------------------------------------

/// Minimum distance of sample points from the kink lattice (so both paths take the same
/// branch of every piecewise definition despite rounding differences).
const MARGIN: f64 = 1e-4;

/// The two paths' results: output, grad_input, grad_params.
struct Both<T> {
    fused: [Tensor<T>; 3],
    split: [Tensor<T>; 3],
}

fn compare<T: Float>(b: &Both<T>, tol: f64, what: &str, nearest: bool) {
    for (i, part) in ["output", "grad_input", "grad_params"].iter().enumerate() {
        assert_eq!(b.fused[i].shape, b.split[i].shape, "{what}: {part} shapes");
        assert_close(&b.fused[i].data, &b.split[i].data, tol, &format!("{what}: {part}"));
    }
    if nearest {
        assert!(
            b.fused[2].data.iter().all(|&v| v == T::ZERO),
            "{what}: nearest fused grad_params must be zero"
        );
    } else {
        assert!(
            b.fused[2].data.iter().any(|v| v.to_f64().abs() > 1e-3),
            "{what}: grad_params all (near) zero"
        );
    }
}

/// Draws f64 parameters until the grid (f64) keeps every point clear of kinks.
fn clear_params(
    rng: &mut Rng,
    in_spatial: &[usize],
    align: bool,
    mut draw: impl FnMut(&mut Rng) -> Vec<f64>,
    grid_of: impl Fn(&[f64]) -> Vec<f64>,
) -> Vec<f64> {
    for _ in 0..500 {
        let p = draw(rng);
        if grid_clear_of_kinks(&grid_of(&p), in_spatial, align, MARGIN) {
            return p;
        }
    }
    panic!("no kink-free parameters in 500 draws");
}

fn split_path<T: Float>(
    input: TensorRef<'_, T>,
    grid: &Tensor<T>,
    r: &[T],
    o: &SampleOptions,
) -> (Tensor<T>, Tensor<T>, Tensor<T>) {
    let out = grid_sample(input, grid.view(), o).unwrap();
    let g =
        grid_sample_backward(TensorRef::new(r, &out.shape), input, grid.view(), o, GradRequest::ALL).unwrap();
    (out, g.input.unwrap(), g.grid.unwrap())
}

fn fused_vs_grid_2d<T: Float>(seed: u64, tol: f64) {
    let mut s = seed;
    let ins = [11usize, 13usize];
    for (n, outs) in [(2usize, [9usize, 10usize]), (4, [12, 15])] {
        let shape = [n, 3, ins[0], ins[1]];
        let gsize = [n, 1, outs[0], outs[1]];
        let rshape = [n, 3, outs[0], outs[1]];
        for mode in MODES {
            for pad in PADS {
                for align in [false, true] {
                    s += 1;
                    let o = SampleOptions::new(mode, pad, align);
                    let nearest = mode == Interpolation::Nearest;
                    let mut rng = Rng::new(s);
                    let input: Vec<T> = rng.vec(numel(&shape), -1.0, 1.0);
                    let x = TensorRef::new(&input, &shape);
                    let r: Vec<T> = rng.vec(numel(&rshape), -1.0, 1.0);
                    let rt = TensorRef::new(&r, &rshape);

                    // Affine.
                    let th64 = clear_params(
                        &mut rng,
                        &ins,
                        align,
                        |g| (0..n * 6).map(|i| ID2[i % 6] + g.uniform(-0.1, 0.1)).collect(),
                        |p| affine_grid(TensorRef::new(p, &[n, 2, 3]), &gsize, align).unwrap().data,
                    );
                    let theta: Vec<T> = cast(&th64);
                    let tshape = [n, 2, 3];
                    let tt = TensorRef::new(&theta, &tshape);
                    let out = affine_sample(x, tt, &outs, &o).unwrap();
                    let gr = affine_sample_backward(rt, x, tt, &o, GradRequest::ALL).unwrap();
                    let grid = affine_grid(tt, &gsize, align).unwrap();
                    let (so, si, sg) = split_path(x, &grid, &r, &o);
                    let sp = affine_grid_backward(sg.view(), align).unwrap();
                    let both =
                        Both { fused: [out, gr.input.unwrap(), gr.params.unwrap()], split: [so, si, sp] };
                    compare(&both, tol, &label(&format!("{} affine 2-D n={n}", T::NAME), &o), nearest);

                    // Projective.
                    let hp64 = clear_params(
                        &mut rng,
                        &ins,
                        align,
                        |g| (0..n * 8).map(|i| PROJECTIVE_IDENTITY[i % 8] + g.uniform(-0.08, 0.08)).collect(),
                        |p| projective_grid(TensorRef::new(p, &[n, 8]), &gsize, align).unwrap().data,
                    );
                    let hp: Vec<T> = cast(&hp64);
                    let pshape = [n, 8];
                    let pt = TensorRef::new(&hp, &pshape);
                    let out = projective_sample(x, pt, &outs, &o).unwrap();
                    let gr = projective_sample_backward(rt, x, pt, &o, GradRequest::ALL).unwrap();
                    let grid = projective_grid(pt, &gsize, align).unwrap();
                    let (so, si, sg) = split_path(x, &grid, &r, &o);
                    let sp = projective_grid_backward(sg.view(), pt, align).unwrap();
                    let both =
                        Both { fused: [out, gr.input.unwrap(), gr.params.unwrap()], split: [so, si, sp] };
                    compare(&both, tol, &label(&format!("{} projective n={n}", T::NAME), &o), nearest);

                    // Thin-plate spline.
                    for tps in [Tps::default(), Tps::new(3, 4).unwrap()] {
                        let k = tps.num_points();
                        let th64 = clear_params(
                            &mut rng,
                            &ins,
                            align,
                            |g| {
                                tps.identity::<f64>(n)
                                    .into_iter()
                                    .map(|v| v + g.uniform(-0.08, 0.08))
                                    .collect()
                            },
                            |p| tps_grid(TensorRef::new(p, &[n, k, 2]), &tps, &gsize, align).unwrap().data,
                        );
                        let th: Vec<T> = cast(&th64);
                        let tshape = [n, k, 2];
                        let tt = TensorRef::new(&th, &tshape);
                        let out = tps_sample(x, tt, &tps, &outs, &o).unwrap();
                        let gr = tps_sample_backward(rt, x, tt, &tps, &o, GradRequest::ALL).unwrap();
                        let grid = tps_grid(tt, &tps, &gsize, align).unwrap();
                        let (so, si, sg) = split_path(x, &grid, &r, &o);
                        let sp = tps_grid_backward(sg.view(), &tps, align).unwrap();
                        let both =
                            Both { fused: [out, gr.input.unwrap(), gr.params.unwrap()], split: [so, si, sp] };
                        compare(&both, tol, &label(&format!("{} tps {tps:?} n={n}", T::NAME), &o), nearest);
                    }
                }
            }
        }
    }
}

fn fused_vs_grid_3d<T: Float>(seed: u64, tol: f64) {
    let mut s = seed;
    let ins = [5usize, 6, 7];
    for (n, outs) in [(2usize, [4usize, 5usize, 6usize]), (4, [6, 4, 9])] {
        let shape = [n, 2, ins[0], ins[1], ins[2]];
        let gsize = [n, 1, outs[0], outs[1], outs[2]];
        let rshape = [n, 2, outs[0], outs[1], outs[2]];
        for mode in [Interpolation::Nearest, Interpolation::Bilinear] {
            for pad in PADS {
                for align in [false, true] {
                    s += 1;
                    let o = SampleOptions::new(mode, pad, align);
                    let mut rng = Rng::new(s);
                    let input: Vec<T> = rng.vec(numel(&shape), -1.0, 1.0);
                    let x = TensorRef::new(&input, &shape);
                    let r: Vec<T> = rng.vec(numel(&rshape), -1.0, 1.0);
                    let rt = TensorRef::new(&r, &rshape);
                    let th64 = clear_params(
                        &mut rng,
                        &ins,
                        align,
                        |g| (0..n * 12).map(|i| ID3[i % 12] + g.uniform(-0.1, 0.1)).collect(),
                        |p| affine_grid(TensorRef::new(p, &[n, 3, 4]), &gsize, align).unwrap().data,
                    );
                    let theta: Vec<T> = cast(&th64);
                    let tshape = [n, 3, 4];
                    let tt = TensorRef::new(&theta, &tshape);
                    let out = affine_sample(x, tt, &outs, &o).unwrap();
                    let gr = affine_sample_backward(rt, x, tt, &o, GradRequest::ALL).unwrap();
                    let grid = affine_grid(tt, &gsize, align).unwrap();
                    let (so, si, sg) = split_path(x, &grid, &r, &o);
                    let sp = affine_grid_backward(sg.view(), align).unwrap();
                    let both =
                        Both { fused: [out, gr.input.unwrap(), gr.params.unwrap()], split: [so, si, sp] };
                    compare(
                        &both,
                        tol,
                        &label(&format!("{} affine 3-D n={n}", T::NAME), &o),
                        mode == Interpolation::Nearest,
                    );
                }
            }
        }
    }
}

#[test]
fn fused_equals_grid_then_sample_2d_f64() {
    fused_vs_grid_2d::<f64>(100, 1e-12);
}

#[test]
fn fused_equals_grid_then_sample_2d_f32() {
    fused_vs_grid_2d::<f32>(200, 1e-5);
}

#[test]
fn fused_equals_grid_then_sample_3d_f64() {
    fused_vs_grid_3d::<f64>(300, 1e-12);
}

#[test]
fn fused_equals_grid_then_sample_3d_f32() {
    fused_vs_grid_3d::<f32>(400, 1e-5);
}

/// The affine families through `to_affine` + fused warp agree with the grid path, and
/// their parameter gradients chain through `to_affine_backward`.
#[test]
fn affine_families_fused_equal_grid_path() {
    let mut rng = Rng::new(500);
    let n = 3;
    let shape = [n, 2, 9, 8];
    let outs = [7usize, 6usize];
    let gsize = [n, 1, outs[0], outs[1]];
    for fam in FAMILIES {
        for align in [false, true] {
            let o = SampleOptions::new(Interpolation::Bicubic, Padding::Border, align);
            let p_shape = [n, fam.num_params()];
            let input: Vec<f64> = rng.vec(numel(&shape), -1.0, 1.0);
            let x = TensorRef::new(&input, &shape);
            let to_theta = |p: &[f64]| fam.to_affine(TensorRef::new(p, &p_shape)).unwrap();
            let params = clear_params(
                &mut rng,
                &[9, 8],
                align,
                |g| (0..n).flat_map(|_| fam.identity()).map(|v| v + g.uniform(-0.1, 0.1)).collect(),
                |p| affine_grid(to_theta(p).view(), &gsize, align).unwrap().data,
            );
            let theta = to_theta(&params);
            let r: Vec<f64> = rng.vec(n * 2 * outs[0] * outs[1], -1.0, 1.0);
            let rshape = [n, 2, outs[0], outs[1]];
            let rt = TensorRef::new(&r, &rshape);
            let out = affine_sample(x, theta.view(), &outs, &o).unwrap();
            let grid = affine_grid(theta.view(), &gsize, align).unwrap();
            let (so, _, sg) = split_path(x, &grid, &r, &o);
            assert_close(&out.data, &so.data, 1e-12, &format!("{fam:?} output"));
            let fused_dt =
                affine_sample_backward(rt, x, theta.view(), &o, GradRequest::PARAMS).unwrap().params.unwrap();
            let split_dt = affine_grid_backward(sg.view(), align).unwrap();
            let pshape_ref = TensorRef::new(&params, &p_shape);
            let a = fam.to_affine_backward(fused_dt.view(), pshape_ref).unwrap();
            let b = fam.to_affine_backward(split_dt.view(), pshape_ref).unwrap();
            assert_eq!(a.shape, p_shape);
            assert_close(&a.data, &b.data, 1e-12, &format!("{fam:?} grad_params"));
        }
    }
}
