//! The table writer and the augmenter against independent references: what Pillow and PyTorch
//! made of the same rows (`tools/reference/make_references.py`, committed under
//! `tests/fixtures/reference/`), not what stn's own core makes, so a bug in the shared core
//! (decoding, the warp, the sampler, quantizing, encoding) shows here.

use std::path::Path;

use crate::common::*;
use arrow_array::cast::AsArray;
use arrow_array::{Array, StringArray};
use burn::module::Param;
use burn::tensor::{Device, Tensor, TensorData};
use stn::augment::{Augment, Stage, Warp};
use stn_data::Image;
use stn_models::models::{ModelConfig, ModelKind};
use stn_models::rectify::Rectifier;
use stn_table::augment::{augment_table, AugmentTableOptions, AUGMENT_COLUMNS};
use stn_table::codec::{decode_column, DecodeOptions};
use stn_table::convention::detect;
use stn_table::rectify::{rectify_table, RectifyOptions};

fn reference_dir() -> std::path::PathBuf {
    fixtures().join("reference")
}

fn listing() -> serde_json::Value {
    let text = std::fs::read_to_string(reference_dir().join("reference.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// A reference image: 8-bit samples, interleaved (H, W, C), read by the `image` crate's PNG
/// decoder.
struct Reference {
    height: usize,
    width: usize,
    channels: usize,
    samples: Vec<u8>,
}

fn load_reference(name: &str) -> Reference {
    let img = image::ImageReader::open(reference_dir().join(name)).unwrap().decode().unwrap();
    let channels = img.color().channel_count() as usize;
    assert!(!img.color().has_color() || channels >= 3, "{name}");
    Reference {
        height: img.height() as usize,
        width: img.width() as usize,
        channels,
        samples: img.as_bytes().to_vec(),
    }
}

/// How far `got` is from the reference, in 8-bit levels: (largest difference, samples that
/// differ, samples). stn's outputs are 8-bit (rounded to nearest), so equal numerics give
/// equal levels except where a value lies within float rounding of a half level.
fn levels_off(got: &Image, want: &Reference, what: &str) -> (u8, usize, usize) {
    assert_eq!(
        (got.channels, got.height, got.width),
        (want.channels, want.height, want.width),
        "{what}: shape (channels, height, width)"
    );
    let plane = got.height * got.width;
    let (mut worst, mut differ) = (0u8, 0);
    for c in 0..got.channels {
        for p in 0..plane {
            let ours = (got.data[c * plane + p].clamp(0.0, 1.0) * 255.0).round() as u8;
            let theirs = want.samples[p * got.channels + c];
            let d = ours.abs_diff(theirs);
            worst = worst.max(d);
            differ += usize::from(d != 0);
        }
    }
    (worst, differ, got.data.len())
}

/// A tutorial model whose localization net outputs `theta` for every image: zero regression
/// weights (as built) and `theta` as the regression bias.
fn constant_rectifier(theta: &[f32]) -> Rectifier {
    let device = Device::flex();
    let mut model = ModelConfig::new(ModelKind::Tutorial, [28, 28]).init(&device).unwrap();
    let st = model.transformer.as_mut().unwrap();
    let bias = Tensor::<1>::from_data(TensorData::new(theta.to_vec(), [theta.len()]), &device);
    st.localization.head.bias = Some(Param::from_tensor(bias));
    Rectifier::new(&model).unwrap()
}

fn decode_opts(table: &Path) -> DecodeOptions {
    DecodeOptions { base_dir: table.parent().map(Path::to_path_buf), ..DecodeOptions::default() }
}

#[test]
fn every_convention_is_rectified_as_pillow_and_pytorch_do() {
    let refs = listing();
    let theta: Vec<f32> =
        refs["theta"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();
    let r = constant_rectifier(&theta);
    let tables = refs["rectify"].as_object().unwrap();
    assert!(tables.len() >= 15, "{:?}", tables.keys());
    let dir = tmp("reference-rectify");
    let (mut samples, mut differing) = (0, 0);
    for (name, rows) in tables {
        let input = fixtures().join(name);
        let output = dir.join(name);
        let reports = rectify_table(&r, &input, &output, &RectifyOptions::default(), &mut |_| {})
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(reports[0].failed, 0, "{name}");
        let (schema, batches, _) = read_all(&output);
        let col = detect(&schema, Some("stn_image")).unwrap();
        let got =
            decode_column(&col.convention, column(&batches, "stn_image").as_ref(), &decode_opts(&output));
        let rows = rows.as_array().unwrap();
        assert_eq!(got.len(), rows.len(), "{name}");
        let thetas = column(&batches, "stn_theta");
        let thetas = thetas.as_fixed_size_list();
        for (i, (g, reference)) in got.iter().zip(rows).enumerate() {
            let what = format!("{name} row {i} ({})", reference.as_str().unwrap());
            let g = g.as_ref().unwrap_or_else(|e| panic!("{what}: {e}"));
            let want = load_reference(reference.as_str().unwrap());
            let (worst, differ, n) = levels_off(&g.image, &want, &what);
            assert!(worst <= 1, "{what}: off by {worst} levels");
            assert!(differ * 50 <= n, "{what}: {differ} of {n} samples differ");
            (samples, differing) = (samples + n, differing + differ);
            let th = thetas.value(i);
            assert_eq!(
                th.as_primitive::<arrow_array::types::Float32Type>().values().as_ref(),
                theta,
                "{what}"
            );
        }
    }
    // Over all rows, a level off is the exception.
    eprintln!("rectified rows against Pillow + PyTorch: {differing} of {samples} samples a level off");
    assert!(differing * 200 <= samples, "{differing} of {samples} samples differ");
    std::fs::remove_dir_all(dir).unwrap();
}

/// The largest difference between two warps' numbers (None when their stages differ in kind).
fn warp_distance(a: &Warp, b: &Warp) -> Option<f64> {
    if a.stages.len() != b.stages.len() {
        return None;
    }
    let mut worst = 0.0f64;
    for (x, y) in a.stages.iter().zip(&b.stages) {
        let (Stage::Matrix(x), Stage::Matrix(y)) = (x, y) else { return None };
        for (u, v) in x.iter().flatten().zip(y.iter().flatten()) {
            worst = worst.max((u - v).abs());
        }
    }
    Some(worst)
}

#[test]
fn augmented_copies_are_what_pytorch_makes_of_the_committed_warps() {
    let refs = listing();
    let spec = &refs["augment"];
    let aug = Augment::parse(spec["spec"].as_str().unwrap()).unwrap();
    let copies = spec["copies"].as_u64().unwrap() as usize;
    let input = fixtures().join(spec["table"].as_str().unwrap());
    let dir = tmp("reference-augment");
    let out = dir.join("augmented.parquet");
    let opts = AugmentTableOptions { copies, seed: spec["seed"].as_u64().unwrap(), ..Default::default() };
    augment_table(&aug, &input, &out, &opts, &mut |_| {}).unwrap();
    let (schema, batches, _) = read_all(&out);
    let col = detect(&schema, None).unwrap();
    let got =
        decode_column(&col.convention, column(&batches, col.field.name()).as_ref(), &decode_opts(&input));
    let warps = column(&batches, AUGMENT_COLUMNS[1]);
    let warps = warps.as_any().downcast_ref::<StringArray>().unwrap();
    let rows = spec["rows"].as_array().unwrap();
    assert_eq!(got.len(), rows.len());
    let (mut affine, mut projective) = (0, 0);
    let (mut samples, mut differing) = (0, 0);
    for (r, row) in rows.iter().enumerate() {
        // stn still draws the warp the reference was made with.
        let want: Warp = serde_json::from_value(row["warp"].clone()).unwrap();
        let warp: Warp = serde_json::from_str(warps.value(r)).unwrap();
        let d = warp_distance(&warp, &want).unwrap_or_else(|| panic!("row {r}: {warp:?} is not {want:?}"));
        assert!(d <= 1e-12, "row {r}: the warp moved by {d}");
        match warp.matrix() {
            Some(m) if m[2] == [0.0, 0.0, 1.0] => affine += 1,
            Some(_) => projective += 1,
            None => panic!("row {r}: a matrix warp"),
        }
        let what = format!("augmented row {r}");
        let image = &got[r].as_ref().unwrap_or_else(|e| panic!("{what}: {e}")).image;
        let (worst, differ, n) = levels_off(image, &load_reference(row["image"].as_str().unwrap()), &what);
        assert!(worst <= 1, "{what}: off by {worst} levels");
        assert!(differ * 50 <= n, "{what}: {differ} of {n} samples differ");
        (samples, differing) = (samples + n, differing + differ);
    }
    eprintln!("augmented rows against PyTorch: {differing} of {samples} samples a level off");
    assert!(
        affine > 0 && projective > 0,
        "both samplers are covered: {affine} affine, {projective} projective"
    );
    std::fs::remove_dir_all(dir).unwrap();
}
