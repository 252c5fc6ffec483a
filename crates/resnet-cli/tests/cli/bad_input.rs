//! Bad arguments and files: clear errors, never a panic.

use super::*;

#[test]
fn bad_input_gets_a_clear_error() {
    let cases: [(&[&str], &str); 6] = [
        (
            &[
                "extract",
                "--config",
                "configs/resnet18.toml",
                "--image",
                "missing.png",
            ],
            "image missing.png",
        ),
        (
            &[
                "extract",
                "--config",
                "configs/resnet18.toml",
                "--image",
                "configs/resnet18.toml",
            ],
            "not a decodable",
        ),
        (
            &[
                "extract",
                "--config",
                "configs/resnet18.toml",
                "--backend",
                "tpu",
            ],
            "invalid value 'tpu' for '--backend <BACKEND>'\n  [possible values: flex, ndarray, wgpu, cuda]",
        ),
        (
            &["info", "--config", "configs/nope.toml"],
            "configs/nope.toml",
        ),
        (
            &[
                "info",
                "--config",
                "configs/resnet18.toml",
                "--input",
                "0x3",
            ],
            "not a size",
        ),
        (
            &[
                "extract",
                "--config",
                "configs/resnet50.toml",
                "--weights",
                "tests/fixtures/parity/resnet18.weights.safetensors",
            ],
            "do not match",
        ),
    ];
    for (args, expected) in cases {
        let err = stderr_of_failure(&resnet(args));
        assert!(
            err.contains(expected),
            "{args:?}: expected '{expected}' in: {err}"
        );
    }
}
