//! Labelled gray images (the embedded digits, distorted or not) written as an image table.

use std::path::Path;
use std::sync::Arc;

use arrow_array::{ArrayRef, BinaryArray, Int64Array, RecordBatch, StringArray, StructArray};
use arrow_schema::{DataType, Field, Fields, Schema};
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use rayon::prelude::*;
use stn_data::image_io::{Encoding, PngLevel};
use stn_data::{Dataset, Image};

use crate::convention::HF_METADATA;
use crate::error::{Result, TableError};

/// How [`write_dataset`] stores the images.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportLayout {
    /// Hugging Face `Image()`: `struct<bytes, path>` with the `huggingface` metadata.
    HuggingFace,
    /// A plain `binary` column of PNG bytes.
    Binary,
}

/// Writes `data` as a Parquet table with columns `id` (int64, from 0), `label` (int64) and
/// `image` (PNG), `rows_per_group` rows per row group; atomically (temporary name, then rename;
/// an existing file is an error).
pub fn write_dataset(data: &Dataset, path: &Path, layout: ExportLayout, rows_per_group: usize) -> Result<()> {
    let out = |m: String| TableError::Output { path: path.to_path_buf(), message: m };
    if path.exists() {
        return Err(out("exists; an output is never overwritten".into()));
    }
    let pngs: Vec<Vec<u8>> = (0..data.len())
        .into_par_iter()
        .map(|i| {
            let img =
                Image { data: data.image(i).to_vec(), channels: 1, height: data.height, width: data.width };
            img.encode(Encoding::Png(PngLevel::Level(6))).map_err(|e| e.to_string())
        })
        .collect::<std::result::Result<_, _>>()
        .map_err(out)?;
    let ids: ArrayRef = Arc::new(Int64Array::from_iter_values(0..data.len() as i64));
    let labels: ArrayRef = Arc::new(Int64Array::from_iter_values(data.labels.iter().map(|&l| l as i64)));
    let bytes = BinaryArray::from_iter_values(pngs.iter());
    let (image, meta): (ArrayRef, _) = match layout {
        ExportLayout::Binary => (Arc::new(bytes), Default::default()),
        ExportLayout::HuggingFace => {
            let fields = Fields::from(vec![
                Field::new("bytes", DataType::Binary, true),
                Field::new("path", DataType::Utf8, true),
            ]);
            let paths: ArrayRef = Arc::new(StringArray::new_null(data.len()));
            let s = StructArray::try_new(fields, vec![Arc::new(bytes), paths], None)
                .map_err(|e| out(e.to_string()))?;
            let features = serde_json::json!({"info": {"features": {
                "id": {"dtype": "int64", "_type": "Value"},
                "label": {"dtype": "int64", "_type": "Value"},
                "image": {"_type": "Image"}}}});
            (Arc::new(s), [(HF_METADATA.to_string(), features.to_string())].into_iter().collect())
        }
    };
    let schema = Arc::new(Schema::new_with_metadata(
        vec![
            Field::new("id", DataType::Int64, false),
            Field::new("label", DataType::Int64, false),
            Field::new("image", image.data_type().clone(), true),
        ],
        meta,
    ));
    let batch =
        RecordBatch::try_new(schema.clone(), vec![ids, labels, image]).map_err(|e| out(e.to_string()))?;
    let (partial, file) =
        stn_fs::Partial::create(path).map_err(|e| out(format!("cannot create a temporary file: {e}")))?;
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_max_row_group_row_count(Some(rows_per_group.max(1)))
        .build();
    let mut w = ArrowWriter::try_new(file, schema, Some(props)).map_err(|e| out(e.to_string()))?;
    w.write(&batch).map_err(|e| out(e.to_string()))?;
    let file = w.into_inner().map_err(|e| out(e.to_string()))?;
    partial.commit(file).map_err(|e| match e {
        stn_fs::CommitError::Exists(_) => out("appeared while writing; never overwritten".into()),
        e => out(e.to_string()),
    })
}

/// Writes `data` as PNG files `DIR/NNNNN-L.png` (index from 0, five digits; L the label) into
/// the folder `dir`, which must not exist yet (it is created; nothing is ever overwritten).
/// Each file appears complete (temporary name, then rename). Returns the paths written, in
/// order.
pub fn write_pngs(data: &Dataset, dir: &Path) -> Result<Vec<std::path::PathBuf>> {
    let out = |m: String| TableError::Output { path: dir.to_path_buf(), message: m };
    if dir.exists() {
        return Err(out("exists; an output is never overwritten".into()));
    }
    std::fs::create_dir_all(dir).map_err(|e| out(e.to_string()))?;
    (0..data.len())
        .into_par_iter()
        .map(|i| {
            let img =
                Image { data: data.image(i).to_vec(), channels: 1, height: data.height, width: data.width };
            let bytes = img.encode(Encoding::Png(PngLevel::Level(6))).map_err(|e| out(e.to_string()))?;
            let path = dir.join(format!("{i:05}-{}.png", data.labels[i]));
            stn_fs::write_new(&path, &bytes).map_err(|e| out(e.to_string()))?;
            Ok(path)
        })
        .collect()
}
