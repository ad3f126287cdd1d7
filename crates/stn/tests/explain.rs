//! theta decomposed (`stn::explain`): known warps composed from rotation, scales, shear and
//! translation come back as those; the sign of the angle is checked with the sampler itself;
//! reflections, singular maps, projective maps and splines give the documented results.

use stn::explain::{explain, Explanation};
use stn::Transform;
use stn_kernels::{affine_sample, homography, Interpolation, Padding, SampleOptions, TensorRef, Tps};

fn close(a: f64, b: f64, tol: f64) -> bool {
    (a - b).abs() <= tol * (1.0 + b.abs())
}

/// `R(angle) · [[sx, sx k], [0, sy]]` and `t` as the affine family's 6 parameters.
fn compose(angle_deg: f64, sx: f64, sy: f64, k: f64, t: [f64; 2]) -> Vec<f64> {
    let (s, c) = angle_deg.to_radians().sin_cos();
    let u = [[sx, sx * k], [0.0, sy]];
    let a = [
        [c * u[0][0] - s * u[1][0], c * u[0][1] - s * u[1][1]],
        [s * u[0][0] + c * u[1][0], s * u[0][1] + c * u[1][1]],
    ];
    vec![a[0][0], a[0][1], t[0], a[1][0], a[1][1], t[1]]
}

#[test]
fn composed_affine_warps_decompose_into_their_parts() {
    let mut n = 0;
    for angle in [-179.0, -135.0, -60.0, -1.0, 0.0, 0.5, 33.0, 90.0, 150.0, 180.0] {
        for sx in [0.3, 1.0, 1.7] {
            for sy in [0.6, 1.0, 2.2, -0.8] {
                for k in [-0.4, 0.0, 0.25] {
                    let t = [0.1 * sx, -0.3 * sy];
                    let e = explain(Transform::Affine, &compose(angle, sx, sy, k, t)).unwrap();
                    let what = format!("angle {angle}, scales {sx} {sy}, shear {k}: {e:?}");
                    assert!(close(e.angle_deg, angle, 1e-12), "{what}");
                    assert!(close(e.scale_x, sx, 1e-12) && close(e.scale_y, sy, 1e-12), "{what}");
                    assert!(close(e.shear, k, 1e-12) && e.tx == t[0] && e.ty == t[1], "{what}");
                    assert!(close(e.zoom, (sx * sy).abs(), 1e-12), "{what}");
                    assert_eq!(e.reflection, sy < 0.0, "{what}");
                    assert!(!e.singular, "{what}");
                    n += 1;
                }
            }
        }
    }
    assert_eq!(n, 360);
}

/// The angle's sign, checked with the sampler rather than the formula: an input whose content
/// is turned by +90 degrees (a spot right of the centre moves below it, y pointing down) is
/// made upright by the transform whose `angle_deg` is +90.
#[test]
fn the_angle_is_the_content_rotation_the_transform_undoes() {
    let n = 33;
    let mut img = vec![0f32; n * n];
    // A spot at (x, y) = (0.5, 0): right of the centre.
    let (cx, cy) = (3 * (n - 1) / 4, (n - 1) / 2);
    img[cy * n + cx] = 1.0;
    let opts = SampleOptions::new(Interpolation::Nearest, Padding::Zeros, true);
    let sample = |input: &[f32], theta: &[f64]| {
        let th: Vec<f32> = theta.iter().map(|&v| v as f32).collect();
        affine_sample(TensorRef::new(input, &[1, 1, n, n]), TensorRef::new(&th, &[1, 2, 3]), &[n, n], &opts)
            .unwrap()
            .data
    };
    let spot = |img: &[f32]| {
        let i = img.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).unwrap().0;
        (i % n, i / n)
    };
    // Content turned by +90: sampled at R(-90) x.
    let turned = sample(&img, &compose(-90.0, 1.0, 1.0, 0.0, [0.0, 0.0]));
    assert_eq!(spot(&turned), ((n - 1) / 2, 3 * (n - 1) / 4), "the spot moved below the centre");
    let undo = compose(90.0, 1.0, 1.0, 0.0, [0.0, 0.0]);
    assert_eq!(spot(&sample(&turned, &undo)), (cx, cy), "R(+90) makes it upright again");
    assert!(close(explain(Transform::Affine, &undo).unwrap().angle_deg, 90.0, 1e-12));
}

