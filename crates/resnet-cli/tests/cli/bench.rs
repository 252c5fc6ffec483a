//! `resnet bench`: the timings, and the PyTorch ratio only against the same network.

use std::path::PathBuf;

use super::*;

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

#[test]
fn bench_runs_the_conv_kernel_it_is_given() {
    let out = stdout(&resnet(&[
        "bench",
        "--config",
        FIXTURE,
        "--cases",
        "infer b1",
        "--size",
        "32",
        "--warmup",
        "0",
        "--runs",
        "1",
        "--conv-kernel",
        "portable",
    ]));
    assert!(
        out.contains("flex inference conv kernel: portable"),
        "{out}"
    );
    assert!(out.contains("flex     infer b1"), "{out}");
    let err = stderr_of_failure(&resnet(&["bench", "--conv-kernel", "avx1024"]));
    assert!(
        err.contains("unknown conv kernel `avx1024`") && err.contains("avx512, avx2 or portable"),
        "{err}"
    );
}

/// The config the baseline tests bench, at 32x32.
const FIXTURE: &str = "tests/fixtures/parity/resnet18_train.toml";

/// [`FIXTURE`]'s validated config and its parameter count at 32x32: what a baseline must build.
fn fixture_spec_and_params() -> (burn_resnet::ResNetSpec, usize) {
    let spec = burn_resnet::ResNetConfig::from_toml_file(repo().join(FIXTURE))
        .unwrap()
        .validate()
        .unwrap();
    let params = burn_resnet::ModelSummary::new(&spec, 32, 32)
        .unwrap()
        .total_params();
    (spec, params)
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
    let (spec, ours) = fixture_spec_and_params();
    let bench = |python: &PathBuf, extra: &[&str]| {
        let mut args = vec![
            "bench",
            "--config",
            FIXTURE,
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
        ];
        args.extend_from_slice(extra);
        stdout(&resnet(&args))
    };
    let same = bench(&fake_python(&dir, ours, ""), &[]);
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
        let out = bench(&fake_python(&dir, params, unmirrored), &[]);
        assert!(
            out.contains("is not this network") && out.contains(why),
            "{out}"
        );
        assert_eq!(ratio(&out), "-", "a ratio against another network: {out}");
    }
    // The same network on other hardware: PyTorch on a GPU against a CPU backend.
    let out = bench(&fake_python(&dir, ours, ""), &["--torch-device", "cuda"]);
    assert!(
        out.contains("runs on the GPU: no ratio for the CPU backends"),
        "{out}"
    );
    assert_eq!(ratio(&out), "-", "a GPU-vs-CPU ratio: {out}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `bench --ort` runs `bench/ort_baseline.py` with the inference cases only (ONNX Runtime does
/// not train) and prints its columns beside PyTorch's: a ratio where it timed the case, dashes
/// where it did not.
#[test]
fn bench_prints_onnx_runtime_beside_pytorch_for_inference() {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(format!("resnet-cli-fake-ort-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (_, ours) = fixture_spec_and_params();
    // Records its script and cases, then times whatever it was asked for.
    let python = dir.join("python");
    let text = format!(
        "#!/bin/sh\necho \"$1 $(echo \"$@\" | sed 's/.*--cases //')\" >> {seen}\n\
         echo '{{\"model\": {{\"builder\": \"fake\", \"params\": {ours}, \"unmirrored\": []}}}}'\n\
         echo '{{\"case\": \"infer b1\", \"median_ms\": 1000.0, \"min_ms\": 1.0, \"max_ms\": 1.0, \"images_per_s\": 1.0, \"peak_mib\": 1.0}}'\n\
         case \"$1\" in *torch*) echo '{{\"case\": \"train b2\", \"median_ms\": 1000.0, \"min_ms\": 1.0, \"max_ms\": 1.0, \"images_per_s\": 1.0, \"peak_mib\": 1.0}}';; esac\n",
        seen = dir.join("seen").display()
    );
    std::fs::write(&python, text).unwrap();
    std::fs::set_permissions(&python, std::fs::Permissions::from_mode(0o755)).unwrap();
    let python = python.to_str().unwrap();
    let out = stdout(&resnet(&[
        "bench",
        "--config",
        FIXTURE,
        "--cases",
        "infer b1,train b2",
        "--size",
        "32",
        "--warmup",
        "0",
        "--runs",
        "1",
        "--torch",
        python,
        "--ort",
        python,
    ]));
    assert!(out.contains("ONNX Runtime baseline: fake"), "{out}");
    assert!(out.contains("ort ratio"), "{out}");
    let line = |case: &str| {
        out.lines()
            .find(|l| l.starts_with(&format!("flex     {case}")))
            .unwrap_or_else(|| panic!("no {case} line: {out}"))
            .split_whitespace()
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    let is_ratio = |cell: &str| {
        cell.strip_suffix('x')
            .is_some_and(|n| n.parse::<f64>().is_ok())
    };
    let infer = line("infer b1");
    let ratios: Vec<_> = infer.iter().filter(|c| is_ratio(c)).collect();
    assert_eq!(
        ratios.len(),
        2,
        "PyTorch's and ONNX Runtime's ratios: {infer:?}"
    );
    let train = line("train b2");
    assert!(
        train[train.len() - 4].ends_with('x'),
        "PyTorch trains: {train:?}"
    );
    assert_eq!(&train[train.len() - 3..], ["-", "-", "-"], "{train:?}");
    let seen = std::fs::read_to_string(dir.join("seen")).unwrap();
    assert!(
        seen.contains("bench/torch_baseline.py infer b1,train b2"),
        "{seen}"
    );
    assert!(seen.contains("bench/ort_baseline.py infer b1\n"), "{seen}");
    std::fs::remove_dir_all(&dir).unwrap();
}
