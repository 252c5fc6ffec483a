//! `resnet info`: the per-stage table of a config.

use std::fmt::Write;
use std::path::PathBuf;

use burn_resnet::memory::format_bytes;
use burn_resnet::{
    BlockKind, MemoryLimit, ModelSummary, ResNetConfig, ResNetError, ResNetSpec, Workload,
};

use crate::error::CliError;
use crate::options;

/// The options of `resnet info`.
#[derive(clap::Args)]
pub struct InfoArgs {
    /// A backbone config (TOML), e.g. configs/resnet50.toml.
    #[arg(long)]
    config: PathBuf,
    /// Input size as HEIGHTxWIDTH (or one number for a square).
    #[arg(long, default_value = "224x224", value_parser = options::parse_size)]
    input: [usize; 2],
}

/// Print the table of `args.config` at `args.input`, with the memory estimates against
/// `memory_limit`.
pub fn run(args: &InfoArgs, memory_limit: &MemoryLimit) -> Result<(), CliError> {
    let spec = ResNetConfig::from_toml_file(&args.config)?.validate()?;
    print!("{}", render(&spec, args.input, memory_limit)?);
    Ok(())
}

/// torchvision's published figures: name, parameters without the 1000-class `fc`, and
/// GMACs at 224x224 (torchvision's "GFLOPS", which include the `fc`'s 0.5-2 M MACs).
const PUBLISHED: [(&str, usize, f64); 5] = [
    ("resnet18", 11_176_512, 1.81),
    ("resnet34", 21_284_672, 3.66),
    ("resnet50", 23_508_032, 4.09),
    ("resnet101", 42_500_160, 7.80),
    ("resnet152", 58_143_808, 11.51),
];

/// The table printed by `resnet info`, with the memory estimates at batch 1 against `limit`.
pub fn render(
    spec: &ResNetSpec,
    [height, width]: [usize; 2],
    limit: &MemoryLimit,
) -> Result<String, ResNetError> {
    let summary = ModelSummary::new(spec, height, width)?;
    let config = &spec.config;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{}-{} ({:?} blocks, style {}{}{}{}) on a {height}x{width} input",
        config.backbone.name(),
        config.depth,
        spec.block,
        config.style,
        if config.deep_stem { ", deep stem" } else { "" },
        if config.avg_down { ", avg_down" } else { "" },
        match (spec.block, config.groups) {
            (BlockKind::Bottle2neck, _) => format!(
                ", {}w x {}s",
                spec.stages[0].width / (spec.stages[0].planes / config.base_channels),
                spec.stages[0].scales
            ),
            (_, groups) if groups > 1 =>
                format!(", ResNeXt {groups}x{}d", spec.stages[0].width / groups),
            _ => String::new(),
        },
    );
    for line in additions(spec) {
        let _ = writeln!(out, "  with {line}");
    }
    let _ = writeln!(
        out,
        "{:<8} {:>6} {:>8} {:>6} {:>11} {:>13} {:>10}  output",
        "stage", "blocks", "channels", "stride", "output", "params", "MMACs"
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
    if summary.plugin_params() > 0 {
        let _ = writeln!(
            out,
            "of which plugins: {} params",
            group_thousands(summary.plugin_params())
        );
    }
    for (name, workload) in [
        ("inference", Workload::Inference),
        ("training", Workload::Training),
    ] {
        let estimate = summary.memory(1, workload)?;
        let fits = match limit.bytes {
            Some(bytes) if estimate.total() > bytes => format!(
                "; over the limit of {} ({})",
                format_bytes(bytes),
                limit.source
            ),
            _ => String::new(),
        };
        let _ = writeln!(
            out,
            "estimated memory, {name} at batch 1: {} ({}){fits}",
            format_bytes(estimate.total()),
            estimate.describe()
        );
    }
    // A torchvision figure only for torchvision's architecture: another network can have the
    // same count (GroupNorm instead of BatchNorm, another stride or dilation).
    let published = PUBLISHED.iter().find(|(name, _, _)| {
        is_torchvision_architecture(spec) && *name == format!("resnet{}", config.depth)
    });
    if let Some((name, published_params, gmacs)) = published {
        let _ = match *published_params == params {
            true => writeln!(
                out,
                "matches torchvision's {name} without its classifier: {:.2} M params (exact); \
                 published {gmacs:.2} GMACs at 224x224 including the classifier",
                params as f64 / 1e6
            ),
            false => writeln!(
                out,
                "torchvision's {name} without its classifier has {published_params} params, not {params}: please report this"
            ),
        };
    }
    Ok(out)
}

/// The plugins (type, position, how many blocks) and deformable convs the config adds.
fn additions(spec: &ResNetSpec) -> Vec<String> {
    let blocks = |stage: usize| spec.stages[stage].num_blocks;
    let mut lines: Vec<String> = spec
        .config
        .plugins
        .iter()
        .map(|entry| {
            let count: usize = (0..spec.stages.len())
                .filter(|&s| entry.applies_to(s))
                .map(blocks)
                .sum();
            format!(
                "{} {} {} ({count} blocks)",
                entry.cfg.type_name(),
                entry.name(),
                entry.position.name()
            )
        })
        .collect();
    if let Some(dcn) = &spec.config.dcn {
        let stages: Vec<String> = (0..spec.stages.len())
            .filter(|&s| spec.stage_dcn(s).is_some())
            .map(|s| format!("layer{}", s + 1))
            .collect();
        let kind = match dcn.kind {
            burn_resnet::dcn::DcnKind::Deformable => "DCN",
            burn_resnet::dcn::DcnKind::Modulated => "DCNv2",
        };
        lines.push(format!(
            "{kind} (deform_groups {}) as the 3x3 conv of {}",
            dcn.deform_groups,
            stages.join(", ")
        ));
    }
    lines
}

/// Whether `spec` builds torchvision's `resnetN` body: 7x7 stem of 64 channels on RGB, four
/// stages with strides 1, 2, 2, 2 and no dilation, pytorch style, no ResNeXt groups, BatchNorm,
/// no plugins and no DCN.
pub fn is_torchvision_architecture(spec: &ResNetSpec) -> bool {
    let c = &spec.config;
    let strides_default = c.strides.as_ref().is_none_or(|s| s == &[1, 2, 2, 2]);
    let dilations_default = c
        .dilations
        .as_ref()
        .is_none_or(|d| d.iter().all(|&d| d == 1));
    c.in_channels == 3
        && c.base_channels == 64
        && spec.stem_channels == 64
        && c.num_stages == 4
        && strides_default
        && dilations_default
        && c.style == burn_resnet::Style::Pytorch
        && !c.deep_stem
        && !c.avg_down
        && c.groups == 1
        && matches!(c.norm_cfg, burn_resnet::norm::NormConfig::Batch { .. })
        && c.plugins.is_empty()
        && spec
            .stages
            .iter()
            .enumerate()
            .all(|(i, _)| spec.stage_dcn(i).is_none())
}

fn group_thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}
