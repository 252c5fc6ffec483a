//! Sizes that cannot fit, damaged pictures and inputs `extract` cannot make (issue 13, items 4
//! and 7): each a clean error (exit status 1) before anything is allocated or written.

use super::{resnet, stderr_of_failure, stdout};

fn scratch(test: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("resnet-cli-{test}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn failure_code(args: &[&str]) -> (Option<i32>, String) {
    let output = resnet(args);
    let err = stderr_of_failure(&output);
    (output.status.code(), err)
}

#[test]
fn sizes_that_cannot_fit_fail_cleanly_with_the_estimate() {
    let (code, err) = failure_code(&[
        "extract",
        "--config",
        "configs/resnet18.toml",
        "--size",
        "99999x99999",
    ]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("extract at 99999x99999 needs an estimated") && err.contains("--memory-limit"),
        "{err}"
    );
    let (code, err) = failure_code(&[
        "extract",
        "--config",
        "configs/resnet18.toml",
        "--size",
        "4294967296x1",
    ]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("--size: 4294967296"), "{err}");
    let err = stderr_of_failure(&resnet(&[
        "info",
        "--config",
        "configs/resnet50.toml",
        "--input",
        "4294967296",
    ]));
    assert!(
        err.contains("input 4294967296x4294967296") && err.contains("overflows"),
        "{err}"
    );
    // A limit the user sets: too small refuses, a bad one is named.
    let err = stderr_of_failure(&resnet(&[
        "extract",
        "--config",
        "configs/resnet18.toml",
        "--memory-limit",
        "1MiB",
    ]));
    assert!(
        err.contains("memory limit of 1.00 MiB (--memory-limit = 1MiB)"),
        "{err}"
    );
    let err = stderr_of_failure(&resnet(&[
        "info",
        "--config",
        "configs/resnet18.toml",
        "--memory-limit",
        "lots",
    ]));
    assert!(
        err.contains("--memory-limit: 'lots' is not a memory size"),
        "{err}"
    );
    // The environment variable sets it too (the library's default), below the flag.
    let with_env = |value: &str, args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_resnet"))
            .args(args)
            .env("RESNET_MEMORY_LIMIT", value)
            .current_dir(super::repo())
            .output()
            .unwrap()
    };
    let err = stderr_of_failure(&with_env(
        "1MiB",
        &["extract", "--config", "configs/resnet18.toml"],
    ));
    assert!(err.contains("(RESNET_MEMORY_LIMIT = 1MiB)"), "{err}");
    let err = stderr_of_failure(&with_env(
        "-3",
        &["info", "--config", "configs/resnet18.toml"],
    ));
    assert!(
        err.contains("RESNET_MEMORY_LIMIT: '-3' is not a memory size"),
        "{err}"
    );
    stdout(&with_env(
        "1MiB",
        &[
            "info",
            "--config",
            "configs/resnet18.toml",
            "--memory-limit",
            "none",
        ],
    ));
    let out = stdout(&resnet(&[
        "info",
        "--config",
        "configs/resnet50.toml",
        "--memory-limit",
        "100MiB",
    ]));
    assert!(
        out.contains("estimated memory, training at batch 1")
            && out.contains("over the limit of 100 MiB"),
        "{out}"
    );
}

