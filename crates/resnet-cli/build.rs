//! Tells the command's tests whether the workspace's files are there: as in burn-resnet's
//! build.rs, a published package leaves out the tests that read the repository's configs and
//! fixtures (`cfg(no_workspace_files)`); in a checkout they always run.

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
