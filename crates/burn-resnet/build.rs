//! Tells the integration tests whether the workspace's files are there. A published package
//! holds this crate alone: the fixtures (`tests/fixtures/`, 27 MB of mmdet outputs and
//! checkpoints) and the shipped configs stay in the repository, and the tests that read them
//! are compiled out of a package build (`cfg(no_workspace_files)`). In a checkout the cfg is
//! never set, so a missing fixture fails its test loudly.

use std::path::Path;

fn main() {
    println!("cargo::rustc-check-cfg=cfg(no_workspace_files)");
    println!("cargo::rerun-if-changed=build.rs");
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let manifest_dir = Path::new(&manifest_dir);
    // `cargo package` keeps the original manifest as Cargo.toml.orig; a checkout has none.
    let packaged = manifest_dir.join("Cargo.toml.orig").exists();
    let workspace_files = manifest_dir.join("../../tests/fixtures").is_dir()
        && manifest_dir.join("../../configs").is_dir();
    if packaged && !workspace_files {
        println!("cargo::rustc-cfg=no_workspace_files");
    }
}
