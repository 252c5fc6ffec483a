//! Keeping freed memory in the process, so that a training step reuses the pages of the last
//! one instead of asking the kernel for fresh, zeroed ones.
//!
//! A ResNet-50 training step at batch 8 allocates and frees about a gigabyte of activations
//! and gradients. With glibc's default settings most of it goes back to the kernel at the end
//! of each step (the heap's top is trimmed past 2x the last mmap threshold, and blocks over
//! the threshold are unmapped), so the next step faults every page in again and the kernel
//! zeroes each one: `perf` put 15–18% of the flex step in `clear_page_erms` and the page-fault
//! path. [`keep_freed_memory`] sets glibc's `M_MMAP_THRESHOLD` to its largest value (32 MiB:
//! blocks up to that size come from the heap) and turns trimming off (`M_TRIM_THRESHOLD`
//! = -1), the settings `GLIBC_TUNABLES=glibc.malloc.mmap_threshold=33554432:`
//! `glibc.malloc.trim_threshold=...` would give. The process's resident memory then stays at
//! its high-water mark instead of falling back between steps; [`release_freed_memory`] hands
//! the free pages back (`malloc_trim(0)`).
//!
//! This changes the whole process's allocator, so the library never does it on its own: the
//! `resnet` command calls it at start, a program embedding the library calls it if it wants
//! the same. It is a no-op returning [`FreedMemory::Unsupported`] off glibc (musl, macOS,
//! Windows: their allocators differ; not measured), and it leaves glibc alone when the
//! environment already sets its thresholds (`GLIBC_TUNABLES` naming `glibc.malloc.mmap_threshold`
//! or `glibc.malloc.trim_threshold`) or asks it to (`RESNET_KEEP_FREED_MEMORY=0`).

use std::ffi::OsStr;
use std::fmt;

/// What [`keep_freed_memory`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FreedMemory {
    /// glibc now keeps freed blocks up to 32 MiB in its heap and never trims it.
    Kept,
    /// Left as the environment sets it: `GLIBC_TUNABLES` sets a malloc threshold, or
    /// `RESNET_KEEP_FREED_MEMORY=0`.
    LeftToEnvironment,
    /// Not a glibc target: the system allocator is left as it is.
    Unsupported,
    /// glibc refused a setting (`mallopt` returned 0); whatever it accepted stays.
    Refused,
}

impl fmt::Display for FreedMemory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FreedMemory::Kept => {
                "freed memory kept for reuse (glibc: mmap threshold 32 MiB, no trim)"
            }
            FreedMemory::LeftToEnvironment => "glibc malloc as the environment sets it",
            FreedMemory::Unsupported => "system allocator defaults (not glibc)",
            FreedMemory::Refused => "glibc refused the malloc settings; defaults",
        })
    }
}

/// Make glibc's malloc keep freed memory for reuse (see the module documentation).
///
/// Call it once, early, before the threads that allocate start; later calls do no harm.
pub fn keep_freed_memory() -> FreedMemory {
    if !environment_allows() {
        return FreedMemory::LeftToEnvironment;
    }
    set_thresholds()
}

/// Whether neither `RESNET_KEEP_FREED_MEMORY=0` nor a glibc malloc threshold tunable is set.
fn environment_allows() -> bool {
    allows(
        std::env::var_os("RESNET_KEEP_FREED_MEMORY").as_deref(),
        std::env::var_os("GLIBC_TUNABLES").as_deref(),
    )
}

/// [`environment_allows`] for the two variables' values.
fn allows(keep: Option<&OsStr>, tunables: Option<&OsStr>) -> bool {
    let opted_out = keep.is_some_and(|v| v == "0");
    let tunables = tunables.map(OsStr::to_string_lossy).unwrap_or_default();
    let thresholds_set = ["glibc.malloc.mmap_threshold", "glibc.malloc.trim_threshold"]
        .iter()
        .any(|name| tunables.contains(name));
    !opted_out && !thresholds_set
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn set_thresholds() -> FreedMemory {
    /// The largest `M_MMAP_THRESHOLD` glibc accepts on 64-bit targets (half its 64 MiB heap).
    const MMAP_THRESHOLD: i32 = 32 << 20;
    // SAFETY: mallopt only changes malloc's parameters; -1 disables trimming (mallopt(3)).
    let accepted = unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
            && libc::mallopt(libc::M_TRIM_THRESHOLD, -1) == 1
    };
    match accepted {
        true => FreedMemory::Kept,
        false => FreedMemory::Refused,
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn set_thresholds() -> FreedMemory {
    FreedMemory::Unsupported
}

/// Hand the heap's free pages back to the kernel (glibc's `malloc_trim(0)`; a no-op elsewhere),
/// e.g. before measuring a peak from the current resident size.
pub fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free memory to the kernel.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_environment_can_keep_glibc_as_it_is() {
        let os = |s: &'static str| Some(OsStr::new(s));
        assert!(allows(None, None));
        assert!(allows(os("1"), os("glibc.malloc.hugetlb=1")));
        assert!(!allows(os("0"), None));
        let mmap = os("glibc.malloc.mmap_threshold=1048576");
        assert!(!allows(None, mmap));
        assert!(!allows(
            None,
            os("glibc.cpu.x86_rep_movsb_threshold=1:glibc.malloc.trim_threshold=0")
        ));
    }

    #[test]
    fn freed_memory_can_be_kept_and_released() {
        // mallopt is process-wide and harmless to repeat; where the environment keeps glibc as
        // it is, the settings are not touched.
        let kept = keep_freed_memory();
        let expected = match (
            environment_allows(),
            cfg!(all(target_os = "linux", target_env = "gnu")),
        ) {
            (false, _) => FreedMemory::LeftToEnvironment,
            (true, true) => FreedMemory::Kept,
            (true, false) => FreedMemory::Unsupported,
        };
        assert_eq!(kept, expected);
        release_freed_memory();
    }
}
