//! `stn::augment`: identity, matrices, keypoints, masks, inverses, determinism, gradients and
//! bad parameters.

use crate::common::*;
use burn::tensor::{Device, Tensor};
use stn::augment::{self, Augment, AugmentOptions, Key, Op, Range, Stage, Warp};
use stn::{Interpolation, Padding, SampleOptions, StnError};

/// Bit-for-bit equality, reporting the first difference (not the whole vectors).
fn same_bits(what: &str, a: &[f64], b: &[f64]) {
    assert_eq!(a.len(), b.len(), "{what}: lengths");
    if let Some(i) = (0..a.len()).find(|&i| a[i].to_bits() != b[i].to_bits()) {
        let count = (0..a.len()).filter(|&i| a[i].to_bits() != b[i].to_bits()).count();
        panic!("{what}: {count} values differ, the first at {i}: {} vs {}", a[i], b[i]);
    }
}

fn keys(seed: u64, n: u64) -> Vec<Key> {
    Key::batch(seed, 0, 0..n)
}

fn matrix(spec: &str, size: [usize; 2]) -> [[f64; 3]; 3] {
    let aug = Augment::parse(spec).unwrap();
    aug.draw(&keys(1, 1), size)[0].matrix().expect("a matrix warp")
}

fn assert_mat(what: &str, m: [[f64; 3]; 3], want: [[f64; 3]; 3]) {
    for r in 0..3 {
        for c in 0..3 {
            assert!((m[r][c] - want[r][c]).abs() < 1e-12, "{what}: {m:?} != {want:?}");
        }
    }
}

#[test]
fn identity_ranges_give_the_input_bit_for_bit() {
    let (px, _) = mnist(5);
    let x = tensor(&px, [5, 1, 28, 28], false, &flex());
    for spec in [
        "affine",
        "affine:rot=0,scale=1,shear=0,shift=0;rotation:0;tps:0;elastic:0;perspective:0",
        "crop:scale=1,ratio=1",
        "affine:rot=45,scale=0.5-2,p=0;tps:0.3,p=0;hflip:p=0;vflip:0;perspective:0.9,p=0;crop:p=0",
    ] {
        let aug = Augment::parse(spec).unwrap();
        let out = aug.forward(x.clone(), &keys(3, 5)).unwrap();
        assert!(out.warps.iter().all(Warp::is_identity), "{spec}: {:?}", out.warps[0]);
        same_bits(spec, &values(out.image), &values(x.clone()));
    }
}

#[test]
fn each_matrix_matches_a_hand_computed_one() {
    // Rotation +90 degrees (counter-clockwise as viewed, y down): content at the right moves to
    // the top, so output point (0, -1) reads input point (1, 0).
    assert_mat(
        "rotation 90",
        matrix("rotation:90..90", [32, 32]),
        [[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]],
    );
    // On a 20 x 40 image the rotation acts in pixels: normalized x spans twice the pixels of y.
    assert_mat(
        "rotation 90, 20 x 40",
        matrix("rotation:90..90", [20, 40]),
        [[0.0, -0.5, 0.0], [2.0, 0.0, 0.0], [0.0, 0.0, 1.0]],
    );
    assert_mat(
        "scale 2",
        matrix("affine:scale=2", [8, 8]),
        [[0.5, 0.0, 0.0], [0.0, 0.5, 0.0], [0.0, 0.0, 1.0]],
    );
    // Shift by a quarter of the width: half a normalized unit.
    assert_mat(
        "shift",
        matrix("affine:shift_x=0.25..0.25", [8, 8]),
        [[1.0, 0.0, -0.5], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]],
    );
    assert_mat(
        "shear x 45",
        matrix("affine:shear_x=45..45", [8, 8]),
        [[1.0, -1.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]],
    );
    assert_mat(
        "shear y 45",
        matrix("affine:shear_y=45..45", [8, 8]),
        [[1.0, 0.0, 0.0], [-1.0, 1.0, 0.0], [0.0, 0.0, 1.0]],
    );
    // Aspect 4: x stretched by 2, y squeezed by 2.
    assert_mat(
        "aspect",
        matrix("affine:aspect=4", [8, 8]),
        [[0.5, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 1.0]],
    );
    assert_mat("hflip", matrix("hflip:1", [8, 8]), [[-1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]);
    assert_mat("vflip", matrix("vflip:1", [8, 8]), [[1.0, 0.0, 0.0], [0.0, -1.0, 0.0], [0.0, 0.0, 1.0]]);
    // Composition in order: scale then shift (x' = 2x + 0.5), or shift then scale (x' = 2x + 1).
    let a = matrix("affine:scale=2;affine:shift_x=0.25..0.25", [8, 8]);
    assert_mat("scale; shift", a, [[0.5, 0.0, -0.25], [0.0, 0.5, 0.0], [0.0, 0.0, 1.0]]);
    let b = matrix("affine:shift_x=0.25..0.25;affine:scale=2", [8, 8]);
    assert_mat("shift; scale", b, [[0.5, 0.0, -0.5], [0.0, 0.5, 0.0], [0.0, 0.0, 1.0]]);
    assert_mat(
        "90 + 90",
        matrix("rotation:90..90;rotation:90..90", [8, 8]),
        [[-1.0, 0.0, 0.0], [0.0, -1.0, 0.0], [0.0, 0.0, 1.0]],
    );
    // A crop of a quarter of the area at ratio 1: half the width, inside the image.
    let c = matrix("crop:scale=0.25,ratio=1", [16, 16]);
    assert!((c[0][0] - 0.5).abs() < 1e-12 && (c[1][1] - 0.5).abs() < 1e-12 && c[0][1] == 0.0, "{c:?}");
    assert!(c[0][2].abs() <= 0.5 + 1e-12 && c[1][2].abs() <= 0.5 + 1e-12, "{c:?}");
    // Perspective: every corner moves inwards by at most `distortion` per axis.
    let aug = Augment::parse("perspective:0.4").unwrap();
    for w in aug.draw(&keys(5, 20), [16, 16]) {
        for corner in [[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]] {
            let q = w.map_point(corner, 0).unwrap();
            for d in 0..2 {
                let moved = (corner[d] - q[d]) * corner[d].signum();
                assert!((-1e-9..=0.4 + 1e-9).contains(&moved), "corner {corner:?} -> {q:?}");
            }
        }
    }
}

