//! Transform families: identity parameters reproduce the input, the affine-type parameter
//! maps equal stn-kernels', and Burn autodiff gradients equal finite differences in f64 for
//! every family, the fused warps and a composed chain.

use crate::common::*;
use burn::tensor::{Tensor, TensorData};
use stn::{warp_matrix, Interpolation, Padding, SampleOptions, Transform};
use stn_kernels::{AffineFamily, TensorRef};

const FAMILIES_2D: [Transform; 7] = [
    Transform::Translation,
    Transform::Attention,
    Transform::Similarity,
    Transform::Affine,
    Transform::Projective,
    Transform::Tps { rows: 3, cols: 3 },
    Transform::Dense,
];

fn params_tensor(v: &[f64], n: usize, p: usize) -> Tensor<2> {
    tensor(v, [n, p], true, &flex())
}

#[test]
fn identity_parameters_reproduce_the_input() {
    let mut rng = Rng::new(1);
    let (n, c, h, w) = (2, 3, 7, 9);
    let x = rng.uniform(n * c * h * w, -1.0, 1.0);
    for align in [false, true] {
        let o = SampleOptions::new(Interpolation::Bilinear, Padding::Zeros, align);
        for t in FAMILIES_2D {
            let id = t.identity(&[h, w], align).unwrap();
            assert_eq!(id.len(), t.num_params(&[h, w]), "{t:?}: identity length");
            let p: Vec<f64> = (0..n).flat_map(|_| id.iter().copied()).collect();
            let out =
                t.warp(tensor(&x, [n, c, h, w], true, &flex()), params_tensor(&p, n, id.len()), &[h, w], o);
            let out = values(out.unwrap());
            let e = max_rel(&out, &x);
            assert!(e < 1e-12, "{t:?} align={align}: identity differs from the input by {e:e}");
        }
        let t = Transform::Affine3d;
        let x3 = rng.uniform(2 * 4 * 5 * 6, -1.0, 1.0);
        let id = t.identity(&[], align).unwrap();
        let out =
            t.warp(tensor(&x3, [1, 2, 4, 5, 6], true, &flex()), params_tensor(&id, 1, 12), &[4, 5, 6], o);
        let e = max_rel(&values(out.unwrap()), &x3);
        assert!(e < 1e-12, "Affine3d align={align}: identity differs by {e:e}");
    }
}

#[test]
fn affine_type_parameters_match_the_kernels_families() {
    let pairs = [
        (Transform::Translation, AffineFamily::Translation),
        (Transform::Attention, AffineFamily::Attention),
        (Transform::Similarity, AffineFamily::Similarity),
        (Transform::Affine, AffineFamily::Affine),
    ];
    let mut rng = Rng::new(2);
    let ad = autodiff();
    for (t, f) in pairs {
        let k = f.num_params();
        assert_eq!(t.num_params(&[]), k);
        assert_eq!(t.identity(&[], false).unwrap(), f.identity());
        let p = rng.uniform(3 * k, -1.0, 1.0);
        let pt = tensor(&p, [3, k], true, &ad).require_grad();
        let theta = t.affine_theta(pt.clone()).unwrap();
        let wt = weights(&theta, &mut Rng::new(3), &ad);
        let wv = values(wt.clone());
        let grads = (theta.clone() * wt).sum().backward();
        let kt = f.to_affine(TensorRef::new(&p, &[3, k])).unwrap();
        assert_close(&format!("{t:?} matrix"), &values(theta), &kt.data, 1e-15);
        let kg = f.to_affine_backward(TensorRef::new(&wv, &[3, 2, 3]), TensorRef::new(&p, &[3, k])).unwrap();
        assert_close(&format!("{t:?} matrix grad"), &values(pt.grad(&grads).unwrap()), &kg.data, 1e-14);
    }
}

/// Parameters near the identity, perturbed.
fn near_identity(t: Transform, n: usize, out: &[usize], rng: &mut Rng, amount: f64) -> Vec<f64> {
    let id = t.identity(out, false).unwrap();
    (0..n)
        .flat_map(|_| id.iter().map(|v| v + amount * (2.0 * rng.next_f64() - 1.0)).collect::<Vec<_>>())
        .collect()
}

