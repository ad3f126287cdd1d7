//! The integration tests of `stn-models`, one binary (a change relinks one test program, not one per file).

mod gpu_train;
mod rectify;
mod torch;
