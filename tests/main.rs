//! Integration tests of burn-resnet. One test binary (so burn links once); each module is a
//! topic, and every test runs on each CPU backend compiled in.

mod common;

mod backends;
mod checkpoints;
mod config_errors;
mod configs;
mod dcn;
mod export;
mod fpn;
mod generalized_attention;
mod gradients;
mod group_norm;
mod init;
mod non_finite;
mod parity;
mod plugins;
mod properties;
mod sizes;
mod summary;
mod training_controls;
mod training_parity;
mod weights;