#[test]
fn family_gradients_match_finite_differences() {
    let ad = autodiff();
    let dev = flex();
    let mut rng = Rng::new(4);
    let (n, c, h, w) = (2, 2, 6, 7);
    let out = [5, 6];
    let x = rng.uniform(n * c * h * w, -1.0, 1.0);
    for mode in [Interpolation::Bilinear, Interpolation::Bicubic] {
        let o = SampleOptions::new(mode, Padding::Border, false);
        for t in FAMILIES_2D {
            let k = t.num_params(&out);
            let p = near_identity(t, n, &out, &mut rng, 0.1);
            let xt = tensor(&x, [n, c, h, w], true, &ad).require_grad();
            let pt = tensor(&p, [n, k], true, &ad).require_grad();
            let y = t.warp(xt.clone(), pt.clone(), &out, o).unwrap();
            let wt = weights(&y, &mut Rng::new(5), &ad);
            let wv = values(wt.clone());
            let grads = (y.clone() * wt).sum().backward();
            let gp = values(pt.grad(&grads).unwrap());
            let gx = values(xt.grad(&grads).unwrap());
            let wflex = tensor(&wv, y.dims(), true, &dev);
            let loss_p = |pv: &[f64]| {
                let y = t.warp(tensor(&x, [n, c, h, w], true, &dev), tensor(pv, [n, k], true, &dev), &out, o);
                dot(y.unwrap(), &wflex)
            };
            let idx: Vec<usize> = (0..k.min(24)).chain(k..(k + 4).min(n * k)).collect();
            fd_check(&format!("{t:?} {mode:?} d/dparams"), &loss_p, &p, &gp, &idx, 1e-6);
            let loss_x = |xv: &[f64]| {
                let y = t.warp(tensor(xv, [n, c, h, w], true, &dev), tensor(&p, [n, k], true, &dev), &out, o);
                dot(y.unwrap(), &wflex)
            };
            let xi: Vec<usize> = (0..x.len()).step_by(7).collect();
            fd_check(&format!("{t:?} {mode:?} d/dinput"), &loss_x, &x, &gx, &xi, 1e-6);
        }
    }
    // Affine 3-D (trilinear).
    let t = Transform::Affine3d;
    let o = SampleOptions::new(Interpolation::Bilinear, Padding::Zeros, true);
    let x3 = rng.uniform(2 * 4 * 5 * 3, -1.0, 1.0);
    let p = near_identity(t, 1, &[], &mut rng, 0.15);
    let pt = tensor(&p, [1, 12], true, &ad).require_grad();
    let y = t.warp(tensor(&x3, [1, 2, 4, 5, 3], true, &ad), pt.clone(), &[3, 4, 4], o).unwrap();
    let wt = weights(&y, &mut Rng::new(6), &ad);
    let wflex = tensor(&values(wt.clone()), y.dims(), true, &dev);
    let gp = values(pt.grad(&(y * wt).sum().backward()).unwrap());
    let loss = |pv: &[f64]| {
        let y =
            t.warp(tensor(&x3, [1, 2, 4, 5, 3], true, &dev), tensor(pv, [1, 12], true, &dev), &[3, 4, 4], o);
        dot(y.unwrap(), &wflex)
    };
    fd_check("Affine3d d/dparams", &loss, &p, &gp, &(0..12).collect::<Vec<_>>(), 1e-6);
}

/// A composed chain: similarity then projective then affine, multiplied as matrices and
/// sampled once; gradients to all three parameter sets equal finite differences.
#[test]
fn composed_chain_gradients_match_finite_differences() {
    let ad = autodiff();
    let dev = flex();
    let mut rng = Rng::new(7);
    let (n, c, h, w) = (2, 1, 8, 8);
    let x = rng.uniform(n * c * h * w, 0.0, 1.0);
    let chain = [Transform::Similarity, Transform::Projective, Transform::Affine];
    let ps: Vec<Vec<f64>> = chain.iter().map(|t| near_identity(*t, n, &[], &mut rng, 0.08)).collect();
    let o = SampleOptions::new(Interpolation::Bilinear, Padding::Zeros, false);
    let run = |ps: &[Vec<f64>], dev: &burn::tensor::Device, grad: bool| {
        let pts: Vec<Tensor<2>> = chain
            .iter()
            .zip(ps)
            .map(|(t, p)| {
                let pt = tensor(p, [n, t.num_params(&[])], true, dev);
                if grad {
                    pt.require_grad()
                } else {
                    pt
                }
            })
            .collect();
        let mut m: Option<Tensor<3>> = None;
        for (t, p) in chain.iter().zip(&pts) {
            let mi = t.matrix(p.clone()).unwrap();
            m = Some(match m {
                Some(prev) => prev.matmul(mi),
                None => mi,
            });
        }
        let y = warp_matrix(tensor(&x, [n, c, h, w], true, dev), m.unwrap(), true, &[h, w], o).unwrap();
        (y, pts)
    };
    let (y, pts) = run(&ps, &ad, true);
    let wt = weights(&y, &mut Rng::new(8), &ad);
    let wflex = tensor(&values(wt.clone()), y.dims(), true, &dev);
    let grads = (y * wt).sum().backward();
    for (i, t) in chain.iter().enumerate() {
        let g = values(pts[i].grad(&grads).unwrap());
        let loss = |pv: &[f64]| {
            let mut all = ps.clone();
            all[i] = pv.to_vec();
            dot(run(&all, &dev, false).0, &wflex)
        };
        let idx: Vec<usize> = (0..ps[i].len()).collect();
        fd_check(&format!("chain {t:?}"), &loss, &ps[i], &g, &idx, 1e-6);
    }
}