/// A 64 x 64 image with a Gaussian dot at (x, y).
fn dot(x: f64, y: f64) -> Vec<f64> {
    (0..64 * 64)
        .map(|i| {
            let (px, py) = ((i % 64) as f64, (i / 64) as f64);
            (-((px - x).powi(2) + (py - y).powi(2)) / (2.0 * 1.2f64.powi(2))).exp()
        })
        .collect()
}

fn centroid(img: &[f64]) -> [f64; 2] {
    let (mut s, mut sx, mut sy) = (0.0, 0.0, 0.0);
    for (i, v) in img.iter().enumerate() {
        s += v;
        sx += v * (i % 64) as f64;
        sy += v * (i / 64) as f64;
    }
    [sx / s, sy / s]
}

#[test]
fn keypoints_land_where_the_rendered_dot_goes_for_every_op() {
    let (kx, ky) = (29.3, 35.6);
    let n = 6;
    let img: Vec<f64> = (0..n).flat_map(|_| dot(kx, ky)).collect();
    let x = tensor(&img, [n, 1, 64, 64], true, &flex());
    for spec in [
        "affine:rot=40,scale=0.8-1.2,aspect=0.9-1.1,shear=10,shift=0.1",
        "rotation:90",
        "perspective:0.5",
        "tps:0.1",
        "elastic:0.05",
        "crop:scale=0.5-1",
        "hflip:1;vflip:1",
        "affine:rot=30,scale=0.9-1.1;tps:0.08",
        "tps:0.08;affine:rot=30,shift=0.05",
        "perspective:0.3;tps:0.05;affine:rot=20",
    ] {
        let aug = Augment::parse(spec).unwrap();
        let out = aug.forward(x.clone(), &keys(11, n as u64)).unwrap();
        let pts =
            augment::map_keypoints(&out.warps, &vec![vec![[kx, ky]]; n], [64, 64], [64, 64], false).unwrap();
        let v = values(out.image);
        let mut checked = 0;
        for i in 0..n {
            let p = pts[i][0];
            if !(8.0..56.0).contains(&p[0]) || !(8.0..56.0).contains(&p[1]) {
                continue; // the dot left the image
            }
            let c = centroid(&v[i * 4096..(i + 1) * 4096]);
            let d = (c[0] - p[0]).hypot(c[1] - p[1]);
            assert!(d < 0.5, "{spec}, sample {i}: keypoint {p:?}, dot's centroid {c:?} ({d:.3} px)");
            checked += 1;
        }
        assert!(checked >= n / 2, "{spec}: only {checked} samples kept the dot");
    }
}

