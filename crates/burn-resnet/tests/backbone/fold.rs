//! `fold_batch_norms` folds every BatchNorm of every block kind, shortcut, deep stem and
//! deformable conv (a norm it missed would still give eval-mode outputs, so the parity tests
//! cannot see it), and leaves GroupNorms, which do not fold, in place.

use burn::tensor::Device;

use crate::common::{config, float_tensors};

#[test]
fn folding_leaves_no_batch_norm_behind() {
    let device = Device::default();
    for toml in [
        "depth = 18\nbase_channels = 4",
        "depth = 50\nbase_channels = 4\ndeep_stem = true\navg_down = true",
        "depth = 50\nbase_channels = 4\nstage_with_dcn = [false, true, true, true]\n\
         dcn = { type = \"DCNv2\" }",
        "type = \"Res2Net\"\ndepth = 50\nbase_channels = 4\nbase_width = 2\ndeep_stem = true\n\
         avg_down = true\nstage_with_dcn = [false, false, true, true]\ndcn = { type = \"DCN\" }",
        "type = \"ResNeSt\"\ndepth = 50\nbase_channels = 4\ndeep_stem = true\navg_down = true\n\
         stage_with_dcn = [false, false, true, true]\ndcn = { type = \"DCNv2\" }",
    ] {
        let backbone = config(toml).init(&device).unwrap();
        let before = float_tensors(&backbone, None);
        let norms = before.iter().filter(|t| t.path.contains(".Batch.")).count();
        assert!(norms > 0, "{toml}: the config has BatchNorms to fold");
        let folded = float_tensors(&backbone.fold_batch_norms(), None);
        let left: Vec<_> = folded
            .iter()
            .filter(|t| t.path.contains(".Batch."))
            .map(|t| t.path.as_str())
            .collect();
        assert!(left.is_empty(), "{toml}: unfolded norms {left:?}");
    }
    let grouped =
        config("depth = 18\nbase_channels = 4\nnorm_cfg = { type = \"GN\", num_groups = 2 }")
            .init(&device)
            .unwrap();
    let count = |tensors: &[crate::common::FloatTensor]| {
        tensors
            .iter()
            .filter(|t| t.path.contains(".Group."))
            .count()
    };
    let before = count(&float_tensors(&grouped, None));
    assert!(before > 0);
    assert_eq!(
        count(&float_tensors(&grouped.fold_batch_norms(), None)),
        before
    );
}
