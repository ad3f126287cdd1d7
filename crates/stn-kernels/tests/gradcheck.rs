//! Analytic gradients against central finite differences in f64: `grid_sample_backward`
//! (to the input and to the grid), every grid generator's backward, the affine families'
//! `to_affine_backward`, and the fused warps' backwards. The loss is `sum(output * R)` with
//! `R` a fixed random tensor, so the analytic gradients come from the backward functions
//! with `grad_output = R`. Sample points are kept away from every kink (integers,
//! half-integers) so the loss is smooth around them.

use crate::common::*;
use stn_kernels::*;

/// Finite-difference step.
const STEP: f64 = 1e-6;
/// Tolerance: |analytic - numeric| <= TOL * max(1, |numeric|).
const TOL: f64 = 1e-6;
/// Minimum distance (in input pixels) between a sample point and the kink lattice.
const MARGIN: f64 = 1e-3;

const PADS: [Padding; 3] = [Padding::Zeros, Padding::Border, Padding::Reflection];
const ALIGNS: [bool; 2] = [false, true];

fn label(what: &str, o: &SampleOptions) -> String {
    format!("{what} {:?}/{:?}/align={}", o.mode, o.padding, o.align_corners)
}

fn numel(shape: &[usize]) -> usize {
    shape.iter().product()
}

// ---------------------------------------------------------------------------------------
// grid_sample_backward
// ---------------------------------------------------------------------------------------

fn check_grid_sample(o: SampleOptions, in_shape: &[usize], out_spatial: &[usize], seed: u64) {
    let what = label(&format!("grid_sample {in_shape:?}->{out_spatial:?}"), &o);
    let mut rng = Rng::new(seed);
    let n = in_shape[0];
    let input: Vec<f64> = rng.vec(numel(in_shape), -1.0, 1.0);
    let (grid, gshape) = safe_grid(&mut rng, n, out_spatial, &in_shape[2..], o.align_corners, true, MARGIN);
    let out = grid_sample(TensorRef::new(&input, in_shape), TensorRef::new(&grid, &gshape), &o).unwrap();
    let mut want_shape = vec![n, in_shape[1]];
    want_shape.extend_from_slice(out_spatial);
    assert_eq!(out.shape, want_shape, "{what}: output shape");
    let r: Vec<f64> = rng.vec(out.data.len(), -1.0, 1.0);
    let rt = TensorRef::new(&r, &out.shape);
    let back = |req| {
        grid_sample_backward(rt, TensorRef::new(&input, in_shape), TensorRef::new(&grid, &gshape), &o, req)
            .unwrap()
    };
    let all = back(GradRequest::ALL);
    let gi = all.input.clone().expect("input gradient requested");
    let gg = all.grid.clone().expect("grid gradient requested");
    assert_eq!(gi.shape, in_shape, "{what}: grad_input shape");
    assert_eq!(gg.shape, gshape, "{what}: grad_grid shape");

    let loss = |x: &[f64], g: &[f64]| {
        let out = grid_sample(TensorRef::new(x, in_shape), TensorRef::new(g, &gshape), &o).unwrap();
        dot(&out.data, &r)
    };
    let num_in = fd_grad(&input, STEP, |x| loss(x, &grid));
    assert_grad_close(&gi.data, &num_in, TOL, &format!("{what}: d/d(input)"));
    let num_grid = fd_grad(&grid, STEP, |g| loss(&input, g));
    if o.mode == Interpolation::Nearest {
        assert!(gg.data.iter().all(|&v| v == 0.0), "{what}: nearest grad_grid must be exactly zero");
    }
    assert_grad_close(&gg.data, &num_grid, TOL, &format!("{what}: d/d(grid)"));
    // Sanity: the check is not vacuous.
    if o.mode != Interpolation::Nearest {
        assert!(gg.data.iter().any(|&v| v.abs() > 1e-3), "{what}: grad_grid is all (near) zero");
    }
    assert!(gi.data.iter().any(|&v| v.abs() > 1e-3), "{what}: grad_input is all (near) zero");

    let only_in = back(GradRequest::INPUT);
    assert!(only_in.grid.is_none(), "{what}: INPUT request returned a grid gradient");
    let oi = only_in.input.expect("INPUT request must return the input gradient");
    assert_eq!(oi.shape, gi.shape);
    assert_bits_eq(&oi.data, &gi.data, &format!("{what}: INPUT-only grad_input"));
    let only_p = back(GradRequest::PARAMS);
    assert!(only_p.input.is_none(), "{what}: PARAMS request returned an input gradient");
    let og = only_p.grid.expect("PARAMS request must return the grid gradient");
    assert_eq!(og.shape, gg.shape);
    assert_bits_eq(&og.data, &gg.data, &format!("{what}: PARAMS-only grad_grid"));
}

