//! Loading pretrained weights: torchvision, timm and mmdetection checkpoints (`.pth` as
//! `torch.save` writes them, or `.safetensors`), by path, with the source detected from the keys.
//!
//! The key names are [`crate::key_map`]'s. Loading is strict and all-or-nothing: the tensors are
//! applied to a copy, and the caller's module is untouched on any error.

use std::path::Path;

use burn::store::{
    FloatCastAdapter, ModuleAdapter, ModuleSnapshot, ModuleStore, PyTorchToBurnAdapter,
    PytorchStore, SafetensorsStore,
};
use burn::tensor::DType;

use crate::backbone::ResNet;
use crate::error::{ResNetError, Result};
pub use crate::key_map::{WeightSource, file_key_namer, key_map};
use crate::key_map::{check_source_builds_this_network, detected_source, rules, strip_prefixes};

/// What a successful load did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadReport {
    /// The source whose names were used.
    pub source: WeightSource,
    /// Whether the source was detected from the keys (rather than given).
    pub detected: bool,
    /// Tensors of the file that are not part of the backbone (a classifier `fc`, a detector's
    /// neck and head), left out, by their key in the file.
    pub skipped: Vec<String>,
    /// With [`ResNet::load_weights_partial`]: every backbone tensor that could not be loaded
    /// (missing, unexpected or of the wrong shape), as the strict load would have reported it;
    /// the module keeps its initial values there. Empty after a strict load.
    pub not_loaded: Vec<String>,
    /// DCN offset convs (`…conv2.conv_offset.*`, by file key) of a checkpoint that has none at
    /// all, such as ImageNet classification weights for a DCN backbone: they keep their zero
    /// initialisation, so each deformable conv starts as the regular conv it replaces (what
    /// mmdet does when a DCN detector starts from ImageNet weights). A file with some offset
    /// convs must have all of them.
    pub zero_offsets: Vec<String>,
}

/// A checkpoint's file format, told by its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckpointFormat {
    /// `torch.save` since PyTorch 1.6: a zip archive (`PK`).
    TorchZip,
    /// `torch.save(..., _use_new_zipfile_serialization=False)`, PyTorch's legacy format: a
    /// pickle stream (protocol opcode `0x80`).
    TorchLegacy,
    /// safetensors: a little-endian u64 header length, then the JSON header (`{`).
    Safetensors,
}

impl CheckpointFormat {
    /// The format's name in messages.
    pub fn name(self) -> &'static str {
        match self {
            CheckpointFormat::TorchZip => "PyTorch zip (torch.save)",
            CheckpointFormat::TorchLegacy => "PyTorch legacy pickle (torch.save, non-zip)",
            CheckpointFormat::Safetensors => "safetensors",
        }
    }

    /// The format of a file starting with `head` (its first 9 bytes or fewer), if it is one.
    pub fn detect(head: &[u8]) -> Option<Self> {
        // safetensors first: its first byte is the header length's lowest, which can be 0x80.
        match head {
            [_, _, _, _, _, _, _, _, b'{', ..] => Some(CheckpointFormat::Safetensors),
            [b'P', b'K', ..] => Some(CheckpointFormat::TorchZip),
            [0x80, ..] => Some(CheckpointFormat::TorchLegacy),
            _ => None,
        }
    }
}

/// A checkpoint file opened with the store its format needs.
enum Store {
    Pytorch(PytorchStore),
    Safetensors(SafetensorsStore),
}

