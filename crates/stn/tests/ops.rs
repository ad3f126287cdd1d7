//! The Burn ops against stn-kernels (bitwise: the native path calls them) and the generic
//! tensor-op path against the native one, forward and gradients, for every mode, padding and
//! alignment.

use crate::common::*;
use burn::tensor::{Device, Tensor};
use stn::{generic, ops, Interpolation, Padding, SampleOptions, Tps};
use stn_kernels::{self as k, GradRequest, TensorRef};

fn all_options(three_d: bool) -> Vec<SampleOptions> {
    let modes: &[Interpolation] = if three_d {
        &[Interpolation::Nearest, Interpolation::Bilinear]
    } else {
        &[Interpolation::Nearest, Interpolation::Bilinear, Interpolation::Bicubic]
    };
    let mut v = Vec::new();
    for &m in modes {
        for p in [Padding::Zeros, Padding::Border, Padding::Reflection] {
            for a in [false, true] {
                v.push(SampleOptions::new(m, p, a));
            }
        }
    }
    v
}

/// Output, output shape, the output weights, input gradient, parameter gradient.
type Outcome = (Vec<f64>, Vec<usize>, Vec<f64>, Vec<f64>, Vec<f64>);

/// Runs `f` on (input, params) under autodiff with the loss `sum(out * w)`.
#[allow(clippy::too_many_arguments)]
fn run<const D: usize, const P: usize>(
    f: &dyn Fn(Tensor<D>, Tensor<P>) -> Tensor<D>,
    x: &[f64],
    xs: [usize; D],
    p: &[f64],
    ps: [usize; P],
    f64_: bool,
    device: &Device,
    seed: u64,
) -> Outcome {
    let xt = tensor(x, xs, f64_, device).require_grad();
    let pt = tensor(p, ps, f64_, device).require_grad();
    let out = f(xt.clone(), pt.clone());
    let dims = out.dims().to_vec();
    let w = weights(&out, &mut Rng::new(seed), device);
    let wv = values(w.clone());
    let grads = (out.clone() * w).sum().backward();
    let gx = values(xt.grad(&grads).expect("input grad"));
    // A grid that only picks pixels (nearest) may be disconnected on the generic path: zeros.
    let gp = pt.grad(&grads).map(values).unwrap_or_else(|| vec![0.0; p.len()]);
    (values(out), dims, wv, gx, gp)
}

fn opts_name(o: &SampleOptions) -> String {
    format!("{:?}/{:?}/align={}", o.mode, o.padding, o.align_corners)
}

#[test]
fn grid_sample_2d_native_equals_kernels_and_generic() {
    let ad = autodiff();
    for f64_ in [true, false] {
        for (ci, o) in all_options(false).into_iter().enumerate() {
            let mut rng = Rng::new(10 + ci as u64);
            let (xs, gs) = ([2, 3, 5, 7], [2, 4, 6, 2]);
            let x = rng.uniform(2 * 3 * 5 * 7, -1.0, 1.0);
            let g = rng.uniform(2 * 4 * 6 * 2, -1.25, 1.25);
            let native = |x: Tensor<4>, g: Tensor<4>| ops::grid_sample(x, g, o).unwrap();
            let gen = |x: Tensor<4>, g: Tensor<4>| generic::grid_sample(x, g, o).unwrap();
            let (out, dims, w, gx, gg) = run(&native, &x, xs, &g, gs, f64_, &ad, 7);
            let name = format!("grid_sample {} f64={f64_}", opts_name(&o));
            // Native = the kernels, bitwise.
            if f64_ {
                let kout = k::grid_sample(TensorRef::new(&x, &xs), TensorRef::new(&g, &gs), &o).unwrap();
                assert_eq!(out, kout.data, "{name}: forward differs from stn-kernels");
                assert_eq!(dims, kout.shape);
                let kg = k::grid_sample_backward(
                    TensorRef::new(&w, &dims),
                    TensorRef::new(&x, &xs),
                    TensorRef::new(&g, &gs),
                    &o,
                    GradRequest::ALL,
                )
                .unwrap();
                assert_eq!(gx, kg.input.unwrap().data, "{name}: input grad differs from stn-kernels");
                assert_eq!(gg, kg.grid.unwrap().data, "{name}: grid grad differs from stn-kernels");
            }
            // Generic = native, within rounding.
            let (gout, _, _, ggx, ggg) = run(&gen, &x, xs, &g, gs, f64_, &ad, 7);
            let tol = if f64_ { 1e-12 } else { 2e-5 };
            assert_close(&format!("{name}: generic forward"), &gout, &out, tol);
            assert_close(&format!("{name}: generic input grad"), &ggx, &gx, tol);
            let gtol = if o.mode == Interpolation::Bicubic && !f64_ { 1e-4 } else { tol * 10.0 };
            assert_close(&format!("{name}: generic grid grad"), &ggg, &gg, gtol);
        }
    }
}

