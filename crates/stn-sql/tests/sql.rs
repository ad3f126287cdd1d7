//! The SQL functions on DataFusion: the same results as the table writer (same bytes of
//! `stn_image`, same theta), bad rows as nulls with `stn_error`, fixed-shape outputs,
//! `COPY ... TO` writing a table, and clear errors.

#[path = "../../stn-table/tests/common/mod.rs"]
mod common;

use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::{Array, RecordBatch};
use common::*;
use stn_models::rectify::Rectifier;
use stn_sql::SqlOptions;
use stn_table::rectify::{rectify_table, RectifyOptions};

fn ctx() -> datafusion::prelude::SessionContext {
    let r = Arc::new(Rectifier::from_run(run_dir()).unwrap());
    stn_sql::context(r, SqlOptions { base_dir: Some(fixtures()), ..SqlOptions::default() })
}

fn col(batches: &[RecordBatch], name: &str) -> arrow_array::ArrayRef {
    let parts: Vec<&dyn Array> = batches.iter().map(|b| b.column_by_name(name).unwrap().as_ref()).collect();
    arrow_select::concat::concat(&parts).unwrap()
}

fn fx(name: &str) -> String {
    fixtures().join(name).display().to_string()
}

#[test]
fn functions_give_what_the_table_writer_gives() {
    let ctx = ctx();
    let dir = tmp("sql-same");
    for table in [
        "pyarrow_binary.parquet",
        "hf_bytes.parquet",
        "daft_image.parquet",
        "ray_variable.parquet",
        "spark_image.parquet",
    ] {
        let out = dir.join(table);
        rectify_table(rectifier(), &fixtures().join(table), &out, &RectifyOptions::default(), &mut |_| {})
            .unwrap();
        let (_, written, _) = read_all(&out);
        let (schema, _, _) = read_all(&fixtures().join(table));
        let image = stn_table::detect(&schema, None).unwrap().field.name().clone();
        let q = format!(
            "SELECT stn_rectify({image}) AS r, stn_theta({image}) AS t, stn_error({image}) AS e FROM '{}'",
            fx(table)
        );
        let got = stn_sql::query(&ctx, &q).unwrap_or_else(|e| panic!("{table}: {e}"));
        let n: usize = got.iter().map(|b| b.num_rows()).sum();
        assert_eq!(n, written.iter().map(|b| b.num_rows()).sum::<usize>(), "{table}");
        assert_eq!(
            col(&got, "r").to_data(),
            column(&written, "stn_image").to_data(),
            "{table}: same stn_image"
        );
        assert_eq!(col(&got, "t").to_data(), column(&written, "stn_theta").to_data(), "{table}: same theta");
        assert_eq!(col(&got, "e").null_count(), n, "{table}: no errors");
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn bad_rows_are_null_with_their_reason() {
    let q = format!(
        "SELECT id, kind, stn_theta(image) AS t, stn_error(image) AS e, stn_rectify(image) AS r FROM '{}' ORDER BY id",
        fx("bad_rows.parquet")
    );
    let got = stn_sql::query(&ctx(), &q).unwrap();
    let (kind, t, e, r) = (col(&got, "kind"), col(&got, "t"), col(&got, "e"), col(&got, "r"));
    assert_eq!(kind.len(), 8);
    for i in 0..8 {
        let ok = kind.as_string::<i32>().value(i) == "ok";
        // A bad row's theta is six nulls (a null fixed-size list would make Parquet files
        // unreadable for pyarrow).
        assert_eq!(t.as_fixed_size_list().value(i).null_count(), if ok { 0 } else { 6 }, "row {i}");
        assert_eq!(r.is_valid(i), ok, "row {i}");
        assert_eq!(e.is_null(i), ok, "row {i}");
    }
    assert!(e.as_string::<i32>().value(4).contains("claims 100000 x 100000"));
    assert!(e.as_string::<i32>().value(5).contains("does_not_exist.png"));
}

#[test]
fn fixed_shape_outputs_take_the_rectified_shape() {
    let q = format!("SELECT stn_rectify(image) AS r FROM '{}'", fx("daft_fixed.parquet"));
    let got = stn_sql::query(&ctx(), &q).unwrap();
    let r = col(&got, "r");
    let r = r.as_fixed_size_list();
    // 32 x 32 RGB in, the transformer's 28 at localization size 42: 21 x 21 x 3 out.
    assert_eq!(r.value_length(), 21 * 21 * 3);
    assert_eq!(r.len(), 7);
    let meta = got[0].schema().field(0).metadata().clone();
    assert!(meta.get("ARROW:extension:metadata").unwrap().contains("[\"RGB\",21,21]"), "{meta:?}");
}

#[test]
fn copy_to_writes_a_table() {
    let dir = tmp("sql-copy");
    let out = dir.join("out.parquet");
    let q = format!(
        "COPY (SELECT id, label, stn_rectify(image) AS image, stn_theta(image) AS theta FROM '{}' WHERE label >= 0) TO '{}'",
        fx("hf_bytes.parquet"),
        out.display()
    );
    let res = stn_sql::query(&ctx(), &q).unwrap();
    let count = res[0].column(0).as_primitive::<arrow_array::types::UInt64Type>().value(0);
    assert_eq!(count, 6, "the six digits");
    let (schema, batches, _) = read_all(&out);
    assert_eq!(
        schema.fields().iter().map(|f| f.name().as_str()).collect::<Vec<_>>(),
        ["id", "label", "image", "theta"]
    );
    let image = column(&batches, "image");
    let bytes = image.as_struct().column_by_name("bytes").unwrap();
    for i in 0..6 {
        let png = bytes.as_binary::<i32>().value(i);
        let img = stn_data::Image::decode(png, 1 << 20).unwrap();
        assert_eq!((img.height, img.width), (28, 28), "42 x 42 digits come out 28 x 28");
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn wrong_arguments_are_clear_errors() {
    let ctx = ctx();
    let e = stn_sql::query(&ctx, &format!("SELECT stn_theta(id) FROM '{}'", fx("pyarrow_binary.parquet")))
        .unwrap_err()
        .to_string();
    assert!(e.contains("stn_theta") && e.contains("holds no images"), "{e}");
    let e =
        stn_sql::query(&ctx, &format!("SELECT stn_theta(image, id) FROM '{}'", fx("pyarrow_binary.parquet")))
            .unwrap_err()
            .to_string();
    assert!(e.contains("stn_theta"), "{e}");
    let e = stn_sql::query(&ctx, "SELECT * FROM '/no/such/table.parquet'").unwrap_err().to_string();
    assert!(e.contains("table.parquet"), "{e}");
    // Built-in functions stay.
    let ok = stn_sql::query(
        &ctx,
        &format!("SELECT count(*) AS n, max(label) AS m FROM '{}'", fx("pyarrow_binary.parquet")),
    )
    .unwrap();
    assert_eq!(ok[0].column(0).as_primitive::<arrow_array::types::Int64Type>().value(0), 8);
}

#[test]
fn stn_rectified_is_the_three_functions_in_one_pass() {
    let table = fx("hf_bytes.parquet");
    let q = format!(
        "SELECT stn_rectify(image) AS r, stn_theta(image) AS t, stn_error(image) AS e, \
         stn_rectified(image) AS s FROM '{table}'"
    );
    let got = stn_sql::query(&ctx(), &q).unwrap();
    let s = col(&got, "s");
    let s = s.as_struct();
    assert_eq!(
        s.fields().iter().map(|f| f.name().as_str()).collect::<Vec<_>>(),
        ["stn_image", "stn_theta", "stn_error"]
    );
    assert_eq!(s.column(0).to_data(), col(&got, "r").to_data());
    assert_eq!(s.column(1).to_data(), col(&got, "t").to_data());
    assert_eq!(s.column(2).to_data(), col(&got, "e").to_data());
    // Its fields read with the bracket syntax.
    let q = format!("SELECT x['stn_theta'] AS t FROM (SELECT stn_rectified(image) AS x FROM '{table}')");
    let t = stn_sql::query(&ctx(), &q).unwrap();
    assert_eq!(col(&t, "t").to_data(), col(&got, "t").to_data());
}

#[test]
fn options_travel_in_the_call() {
    let ctx = ctx();
    let table = fx("pyarrow_binary.parquet");
    let q = |o: &str| format!("SELECT stn_rectify(image{o}) AS r, stn_theta(image{o}) AS t FROM '{table}'");
    let png = stn_sql::query(&ctx, &q("")).unwrap();
    let jpeg = stn_sql::query(&ctx, &q(", 'format=jpeg, jpeg_quality=80, batch_size=3'")).unwrap();
    let (png_r, jpeg_r) = (col(&png, "r"), col(&jpeg, "r"));
    for i in 0..png_r.len() {
        assert_eq!(&png_r.as_binary::<i32>().value(i)[..4], b"\x89PNG");
        assert_eq!(&jpeg_r.as_binary::<i32>().value(i)[..2], b"\xff\xd8", "row {i} is a JPEG");
    }
    assert_eq!(col(&png, "t").to_data(), col(&jpeg, "t").to_data(), "batch size changes nothing");
    // max_pixels in the call: every 42 x 42 digit is over 100 pixels.
    let e = stn_sql::query(&ctx, &format!("SELECT stn_error(image, 'max_pixels=100') AS e FROM '{table}'"))
        .unwrap();
    assert_eq!(col(&e, "e").null_count(), 0, "every row over the limit");
    for (opts, want) in [
        ("'format=gif'", "option `format`: png or jpeg, got `gif`"),
        ("'jpeg_quality=0'", "option `jpeg_quality`: 1 to 100"),
        ("'speed=9'", "unknown option `speed`"),
        ("'batch_size'", "option `batch_size`: expected key=value"),
        ("'png_level=11'", "PNG level"),
        ("7", "the second argument is a string of options"),
    ] {
        let e = stn_sql::query(&ctx, &format!("SELECT stn_rectify(image, {opts}) FROM '{table}'"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("stn_rectify") && e.contains(want), "{opts}: {e}");
    }
}

#[test]
fn stn_error_says_what_stn_rectified_says() {
    // stn_error runs the whole rectification, so a row that decodes but fails later is not
    // reported as good.
    let ctx = ctx();
    let q = format!(
        "SELECT stn_error(image) AS e, r['stn_error'] AS re FROM (SELECT image, stn_rectified(image) AS r FROM '{}')",
        fx("bad_rows.parquet")
    );
    let got = stn_sql::query(&ctx, &q).unwrap();
    let (e, re) = (col(&got, "e"), col(&got, "re"));
    assert_eq!(e.to_data(), re.to_data());
    assert!(e.null_count() < e.len(), "the fixture has bad rows");
}

#[test]
fn a_lazy_model_loads_on_first_use_and_names_a_missing_folder() {
    let model = stn_sql::Model::lazy(run_dir());
    assert!(!model.is_loaded());
    let ctx = stn_sql::context(model.clone(), SqlOptions::default());
    assert!(!model.is_loaded(), "registering loads nothing");
    let q = format!("SELECT stn_theta(image) AS t FROM '{}'", fx("pyarrow_binary.parquet"));
    let lazy = stn_sql::query(&ctx, &q).unwrap();
    assert!(model.is_loaded());
    assert_eq!(col(&lazy, "t").to_data(), col(&stn_sql::query(&self::ctx(), &q).unwrap(), "t").to_data());

    let missing = tmp("sql-no-model").join("gone");
    let ctx = stn_sql::context(stn_sql::Model::lazy(&missing), SqlOptions::default());
    let e = stn_sql::query(&ctx, &q).unwrap_err().to_string();
    assert!(e.contains("cannot load the model from") && e.contains(&missing.display().to_string()), "{e}");
    assert!(e.contains("on host"), "{e}");
}

#[test]
fn option_values_with_commas_and_quotes_round_trip() {
    use stn_sql::{parse_option_pairs, quote_option_value};
    for v in ["/data/a, b", "plain", "say \"hi\"", "back\\slash", " padded ", "k=v", ""] {
        let spec = format!("format=png, base_dir={}, batch_size=8", quote_option_value(v));
        let pairs = parse_option_pairs(&spec).unwrap_or_else(|e| panic!("{spec}: {e}"));
        assert_eq!(pairs[1], ("base_dir".to_string(), v.to_string()), "{spec}");
        assert_eq!(pairs.len(), 3, "{spec}");
    }
    let o = SqlOptions::default()
        .with_overrides("base_dir=\"/x,y\", allow_outside_paths=true, max_file_bytes=10")
        .unwrap();
    assert_eq!(o.base_dir.as_deref(), Some(std::path::Path::new("/x,y")));
    assert!(o.allow_outside_paths && o.max_file_bytes == 10);
    for (bad, why) in [
        ("base_dir=\"/x", "no closing quote"),
        ("base_dir=\"/x\" y", "after the quoted value"),
        ("base_dir=\"a\\q\"", "escapes"),
        ("allow_outside_paths=yes", "true or false"),
        ("nonsense", "expected key=value"),
    ] {
        let e = SqlOptions::default().with_overrides(bad).unwrap_err();
        assert!(e.contains(why), "{bad}: {e}");
    }
}

#[test]
fn path_rows_in_sql_stay_inside_base_dir() {
    // Hugging Face structs made in the query: the session's base_dir is the fixtures folder.
    let q = "SELECT stn_error(named_struct('bytes', arrow_cast(NULL, 'Binary'), 'path', p)) AS e \
             FROM (VALUES ('images/d0.png'), ('../manifest.json'), ('/etc/passwd')) AS t(p)";
    let got = stn_sql::query(&ctx(), q).unwrap();
    let e = col(&got, "e");
    let e = e.as_any().downcast_ref::<arrow_array::StringArray>().unwrap();
    assert!(e.is_null(0), "inside: {:?}", e.value(0));
    assert!(e.value(1).contains("`..`") && e.value(1).contains("must stay inside"), "{}", e.value(1));
    assert!(e.value(2).contains("is absolute"), "{}", e.value(2));
    // allow_outside_paths in the call's options reads /etc/passwd (and finds no image there).
    let q = q.replace(" AS e", "").replace("p))", "p), 'allow_outside_paths=true') AS e");
    let got = stn_sql::query(&ctx(), &q).unwrap();
    let e = col(&got, "e");
    let e = e.as_any().downcast_ref::<arrow_array::StringArray>().unwrap();
    assert!(e.value(2).contains("not a PNG or JPEG"), "{}", e.value(2));
}

#[test]
fn fuzz_option_strings() {
    use common::fuzz::*;
    let seeds: Vec<Vec<u8>> = std::fs::read_to_string(fuzz_dir().join("corpus/options.txt"))
        .unwrap()
        .lines()
        .map(|l| l.as_bytes().to_vec())
        .collect();
    let r = fuzz("options", seeds, fuzz_seconds(), std::time::Duration::from_secs(2), &|b| {
        let Ok(s) = std::str::from_utf8(b) else { return };
        if let Ok(pairs) = stn_sql::parse_option_pairs(s) {
            // What parses is written back and read again unchanged.
            let again: String = pairs
                .iter()
                .map(|(k, v)| format!("{k}={}", stn_sql::quote_option_value(v)))
                .collect::<Vec<_>>()
                .join(", ");
            if pairs.iter().all(|(k, _)| !k.is_empty() && !k.contains(['=', ',', '"']) && k.trim() == k) {
                assert_eq!(stn_sql::parse_option_pairs(&again).unwrap(), pairs, "{again}");
            }
        }
        let _ = SqlOptions::default().with_overrides(s);
    });
    assert_clean(&r);
}

#[test]
fn stn_explain_decomposes_theta_of_images_and_of_theta_columns() {
    use arrow_array::types::Float64Type;
    let transform = rectifier().transform();
    let q = format!(
        "SELECT id, kind, stn_theta(image) AS t, stn_explain(image) AS x, stn_explain(stn_theta(image)) AS y, \
         stn_explain(CAST(stn_theta(image) AS DOUBLE[])) AS z FROM '{}' ORDER BY id",
        fx("bad_rows.parquet")
    );
    let got = stn_sql::query(&ctx(), &q).unwrap();
    let (kind, t, x) = (col(&got, "kind"), col(&got, "t"), col(&got, "x"));
    let x = x.as_struct();
    let number = |name: &str, i: usize| {
        let c = x.column_by_name(name).unwrap().as_primitive::<Float64Type>();
        c.is_valid(i).then(|| c.value(i))
    };
    let mut good = 0;
    for i in 0..kind.len() {
        if kind.as_string::<i32>().value(i) != "ok" {
            assert!(x.is_null(i), "row {i}: a bad row explains as null");
            continue;
        }
        good += 1;
        let theta = t.as_fixed_size_list().value(i);
        let theta: Vec<f64> = theta
            .as_primitive::<arrow_array::types::Float32Type>()
            .values()
            .iter()
            .map(|&v| v as f64)
            .collect();
        let e = stn::explain::explain(transform, &theta).unwrap();
        assert_eq!(x.column_by_name("family").unwrap().as_string::<i32>().value(i), e.family);
        for (name, want) in [
            ("angle_deg", e.angle_deg),
            ("scale_x", e.scale_x),
            ("scale_y", e.scale_y),
            ("shear", e.shear),
            ("tx", e.tx),
            ("zoom", e.zoom),
        ] {
            assert_eq!(number(name, i), Some(want), "row {i}: {name}");
        }
        assert_eq!(number("bending_energy", i), None, "row {i}: an affine family does not bend");
    }
    assert!(good >= 2, "{good} good rows");
    // From the theta column, as a fixed-size list or a list of float64: the same structs.
    assert_eq!(col(&got, "y").to_data(), col(&got, "x").to_data());
    assert_eq!(col(&got, "z").to_data(), col(&got, "x").to_data());
    // A list of the wrong length is not this model's theta; a string holds no images.
    let e = stn_sql::query(&ctx(), "SELECT stn_explain([1.0, 2.0])").unwrap_err().to_string();
    assert!(e.contains("has 6 parameters, got 2"), "{e}");
    let e = stn_sql::query(&ctx(), "SELECT stn_explain('x')").unwrap_err().to_string();
    assert!(e.contains("holds no images"), "{e}");
}