#[test]
fn reflections_and_singular_maps_say_so() {
    // A mirror top to bottom: no rotation, scale_y -1.
    let e = explain(Transform::Affine, &[1.0, 0.0, 0.0, 0.0, -1.0, 0.0]).unwrap();
    assert!(e.reflection && e.angle_deg == 0.0 && e.scale_y == -1.0 && e.zoom == 1.0, "{e:?}");
    // A mirror left to right: a half turn and the same mirror (QR's unique form).
    let e = explain(Transform::Affine, &[-1.0, 0.0, 0.0, 0.0, 1.0, 0.0]).unwrap();
    assert!(e.reflection && e.angle_deg == 180.0 && e.scale_x == 1.0 && e.scale_y == -1.0, "{e:?}");
    // Nearly singular: both columns almost the same. Still decomposed, flagged.
    let e = explain(Transform::Affine, &[1.0, 1.0, 0.0, 1.0, 1.0 + 1e-12, 0.0]).unwrap();
    assert!(e.singular && close(e.angle_deg, 45.0, 1e-12) && e.zoom < 1e-9, "{e:?}");
    // A zero first column: no angle, no shear, said as null in JSON.
    let e = explain(Transform::Affine, &[0.0, 1.0, 0.2, 0.0, 0.0, 0.0]).unwrap();
    assert!(e.singular && e.angle_deg.is_nan() && e.shear.is_nan() && e.zoom == 0.0, "{e:?}");
    let json = serde_json::to_value(&e).unwrap();
    assert!(json["angle_deg"].is_null() && json["tx"] == 0.2, "{json}");
    assert!(json.get("perspective").is_none(), "no perspective for an affine map: {json}");
    // Not decomposed: wrong counts, non-finite values, families without a 2-D matrix.
    for (t, p) in [
        (Transform::Affine, vec![1.0; 5]),
        (Transform::Affine, vec![1.0, 0.0, f64::NAN, 0.0, 1.0, 0.0]),
        (Transform::Affine3d, vec![0.0; 12]),
        (Transform::Dense, vec![0.0; 2]),
    ] {
        let e = explain(t, &p).unwrap_err().to_string();
        assert!(e.contains("theta"), "{e}");
    }
}

#[test]
fn restricted_families_read_as_their_affine_maps() {
    let e = explain(Transform::Similarity, &[0.8, 30f64.to_radians(), 0.1, 0.2]).unwrap();
    assert!(close(e.angle_deg, 30.0, 1e-12) && close(e.scale_x, 0.8, 1e-12) && close(e.scale_y, 0.8, 1e-12));
    assert!(e.shear.abs() < 1e-15 && close(e.zoom, 0.64, 1e-12) && e.family == "similarity", "{e:?}");
    let e = explain(Transform::Attention, &[0.5, -0.2, 0.3]).unwrap();
    assert!(e.angle_deg == 0.0 && e.scale_x == 0.5 && e.zoom == 0.25 && (e.tx, e.ty) == (-0.2, 0.3));
    let e = explain(Transform::Translation, &[0.4, -0.1]).unwrap();
    assert!(e.zoom == 1.0 && e.scale_x == 1.0 && (e.tx, e.ty) == (0.4, -0.1), "{e:?}");
}

/// The shoelace area of a polygon, relative to the output square's (4).
fn quad_area(q: &[[f64; 2]]) -> f64 {
    let mut twice = 0.0;
    for i in 0..q.len() {
        let (p, r) = (q[i], q[(i + 1) % q.len()]);
        twice += p[0] * r[1] - r[0] * p[1];
    }
    (twice / 2.0).abs() / 4.0
}

#[test]
fn projective_maps_give_their_affine_part_perspective_and_the_sampled_area() {
    // Where the output's corners are sampled: a perspective quadrilateral.
    let corners = [[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]];
    let quad = [[-0.6, -0.7], [0.9, -0.5], [0.5, 0.8], [-0.8, 0.6]];
    let h = homography(&corners, &quad);
    let e = explain(Transform::Projective, &h).unwrap();
    assert_eq!(e.perspective, Some([h[6], h[7]]));
    assert!(h[6].abs() > 1e-3 || h[7].abs() > 1e-3, "a real perspective: {h:?}");
    // Lines stay lines: the sampled region is exactly the quadrilateral.
    assert!(close(e.zoom, quad_area(&quad), 1e-9), "{} vs {}", e.zoom, quad_area(&quad));
    let affine = explain(Transform::Affine, &[h[0], h[1], h[2], h[3], h[4], h[5]]).unwrap();
    assert_eq!(
        (e.angle_deg, e.scale_x, e.scale_y, e.shear),
        (affine.angle_deg, affine.scale_x, affine.scale_y, affine.shear)
    );
    // Without perspective terms it is the affine map, zoom included.
    let p = compose(20.0, 0.7, 0.9, 0.1, [0.05, 0.0]);
    let e = explain(Transform::Projective, &[p[0], p[1], p[2], p[3], p[4], p[5], 0.0, 0.0]).unwrap();
    assert!(close(e.zoom, 0.63, 1e-9) && close(e.angle_deg, 20.0, 1e-12), "{e:?}");
}