#[test]
fn grid_sample_3d_native_equals_kernels_and_generic() {
    let ad = autodiff();
    for (ci, o) in all_options(true).into_iter().enumerate() {
        let mut rng = Rng::new(100 + ci as u64);
        let (xs, gs) = ([2, 2, 3, 4, 5], [2, 2, 3, 4, 3]);
        let x = rng.uniform(xs.iter().product(), -1.0, 1.0);
        let g = rng.uniform(gs.iter().product(), -1.25, 1.25);
        let native = |x: Tensor<5>, g: Tensor<5>| ops::grid_sample(x, g, o).unwrap();
        let gen = |x: Tensor<5>, g: Tensor<5>| generic::grid_sample(x, g, o).unwrap();
        let (out, dims, w, gx, gg) = run(&native, &x, xs, &g, gs, true, &ad, 3);
        let name = format!("grid_sample 3-D {}", opts_name(&o));
        let kout = k::grid_sample(TensorRef::new(&x, &xs), TensorRef::new(&g, &gs), &o).unwrap();
        assert_eq!(out, kout.data, "{name}: forward differs from stn-kernels");
        let kg = k::grid_sample_backward(
            TensorRef::new(&w, &dims),
            TensorRef::new(&x, &xs),
            TensorRef::new(&g, &gs),
            &o,
            GradRequest::ALL,
        )
        .unwrap();
        assert_eq!(gx, kg.input.unwrap().data, "{name}: input grad");
        assert_eq!(gg, kg.grid.unwrap().data, "{name}: grid grad");
        let (gout, _, _, ggx, ggg) = run(&gen, &x, xs, &g, gs, true, &ad, 3);
        assert_close(&format!("{name}: generic forward"), &gout, &out, 1e-12);
        assert_close(&format!("{name}: generic input grad"), &ggx, &gx, 1e-12);
        assert_close(&format!("{name}: generic grid grad"), &ggg, &gg, 1e-11);
    }
}

