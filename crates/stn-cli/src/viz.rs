//! Pictures: the paper's figure (each input with the outline of its sampling grid, the
//! transformer's output, the predicted label) and training curves, as RGB images.

use burn::module::Module;
use burn::tensor::{Device, Tensor};
use stn_data::{Dataset, Image};

use crate::models::Classifier;
use crate::run::{argmax, batch, EpochMetrics, RunResult};

const RED: [f32; 3] = [1.0, 0.15, 0.1];
const COLORS: [[f32; 3]; 4] = [[0.2, 0.5, 1.0], [1.0, 0.4, 0.1], [0.2, 0.8, 0.3], [0.8, 0.3, 0.9]];

/// 3 x 5 glyphs of the digits 0-9, one row per u8 (3 low bits, leftmost = 4).
const GLYPHS: [[u8; 5]; 10] = [
    [7, 5, 5, 5, 7],
    [2, 6, 2, 2, 7],
    [7, 1, 7, 4, 7],
    [7, 1, 7, 1, 7],
    [5, 5, 7, 1, 1],
    [7, 4, 7, 1, 7],
    [7, 4, 7, 5, 7],
    [7, 1, 1, 1, 1],
    [7, 5, 7, 5, 7],
    [7, 5, 7, 1, 7],
];

/// An RGB canvas filled with `bg`.
fn canvas(h: usize, w: usize, bg: f32) -> Image {
    Image { data: vec![bg; 3 * h * w], channels: 3, height: h, width: w }
}

fn put(img: &mut Image, y: i64, x: i64, c: [f32; 3]) {
    if y >= 0 && x >= 0 && (y as usize) < img.height && (x as usize) < img.width {
        let p = img.height * img.width;
        let i = y as usize * img.width + x as usize;
        for (k, v) in c.iter().enumerate() {
            img.data[k * p + i] = *v;
        }
    }
}

/// Copies a gray `h x w` image, scaled by `s` (nearest), to (oy, ox).
fn blit_gray(img: &mut Image, src: &[f32], h: usize, w: usize, s: usize, oy: usize, ox: usize) {
    for y in 0..h * s {
        for x in 0..w * s {
            let v = src[(y / s) * w + x / s].clamp(0.0, 1.0);
            put(img, (oy + y) as i64, (ox + x) as i64, [v, v, v]);
        }
    }
}

/// Draws digit `d` (0-9) with cells of `s` pixels at (oy, ox).
fn glyph(img: &mut Image, d: usize, s: usize, oy: usize, ox: usize, c: [f32; 3]) {
    for (r, bits) in GLYPHS[d % 10].iter().enumerate() {
        for col in 0..3 {
            if bits & (4 >> col) != 0 {
                for y in 0..s {
                    for x in 0..s {
                        put(img, (oy + r * s + y) as i64, (ox + col * s + x) as i64, c);
                    }
                }
            }
        }
    }
}

/// The decimal digits of `v`, most significant first.
fn digits(v: usize) -> Vec<usize> {
    let mut d: Vec<usize> = v.to_string().bytes().map(|b| (b - b'0') as usize).collect();
    if d.is_empty() {
        d.push(0);
    }
    d
}

/// Draws the number `v` with cells of `s` pixels, right-aligned so its last digit ends at
/// column `right`, top at row `oy`.
fn number(img: &mut Image, v: usize, s: usize, oy: usize, right: usize, c: [f32; 3]) {
    let d = digits(v);
    let width = d.len() * 4 * s - s;
    let ox = right.saturating_sub(width);
    for (i, &g) in d.iter().enumerate() {
        glyph(img, g, s, oy, ox + i * 4 * s, c);
    }
}

/// A line from (y0, x0) to (y1, x1) (Bresenham).
fn line(img: &mut Image, a: (i64, i64), b: (i64, i64), c: [f32; 3]) {
    line_in(img, a, b, c, (0, 0, i64::MAX, i64::MAX));
}

