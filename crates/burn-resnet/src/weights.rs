//! Loading weights saved under mmdetection's key names (`conv1`, `bn1`, `stem.N`,
//! `layerN.i.convK`, `layerN.i.bnK`, `layerN.i.downsample.N`) from a safetensors file.
//!
//! One key map serves every config: the stem and downsample indices depend on `deep_stem` and
//! `avg_down`, which the backbone knows. Loading is strict and all-or-nothing: the tensors are
//! applied to a copy, and the caller's module is returned unchanged on any error.

use std::path::Path;

use burn::store::{
    FloatCastAdapter, ModuleAdapter, ModuleSnapshot, PyTorchToBurnAdapter,
    SafetensorsStore,
};
use burn::tensor::DType;

use crate::backbone::ResNet;
use crate::error::{ResNetError, Result};

/// `(mmdet key pattern, burn-resnet path)` pairs for a backbone, applied in order.
pub fn mmdet_key_map(backbone: &ResNet) -> Vec<(&'static str, &'static str)> {
    let config = &backbone.spec().config;
    let mut map = if config.deep_stem {
        vec![
            (r"^stem\.0\.", "stem.layers.0.conv."),
            (r"^stem\.1\.", "stem.layers.0.norm."),
            (r"^stem\.3\.", "stem.layers.1.conv."),
            (r"^stem\.4\.", "stem.layers.1.norm."),
            (r"^stem\.6\.", "stem.layers.2.conv."),
            (r"^stem\.7\.", "stem.layers.2.norm."),
        ]
    } else {
        vec![(r"^conv1\.", "stem.layers.0.conv."), (r"^bn1\.", "stem.layers.0.norm.")]
    };
    map.extend([
        (r"^layer1\.(\d+)\.", "layers.0.blocks.$1."),
        (r"^layer2\.(\d+)\.", "layers.1.blocks.$1."),
        (r"^layer3\.(\d+)\.", "layers.2.blocks.$1."),
        (r"^layer4\.(\d+)\.", "layers.3.blocks.$1."),
        (r"\.bn(\d)\.", ".norm$1."),
    ]);
    // mmdet's `downsample` Sequential: [AvgPool2d,] conv, norm.
    if config.avg_down {
        map.extend([(r"\.downsample\.1\.", ".downsample.conv."), (r"\.downsample\.2\.", ".downsample.norm.")]);
    } else {
        map.extend([(r"\.downsample\.0\.", ".downsample.conv."), (r"\.downsample\.1\.", ".downsample.norm.")]);
    }
    map
}

impl ResNet {
    /// Load a safetensors file saved with mmdet's key names (`model.state_dict()` of mmdet's
    /// `ResNet`). Every backbone tensor must be present with the right shape; `num_batches_tracked`
    /// is ignored. Float16/bfloat16 files are cast to float32.
    ///
    /// Returns the loaded backbone and leaves `self` untouched, so a failed load never leaves a
    /// half-written module behind; the error lists every missing key, unexpected key and shape
    /// mismatch, not just the first.
    pub fn load_mmdet_safetensors(&self, path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        if !path.is_file() {
            return Err(ResNetError::Io {
                path: path.to_path_buf(),
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
            });
        }
        let mut store = SafetensorsStore::from_file(path)
            .skip_enum_variants(true)
            .allow_partial(true)
            .validate(false)
            .with_from_adapter(PyTorchToBurnAdapter.chain(FloatCastAdapter::to(DType::F32)));
        for (from, to) in mmdet_key_map(self) {
            store = store.with_key_remapping(from, to);
        }
        let mut loaded = self.clone();
        let result = loaded.load_from(&mut store).map_err(|e| ResNetError::Weights {
            path: path.to_path_buf(),
            problems: vec![e.to_string()],
        })?;

        let mut problems: Vec<String> = result
            .missing
            .iter()
            .map(|(key, _)| format!("missing: {key}"))
            .collect();
        problems.extend(
            result
                .unused
                .iter()
                .filter(|key| !key.ends_with("num_batches_tracked"))
                .map(|key| format!("unexpected: {key}")),
        );
        problems.extend(result.errors.iter().map(|e| e.to_string()));
        if problems.is_empty() {
            Ok(loaded)
        } else {
            Err(ResNetError::Weights { path: path.to_path_buf(), problems })
        }
    }
}
