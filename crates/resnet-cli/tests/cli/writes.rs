//! The write policy of every command that writes files.

use super::*;

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
