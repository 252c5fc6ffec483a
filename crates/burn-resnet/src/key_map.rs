//! The key names of each library's checkpoints: one map from a file's keys to the backbone's
//! module paths, read forwards to load ([`crate::weights`]) and backwards to save
//! ([`crate::export`]).
//!
//! The names differ only in the stem (`conv1`/`bn1`; mmdet's deep `stem.0…7`; timm's deep
//! `conv1.0…6` + `bn1`), in the shortcut indices (`downsample.0/1`, or `.1/.2` after
//! `avg_down`'s pool), in mmcv's norm names (`gn1` for GroupNorm) and in the plugins' names.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::Tensor;

use crate::arch::BackboneType;
use crate::backbone::ResNet;
use crate::error::{ResNetError, Result};

/// The library whose key names a checkpoint uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightSource {
    /// mmdetection / mmpretrain (`stem.N` deep stem; detector checkpoints under `backbone.`).
    Mmdet,
    /// torchvision (`conv1`, `bn1`, `layerN.i.downsample.0/1`, `fc`).
    Torchvision,
    /// timm (`conv1.0…6` + `bn1` deep stem; otherwise torchvision's names).
    Timm,
}

impl WeightSource {
    /// Every source.
    pub const ALL: [WeightSource; 3] = [
        WeightSource::Mmdet,
        WeightSource::Torchvision,
        WeightSource::Timm,
    ];

    /// The name used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            WeightSource::Mmdet => "mmdet",
            WeightSource::Torchvision => "torchvision",
            WeightSource::Timm => "timm",
        }
    }

    /// Guess the source from a checkpoint's keys (prefixes `state_dict.`/`backbone.` removed):
    /// a `stem.0` deep stem is mmdet's, a `conv1.0` one timm's, a classifier `fc` torchvision's
    /// (timm's plain ResNets use the same names), and anything else mmdet's (whose plain-stem
    /// names are torchvision's too).
    pub fn detect<'a>(keys: impl IntoIterator<Item = &'a str>) -> Self {
        let mut source = WeightSource::Mmdet;
        for key in keys {
            if key.starts_with("stem.0.") {
                return WeightSource::Mmdet;
            }
            if key.starts_with("conv1.0.") {
                return WeightSource::Timm;
            }
            if key.starts_with("fc.") {
                source = WeightSource::Torchvision;
            }
        }
        source
    }
}

impl fmt::Display for WeightSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for WeightSource {
    type Err = ResNetError;

    fn from_str(name: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|s| s.name().eq_ignore_ascii_case(name))
            .ok_or_else(|| ResNetError::UnknownWeightSource {
                name: name.to_string(),
            })
    }
}

/// Prefixes under which checkpoints nest the backbone: mmdet/mmengine's `state_dict`, the
/// `model` of training scripts that save `{'model': state_dict}`, and a detector's (or
/// mmpretrain classifier's) `backbone`.
const PREFIXES: [(&str, &str); 3] = [
    (r"^state_dict\.", ""),
    (r"^model\.", ""),
    (r"^backbone\.", ""),
];

