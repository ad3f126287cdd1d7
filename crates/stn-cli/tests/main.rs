//! The integration tests of `stn-cli`, one binary (a change relinks one test program, not one per file).

mod cli;
mod crypto;
mod delta;
mod digest;
mod explain;
mod hostile;
mod kill;
mod models;
mod s3;
mod tour;
