//! The explanation report: what a trained transformer does to a set of images, as one
//! self-contained HTML page (figures drawn with plotters as inline SVG, thumbnails as PNG data
//! URIs; no script, no network), plus the same numbers as JSON.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use plotters::prelude::*;
use stn::explain::PointMap;
use stn_data::{Dataset, Image};
use stn_models::rectify::Rectifier;
use stn_models::run::{EpochMetrics, RunResult};
use stn_table::explain::{correlation, ExplainedRow, Summary};

/// What a report is made of.
pub struct ReportInput<'a> {
    /// The page's title.
    pub title: String,
    /// What was explained, in words (data, distortion, seed, rows).
    pub source: String,
    /// The explained images ([`stn_table::explain::explain_dataset`]).
    pub rows: &'a [ExplainedRow],
    /// The images themselves (for the thumbnails).
    pub data: &'a Dataset,
    /// The transformer (to rectify the thumbnails).
    pub rectifier: &'a Rectifier,
    /// The training curves, epoch by epoch (none: no training section).
    pub metrics: &'a [EpochMetrics],
    /// The results table: name, value.
    pub results: Vec<(String, String)>,
}

/// Thumbnails per kind of extreme warp.
const EXTREMES: usize = 5;

const BLUE: RGBColor = RGBColor(31, 119, 180);
const ORANGE: RGBColor = RGBColor(255, 127, 14);
const GREEN: RGBColor = RGBColor(44, 160, 44);

fn plot_err(e: impl std::fmt::Display) -> String {
    format!("drawing a figure: {e}")
}

/// An SVG chart of `w x h` drawn by `draw`.
fn svg(
    w: u32,
    h: u32,
    draw: impl FnOnce(DrawingArea<SVGBackend<'_>, plotters::coord::Shift>) -> Result<(), String>,
) -> Result<String, String> {
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, (w, h)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_err)?;
        draw(root.clone())?;
        root.present().map_err(plot_err)?;
    }
    Ok(out)
}

/// The range of `v` (finite values), widened a little, and never empty.
fn range(v: impl Iterator<Item = f64>) -> (f64, f64) {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for x in v.filter(|x| x.is_finite()) {
        lo = lo.min(x);
        hi = hi.max(x);
    }
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    let pad = ((hi - lo) * 0.05).max(1e-6);
    (lo - pad, hi + pad)
}

/// A histogram of `values` (30 bins) with the axis names given.
fn histogram(values: &[f64], what: &str, x_label: &str) -> Result<String, String> {
    let (lo, hi) = range(values.iter().copied());
    let bins = 30usize;
    let width = (hi - lo) / bins as f64;
    let mut counts = vec![0u32; bins];
    for v in values.iter().filter(|v| v.is_finite()) {
        counts[(((v - lo) / width) as usize).min(bins - 1)] += 1;
    }
    let top = counts.iter().copied().max().unwrap_or(1).max(1);
    svg(420, 260, |root| {
        let mut chart = ChartBuilder::on(&root)
            .caption(what, ("sans-serif", 16))
            .margin(8)
            .x_label_area_size(36)
            .y_label_area_size(48)
            .build_cartesian_2d(lo..hi, 0u32..top + top / 10 + 1)
            .map_err(plot_err)?;
        chart
            .configure_mesh()
            .x_desc(x_label)
            .y_desc("images")
            .light_line_style(WHITE)
            .draw()
            .map_err(plot_err)?;
        chart
            .draw_series(counts.iter().enumerate().map(|(i, &c)| {
                let x0 = lo + i as f64 * width;
                Rectangle::new([(x0, 0), (x0 + width, c)], BLUE.mix(0.7).filled())
            }))
            .map_err(plot_err)?;
        Ok(())
    })
}

