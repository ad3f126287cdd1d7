//! # stn-models: the models, runs and rectification core of stn
//!
//! [`models`]: the paper's distorted-MNIST baselines (FCN, CNN) and their spatial-transformer
//! versions (ST-FCN, ST-CNN with any [`stn::Transform`]), sized for a CPU, and the PyTorch
//! spatial-transformer tutorial's ST-CNN exactly, so the two can be compared step for step.
//! [`run`]: training and evaluation runs (data, loop, metrics, checkpoints). [`rectify`]: the
//! rectification core, a trained transformer applied to batches of images of any size; image
//! files (`stn rectify`), image tables (`stn-table`), SQL (`stn-sql`) and the cluster all call it.
//! [`torch`]: PyTorch-trained weights of the tutorial's network imported.
//!
//! ```no_run
//! use stn_models::rectify::Rectifier;
//! use stn_data::Image;
//!
//! let rectifier = Rectifier::from_run(std::path::Path::new("runs/rts-st"))?;
//! let scan = Image::load_native(std::path::Path::new("scan.png")).map_err(|e| e.to_string())?;
//! let out = rectifier.rectify(&[&scan]).remove(0)?;       // full resolution, all channels
//! println!("theta {:?}, {} x {}", out.theta, out.image.height, out.image.width);
//! # Ok::<(), String>(())
//! ```
#![warn(missing_docs)]

pub mod models;
pub mod rectify;
pub mod run;
pub mod torch;
