//! `resnet info`: the per-stage table of a config.

use std::fmt::Write;

use burn_resnet::{ModelSummary, ResNetSpec};

/// torchvision's published figures: name, parameters without the 1000-class `fc`, and
/// GMACs at 224x224 (torchvision's "GFLOPS", which include the `fc`'s 0.5-2 M MACs).
const PUBLISHED: [(&str, usize, f64); 5] = [
    ("resnet18", 11_176_512, 1.81),
    ("resnet34", 21_284_672, 3.66),
    ("resnet50", 23_508_032, 4.09),
    ("resnet101", 42_500_160, 7.80),
    ("resnet152", 58_143_808, 11.51),
];

/// The table printed by `resnet info`.
pub fn render(spec: &ResNetSpec, [height, width]: [usize; 2]) -> String {
    let summary = ModelSummary::new(spec, height, width);
    let config = &spec.config;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "ResNet-{} ({:?} blocks, style {}{}{}{}) on a {height}x{width} input",
        config.depth,
        spec.block,
        config.style,
        if config.deep_stem { ", deep stem" } else { "" },
        if config.avg_down { ", avg_down" } else { "" },
        if config.groups > 1 { format!(", ResNeXt {}x{}d", config.groups, config.base_width) } else { String::new() },
    );
    let _ = writeln!(
        out,
        "{:<8} {:>6} {:>8} {:>6} {:>11} {:>13} {:>10}  {}",
        "stage", "blocks", "channels", "stride", "output", "params", "MMACs", "output"
    );
    for stage in &summary.stages {
        let selected = match stage.stage {
            None => config.stem_output,
            Some(index) => spec.out_indices.contains(&index),
        };
        let _ = writeln!(
            out,
            "{:<8} {:>6} {:>8} {:>6} {:>11} {:>13} {:>10.1}  {}",
            stage.name,
            stage.blocks,
            stage.out_channels,
            stage.reduction,
            format!("{}x{}", stage.output_size[0], stage.output_size[1]),
            group_thousands(stage.params),
            stage.macs as f64 / 1e6,
            if selected { "yes" } else { "-" },
        );
    }
    let (params, macs) = (summary.total_params(), summary.total_macs());
    let _ = writeln!(
        out,
        "total: {} params ({:.2} M), {:.3} GMACs ({:.3} GFLOPs counting multiply and add)",
        group_thousands(params),
        params as f64 / 1e6,
        macs as f64 / 1e9,
        2.0 * macs as f64 / 1e9,
    );
    if let Some((name, _, gmacs)) = PUBLISHED.iter().find(|(_, p, _)| *p == params) {
        let _ = writeln!(
            out,
            "matches torchvision's {name} without its classifier: {:.2} M params (exact); \
             published {gmacs:.2} GMACs at 224x224 including the classifier",
            params as f64 / 1e6
        );
    }
    out
}

fn group_thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}