#[test]
fn configs_whose_figures_overflow_or_do_not_fit_name_the_field() {
    let dir = scratch("huge-configs");
    // Overflows fail everywhere; configs that only need too much memory fail where they would
    // allocate (`info` prints the estimate over the limit instead).
    for (extra, expected) in [
        (
            "base_channels = 4611686018427387904",
            "base_channels: layer1's output channels",
        ),
        ("base_channels = 1000000000", "base_channels: "),
        (
            "[[plugins]]\nposition = \"after_conv3\"\ncfg = { type = \"SE\", rd_ratio = 1e15 }",
            "plugins: ",
        ),
        ("groups = 1000000", "needs an estimated"),
        (
            "[[plugins]]\nposition = \"after_conv2\"\ncfg = { type = \"GeneralizedAttention\", position_embedding_dim = 4000000000 }",
            "needs an estimated",
        ),
    ] {
        let path = dir.join("huge.toml");
        std::fs::write(&path, format!("depth = 50\n{extra}\n")).unwrap();
        let out = dir.join("out.bpk");
        let commands: &[&[&str]] = &[
            &["info"],
            &["extract", "--size", "64"],
            &[
                "convert",
                "tests/fixtures/checkpoints/torchvision_resnet18.pth",
                out.to_str().unwrap(),
            ],
        ];
        for command in commands {
            let args: Vec<&str> = command
                .iter()
                .copied()
                .chain(["--config", path.to_str().unwrap()])
                .collect();
            let output = resnet(&args);
            if command[0] == "info" && expected.contains("estimated") {
                assert!(stdout(&output).contains("over the limit"), "{extra}");
                continue;
            }
            let err = stderr_of_failure(&output);
            assert_eq!(output.status.code(), Some(1), "{command:?} {extra}: {err}");
            assert!(err.contains(expected), "{command:?} {extra}: {err}");
        }
        assert!(!out.exists());
    }
    let err = stderr_of_failure(&resnet(&[
        "convert",
        "--config",
        "configs/resnet18.toml",
        "--to",
        "onnx",
        "tests/fixtures/checkpoints/torchvision_resnet18.pth",
        dir.join("o").to_str().unwrap(),
    ]));
    assert!(
        err.contains("invalid value 'onnx' for '--to <TO>'")
            && err.contains("[possible values: burnpack, mmdet, torchvision, timm]"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn train_refuses_sizes_that_cannot_fit_before_writing_anything() {
    let dir = scratch("train-sizes");
    let backbone = "[backbone]\ndepth = 18\nbase_channels = 4\n";
    let neck = "task = \"detect\"\n[neck]\nout_channels = 1000000000\nnum_outs = 5\n";
    for (settings, expected) in [
        ("image_size = 100000\nbatch_size = 4", "needs an estimated"),
        (
            "image_size = 32\nbatch_size = 1000000000",
            "needs an estimated",
        ),
        (
            "image_size = 32\nbatch_size = 1000000000000000",
            "batch 1000000000000000: the memory estimate overflows",
        ),
        (
            "image_size = 18446744073709551615\nbatch_size = 4",
            "overflows",
        ),
    ] {
        let path = dir.join("huge.toml");
        std::fs::write(&path, format!("{settings}\ntrain_images = 8\nvalid_images = 8\nepochs = 1\nlearning_rate = 0.1\n{backbone}")).unwrap();
        let err = stderr_of_failure(&resnet(&[
            "train",
            "--config",
            path.to_str().unwrap(),
            "--out",
            dir.join("run").to_str().unwrap(),
        ]));
        assert!(err.contains(expected), "{settings}: {err}");
        assert!(
            !dir.join("run").exists(),
            "{settings}: a run directory was made"
        );
    }
    let path = dir.join("neck.toml");
    std::fs::write(&path, format!("image_size = 64\nbatch_size = 2\ntrain_images = 8\nvalid_images = 8\nepochs = 1\nlearning_rate = 0.1\n{neck}{backbone}")).unwrap();
    let err = stderr_of_failure(&resnet(&[
        "train",
        "--config",
        path.to_str().unwrap(),
        "--out",
        dir.join("run").to_str().unwrap(),
    ]));
    assert!(
        err.contains("needs an estimated") || err.contains("neck.out_channels"),
        "{err}"
    );
    assert!(!dir.join("run").exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_truncated_jpeg_is_refused_and_a_whole_one_decodes() {
    let dir = scratch("jpeg");
    let picture = image::load_from_memory(
        &std::fs::read(super::repo().join("crates/resnet-cli/assets/sample.png")).unwrap(),
    )
    .unwrap();
    let whole = dir.join("whole.jpg");
    picture
        .to_rgb8()
        .save_with_format(&whole, image::ImageFormat::Jpeg)
        .unwrap();
    let bytes = std::fs::read(&whole).unwrap();
    let cut = dir.join("cut.jpg");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    stdout(&resnet(&[
        "extract",
        "--config",
        "configs/resnet18.toml",
        "--image",
        whole.to_str().unwrap(),
        "--size",
        "32",
    ]));
    let err = stderr_of_failure(&resnet(&[
        "extract",
        "--config",
        "configs/resnet18.toml",
        "--image",
        cut.to_str().unwrap(),
        "--size",
        "32",
    ]));
    assert!(
        err.contains("cut.jpg") && err.contains("truncated"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn extract_names_in_channels_it_cannot_feed() {
    let dir = scratch("in-channels");
    let path = dir.join("four.toml");
    std::fs::write(&path, "depth = 18\nbase_channels = 4\nin_channels = 4\n").unwrap();
    let err = stderr_of_failure(&resnet(&[
        "extract",
        "--config",
        path.to_str().unwrap(),
        "--size",
        "32",
    ]));
    assert!(
        err.contains("in_channels: ") && err.contains("4 channels") && err.contains("try_forward"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
