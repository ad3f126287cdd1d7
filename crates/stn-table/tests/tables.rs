//! Image tables written by the tools users have (pyarrow, pandas, polars, DuckDB, Hugging Face
//! `datasets`, Daft, Ray Data, a Spark-shaped table, img2dataset; see tests/fixtures/README.md):
//! detection, decoding against the source images, rectification with every input column
//! passed through, bad rows, bad files, folders and re-runs.

use std::path::Path;

use crate::common::*;
use arrow_array::cast::AsArray;
use arrow_array::Array;
use stn_data::Image;
use stn_table::codec::{decode_column, decode_row, DecodeOptions};
use stn_table::convention::{detect, Convention, FixedMark};
use stn_table::rectify::{rectify_table, Event, OnError, RectifyOptions};
use stn_table::TableError;

fn opts_for(table: &Path) -> DecodeOptions {
    DecodeOptions { base_dir: table.parent().map(Path::to_path_buf), ..DecodeOptions::default() }
}

fn expected_convention(table: &str) -> Convention {
    let fixed = |mark| Convention::FixedShape { height: 32, width: 32, channels: 3, mark };
    match table {
        "hf_bytes.parquet" | "hf_paths.parquet" | "bad_rows.parquet" => Convention::HfImage,
        "daft_image.parquet" | "daft_image_rgb.parquet" => Convention::DaftImage,
        "daft_fixed.parquet" => fixed(FixedMark::Daft),
        "ray_fixed.parquet" => fixed(FixedMark::Ray),
        "ray_native.parquet" => fixed(FixedMark::ArrowTensor),
        "ray_variable.parquet" => Convention::Tensor,
        "spark_image.parquet" => Convention::Spark,
        _ => Convention::Encoded,
    }
}

/// The tables whose rows are all good images.
fn good_tables() -> Vec<String> {
    let m = manifest();
    let mut names: Vec<String> = m
        .as_object()
        .unwrap()
        .iter()
        .filter(|(k, v)| !k.starts_with('_') && v["rows"].as_array().unwrap().iter().all(|r| r["ok"] == true))
        .map(|(k, _)| k.clone())
        .collect();
    names.sort();
    names
}

/// The source image of a manifest row, as the tool stored its pixels.
fn source(row: &serde_json::Value) -> Image {
    let img = Image::load_native(&fixtures().join(row["source"].as_str().unwrap())).unwrap();
    match row["mode"].as_str() {
        Some("RGB") if img.channels != 3 => img.to_rgb(),
        _ => img,
    }
}

#[test]
fn every_convention_is_detected_and_decodes_to_its_source_images() {
    let m = manifest();
    let tables = good_tables();
    assert!(tables.len() >= 15, "{tables:?}");
    for name in &tables {
        let path = fixtures().join(name);
        let (schema, batches, _) = read_all(&path);
        let col = detect(&schema, None).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(col.field.name(), m[name]["column"].as_str().unwrap(), "{name}");
        assert_eq!(col.convention, expected_convention(name), "{name}");
        let array = column(&batches, col.field.name());
        let decoded = decode_column(&col.convention, array.as_ref(), &opts_for(&path));
        let rows = m[name]["rows"].as_array().unwrap();
        assert_eq!(decoded.len(), rows.len(), "{name}");
        for (i, (d, row)) in decoded.iter().zip(rows).enumerate() {
            let d = d.as_ref().unwrap_or_else(|e| panic!("{name} row {i}: {e}"));
            if let Some(size) = row["resized"].as_array() {
                // The tool resized: the shape is what it says.
                let (h, w) = (size[0].as_u64().unwrap() as usize, size[1].as_u64().unwrap() as usize);
                assert_eq!((d.image.height, d.image.width, d.image.channels), (h, w, 3), "{name} row {i}");
                continue;
            }
            let want = source(row);
            assert_eq!(
                (d.image.channels, d.image.height, d.image.width),
                (want.channels, want.height, want.width),
                "{name} row {i}"
            );
            let max = d.image.data.iter().zip(&want.data).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            // Encoded rows hold the source file's bytes, decoded rows its pixels: exact.
            assert!(max == 0.0, "{name} row {i}: pixels differ by {max}");
        }
    }
}