/// Fused warps: native equals the kernels bitwise; generic (grid + sample) equals native.
#[test]
fn fused_warps_native_equal_kernels_and_generic() {
    let ad = autodiff();
    let tps = Tps::new(3, 4).unwrap();
    let o = SampleOptions::new(Interpolation::Bilinear, Padding::Zeros, false);
    let ob = SampleOptions::new(Interpolation::Bicubic, Padding::Reflection, true);
    let mut rng = Rng::new(5);
    let xs = [2, 3, 6, 5];
    let x = rng.uniform(xs.iter().product(), -1.0, 1.0);
    let out_size = [4, 7];
    for o in [o, ob] {
        // Affine.
        let th: Vec<f64> = (0..2)
            .flat_map(|_| {
                let j = rng.uniform(6, -0.3, 0.3);
                vec![1.0 + j[0], j[1], j[2], j[3], 0.9 + j[4], j[5]]
            })
            .collect();
        let f = |x: Tensor<4>, t: Tensor<3>| ops::affine_sample(x, t, &out_size, o).unwrap();
        let gf = |x: Tensor<4>, t: Tensor<3>| generic::affine_sample(x, t, &out_size, o).unwrap();
        let (out, dims, w, gx, gt) = run(&f, &x, xs, &th, [2, 2, 3], true, &ad, 1);
        let kout = k::affine_sample(TensorRef::new(&x, &xs), TensorRef::new(&th, &[2, 2, 3]), &out_size, &o)
            .unwrap();
        assert_eq!(out, kout.data, "affine forward");
        let kg = k::affine_sample_backward(
            TensorRef::new(&w, &dims),
            TensorRef::new(&x, &xs),
            TensorRef::new(&th, &[2, 2, 3]),
            &o,
            GradRequest::ALL,
        )
        .unwrap();
        assert_eq!(gx, kg.input.unwrap().data, "affine input grad");
        assert_eq!(gt, kg.params.unwrap().data, "affine theta grad");
        let (gout, _, _, ggx, ggt) = run(&gf, &x, xs, &th, [2, 2, 3], true, &ad, 1);
        assert_close("affine generic forward", &gout, &out, 1e-12);
        assert_close("affine generic input grad", &ggx, &gx, 1e-12);
        assert_close("affine generic theta grad", &ggt, &gt, 1e-10);

        // Projective.
        let mut hp = Vec::new();
        for _ in 0..2 {
            let j = rng.uniform(8, -0.2, 0.2);
            let id = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0];
            hp.extend(id.iter().zip(&j).map(|(a, b)| a + b));
        }
        let f = |x: Tensor<4>, t: Tensor<2>| ops::projective_sample(x, t, out_size, o).unwrap();
        let gf = |x: Tensor<4>, t: Tensor<2>| generic::projective_sample(x, t, out_size, o).unwrap();
        let (out, dims, w, gx, gt) = run(&f, &x, xs, &hp, [2, 8], true, &ad, 2);
        let kout = k::projective_sample(TensorRef::new(&x, &xs), TensorRef::new(&hp, &[2, 8]), &out_size, &o)
            .unwrap();
        assert_eq!(out, kout.data, "projective forward");
        let kg = k::projective_sample_backward(
            TensorRef::new(&w, &dims),
            TensorRef::new(&x, &xs),
            TensorRef::new(&hp, &[2, 8]),
            &o,
            GradRequest::ALL,
        )
        .unwrap();
        assert_eq!(gx, kg.input.unwrap().data, "projective input grad");
        assert_eq!(gt, kg.params.unwrap().data, "projective params grad");
        let (gout, _, _, ggx, ggt) = run(&gf, &x, xs, &hp, [2, 8], true, &ad, 2);
        assert_close("projective generic forward", &gout, &out, 1e-12);
        assert_close("projective generic input grad", &ggx, &gx, 1e-12);
        assert_close("projective generic params grad", &ggt, &gt, 1e-10);

        // Thin-plate spline.
        let kp = tps.num_points();
        let mut tt = tps.identity::<f64>(2);
        for (v, j) in tt.iter_mut().zip(rng.uniform(2 * kp * 2, -0.15, 0.15)) {
            *v += j;
        }
        let f = move |x: Tensor<4>, t: Tensor<3>| ops::tps_sample(x, t, tps, out_size, o).unwrap();
        let gf = move |x: Tensor<4>, t: Tensor<3>| generic::tps_sample(x, t, tps, out_size, o).unwrap();
        let (out, dims, w, gx, gt) = run(&f, &x, xs, &tt, [2, kp, 2], true, &ad, 3);
        let kout =
            k::tps_sample(TensorRef::new(&x, &xs), TensorRef::new(&tt, &[2, kp, 2]), &tps, &out_size, &o)
                .unwrap();
        assert_eq!(out, kout.data, "tps forward");
        let kg = k::tps_sample_backward(
            TensorRef::new(&w, &dims),
            TensorRef::new(&x, &xs),
            TensorRef::new(&tt, &[2, kp, 2]),
            &tps,
            &o,
            GradRequest::ALL,
        )
        .unwrap();
        assert_eq!(gx, kg.input.unwrap().data, "tps input grad");
        assert_eq!(gt, kg.params.unwrap().data, "tps theta grad");
        let (gout, _, _, ggx, ggt) = run(&gf, &x, xs, &tt, [2, kp, 2], true, &ad, 3);
        assert_close("tps generic forward", &gout, &out, 1e-11);
        assert_close("tps generic input grad", &ggx, &gx, 1e-11);
        assert_close("tps generic theta grad", &ggt, &gt, 1e-9);
    }
}