fn grid_sample_2d(mode: Interpolation, seed: u64) {
    let mut s = seed;
    for n in [2, 4] {
        for pad in PADS {
            for align in ALIGNS {
                s += 1;
                check_grid_sample(SampleOptions::new(mode, pad, align), &[n, 2, 5, 6], &[3, 4], s);
            }
        }
    }
}

#[test]
fn grid_sample_2d_bilinear() {
    grid_sample_2d(Interpolation::Bilinear, 100);
}

#[test]
fn grid_sample_2d_bicubic() {
    grid_sample_2d(Interpolation::Bicubic, 200);
}

#[test]
fn grid_sample_2d_nearest() {
    grid_sample_2d(Interpolation::Nearest, 300);
}

#[test]
fn grid_sample_3d_bilinear() {
    let mut s = 400;
    for pad in PADS {
        for align in ALIGNS {
            s += 1;
            let o = SampleOptions::new(Interpolation::Bilinear, pad, align);
            check_grid_sample(o, &[2, 2, 3, 4, 5], &[2, 3, 3], s);
        }
    }
    // The per-sample backward strategy (N >= 4).
    let o = SampleOptions::new(Interpolation::Bilinear, Padding::Zeros, false);
    check_grid_sample(o, &[4, 2, 3, 4, 5], &[2, 3, 3], 411);
}

#[test]
fn grid_sample_3d_nearest() {
    let mut s = 500;
    for pad in PADS {
        for align in ALIGNS {
            s += 1;
            let o = SampleOptions::new(Interpolation::Nearest, pad, align);
            check_grid_sample(o, &[2, 2, 3, 4, 5], &[2, 3, 3], s);
        }
    }
}

// ---------------------------------------------------------------------------------------
// Grid generators
// ---------------------------------------------------------------------------------------

#[test]
fn affine_grid_backward_matches_fd() {
    let mut rng = Rng::new(600);
    for (size, tshape) in [(vec![2, 3, 5, 6], vec![2, 2, 3]), (vec![2, 1, 3, 4, 5], vec![2, 3, 4])] {
        for align in ALIGNS {
            let theta: Vec<f64> = rng.vec(numel(&tshape), -1.5, 1.5);
            let grid = affine_grid(TensorRef::new(&theta, &tshape), &size, align).unwrap();
            let r: Vec<f64> = rng.vec(grid.data.len(), -1.0, 1.0);
            let an = affine_grid_backward(TensorRef::new(&r, &grid.shape), align).unwrap();
            assert_eq!(an.shape, tshape);
            let num = fd_grad(&theta, STEP, |t| {
                dot(&affine_grid(TensorRef::new(t, &tshape), &size, align).unwrap().data, &r)
            });
            assert_grad_close(&an.data, &num, TOL, &format!("affine_grid {size:?} align={align}"));
        }
    }
}

fn near_identity_projective(rng: &mut Rng, n: usize, scale: f64, persp: f64) -> Vec<f64> {
    let mut p = Vec::with_capacity(8 * n);
    for _ in 0..n {
        for (k, id) in PROJECTIVE_IDENTITY.iter().enumerate() {
            let s = if k >= 6 { persp } else { scale };
            p.push(id + rng.uniform(-s, s));
        }
    }
    p
}

#[test]
fn projective_grid_backward_matches_fd() {
    let mut rng = Rng::new(700);
    let size = [2, 1, 5, 6];
    let pshape = [2, PROJECTIVE_PARAMS];
    for align in ALIGNS {
        let params = near_identity_projective(&mut rng, 2, 0.1, 0.1);
        let grid = projective_grid(TensorRef::new(&params, &pshape), &size, align).unwrap();
        let r: Vec<f64> = rng.vec(grid.data.len(), -1.0, 1.0);
        let an = projective_grid_backward(
            TensorRef::new(&r, &grid.shape),
            TensorRef::new(&params, &pshape),
            align,
        )
        .unwrap();
        assert_eq!(an.shape, pshape);
        let num = fd_grad(&params, STEP, |p| {
            dot(&projective_grid(TensorRef::new(p, &pshape), &size, align).unwrap().data, &r)
        });
        assert_grad_close(&an.data, &num, TOL, &format!("projective_grid align={align}"));
    }
}

