//! The one policy for every file the `resnet` command writes (`extract --out`, `convert`'s
//! output):
//!
//! - never onto one of the command's own inputs (the config, the image, the checkpoint read),
//!   whatever the flags;
//! - never in place of something that is not a regular file: a directory, a device, a FIFO or a
//!   symbolic link is refused (give the link's target to write there);
//! - an existing regular file is replaced only with `--force`, in every format;
//! - written whole or not at all (a temporary file in the same directory, then renamed), at
//!   exactly the path given, which is printed.

use std::path::{Path, PathBuf};

use crate::error::CliError;

/// Check that `path` may be written by a command that reads `inputs` (see the module docs).
pub fn check(path: &Path, inputs: &[&Path], force: bool) -> Result<(), CliError> {
    let refuse = |message: String| {
        Err(CliError::Output {
            path: path.to_path_buf(),
            message,
        })
    };
    let Ok(metadata) = std::fs::symlink_metadata(path) else {
        // Nothing there yet: the write itself reports a missing directory or a permission.
        return Ok(());
    };
    if metadata.file_type().is_symlink() {
        return refuse("is a symbolic link; give the path it points to, or another path".into());
    }
    if !metadata.is_file() {
        let what = if metadata.is_dir() {
            "a directory"
        } else {
            "not a regular file (a device, FIFO or socket)"
        };
        return refuse(format!("is {what}; the command writes regular files only"));
    }
    if let Some(input) = inputs.iter().find(|input| same_file(path, input)) {
        return refuse(format!(
            "is this command's input {}: it is never overwritten",
            input.display()
        ));
    }
    if !force {
        return refuse("exists; pass --force to replace it".into());
    }
    Ok(())
}

/// Whether two paths name the same file (the same device and inode; hard links included).
fn same_file(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// Write `bytes` to `path` whole or not at all: a temporary file beside it, then a rename.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), CliError> {
    let output_error = |message: String| CliError::Output {
        path: path.to_path_buf(),
        message,
    };
    let name = path
        .file_name()
        .ok_or_else(|| output_error("is not a file name".into()))?;
    let temporary: PathBuf = path.with_file_name(format!(
        ".{}.{}.partial",
        name.to_string_lossy(),
        std::process::id()
    ));
    std::fs::write(&temporary, bytes).map_err(|e| output_error(format!("cannot write: {e}")))?;
    std::fs::rename(&temporary, path).map_err(|e| {
        let _ = std::fs::remove_file(&temporary);
        output_error(format!("cannot write: {e}"))
    })
}

#[cfg(test)]
mod tests {
    use super::{check, write_atomically};

    #[test]
    fn inputs_non_regular_files_and_existing_files_are_refused() {
        let dir = std::env::temp_dir().join(format!("resnet-output-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let input = dir.join("input.pth");
        std::fs::write(&input, b"weights").unwrap();
        let link = dir.join("link.pth");
        std::os::unix::fs::symlink(&input, &link).unwrap();
        let hard = dir.join("hard.pth");
        std::fs::hard_link(&input, &hard).unwrap();
        let other = dir.join("other.safetensors");
        std::fs::write(&other, b"old").unwrap();
        let fresh = dir.join("fresh.safetensors");

        let message = |path: &std::path::Path, force: bool| {
            check(path, &[&input], force).err().map(|e| e.to_string())
        };
        assert!(message(&input, true).unwrap().contains("input"));
        assert!(
            message(&hard, true).unwrap().contains("input"),
            "a hard link to the input"
        );
        assert!(message(&link, true).unwrap().contains("symbolic link"));
        assert!(message(&dir, true).unwrap().contains("directory"));
        assert!(
            message(std::path::Path::new("/dev/null"), true)
                .unwrap()
                .contains("not a regular file")
        );
        assert!(message(&other, false).unwrap().contains("--force"));
        assert_eq!(message(&other, true), None);
        assert_eq!(message(&fresh, false), None);

        write_atomically(&other, b"new").unwrap();
        assert_eq!(std::fs::read(&other).unwrap(), b"new");
        assert_eq!(std::fs::read(&input).unwrap(), b"weights");
        assert_eq!(
            std::fs::read_dir(&dir).unwrap().count(),
            4,
            "input, link, hard link, other: no temporary file left"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