/// Mean and standard deviation per class of `value(row)`, drawn as error bars.
fn per_class(
    rows: &[ExplainedRow],
    what: &str,
    y_label: &str,
    value: impl Fn(&ExplainedRow) -> f64,
) -> Result<String, String> {
    let classes = rows.iter().map(|r| r.label).max().map_or(0, |m| m as usize + 1);
    let mut stats = vec![stn_table::explain::Stat::default(); classes];
    for r in rows {
        stats[r.label as usize].add(value(r));
    }
    let (lo, hi) = range(stats.iter().filter(|s| s.count > 0).flat_map(|s| [s.mean - s.std, s.mean + s.std]));
    svg(420, 260, |root| {
        let mut chart = ChartBuilder::on(&root)
            .caption(what, ("sans-serif", 16))
            .margin(8)
            .x_label_area_size(36)
            .y_label_area_size(52)
            .build_cartesian_2d(-0.5f64..classes as f64 - 0.5, lo..hi)
            .map_err(plot_err)?;
        chart
            .configure_mesh()
            .x_desc("class")
            .y_desc(y_label)
            .x_labels(classes.max(1))
            .x_label_formatter(&|x| format!("{:.0}", x))
            .light_line_style(WHITE)
            .draw()
            .map_err(plot_err)?;
        chart
            .draw_series(stats.iter().enumerate().filter(|(_, s)| s.count > 0).map(|(c, s)| {
                ErrorBar::new_vertical(c as f64, s.mean - s.std, s.mean, s.mean + s.std, BLUE.filled(), 8)
            }))
            .map_err(plot_err)?
            .label("mean ± std")
            .legend(|(x, y)| PathElement::new([(x, y), (x + 16, y)], BLUE));
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(plot_err)?;
        Ok(())
    })
}

/// The recovered rotation against the applied one, with the line they would share.
fn scatter_angles(rows: &[ExplainedRow]) -> Result<Option<(String, f64)>, String> {
    let pts: Vec<(f64, f64)> = rows
        .iter()
        .filter_map(|r| r.applied.map(|a| (a.angle_deg, r.explanation.angle_deg)))
        .filter(|(a, b)| a.is_finite() && b.is_finite())
        .collect();
    if pts.len() < 2 {
        return Ok(None);
    }
    let r = correlation(
        &pts.iter().map(|p| p.0).collect::<Vec<_>>(),
        &pts.iter().map(|p| p.1).collect::<Vec<_>>(),
    );
    // At most 5,000 points drawn (every k-th): the page stays small for large sets; the
    // correlation is of all of them.
    let step = pts.len().div_ceil(5000).max(1);
    let drawn: Vec<(f64, f64)> = pts.iter().step_by(step).copied().collect();
    let (lo, hi) = range(pts.iter().flat_map(|p| [p.0, p.1]));
    let chart = svg(420, 380, |root| {
        let mut chart = ChartBuilder::on(&root)
            .caption(format!("recovered vs applied rotation (r = {r:.3})"), ("sans-serif", 16))
            .margin(8)
            .x_label_area_size(36)
            .y_label_area_size(52)
            .build_cartesian_2d(lo..hi, lo..hi)
            .map_err(plot_err)?;
        chart
            .configure_mesh()
            .x_desc("applied rotation (degrees)")
            .y_desc("recovered rotation (degrees)")
            .light_line_style(WHITE)
            .draw()
            .map_err(plot_err)?;
        chart
            .draw_series(drawn.iter().map(|&(a, b)| Circle::new((a, b), 2, BLUE.mix(0.5).filled())))
            .map_err(plot_err)?
            .label("an image")
            .legend(|(x, y)| Circle::new((x + 8, y), 3, BLUE.filled()));
        chart
            .draw_series(LineSeries::new([(lo, lo), (hi, hi)], ORANGE.stroke_width(2)))
            .map_err(plot_err)?
            .label("recovered = applied")
            .legend(|(x, y)| PathElement::new([(x, y), (x + 16, y)], ORANGE.stroke_width(2)));
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(plot_err)?;
        Ok(())
    })?;
    Ok(Some((chart, r)))
}

