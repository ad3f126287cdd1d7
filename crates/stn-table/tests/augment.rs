//! Augmented copies of image tables: every row K times in order, every input column kept, the
//! images warped exactly as `stn::augment` warps them with the key (seed, copy, row), the warp
//! recorded, bad rows kept with their reason, outputs never overwritten (the pixels against
//! PyTorch: reference.rs).

use crate::common::*;
use arrow_array::{Array, Int32Array, StringArray};
use stn::augment::{Augment, Key, Warp};
use stn_table::augment::{augment_table, AugmentTableOptions, AUGMENT_COLUMNS};
use stn_table::codec::{decode_column, DecodeOptions};
use stn_table::detect;

const SPEC: &str = "affine:rot=20,scale=0.9-1.1;tps:0.05";

#[test]
fn copies_keep_every_row_and_column_with_the_keys_warps() {
    let aug = Augment::parse(SPEC).unwrap();
    let dir = tmp("augment");
    for table in [
        "hf_bytes.parquet",
        "bad_rows.parquet",
        "ray_fixed.parquet",
        "spark_image.parquet",
        "daft_image.parquet",
    ] {
        let input = fixtures().join(table);
        let out = dir.join(table);
        let opts = AugmentTableOptions { copies: 3, seed: 7, batch_size: 5, ..Default::default() };
        let reports = augment_table(&aug, &input, &out, &opts, &mut |_| {}).unwrap();
        let (in_schema, in_batches, _) = read_all(&input);
        let (schema, batches, _) = read_all(&out);
        let rows_in: usize = in_batches.iter().map(|b| b.num_rows()).sum();
        assert_eq!(reports[0].rows_in, rows_in, "{table}");
        assert_eq!(reports[0].rows_out, 3 * rows_in, "{table}");
        assert_eq!(schema.fields().len(), in_schema.fields().len() + 3, "{table}");
        assert_eq!(schema.metadata().get("stn_augment_spec"), Some(&aug.to_string()), "{table}");
        assert_eq!(schema.metadata().get("stn_augment_seed").map(String::as_str), Some("7"));
        let col = detect(&in_schema, None).unwrap();
        // Every input column but the image's: row i of the input, three times.
        for f in in_schema.fields() {
            if f.name() == col.field.name() {
                continue;
            }
            let a = column(&in_batches, f.name());
            let b = column(&batches, f.name());
            for r in 0..3 * rows_in {
                assert_eq!(
                    arrow_select::take::take(
                        a.as_ref(),
                        &arrow_array::UInt32Array::from(vec![(r / 3) as u32]),
                        None
                    )
                    .unwrap()
                    .to_data(),
                    b.slice(r, 1).to_data(),
                    "{table}: column {} row {r}",
                    f.name()
                );
            }
        }
        let copy = column(&batches, AUGMENT_COLUMNS[0]);
        let copy = copy.as_any().downcast_ref::<Int32Array>().unwrap();
        assert!((0..3 * rows_in).all(|r| copy.value(r) == (r % 3) as i32));
        let warps = column(&batches, AUGMENT_COLUMNS[1]);
        let warps = warps.as_any().downcast_ref::<StringArray>().unwrap();
        let errors = column(&batches, AUGMENT_COLUMNS[2]);
        let errors = errors.as_any().downcast_ref::<StringArray>().unwrap();
        let decode = DecodeOptions { base_dir: Some(fixtures()), ..Default::default() };
        let inputs = decode_column(&col.convention, column(&in_batches, col.field.name()).as_ref(), &decode);
        let outputs = decode_column(&col.convention, column(&batches, col.field.name()).as_ref(), &decode);
        let mut failed = 0;
        for r in 0..3 * rows_in {
            match &inputs[r / 3] {
                Ok(d) => {
                    // The recorded warp is the key's draw, and the copy has the input's shape
                    // (its pixels are checked against PyTorch in reference.rs).
                    let key = Key::new(7, (r % 3) as u64, (r / 3) as u64);
                    let got: Warp = serde_json::from_str(warps.value(r)).unwrap();
                    assert_eq!(got, aug.draw(&[key], [d.image.height, d.image.width])[0], "{table} row {r}");
                    assert!(errors.is_null(r));
                    let img = &outputs[r].as_ref().unwrap().image;
                    assert_eq!(
                        (img.channels, img.height, img.width),
                        (d.image.channels, d.image.height, d.image.width),
                        "{table} row {r}"
                    );
                }
                Err(_) => {
                    failed += 1;
                    assert!(outputs[r].is_err() && warps.is_null(r) && !errors.is_null(r), "{table} row {r}");
                }
            }
        }
        assert_eq!(failed, reports[0].failed, "{table}");
        if table == "bad_rows.parquet" {
            assert!(failed > 0 && failed % 3 == 0);
        } else {
            assert_eq!(failed, 0, "{table}");
        }
        // A second run keeps the output it would make; another seed is refused. Neither
        // touches the file.
        let before = std::fs::read(&out).unwrap();
        let again = augment_table(&aug, &input, &out, &opts, &mut |_| {}).unwrap();
        assert!(again[0].skipped && again[0].rows_out == reports[0].rows_out, "{again:?}");
        let other = AugmentTableOptions { seed: opts.seed + 1, ..opts.clone() };
        let e = augment_table(&aug, &input, &out, &other, &mut |_| {}).unwrap_err();
        assert!(e.to_string().contains("never overwritten") && e.to_string().contains("option seed"), "{e}");
        assert_eq!(std::fs::read(&out).unwrap(), before);
    }
    // The same keys give the same table; the batch size does not matter.
    let input = fixtures().join("hf_bytes.parquet");
    let a = dir.join("a.parquet");
    let b = dir.join("b.parquet");
    augment_table(
        &aug,
        &input,
        &a,
        &AugmentTableOptions { copies: 2, seed: 3, batch_size: 1, ..Default::default() },
        &mut |_| {},
    )
    .unwrap();
    augment_table(
        &aug,
        &input,
        &b,
        &AugmentTableOptions { copies: 2, seed: 3, batch_size: 64, ..Default::default() },
        &mut |_| {},
    )
    .unwrap();
    let (_, ba, _) = read_all(&a);
    let (_, bb, _) = read_all(&b);
    for name in ["image", AUGMENT_COLUMNS[1]] {
        assert_eq!(column(&ba, name).to_data(), column(&bb, name).to_data(), "{name}");
    }
    // Bad arguments: no copies, a table that is not there, a column that is not an image.
    let e = augment_table(
        &aug,
        &input,
        &dir.join("c.parquet"),
        &AugmentTableOptions { copies: 0, ..Default::default() },
        &mut |_| {},
    );
    assert!(e.is_err() && !dir.join("c.parquet").exists());
    assert!(augment_table(
        &aug,
        &dir.join("missing.parquet"),
        &dir.join("d.parquet"),
        &Default::default(),
        &mut |_| {}
    )
    .is_err());
    let opts = AugmentTableOptions { column: Some("label".into()), ..Default::default() };
    assert!(augment_table(&aug, &input, &dir.join("e.parquet"), &opts, &mut |_| {}).is_err());
    assert!(!dir.join("e.parquet").exists());
    std::fs::remove_dir_all(dir).unwrap();
}
