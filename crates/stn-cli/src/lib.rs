//! # stn-cli: the models of the `stn` program
//!
//! [`models`]: the paper's distorted-MNIST baselines (FCN, CNN) and their spatial-transformer
//! versions (ST-FCN, ST-CNN with any [`stn::Transform`]), sized for a CPU, and the PyTorch
//! spatial-transformer tutorial's ST-CNN exactly (`../shared/peer/bench_stcnn.py`), so the two
//! can be compared step for step. [`run`]: training and evaluation runs (data, loop,
//! metrics, checkpoints). [`viz`]: the paper's figure and training curves. [`demo`]: `stn demo`.
//! [`rectify`]: a trained transformer applied to image files of any size. [`bench`](mod@bench): `stn bench`.
#![warn(missing_docs)]

pub mod bench;
pub mod demo;
pub mod models;
pub mod rectify;
pub mod run;
pub mod viz;