impl Store {
    /// Open `path` with the reader its first bytes call for.
    fn open(path: &Path) -> Result<(Self, CheckpointFormat)> {
        let mut head = Vec::with_capacity(9);
        let read = std::fs::File::open(path)
            .and_then(|f| std::io::Read::read_to_end(&mut std::io::Read::take(f, 9), &mut head));
        read.map_err(|source| ResNetError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let format = CheckpointFormat::detect(&head).ok_or_else(|| ResNetError::Weights {
            path: path.to_path_buf(),
            problems: vec![match head.is_empty() {
                true => "not a checkpoint: the file is empty".to_string(),
                false => format!(
                    "not a checkpoint: it starts with bytes {:02x?}, not a PyTorch zip (`PK`), a PyTorch legacy pickle (0x80) or safetensors (a u64 header length, then `{{`)",
                    head
                ),
            }],
        })?;
        let store = match format {
            CheckpointFormat::TorchZip | CheckpointFormat::TorchLegacy => {
                Store::Pytorch(PytorchStore::from_file(path).map_indices_contiguous(false))
            }
            CheckpointFormat::Safetensors => Store::Safetensors(SafetensorsStore::from_file(path)),
        };
        Ok((store, format))
    }

    fn keys(&mut self) -> std::result::Result<Vec<String>, String> {
        match self {
            Store::Pytorch(s) => s.keys().map_err(|e| e.to_string()),
            Store::Safetensors(s) => s.keys().map_err(|e| e.to_string()),
        }
    }

    /// Configure for loading into a backbone with `map` (after the nesting prefixes).
    fn for_loading(self, map: &[(String, String)]) -> Self {
        match self {
            Store::Pytorch(mut s) => {
                s = s
                    .skip_enum_variants(true)
                    .allow_partial(true)
                    .validate(false);
                for (from, to) in rules(map) {
                    s = s.with_key_remapping(from, to);
                }
                Store::Pytorch(s)
            }
            Store::Safetensors(mut s) => {
                s = s
                    .skip_enum_variants(true)
                    .allow_partial(true)
                    .validate(false)
                    .with_from_adapter(to_float32());
                for (from, to) in rules(map) {
                    s = s.with_key_remapping(from, to);
                }
                Store::Safetensors(s)
            }
        }
    }

    fn apply(
        &mut self,
        module: &mut ResNet,
    ) -> std::result::Result<burn::store::ApplyResult, String> {
        match self {
            // PytorchStore's own `apply_to` applies PyTorchToBurnAdapter and no other, so a
            // half-precision `.pth` would load as float16 (which ndarray cannot even hold):
            // apply its tensors here with the float32 cast chained on, as for safetensors.
            Store::Pytorch(s) => {
                let tensors = s
                    .get_all_tensors()
                    .map_err(|e| e.to_string())?
                    .values()
                    .cloned()
                    .collect();
                Ok(module.apply(tensors, None, Some(Box::new(to_float32())), true))
            }
            Store::Safetensors(s) => module.load_from(s).map_err(|e| e.to_string()),
        }
    }
}

/// PyTorch's layout conventions, and every float tensor cast to float32 (half-precision
/// checkpoints load into a float32 backbone).
fn to_float32() -> impl ModuleAdapter {
    PyTorchToBurnAdapter.chain(FloatCastAdapter::to(DType::F32))
}

/// The module path an apply error is about.
fn error_path(error: &burn::store::ApplyError) -> &str {
    use burn::store::ApplyError;
    match error {
        ApplyError::ShapeMismatch { path, .. }
        | ApplyError::DTypeMismatch { path, .. }
        | ApplyError::AdapterError { path, .. }
        | ApplyError::LoadError { path, .. } => path,
    }
}

/// Whether a key is a tensor mmcv stores but derives from the config: a GeneralizedAttention's
/// `local_constraint_map` (its `spatial_range` window as a uint8 "parameter"), rebuilt here from
/// `spatial_range`; it is listed among the skipped tensors.
fn is_derived_key(key: &str) -> bool {
    key.ends_with(".local_constraint_map")
}

/// Whether a key (prefixes stripped) names a backbone tensor rather than a head's or neck's.
fn is_backbone_key(key: &str) -> bool {
    [
        "conv1.", "bn1.", "stem.", "layer1.", "layer2.", "layer3.", "layer4.",
    ]
    .iter()
    .any(|p| key.starts_with(p))
}

impl ResNet {
    /// Load a torchvision, timm or mmdet checkpoint (`.pth` written by `torch.save`, or
    /// `.safetensors`), detecting the source from the keys when `source` is `None`.
    /// Detector and mmengine checkpoints (`state_dict` → `backbone.…`) load as they are.
    ///
    /// Strict: every backbone tensor must be in the file with the right shape, and every
    /// backbone-looking key of the file must be used; tensors of other parts (classifier,
    /// neck, head) are skipped and listed in the report. Float16/bfloat16 safetensors files are
    /// cast to float32, and so are half-precision `.pth` files. Returns the loaded backbone
    /// and leaves `self` untouched; the error lists every missing tensor, unexpected key and
    /// shape mismatch, not just the first, by the file's key.
    pub fn load_weights(
        &self,
        path: impl AsRef<Path>,
        source: Option<WeightSource>,
    ) -> Result<(Self, LoadReport)> {
        self.load(path.as_ref(), source, false)
    }

