//! `resnet info`: parameter counts, architecture names, sizes.

use super::*;

#[test]
fn info_reports_resnet50_as_torchvision_does() {
    let out = stdout(&resnet(&["info", "--config", "configs/resnet50.toml"]));
    assert!(out.contains("total: 23,508,032 params"), "{out}");
    assert!(out.contains("4.087 GMACs"), "{out}");
    assert!(out.contains("matches torchvision's resnet50"), "{out}");
    for row in [
        "layer1        3      256      4       56x56",
        "layer4        3     2048     32         7x7",
    ] {
        assert!(out.contains(row), "missing '{row}' in\n{out}");
    }
}

/// mmdet's GCNet ResNet-50 has 26,029,773 parameters (its `sum(p.numel())`), not ResNet-50's;
/// neither it nor a GroupNorm ResNet-50 (same count as torchvision's) is torchvision's network.
#[test]
fn info_counts_plugins_and_names_torchvision_only_for_its_architecture() {
    let out = stdout(&resnet(&[
        "info",
        "--config",
        "configs/resnet50_gcb_r16.toml",
    ]));
    assert!(out.contains("total: 26,029,773 params"), "{out}");
    assert!(out.contains("of which plugins: 2,521,741 params"), "{out}");
    assert!(
        out.contains("with ContextBlock context_block after_conv3 (13 blocks)"),
        "{out}"
    );
    assert!(!out.contains("torchvision"), "{out}");
    let gn = std::env::temp_dir().join(format!("resnet-cli-gn-{}.toml", std::process::id()));
    std::fs::write(
        &gn,
        "depth = 50\nnorm_cfg = { type = \"GN\", num_groups = 32 }\n",
    )
    .unwrap();
    let out = stdout(&resnet(&["info", "--config", gn.to_str().unwrap()]));
    std::fs::remove_file(&gn).unwrap();
    assert!(
        out.contains("total: 23,508,032 params") && !out.contains("torchvision"),
        "{out}"
    );
}

#[test]
fn info_follows_the_input_size() {
    let out = stdout(&resnet(&[
        "info",
        "--config",
        "configs/resnet50_dilated.toml",
        "--input",
        "65x97",
    ]));
    assert!(
        out.contains("layer4        3     2048      8        9x13"),
        "{out}"
    );
}