fn near_identity_tps(rng: &mut Rng, tps: &Tps, n: usize, scale: f64) -> Vec<f64> {
    tps.identity::<f64>(n).into_iter().map(|v| v + rng.uniform(-scale, scale)).collect()
}

#[test]
fn tps_grid_backward_matches_fd() {
    let mut rng = Rng::new(800);
    let size = [2, 1, 5, 6];
    for tps in [Tps::default(), Tps::new(3, 4).unwrap()] {
        let tshape = [2, tps.num_points(), 2];
        for align in ALIGNS {
            let theta = near_identity_tps(&mut rng, &tps, 2, 0.1);
            let grid = tps_grid(TensorRef::new(&theta, &tshape), &tps, &size, align).unwrap();
            let r: Vec<f64> = rng.vec(grid.data.len(), -1.0, 1.0);
            let an = tps_grid_backward(TensorRef::new(&r, &grid.shape), &tps, align).unwrap();
            assert_eq!(an.shape, tshape);
            let num = fd_grad(&theta, STEP, |t| {
                dot(&tps_grid(TensorRef::new(t, &tshape), &tps, &size, align).unwrap().data, &r)
            });
            assert_grad_close(&an.data, &num, TOL, &format!("tps_grid {tps:?} align={align}"));
        }
    }
}

#[test]
fn affine_family_to_affine_backward_matches_fd() {
    let mut rng = Rng::new(900);
    let n = 3;
    for fam in
        [AffineFamily::Translation, AffineFamily::Attention, AffineFamily::Similarity, AffineFamily::Affine]
    {
        let k = fam.num_params();
        let pshape = [n, k];
        let params: Vec<f64> =
            (0..n).flat_map(|_| fam.identity()).map(|v| v + rng.uniform(-0.3, 0.3)).collect();
        let theta = fam.to_affine(TensorRef::new(&params, &pshape)).unwrap();
        assert_eq!(theta.shape, [n, 2, 3]);
        let r: Vec<f64> = rng.vec(theta.data.len(), -1.0, 1.0);
        let an = fam
            .to_affine_backward(TensorRef::new(&r, &theta.shape), TensorRef::new(&params, &pshape))
            .unwrap();
        assert_eq!(an.shape, pshape);
        let num =
            fd_grad(&params, STEP, |p| dot(&fam.to_affine(TensorRef::new(p, &pshape)).unwrap().data, &r));
        assert_grad_close(&an.data, &num, TOL, &format!("{fam:?}::to_affine_backward"));
    }
}

// ---------------------------------------------------------------------------------------
// Fused warps
// ---------------------------------------------------------------------------------------

/// Forward of a fused warp: (input, params) -> output.
type FwdFn<'a> = Box<dyn Fn(&[f64], &[f64]) -> Tensor<f64> + 'a>;
/// Backward of a fused warp: (grad_output, input, params, request) -> gradients.
type BwdFn<'a> = Box<dyn Fn(&[f64], &[f64], &[f64], GradRequest) -> WarpGrads<f64> + 'a>;

/// A fused warp under test: forward and backward as closures over (input, params).
struct Fused<'a> {
    name: String,
    in_shape: Vec<usize>,
    p_shape: Vec<usize>,
    out_size: Vec<usize>,
    fwd: FwdFn<'a>,
    bwd: BwdFn<'a>,
}