#[test]
fn affine_3d_native_equals_generic() {
    let ad = autodiff();
    let o = SampleOptions::new(Interpolation::Bilinear, Padding::Border, false);
    let mut rng = Rng::new(9);
    let xs = [2, 2, 4, 5, 3];
    let x = rng.uniform(xs.iter().product(), -1.0, 1.0);
    let mut th = Vec::new();
    for _ in 0..2 {
        let j = rng.uniform(12, -0.2, 0.2);
        let id = [1.0, 0., 0., 0., 0., 1., 0., 0., 0., 0., 1., 0.];
        th.extend(id.iter().zip(&j).map(|(a, b)| a + b));
    }
    let out_size = [3, 4, 4];
    let f = |x: Tensor<5>, t: Tensor<3>| ops::affine_sample(x, t, &out_size, o).unwrap();
    let gf = |x: Tensor<5>, t: Tensor<3>| generic::affine_sample(x, t, &out_size, o).unwrap();
    let (out, _, _, gx, gt) = run(&f, &x, xs, &th, [2, 3, 4], true, &ad, 4);
    let (gout, _, _, ggx, ggt) = run(&gf, &x, xs, &th, [2, 3, 4], true, &ad, 4);
    assert_close("affine 3-D generic forward", &gout, &out, 1e-12);
    assert_close("affine 3-D generic input grad", &ggx, &gx, 1e-12);
    assert_close("affine 3-D generic theta grad", &ggt, &gt, 1e-10);
}

/// Grids from parameters: native equals the kernels, generic equals native, and both
/// gradients agree.
#[test]
fn param_grids_native_equal_kernels_and_generic() {
    let ad = autodiff();
    let tps = Tps::square(9).unwrap();
    let mut rng = Rng::new(11);
    for align in [false, true] {
        let th = rng.uniform(12, -1.0, 1.0);
        let size = [2, 1, 5, 6];
        let n = values(ops::affine_grid::<4>(tensor(&th, [2, 2, 3], true, &ad), &size, align).unwrap());
        let kg = k::affine_grid(TensorRef::new(&th, &[2, 2, 3]), &size, align).unwrap();
        assert_eq!(n, kg.data, "affine grid");
        let grad_of = |generic_: bool| {
            let t = tensor(&th, [2, 2, 3], true, &ad).require_grad();
            let g: Tensor<4> = if generic_ {
                generic::affine_grid(t.clone(), &size, align).unwrap()
            } else {
                ops::affine_grid(t.clone(), &size, align).unwrap()
            };
            let w = weights(&g, &mut Rng::new(1), &ad);
            let gr = (g.clone() * w).sum().backward();
            (values(g), values(t.grad(&gr).unwrap()))
        };
        let (a, ga) = grad_of(false);
        let (b, gb) = grad_of(true);
        assert_close("affine grid generic", &b, &a, 1e-12);
        assert_close("affine grid generic grad", &gb, &ga, 1e-12);

        let mut hp = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0];
        for (v, j) in hp.iter_mut().zip(rng.uniform(8, -0.2, 0.2)) {
            *v += j;
        }
        let hp2: Vec<f64> = hp.iter().chain(hp.iter()).copied().collect();
        let grad_of = |generic_: bool| {
            let t = tensor(&hp2, [2, 8], true, &ad).require_grad();
            let g = if generic_ {
                generic::projective_grid(t.clone(), size, align).unwrap()
            } else {
                ops::projective_grid(t.clone(), size, align).unwrap()
            };
            let w = weights(&g, &mut Rng::new(2), &ad);
            let gr = (g.clone() * w).sum().backward();
            (values(g), values(t.grad(&gr).unwrap()))
        };
        let (a, ga) = grad_of(false);
        let kg = k::projective_grid(TensorRef::new(&hp2, &[2, 8]), &size, align).unwrap();
        assert_eq!(a, kg.data, "projective grid");
        let (b, gb) = grad_of(true);
        assert_close("projective grid generic", &b, &a, 1e-12);
        assert_close("projective grid generic grad", &gb, &ga, 1e-11);

        let mut tt = tps.identity::<f64>(2);
        for (v, j) in tt.iter_mut().zip(rng.uniform(36, -0.2, 0.2)) {
            *v += j;
        }
        let grad_of = |generic_: bool| {
            let t = tensor(&tt, [2, 9, 2], true, &ad).require_grad();
            let g = if generic_ {
                generic::tps_grid(t.clone(), tps, size, align).unwrap()
            } else {
                ops::tps_grid(t.clone(), tps, size, align).unwrap()
            };
            let w = weights(&g, &mut Rng::new(3), &ad);
            let gr = (g.clone() * w).sum().backward();
            (values(g), values(t.grad(&gr).unwrap()))
        };
        let (a, ga) = grad_of(false);
        let kg = k::tps_grid(TensorRef::new(&tt, &[2, 9, 2]), &tps, &size, align).unwrap();
        assert_eq!(a, kg.data, "tps grid");
        let (b, gb) = grad_of(true);
        assert_close("tps grid generic", &b, &a, 1e-12);
        assert_close("tps grid generic grad", &gb, &ga, 1e-11);
    }
}

