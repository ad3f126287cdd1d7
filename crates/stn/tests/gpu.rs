//! The CubeCL kernels (the `gpu` feature) on Vulkan — Mesa's lavapipe where there is no GPU —
//! against stn-kernels on the CPU (f64, the reference), forward and every gradient, for every
//! op, mode, padding and alignment; gradients against finite differences on the device; bitwise
//! repeatability of the backward; and the device really being Vulkan (no silent fallback).
//!
//! Tolerances (largest |gpu - cpu| / (1 + |cpu|)): outputs and input gradients 2e-4; grid and
//! parameter gradients 2e-3 (f32 sums over many positions where the CPU sums in f64).
#![cfg(feature = "gpu")]

use crate::common::*;
use burn::tensor::{Device, Tensor, TensorData};
use stn::device::{select, DeviceKind};
use stn::{ops, Interpolation, Padding, SampleOptions, Tps};

const TOL: f64 = 2e-4;
const GTOL: f64 = 2e-3;

/// The Vulkan device (lavapipe on a machine without a GPU); the test fails where there is none.
fn vulkan() -> Device {
    let s = select(DeviceKind::Vulkan).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(s.api, "Vulkan", "the vulkan device runs on {}", s.api);
    s.device
}

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

/// Output, input gradient, parameter gradient of `sum(f(x, p) * w)` (w random with `seed`).
type Outcome = (Vec<f64>, Vec<f64>, Vec<f64>);

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
    let w = weights(&out, &mut Rng::new(seed), device);
    let grads = (out.clone() * w).sum().backward();
    let gx = values(xt.grad(&grads).expect("input grad"));
    let gp = pt.grad(&grads).map(values).unwrap_or_else(|| vec![0.0; p.len()]);
    (values(out), gx, gp)
}

/// Runs `f` on the GPU (f32) and on the CPU (f64) and compares; nearest sampling has no
/// coordinate gradient to compare.
#[allow(clippy::too_many_arguments)]
fn compare<const D: usize, const P: usize>(
    name: &str,
    f: &dyn Fn(Tensor<D>, Tensor<P>) -> Tensor<D>,
    x: &[f64],
    xs: [usize; D],
    p: &[f64],
    ps: [usize; P],
    nearest: bool,
) {
    let gpu = vulkan().autodiff();
    let before = stn::device::gpu_op_count();
    let (go, gx, gp) = run(f, x, xs, p, ps, false, &gpu, 7);
    // The forward and the backward ran the CubeCL kernels (not the generic tensor-op path).
    assert!(stn::device::gpu_op_count() >= before + 2, "{name}: the GPU kernels did not run");
    let (co, cx, cp) = run(f, x, xs, p, ps, true, &autodiff(), 7);
    assert_close(&format!("{name}: forward"), &go, &co, TOL);
    assert_close(&format!("{name}: input grad"), &gx, &cx, TOL);
    if !nearest {
        assert_close(&format!("{name}: grid/params grad"), &gp, &cp, GTOL);
    }
    // The comparison can fail: the CPU result is not trivially zero.
    assert!(co.iter().any(|v| v.abs() > 1e-3), "{name}: degenerate case");
}

fn name(o: &SampleOptions) -> String {
    format!("{:?}/{:?}/align={}", o.mode, o.padding, o.align_corners)
}