fn check_fused(f: &Fused, input: &[f64], params: &[f64], seed: u64) {
    let mut rng = Rng::new(seed);
    let out = (f.fwd)(input, params);
    let mut want = vec![f.in_shape[0], f.in_shape[1]];
    want.extend_from_slice(&f.out_size);
    assert_eq!(out.shape, want, "{}: output shape", f.name);
    let r: Vec<f64> = rng.vec(out.data.len(), -1.0, 1.0);
    let all = (f.bwd)(&r, input, params, GradRequest::ALL);
    let gi = all.input.clone().expect("input gradient requested");
    let gp = all.params.clone().expect("params gradient requested");
    assert_eq!(gi.shape, f.in_shape, "{}: grad_input shape", f.name);
    assert_eq!(gp.shape, f.p_shape, "{}: grad_params shape", f.name);
    let num_in = fd_grad(input, STEP, |x| dot(&(f.fwd)(x, params).data, &r));
    assert_grad_close(&gi.data, &num_in, TOL, &format!("{}: d/d(input)", f.name));
    let num_p = fd_grad(params, STEP, |p| dot(&(f.fwd)(input, p).data, &r));
    assert_grad_close(&gp.data, &num_p, TOL, &format!("{}: d/d(params)", f.name));
    assert!(gp.data.iter().any(|&v| v.abs() > 1e-3), "{}: grad_params is all (near) zero", f.name);

    let only_in = (f.bwd)(&r, input, params, GradRequest::INPUT);
    assert!(only_in.params.is_none(), "{}: INPUT request returned a params gradient", f.name);
    let oi = only_in.input.expect("INPUT request must return the input gradient");
    assert_eq!(oi.shape, gi.shape);
    assert_bits_eq(&oi.data, &gi.data, &format!("{}: INPUT-only grad_input", f.name));
    let only_p = (f.bwd)(&r, input, params, GradRequest::PARAMS);
    assert!(only_p.input.is_none(), "{}: PARAMS request returned an input gradient", f.name);
    let op = only_p.params.expect("PARAMS request must return the params gradient");
    assert_eq!(op.shape, gp.shape);
    assert_bits_eq(&op.data, &gp.data, &format!("{}: PARAMS-only grad_params", f.name));
}

/// Draws parameters with `draw` until the grid they produce (from `grid_of`) keeps every
/// sample point clear of the kink lattice of the input.
fn clear_params(
    rng: &mut Rng,
    in_spatial: &[usize],
    align: bool,
    mut draw: impl FnMut(&mut Rng) -> Vec<f64>,
    grid_of: impl Fn(&[f64]) -> Vec<f64>,
) -> Vec<f64> {
    for _ in 0..200 {
        let p = draw(rng);
        if grid_clear_of_kinks(&grid_of(&p), in_spatial, align, MARGIN) {
            return p;
        }
    }
    panic!("no kink-free parameters found in 200 draws");
}

const MODES_2D: [Interpolation; 2] = [Interpolation::Bilinear, Interpolation::Bicubic];

/// (input spatial, output spatial) pairs: down-sampling and up-sampling.
const SIZES_2D: [([usize; 2], [usize; 2]); 2] = [([7, 9], [5, 6]), ([5, 6], [6, 8])];

#[test]
fn affine_sample_2d_backward_matches_fd() {
    let mut seed = 1000;
    for (ins, outs) in SIZES_2D {
        let n = 2;
        let in_shape = vec![n, 2, ins[0], ins[1]];
        let p_shape = vec![n, 2, 3];
        let gsize = [n, 1, outs[0], outs[1]];
        for mode in MODES_2D {
            for pad in PADS {
                for align in ALIGNS {
                    seed += 1;
                    let o = SampleOptions::new(mode, pad, align);
                    let mut rng = Rng::new(seed);
                    let input: Vec<f64> = rng.vec(numel(&in_shape), -1.0, 1.0);
                    let theta = clear_params(
                        &mut rng,
                        &ins,
                        align,
                        |r| {
                            (0..n)
                                .flat_map(|_| [1.0, 0.0, 0.0, 0.0, 1.0, 0.0])
                                .map(|v| v + r.uniform(-0.1, 0.1))
                                .collect()
                        },
                        |t| affine_grid(TensorRef::new(t, &p_shape), &gsize, align).unwrap().data,
                    );
                    let (is, ps) = (&in_shape, &p_shape);
                    let f = Fused {
                        name: label(&format!("affine_sample {ins:?}->{outs:?}"), &o),
                        in_shape: in_shape.clone(),
                        p_shape: p_shape.clone(),
                        out_size: outs.to_vec(),
                        fwd: Box::new(move |x, p| {
                            affine_sample(TensorRef::new(x, is), TensorRef::new(p, ps), &outs, &o).unwrap()
                        }),
                        bwd: Box::new(move |g, x, p, req| {
                            let gs = [n, 2, outs[0], outs[1]];
                            affine_sample_backward(
                                TensorRef::new(g, &gs),
                                TensorRef::new(x, is),
                                TensorRef::new(p, ps),
                                &o,
                                req,
                            )
                            .unwrap()
                        }),
                    };
                    check_fused(&f, &input, &theta, seed + 7777);
                }
            }
        }
    }
}