    /// [`ResNet::load_weights`] that loads what matches and keeps the initial values of the
    /// rest, listing in [`LoadReport::not_loaded`] everything the strict load would have refused
    /// (for fine-tuning from a checkpoint of a slightly different backbone). Unreadable files
    /// are still errors.
    pub fn load_weights_partial(
        &self,
        path: impl AsRef<Path>,
        source: Option<WeightSource>,
    ) -> Result<(Self, LoadReport)> {
        self.load(path.as_ref(), source, true)
    }

    fn load(
        &self,
        path: &Path,
        source: Option<WeightSource>,
        partial: bool,
    ) -> Result<(Self, LoadReport)> {
        let weights_error = |problems: Vec<String>| ResNetError::Weights {
            path: path.to_path_buf(),
            problems,
        };
        let (mut store, format) = Store::open(path)?;
        let keys = store.keys().map_err(|e| {
            weights_error(vec![format!(
                "not a readable {} checkpoint: {e}",
                format.name()
            )])
        })?;
        let stripped: Vec<&str> = keys.iter().map(|k| strip_prefixes(k)).collect();
        let (source, detected) = match source {
            Some(source) => (source, false),
            None => (detected_source(stripped.iter().copied(), self), true),
        };
        check_source_builds_this_network(source, self)?;
        let skipped: Vec<String> = keys
            .iter()
            .zip(&stripped)
            .filter(|(_, key)| {
                (!is_backbone_key(key) || is_derived_key(key))
                    && !key.ends_with("num_batches_tracked")
            })
            .map(|(key, _)| key.clone())
            .collect();

        let mut store = store.for_loading(&key_map(source, self));
        // Not `clone()`: the clone's running statistics would be the caller's.
        let mut loaded = self.independent_clone();
        let result = store
            .apply(&mut loaded)
            .map_err(|e| weights_error(vec![format!("{} checkpoint: {e}", format.name())]))?;
        // Problems name the tensor as the file would: the module path mapped back to `source`'s
        // key names (export's map is the inverse of the loading map).
        let file_key = file_key_namer(source, self);
        let file_has_offsets = stripped.iter().any(|key| key.contains(".conv_offset."));
        let (zero_offsets, missing): (Vec<_>, Vec<_>) = result
            .missing
            .iter()
            .partition(|(path, _)| !file_has_offsets && path.contains(".conv_offset."));
        let zero_offsets = zero_offsets
            .into_iter()
            .map(|(path, _)| file_key(path))
            .collect();
        let mut problems: Vec<String> = missing
            .iter()
            .map(|(path, _)| format!("missing: {} (module path {path})", file_key(path)))
            .collect();
        problems.extend(
            result
                .unused
                .iter()
                // Mapped keys (module paths) nothing took, and backbone keys no rule mapped (a
                // plain stem's `conv1.weight` offered to a deep stem).
                .filter(|key| {
                    key.starts_with("stem.")
                        || key.starts_with("layers.")
                        || is_backbone_key(strip_prefixes(key))
                })
                .filter(|key| !key.ends_with("num_batches_tracked") && !is_derived_key(key))
                .map(|key| format!("unexpected: {}", file_key(key))),
        );
        problems.extend(
            result
                .errors
                .iter()
                .map(|e| format!("{e} (file key {})", file_key(error_path(e)))),
        );
        if partial {
            return Ok((
                loaded,
                LoadReport {
                    source,
                    detected,
                    skipped,
                    not_loaded: problems,
                    zero_offsets,
                },
            ));
        }
        if !problems.is_empty() {
            problems.push(format!(
                "(keys read as {source} names{})",
                if detected { ", detected" } else { "" }
            ));
            return Err(weights_error(problems));
        }
        Ok((
            loaded,
            LoadReport {
                source,
                detected,
                skipped,
                not_loaded: Vec::new(),
                zero_offsets,
            },
        ))
    }

    /// [`ResNet::load_weights`] for a file with mmdet's key names.
    pub fn load_mmdet_safetensors(&self, path: impl AsRef<Path>) -> Result<Self> {
        self.load_weights(path, Some(WeightSource::Mmdet))
            .map(|(backbone, _)| backbone)
    }
}