/// A line drawn only inside the rectangle (top, left, bottom, right), exclusive ends.
fn line_in(
    img: &mut Image,
    (y0, x0): (i64, i64),
    (y1, x1): (i64, i64),
    c: [f32; 3],
    clip: (i64, i64, i64, i64),
) {
    let (dx, dy) = ((x1 - x0).abs(), -(y1 - y0).abs());
    let (sx, sy) = (if x0 < x1 { 1 } else { -1 }, if y0 < y1 { 1 } else { -1 });
    let (mut x, mut y, mut err) = (x0, y0, dx + dy);
    loop {
        if y >= clip.0 && x >= clip.1 && y < clip.2 && x < clip.3 {
            put(img, y, x, c);
        }
        if x == x1 && y == y1 {
            break;
        }
        let e2 = 2 * err;
        if e2 >= dy {
            err += dy;
            x += sx;
        }
        if e2 <= dx {
            err += dx;
            y += sy;
        }
    }
}

/// The paper's figure for the first `count` images of `data`: per image, the input (scaled
/// by 3) with the outline of the sampling grid in red, the transformer's output, and the
/// predicted label (green when right, red when wrong). Models without a transformer show the
/// input and the label only.
pub fn figure(model: &Classifier, data: &Dataset, count: usize) -> RunResult<Image> {
    let count = count.min(data.len()).max(1);
    let dev = Device::flex();
    let model = model.valid();
    let idx: Vec<usize> = (0..count).collect();
    let (x, _) = batch(data, &idx, &dev);
    let out = model.try_forward(x).map_err(|e| e.to_string())?;
    let pred = argmax(out.log_probs);
    let (h, w) = (data.height, data.width);
    let s = 3;
    let (oh, ow) = match &model.transformer {
        Some(t) => (t.out_size()[0], t.out_size()[1]),
        None => (0, 0),
    };
    // Outline of each sampling grid, in input pixels (align_corners = false convention).
    let outlines: Vec<Vec<(f64, f64)>> = match (&model.transformer, &out.theta) {
        (Some(t), Some(theta)) => {
            let grid: Tensor<4> = t
                .transform()
                .grid(theta.clone(), &[oh, ow], t.config().align_corners)
                .map_err(|e| e.to_string())?;
            let g: Vec<f32> = grid.into_data().convert::<f32>().try_into_vec::<f32>().unwrap_or_default();
            let mut border: Vec<(usize, usize)> = Vec::new();
            border.extend((0..ow).map(|j| (0, j)));
            border.extend((0..oh).map(|i| (i, ow - 1)));
            border.extend((0..ow).rev().map(|j| (oh - 1, j)));
            border.extend((0..oh).rev().map(|i| (i, 0)));
            (0..count)
                .map(|n| {
                    border
                        .iter()
                        .map(|&(i, j)| {
                            let k = ((n * oh + i) * ow + j) * 2;
                            let (gx, gy) = (g[k] as f64, g[k + 1] as f64);
                            ((((gy + 1.0) * h as f64 - 1.0) / 2.0), (((gx + 1.0) * w as f64 - 1.0) / 2.0))
                        })
                        .collect()
                })
                .collect()
        }
        _ => vec![Vec::new(); count],
    };
    let warped: Vec<f32> = out
        .warped
        .map(|t| t.into_data().convert::<f32>().try_into_vec::<f32>().unwrap_or_default())
        .unwrap_or_default();
    let cell_w = w * s + 6 + if oh > 0 { ow * s + 6 } else { 0 } + 3 * 4 + 8;
    let cell_h = (h * s).max(oh * s) + 6;
    let cols = 4;
    let rows = count.div_ceil(cols);
    let mut img = canvas(rows * cell_h + 6, cols * cell_w + 6, 0.15);
    for n in 0..count {
        let (oy, ox) = (6 + (n / cols) * cell_h, 6 + (n % cols) * cell_w);
        blit_gray(&mut img, data.image(n), h, w, s, oy, ox);
        let pts = &outlines[n];
        for k in 0..pts.len() {
            let (a, b) = (pts[k], pts[(k + 1) % pts.len()]);
            let p = |(y, x): (f64, f64)| {
                ((oy as f64 + (y + 0.5) * s as f64) as i64, (ox as f64 + (x + 0.5) * s as f64) as i64)
            };
            line(&mut img, p(a), p(b), RED);
        }
        let mut x = ox + w * s + 6;
        if oh > 0 {
            blit_gray(&mut img, &warped[n * oh * ow..(n + 1) * oh * ow], oh, ow, s, oy, x);
            x += ow * s + 6;
        }
        let right = pred.get(n).copied() == Some(data.labels[n] as i64);
        let c = if right { [0.3, 0.9, 0.3] } else { RED };
        glyph(&mut img, pred.get(n).copied().unwrap_or(0) as usize, 4, oy, x, c);
    }
    Ok(img)
}