#[test]
fn boxes_follow_a_flip_and_contain_their_moved_keypoints() {
    let aug = Augment::parse("hflip:1").unwrap();
    let w = aug.draw(&keys(1, 1), [20, 30]);
    let b = augment::map_boxes(&w, &[vec![[2.0, 3.0, 10.0, 8.0]]], [20, 30], [20, 30], false).unwrap();
    let want = [29.0 - 10.0, 3.0, 29.0 - 2.0, 8.0];
    for d in 0..4 {
        assert!((b[0][0][d] - want[d]).abs() < 1e-9, "{:?} != {want:?}", b[0][0]);
    }
    let aug = Augment::parse("affine:rot=30;tps:0.1").unwrap();
    let ws = aug.draw(&keys(2, 4), [40, 40]);
    let boxes = vec![vec![[10.0, 12.0, 25.0, 30.0]]; 4];
    let b = augment::map_boxes(&ws, &boxes, [40, 40], [40, 40], false).unwrap();
    let inner = vec![vec![[17.5, 21.0], [10.0, 12.0], [25.0, 30.0]]; 4];
    let p = augment::map_keypoints(&ws, &inner, [40, 40], [40, 40], false).unwrap();
    for i in 0..4 {
        for q in &p[i] {
            let r = b[i][0];
            assert!(q[0] >= r[0] - 1e-9 && q[0] <= r[2] + 1e-9 && q[1] >= r[1] - 1e-9 && q[1] <= r[3] + 1e-9);
        }
    }
}

#[test]
fn masks_keep_their_labels() {
    let n = 4;
    let (h, w) = (24, 24);
    let labels = [0.0, 3.0, 7.0];
    let m: Vec<f64> = (0..n * h * w).map(|i| labels[((i % w) / 8 + (i / w % h) / 8) % 3]).collect();
    let mask = tensor(&m, [n, 1, h, w], false, &flex());
    for (spec, fill) in [("affine:rot=30,scale=0.7-1.2,shift=0.2;tps:0.1", 255.0), ("perspective:0.6", -1.0)]
    {
        let aug = Augment::parse(spec).unwrap();
        let warps = aug.draw(&keys(4, n as u64), [h, w]);
        let out = values(augment::warp_mask(mask.clone(), &warps, aug.options(), fill).unwrap());
        assert!(
            out.iter().all(|v| labels.contains(v) || *v == fill),
            "{spec}: a value outside the label set"
        );
        for want in [3.0, 7.0, fill] {
            assert!(out.contains(&want), "{spec}: {want} never appears");
        }
        let border = AugmentOptions { padding: Padding::Border, ..*aug.options() };
        let out = values(augment::warp_mask(mask.clone(), &warps, &border, fill).unwrap());
        assert!(out.iter().all(|v| labels.contains(v)), "{spec}, border padding");
    }
}

/// A smooth 1 x 1 x 32 x 32 pattern.
fn smooth(n: usize) -> Vec<f64> {
    (0..n * 32 * 32)
        .map(|i| {
            let (x, y, s) = ((i % 32) as f64, (i / 32 % 32) as f64, (i / 1024) as f64);
            (0.2 * x + 0.1 * s).sin() * (0.15 * y).cos()
        })
        .collect()
}

