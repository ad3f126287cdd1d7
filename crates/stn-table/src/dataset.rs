//! Labelled training and test sets from image tables: every image (any size, any channels)
//! in gray, resized to one size; labels from an integer column.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::{Array, RecordBatch};
use arrow_schema::SchemaRef;
use stn_data::Dataset;

use crate::arrays::int_at;
use stn_data::image_io::ImageInfo;

use crate::codec::{decode_in_pieces, DecodeOptions};
use crate::convention::detect;
use crate::crypto::{Keys, Protection};
use crate::delta::{DeltaAt, DeltaInput};
use crate::error::{Result, TableError};
use crate::guard::{guarded, GuardedBatches};
use crate::rectify::{input_files, open_with};

/// A labelled table read into memory.
#[derive(Debug, Clone)]
pub struct LabelledTable {
    /// The images (gray, resized) and labels.
    pub data: Dataset,
    /// Rows left out (file, row, reason): bad images or labels.
    pub skipped: Vec<(PathBuf, usize, String)>,
    /// The files that were encrypted (what is made from them must be protected as well).
    pub encrypted: Vec<PathBuf>,
}

/// Reads a table (a Parquet file or a folder of them) as a labelled data set: the image column
/// (`image_column`, or detected), the integer label column (`label_column`: values 0 to 255),
/// each image in gray (luminance), resized (bilinear) to `size`, or to the first good image's
/// size when `size` is None. Rows with a bad image or a null / out-of-range label are left out
/// and listed; a table with no good row is an error. `decode` gives the limits and where `path`
/// rows are read from (its `base_dir`, or else each file's folder); `keys` open encrypted files.
/// A Delta table is read at version `at` (deleted rows left out, logical column names).
pub fn load_labelled(
    path: &Path,
    image_column: Option<&str>,
    label_column: &str,
    size: Option<[usize; 2]>,
    decode: &DecodeOptions,
    keys: Option<&Keys>,
    at: &DeltaAt,
) -> Result<LabelledTable> {
    let mut encrypted = Vec::new();
    let mut size = size;
    let mut images = Vec::new();
    let mut labels = Vec::new();
    let mut skipped = Vec::new();
    for source in sources(path, at)? {
        let (file, schema, is_encrypted, base, batches) = source.open(keys)?;
        if is_encrypted {
            encrypted.push(file.clone());
        }
        let col = detect(&schema, image_column)
            .map_err(|message| TableError::Column { path: file.clone(), message })?;
        let (li, lf) = schema.column_with_name(label_column).ok_or_else(|| TableError::Column {
            path: file.clone(),
            message: format!("no label column `{label_column}`; name it with --label-column"),
        })?;
        if !lf.data_type().is_integer() {
            return Err(TableError::Column {
                path: file.clone(),
                message: format!(
                    "the label column `{label_column}` has type {}, not an integer type",
                    lf.data_type()
                ),
            });
        }
        let decode = DecodeOptions { base_dir: decode.base_dir.clone().or(Some(base)), ..decode.clone() };
        let mut row0 = 0usize;
        for batch in batches {
            let batch = batch?;
            let lab = batch.column(li);
            let gray = |info: &ImageInfo| 8 * info.height as u64 * info.width as u64;
            let mut fatal = None;
            decode_in_pieces(
                &col.convention,
                batch.column(col.index).as_ref(),
                &decode,
                &gray,
                &mut |piece| {
                    for (i, d) in piece {
                        let row = row0 + i;
                        let label = match int_at(lab.as_ref(), i) {
                            Some(l) if (0..=255).contains(&l) => l as u8,
                            Some(l) => {
                                skipped.push((file.clone(), row, format!("label {l} is outside 0..=255")));
                                continue;
                            }
                            None => {
                                skipped.push((file.clone(), row, "null label".into()));
                                continue;
                            }
                        };
                        let gray = match d {
                            Ok(d) => d.image.to_gray(),
                            Err(e) => {
                                skipped.push((file.clone(), row, e));
                                continue;
                            }
                        };
                        let [h, w] = *size.get_or_insert([gray.height, gray.width]);
                        match gray.resized(h, w) {
                            Ok(g) => images.extend_from_slice(&g.data),
                            Err(e) => {
                                fatal =
                                    Some(TableError::Row { path: file.clone(), row, reason: e.to_string() });
                                return Err(String::new());
                            }
                        }
                        labels.push(label);
                    }
                    Ok(())
                },
            )
            .map_err(|e| fatal.take().unwrap_or(TableError::Model(e)))?;
            row0 += lab.len();
        }
    }
    let [height, width] = size.ok_or_else(|| TableError::Column {
        path: path.to_path_buf(),
        message: format!("no usable row ({} rows left out)", skipped.len()),
    })?;
    Ok(LabelledTable { data: Dataset { images, labels, height, width }, skipped, encrypted })
}

