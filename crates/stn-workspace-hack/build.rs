//! Empty: Cargo resolves a crate's [build-dependencies] only when it has a build script, and the
//! pins there are for the workspace's build scripts and proc macros.
fn main() {}
