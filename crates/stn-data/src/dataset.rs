//! Labelled single-channel image sets: the embedded MNIST subset and any IDX pair by path.

use std::ops::Range;
use std::path::{Path, PathBuf};

use crate::error::{DataError, Result};
use crate::idx::{parse_idx, read_idx, IdxArray};

/// The embedded data set: 10,000 real MNIST digits (IDX, gzip), vendored in `data/mnist10k/`.
const EMBEDDED_IMAGES: &[u8] = include_bytes!("../../../data/mnist10k/mnist10k-images-idx3-ubyte.gz");
const EMBEDDED_LABELS: &[u8] = include_bytes!("../../../data/mnist10k/mnist10k-labels-idx1-ubyte.gz");

/// Digits of the embedded set used for training; the rest (the last 2,000) are the test set.
pub const EMBEDDED_TRAIN: usize = 8_000;

/// Labelled gray images, stored as f32 in [0, 1], (N, 1, H, W) row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    /// Pixels, `len * height * width` values in [0, 1].
    pub images: Vec<f32>,
    /// One label per image.
    pub labels: Vec<u8>,
    /// Image height.
    pub height: usize,
    /// Image width.
    pub width: usize,
}

impl Dataset {
    /// Builds a data set from an images array (N, H, W) and a labels array (N).
    pub fn from_idx(images: IdxArray, labels: IdxArray, what: &str) -> Result<Self> {
        if images.dims.len() != 3 {
            return Err(DataError::Format {
                what: format!("{what} images"),
                message: format!("expected 3 dimensions (N, rows, cols), got {:?}", images.dims),
            });
        }
        if labels.dims.len() != 1 {
            return Err(DataError::Format {
                what: format!("{what} labels"),
                message: format!("expected 1 dimension (N), got {:?}", labels.dims),
            });
        }
        let (n, h, w) = (images.dims[0], images.dims[1], images.dims[2]);
        if labels.dims[0] != n {
            return Err(DataError::Format {
                what: what.to_string(),
                message: format!("{n} images but {} labels", labels.dims[0]),
            });
        }
        if n == 0 || h == 0 || w == 0 {
            return Err(DataError::Format {
                what: what.to_string(),
                message: format!("empty images {:?}", images.dims),
            });
        }
        let images = images.data.iter().map(|&b| b as f32 / 255.0).collect();
        Ok(Dataset { images, labels: labels.data, height: h, width: w })
    }

    /// The embedded 10,000-digit MNIST subset (28 x 28).
    pub fn embedded() -> Result<Self> {
        let images = parse_idx(EMBEDDED_IMAGES.to_vec(), "embedded mnist10k images")?;
        let labels = parse_idx(EMBEDDED_LABELS.to_vec(), "embedded mnist10k labels")?;
        Dataset::from_idx(images, labels, "embedded mnist10k")
    }

    /// The embedded subset split by index: the first 8,000 digits (train), the last 2,000 (test).
    pub fn embedded_split() -> Result<(Self, Self)> {
        let all = Dataset::embedded()?;
        let n = all.len();
        Ok((all.subset(0..EMBEDDED_TRAIN)?, all.subset(EMBEDDED_TRAIN..n)?))
    }

    /// Reads an IDX pair from files (raw or gzip).
    pub fn load_idx(images: &Path, labels: &Path) -> Result<Self> {
        Dataset::from_idx(read_idx(images)?, read_idx(labels)?, &images.display().to_string())
    }

    /// The files of an IDX prefix: `PREFIX-images-idx3-ubyte[.gz]` and
    /// `PREFIX-labels-idx1-ubyte[.gz]` (MNIST's own names: `train`, `t10k`), whichever exists.
    pub fn idx_prefix_files(prefix: &str) -> Result<(PathBuf, PathBuf)> {
        let pick = |kind: &str| -> Result<PathBuf> {
            let base = format!("{prefix}-{kind}-ubyte");
            for cand in [format!("{base}.gz"), base.clone()] {
                let p = PathBuf::from(&cand);
                if p.is_file() {
                    return Ok(p);
                }
            }
            Err(DataError::Io { path: PathBuf::from(&base), message: "no such file (nor with .gz)".into() })
        };
        Ok((pick("images-idx3")?, pick("labels-idx1")?))
    }

    /// Reads the IDX pair of a prefix (see [`Dataset::idx_prefix_files`]).
    pub fn load_prefix(prefix: &str) -> Result<Self> {
        let (i, l) = Dataset::idx_prefix_files(prefix)?;
        Dataset::load_idx(&i, &l)
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether there are no images.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Pixels per image.
    pub fn pixels(&self) -> usize {
        self.height * self.width
    }

    /// Number of classes (largest label + 1).
    pub fn num_classes(&self) -> usize {
        self.labels.iter().copied().max().map_or(0, |m| m as usize + 1)
    }

    /// Image `i`'s pixels.
    pub fn image(&self, i: usize) -> &[f32] {
        &self.images[i * self.pixels()..(i + 1) * self.pixels()]
    }

    /// The images in `range`, as a new data set.
    pub fn subset(&self, range: Range<usize>) -> Result<Self> {
        if range.start >= range.end || range.end > self.len() {
            return Err(DataError::Invalid {
                arg: "range",
                message: format!("{range:?} is empty or outside the {} images", self.len()),
            });
        }
        let p = self.pixels();
        Ok(Dataset {
            images: self.images[range.start * p..range.end * p].to_vec(),
            labels: self.labels[range.clone()].to_vec(),
            height: self.height,
            width: self.width,
        })
    }
}
