//! The `resnet` command, run as a user would, from the workspace root (the shipped configs and
//! the fixtures are the workspace's: a published package's build leaves these tests out,
//! build.rs).

use std::path::PathBuf;
use std::process::{Command, Output};

#[cfg(not(no_workspace_files))]
mod bad_input;
#[cfg(not(no_workspace_files))]
mod bad_sizes;
#[cfg(not(no_workspace_files))]
mod bench;
#[cfg(not(no_workspace_files))]
mod convert;
#[cfg(not(no_workspace_files))]
mod evaluate;
#[cfg(not(no_workspace_files))]
mod export_shapes;
#[cfg(not(no_workspace_files))]
mod extract;
#[cfg(not(no_workspace_files))]
mod info;
#[cfg(not(no_workspace_files))]
mod multi_device;
#[cfg(not(no_workspace_files))]
mod train;
#[cfg(not(no_workspace_files))]
mod train_from_disk;
#[cfg(not(no_workspace_files))]
mod writes;

#[cfg_attr(no_workspace_files, allow(dead_code))]
fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[cfg_attr(no_workspace_files, allow(dead_code))]
fn resnet(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_resnet"))
        .args(args)
        .current_dir(repo())
        .output()
        .expect("run resnet")
}

/// `resnet train --config CONFIG --out OUT EXTRA…`.
#[cfg_attr(no_workspace_files, allow(dead_code))]
fn train(config: &std::path::Path, out: &std::path::Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "train",
        "--config",
        config.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    resnet(&args)
}

#[cfg_attr(no_workspace_files, allow(dead_code))]
fn stdout(output: &Output) -> String {
    assert!(
        output.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[cfg_attr(no_workspace_files, allow(dead_code))]
fn stderr_of_failure(output: &Output) -> String {
    assert!(
        !output.status.success(),
        "should fail: {}",
        String::from_utf8_lossy(&output.stdout)
    );
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// What a published package's test run leaves out, said where `cargo test` shows it.
#[cfg(no_workspace_files)]
#[test]
#[ignore = "the command's tests read the repository's configs and fixtures: run them there"]
fn command_tests_run_in_the_repository() {}
