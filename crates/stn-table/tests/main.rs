//! The integration tests of `stn-table`, one binary (a change relinks one test program, not one per file).

mod augment;
mod common;
mod delta;
mod fuzz;
mod hostile;
mod readback;
mod reference;
mod tables;