/// Keypoints of a gray digit: its ink's centroid and its topmost, rightmost, bottommost and
/// leftmost ink pixels (ink: values above 0.5), in pixels (x, y).
pub fn digit_keypoints(img: &[f32], h: usize, w: usize) -> Vec<[f64; 2]> {
    let ink: Vec<(usize, usize)> = (0..h * w).filter(|&i| img[i] > 0.5).map(|i| (i % w, i / w)).collect();
    if ink.is_empty() {
        return vec![[(w as f64 - 1.0) / 2.0, (h as f64 - 1.0) / 2.0]];
    }
    let n = ink.len() as f64;
    let c =
        [ink.iter().map(|p| p.0 as f64).sum::<f64>() / n, ink.iter().map(|p| p.1 as f64).sum::<f64>() / n];
    let pick = |f: &dyn Fn(&(usize, usize)) -> i64| {
        let p = ink.iter().max_by_key(|p| f(p)).expect("ink");
        [p.0 as f64, p.1 as f64]
    };
    vec![c, pick(&|p| -(p.1 as i64)), pick(&|p| p.0 as i64), pick(&|p| p.1 as i64), pick(&|p| -(p.0 as i64))]
}

/// A grid of augmented digits: per row one digit of `data` (its keypoints drawn), then
/// `copies` augmented copies (copy k of digit i drawn with the key (seed, k, i)), each with
/// its keypoints moved by the warp and the outline of the original frame in red.
pub fn augment_grid(
    data: &Dataset,
    aug: &stn::augment::Augment,
    count: usize,
    copies: usize,
    seed: u64,
) -> RunResult<Image> {
    use stn::augment::{map_keypoints, Key};
    let count = count.min(data.len()).max(1);
    let (h, w) = (data.height, data.width);
    let dev = Device::flex();
    let idx: Vec<usize> = (0..count).collect();
    let (x, _) = batch(data, &idx, &dev);
    let kps: Vec<Vec<[f64; 2]>> = (0..count).map(|i| digit_keypoints(data.image(i), h, w)).collect();
    let mut frame: Vec<[f64; 2]> = Vec::new();
    let (l, t, r, b) = (-0.5, -0.5, w as f64 - 0.5, h as f64 - 0.5);
    for k in 0..16 {
        let f = k as f64 / 16.0;
        frame.extend_from_slice(&[
            [l + f * (r - l), t],
            [r, t + f * (b - t)],
            [r - f * (r - l), b],
            [l, b - f * (b - t)],
        ]);
    }
    // Perimeter order: top, right, bottom, left.
    let frame: Vec<[f64; 2]> =
        (0..4).flat_map(|side| (0..16).map(move |k| k * 4 + side)).map(|i| frame[i]).collect();
    let s = 4;
    let cell = w.max(h) * s + 8;
    let mut img = canvas(count * (h * s + 8) + 8, (copies + 1) * cell + 8, 0.15);
    let draw_points = |img: &mut Image, pts: &[[f64; 2]], oy: usize, ox: usize| {
        for (k, p) in pts.iter().enumerate() {
            let (cy, cx) =
                ((oy as f64 + (p[1] + 0.5) * s as f64) as i64, (ox as f64 + (p[0] + 0.5) * s as f64) as i64);
            let c = if k == 0 { RED } else { COLORS[(k - 1) % COLORS.len()] };
            for dy in -2..=2 {
                for dx in -2..=2 {
                    put(img, cy + dy, cx + dx, c);
                }
            }
        }
    };
    for (i, k) in kps.iter().enumerate() {
        let oy = 8 + i * (h * s + 8);
        blit_gray(&mut img, data.image(i), h, w, s, oy, 8);
        draw_points(&mut img, k, oy, 8);
    }
    for copy in 0..copies {
        let out = aug
            .forward(x.clone(), &Key::batch(seed, copy as u64, 0..count as u64))
            .map_err(|e| e.to_string())?;
        let v: Vec<f32> =
            out.image.into_data().convert::<f32>().try_into_vec::<f32>().map_err(|e| format!("{e:?}"))?;
        let moved = map_keypoints(&out.warps, &kps, [h, w], [h, w], aug.options().align_corners)
            .map_err(|e| e.to_string())?;
        let frames = map_keypoints(
            &out.warps,
            &vec![frame.clone(); count],
            [h, w],
            [h, w],
            aug.options().align_corners,
        )
        .map_err(|e| e.to_string())?;
        let ox = 8 + (copy + 1) * cell;
        for i in 0..count {
            let oy = 8 + i * (h * s + 8);
            blit_gray(&mut img, &v[i * h * w..(i + 1) * h * w], h, w, s, oy, ox);
            let fr = &frames[i];
            for k in 0..fr.len() {
                let p = |q: [f64; 2]| {
                    (
                        (oy as f64 + (q[1] + 0.5) * s as f64) as i64,
                        (ox as f64 + (q[0] + 0.5) * s as f64) as i64,
                    )
                };
                let clip = (oy as i64, ox as i64, (oy + h * s) as i64, (ox + w * s) as i64);
                line_in(&mut img, p(fr[k]), p(fr[(k + 1) % fr.len()]), [0.6, 0.1, 0.1], clip);
            }
            draw_points(&mut img, &moved[i], oy, ox);
        }
    }
    Ok(img)
}