/// One input of a table: a Parquet file, or a data file of a Delta table version.
pub(crate) enum Source {
    /// A Parquet file.
    File(PathBuf),
    /// A data file of a Delta table version (its index in the parts).
    Delta(Arc<DeltaInput>, usize),
}

/// The batches of an input, boxed.
pub(crate) type Batches = Box<dyn Iterator<Item = Result<RecordBatch>>>;

/// The inputs of the table at `path`: its Parquet files, or the data files of version `at` of
/// a Delta table.
pub(crate) fn sources(path: &Path, at: &DeltaAt) -> Result<Vec<Source>> {
    if crate::delta::is_delta(path) {
        let table = Arc::new(DeltaInput::open(path, at)?);
        return Ok((0..table.parts.len()).map(|i| Source::Delta(table.clone(), i)).collect());
    }
    Ok(input_files(path)?.into_iter().map(Source::File).collect())
}

impl Source {
    /// Opens it: its path, schema, whether it is encrypted, the folder its `path` rows are
    /// read from, and its batches of 256 rows.
    fn open(self, keys: Option<&Keys>) -> Result<(PathBuf, SchemaRef, bool, PathBuf, Batches)> {
        let path = self.path();
        let base = self.base_dir();
        let (schema, protection, batches) = self.read(keys, 256)?;
        Ok((path, schema, protection.encrypted(), base, batches))
    }

    /// The input's path (a Delta data file's, under its table).
    pub(crate) fn path(&self) -> PathBuf {
        match self {
            Source::File(f) => f.clone(),
            Source::Delta(t, i) => t.parts[*i].path.clone(),
        }
    }

    /// Where its relative `path` rows are read from: a file's folder, a Delta table's folder.
    pub(crate) fn base_dir(&self) -> PathBuf {
        match self {
            Source::File(f) => f.parent().map_or_else(|| PathBuf::from("."), Path::to_path_buf),
            Source::Delta(t, _) => t.path.clone(),
        }
    }

    /// Its rows (a Delta data file's after its deletion vector; 0 where the log has no count)
    /// and its identity for a lineage.
    pub(crate) fn identity(&self, keys: Option<&Keys>) -> Result<(u64, crate::lineage::InputId)> {
        match self {
            Source::File(f) => {
                let (b, _) = open_with(f, keys)?;
                let rows = b.metadata().file_metadata().num_rows().max(0) as u64;
                Ok((rows, crate::lineage::InputId::of(f, rows)))
            }
            Source::Delta(t, i) => {
                let id = t.parts[*i].input_id();
                Ok((id.rows, id))
            }
        }
    }

    /// Its schema, how it is protected (a Delta data file is never encrypted), and its
    /// batches of `batch_size` rows.
    pub(crate) fn read(
        &self,
        keys: Option<&Keys>,
        batch_size: usize,
    ) -> Result<(SchemaRef, Protection, Batches)> {
        match self {
            Source::File(file) => {
                let (builder, protection) = open_with(file, keys)?;
                let schema = builder.schema().clone();
                let reader = guarded(file, || {
                    builder
                        .with_batch_size(batch_size)
                        .build()
                        .map_err(|e| TableError::Parquet { path: file.clone(), message: e.to_string() })
                })?;
                Ok((schema, protection, Box::new(GuardedBatches::new(file, reader))))
            }
            Source::Delta(table, i) => {
                Ok((table.schema.clone(), Protection::default(), Box::new(table.batches(*i, batch_size)?)))
            }
        }
    }
}

/// Splits a data set in order: the last fifth (rounded down) is the test set. For the embedded
/// digits written as a table in order, exactly the embedded split (8,000 / 2,000).
pub fn holdout(data: &Dataset) -> stn_data::Result<(Dataset, Dataset)> {
    let n = data.len();
    let cut = n - n / 5;
    Ok((data.subset(0..cut)?, data.subset(cut..n)?))
}
