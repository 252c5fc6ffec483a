//! Saving a backbone: safetensors under mmdet, torchvision or timm key names (so a model
//! fine-tuned here goes back to PyTorch), or Burn's own burnpack format.

use std::path::Path;

use burn::store::{BurnToPyTorchAdapter, BurnpackStore, ModuleSnapshot, SafetensorsStore};

use crate::backbone::ResNet;
use crate::error::{ResNetError, Result};
use crate::key_map::WeightSource;
pub use crate::key_map::export_key_map;

impl ResNet {
    /// Save as safetensors under `names`' key names (BatchNorm `weight`/`bias`/`running_*`, no
    /// `num_batches_tracked`, which PyTorch's BatchNorm fills in when absent), loadable by
    /// `model.load_state_dict(safetensors.torch.load_file(path))` of that library's ResNet, and by
    /// [`ResNet::load_weights`]. Written atomically; an existing file at `path` is replaced (the
    /// `resnet` command refuses that without `--force`).
    pub fn save_weights(&self, path: impl AsRef<Path>, names: WeightSource) -> Result<()> {
        let path = path.as_ref();
        let mut store = SafetensorsStore::from_file(path)
            .overwrite(true)
            .skip_enum_variants(true)
            .with_to_adapter(BurnToPyTorchAdapter);
        for (from, to) in export_key_map(names, self)? {
            store = store.with_key_remapping(from, to);
        }
        self.save_into(&mut store).map_err(|e| ResNetError::Save {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
    }

    /// Save in Burn's burnpack format, under burn-resnet's own module paths, at exactly `path`
    /// (no `.bpk` is appended); an existing file there is replaced.
    pub fn save_burnpack(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let mut store = BurnpackStore::from_file(path)
            .auto_extension(false)
            .overwrite(true);
        self.save_into(&mut store).map_err(|e| ResNetError::Save {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
    }

    /// Load a burnpack file written by [`ResNet::save_burnpack`]; strict, like `load_weights`.
    pub fn load_burnpack(&self, path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let mut store = BurnpackStore::from_file(path).auto_extension(false);
        let mut loaded = self.independent_clone();
        let result = loaded
            .load_from(&mut store)
            .map_err(|e| ResNetError::Weights {
                path: path.to_path_buf(),
                problems: vec![e.to_string()],
            })?;
        let mut problems: Vec<String> = result
            .missing
            .iter()
            .map(|(key, _)| format!("missing: {key}"))
            .collect();
        problems.extend(result.unused.iter().map(|key| format!("unexpected: {key}")));
        problems.extend(result.errors.iter().map(|e| e.to_string()));
        if problems.is_empty() {
            Ok(loaded)
        } else {
            Err(ResNetError::Weights {
                path: path.to_path_buf(),
                problems,
            })
        }
    }
}