fn near_identity(rng: &mut Rng, n: usize, id: &[f64], jitter: f64) -> Vec<f64> {
    (0..n)
        .flat_map(|_| {
            id.iter().zip(rng.uniform(id.len(), -jitter, jitter)).map(|(a, b)| a + b).collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn device_is_vulkan_and_auto_picks_it_too() {
    let v = select(DeviceKind::Vulkan).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(v.api, "Vulkan");
    // Where Vulkan exists, wgpu's own choice must be Vulkan as well: a fallback to OpenGL (or
    // anything else) fails here instead of passing quietly.
    let w = select(DeviceKind::Wgpu).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(w.api, "Vulkan", "wgpu fell back to {} ({})", w.api, w.adapter);
    assert!(stn::ops::has_native_sampler(&v.device, burn::tensor::DType::F32));
    assert!(!stn::ops::has_native_sampler(&v.device, burn::tensor::DType::F64));
    let err = select_err("opengl");
    assert!(err.contains("unknown device"), "{err}");
}

fn select_err(name: &str) -> String {
    stn::device::select_by_name(name).map(|s| s.to_string()).unwrap_err().to_string()
}

#[test]
fn grid_sample_2d_equals_cpu() {
    for (ci, o) in all_options(false).into_iter().enumerate() {
        let mut rng = Rng::new(10 + ci as u64);
        let (xs, gs) = ([2, 3, 5, 7], [2, 4, 6, 2]);
        let x = rng.uniform(2 * 3 * 5 * 7, -1.0, 1.0);
        let g = rng.uniform(2 * 4 * 6 * 2, -1.25, 1.25);
        let f = |x: Tensor<4>, g: Tensor<4>| ops::grid_sample(x, g, o).unwrap();
        let nearest = o.mode == Interpolation::Nearest;
        compare(&format!("grid_sample 2-D {}", name(&o)), &f, &x, xs, &g, gs, nearest);
    }
}

#[test]
fn grid_sample_3d_equals_cpu() {
    for (ci, o) in all_options(true).into_iter().enumerate() {
        let mut rng = Rng::new(40 + ci as u64);
        let (xs, gs) = ([2, 2, 4, 5, 6], [2, 3, 4, 5, 3]);
        let x = rng.uniform(xs.iter().product(), -1.0, 1.0);
        let g = rng.uniform(gs.iter().product(), -1.25, 1.25);
        let f = |x: Tensor<5>, g: Tensor<5>| ops::grid_sample(x, g, o).unwrap();
        let nearest = o.mode == Interpolation::Nearest;
        compare(&format!("grid_sample 3-D {}", name(&o)), &f, &x, xs, &g, gs, nearest);
    }
}

#[test]
fn fused_warps_equal_cpu() {
    let tps = Tps::new(3, 4).unwrap();
    let xs = [2, 3, 6, 5];
    let out_size = [4, 7];
    for (ci, o) in all_options(false).into_iter().enumerate() {
        let mut rng = Rng::new(70 + ci as u64);
        let x = rng.uniform(xs.iter().product(), -1.0, 1.0);
        let nearest = o.mode == Interpolation::Nearest;
        let th = near_identity(&mut rng, 2, &[1.0, 0.0, 0.0, 0.0, 1.0, 0.0], 0.3);
        let f = |x: Tensor<4>, t: Tensor<3>| ops::affine_sample(x, t, &out_size, o).unwrap();
        compare(&format!("affine {}", name(&o)), &f, &x, xs, &th, [2, 2, 3], nearest);

        let hp = near_identity(&mut rng, 2, &[1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0], 0.2);
        let f = |x: Tensor<4>, t: Tensor<2>| ops::projective_sample(x, t, out_size, o).unwrap();
        compare(&format!("projective {}", name(&o)), &f, &x, xs, &hp, [2, 8], nearest);

        let kp = tps.num_points();
        let mut tt = tps.identity::<f64>(2);
        for (v, j) in tt.iter_mut().zip(rng.uniform(2 * kp * 2, -0.15, 0.15)) {
            *v += j;
        }
        let f = move |x: Tensor<4>, t: Tensor<3>| ops::tps_sample(x, t, tps, out_size, o).unwrap();
        compare(&format!("tps {}", name(&o)), &f, &x, xs, &tt, [2, kp, 2], nearest);
    }
}

#[test]
fn affine_3d_equals_cpu() {
    let xs = [2, 2, 4, 5, 3];
    let out_size = [3, 4, 4];
    for (ci, o) in all_options(true).into_iter().enumerate() {
        let mut rng = Rng::new(100 + ci as u64);
        let x = rng.uniform(xs.iter().product(), -1.0, 1.0);
        let id = [1.0, 0., 0., 0., 0., 1., 0., 0., 0., 0., 1., 0.];
        let th = near_identity(&mut rng, 2, &id, 0.2);
        let f = |x: Tensor<5>, t: Tensor<3>| ops::affine_sample(x, t, &out_size, o).unwrap();
        let nearest = o.mode == Interpolation::Nearest;
        compare(&format!("affine 3-D {}", name(&o)), &f, &x, xs, &th, [2, 3, 4], nearest);
    }
}

/// Grids from parameters on the device: value and the gradient of `sum(grid * w)`.
#[test]
fn param_grids_equal_cpu() {
    let gpu = vulkan().autodiff();
    let cpu = autodiff();
    let tps = Tps::square(9).unwrap();
    for align in [false, true] {
        let mut rng = Rng::new(130 + align as u64);
        let th = near_identity(&mut rng, 2, &[1.0, 0.0, 0.0, 0.0, 1.0, 0.0], 0.3);
        let hp = near_identity(&mut rng, 2, &[1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0], 0.2);
        let th3 = near_identity(&mut rng, 2, &[1.0, 0., 0., 0., 0., 1., 0., 0., 0., 0., 1., 0.], 0.2);
        let mut tt = tps.identity::<f64>(2);
        for (v, j) in tt.iter_mut().zip(rng.uniform(2 * 9 * 2, -0.15, 0.15)) {
            *v += j;
        }
        let grid_of = |dev: &Device, f64_: bool, which: usize| -> (Vec<f64>, Vec<f64>) {
            let (grid, p): (Tensor<4>, Tensor<3>) = match which {
                0 => {
                    let p = tensor(&th, [2, 2, 3], f64_, dev).require_grad();
                    (ops::affine_grid::<4>(p.clone(), &[2, 3, 5, 7], align).unwrap(), p)
                }
                1 => {
                    let p = tensor(&tt, [2, 9, 2], f64_, dev).require_grad();
                    (ops::tps_grid(p.clone(), tps, [2, 3, 5, 7], align).unwrap(), p)
                }
                _ => unreachable!(),
            };
            let w = weights(&grid, &mut Rng::new(3), dev);
            let grads = (grid.clone() * w).sum().backward();
            (values(grid), values(p.grad(&grads).unwrap()))
        };
        for which in 0..2 {
            let (gg, gp) = grid_of(&gpu, false, which);
            let (cg, cp) = grid_of(&cpu, true, which);
            assert_close(&format!("param grid {which} align={align}"), &gg, &cg, TOL);
            assert_close(&format!("param grid {which} grad align={align}"), &gp, &cp, GTOL);
        }
        // Projective (rank-2 parameters) and 3-D affine.
        let proj = |dev: &Device, f64_: bool| {
            let p = tensor(&hp, [2, 8], f64_, dev).require_grad();
            let grid = ops::projective_grid(p.clone(), [2, 3, 5, 7], align).unwrap();
            let w = weights(&grid, &mut Rng::new(4), dev);
            let grads = (grid.clone() * w).sum().backward();
            (values(grid), values(p.grad(&grads).unwrap()))
        };
        let ((gg, gp), (cg, cp)) = (proj(&gpu, false), proj(&cpu, true));
        assert_close(&format!("projective grid align={align}"), &gg, &cg, TOL);
        assert_close(&format!("projective grid grad align={align}"), &gp, &cp, GTOL);
        let aff3 = |dev: &Device, f64_: bool| {
            let p = tensor(&th3, [2, 3, 4], f64_, dev).require_grad();
            let grid = ops::affine_grid::<5>(p.clone(), &[2, 1, 3, 4, 5], align).unwrap();
            let w = weights(&grid, &mut Rng::new(5), dev);
            let grads = (grid.clone() * w).sum().backward();
            (values(grid), values(p.grad(&grads).unwrap()))
        };
        let ((gg, gp), (cg, cp)) = (aff3(&gpu, false), aff3(&cpu, true));
        assert_close(&format!("affine 3-D grid align={align}"), &gg, &cg, TOL);
        assert_close(&format!("affine 3-D grid grad align={align}"), &gp, &cp, GTOL);
    }
}

/// The loss `sum(out * w)` in f64 from the device's f32 output.
fn loss_on(
    dev: &Device,
    x: &[f64],
    xs: [usize; 4],
    g: &[f64],
    gs: [usize; 4],
    w: &[f64],
    o: SampleOptions,
) -> f64 {
    let out = ops::grid_sample(tensor(x, xs, false, dev), tensor(g, gs, false, dev), o).unwrap();
    values(out).iter().zip(w).map(|(a, b)| a * b).sum()
}

/// Gradients on the device against central differences of the device's own forward.
#[test]
fn gradients_match_finite_differences_on_the_device() {
    let dev = vulkan();
    let ad = dev.clone().autodiff();
    for o in [
        SampleOptions::new(Interpolation::Bilinear, Padding::Zeros, false),
        SampleOptions::new(Interpolation::Bicubic, Padding::Border, true),
    ] {
        let mut rng = Rng::new(200);
        let (xs, gs) = ([1, 2, 6, 5], [1, 3, 4, 2]);
        let x = rng.uniform(60, -1.0, 1.0);
        let g = rng.uniform(24, -0.8, 0.8);
        let xt = tensor(&x, xs, false, &ad).require_grad();
        let gt = tensor(&g, gs, false, &ad).require_grad();
        let out = ops::grid_sample(xt.clone(), gt.clone(), o).unwrap();
        let w = weights(&out, &mut Rng::new(9), &ad);
        let wv = values(w.clone());
        let grads = (out * w).sum().backward();
        let (ax, ag) = (values(xt.grad(&grads).unwrap()), values(gt.grad(&grads).unwrap()));
        // The loss is linear in the input: differences are exact up to f32 rounding.
        for i in (0..60).step_by(7) {
            let eps = 0.5;
            let (mut xp, mut xm) = (x.clone(), x.clone());
            xp[i] += eps;
            xm[i] -= eps;
            let fd = (loss_on(&dev, &xp, xs, &g, gs, &wv, o) - loss_on(&dev, &xm, xs, &g, gs, &wv, o))
                / (2.0 * eps);
            assert!((fd - ax[i]).abs() <= 1e-4 * (1.0 + fd.abs()), "{o:?} input[{i}]: fd {fd} vs {}", ax[i]);
        }
        // In the grid the loss is piecewise smooth: a step of 1e-3 (a few thousandths of a pixel).
        for i in 0..24 {
            let eps = 1e-3;
            let (mut gp, mut gm) = (g.clone(), g.clone());
            gp[i] += eps;
            gm[i] -= eps;
            let fd = (loss_on(&dev, &x, xs, &gp, gs, &wv, o) - loss_on(&dev, &x, xs, &gm, gs, &wv, o))
                / (2.0 * eps);
            assert!((fd - ag[i]).abs() <= 2e-2 * (1.0 + fd.abs()), "{o:?} grid[{i}]: fd {fd} vs {}", ag[i]);
        }
    }
}

fn bits(v: Vec<f64>) -> Vec<u32> {
    v.into_iter().map(|x| (x as f32).to_bits()).collect()
}

/// The backward is a function of its inputs alone: many threads add into the same input pixels
/// (a zoom-in), yet repeated runs agree bit for bit.
#[test]
fn backward_is_bitwise_repeatable() {
    let ad = vulkan().autodiff();
    let mut rng = Rng::new(300);
    let xs = [3, 3, 12, 12];
    let x = rng.uniform(xs.iter().product(), -1.0, 1.0);
    let th = near_identity(&mut rng, 3, &[0.2, 0.0, 0.0, 0.0, 0.2, 0.0], 0.05);
    let mut first = None;
    for o in [
        SampleOptions::new(Interpolation::Bilinear, Padding::Zeros, false),
        SampleOptions::new(Interpolation::Bicubic, Padding::Reflection, false),
    ] {
        for rep in 0..4 {
            let f = |x: Tensor<4>, t: Tensor<3>| ops::affine_sample(x, t, &[48, 48], o).unwrap();
            let (out, gx, gt) = run(&f, &x, xs, &th, [3, 2, 3], false, &ad, 11);
            let now = (bits(out), bits(gx), bits(gt));
            if rep == 0 {
                assert!(now.1.iter().filter(|&&b| b != 0).count() > 10, "input gradient is empty");
                first = Some(now);
            } else {
                assert!(first.as_ref() == Some(&now), "{o:?}: run {rep} differs from run 0");
            }
        }
    }
}

/// Gradients of very different magnitudes in one call keep their precision (the fixed-point
/// scale follows the largest one), and strided inputs read right.
#[test]
fn wide_gradient_range_and_strided_inputs() {
    let dev = vulkan();
    let o = SampleOptions::new(Interpolation::Bilinear, Padding::Border, true);
    let mut rng = Rng::new(400);
    let xs = [2, 2, 7, 9];
    let x = rng.uniform(xs.iter().product(), -1.0, 1.0);
    let g = rng.uniform(2 * 5 * 6 * 2, -1.1, 1.1);
    let per = |dev: &Device, f64_: bool| {
        let ad = dev.clone().autodiff();
        // Stored transposed (N, C, W, H), read through a swap of the last two axes.
        let [n, c, h, w] = xs;
        let mut xw = vec![0.0; x.len()];
        for (i, v) in x.iter().enumerate() {
            let (col, row, plane) = (i % w, (i / w) % h, i / (w * h));
            xw[(plane * w + col) * h + row] = *v;
        }
        let xt = tensor(&xw, [n, c, w, h], f64_, &ad).swap_dims(2, 3).require_grad();
        let gt = tensor(&g, [2, 5, 6, 2], f64_, &ad).require_grad();
        let out = ops::grid_sample(xt.clone(), gt.clone(), o).unwrap();
        // Weights spanning 1e-6 .. 1e3.
        let n = out.dims().iter().product::<usize>();
        let w: Vec<f64> =
            (0..n).map(|i| if i % 2 == 0 { 1e3 } else { 1e-6 } * (1.0 + (i % 5) as f64)).collect();
        let wt = Tensor::<4>::from_data(TensorData::new(w, out.dims()), (&ad, out.dtype()));
        let grads = (out * wt).sum().backward();
        values(xt.grad(&grads).unwrap())
    };
    let (gg, cg) = (per(&dev, false), per(&flex(), true));
    let scale = cg.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    let err = gg.iter().zip(&cg).map(|(a, b)| (a - b).abs()).fold(0.0f64, f64::max);
    assert!(err <= 1e-6 * scale, "input grad: max error {err:e} against a largest value {scale:e}");
}
