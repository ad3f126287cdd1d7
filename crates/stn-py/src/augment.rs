//! `stn_rs.augment`: the seeded augmentation of `stn augment` on an in-memory batch. The Python
//! side (`stn_rs/augment.py`) brings images of any layout and dtype to a float32 NCHW batch in
//! [0, 1] (and back), masks to float32 NCHW, keypoints to lists; here the spec is parsed, each
//! sample's warp drawn from its key (seed, epoch, index: as `stn augment`'s copy `epoch` of
//! image `index`) and applied to the images, the masks and the points by the `stn` crate.

use burn::tensor::{Device, Tensor, TensorData};
use pyo3::buffer::PyBuffer;
use pyo3::prelude::*;
use stn::augment::{map_keypoints, warp_mask, Augment, Key};

use crate::kernels::{elements, to_buffer, Raw};
use crate::value_error;

/// What one call returns: images, masks (if given), keypoints (if given), each sample's warp
/// as JSON (the `warp` of `augment.jsonl`).
type Augmented<'py> = (Raw<'py>, Option<Raw<'py>>, Option<Vec<Vec<[f64; 2]>>>, Vec<String>);

fn batch(data: &[f32], shape: &[usize], name: &str) -> PyResult<Tensor<4>> {
    let &[n, c, h, w] = shape else {
        return Err(value_error(format!("{name}: a batch (N, C, H, W), not shape {shape:?}")));
    };
    Ok(Tensor::<4>::from_data(TensorData::new(data.to_vec(), [n, c, h, w]), &Device::flex()))
}

fn host(t: Tensor<4>, name: &str) -> Result<(Vec<f32>, Vec<usize>), String> {
    let dims = t.dims().to_vec();
    let data = t.into_data().convert::<f32>().try_into_vec::<f32>().map_err(|e| format!("{name}: {e:?}"))?;
    Ok((data, dims))
}

/// Augments `images` (float32 N, C, H, W, C-contiguous) with `spec`; sample i's warp is drawn
/// from `Key(seed, epoch, indices[i])` (default index i).
#[pyfunction]
#[pyo3(name = "_augment", signature = (images, spec, seed, epoch, indices=None, masks=None, mask_fill=0.0, keypoints=None))]
#[allow(clippy::too_many_arguments)]
pub(crate) fn augment_batch<'py>(
    py: Python<'py>,
    images: &Bound<'py, PyAny>,
    spec: &str,
    seed: u64,
    epoch: u64,
    indices: Option<Vec<u64>>,
    masks: Option<&Bound<'py, PyAny>>,
    mask_fill: f64,
    keypoints: Option<Vec<Vec<[f64; 2]>>>,
) -> PyResult<Augmented<'py>> {
    let aug = Augment::parse(spec).map_err(value_error)?;
    let images = PyBuffer::<f32>::get(images)?;
    let masks = masks.map(PyBuffer::<f32>::get).transpose()?;
    let image_data = elements(&images, "images")?;
    let mask_data = masks.as_ref().map(|m| elements(m, "masks")).transpose()?;
    let x = batch(image_data, images.shape(), "images")?;
    let [n, _, h, w] = x.dims();
    let indices = indices.unwrap_or_else(|| (0..n as u64).collect());
    if indices.len() != n {
        return Err(value_error(format!("indices: {} for a batch of {n}", indices.len())));
    }
    let m = match (&masks, mask_data) {
        (Some(buf), Some(data)) => {
            let m = batch(data, buf.shape(), "masks")?;
            let [mn, _, mh, mw] = m.dims();
            if (mn, mh, mw) != (n, h, w) {
                return Err(value_error(format!(
                    "masks: shape {:?}, the images are {n} x {h} x {w}",
                    buf.shape()
                )));
            }
            Some(m)
        }
        _ => None,
    };
    if let Some(k) = &keypoints {
        if k.len() != n {
            return Err(value_error(format!("keypoints: {} samples for a batch of {n}", k.len())));
        }
    }
    let keys: Vec<Key> = indices.iter().map(|&i| Key::new(seed, epoch, i)).collect();
    #[allow(clippy::type_complexity)]
    let done: Result<
        ((Vec<f32>, Vec<usize>), Option<(Vec<f32>, Vec<usize>)>, Option<Vec<Vec<[f64; 2]>>>, Vec<String>),
        String,
    > = py.detach(|| {
        let out = aug.forward(x, &keys).map_err(|e| e.to_string())?;
        let masks = m
            .map(|m| {
                let warped = warp_mask(m, &out.warps, aug.options(), mask_fill).map_err(|e| e.to_string())?;
                host(warped, "masks")
            })
            .transpose()?;
        let points = keypoints
            .map(|k| {
                map_keypoints(&out.warps, &k, [h, w], [h, w], aug.options().align_corners)
                    .map_err(|e| e.to_string())
            })
            .transpose()?;
        let warps = out
            .warps
            .iter()
            .map(|w| serde_json::to_string(w).map_err(|e| e.to_string()))
            .collect::<Result<Vec<_>, _>>()?;
        Ok((host(out.image, "images")?, masks, points, warps))
    });
    let ((data, shape), masks, points, warps) = done.map_err(value_error)?;
    let masks = match masks {
        Some((d, s)) => Some((to_buffer(py, d)?, s)),
        None => None,
    };
    Ok(((to_buffer(py, data)?, shape), masks, points, warps))
}
