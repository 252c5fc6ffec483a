//! The `resnet` command, run as a user would.

use std::path::PathBuf;
use std::process::{Command, Output};

#[path = "cli/bad_sizes.rs"]
mod bad_sizes;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn resnet(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_resnet"))
        .args(args)
        .current_dir(repo())
        .output()
        .expect("run resnet")
}

fn stdout(output: &Output) -> String {
    assert!(
        output.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr_of_failure(output: &Output) -> String {
    assert!(
        !output.status.success(),
        "should fail: {}",
        String::from_utf8_lossy(&output.stdout)
    );
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn info_reports_resnet50_as_torchvision_does() {
    let out = stdout(&resnet(&["info", "--config", "configs/resnet50.toml"]));
    assert!(out.contains("total: 23,508,032 params"), "{out}");
    assert!(out.contains("4.087 GMACs"), "{out}");
    assert!(out.contains("matches torchvision's resnet50"), "{out}");
    for row in [
        "layer1        3      256      4       56x56",
        "layer4        3     2048     32         7x7",
    ] {
        assert!(out.contains(row), "missing '{row}' in\n{out}");
    }
}

/// mmdet's GCNet ResNet-50 has 26,029,773 parameters (its `sum(p.numel())`), not ResNet-50's;
/// neither it nor a GroupNorm ResNet-50 (same count as torchvision's) is torchvision's network.
#[test]
fn info_counts_plugins_and_names_torchvision_only_for_its_architecture() {
    let out = stdout(&resnet(&[
        "info",
        "--config",
        "configs/resnet50_gcb_r16.toml",
    ]));
    assert!(out.contains("total: 26,029,773 params"), "{out}");
    assert!(out.contains("of which plugins: 2,521,741 params"), "{out}");
    assert!(
        out.contains("with ContextBlock context_block after_conv3 (13 blocks)"),
        "{out}"
    );
    assert!(!out.contains("torchvision"), "{out}");
    let gn = std::env::temp_dir().join(format!("resnet-cli-gn-{}.toml", std::process::id()));
    std::fs::write(
        &gn,
        "depth = 50\nnorm_cfg = { type = \"GN\", num_groups = 32 }\n",
    )
    .unwrap();
    let out = stdout(&resnet(&["info", "--config", gn.to_str().unwrap()]));
    std::fs::remove_file(&gn).unwrap();
    assert!(
        out.contains("total: 23,508,032 params") && !out.contains("torchvision"),
        "{out}"
    );
}

#[test]
fn info_follows_the_input_size() {
    let out = stdout(&resnet(&[
        "info",
        "--config",
        "configs/resnet50_dilated.toml",
        "--input",
        "65x97",
    ]));
    assert!(
        out.contains("layer4        3     2048      8        9x13"),
        "{out}"
    );
}

#[test]
fn extract_writes_every_output_to_safetensors() {
    let file = std::env::temp_dir().join(format!(
        "resnet-cli-test-{}.safetensors",
        std::process::id()
    ));
    let out = stdout(&resnet(&[
        "extract",
        "--config",
        "configs/resnet18.toml",
        "--size",
        "64x96",
        "--out",
        file.to_str().unwrap(),
    ]));
    assert!(
        out.contains("bundled sample (64x96, RGB, ImageNet mean/std)"),
        "{out}"
    );
    assert!(out.contains("[1, 512, 2, 3]"), "{out}");
    let bytes = std::fs::read(&file).unwrap();
    std::fs::remove_file(&file).unwrap();
    let tensors = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut shapes: Vec<_> = tensors
        .tensors()
        .into_iter()
        .map(|(name, view)| (name, view.shape().to_vec()))
        .collect();
    shapes.sort();
    assert_eq!(
        shapes,
        [
            ("C2".to_string(), vec![1, 64, 16, 24]),
            ("C3".into(), vec![1, 128, 8, 12]),
            ("C4".into(), vec![1, 256, 4, 6]),
            ("C5".into(), vec![1, 512, 2, 3]),
            ("input".into(), vec![1, 3, 64, 96]),
        ]
    );
}

#[test]
fn extract_reads_an_image_file_and_loads_mmdet_weights() {
    let out = stdout(&resnet(&[
        "extract",
        "--config",
        "tests/fixtures/parity/resnet18.toml",
        "--weights",
        "tests/fixtures/parity/resnet18.weights.safetensors",
        "--image",
        "crates/resnet-cli/assets/sample.png",
        "--size",
        "32",
    ]));
    assert!(
        out.contains(
            "weights: tests/fixtures/parity/resnet18.weights.safetensors (mmdet names, detected"
        ),
        "{out}"
    );
    assert!(out.contains("[1, 64, 1, 1]"), "{out}");
}

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
            "invalid value 'tpu' for '--backend <BACKEND>'\n  [possible values: flex, ndarray, wgpu]",
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

#[test]
fn bench_times_inference_and_a_training_step() {
    let out = stdout(&resnet(&[
        "bench",
        "--config",
        "tests/fixtures/parity/resnet18_train.toml",
        "--cases",
        "infer b1,train b2",
        "--size",
        "32",
        "--warmup",
        "1",
        "--runs",
        "2",
    ]));
    for case in ["flex     infer b1", "flex     train b2"] {
        assert!(out.contains(case), "missing '{case}' in\n{out}");
    }
    let err = stderr_of_failure(&resnet(&["bench", "--cases", "infer 1x"]));
    assert!(err.contains("'infer 1x' is not a case"), "{err}");
}

/// A stand-in for `python3 bench/torch_baseline.py`: prints a model line with `params` and
/// `unmirrored`, then one timing, whatever it is asked (CI has no PyTorch). It also saves the
/// config it was given, to check that the baseline gets the same config.
fn fake_python(dir: &std::path::Path, params: usize, unmirrored: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let script = dir.join(format!("python-{params}"));
    let config_copy = dir.join("config-seen.toml");
    let text = format!(
        "#!/bin/sh\nwhile [ $# -gt 0 ]; do [ \"$1\" = --config ] && cp \"$2\" {config}; shift; done\n\
         echo '{{\"model\": {{\"builder\": \"fake\", \"params\": {params}, \"unmirrored\": [{unmirrored}]}}}}'\n\
         echo '{{\"case\": \"infer b1\", \"median_ms\": 1000.0, \"min_ms\": 1.0, \"max_ms\": 1.0, \"images_per_s\": 1.0, \"peak_mib\": 1.0}}'\n",
        config = config_copy.display()
    );
    std::fs::write(&script, text).unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    script
}

/// `bench --torch` prints a ratio only when the baseline has this config's architecture: its
/// parameter count equal to the project's own, nothing it could not mirror.
#[test]
fn bench_prints_a_ratio_only_against_the_same_network() {
    let dir = std::env::temp_dir().join(format!("resnet-cli-fake-python-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = "tests/fixtures/parity/resnet18_train.toml";
    let spec = burn_resnet::ResNetConfig::from_toml_file(repo().join(config))
        .unwrap()
        .validate()
        .unwrap();
    let ours = burn_resnet::ModelSummary::new(&spec, 32, 32)
        .unwrap()
        .total_params();
    let bench = |python: &PathBuf| {
        stdout(&resnet(&[
            "bench",
            "--config",
            config,
            "--cases",
            "infer b1",
            "--size",
            "32",
            "--warmup",
            "0",
            "--runs",
            "1",
            "--torch",
            python.to_str().unwrap(),
        ]))
    };
    let same = bench(&fake_python(&dir, ours, ""));
    let ratio = |out: &str| {
        out.lines()
            .find(|l| l.starts_with("flex     infer b1"))
            .unwrap()
            .split_whitespace()
            .last()
            .unwrap()
            .to_string()
    };
    assert!(
        same.contains("the same as this config's") && ratio(&same).ends_with('x'),
        "{same}"
    );
    let seen = std::fs::read_to_string(dir.join("config-seen.toml")).unwrap();
    assert_eq!(
        burn_resnet::ResNetConfig::from_toml_str(&seen, "seen").unwrap(),
        spec.config,
        "the baseline's config"
    );
    for (params, unmirrored, why) in [
        (ours + 1, "", "parameters"),
        (ours, "\"spatial_range\"", "cannot mirror spatial_range"),
    ] {
        let out = bench(&fake_python(&dir, params, unmirrored));
        assert!(
            out.contains("is not this network") && out.contains(why),
            "{out}"
        );
        assert_eq!(ratio(&out), "-", "a ratio against another network: {out}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn extract_loads_a_timm_checkpoint_and_reports_what_it_skipped() {
    let out = stdout(&resnet(&[
        "extract",
        "--config",
        "tests/fixtures/checkpoints/timm_resnet18d.toml",
        "--weights",
        "tests/fixtures/checkpoints/timm_resnet18d.pth",
        "--size",
        "64",
    ]));
    assert!(
        out.contains("(timm names, detected; 2 non-backbone tensors skipped: fc."),
        "{out}"
    );
    assert!(out.contains("C1"), "{out}");
    let err = stderr_of_failure(&resnet(&[
        "extract",
        "--config",
        "tests/fixtures/checkpoints/timm_resnet18d.toml",
        "--weights",
        "tests/fixtures/checkpoints/timm_resnet18d.pth",
        "--weights-source",
        "caffe2",
    ]));
    assert!(
        err.contains("invalid value 'caffe2'")
            && err.contains("[possible values: mmdet, torchvision, timm]"),
        "{err}"
    );
}

#[test]
fn convert_rewrites_a_timm_checkpoint_under_mmdet_names_and_to_burnpack() {
    let out = std::env::temp_dir().join(format!(
        "resnet-cli-convert-{}.safetensors",
        std::process::id()
    ));
    let args = |to: &str, out: &str| {
        vec![
            "convert".to_string(),
            "--config".into(),
            "tests/fixtures/checkpoints/timm_resnet18d.toml".into(),
            "tests/fixtures/checkpoints/timm_resnet18d.pth".into(),
            out.to_string(),
            "--to".into(),
            to.to_string(),
        ]
    };
    let text = stdout(&resnet(
        &args("mmdet", out.to_str().unwrap())
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    ));
    assert!(text.contains("(timm names) ->"), "{text}");
    let bytes = std::fs::read(&out).unwrap();
    let names: Vec<String> = safetensors::SafeTensors::deserialize(&bytes)
        .unwrap()
        .names()
        .into_iter()
        .map(str::to_string)
        .collect();
    assert!(
        names.iter().any(|n| n == "stem.0.weight")
            && names.iter().any(|n| n == "layer2.0.downsample.1.weight"),
        "{names:?}"
    );
    std::fs::remove_file(&out).unwrap();
    let err = stderr_of_failure(&resnet(
        &args("torchvision", out.to_str().unwrap())
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    ));
    assert!(err.contains("no deep stem"), "{err}");
}

#[test]
fn caffe_style_configs_get_caffe_preprocessing() {
    let out = stdout(&resnet(&[
        "extract",
        "--config",
        "tests/fixtures/parity/resnet50_caffe.toml",
        "--size",
        "32",
    ]));
    assert!(out.contains("BGR, Caffe means, std 1"), "{out}");
}

/// A training config small enough for a test: a ResNet-18 at width 8 on 48x48 shapes, 64
/// steps (fast BatchNorm statistics, so that eval mode is meaningful that early).
fn tiny_train_config(dir: &std::path::Path) -> PathBuf {
    let path = dir.join("tiny.toml");
    let text = "image_size = 48\ntrain_images = 512\nvalid_images = 64\nbatch_size = 16\nepochs = 2\n\
                learning_rate = 0.05\n[backbone]\ndepth = 18\nbase_channels = 8\nzero_init_residual = false\n\
                [backbone.norm_cfg]\ntype = \"BN\"\nmomentum = 0.5\n";
    std::fs::write(&path, text).unwrap();
    path
}

/// `validation <when>: accuracy …, loss L, …` → L.
fn validation_loss(out: &str, when: &str) -> f64 {
    let line = out
        .lines()
        .find(|l| l.starts_with(&format!("validation {when}:")))
        .unwrap_or_else(|| panic!("no '{when}' line in\n{out}"));
    line.split("loss ")
        .nth(1)
        .unwrap()
        .split(',')
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn train_lowers_the_validation_loss_and_resumes_exactly_where_it_stopped() {
    let dir = std::env::temp_dir().join(format!("resnet-train-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = tiny_train_config(&dir);
    let run = |out: &str, extra: &[&str]| {
        let out_dir = dir.join(out);
        let mut args = vec![
            "train",
            "--config",
            config.to_str().unwrap(),
            "--out",
            out_dir.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        resnet(&args)
    };

    // Uninterrupted: two epochs.
    let straight = stdout(&run("straight", &[]));
    let (before, after) = (
        validation_loss(&straight, "before training"),
        validation_loss(&straight, "after training"),
    );
    assert!(
        after < before,
        "validation loss did not decrease: {before} -> {after}\n{straight}"
    );
    assert!(
        straight.contains("epoch 2/2 train: 100% of 512 images"),
        "{straight}"
    );

    // Interrupted after epoch 1, then resumed from its checkpoint: the same final model.
    let first = stdout(&run("resumed", &["--stop-after", "1"]));
    let checkpoints: Vec<String> = dir
        .join("resumed/checkpoint")
        .read_dir()
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        checkpoints.iter().any(|name| name.starts_with("model-1")),
        "{checkpoints:?}\n{first}"
    );
    let resumed = stdout(&run("resumed", &["--resume"]));
    assert!(
        resumed.contains("resuming from the checkpoint of epoch 1"),
        "{resumed}"
    );
    let resumed_after = validation_loss(&resumed, "after training");
    assert!(
        (resumed_after - after).abs() <= 1e-5 * after.abs().max(1e-3),
        "resumed {resumed_after} vs uninterrupted {after}"
    );

    // Nothing left to do, and nothing to resume from, are errors that say so.
    let done = stderr_of_failure(&run("resumed", &["--resume"]));
    assert!(done.contains("already trained for 2 epochs"), "{done}");
    let missing = stderr_of_failure(&run("nothing", &["--resume"]));
    assert!(missing.contains("no checkpoints"), "{missing}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `task = "detect"`: backbone + FPN + CenterNet-style head on the detection shapes; mAP@0.5
/// before and after, PNG pictures of the boxes.
#[test]
fn train_detect_learns_to_find_shapes_and_draws_its_boxes() {
    let dir = std::env::temp_dir().join(format!("resnet-detect-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("detect.toml");
    let text = "task = \"detect\"\nimage_size = 48\ntrain_images = 512\nvalid_images = 64\nbatch_size = 16\nepochs = 3\n\
                learning_rate = 0.002\n[backbone]\ndepth = 18\nbase_channels = 8\nzero_init_residual = false\n\
                [neck]\nout_channels = 16\nnum_outs = 4\n";
    std::fs::write(&config, text).unwrap();
    let out_dir = dir.join("run");
    let out = stdout(&resnet(&[
        "train",
        "--config",
        config.to_str().unwrap(),
        "--out",
        out_dir.to_str().unwrap(),
    ]));
    let map = |when: &str| -> f64 {
        let line = out
            .lines()
            .find(|l| l.starts_with(&format!("validation {when}: mAP@0.5 ")))
            .unwrap_or_else(|| panic!("{out}"));
        line.split("mAP@0.5 ")
            .nth(1)
            .unwrap()
            .split('%')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    assert!(map("before training") < 1.0, "{out}");
    // Three short epochs at 48 px reach ~24% (99% with configs/train/shapes_detect_r18.toml).
    assert!(map("after training") > 10.0, "{out}");
    for index in 0..6 {
        let png = std::fs::read(out_dir.join(format!("detections/valid_{index}.png"))).unwrap();
        assert_eq!(&png[1..4], b"PNG", "valid_{index}.png");
    }
    // The detection task needs its neck.
    std::fs::write(&config, text.split("[neck]").next().unwrap()).unwrap();
    let error = stderr_of_failure(&resnet(&[
        "train",
        "--config",
        config.to_str().unwrap(),
        "--out",
        out_dir.to_str().unwrap(),
    ]));
    assert!(error.contains("needs a [neck]"), "{error}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A copy of the parity fixture's mmdet weights with the first element of `key` (F16) set to NaN.
fn weights_with_nan(key: &str) -> PathBuf {
    let source = repo().join("tests/fixtures/parity/resnet18.weights.safetensors");
    let mut bytes = std::fs::read(&source).unwrap();
    let offset = {
        let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let view = file.tensor(key).unwrap();
        assert_eq!(view.dtype(), safetensors::Dtype::F16);
        view.data().as_ptr() as usize - bytes.as_ptr() as usize
    };
    bytes[offset..offset + 2].copy_from_slice(&0x7e00u16.to_le_bytes());
    let path = std::env::temp_dir().join(format!(
        "resnet-cli-nan-{}-{key}.safetensors",
        std::process::id()
    ));
    std::fs::write(&path, bytes).unwrap();
    path
}

#[test]
fn extract_says_when_outputs_are_not_finite() {
    let weights = weights_with_nan("layer2.0.conv1.weight");
    let output = resnet(&[
        "extract",
        "--config",
        "tests/fixtures/parity/resnet18.toml",
        "--weights",
        weights.to_str().unwrap(),
        "--size",
        "32",
    ]);
    std::fs::remove_file(&weights).unwrap();
    let out = stdout(&output);
    let err = String::from_utf8_lossy(&output.stderr);
    // C2 is before the NaN weight; C3..C5 are NaN everywhere, as in PyTorch.
    let non_finite = |level: &str| -> usize {
        let line = out
            .lines()
            .find(|l| l.starts_with(level))
            .unwrap_or_else(|| panic!("no {level} row in {out}"));
        line.split_whitespace().last().unwrap().parse().unwrap()
    };
    assert_eq!(
        [non_finite("C2"), non_finite("C3"), non_finite("C5")],
        [0, 256, 64],
        "{out}"
    );
    assert!(
        err.contains("warning: non-finite features: C3 has 256 NaN and 0 ±Inf of 256 values"),
        "{err}"
    );
    // Finite weights: no warning.
    let clean = resnet(&[
        "extract",
        "--config",
        "tests/fixtures/parity/resnet18.toml",
        "--size",
        "32",
    ]);
    assert!(
        !String::from_utf8_lossy(&clean.stderr).contains("non-finite"),
        "{}",
        String::from_utf8_lossy(&clean.stderr)
    );
}

/// The write policy (docs/cli.md, "Writing files"): never onto an input, never in place of a
/// directory, device or symbolic link, an existing file only with --force (every format), the
/// exact path written.
#[test]
fn commands_never_write_onto_their_inputs_or_non_regular_files() {
    let dir = std::env::temp_dir().join(format!("resnet-cli-writes-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let source = repo().join("tests/fixtures/checkpoints/mmdet_detector_r18.pth");
    let input = dir.join("m.pth");
    std::fs::copy(&source, &input).unwrap();
    let original = std::fs::read(&input).unwrap();
    let config = "tests/fixtures/checkpoints/mmdet_detector_r18.toml";
    let convert = |output: &std::path::Path, to: &str, force: bool| {
        let mut args = vec![
            "convert",
            "--config",
            config,
            input.to_str().unwrap(),
            output.to_str().unwrap(),
            "--to",
            to,
        ];
        if force {
            args.push("--force");
        }
        resnet(&args)
    };
    // Onto its own input, even with --force.
    let err = stderr_of_failure(&convert(&input, "mmdet", true));
    assert!(err.contains("is this command's input"), "{err}");
    // extract --out onto the weights it reads.
    let err = stderr_of_failure(&resnet(&[
        "extract",
        "--config",
        config,
        "--weights",
        input.to_str().unwrap(),
        "--size",
        "32",
        "--out",
        input.to_str().unwrap(),
        "--force",
    ]));
    assert!(err.contains("is this command's input"), "{err}");
    assert_eq!(
        std::fs::read(&input).unwrap(),
        original,
        "the input was changed"
    );
    // Not regular files: a directory, a device, a symbolic link (left as they are).
    let link = dir.join("link.safetensors");
    std::os::unix::fs::symlink(dir.join("target.safetensors"), &link).unwrap();
    for (path, expected) in [
        (dir.as_path(), "a directory"),
        (std::path::Path::new("/dev/null"), "not a regular file"),
        (link.as_path(), "symbolic link"),
    ] {
        let err = stderr_of_failure(&convert(path, "burnpack", true));
        assert!(err.contains(expected), "{}: {err}", path.display());
    }
    assert!(
        std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink()
            && !dir.join("target.safetensors").exists()
    );
    // An existing file: refused without --force in every format, replaced with it.
    let existing = dir.join("model");
    for to in ["burnpack", "mmdet", "torchvision"] {
        std::fs::write(&existing, b"keep").unwrap();
        let err = stderr_of_failure(&convert(&existing, to, false));
        assert!(err.contains("exists; pass --force"), "{to}: {err}");
        assert_eq!(std::fs::read(&existing).unwrap(), b"keep", "{to}");
        let out = stdout(&convert(&existing, to, true));
        // Exactly the path given (no `.bpk` appended), and it says so.
        assert!(
            out.contains(&format!("-> {} ({to})", existing.display())),
            "{to}: {out}"
        );
        assert!(
            std::fs::read(&existing).unwrap().len() > 1000 && !dir.join("model.bpk").exists(),
            "{to}"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Training settings that would train to NaN are refused before training, naming the key.
#[test]
fn train_refuses_settings_that_cannot_train() {
    let dir =
        std::env::temp_dir().join(format!("resnet-cli-train-settings-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let base = "image_size = 32\ntrain_images = 8\nvalid_images = 8\nbatch_size = 4\nepochs = 1\n";
    let cases = [
        ("learning_rate = nan", "learning_rate"),
        ("learning_rate = 0.1\nmomentum = nan", "momentum"),
        ("learning_rate = 0.1\nmomentum = 1.0", "momentum"),
        ("learning_rate = 0.1\nmomentum = -0.5", "momentum"),
        ("learning_rate = 0.1\nweight_decay = inf", "weight_decay"),
        ("learning_rate = 0.1\nweight_decay = -1e-4", "weight_decay"),
        ("learning_rate = 0.1\nweight_decay = 1e40", "weight_decay"),
    ];
    for (settings, key) in cases {
        let path = dir.join("bad.toml");
        std::fs::write(
            &path,
            format!("{base}{settings}\n[backbone]\ndepth = 18\nbase_channels = 4\n"),
        )
        .unwrap();
        let err = stderr_of_failure(&resnet(&[
            "train",
            "--config",
            path.to_str().unwrap(),
            "--out",
            dir.join("run").to_str().unwrap(),
        ]));
        assert!(err.contains(&format!("{key}: ")), "{settings}: {err}");
        assert!(
            !dir.join("run").exists(),
            "{settings}: a run directory was made"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Run directories never mix runs: a new run refuses one holding another run's checkpoints
/// (`--force` starts over), the config is saved with the run, and `--resume` refuses a config
/// that differs from it, naming the keys (a changed `epochs` included).
#[test]
fn train_runs_never_mix_in_one_directory() {
    let dir = std::env::temp_dir().join(format!("resnet-cli-run-dir-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = |epochs: usize, seed: u64| {
        let path = dir.join(format!("train-{epochs}-{seed}.toml"));
        let text = format!(
            "seed = {seed}\nimage_size = 32\ntrain_images = 16\nvalid_images = 8\nbatch_size = 8\nepochs = {epochs}\n\
             learning_rate = 0.05\n[backbone]\ndepth = 18\nbase_channels = 4\n"
        );
        std::fs::write(&path, text).unwrap();
        path
    };
    let out = dir.join("run");
    let train = |config: &PathBuf, extra: &[&str]| {
        let mut args = vec![
            "train",
            "--config",
            config.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        resnet(&args)
    };
    let first = config(2, 1);
    stdout(&train(&first, &["--stop-after", "1"]));
    assert_eq!(
        std::fs::read_to_string(out.join("train.toml")).unwrap(),
        std::fs::read_to_string(&first).unwrap()
    );
    let model = std::fs::read(out.join("checkpoint/model-1.bpk")).unwrap();

    // Another run into the same directory: refused, the first run's files untouched.
    let other = config(2, 7);
    let err = stderr_of_failure(&train(&other, &["--stop-after", "1"]));
    assert!(
        err.contains("holds another run's checkpoints") && err.contains("--force"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(out.join("checkpoint/model-1.bpk")).unwrap(),
        model
    );
    // Resuming with another config: refused, naming the keys.
    let err = stderr_of_failure(&train(&config(3, 7), &["--resume"]));
    assert!(
        err.contains("differs from the run's") && err.contains("epochs, seed"),
        "{err}"
    );
    let err = stderr_of_failure(&train(&first, &["--resume", "--force"]));
    assert!(err.contains("cannot be combined with --resume"), "{err}");
    // The run's own config resumes; --force starts another run over.
    stdout(&train(&first, &["--resume"]));
    assert!(out.join("checkpoint/model-2.bpk").exists());
    stdout(&train(&other, &["--stop-after", "1", "--force"]));
    assert!(
        !out.join("checkpoint/model-2.bpk").exists(),
        "the first run's epoch 2 was left behind"
    );
    assert_eq!(
        std::fs::read_to_string(out.join("train.toml")).unwrap(),
        std::fs::read_to_string(&other).unwrap()
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `--resume` checks the checkpoint before burn-train reads it (burn-train panics on a damaged
/// one): each damage is an error naming the file, never a panic.
#[test]
fn resume_names_a_damaged_checkpoint_instead_of_panicking() {
    let dir = std::env::temp_dir().join(format!("resnet-cli-damaged-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("train.toml");
    std::fs::write(
        &config,
        "image_size = 32\ntrain_images = 16\nvalid_images = 8\nbatch_size = 8\nepochs = 2\nlearning_rate = 0.05\n\
         [backbone]\ndepth = 18\nbase_channels = 4\n",
    )
    .unwrap();
    let out = dir.join("run");
    let train = |extra: &[&str]| {
        let mut args = vec![
            "train",
            "--config",
            config.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        resnet(&args)
    };
    stdout(&train(&["--stop-after", "1"]));
    let checkpoint = out.join("checkpoint");
    let saved: Vec<(PathBuf, Vec<u8>)> = ["model-1.bpk", "optim-1.bpk", "scheduler-1.bpk"]
        .iter()
        .map(|name| {
            (
                checkpoint.join(name),
                std::fs::read(checkpoint.join(name)).unwrap(),
            )
        })
        .collect();
    type Damage = fn(&std::path::Path, &[u8]);
    let damages: [(&str, Damage, &str); 6] = [
        (
            "model-1.bpk",
            |p, b| std::fs::write(p, &b[..b.len() / 2]).unwrap(),
            "model-1.bpk",
        ),
        (
            "model-1.bpk",
            |p, b| std::fs::write(p, &b[..40.min(b.len())]).unwrap(),
            "model-1.bpk",
        ),
        (
            "model-1.bpk",
            |p, b| std::fs::write(p, vec![7u8; b.len()]).unwrap(),
            "model-1.bpk",
        ),
        (
            "optim-1.bpk",
            |p, _| std::fs::write(p, b"").unwrap(),
            "is empty",
        ),
        (
            "optim-1.bpk",
            |p, _| std::fs::remove_file(p).unwrap(),
            "optim-1.bpk: cannot be read",
        ),
        (
            "scheduler-1.bpk",
            |p, _| {
                std::fs::remove_file(p).unwrap();
                std::fs::create_dir(p).unwrap();
            },
            "is not a regular file",
        ),
    ];
    for (name, damage, expected) in damages {
        let path = checkpoint.join(name);
        let original = &saved.iter().find(|(p, _)| *p == path).unwrap().1;
        damage(&path, original);
        let output = train(&["--resume"]);
        let err = String::from_utf8_lossy(&output.stderr).into_owned();
        assert!(
            !output.status.success() && !err.contains("PANIC") && !err.contains("panicked"),
            "{name}: {err}"
        );
        assert!(
            err.contains(expected),
            "{name}: expected '{expected}' in {err}"
        );
        // Restore it for the next case.
        if path.is_dir() {
            std::fs::remove_dir(&path).unwrap();
        }
        std::fs::write(&path, original).unwrap();
    }
    // Undamaged, it resumes.
    assert!(stdout(&train(&["--resume"])).contains("resuming from the checkpoint of epoch 1"));
    std::fs::remove_dir_all(&dir).unwrap();
}