/// `(key pattern, burn-resnet path)` pairs for a source and backbone, applied in order after
/// the wrapper prefixes (`state_dict.`, `model.`, a detector's `backbone.`) are stripped.
pub fn key_map(source: WeightSource, backbone: &ResNet) -> Vec<(String, String)> {
    let config = &backbone.spec().config;
    // Plugins first: their rules match the file's stage prefix (`layer2.0.context_block.`),
    // which the stage rules below would otherwise rewrite (and, read backwards for export, the
    // module path before the stage rules do).
    let mut map = plugin_key_map(config);
    // mmcv names a norm layer by its type (`infer_abbr`): `gn1`… for GroupNorm, `bn1`… for
    // BatchNorm; torchvision and timm keep `bn` names whatever the norm.
    let norm = match (&config.norm_cfg, source) {
        (crate::norm::NormConfig::Group { .. }, WeightSource::Mmdet) => "gn",
        _ => "bn",
    };
    let mut base: Vec<(String, String)> = match (config.deep_stem, source) {
        (true, WeightSource::Timm) => vec![
            (r"^conv1\.0\.".into(), "stem.layers.0.conv.".into()),
            (r"^conv1\.1\.".into(), "stem.layers.0.norm.".into()),
            (r"^conv1\.3\.".into(), "stem.layers.1.conv.".into()),
            (r"^conv1\.4\.".into(), "stem.layers.1.norm.".into()),
            (r"^conv1\.6\.".into(), "stem.layers.2.conv.".into()),
            (format!(r"^{norm}1\."), "stem.layers.2.norm.".into()),
        ],
        (true, _) => vec![
            (r"^stem\.0\.".into(), "stem.layers.0.conv.".into()),
            (r"^stem\.1\.".into(), "stem.layers.0.norm.".into()),
            (r"^stem\.3\.".into(), "stem.layers.1.conv.".into()),
            (r"^stem\.4\.".into(), "stem.layers.1.norm.".into()),
            (r"^stem\.6\.".into(), "stem.layers.2.conv.".into()),
            (r"^stem\.7\.".into(), "stem.layers.2.norm.".into()),
        ],
        (false, _) => vec![
            (r"^conv1\.".into(), "stem.layers.0.conv.".into()),
            (format!(r"^{norm}1\."), "stem.layers.0.norm.".into()),
        ],
    };
    for stage in 1..=4 {
        base.push((
            format!(r"^layer{stage}\.(\d+)\."),
            format!("layers.{}.blocks.$1.", stage - 1),
        ));
    }
    base.push((format!(r"\.{norm}(\d)\."), ".norm$1.".into()));
    // The `downsample` Sequential: [AvgPool2d,] conv, norm.
    let (conv, norm) = if config.avg_down { (1, 2) } else { (0, 1) };
    base.push((
        format!(r"\.downsample\.{conv}\."),
        ".downsample.conv.".into(),
    ));
    base.push((
        format!(r"\.downsample\.{norm}\."),
        ".downsample.norm.".into(),
    ));
    map.extend(base);
    map
}

/// Rules naming the config's plugins as mmdet (and timm, for `se`) do: `layer{s}.{b}.{name}.`
/// is the `k`-th plugin of its position in those blocks, and a context block's `Sequential`
/// indices 0, 1, 3 are its `reduce`, `norm`, `expand`.
fn plugin_key_map(config: &crate::ResNetConfig) -> Vec<(String, String)> {
    let mut map = Vec::new();
    for stage in 0..config.num_stages {
        let mut next_index = std::collections::HashMap::new();
        for entry in config
            .plugins
            .iter()
            .filter(|entry| entry.applies_to(stage))
        {
            let index = next_index.entry(entry.position).or_insert(0usize);
            let module = format!(
                "layers.{stage}.blocks.$1.{}.plugins.{index}.",
                entry.position.name()
            );
            // A non-local block's ConvModules (`g.conv`), behind a max-pool with `sub_sample`
            // (`g.0.conv`); these more specific rules go first.
            if let crate::plugin::PluginConfig::NonLocal2d { sub_sample, .. } = entry.cfg {
                for (part, pooled) in [
                    ("g", sub_sample),
                    ("theta", false),
                    ("phi", sub_sample),
                    ("conv_out", false),
                ] {
                    let sequential = if pooled { r"0\." } else { "" };
                    map.push((
                        format!(
                            r"^layer{}\.(\d+)\.{}\.{part}\.{sequential}conv\.",
                            stage + 1,
                            entry.name()
                        ),
                        format!("{module}{part}."),
                    ));
                }
            }
            map.push((
                format!(r"^layer{}\.(\d+)\.{}\.", stage + 1, entry.name()),
                module,
            ));
            *index += 1;
        }
    }
    if config
        .plugins
        .iter()
        .any(|entry| matches!(entry.cfg, crate::plugin::PluginConfig::ContextBlock { .. }))
    {
        for fusion in ["add", "mul"] {
            for (index, field) in [(0, "reduce"), (1, "norm"), (3, "expand")] {
                map.push((
                    format!(r"\.channel_{fusion}_conv\.{index}\."),
                    format!(".channel_{fusion}.{field}."),
                ));
            }
        }
    }
    map
}

