//! The rectification core: a trained spatial transformer applied to batches of images of any
//! size and any channel count.
//!
//! The localization net sees each image in gray, resampled to its own input size (bilinear,
//! border padding, as [`stn::SpatialTransformer::localize`] resamples), all images of a batch in
//! one forward pass. The sampler then reads the full-resolution original with all its channels,
//! so the output keeps the original's detail: its size is the transformer's output size scaled
//! by original size / localization size ([`Rectifier::output_size`]). Images of the same size
//! and channel count are warped together.

use std::collections::BTreeMap;
use std::path::Path;

use burn::module::Module;
use burn::tensor::{Device, Tensor, TensorData};
use rayon::prelude::*;
use stn::SpatialTransformer;
use stn_data::Image;

use crate::models::Classifier;
use crate::run::{load_run, RunResult};

/// Most values one warp call reads at once (a group of same-size images is split above this),
/// so that a batch of large photos never doubles its memory in one copy.
const MAX_GROUP_VALUES: usize = 1 << 24;

/// One rectified image.
#[derive(Debug, Clone, PartialEq)]
pub struct Rectified {
    /// The rectified image, with the input's channels.
    pub image: Image,
    /// The transformer's parameters for this image (`Rectifier::num_params` values).
    pub theta: Vec<f32>,
}

/// A trained spatial transformer, ready to rectify images (inference only; on the CPU unless
/// moved with [`Rectifier::on_device`]).
#[derive(Debug)]
pub struct Rectifier {
    transformer: SpatialTransformer,
    device: Device,
    loc_size: [usize; 2],
    num_params: usize,
    model_id: Option<String>,
    normalize: Option<[f32; 2]>,
}

fn to_vec(t: Tensor<2>) -> RunResult<Vec<f32>> {
    t.into_data().convert::<f32>().try_into_vec::<f32>().map_err(|e| format!("{e:?}"))
}

impl Rectifier {
    /// The rectifier of a classifier's transformer. Models without one (fcn, cnn) are an error.
    pub fn new(model: &Classifier) -> RunResult<Self> {
        let model = model.valid();
        let normalize = model.normalization();
        let transformer = model.transformer.ok_or_else(|| {
            "this model has no spatial transformer; rectify needs an ST model (st-fcn, st-cnn, tutorial)"
                .to_string()
        })?;
        let loc = &transformer.config().localization.input_size;
        if loc.len() != 2 {
            return Err(format!("rectify needs a 2-D transformer, this one has input size {loc:?}"));
        }
        let loc_size = [loc[0], loc[1]];
        let num_params = transformer.transform().num_params(transformer.out_size());
        Ok(Rectifier { transformer, device: Device::flex(), loc_size, num_params, model_id: None, normalize })
    }

    /// The same rectifier on `device` (for example a GPU from [`stn::device::select`]): the
    /// transformer's parameters move there and every batch runs there.
    pub fn on_device(mut self, device: &Device) -> Self {
        self.transformer = burn::module::Module::to_device(self.transformer, device);
        self.device = device.clone();
        self
    }

    /// The device the rectifier runs on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The rectifier of a run folder written by `stn train`.
    pub fn from_run(dir: &Path) -> RunResult<Self> {
        let (model, _) = load_run(dir)?;
        let id = crate::run::model_id(dir)?;
        Ok(Rectifier { model_id: Some(id), ..Rectifier::new(&model)? })
    }

    /// The same rectifier, saying it was loaded from the model file whose content hash is `id`
    /// ([`crate::run::file_id`]; weights imported from another framework, say).
    pub fn with_model_id(mut self, id: String) -> Self {
        self.model_id = Some(id);
        self
    }

    /// The content hash of the model file this rectifier was loaded from
    /// ([`crate::run::model_id`]); None for a model built in memory.
    pub fn model_id(&self) -> Option<&str> {
        self.model_id.as_deref()
    }

    /// The transformer's family: what its parameters mean ([`stn::explain`] reads them).
    pub fn transform(&self) -> stn::Transform {
        self.transformer.transform()
    }

    /// Parameters per image (6 for affine, 8 for projective, 2K for a K-point TPS, ...).
    pub fn num_params(&self) -> usize {
        self.num_params
    }

    /// The localization net's input size (height, width).
    pub fn localization_size(&self) -> [usize; 2] {
        self.loc_size
    }

    /// The output size for an input of `height x width`: the transformer's output size scaled
    /// by input size / localization size, at least one pixel.
    pub fn output_size(&self, height: usize, width: usize) -> [usize; 2] {
        let out = self.transformer.out_size();
        let scale = |o: usize, i: usize, l: usize| ((o as f64 * i as f64 / l as f64).round() as usize).max(1);
        [scale(out[0], height, self.loc_size[0]), scale(out[1], width, self.loc_size[1])]
    }

