//! `stn::conv`: the fast convolution and max pooling against Burn's own ops (forward and
//! autodiff gradients), finite differences in f64, thread-count independence, the fallbacks,
//! and errors.

use crate::common::*;
use burn::nn::conv::Conv2dConfig;
use burn::nn::pool::MaxPool2dConfig;
use burn::nn::PaddingConfig2d;
use burn::tensor::module;
use burn::tensor::ops::{ConvOptions, MaxPoolOptions};
use burn::tensor::Tensor;
use stn::conv;

/// One convolution case: input shape, weight shape, options, with bias.
struct Case {
    x: [usize; 4],
    w: [usize; 4],
    options: ConvOptions<2>,
    bias: bool,
}

fn cases() -> Vec<Case> {
    let o = |s: [usize; 2], p: [(usize, usize); 2], d: [usize; 2], g: usize| {
        ConvOptions::new_with_padding(s, p, d, g)
    };
    vec![
        // The tutorial's convolutions.
        Case {
            x: [5, 1, 28, 28],
            w: [8, 1, 7, 7],
            options: o([1, 1], [(0, 0), (0, 0)], [1, 1], 1),
            bias: true,
        },
        Case {
            x: [5, 8, 11, 11],
            w: [10, 8, 5, 5],
            options: o([1, 1], [(0, 0), (0, 0)], [1, 1], 1),
            bias: true,
        },
        // Strides, symmetric and asymmetric padding, dilation, non-square, no bias.
        Case {
            x: [3, 3, 13, 10],
            w: [4, 3, 3, 2],
            options: o([2, 3], [(1, 1), (2, 2)], [1, 1], 1),
            bias: false,
        },
        Case {
            x: [2, 2, 12, 11],
            w: [3, 2, 3, 3],
            options: o([1, 2], [(2, 0), (1, 3)], [2, 1], 1),
            bias: true,
        },
        // More images than chunks (uneven last chunk).
        Case {
            x: [37, 2, 9, 9],
            w: [3, 2, 3, 3],
            options: o([1, 1], [(1, 1), (1, 1)], [1, 1], 1),
            bias: true,
        },
        // Grouped: Burn's path.
        Case {
            x: [2, 4, 9, 9],
            w: [6, 2, 3, 3],
            options: o([1, 1], [(0, 0), (0, 0)], [1, 1], 2),
            bias: true,
        },
    ]
}

/// (output, grad x, grad w, grad b) of `sum(f(x, w, b) * weights)` under autodiff.
fn conv_run(
    f: &dyn Fn(Tensor<4>, Tensor<4>, Option<Tensor<1>>) -> Tensor<4>,
    c: &Case,
    f64_: bool,
    seed: u64,
) -> [Vec<f64>; 4] {
    let dev = autodiff();
    let mut rng = Rng::new(seed);
    let x = tensor(&rng.uniform(c.x.iter().product(), -1.0, 1.0), c.x, f64_, &dev).require_grad();
    let w = tensor(&rng.uniform(c.w.iter().product(), -1.0, 1.0), c.w, f64_, &dev).require_grad();
    let b = tensor(&rng.uniform(c.w[0], -1.0, 1.0), [c.w[0]], f64_, &dev).require_grad();
    let out = f(x.clone(), w.clone(), c.bias.then(|| b.clone()));
    let wts = weights(&out, &mut rng, &dev);
    let grads = (out.clone() * wts).sum().backward();
    let gb = if c.bias { values(b.grad(&grads).expect("bias grad")) } else { Vec::new() };
    [values(out), values(x.grad(&grads).expect("x grad")), values(w.grad(&grads).expect("w grad")), gb]
}

#[test]
fn conv2d_equals_burns_forward_and_gradients() {
    for (i, c) in cases().iter().enumerate() {
        for f64_ in [false, true] {
            let ours =
                conv_run(&|x, w, b| conv::conv2d(x, w, b, c.options.clone()).unwrap(), c, f64_, i as u64);
            let burns = conv_run(&|x, w, b| module::conv2d(x, w, b, c.options.clone()), c, f64_, i as u64);
            let tol = if f64_ { 1e-12 } else { 2e-5 };
            for (name, (a, b)) in ["output", "grad x", "grad w", "grad b"].iter().zip(ours.iter().zip(&burns))
            {
                assert_close(&format!("case {i} f64={f64_} {name}"), a, b, tol);
            }
            assert!(!ours[0].is_empty() && ours[0].iter().any(|&v| v != 0.0));
        }
    }
}