/// The source of a checkpoint with these keys (prefixes stripped) for this backbone:
/// [`WeightSource::detect`]'s guess, except where the backbone decides what the keys cannot.
/// Torchvision has no Res2Net nor ResNeSt, so plain-stem names are timm's there; and a Res2Net
/// without a deep-stem key (`stem.0`, `conv1.0`) to tell is the network of its `stage_pool`:
/// mmdet's (`"strided"`) or timm's (`"always"`).
pub(crate) fn detected_source<'a>(
    keys: impl IntoIterator<Item = &'a str> + Clone,
    backbone: &ResNet,
) -> WeightSource {
    let config = &backbone.spec().config;
    let detected = WeightSource::detect(keys.clone());
    let deep_stem_key = keys
        .into_iter()
        .any(|key| key.starts_with("stem.0.") || key.starts_with("conv1.0."));
    match (config.backbone, detected) {
        (BackboneType::Res2Net, _) if !deep_stem_key => {
            match config.stage_pool == Some(crate::arch::StagePool::Always) {
                true => WeightSource::Timm,
                false => WeightSource::Mmdet,
            }
        }
        (BackboneType::Res2Net | BackboneType::ResNeSt, WeightSource::Torchvision) => {
            WeightSource::Timm
        }
        _ => detected,
    }
}

/// Err where `source`'s library builds a different network from this backbone's config under
/// the same key names, so that its weights would load and compute something else. A Res2Net
/// with mmdet's `stage_pool = "strided"` takes mmdet's names only: timm's Res2Nets
/// (`res2net50_26w_4s`, `res2net50d`, ...) pool the last split of layer1's first block at stride
/// 1, which mmdet passes through; `stage_pool = "always"` is timm's network and takes timm's
/// names only. Torchvision has no Res2Net nor ResNeSt. timm's ResNeSts (`resnest50d`,
/// `resnest101e`) are mmdet's network under mmdet's block names.
pub(crate) fn check_source_builds_this_network(
    source: WeightSource,
    backbone: &ResNet,
) -> Result<()> {
    let config = &backbone.spec().config;
    let refuse = |reason: String| {
        Err(ResNetError::Incompatible {
            field: "weights source".into(),
            reason,
        })
    };
    let timm_pool = config.stage_pool == Some(crate::arch::StagePool::Always);
    match (config.backbone, source) {
        (BackboneType::Res2Net | BackboneType::ResNeSt, WeightSource::Torchvision) => {
            refuse(format!(
                "torchvision has no {}; use mmdet's or timm's names",
                config.backbone.name()
            ))
        }
        (BackboneType::Res2Net, WeightSource::Timm) if !timm_pool => refuse(
            "timm's Res2Nets pool the last split of every stage's first block, at stride 1 too, \
             which mmdet's (this config, stage_pool = \"strided\") passes through; for timm's \
             weights set stage_pool = \"always\" and timm's stem and shortcuts \
             (res2net50_26w_4s: deep_stem = false, avg_down = false)"
                .into(),
        ),
        (BackboneType::Res2Net, WeightSource::Mmdet) if timm_pool => refuse(
            "mmdet's Res2Nets pass the last split of an unstrided first block through; this \
             config (stage_pool = \"always\") is timm's network: load mmdet's weights with \
             stage_pool = \"strided\""
                .into(),
        ),
        _ => Ok(()),
    }
}