#[test]
fn inverse_undoes_the_warp() {
    let device = flex();
    let opts = SampleOptions::new(Interpolation::Bilinear, Padding::Zeros, false);
    // Pixel-aligned warps come back exactly.
    let (px, _) = mnist(3);
    let x = tensor(&px, [3, 1, 28, 28], true, &device);
    for spec in ["hflip:1", "vflip:1;hflip:1", "rotation:90..90", "rotation:-90..-90;vflip:1"] {
        let aug = Augment::parse(spec).unwrap();
        let out = aug.forward(x.clone(), &keys(1, 3)).unwrap();
        assert!(values(out.image.clone()) != px, "{spec}: the warp did something");
        let back = values(augment::inverse(out.image, &out.warps, opts, [28, 28]).unwrap());
        assert_close(spec, &back, &px, 1e-9);
    }
    // General warps come back inside the image, up to the two bilinear resamplings.
    let n = 4;
    let s = smooth(n);
    let x = tensor(&s, [n, 1, 32, 32], true, &device);
    for spec in [
        "affine:rot=25,scale=1.0-1.15,shear=5,shift=0.05",
        "perspective:0.3",
        "tps:0.06",
        "affine:rot=20;tps:0.05",
    ] {
        let aug = Augment::parse(spec).unwrap();
        let out = aug.forward(x.clone(), &keys(9, n as u64)).unwrap();
        let back = values(augment::inverse(out.image, &out.warps, opts, [32, 32]).unwrap());
        let mut worst = 0.0f64;
        let mut at = String::new();
        let mut count = 0;
        for i in 0..n {
            let pts: Vec<[f64; 2]> = (0..1024).map(|p| [(p % 32) as f64, (p / 32) as f64]).collect();
            let moved = augment::map_keypoints(&out.warps[i..=i], &[pts], [32, 32], [32, 32], false).unwrap();
            for (p, q) in moved[0].iter().enumerate() {
                // Inside both frames, with a margin for the interpolation's neighbours.
                let inside = |v: f64| (2.0..29.0).contains(&v);
                if inside(q[0]) && inside(q[1]) && inside((p % 32) as f64) && inside((p / 32) as f64) {
                    let k = i * 1024 + p;
                    if (back[k] - s[k]).abs() > worst {
                        worst = (back[k] - s[k]).abs();
                        at = format!(
                            "sample {i} pixel {p} -> {q:?}: {} vs {}; {:?}",
                            back[k], s[k], out.warps[i]
                        );
                    }
                    count += 1;
                }
            }
        }
        assert!(count > 1500, "{spec}: {count} pixels stayed inside");
        assert!(worst < 0.03, "{spec}: inverse(warp(x)) differs from x by {worst} inside the image at {at}");
    }
    // No inverse: a singular matrix and a folding spline are errors, never the input back.
    let singular = Warp { stages: vec![Stage::Matrix([[1.0, 2.0, 0.0], [0.5, 1.0, 0.0], [0.0, 0.0, 1.0]])] };
    let x1 = tensor(&smooth(1), [1, 1, 32, 32], true, &device);
    let e = augment::inverse(x1.clone(), &[singular], opts, [32, 32]).unwrap_err();
    assert!(matches!(e, StnError::NoInverse { sample: 0, .. }), "{e}");
    let tps = stn::Tps::new(3, 3).unwrap();
    let mut theta = tps.control_points();
    theta.swap(0, 8); // opposite corners trade places: the spline folds
    let folded = Warp { stages: vec![Stage::Tps { rows: 3, cols: 3, theta }] };
    let e = augment::inverse(x1, std::slice::from_ref(&folded), opts, [32, 32]).unwrap_err();
    assert!(e.to_string().contains("folds"), "{e}");
    assert!(augment::map_keypoints(&[folded], &[vec![[0.0, 0.0]]], [32, 32], [32, 32], false).is_err());
}

fn run_in_pool<T: Send>(threads: usize, f: impl FnOnce() -> T + Send) -> T {
    rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap().install(f)
}

#[test]
fn results_depend_on_the_keys_alone() {
    let (px, _) = mnist(64);
    let device = flex();
    let x = tensor(&px, [64, 1, 28, 28], false, &device);
    for spec in [
        "affine:rot=30,scale=0.8-1.2,shift=0.1;tps:0.1;hflip",
        "perspective:0.5;affine:rot=10",
        "tps:0.1;affine:rot=20",
    ] {
        let aug = Augment::parse(spec).unwrap();
        let all = aug.forward(x.clone(), &Key::batch(42, 3, 0..64)).unwrap();
        let want = values(all.image.clone());
        for batch in [1usize, 7, 64] {
            let mut got = Vec::new();
            let mut warps = Vec::new();
            for start in (0..64).step_by(batch) {
                let end = (start + batch).min(64);
                let xb = x.clone().narrow(0, start, end - start);
                let out = aug.forward(xb, &Key::batch(42, 3, start as u64..end as u64)).unwrap();
                got.extend(values(out.image));
                warps.extend(out.warps);
            }
            assert!(warps == all.warps, "{spec}: batches of {batch}: other warps");
            same_bits(&format!("{spec}: batches of {batch}"), &got, &want);
        }
        for threads in [1, 2] {
            let out = run_in_pool(threads, || aug.forward(x.clone(), &Key::batch(42, 3, 0..64)).unwrap());
            same_bits(&format!("{spec}: {threads} threads"), &values(out.image), &want);
        }
        let other = aug.forward(x.clone(), &Key::batch(43, 3, 0..64)).unwrap();
        assert_ne!(values(other.image), want, "{spec}: another seed");
        let other = aug.forward(x.clone(), &Key::batch(42, 4, 0..64)).unwrap();
        assert_ne!(values(other.image), want, "{spec}: another epoch");
    }
    // same_on_batch: one draw for the batch.
    let aug = Augment::parse("affine:rot=30,scale=0.8-1.2;tps:0.1;same_on_batch=true").unwrap();
    let w = aug.draw(&Key::batch(1, 0, 0..5), [28, 28]);
    assert!(w.iter().all(|x| *x == w[0]) && !w[0].is_identity());
    let aug = Augment::parse("affine:rot=30,scale=0.8-1.2;tps:0.1").unwrap();
    let w = aug.draw(&Key::batch(1, 0, 0..5), [28, 28]);
    assert!(w[1] != w[0]);
}