/// Test error (%) per epoch of several runs, one coloured line each; the error axis runs from 0
/// to a round value above the largest error shown, with labelled ticks (percent) and grid lines,
/// and the epoch axis is labelled too; the legend is the order of `runs` (blue, orange, green,
/// purple).
pub fn curves(runs: &[(&str, &[EpochMetrics])]) -> Image {
    // Margins: left for the error labels, bottom for the epoch labels.
    let (hh, ww, (mt, mr, mb, ml)) = (260usize, 400usize, (14i64, 14i64, 28i64, 40i64));
    let mut img = canvas(hh, ww, 1.0);
    let epochs = runs.iter().map(|(_, r)| r.len()).max().unwrap_or(1).max(2);
    let worst = runs.iter().flat_map(|(_, r)| r.iter().map(|e| e.test_error)).fold(0.0, f64::max);
    // The error axis: 0 to the next multiple of its tick step above the worst error.
    let step = if worst <= 0.2 {
        0.05
    } else if worst <= 0.5 {
        0.1
    } else {
        0.2
    };
    let top = ((worst / step).ceil().max(1.0) * step).min(1.0).max(step);
    let (x0, x1, y0, y1) = (ml, ww as i64 - mr, hh as i64 - mb, mt);
    let px = |e: usize| x0 + ((x1 - x0) * (e as i64 - 1)) / (epochs as i64 - 1);
    let py = |v: f64| y0 - ((y0 - y1) as f64 * (v / top)).round() as i64;
    let (axis, grid) = ([0.2, 0.2, 0.2], [0.85, 0.85, 0.85]);
    let ticks = (top / step).round() as usize;
    for t in 0..=ticks {
        let v = t as f64 * step;
        if t > 0 {
            line(&mut img, (py(v), x0 + 1), (py(v), x1), grid);
        }
        line(&mut img, (py(v), x0 - 4), (py(v), x0), axis);
        let pct = (v * 100.0).round() as usize;
        number(&mut img, pct, 2, (py(v) - 5).max(0) as usize, (x0 - 8) as usize, axis);
    }
    let every = epochs.div_ceil(8);
    for e in 1..=epochs {
        line(&mut img, (y0, px(e)), (y0 + 3, px(e)), axis);
        if e == 1 || e == epochs || (e % every == 0 && epochs - e > every / 2) {
            let w = digits(e).len() as i64 * 8 - 2;
            number(&mut img, e, 2, (y0 + 6) as usize, (px(e) + w / 2) as usize, axis);
        }
    }
    line(&mut img, (y0, x0), (y0, x1), axis);
    line(&mut img, (y1, x0), (y0, x0), axis);
    for (k, (_, r)) in runs.iter().enumerate() {
        let c = COLORS[k % COLORS.len()];
        for e in 1..r.len() {
            let a = (py(r[e - 1].test_error), px(r[e - 1].epoch));
            let b = (py(r[e].test_error), px(r[e].epoch));
            for d in -1..=1 {
                line(&mut img, (a.0 + d, a.1), (b.0 + d, b.1), c);
            }
        }
        if let Some(last) = r.last() {
            for d in -3..=3 {
                for e in -3..=3 {
                    put(&mut img, py(last.test_error) + d, px(last.epoch) + e, c);
                }
            }
        }
    }
    img
}