/// Training loss and test error by epoch, with a legend.
fn curves(metrics: &[EpochMetrics]) -> Result<String, String> {
    let epochs = metrics.iter().map(|m| m.epoch).max().unwrap_or(1).max(1) as f64;
    let (_, loss_hi) = range(metrics.iter().map(|m| m.train_loss));
    let (_, err_hi) = range(metrics.iter().map(|m| 100.0 * m.test_error));
    svg(860, 300, |root| {
        let (left, right) = root.split_horizontally(430);
        let mut a = ChartBuilder::on(&left)
            .caption("training loss", ("sans-serif", 16))
            .margin(8)
            .x_label_area_size(36)
            .y_label_area_size(52)
            .build_cartesian_2d(0.5..epochs + 0.5, 0.0..loss_hi)
            .map_err(plot_err)?;
        a.configure_mesh()
            .x_desc("epoch")
            .y_desc("cross-entropy")
            .light_line_style(WHITE)
            .draw()
            .map_err(plot_err)?;
        a.draw_series(
            LineSeries::new(metrics.iter().map(|m| (m.epoch as f64, m.train_loss)), BLUE.stroke_width(2))
                .point_size(3),
        )
        .map_err(plot_err)?
        .label("train loss")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 16, y)], BLUE.stroke_width(2)));
        a.configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(plot_err)?;
        let mut b = ChartBuilder::on(&right)
            .caption("error", ("sans-serif", 16))
            .margin(8)
            .x_label_area_size(36)
            .y_label_area_size(52)
            .build_cartesian_2d(
                0.5..epochs + 0.5,
                0.0..err_hi.max(100.0 * metrics.iter().map(|m| 1.0 - m.train_accuracy).fold(0.0, f64::max)),
            )
            .map_err(plot_err)?;
        b.configure_mesh()
            .x_desc("epoch")
            .y_desc("error (%)")
            .light_line_style(WHITE)
            .draw()
            .map_err(plot_err)?;
        b.draw_series(
            LineSeries::new(
                metrics.iter().map(|m| (m.epoch as f64, 100.0 * m.test_error)),
                ORANGE.stroke_width(2),
            )
            .point_size(3),
        )
        .map_err(plot_err)?
        .label("test error")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 16, y)], ORANGE.stroke_width(2)));
        b.draw_series(
            LineSeries::new(
                metrics.iter().map(|m| (m.epoch as f64, 100.0 * (1.0 - m.train_accuracy))),
                GREEN.stroke_width(2),
            )
            .point_size(3),
        )
        .map_err(plot_err)?
        .label("training error")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 16, y)], GREEN.stroke_width(2)));
        b.configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(plot_err)?;
        Ok(())
    })
}

/// The mean warp of each class: the outline of the region its mean theta samples, on the
/// input's frame (dashed: the input's border).
fn mean_warps(rows: &[ExplainedRow], transform: stn::Transform) -> Result<String, String> {
    let classes = rows.iter().map(|r| r.label).max().map_or(0, |m| m as usize + 1);
    let p = rows.first().map_or(0, |r| r.theta.len());
    let mut sums = vec![(vec![0.0; p], 0usize); classes];
    for r in rows {
        let (s, n) = &mut sums[r.label as usize];
        s.iter_mut().zip(&r.theta).for_each(|(a, b)| *a += b);
        *n += 1;
    }
    let cols = classes.clamp(1, 5);
    let lines = classes.div_ceil(cols).max(1);
    svg(150 * cols as u32, 160 * lines as u32, |root| {
        let cells = root.split_evenly((lines, cols));
        for (c, cell) in cells.iter().enumerate().take(classes) {
            let (s, n) = &sums[c];
            if *n == 0 {
                continue;
            }
            let mean: Vec<f64> = s.iter().map(|v| v / *n as f64).collect();
            let Ok(map) = PointMap::new(transform, &mean) else { continue };
            let mut chart = ChartBuilder::on(cell)
                .caption(format!("class {c} ({n})"), ("sans-serif", 13))
                .margin(6)
                .build_cartesian_2d(-1.6f64..1.6, 1.6f64..-1.6)
                .map_err(plot_err)?;
            let frame = [(-1.0, -1.0), (1.0, -1.0), (1.0, 1.0), (-1.0, 1.0), (-1.0, -1.0)];
            chart.draw_series(DashedLineSeries::new(frame, 4, 3, BLACK.mix(0.6).into())).map_err(plot_err)?;
            let mut outline: Vec<(f64, f64)> = map.outline().iter().map(|q| (q[0], q[1])).collect();
            outline.push(outline[0]);
            chart.draw_series(LineSeries::new(outline, RED.stroke_width(2))).map_err(plot_err)?;
        }
        Ok(())
    })
}

fn png_uri(img: &Image) -> Result<String, String> {
    let png = img.to_png().map_err(|e| e.to_string())?;
    Ok(format!("data:image/png;base64,{}", base64::engine::general_purpose::STANDARD.encode(png)))
}

