//! The integration tests of `stn`, one binary (a change relinks one test program, not one per file).

mod augment;
mod common;
mod conv;
mod explain;
mod families;
mod gpu;
mod learning;
mod ops;
mod repro;
mod transformer;