#[test]
fn every_convention_is_rectified_with_its_columns_passed_through() {
    let r = rectifier();
    let dir = tmp("conventions");
    for name in good_tables() {
        let input = fixtures().join(&name);
        let output = dir.join(&name);
        let reports = rectify_table(r, &input, &output, &RectifyOptions::default(), &mut |_| {})
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!((reports.len(), reports[0].failed), (1, 0), "{name}");
        let (in_schema, in_batches, in_groups) = read_all(&input);
        let (out_schema, out_batches, out_groups) = read_all(&output);
        assert_eq!(out_groups, in_groups, "{name}: one output row group per input row group");
        // Every input column, in order, with its metadata, then the three added ones.
        let n_in = in_schema.fields().len();
        assert_eq!(out_schema.fields().len(), n_in + 3, "{name}");
        for (a, b) in in_schema.fields().iter().zip(out_schema.fields()) {
            assert_eq!(a, b, "{name}: column {} changed", a.name());
            assert_eq!(
                column(&in_batches, a.name()).to_data(),
                column(&out_batches, b.name()).to_data(),
                "{name}: {}",
                a.name()
            );
        }
        let added: Vec<&str> = out_schema.fields()[n_in..].iter().map(|f| f.name().as_str()).collect();
        assert_eq!(added, ["stn_image", "stn_theta", "stn_error"]);
        for (k, v) in in_schema.metadata() {
            if k != "huggingface" {
                assert_eq!(out_schema.metadata().get(k), Some(v), "{name}: metadata {k}");
            }
        }
        // stn_image is in the input's convention, one image per row (its pixels are checked
        // against Pillow and PyTorch in reference.rs), and every row succeeded.
        let col = detect(&in_schema, None).unwrap();
        let out_col = detect(&out_schema, Some("stn_image")).unwrap();
        assert_eq!(out_col.convention.is_encoded(), col.convention.is_encoded(), "{name}: same convention");
        let got = decode_column(
            &out_col.convention,
            column(&out_batches, "stn_image").as_ref(),
            &opts_for(&output),
        );
        let errors = column(&out_batches, "stn_error");
        // Each row's theta is the one its own image gets (rows in place, none swapped).
        let inputs =
            decode_column(&col.convention, column(&in_batches, col.field.name()).as_ref(), &opts_for(&input));
        let images: Vec<Image> = inputs.into_iter().map(|d| d.unwrap().image).collect();
        let want = r.thetas(&images.iter().collect::<Vec<_>>()).unwrap();
        let thetas = column(&out_batches, "stn_theta");
        let thetas = thetas.as_fixed_size_list();
        assert_eq!(got.len(), want.len(), "{name}");
        for (i, g) in got.iter().enumerate() {
            assert!(g.is_ok() && errors.is_null(i), "{name} row {i}");
            let th = thetas.value(i);
            assert_eq!(
                th.as_primitive::<arrow_array::types::Float32Type>().values().as_ref(),
                want[i].as_slice(),
                "{name} row {i}"
            );
        }
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn outputs_keep_the_huggingface_marking_and_drop_input_metadata_from_images() {
    let dir = tmp("hf");
    let out = dir.join("out.parquet");
    rectify_table(
        rectifier(),
        &fixtures().join("hf_bytes.parquet"),
        &out,
        &RectifyOptions::default(),
        &mut |_| {},
    )
    .unwrap();
    let (schema, _, _) = read_all(&out);
    let hf: serde_json::Value = serde_json::from_str(schema.metadata().get("huggingface").unwrap()).unwrap();
    assert_eq!(hf["info"]["features"]["image"]["_type"], "Image");
    assert_eq!(
        hf["info"]["features"]["stn_image"]["_type"], "Image",
        "datasets decodes stn_image as an Image"
    );
    // EXIF orientation is applied; no metadata (EXIF, text chunks) reaches an output image.
    let exif = dir.join("exif.parquet");
    rectify_table(
        rectifier(),
        &fixtures().join("exif.parquet"),
        &exif,
        &RectifyOptions::default(),
        &mut |_| {},
    )
    .unwrap();
    let (_, batches, _) = read_all(&exif);
    let (in_schema, in_batches, _) = read_all(&fixtures().join("exif.parquet"));
    let col = detect(&in_schema, None).unwrap();
    let rotated =
        decode_row(&col.convention, column(&in_batches, "image").as_ref(), 0, &DecodeOptions::default())
            .unwrap()
            .image;
    assert_eq!((rotated.height, rotated.width), (40, 20), "orientation 6 turns 40 x 20 into 20 x 40");
    let plane = 40 * 20;
    let top: f32 = rotated.data[..plane / 2].iter().sum::<f32>() / (plane / 2) as f32;
    let bottom: f32 = rotated.data[plane / 2..plane].iter().sum::<f32>() / (plane / 2) as f32;
    assert!(top > 0.9 && bottom < 0.1, "the white half is on top after the transpose: {top} {bottom}");
    let images = column(&batches, "stn_image");
    for i in 0..images.len() {
        let png = images.as_binary::<i32>().value(i);
        assert!(png.starts_with(b"\x89PNG"));
        assert!(
            !png.windows(6).any(|w| w == b"secret") && !png.windows(4).any(|w| w == b"eXIf" || w == b"tEXt")
        );
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn bad_rows_get_their_reason_and_every_good_row_is_kept() {
    let dir = tmp("bad-rows");
    let input = fixtures().join("bad_rows.parquet");
    let out = dir.join("out.parquet");
    let mut failed = Vec::new();
    let reports = rectify_table(rectifier(), &input, &out, &RectifyOptions::default(), &mut |e| {
        if let Event::RowFailed { row, reason, .. } = e {
            failed.push((row, reason.to_string()));
        }
    })
    .unwrap();
    assert_eq!((reports[0].rows, reports[0].failed), (8, 6));
    let (_, batches, _) = read_all(&out);
    let kinds = column(&batches, "kind");
    let errors = column(&batches, "stn_error");
    let images = column(&batches, "stn_image");
    let expect = [
        ("ok", ""),
        ("null", "null image"),
        ("undecodable", "not a PNG or JPEG"),
        ("truncated", "cannot decode"),
        ("huge", "claims 100000 x 100000 pixels"),
        ("missing_path", "images/does_not_exist.png"),
        ("empty", "empty"),
        ("ok", ""),
    ];
    for (i, (kind, why)) in expect.iter().enumerate() {
        assert_eq!(kinds.as_string::<i32>().value(i), *kind);
        if why.is_empty() {
            assert!(errors.is_null(i) && images.is_valid(i), "row {i}");
        } else {
            let e = errors.as_string::<i32>().value(i);
            assert!(e.contains(why), "row {i} ({kind}): {e}");
            assert!(images.is_null(i), "row {i}");
            assert!(failed.iter().any(|(r, f)| *r == i && f == e), "row {i} reported as it happened");
        }
    }
    // --on-error fail: the first bad row aborts, no output and no partial file is left.
    let out2 = dir.join("strict.parquet");
    let opts = RectifyOptions { on_error: OnError::Fail, ..RectifyOptions::default() };
    let e = rectify_table(rectifier(), &input, &out2, &opts, &mut |_| {}).unwrap_err();
    assert!(matches!(&e, TableError::Row { row: 1, .. }), "{e}");
    assert!(e.to_string().contains("bad_rows.parquet row 1: null image"), "{e}");
    let left: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(left, vec![std::ffi::OsString::from("out.parquet")], "no partial file");
    // A smaller pixel limit is the row's error too.
    let small = RectifyOptions { max_pixels: 100, ..RectifyOptions::default() };
    let out3 = dir.join("small.parquet");
    let r =
        rectify_table(rectifier(), &fixtures().join("pyarrow_binary.parquet"), &out3, &small, &mut |_| {})
            .unwrap();
    assert_eq!(r[0].failed, 8);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn bad_files_and_columns_are_clear_errors_that_leave_nothing() {
    let dir = tmp("bad-files");
    let r = rectifier();
    let go = |input: &Path, column: Option<&str>| {
        let opts = RectifyOptions { column: column.map(str::to_string), ..RectifyOptions::default() };
        rectify_table(r, input, &dir.join("out.parquet"), &opts, &mut |_| {}).unwrap_err().to_string()
    };
    std::fs::write(dir.join("notes.parquet"), b"this is not parquet").unwrap();
    let e = go(&dir.join("notes.parquet"), None);
    assert!(e.contains("notes.parquet") && e.contains("not a readable Parquet file"), "{e}");
    let bytes = std::fs::read(fixtures().join("pyarrow_binary.parquet")).unwrap();
    std::fs::write(dir.join("cut.parquet"), &bytes[..bytes.len() / 2]).unwrap();
    let e = go(&dir.join("cut.parquet"), None);
    assert!(e.contains("cut.parquet") && e.contains("not a readable Parquet file"), "{e}");
    let e = go(&dir.join("missing.parquet"), None);
    assert!(e.contains("missing.parquet") && e.contains("cannot open"), "{e}");
    let wrong = fixtures().join("wrong_types.parquet");
    let e = go(&wrong, None);
    assert!(e.contains("no image column") && e.contains("image (Int64)"), "{e}");
    let e = go(&wrong, Some("image"));
    assert!(e.contains("column `image` has type Int64, which holds no images"), "{e}");
    let e = go(&fixtures().join("pyarrow_binary.parquet"), Some("picture"));
    assert!(e.contains("no column `picture`") && e.contains("label (Int64)"), "{e}");
    let e = go(&fixtures().join("pyarrow_binary.parquet"), Some("label"));
    assert!(e.contains("holds no images"), "{e}");
    assert!(!dir.join("out.parquet").exists());
    let left: Vec<_> =
        std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    assert!(left.iter().all(|n| !n.contains("stn-partial")), "{left:?}");
    // An output that exists is never overwritten.
    let existing = dir.join("exists.parquet");
    std::fs::write(&existing, b"keep me").unwrap();
    let e = rectify_table(
        r,
        &fixtures().join("pyarrow_binary.parquet"),
        &existing,
        &RectifyOptions::default(),
        &mut |_| {},
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("never overwritten"), "{e}");
    assert_eq!(std::fs::read(&existing).unwrap(), b"keep me");
    // A rectified table cannot be rectified again into the same column names.
    let once = dir.join("once.parquet");
    rectify_table(
        r,
        &fixtures().join("pyarrow_binary.parquet"),
        &once,
        &RectifyOptions::default(),
        &mut |_| {},
    )
    .unwrap();
    let opts = RectifyOptions { column: Some("image".into()), ..RectifyOptions::default() };
    let e = rectify_table(r, &once, &dir.join("twice.parquet"), &opts, &mut |_| {}).unwrap_err().to_string();
    assert!(e.contains("already has a column `stn_image`"), "{e}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn folders_give_one_output_per_file_and_reruns_skip_complete_outputs() {
    let dir = tmp("folder");
    let input = dir.join("in");
    std::fs::create_dir_all(&input).unwrap();
    std::fs::copy(fixtures().join("pyarrow_binary.parquet"), input.join("part-0.parquet")).unwrap();
    std::fs::copy(fixtures().join("pandas_binary.parquet"), input.join("part-1.parquet")).unwrap();
    std::fs::write(input.join("_SUCCESS"), b"").unwrap();
    let out = dir.join("out");
    let mut rows_seen = 0;
    let reports = rectify_table(rectifier(), &input, &out, &RectifyOptions::default(), &mut |e| {
        if let Event::Rows { rows } = e {
            rows_seen = rows;
        }
    })
    .unwrap();
    assert_eq!(reports.iter().map(|r| (r.rows, r.skipped)).collect::<Vec<_>>(), vec![(8, false), (6, false)]);
    assert_eq!(rows_seen, 14);
    let first = std::fs::read(out.join("part-0.parquet")).unwrap();
    assert!(out.join("part-1.parquet").is_file());
    let again = rectify_table(rectifier(), &input, &out, &RectifyOptions::default(), &mut |_| {}).unwrap();
    assert!(again.iter().all(|r| r.skipped), "{again:?}");
    assert_eq!(std::fs::read(out.join("part-0.parquet")).unwrap(), first, "untouched");
    // An output that is not a complete rectification of its input stops the run untouched.
    std::fs::write(out.join("part-1.parquet"), b"half").unwrap();
    let e = rectify_table(rectifier(), &input, &out, &RectifyOptions::default(), &mut |_| {})
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("part-1.parquet")
            && e.contains("not a readable Parquet file")
            && e.contains("never overwritten"),
        "{e}"
    );
    assert_eq!(std::fs::read(out.join("part-1.parquet")).unwrap(), b"half");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn jpeg_output_and_small_batches_give_the_same_rows() {
    let dir = tmp("jpeg");
    let input = fixtures().join("hf_bytes.parquet");
    let a = dir.join("a.parquet");
    let b = dir.join("b.parquet");
    rectify_table(rectifier(), &input, &a, &RectifyOptions::default(), &mut |_| {}).unwrap();
    let opts = RectifyOptions { batch_size: 1, ..RectifyOptions::default() };
    rectify_table(rectifier(), &input, &b, &opts, &mut |_| {}).unwrap();
    let (_, ba, _) = read_all(&a);
    let (_, bb, _) = read_all(&b);
    assert_eq!(
        column(&ba, "stn_theta").to_data(),
        column(&bb, "stn_theta").to_data(),
        "batching does not change theta"
    );
    let j = dir.join("j.parquet");
    let opts =
        RectifyOptions { encoding: stn_data::image_io::Encoding::Jpeg(90), ..RectifyOptions::default() };
    rectify_table(rectifier(), &input, &j, &opts, &mut |_| {}).unwrap();
    let (_, bj, _) = read_all(&j);
    let images = column(&bj, "stn_image");
    let bytes = images.as_struct().column_by_name("bytes").unwrap().as_binary::<i32>().value(0).to_vec();
    assert!(bytes.starts_with(&[0xFF, 0xD8, 0xFF]), "JPEG");
    std::fs::remove_dir_all(dir).unwrap();
}
