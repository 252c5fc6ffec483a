//! The run directory's rules (`resnet train --out`), so that two runs never mix:
//!
//! - a new run refuses a directory that holds another run's checkpoints; `--force` starts over
//!   (it removes that run's checkpoints, metric logs and pictures, nothing else);
//! - the run's config is saved with it (`OUT/train.toml`, the file as given);
//! - `--resume` continues only the same config: any key that differs from the saved one (a
//!   changed `epochs` included) is an error naming the keys.

use std::collections::BTreeSet;
use std::path::Path;

use burn::module::Module;
use burn::store::{BurnpackStore, ModuleSnapshot, ModuleStore};

use crate::error::CliError;
use crate::output;

/// The run's config, saved in the run directory.
pub const CONFIG_FILE: &str = "train.toml";

/// What burn-train and `resnet train` write in a run directory (removed by `--force`), with
/// what a directory among them may hold: names of the form `PREFIX<n>SUFFIX`.
const RUN_ENTRIES: [(&str, &[(&str, &str)]); 6] = [
    (
        "checkpoint",
        &[
            ("model-", ".bpk"),
            ("optim-", ".bpk"),
            ("scheduler-", ".bpk"),
        ],
    ),
    ("train", &[("epoch-", "")]),
    ("valid", &[("epoch-", "")]),
    ("detections", &[("valid_", ".png")]),
    ("experiment.log", &[]),
    (CONFIG_FILE, &[]),
];

/// The first entry of the run directory's `path` that no run wrote, if any: a symbolic link in
/// its place, or a file in one of its directories that does not match the names a run uses.
fn foreign_entry(path: &Path) -> Option<String> {
    let name = path.file_name()?.to_string_lossy().into_owned();
    let (_, patterns) = RUN_ENTRIES.iter().find(|(entry, _)| *entry == name)?;
    let metadata = std::fs::symlink_metadata(path).ok()?;
    if metadata.file_type().is_symlink() {
        return Some("a symbolic link".into());
    }
    if !metadata.is_dir() {
        return (!patterns.is_empty()).then(|| "a file where a run keeps a directory".into());
    }
    let entries = std::fs::read_dir(path).ok()?;
    entries
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|file| {
            !patterns.iter().any(|(prefix, suffix)| {
                file.strip_prefix(prefix)
                    .and_then(|rest| rest.strip_suffix(suffix))
                    .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
            })
        })
}

/// Check `out` for a run of `config_text` (the training config as given) and record the config.
pub fn prepare(out: &Path, config_text: &str, resume: bool, force: bool) -> Result<(), CliError> {
    let error = |message: String| CliError::Train(format!("{}: {message}", out.display()));
    let saved_path = out.join(CONFIG_FILE);
    let has_checkpoints = std::fs::read_dir(out.join("checkpoint"))
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .any(|e| e.file_name().to_string_lossy().starts_with("model-"))
        })
        .unwrap_or(false);
    if resume {
        if force {
            return Err(error(
                "--force starts the run over; it cannot be combined with --resume".into(),
            ));
        }
        if !has_checkpoints {
            // Nothing to continue: the resume itself says so.
            return Ok(());
        }
        let saved = std::fs::read_to_string(&saved_path).map_err(|e| {
            error(format!("--resume: cannot read {CONFIG_FILE}, the config of the run to continue ({e}); start over with --force"))
        })?;
        let differing = differing_keys(&saved, config_text)
            .map_err(|e| error(format!("--resume: {CONFIG_FILE}: {e}")))?;
        if !differing.is_empty() {
            return Err(error(format!(
                "--resume: the config differs from the run's ({}) in {}; resume with the run's config, or start over with --force",
                saved_path.display(),
                differing.join(", ")
            )));
        }
        return Ok(());
    }
    if has_checkpoints && !force {
        return Err(error(
            "holds another run's checkpoints; continue it with --resume, or start over with --force (removes its checkpoints and logs)".into(),
        ));
    }
    if force {
        // Only what a run writes: a directory holding anything else (a user's own `train/`
        // folder, say) is refused, before anything is removed.
        for (entry, _) in RUN_ENTRIES {
            let path = out.join(entry);
            if let Some(foreign) = foreign_entry(&path) {
                return Err(error(format!(
                    "--force: {} holds {foreign}, which no run wrote; remove or move it yourself",
                    path.display()
                )));
            }
        }
        for (entry, _) in RUN_ENTRIES {
            let path = out.join(entry);
            let removed = match std::fs::symlink_metadata(&path) {
                Ok(metadata) if metadata.is_dir() => std::fs::remove_dir_all(&path),
                Ok(_) => std::fs::remove_file(&path),
                Err(_) => Ok(()),
            };
            removed
                .map_err(|e| error(format!("--force: cannot remove {}: {e}", path.display())))?;
        }
    }
    std::fs::create_dir_all(out).map_err(|e| error(e.to_string()))?;
    output::write_atomically(&saved_path, config_text.as_bytes())
}