/// Without autodiff, and with only one input requiring a gradient, the op still runs and gives
/// the same values; the untracked input gets no gradient.
#[test]
fn partial_gradients_and_plain_backend() {
    let o = SampleOptions::default();
    let mut rng = Rng::new(4);
    let x = rng.uniform(2 * 5 * 5, -1.0, 1.0);
    let g = rng.uniform(2 * 3 * 3 * 2, -1.0, 1.0);
    let plain = values(
        ops::grid_sample(
            tensor(&x, [2, 1, 5, 5], false, &flex()),
            tensor(&g, [2, 3, 3, 2], false, &flex()),
            o,
        )
        .unwrap(),
    );
    let ad = autodiff();
    let xt = tensor(&x, [2, 1, 5, 5], false, &ad);
    let gt = tensor(&g, [2, 3, 3, 2], false, &ad).require_grad();
    let out = ops::grid_sample(xt.clone(), gt.clone(), o).unwrap();
    assert_eq!(values(out.clone()), plain);
    let grads = out.sum().backward();
    assert!(xt.grad(&grads).is_none(), "input did not require a gradient");
    let gg = values(gt.grad(&grads).unwrap());
    assert!(gg.iter().any(|v| *v != 0.0));
}

/// A non-contiguous input (a transposed view) gives the same result as its contiguous copy.
#[test]
fn non_contiguous_inputs() {
    let o = SampleOptions::default();
    let mut rng = Rng::new(8);
    let x = rng.uniform(2 * 6 * 5, -1.0, 1.0);
    let g = rng.uniform(2 * 3 * 4 * 2, -1.0, 1.0);
    let dev = flex();
    let xt = tensor(&x, [1, 2, 6, 5], true, &dev);
    let view = xt.clone().swap_dims(2, 3);
    let copy = tensor(&values(view.clone()), [1, 2, 5, 6], true, &dev);
    let gt = tensor(&g, [1, 6, 4, 2], true, &dev);
    let a = values(ops::grid_sample(view, gt.clone(), o).unwrap());
    let b = values(ops::grid_sample(copy, gt, o).unwrap());
    assert_eq!(a, b);
}