#[test]
fn conv2d_gradients_equal_finite_differences() {
    let c = &cases()[3];
    let dev = flex();
    let mut rng = Rng::new(11);
    let (nx, nw) = (c.x.iter().product::<usize>(), c.w.iter().product::<usize>());
    let (x0, w0, b0) =
        (rng.uniform(nx, -1.0, 1.0), rng.uniform(nw, -1.0, 1.0), rng.uniform(c.w[0], -1.0, 1.0));
    let out = conv::conv2d(
        tensor(&x0, c.x, true, &dev),
        tensor(&w0, c.w, true, &dev),
        Some(tensor(&b0, [c.w[0]], true, &dev)),
        c.options.clone(),
    )
    .unwrap();
    let wts = weights(&out, &mut rng, &dev);
    let loss = |x: &[f64], w: &[f64], b: &[f64]| {
        let out = conv::conv2d(
            tensor(x, c.x, true, &dev),
            tensor(w, c.w, true, &dev),
            Some(tensor(b, [c.w[0]], true, &dev)),
            c.options.clone(),
        )
        .unwrap();
        dot(out, &wts)
    };
    // Analytic gradients under autodiff with the same weighting.
    let ad = autodiff();
    let (x, w, b) = (
        tensor(&x0, c.x, true, &ad).require_grad(),
        tensor(&w0, c.w, true, &ad).require_grad(),
        tensor(&b0, [c.w[0]], true, &ad).require_grad(),
    );
    let out = conv::conv2d(x.clone(), w.clone(), Some(b.clone()), c.options.clone()).unwrap();
    let wts_ad = tensor(&values(wts.clone()), wts.dims(), true, &ad);
    let grads = (out * wts_ad).sum().backward();
    let (gx, gw, gb) =
        (values(x.grad(&grads).unwrap()), values(w.grad(&grads).unwrap()), values(b.grad(&grads).unwrap()));
    let pick = |n: usize| (0..n).step_by(n / 17 + 1).collect::<Vec<_>>();
    fd_check("conv x", &|v| loss(v, &w0, &b0), &x0, &gx, &pick(nx), 1e-7);
    fd_check("conv w", &|v| loss(&x0, v, &b0), &w0, &gw, &pick(nw), 1e-7);
    fd_check("conv b", &|v| loss(&x0, &w0, v), &b0, &gb, &pick(c.w[0]), 1e-7);
}

#[test]
fn conv2d_is_identical_for_any_thread_count() {
    let c = &cases()[4];
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        pool.install(|| conv_run(&|x, w, b| conv::conv2d(x, w, b, c.options.clone()).unwrap(), c, false, 3))
    };
    let one = run(1);
    assert_eq!(one, run(3), "1 thread vs 3 threads");
}

#[test]
fn module_forward_equals_conv2d_module_forward() {
    let dev = flex();
    let mut rng = Rng::new(5);
    let x = tensor(&rng.uniform(2 * 3 * 10 * 9, -1.0, 1.0), [2, 3, 10, 9], false, &dev);
    for padding in [PaddingConfig2d::Valid, PaddingConfig2d::Same, PaddingConfig2d::Explicit(1, 0, 2, 1)] {
        for stride in [[1, 1], [2, 1]] {
            let m = Conv2dConfig::new([3, 4], [3, 2])
                .with_stride(stride)
                .with_padding(padding.clone())
                .init(&dev);
            let (ours, burns) = (conv::forward(&m, x.clone()), m.forward(x.clone()));
            assert_eq!(ours.dims(), burns.dims(), "{padding:?} {stride:?}");
            assert_close(&format!("{padding:?} {stride:?}"), &values(ours), &values(burns), 2e-5);
        }
    }
}