#[test]
fn splines_give_their_affine_part_bending_and_displacement() {
    let tps = Tps::default();
    let ctrl = tps.control_points();
    let flat = |pts: &[[f64; 2]]| pts.iter().flat_map(|p| [p[0], p[1]]).collect::<Vec<_>>();
    let e = explain(Transform::tps16(), &flat(&ctrl)).unwrap();
    assert!(e.bending_energy.unwrap().abs() < 1e-12 && e.max_displacement == Some(0.0), "{e:?}");
    assert!(close(e.zoom, 1.0, 1e-9) && e.angle_deg.abs() < 1e-9 && close(e.scale_x, 1.0, 1e-9), "{e:?}");
    // Control points moved by an affine map: no bending, the map's own decomposition.
    let a = compose(-25.0, 0.8, 1.1, 0.2, [0.1, -0.05]);
    let moved: Vec<[f64; 2]> =
        ctrl.iter().map(|c| [a[0] * c[0] + a[1] * c[1] + a[2], a[3] * c[0] + a[4] * c[1] + a[5]]).collect();
    let e = explain(Transform::tps16(), &flat(&moved)).unwrap();
    assert!(e.bending_energy.unwrap().abs() < 1e-9, "{e:?}");
    assert!(close(e.angle_deg, -25.0, 1e-9) && close(e.scale_x, 0.8, 1e-9) && close(e.scale_y, 1.1, 1e-9));
    assert!(close(e.shear, 0.2, 1e-9) && close(e.tx, 0.1, 1e-9) && close(e.zoom, 0.88, 1e-6), "{e:?}");
    // One point moved: it bends (energy > 0, quadratic in the move), and the move is the
    // largest displacement.
    let bend = |d: f64| {
        let mut p = ctrl.clone();
        p[5][0] += d;
        p[5][1] -= d / 2.0;
        explain(Transform::tps16(), &flat(&p)).unwrap()
    };
    let (e1, e2): (Explanation, Explanation) = (bend(0.1), bend(0.2));
    let (b1, b2) = (e1.bending_energy.unwrap(), e2.bending_energy.unwrap());
    assert!(b1 > 0.0 && close(b2, 4.0 * b1, 1e-9), "{b1} {b2}");
    assert!(close(e1.max_displacement.unwrap(), 0.1f64.hypot(0.05), 1e-12), "{e1:?}");
}

#[test]
fn inverses_undo_their_maps_and_the_outside_share_counts_padding() {
    use stn::explain::{outside_share, PointMap};
    let maps = [
        PointMap::new(Transform::Affine, &compose(35.0, 0.7, 1.3, 0.2, [0.1, -0.2])).unwrap(),
        PointMap::new(
            Transform::Projective,
            &homography(
                &[[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]],
                &[[-0.6, -0.7], [0.9, -0.5], [0.5, 0.8], [-0.8, 0.6]],
            ),
        )
        .unwrap(),
    ];
    for m in &maps {
        let inv = m.inverse().expect("invertible");
        for q in [[0.0, 0.0], [0.5, -0.3], [-0.9, 0.8]] {
            let back = inv.apply(m.apply(q));
            assert!(
                (back[0] - q[0]).abs() < 1e-12 && (back[1] - q[1]).abs() < 1e-12,
                "{m:?}: {q:?} -> {back:?}"
            );
        }
    }
    assert!(PointMap::new(Transform::Affine, &[1.0, 1.0, 0.0, 1.0, 1.0, 0.0]).unwrap().inverse().is_none());
    let id = PointMap::new(Transform::Affine, &[1.0, 0.0, 0.0, 0.0, 1.0, 0.0]).unwrap();
    assert_eq!(outside_share(&id, 32), 0.0);
    // Twice the output's extent: outside wherever |x| or |y| > 1/2, three quarters of it.
    let out = PointMap::new(Transform::Attention, &[2.0, 0.0, 0.0]).unwrap();
    assert_eq!(outside_share(&out, 32), 0.75);
    // Shifted by a whole width: all outside.
    let gone = PointMap::new(Transform::Translation, &[2.5, 0.0]).unwrap();
    assert_eq!(outside_share(&gone, 32), 1.0);
}
