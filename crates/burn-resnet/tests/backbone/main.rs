//! Integration tests of burn-resnet. One test binary (so burn links once); each module is a
//! topic, and every test runs on each CPU backend compiled in. The modules that read the
//! workspace's fixtures or configs are left out of a published package's build (build.rs).

#[cfg_attr(no_workspace_files, allow(dead_code))]
mod common;

#[cfg(not(no_workspace_files))]
mod backends;
#[cfg(not(no_workspace_files))]
mod checkpoints;
mod config_errors;
#[cfg(not(no_workspace_files))]
mod configs;
#[cfg(not(no_workspace_files))]
mod dcn;
#[cfg(not(no_workspace_files))]
mod export;
mod fold;
#[cfg(not(no_workspace_files))]
mod fpn;
#[cfg(not(no_workspace_files))]
mod generalized_attention;
mod gradients;
#[cfg(not(no_workspace_files))]
mod group_norm;
#[cfg(not(no_workspace_files))]
mod init;
#[cfg(not(no_workspace_files))]
mod non_finite;
mod param_groups;
#[cfg(not(no_workspace_files))]
mod parity;
#[cfg(not(no_workspace_files))]
mod plugin_parity;
#[cfg(not(no_workspace_files))]
mod plugins;
#[cfg(not(no_workspace_files))]
mod properties;
mod resnest;
mod sizes;
#[cfg(not(no_workspace_files))]
mod summary;
#[cfg(not(no_workspace_files))]
mod training_controls;
#[cfg(all(feature = "flex", not(no_workspace_files)))]
mod training_kernels;
#[cfg(not(no_workspace_files))]
mod training_parity;
#[cfg(not(no_workspace_files))]
mod weights;
mod with_cp;

/// What a published package's test run leaves out, said where `cargo test` shows it.
#[cfg(no_workspace_files)]
#[test]
#[ignore = "the mmdet fixtures and configs are in the repository, not the package: \
            run the tests there for parity, weights, plugins, FPN and training"]
fn tests_reading_the_fixtures_run_in_the_repository() {}