/// Check the checkpoint of `epoch` in `out` before burn-train reads it (burn-train panics on a
/// damaged one): the model, optimizer and scheduler files are non-empty regular files that read
/// whole, and the model file holds every tensor of `model` with its shape. (The check loads
/// into a clone of `model`, which shares its BatchNorm statistics; burn-train then loads the
/// same file into the model, so they end up as the checkpoint has them either way.)
pub fn check_checkpoint<M: Module>(out: &Path, epoch: usize, model: &M) -> Result<(), CliError> {
    let directory = out.join("checkpoint");
    for part in ["model", "optim", "scheduler"] {
        let path = directory.join(format!("{part}-{epoch}.bpk"));
        let damaged = |what: String| {
            CliError::Train(format!(
                "--resume: {}: {what}; start over with --force",
                path.display()
            ))
        };
        match std::fs::symlink_metadata(&path) {
            Err(e) => return Err(damaged(format!("cannot be read ({e})"))),
            Ok(metadata) if !metadata.is_file() => {
                return Err(damaged("is not a regular file".into()));
            }
            Ok(metadata) if metadata.len() == 0 => return Err(damaged("is empty".into())),
            Ok(_) => {}
        }
        let mut store = BurnpackStore::from_file(&path).auto_extension(false);
        let tensors = store
            .get_all_tensors()
            .map_err(|e| damaged(format!("is not a readable checkpoint: {e}")))?;
        for (name, tensor) in tensors {
            tensor
                .to_bytes()
                .map_err(|e| damaged(format!("tensor {name} cannot be read: {e}")))?;
        }
        if part == "model" {
            let mut store = BurnpackStore::from_file(&path).auto_extension(false);
            let result = model
                .clone()
                .load_from(&mut store)
                .map_err(|e| damaged(format!("does not load: {e}")))?;
            let mut problems: Vec<String> = result
                .missing
                .iter()
                .map(|(key, _)| format!("missing {key}"))
                .collect();
            problems.extend(result.errors.iter().map(|e| e.to_string()));
            if !problems.is_empty() {
                let shown = problems
                    .iter()
                    .take(3)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join("; ");
                return Err(damaged(format!(
                    "does not fit this model ({} problems: {shown})",
                    problems.len()
                )));
            }
        }
    }
    Ok(())
}

/// The newest epoch with a saved model in `out/checkpoint/`.
pub fn last_checkpoint(out: &Path) -> Result<usize, CliError> {
    let directory = out.join("checkpoint");
    let entries = std::fs::read_dir(&directory).map_err(|e| {
        CliError::Train(format!(
            "--resume: no checkpoints in {}: {e}",
            directory.display()
        ))
    })?;
    entries
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .filter_map(|name| {
            name.strip_prefix("model-")?
                .split('.')
                .next()?
                .parse::<usize>()
                .ok()
        })
        .max()
        .ok_or_else(|| {
            CliError::Train(format!(
                "--resume: no model checkpoint in {}",
                directory.display()
            ))
        })
}

/// The dotted keys whose values differ between two TOML documents (missing on one side
/// included), sorted.
fn differing_keys(a: &str, b: &str) -> Result<Vec<String>, String> {
    let parse = |text: &str| {
        text.parse::<toml::Table>()
            .map_err(|e| e.to_string().trim_end().to_string())
    };
    let mut keys = BTreeSet::new();
    compare(
        "",
        &toml::Value::Table(parse(a)?),
        &toml::Value::Table(parse(b)?),
        &mut keys,
    );
    Ok(keys.into_iter().collect())
}

fn compare(prefix: &str, a: &toml::Value, b: &toml::Value, keys: &mut BTreeSet<String>) {
    match (a, b) {
        (toml::Value::Table(a), toml::Value::Table(b)) => {
            for key in a.keys().chain(b.keys()) {
                let path = if prefix.is_empty() {
                    key.clone()
                } else {
                    format!("{prefix}.{key}")
                };
                match (a.get(key), b.get(key)) {
                    (Some(x), Some(y)) => compare(&path, x, y, keys),
                    _ => {
                        keys.insert(path);
                    }
                }
            }
        }
        (a, b) if a != b => {
            keys.insert(prefix.to_string());
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::{differing_keys, prepare};

    /// `--force` removes what a run wrote and nothing else: a directory named like a run's
    /// (`train/`) holding other files stops it before anything is removed.
    #[test]
    fn force_removes_only_what_a_run_wrote() {
        let out = std::env::temp_dir().join(format!("resnet-run-dir-{}", std::process::id()));
        std::fs::create_dir_all(out.join("checkpoint")).unwrap();
        std::fs::create_dir_all(out.join("train/epoch-1")).unwrap();
        std::fs::write(out.join("checkpoint/model-1.bpk"), b"x").unwrap();
        std::fs::write(out.join("train/data.csv"), b"a user's file").unwrap();
        let error = prepare(&out, "epochs = 1", false, true)
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("data.csv") && error.contains("no run wrote"),
            "{error}"
        );
        assert!(out.join("checkpoint/model-1.bpk").exists() && out.join("train/data.csv").exists());
        std::fs::remove_file(out.join("train/data.csv")).unwrap();
        prepare(&out, "epochs = 1", false, true).unwrap();
        assert!(!out.join("checkpoint").exists() && !out.join("train").exists());
        assert_eq!(
            std::fs::read_to_string(out.join("train.toml")).unwrap(),
            "epochs = 1"
        );
        std::fs::remove_dir_all(&out).unwrap();
    }

    #[test]
    fn differing_keys_are_named_with_their_tables() {
        let a = "epochs = 2\nseed = 1\n[backbone]\ndepth = 18\nbase_channels = 8\n";
        let b =
            "seed = 1\nepochs = 3\n[backbone]\nbase_channels = 8\ndepth = 18\nstyle = \"caffe\"\n";
        assert_eq!(differing_keys(a, b).unwrap(), ["backbone.style", "epochs"]);
        // Formatting and order do not count; values do.
        assert!(
            differing_keys(a, "seed=1\nepochs=2\n[backbone]\nbase_channels=8\ndepth=18")
                .unwrap()
                .is_empty()
        );
    }
}