/// Composition equals sampling once with the product transform.
#[test]
fn composition_equals_the_product_transform() {
    let mut rng = Rng::new(9);
    let (n, c, h, w) = (2, 2, 9, 8);
    let x = rng.uniform(n * c * h * w, -1.0, 1.0);
    let o = SampleOptions::new(Interpolation::Bilinear, Padding::Zeros, false);
    let a = near_identity(Transform::Affine, n, &[], &mut rng, 0.2);
    let s = near_identity(Transform::Similarity, n, &[], &mut rng, 0.2);
    let dev = flex();
    let ma = Transform::Affine.matrix(tensor(&a, [n, 6], true, &dev)).unwrap();
    let ms = Transform::Similarity.matrix(tensor(&s, [n, 4], true, &dev)).unwrap();
    let composed = values(
        warp_matrix(tensor(&x, [n, c, h, w], true, &dev), ma.clone().matmul(ms.clone()), false, &[5, 6], o)
            .unwrap(),
    );
    // The product computed by hand, fed to the affine family as plain parameters.
    let (av, sv) = (values(ma), values(ms));
    let mut prod = Vec::new();
    for b in 0..n {
        for r in 0..2 {
            for cc in 0..3 {
                prod.push((0..3).map(|k| av[b * 9 + r * 3 + k] * sv[b * 9 + k * 3 + cc]).sum::<f64>());
            }
        }
    }
    let direct = Transform::Affine.warp(
        tensor(&x, [n, c, h, w], true, &dev),
        tensor(&prod, [n, 6], true, &dev),
        &[5, 6],
        o,
    );
    assert_close("composed vs product", &composed, &values(direct.unwrap()), 1e-14);
    // A homogeneous matrix with a non-trivial last row goes the projective way; one whose last
    // row is (0, 0, 1) gives the same result either way.
    let m = Transform::Affine.matrix(tensor(&prod, [n, 6], true, &dev)).unwrap();
    let p = values(warp_matrix(tensor(&x, [n, c, h, w], true, &dev), m, true, &[5, 6], o).unwrap());
    assert_close("affine as projective", &p, &composed, 1e-12);
}

#[test]
fn grids_of_families_match_their_warps() {
    let mut rng = Rng::new(10);
    let dev = flex();
    let (n, c, h, w) = (2, 2, 6, 7);
    let x = rng.uniform(n * c * h * w, -1.0, 1.0);
    let out = [4, 5];
    for align in [false, true] {
        let o = SampleOptions::new(Interpolation::Bilinear, Padding::Reflection, align);
        for t in FAMILIES_2D {
            let k = t.num_params(&out);
            let p = near_identity(t, n, &out, &mut rng, 0.2);
            let fused = values(
                t.warp(tensor(&x, [n, c, h, w], true, &dev), tensor(&p, [n, k], true, &dev), &out, o)
                    .unwrap(),
            );
            let grid: Tensor<4> = t.grid(tensor(&p, [n, k], true, &dev), &out, align).unwrap();
            let sampled =
                values(stn::ops::grid_sample(tensor(&x, [n, c, h, w], true, &dev), grid, o).unwrap());
            assert_close(&format!("{t:?} align={align}: grid + sample vs fused"), &fused, &sampled, 1e-12);
        }
    }
}

#[test]
fn bad_parameters_are_errors() {
    let dev = flex();
    let x = Tensor::<4>::zeros([2, 1, 5, 5], &dev);
    let o = SampleOptions::default();
    let e =
        Transform::Affine.warp(x.clone(), Tensor::zeros([2, 5], &dev), &[5, 5], o).unwrap_err().to_string();
    assert!(e.contains("params") && e.contains("(2, 6)"), "{e}");
    let e =
        Transform::Affine.warp(x.clone(), Tensor::zeros([3, 6], &dev), &[5, 5], o).unwrap_err().to_string();
    assert!(e.contains("theta") && e.contains('3'), "{e}");
    let e =
        Transform::Affine.warp(x.clone(), Tensor::zeros([2, 6], &dev), &[0, 5], o).unwrap_err().to_string();
    assert!(e.contains("out_size") && e.contains("zero"), "{e}");
    let e = Transform::Tps { rows: 1, cols: 4 }
        .warp(x.clone(), Tensor::zeros([2, 8], &dev), &[5, 5], o)
        .unwrap_err();
    assert!(e.to_string().contains("2 x 2"), "{e}");
    let e = Transform::Affine3d
        .warp(x.clone(), Tensor::zeros([2, 12], &dev), &[5, 5, 5], o)
        .unwrap_err()
        .to_string();
    assert!(e.contains("rank 5"), "{e}");
    let e = Transform::Tps { rows: 3, cols: 3 }.matrix(Tensor::zeros([2, 18], &dev)).unwrap_err().to_string();
    assert!(e.contains("does not compose"), "{e}");
    let huge = stn::ops::affine_sample(x.clone(), Tensor::zeros([2, 2, 3], &dev), &[1 << 40, 1 << 40], o);
    assert!(huge.unwrap_err().to_string().contains("too large"));
    let g = Tensor::<4>::from_data(
        TensorData::new(vec![0.0f64; 2 * 3 * 3 * 2], [2, 3, 3, 2]),
        (&dev, burn::tensor::DType::F64),
    );
    let e = stn::ops::grid_sample(x, g, o).unwrap_err().to_string();
    assert!(e.contains("grid") && e.contains("dtype"), "{e}");
}
