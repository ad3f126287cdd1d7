//! Nothing to use: this crate only asks Cargo for the same features of shared dependencies in
//! every build of the workspace, so that a build with the `gpu` feature and one without it
//! (or `-p X` and `--workspace`) compile each of those dependencies once. See its Cargo.toml.
#![no_std]