    /// The transformer's parameters for each image (localization only, no warp): one
    /// forward pass of the localization net over the batch.
    pub fn thetas(&self, images: &[&Image]) -> RunResult<Vec<Vec<f32>>> {
        if images.is_empty() {
            return Ok(Vec::new());
        }
        let [lh, lw] = self.loc_size;
        let small: Vec<Vec<f32>> = images
            .par_iter()
            .map(|img| img.to_gray().resized(lh, lw).map(|g| g.data).map_err(|e| e.to_string()))
            .collect::<RunResult<_>>()?;
        // The localization net sees what the model was trained on: normalized pixels, when the
        // model normalizes (the warp reads the image itself).
        let small: Vec<Vec<f32>> = match self.normalize {
            Some([mean, std]) => {
                small.into_iter().map(|v| v.into_iter().map(|p| (p - mean) / std).collect()).collect()
            }
            None => small,
        };
        let x =
            Tensor::<4>::from_data(TensorData::new(small.concat(), [images.len(), 1, lh, lw]), &self.device);
        let theta = self.transformer.localize(x).map_err(|e| e.to_string())?;
        Ok(to_vec(theta)?.chunks(self.num_params).map(<[f32]>::to_vec).collect())
    }

    /// Rectifies a batch of images (any sizes, 1 to 4 channels each): [`thetas`](Self::thetas)
    /// then [`warp`](Self::warp). The result for an image is an error only when its warp fails
    /// (an output too large to allocate, say); when the localization pass itself fails, every
    /// image gets that error.
    pub fn rectify(&self, images: &[&Image]) -> Vec<RunResult<Rectified>> {
        let thetas = match self.thetas(images) {
            Ok(t) => t,
            Err(e) => return images.iter().map(|_| Err(e.clone())).collect(),
        };
        self.warp(images, &thetas)
            .into_iter()
            .zip(thetas)
            .map(|(r, theta)| r.map(|image| Rectified { image, theta }))
            .collect()
    }

    /// Warps each image at full resolution through its parameters (one `thetas` row per
    /// image) to [`output_size`](Self::output_size); images of one size and channel count are
    /// warped together.
    pub fn warp(&self, images: &[&Image], thetas: &[Vec<f32>]) -> Vec<RunResult<Image>> {
        if thetas.len() != images.len() || thetas.iter().any(|t| t.len() != self.num_params) {
            return images
                .iter()
                .map(|_| {
                    Err(format!(
                        "{} images need {} parameter rows of {}",
                        images.len(),
                        images.len(),
                        self.num_params
                    ))
                })
                .collect();
        }
        let mut groups: BTreeMap<(usize, usize, usize), Vec<usize>> = BTreeMap::new();
        for (i, img) in images.iter().enumerate() {
            groups.entry((img.channels, img.height, img.width)).or_default().push(i);
        }
        let mut out: Vec<Option<RunResult<Image>>> = images.iter().map(|_| None).collect();
        for ((c, h, w), members) in groups {
            let per = (c * h * w).max(1);
            for chunk in members.chunks((MAX_GROUP_VALUES / per).max(1)) {
                for (&i, r) in chunk.iter().zip(self.warp_group(images, thetas, chunk, [c, h, w])) {
                    out[i] = Some(r);
                }
            }
        }
        out.into_iter().map(|r| r.expect("every image is in a group")).collect()
    }

    fn warp_group(
        &self,
        images: &[&Image],
        thetas: &[Vec<f32>],
        members: &[usize],
        [c, h, w]: [usize; 3],
    ) -> Vec<RunResult<Image>> {
        let n = members.len();
        let size = self.output_size(h, w);
        let mut data = Vec::with_capacity(n * c * h * w);
        let mut params = Vec::with_capacity(n * self.num_params);
        for &i in members {
            data.extend_from_slice(&images[i].data);
            params.extend_from_slice(&thetas[i]);
        }
        let t = &self.transformer;
        let x = Tensor::<4>::from_data(TensorData::new(data, [n, c, h, w]), &self.device);
        let p = Tensor::<2>::from_data(TensorData::new(params, [n, self.num_params]), &self.device);
        let warped =
            t.transform().warp(x, p, &size, t.sample_options()).map_err(|e| e.to_string()).and_then(|y| {
                y.into_data().convert::<f32>().try_into_vec::<f32>().map_err(|e| format!("{e:?}"))
            });
        match warped {
            Ok(all) => all
                .chunks(c * size[0] * size[1])
                .map(|d| Ok(Image { data: d.to_vec(), channels: c, height: size[0], width: size[1] }))
                .collect(),
            Err(e) => members.iter().map(|_| Err(e.clone())).collect(),
        }
    }
}