#[test]
fn affine_sample_3d_backward_matches_fd() {
    let mut seed = 1100;
    let ins = [3usize, 4, 5];
    let outs = [2usize, 3, 4];
    for n in [2usize, 4] {
        let in_shape = vec![n, 2, ins[0], ins[1], ins[2]];
        let p_shape = vec![n, 3, 4];
        let gsize = [n, 1, outs[0], outs[1], outs[2]];
        for pad in PADS {
            for align in ALIGNS {
                seed += 1;
                let o = SampleOptions::new(Interpolation::Bilinear, pad, align);
                let mut rng = Rng::new(seed);
                let input: Vec<f64> = rng.vec(numel(&in_shape), -1.0, 1.0);
                let theta = clear_params(
                    &mut rng,
                    &ins,
                    align,
                    |r| {
                        (0..n)
                            .flat_map(|_| [1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0])
                            .map(|v| v + r.uniform(-0.1, 0.1))
                            .collect()
                    },
                    |t| affine_grid(TensorRef::new(t, &p_shape), &gsize, align).unwrap().data,
                );
                let (is, ps) = (&in_shape, &p_shape);
                let f = Fused {
                    name: label(&format!("affine_sample 3-D n={n}"), &o),
                    in_shape: in_shape.clone(),
                    p_shape: p_shape.clone(),
                    out_size: outs.to_vec(),
                    fwd: Box::new(move |x, p| {
                        affine_sample(TensorRef::new(x, is), TensorRef::new(p, ps), &outs, &o).unwrap()
                    }),
                    bwd: Box::new(move |g, x, p, req| {
                        let gs = [n, 2, outs[0], outs[1], outs[2]];
                        affine_sample_backward(
                            TensorRef::new(g, &gs),
                            TensorRef::new(x, is),
                            TensorRef::new(p, ps),
                            &o,
                            req,
                        )
                        .unwrap()
                    }),
                };
                check_fused(&f, &input, &theta, seed + 7777);
            }
        }
    }
}

#[test]
fn projective_sample_backward_matches_fd() {
    let mut seed = 1200;
    for (ins, outs) in SIZES_2D {
        // N = 4 exercises the per-sample backward strategy, N = 2 the other one.
        for n in [2usize, 4] {
            let in_shape = vec![n, 2, ins[0], ins[1]];
            let p_shape = vec![n, PROJECTIVE_PARAMS];
            let gsize = [n, 1, outs[0], outs[1]];
            for mode in MODES_2D {
                for pad in PADS {
                    for align in ALIGNS {
                        seed += 1;
                        let o = SampleOptions::new(mode, pad, align);
                        let mut rng = Rng::new(seed);
                        let input: Vec<f64> = rng.vec(numel(&in_shape), -1.0, 1.0);
                        let params = clear_params(
                            &mut rng,
                            &ins,
                            align,
                            |r| near_identity_projective(r, n, 0.08, 0.08),
                            |p| projective_grid(TensorRef::new(p, &p_shape), &gsize, align).unwrap().data,
                        );
                        let (is, ps) = (&in_shape, &p_shape);
                        let f = Fused {
                            name: label(&format!("projective_sample {ins:?}->{outs:?} n={n}"), &o),
                            in_shape: in_shape.clone(),
                            p_shape: p_shape.clone(),
                            out_size: outs.to_vec(),
                            fwd: Box::new(move |x, p| {
                                projective_sample(TensorRef::new(x, is), TensorRef::new(p, ps), &outs, &o)
                                    .unwrap()
                            }),
                            bwd: Box::new(move |g, x, p, req| {
                                let gs = [n, 2, outs[0], outs[1]];
                                projective_sample_backward(
                                    TensorRef::new(g, &gs),
                                    TensorRef::new(x, is),
                                    TensorRef::new(p, ps),
                                    &o,
                                    req,
                                )
                                .unwrap()
                            }),
                        };
                        check_fused(&f, &input, &params, seed + 7777);
                    }
                }
            }
        }
    }
}

