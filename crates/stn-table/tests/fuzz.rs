//! Fuzzing the readers of hostile input (see `common/fuzz.rs`): image headers and pixels
//! (PNG, JPEG, EXIF), every image-column convention (Arrow arrays with fuzzed buffers), Parquet
//! file bytes, model files and augmentation specs. Each harness runs for `STN_FUZZ_SECONDS`
//! and replays its regression folder; a panic or a hang fails the test.

use std::time::Duration;

use arrow_array::{make_array, ArrayRef};
use arrow_buffer::Buffer;
use arrow_data::ArrayData;
use stn_data::Image;
use stn_table::codec::{decode_in_pieces, DecodeOptions};
use stn_table::convention::detect;

use crate::common::fuzz::*;
use crate::common::*;

fn read(p: &std::path::Path) -> Vec<u8> {
    std::fs::read(p).unwrap()
}

fn image_seeds() -> Vec<Vec<u8>> {
    files_in(&fixtures().join("images")).iter().map(|p| read(p)).collect()
}

fn table_seeds() -> Vec<Vec<u8>> {
    files_in(&fixtures())
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
        .map(|p| read(p))
        .collect()
}

/// Small limits, so a fuzzed header that claims a large image is refused fast.
fn small() -> DecodeOptions {
    DecodeOptions { max_pixels: 1 << 20, base_dir: Some(fixtures()), ..DecodeOptions::default() }
}

#[test]
fn fuzz_image_decoding() {
    let r = fuzz("image", image_seeds(), fuzz_seconds(), Duration::from_secs(5), &|b| {
        let _ = Image::probe(b);
        let _ = Image::decode(b, 1 << 20);
    });
    assert_clean(&r);
}

#[test]
fn fuzz_parquet_files() {
    let dir = tmp("fuzz-parquet");
    let r = fuzz("parquet", table_seeds(), fuzz_seconds(), Duration::from_secs(5), &|b| {
        // Through the crate's own readers (which guard the Parquet reader's panics).
        let file = dir.join(format!("{:?}.parquet", std::thread::current().id()).replace(['(', ')'], ""));
        std::fs::write(&file, b).unwrap();
        let Ok(builder) = stn_table::rectify::open(&file) else { return };
        let col = detect(builder.schema(), None);
        let Ok(reader) = stn_table::guard::guarded(&file, || Ok(builder.with_batch_size(64).build())) else {
            return;
        };
        let Ok(reader) = reader else { return };
        for batch in stn_table::guard::GuardedBatches::new(&file, reader).take(64) {
            let Ok(batch) = batch else { return };
            if let Ok(col) = &col {
                if let Some(a) = batch.columns().get(col.index) {
                    let _ = decode_in_pieces(&col.convention, a.as_ref(), &small(), &|_| 0, &mut |_| Ok(()));
                }
            }
        }
        // And the whole file plan (footer, schema, lineage) as the writer makes it.
        let _ = stn_table::rectify::FilePlan::new(
            rectifier(),
            &file,
            &stn_table::rectify::RectifyOptions::default(),
        );
    });
    assert_clean(&r);
}

/// Every buffer of an array and its children, depth first.
fn buffers(d: &ArrayData, out: &mut Vec<Buffer>) {
    out.extend(d.buffers().iter().cloned());
    for c in d.child_data() {
        buffers(c, out);
    }
}

/// `d` with its buffers replaced, in the order [`buffers`] lists them; None when Arrow
/// refuses the result (`build` validates offsets and lengths: only arrays Arrow itself accepts
/// are inputs anyone can hand us).
fn with_buffers(d: &ArrayData, bufs: &mut std::slice::Iter<'_, Buffer>) -> Option<ArrayData> {
    let own: Vec<Buffer> = d.buffers().iter().map(|_| bufs.next().cloned()).collect::<Option<_>>()?;
    let children: Vec<ArrayData> =
        d.child_data().iter().map(|c| with_buffers(c, bufs)).collect::<Option<_>>()?;
    d.clone().into_builder().buffers(own).child_data(children).build().ok()
}

#[test]
fn fuzz_image_columns_of_every_convention() {
    // The image column of every fixture table; a fuzz input is one table's index, a buffer's
    // index, and bytes written over that buffer.
    let mut columns: Vec<(stn_table::Convention, ArrayData)> = Vec::new();
    for p in files_in(&fixtures()) {
        if p.extension().is_none_or(|e| e != "parquet") {
            continue;
        }
        let (schema, batches, _) = read_all(&p);
        if let Ok(col) = detect(&schema, None) {
            columns.push((col.convention.clone(), column(&batches, col.field.name()).to_data()));
        }
    }
    assert!(columns.len() >= 15);
    let seeds: Vec<Vec<u8>> = (0..columns.len() as u8).map(|i| vec![i, 0, 0, 0]).collect();
    let r = fuzz("columns", seeds, fuzz_seconds(), Duration::from_secs(5), &|b| {
        let Some((&t, rest)) = b.split_first() else { return };
        let (conv, data) = &columns[t as usize % columns.len()];
        let mut bufs = Vec::new();
        buffers(data, &mut bufs);
        if bufs.is_empty() || rest.len() < 3 {
            return;
        }
        let which = rest[0] as usize % bufs.len();
        let at = u16::from_le_bytes([rest[1], rest[2]]) as usize;
        let mut bytes = bufs[which].as_slice().to_vec();
        let n = bytes.len();
        for (i, v) in rest[3..].iter().enumerate() {
            if let Some(x) = bytes.get_mut(at.wrapping_add(i) % n.max(1)) {
                *x = *v;
            }
        }
        bufs[which] = Buffer::from_vec(bytes);
        let Some(mutated) = with_buffers(data, &mut bufs.iter()) else { return };
        let a: ArrayRef = make_array(mutated);
        let _ = decode_in_pieces(conv, a.as_ref(), &small(), &|_| 0, &mut |_| Ok(()));
    });
    assert_clean(&r);
}

#[test]
fn fuzz_model_files() {
    let model = read(&run_dir().join("model.stn"));
    let dir = tmp("fuzz-model");
    let r = fuzz("model", vec![model], fuzz_seconds(), Duration::from_secs(10), &|b| {
        let d = dir.join(format!("{:?}", std::thread::current().id()).replace(['(', ')'], ""));
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("model.stn"), b).unwrap();
        let _ = stn_models::run::load_run(&d);
    });
    assert_clean(&r);
}

#[test]
fn fuzz_augmentation_specs() {
    let seeds: Vec<Vec<u8>> = std::fs::read_to_string(fuzz_dir().join("corpus/specs.txt"))
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.as_bytes().to_vec())
        .collect();
    let img = Image { data: vec![0.5; 3 * 12 * 16], channels: 3, height: 12, width: 16 };
    let device = burn::tensor::Device::flex();
    let r = fuzz("augment", seeds, fuzz_seconds(), Duration::from_secs(5), &|b| {
        let Ok(spec) = std::str::from_utf8(b) else { return };
        if let Ok(aug) = stn::augment::Augment::parse(spec) {
            let keys = [stn::augment::Key::new(1, 0, 0), stn::augment::Key::new(1, 1, 7)];
            let _ = aug.draw(&keys, [12, 16]);
            let _ = stn_table::augment::augment_image(&aug, &img, keys[1], &device);
        }
    });
    assert_clean(&r);
}
