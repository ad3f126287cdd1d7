//! The integration tests of `stn-kernels`, one binary (a change relinks one test program, not one per file).

mod common;
mod determinism;
mod errors;
mod golden;
mod gradcheck;
mod nan;
mod properties;