#[test]
fn gradients_to_the_image_match_finite_differences() {
    let mut rng = Rng::new(5);
    let dims = [2, 2, 6, 7];
    let n: usize = dims.iter().product();
    let x0 = rng.uniform(n, -1.0, 1.0);
    for spec in [
        "affine:rot=30,scale=0.8-1.2,shift=0.1",
        "perspective:0.5",
        "affine:rot=20;tps:0.1",
        "tps:0.1;affine:rot=20;padding=reflection",
        "affine:rot=20;mode=bicubic;padding=border",
    ] {
        let aug = Augment::parse(spec).unwrap();
        let ks = keys(8, 2);
        let ad = autodiff();
        let x = tensor(&x0, dims, true, &ad).require_grad();
        let out = aug.forward(x.clone(), &ks).unwrap();
        let w = weights(&out.image, &mut rng, &ad);
        let grads = (out.image * w.clone()).sum().backward();
        let g = values(x.grad(&grads).expect("gradient to the image"));
        let wv = values(w);
        let device: Device = flex();
        let f = |xs: &[f64]| {
            let out = aug.forward(tensor(xs, dims, true, &device), &ks).unwrap();
            values(out.image).iter().zip(&wv).map(|(a, b)| a * b).sum::<f64>()
        };
        let idx: Vec<usize> = (0..n).step_by(3).collect();
        fd_check(spec, &f, &x0, &g, &idx, 1e-6);
        assert!(g.iter().any(|v| v.abs() > 1e-3), "{spec}: a zero gradient");
    }
}

#[test]
fn bad_parameters_are_clear_errors() {
    for (spec, needle) in [
        ("affine:scale=1.2-0.8", "affine.scale"),
        ("affine:rot=-5", "affine.rot"),
        ("hflip:p=1.5", "hflip.p"),
        ("vflip:-0.1", "vflip"),
        ("affine:rot=nan", "affine.rot"),
        ("tps:-0.1", "tps.scale"),
        ("tps:0.1,grid=1", "tps.grid"),
        ("perspective:2", "perspective.distortion"),
        ("crop:scale=0-1", "crop.scale"),
        ("affine:bogus=1", "affine.bogus"),
        ("twirl:3", "twirl"),
        ("padding=mirror", "padding"),
        ("", "spec"),
    ] {
        let e = Augment::parse(spec).expect_err(spec).to_string();
        assert!(e.contains(needle), "{spec}: {e}");
    }
    let bad = Op::Rotation { deg: Range::new(f64::NAN, 1.0), p: 1.0 };
    assert!(Augment::new(vec![bad], AugmentOptions::default()).is_err());
    let bad = Op::HFlip { p: f64::NAN };
    assert!(Augment::new(vec![bad], AugmentOptions::default()).is_err());
    // Keys and warps must match the batch.
    let aug = Augment::parse("affine:rot=10").unwrap();
    let x = Tensor::<4>::zeros([3, 1, 8, 8], &flex());
    assert!(aug.forward(x.clone(), &keys(1, 2)).is_err());
    assert!(augment::warp_mask(x, &[Warp::identity()], aug.options(), 0.0).is_err());
}

#[test]
fn specs_print_and_parse_back() {
    let aug = Augment::parse(
        "affine:rot=-10-30,scale=0.8-1.2,shift_x=0.1;perspective:0.3,p=0.5;elastic:0.05,grid=4x6;crop;hflip;padding=border;align_corners=true",
    )
    .unwrap();
    let again = Augment::parse(&aug.to_string()).unwrap();
    assert_eq!(again, aug);
    assert_eq!(again.options().padding, Padding::Border);
    assert!(again.options().align_corners);
    match &aug.ops()[0] {
        Op::Affine { rot, .. } => assert_eq!(*rot, Range::new(-10.0, 30.0)),
        op => panic!("{op:?}"),
    }
}