#[test]
fn conv2d_errors_name_the_argument() {
    let dev = flex();
    let x = Tensor::<4>::zeros([2, 3, 8, 8], &dev);
    let w = Tensor::<4>::zeros([4, 3, 3, 3], &dev);
    let o = ConvOptions::new([1, 1], [0, 0], [1, 1], 1);
    // ConvOptions::new refuses zeros itself; its fields are public, so a literal can hold them.
    let raw = |stride: [usize; 2], groups: usize| ConvOptions {
        stride,
        padding: [(0, 0); 2],
        dilation: [1, 1],
        groups,
    };
    let err = |r: stn::Result<Tensor<4>>| r.expect_err("must fail").to_string();
    assert!(
        err(conv::conv2d(x.clone(), Tensor::zeros([4, 2, 3, 3], &dev), None, o.clone())).contains("`weight`")
    );
    assert!(
        err(conv::conv2d(x.clone(), w.clone(), Some(Tensor::zeros([3], &dev)), o.clone())).contains("`bias`")
    );
    assert!(err(conv::conv2d(x.clone(), w.clone(), None, raw([0, 1], 1))).contains("stride"));
    assert!(err(conv::conv2d(x.clone(), w.clone(), None, raw([1, 1], 0))).contains("groups"));
    assert!(
        err(conv::conv2d(x.clone(), Tensor::zeros([4, 3, 9, 3], &dev), None, o.clone())).contains("smaller")
    );
    assert!(err(conv::conv2d(Tensor::<4>::zeros([0, 3, 8, 8], &dev), w.clone(), None, o.clone()))
        .contains("zero"));
    let xf64 = tensor(&vec![0.0; 2 * 3 * 8 * 8], [2, 3, 8, 8], true, &dev);
    assert!(err(conv::conv2d(xf64, w, None, o)).contains("dtype"));
}

/// (output, grad x) of `sum(f(x) * weights)` for distinct random values (no ties).
fn pool_run(f: &dyn Fn(Tensor<4>) -> Tensor<4>, shape: [usize; 4], f64_: bool, seed: u64) -> [Vec<f64>; 2] {
    let dev = autodiff();
    let mut rng = Rng::new(seed);
    let x = tensor(&rng.uniform(shape.iter().product(), -1.0, 1.0), shape, f64_, &dev).require_grad();
    let out = f(x.clone());
    let wts = weights(&out, &mut rng, &dev);
    let grads = (out.clone() * wts).sum().backward();
    [values(out), values(x.grad(&grads).expect("x grad"))]
}

#[test]
fn max_pool2d_equals_burns_forward_and_gradient() {
    let cases: [([usize; 4], [usize; 2], [usize; 2]); 4] = [
        ([5, 8, 22, 22], [2, 2], [2, 2]),
        ([3, 2, 9, 11], [3, 3], [2, 2]),
        ([2, 3, 7, 10], [2, 3], [1, 2]),
        ([40, 1, 5, 5], [1, 1], [1, 1]),
    ];
    for (i, (shape, k, s)) in cases.into_iter().enumerate() {
        for f64_ in [false, true] {
            let ours = pool_run(&|x| conv::max_pool2d(x, k, s).unwrap(), shape, f64_, i as u64);
            let burns = pool_run(
                &|x| module::max_pool2d(x, MaxPoolOptions::new(k).with_stride(s)),
                shape,
                f64_,
                i as u64,
            );
            assert_eq!(ours, burns, "case {i} f64={f64_}");
        }
    }
    // A module with padding runs Burn's own forward.
    let dev = flex();
    let x = tensor(&Rng::new(1).uniform(2 * 7 * 7, -1.0, 1.0), [1, 2, 7, 7], false, &dev);
    let padded = MaxPool2dConfig::new([3, 3]).with_padding(PaddingConfig2d::Same).init();
    assert_eq!(values(conv::pool_forward(&padded, x.clone())), values(padded.forward(x.clone())));
    let plain = MaxPool2dConfig::new([2, 2]).with_strides([2, 2]).init();
    assert_eq!(values(conv::pool_forward(&plain, x.clone())), values(plain.forward(x)));
}

#[test]
fn max_pool2d_errors_and_nan() {
    let dev = flex();
    let x = Tensor::<4>::zeros([1, 1, 4, 4], &dev);
    assert!(conv::max_pool2d(x.clone(), [5, 2], [1, 1]).unwrap_err().to_string().contains("kernel"));
    assert!(conv::max_pool2d(x.clone(), [2, 2], [0, 1]).unwrap_err().to_string().contains("stride"));
    let mut v = vec![0.0; 16];
    v[5] = f64::NAN;
    let out = values(conv::max_pool2d(tensor(&v, [1, 1, 4, 4], false, &dev), [2, 2], [2, 2]).unwrap());
    assert!(out[0].is_nan() && out[1..].iter().all(|&o| o == 0.0), "{out:?}");
}