/// One extreme row: the input with the outline of the region sampled, and the output.
fn thumbnail(input: &ReportInput<'_>, row: &ExplainedRow, note: &str) -> Result<String, String> {
    let d = input.data;
    let img = Image { data: d.image(row.index).to_vec(), channels: 1, height: d.height, width: d.width };
    let out = input.rectifier.rectify(&[&img]).into_iter().next().ok_or("no output")??;
    let map = PointMap::new(input.rectifier.transform(), &row.theta).map_err(|e| e.to_string())?;
    let (w, h) = (d.width as f64, d.height as f64);
    let points: String = map
        .outline()
        .iter()
        .step_by(4)
        .map(|q| format!("{:.2},{:.2}", (q[0] + 1.0) * w / 2.0, (q[1] + 1.0) * h / 2.0))
        .collect::<Vec<_>>()
        .join(" ");
    let e = &row.explanation;
    Ok(format!(
        "<figure class=\"thumb\"><svg width=\"112\" height=\"112\" viewBox=\"{vx} {vy} {vw} {vh}\" role=\"img\" aria-label=\"input {i}\">\
         <image href=\"{src}\" x=\"0\" y=\"0\" width=\"{w}\" height=\"{h}\" style=\"image-rendering:pixelated\"/>\
         <rect x=\"0\" y=\"0\" width=\"{w}\" height=\"{h}\" fill=\"none\" stroke=\"#888\" stroke-width=\"0.3\"/>\
         <polygon points=\"{points}\" fill=\"none\" stroke=\"#d62728\" stroke-width=\"0.6\"/></svg>\
         <img src=\"{dst}\" width=\"84\" height=\"84\" alt=\"output {i}\" style=\"image-rendering:pixelated\">\
         <figcaption>#{i}, class {label}: {note}<br>angle {angle:.1}°, zoom {zoom:.2}, shear {shear:.2}</figcaption></figure>",
        vx = -0.25 * w,
        vy = -0.25 * h,
        vw = 1.5 * w,
        vh = 1.5 * h,
        i = row.index,
        src = png_uri(&img)?,
        dst = png_uri(&out.image)?,
        label = row.label,
        angle = e.angle_deg,
        zoom = e.zoom,
        shear = e.shear,
    ))
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

fn fmt(v: f64) -> String {
    if v.is_finite() {
        format!("{v:.3}")
    } else {
        "–".into()
    }
}

/// Writes `out_dir/report.html` (the page) and `out_dir/explain.json` (the summary, per-class
/// means and, for known distortions, the recovered-vs-applied numbers), each written whole or
/// not at all. Returns the page's path.
pub fn write_report(input: &ReportInput<'_>, out_dir: &Path) -> RunResult<PathBuf> {
    std::fs::create_dir_all(out_dir).map_err(|e| format!("cannot create {}: {e}", out_dir.display()))?;
    let rows = input.rows;
    if rows.is_empty() {
        return Err("no image could be explained".into());
    }
    let transform = input.rectifier.transform();
    let mut summary = Summary::new();
    for r in rows {
        summary.add("input", r.index as u64, Some(&r.explanation));
    }
    let classes = rows.iter().map(|r| r.label).max().map_or(0, |m| m as usize + 1);
    let mut class_rows = String::new();
    let mut class_json = Vec::new();
    for c in 0..classes {
        let of: Vec<&ExplainedRow> = rows.iter().filter(|r| r.label as usize == c).collect();
        if of.is_empty() {
            continue;
        }
        let mean = |f: &dyn Fn(&ExplainedRow) -> f64| {
            let v: Vec<f64> = of.iter().map(|r| f(r)).filter(|v| v.is_finite()).collect();
            if v.is_empty() {
                f64::NAN
            } else {
                v.iter().sum::<f64>() / v.len() as f64
            }
        };
        let m = [
            mean(&|r| r.explanation.angle_deg),
            mean(&|r| r.explanation.zoom),
            mean(&|r| r.explanation.scale_x),
            mean(&|r| r.explanation.scale_y),
            mean(&|r| r.explanation.shear),
            mean(&|r| r.explanation.tx),
            mean(&|r| r.explanation.ty),
            mean(&|r| r.outside),
            mean(&|r| r.applied.map_or(f64::NAN, |a| a.error)),
        ];
        let _ = write!(class_rows, "<tr><td>{c}</td><td>{}</td>", of.len());
        for v in &m {
            let _ = write!(class_rows, "<td>{}</td>", fmt(*v));
        }
        class_rows.push_str("</tr>");
        class_json.push(serde_json::json!({
            "class": c, "images": of.len(), "angle_deg": m[0], "zoom": m[1], "scale_x": m[2], "scale_y": m[3],
            "shear": m[4], "tx": m[5], "ty": m[6], "outside_share": m[7], "error_vs_true_inverse": m[8],
        }));
    }
    let values = |f: &dyn Fn(&ExplainedRow) -> f64| rows.iter().map(f).collect::<Vec<f64>>();
    let mut figures = String::new();
    // Each component: its distribution, and by class its mean and spread.
    type Component = (&'static str, &'static str, fn(&ExplainedRow) -> f64);
    let components: [Component; 8] = [
        ("rotation", "degrees (clockwise as drawn)", |r| r.explanation.angle_deg),
        ("zoom (sampled area / output area)", "zoom", |r| r.explanation.zoom),
        ("scale x", "size along the first axis / output's", |r| r.explanation.scale_x),
        ("scale y", "size along the second axis / output's", |r| r.explanation.scale_y),
        ("shear", "x shift per unit of y", |r| r.explanation.shear),
        ("translation x", "normalized units (2 = the width)", |r| r.explanation.tx),
        ("translation y", "normalized units (2 = the height)", |r| r.explanation.ty),
        ("share of samples outside the input", "share of the output", |r| r.outside),
    ];
    let mut per_class_figs = String::new();
    for (what, unit, f) in components {
        figures.push_str(&histogram(&values(&f), what, unit)?);
        if classes > 1 {
            per_class_figs.push_str(&per_class(rows, &format!("{what} by class"), unit, f)?);
        }
    }
    let mut applied_section = String::new();
    let mut applied_json = serde_json::Value::Null;
    if rows.iter().any(|r| r.applied.is_some()) {
        let errors: Vec<f64> = rows.iter().filter_map(|r| r.applied.map(|a| a.error)).collect();
        let mean_error = errors.iter().sum::<f64>() / errors.len() as f64;
        let scatter = scatter_angles(rows)?;
        let r = scatter.as_ref().map_or(f64::NAN, |s| s.1);
        let zoom_r = correlation(
            &rows.iter().map(|r| r.applied.map_or(f64::NAN, |a| a.zoom)).collect::<Vec<_>>(),
            &values(&|r| r.explanation.zoom),
        );
        applied_json = serde_json::json!({
            "angle_correlation": r, "zoom_correlation": zoom_r, "mean_error": mean_error,
            "images": errors.len(),
        });
        let _ = write!(
            applied_section,
            "<h2>Recovered warp against the true inverse</h2><p>The distortion of each image is known, so \
             the warp the transformer should find is too: the inverse of the distortion's map. Its \
             rotation is the rotation applied to the content. Correlation of the recovered rotation \
             with the applied one: <b>{}</b>; of the recovered zoom with the true inverse's: <b>{}</b>. \
             Mean distance between where the transformer samples and where the true inverse would (over a \
             9 x 9 lattice of the output, in normalized units where 2 is the image's width): <b>{}</b>. A \
             transformer may settle on a canonical frame of its own (a little zoomed, say): the \
             correlation then stays high while the distance does not reach 0.</p><div class=\"figs\">{}{}</div>",
            fmt(r),
            fmt(zoom_r),
            fmt(mean_error),
            scatter.map(|s| s.0).unwrap_or_default(),
            histogram(&errors, "distance to the true inverse", "normalized units")?,
        );
    }
    // The most extreme warps: rotated most, zoomed in most, zoomed out most, most outside.
    let mut order: Vec<usize> = (0..rows.len()).collect();
    let mut extremes = String::new();
    for (title, key) in [
        (
            "rotated most",
            &(|r: &ExplainedRow| r.explanation.angle_deg.abs()) as &dyn Fn(&ExplainedRow) -> f64,
        ),
        ("zoomed in most", &|r: &ExplainedRow| -r.explanation.zoom),
        ("zoomed out most", &|r: &ExplainedRow| r.explanation.zoom),
        ("most samples outside the input", &|r: &ExplainedRow| r.outside),
    ] {
        order.sort_by(|&a, &b| key(&rows[b]).total_cmp(&key(&rows[a])));
        let _ = write!(extremes, "<h3>{title}</h3><div class=\"thumbs\">");
        for &i in order.iter().take(EXTREMES) {
            extremes.push_str(&thumbnail(input, &rows[i], title)?);
        }
        extremes.push_str("</div>");
    }
    let training = if input.metrics.is_empty() {
        String::new()
    } else {
        format!("<h2>Training</h2><div class=\"figs\">{}</div>", curves(input.metrics)?)
    };
    let mut results = String::new();
    for (k, v) in &input.results {
        let _ = write!(results, "<tr><th>{}</th><td>{}</td></tr>", escape(k), escape(v));
    }
    let mut stats = String::new();
    for (name, s) in [
        ("rotation (degrees)", &summary.angle_deg),
        ("zoom", &summary.zoom),
        ("scale x", &summary.scale_x),
        ("scale y", &summary.scale_y),
        ("shear", &summary.shear),
        ("translation x", &summary.tx),
        ("translation y", &summary.ty),
    ] {
        let _ = write!(
            stats,
            "<tr><th>{name}</th><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            fmt(s.mean),
            fmt(s.std),
            fmt(s.min),
            fmt(s.max)
        );
    }
    let outside = rows.iter().map(|r| r.outside).sum::<f64>() / rows.len() as f64;
    let html = format!(
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title}</title>\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><style>\
         body{{font-family:sans-serif;max-width:1100px;margin:1.5em auto;padding:0 1em;color:#222}}\
         table{{border-collapse:collapse;margin:0.5em 0}}td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}}\
         th{{background:#f3f3f3}}.figs,.thumbs{{display:flex;flex-wrap:wrap;gap:8px}}\
         .thumb{{margin:0;width:210px;font-size:12px}}.thumb svg{{background:#000;vertical-align:top}}\
         .thumb img{{vertical-align:top;margin-left:4px}}p.conv{{font-size:13px;color:#555}}</style></head><body>\
         <h1>{title}</h1><p>{source}. {n} images explained, family <b>{family}</b>; {reflections} mirrored, \
         {singular} singular; on average {outside:.1}% of the output samples fall outside the input.</p>\
         <p class=\"conv\">Conventions: theta maps each output pixel to where it is sampled in the input \
         (coordinates from -1 to 1, y down). Its affine part is read as a rotation, then scales along \
         the rotated axes, then a shear (A = R(angle) · [[scale_x, scale_x·shear], [0, scale_y]]): the \
         angle is the rotation the transformer undid (clockwise as drawn); zoom is the area of the \
         region sampled over the output's (below 1: zoomed in). In the thumbnails the red outline is \
         that region on the input, the grey square the input's border.</p>\
         {training}<h2>Results</h2><table>{results}</table>\
         <h2>What the transformer does</h2><table><tr><th></th><th>mean</th><th>std</th><th>min</th><th>max</th></tr>{stats}</table>\
         <div class=\"figs\">{figures}</div>\
         <h2>By class</h2><table><tr><th>class</th><th>images</th><th>rotation</th><th>zoom</th><th>scale x</th>\
         <th>scale y</th><th>shear</th><th>tx</th><th>ty</th><th>outside</th><th>distance to true inverse</th></tr>{class_rows}</table>\
         <div class=\"figs\">{per_class_figs}</div><h3>Mean warp of each class</h3><p>The region the mean theta \
         of each class samples (red), on the input's frame (dashed).</p>{mean_warps}\
         {applied_section}<h2>The most extreme warps</h2><p>Each: the input with the region sampled (red), then \
         the output.</p>{extremes}</body></html>",
        title = escape(&input.title),
        source = escape(&input.source),
        n = rows.len(),
        family = summary.family,
        reflections = summary.reflections,
        singular = summary.singular,
        outside = 100.0 * outside,
        mean_warps = mean_warps(rows, transform)?,
    );
    let json = serde_json::json!({
        "source": input.source, "summary": summary, "classes": class_json,
        "outside_share": outside, "recovered_vs_applied": applied_json,
    });
    let page = out_dir.join("report.html");
    stn::persist::write_atomic(&page, html.as_bytes()).map_err(|e| e.to_string())?;
    stn::persist::write_atomic(&out_dir.join("explain.json"), format!("{json}\n").as_bytes())
        .map_err(|e| e.to_string())?;
    Ok(page)
}