/// `(burn-resnet path pattern, key)` pairs that name a backbone's tensors as `names` does: the
/// inverse of [`key_map`].
pub fn export_key_map(names: WeightSource, backbone: &ResNet) -> Result<Vec<(String, String)>> {
    check_source_builds_this_network(names, backbone)?;
    let config = &backbone.spec().config;
    if config.deep_stem && names == WeightSource::Torchvision {
        return Err(ResNetError::Incompatible {
            field: "names".into(),
            reason: "torchvision's ResNets have no deep stem; save with timm or mmdet names".into(),
        });
    }
    // Each loading rule `^source → path` read backwards: `path → source`, with the `$1` of the
    // stage rules turned back into a capture group.
    Ok(key_map(names, backbone)
        .into_iter()
        .map(|(from, to)| {
            let pattern = match to.as_str() {
                t if t.starts_with("stem.") || t.starts_with("layers.") => {
                    format!("^{}", regex_escape(t))
                }
                t => regex_escape(t),
            }
            .replace(r"\$1", r"(\d+)");
            let key = from
                .trim_start_matches('^')
                .replace(r"(\d+)", "$1")
                .replace(r"(\d)", "$1")
                .replace('\\', "");
            (pattern, key)
        })
        .collect())
}

fn regex_escape(text: &str) -> String {
    text.chars()
        .flat_map(|c| {
            if ".$".contains(c) {
                vec!['\\', c]
            } else {
                vec![c]
            }
        })
        .collect()
}

/// The nesting prefixes' rules, then `map`'s.
pub(crate) fn rules(map: &[(String, String)]) -> impl Iterator<Item = (&str, &str)> {
    PREFIXES
        .iter()
        .copied()
        .chain(map.iter().map(|(from, to)| (from.as_str(), to.as_str())))
}

/// A function naming a module path (enum variants included or not) as `source`'s key; paths it
/// cannot name come back as they are. The variant names (`Bottleneck`, `Batch`, `Deformable`…)
/// are read from the backbone itself, so a new block kind, norm or plugin needs no entry here.
pub fn file_key_namer(source: WeightSource, backbone: &ResNet) -> impl Fn(&str) -> String {
    let rules: Vec<(regex::Regex, String)> = export_key_map(source, backbone)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(pattern, key)| Some((regex::Regex::new(&pattern).ok()?, key)))
        .collect();
    let variants = enum_variants(backbone);
    move |path: &str| {
        let mut key = path
            .split('.')
            .filter(|segment| !variants.contains(*segment))
            .collect::<Vec<_>>()
            .join(".");
        for (pattern, replacement) in &rules {
            key = pattern.replace(&key, replacement.as_str()).into_owned();
        }
        // Burn's norms name gamma/beta what PyTorch names weight/bias; a GeneralizedAttention's
        // own `gamma` keeps its name.
        if key.contains(".gen_attention_block") {
            return key;
        }
        key.replace(".gamma", ".weight").replace(".beta", ".bias")
    }
}

/// Strip the nesting prefixes from a key.
pub(crate) fn strip_prefixes(key: &str) -> &str {
    let key = key.strip_prefix("state_dict.").unwrap_or(key);
    let key = key.strip_prefix("model.").unwrap_or(key);
    key.strip_prefix("backbone.").unwrap_or(key)
}

/// The enum variant names in `backbone`'s module paths (Burn names an enum module's field by
/// its variant: `blocks.0.Bottleneck.conv1`).
fn enum_variants(backbone: &ResNet) -> BTreeSet<String> {
    struct Variants(BTreeSet<String>);
    impl ModuleVisitor for Variants {
        fn enter_module(&mut self, name: &str, container_type: &str) {
            if container_type.starts_with("Enum:") {
                self.0.insert(name.to_string());
            }
        }
        fn visit_float<const D: usize>(&mut self, _param: &Param<Tensor<D>>) {}
    }
    let mut visitor = Variants(BTreeSet::new());
    backbone.visit(&mut visitor);
    visitor.0
}