#[test]
fn tps_sample_backward_matches_fd() {
    let mut seed = 1300;
    for tps in [Tps::default(), Tps::new(3, 4).unwrap()] {
        for (ins, outs) in SIZES_2D {
            let n = 2;
            let k = tps.num_points();
            let in_shape = vec![n, 2, ins[0], ins[1]];
            let p_shape = vec![n, k, 2];
            let gsize = [n, 1, outs[0], outs[1]];
            for mode in MODES_2D {
                for pad in PADS {
                    for align in ALIGNS {
                        seed += 1;
                        let o = SampleOptions::new(mode, pad, align);
                        let mut rng = Rng::new(seed);
                        let input: Vec<f64> = rng.vec(numel(&in_shape), -1.0, 1.0);
                        let theta = clear_params(
                            &mut rng,
                            &ins,
                            align,
                            |r| near_identity_tps(r, &tps, n, 0.08),
                            |t| tps_grid(TensorRef::new(t, &p_shape), &tps, &gsize, align).unwrap().data,
                        );
                        let (is, ps, tp) = (&in_shape, &p_shape, &tps);
                        let f = Fused {
                            name: label(&format!("tps_sample {tps:?} {ins:?}->{outs:?}"), &o),
                            in_shape: in_shape.clone(),
                            p_shape: p_shape.clone(),
                            out_size: outs.to_vec(),
                            fwd: Box::new(move |x, p| {
                                tps_sample(TensorRef::new(x, is), TensorRef::new(p, ps), tp, &outs, &o)
                                    .unwrap()
                            }),
                            bwd: Box::new(move |g, x, p, req| {
                                let gs = [n, 2, outs[0], outs[1]];
                                tps_sample_backward(
                                    TensorRef::new(g, &gs),
                                    TensorRef::new(x, is),
                                    TensorRef::new(p, ps),
                                    tp,
                                    &o,
                                    req,
                                )
                                .unwrap()
                            }),
                        };
                        check_fused(&f, &input, &theta, seed + 7777);
                    }
                }
            }
        }
    }
}

/// The families' parameters through `to_affine` then the fused affine warp, end to end.
#[test]
fn affine_family_through_affine_sample_matches_fd() {
    let mut seed = 1400;
    let (ins, outs) = ([7usize, 9], [5usize, 6]);
    let n = 2;
    let in_shape = [n, 2, ins[0], ins[1]];
    let gsize = [n, 1, outs[0], outs[1]];
    let gs = [n, 2, outs[0], outs[1]];
    for fam in
        [AffineFamily::Translation, AffineFamily::Attention, AffineFamily::Similarity, AffineFamily::Affine]
    {
        for align in ALIGNS {
            seed += 1;
            let o = SampleOptions::new(Interpolation::Bicubic, Padding::Reflection, align);
            let p_shape = [n, fam.num_params()];
            let mut rng = Rng::new(seed);
            let input: Vec<f64> = rng.vec(numel(&in_shape), -1.0, 1.0);
            let to_theta = |p: &[f64]| fam.to_affine(TensorRef::new(p, &p_shape)).unwrap();
            let params = clear_params(
                &mut rng,
                &ins,
                align,
                |r| (0..n).flat_map(|_| fam.identity()).map(|v| v + r.uniform(-0.1, 0.1)).collect(),
                |p| affine_grid(to_theta(p).view(), &gsize, align).unwrap().data,
            );
            let theta = to_theta(&params);
            let r: Vec<f64> = rng.vec(numel(&gs), -1.0, 1.0);
            let g = affine_sample_backward(
                TensorRef::new(&r, &gs),
                TensorRef::new(&input, &in_shape),
                theta.view(),
                &o,
                GradRequest::PARAMS,
            )
            .unwrap();
            let gt = g.params.unwrap();
            let an = fam.to_affine_backward(gt.view(), TensorRef::new(&params, &p_shape)).unwrap();
            let num = fd_grad(&params, STEP, |p| {
                let out =
                    affine_sample(TensorRef::new(&input, &in_shape), to_theta(p).view(), &outs, &o).unwrap();
                dot(&out.data, &r)
            });
            assert_grad_close(&an.data, &num, TOL, &format!("{fam:?} via affine_sample align={align}"));
        }
    }
}
