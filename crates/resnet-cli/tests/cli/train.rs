//! `resnet train`: learning, resuming, detection, settings refused, run directories and
//! damaged checkpoints.

use std::path::PathBuf;

use super::*;

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
pub(super) fn validation_loss(out: &str, when: &str) -> f64 {
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
    let run = |out: &str, extra: &[&str]| train(&config, &dir.join(out), extra);

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
    let out = stdout(&train(&config, &out_dir, &[]));
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
    let error = stderr_of_failure(&train(&config, &out_dir, &[]));
    assert!(error.contains("needs a [neck]"), "{error}");
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
    // Writes `text` as a config and trains it into `dir/run`.
    let train = |name: &str, text: String| {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        train(&path, &dir.join("run"), &[])
    };
    for (settings, key) in cases {
        let err = stderr_of_failure(&train(
            "bad.toml",
            format!("{base}{settings}\n[backbone]\ndepth = 18\nbase_channels = 4\n"),
        ));
        assert!(err.contains(&format!("{key}: ")), "{settings}: {err}");
        assert!(
            !dir.join("run").exists(),
            "{settings}: a run directory was made"
        );
    }
    // A ResNeSt cannot train its split attention's BatchNorm on a last batch of one image.
    let resnest = "[backbone]\ntype = \"ResNeSt\"\ndepth = 50\nbase_channels = 4\n\
                   deep_stem = true\navg_down = true\n";
    for (train_images, refused) in [(9, true), (10, false)] {
        let output = train(
            "resnest.toml",
            format!(
                "image_size = 32\ntrain_images = {train_images}\nvalid_images = 8\n\
                 batch_size = 4\nepochs = 1\nlearning_rate = 0.1\n{resnest}"
            ),
        );
        assert_eq!(!output.status.success(), refused, "{train_images} images");
        if refused {
            let err = String::from_utf8_lossy(&output.stderr);
            assert!(err.contains("batch_size: 4 with train_images 9"), "{err}");
        }
        let _ = std::fs::remove_dir_all(dir.join("run"));
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
    let train = |config: &PathBuf, extra: &[&str]| train(config, &out, extra);
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
    let train = |extra: &[&str]| train(&config, &out, extra);
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
