//! `resnet convert`: rewrite a checkpoint under another library's key names (safetensors), or
//! as Burn's burnpack under burn-resnet's own module paths.

use std::path::PathBuf;

use burn_resnet::weights::WeightSource;
use burn_resnet::{BackendKind, MemoryLimit, ResNetConfig};
use clap::builder::{PossibleValuesParser, TypedValueParser};

use crate::error::CliError;
use crate::{options, output};

/// The options of `resnet convert`.
#[derive(clap::Args)]
pub struct ConvertArgs {
    /// The backbone config the checkpoint belongs to (TOML).
    #[arg(long)]
    config: PathBuf,
    /// The checkpoint to read (.pth or .safetensors).
    input: PathBuf,
    /// The file to write, at exactly this path. Never the input, a directory, a device or a
    /// symbolic link; an existing file only with --force.
    output: PathBuf,
    /// Replace an existing regular file at OUTPUT.
    #[arg(long)]
    force: bool,
    /// The input's key names: mmdet, torchvision or timm; default: detected.
    #[arg(long, value_parser = options::weight_source())]
    from: Option<WeightSource>,
    /// burnpack, or mmdet, torchvision or timm (safetensors with those names).
    #[arg(long, default_value = "burnpack", value_parser = convert_target())]
    to: ConvertTarget,
}

/// What `convert --to` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ConvertTarget {
    /// Burn's burnpack, under burn-resnet's own module paths.
    Burnpack,
    /// safetensors under a library's key names.
    Names(WeightSource),
}

impl std::fmt::Display for ConvertTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ConvertTarget::Burnpack => "burnpack",
            ConvertTarget::Names(source) => source.name(),
        })
    }
}

/// `--to`: burnpack or a weight source name (listed in `--help`).
fn convert_target() -> impl TypedValueParser<Value = ConvertTarget> {
    let names = std::iter::once("burnpack").chain(WeightSource::ALL.map(WeightSource::name));
    PossibleValuesParser::new(names).try_map(|name| match name.as_str() {
        "burnpack" => Ok(ConvertTarget::Burnpack),
        name => name.parse::<WeightSource>().map(ConvertTarget::Names),
    })
}

/// Load `args.input` into the backbone of `args.config` on the default backend (its weights'
/// estimated memory must fit in `memory_limit`) and write it to `args.output` as `args.to`
/// says; print what was converted.
pub fn run(args: &ConvertArgs, memory_limit: &MemoryLimit) -> Result<(), CliError> {
    output::check(&args.output, &[&args.config, &args.input], args.force)?;
    let spec = ResNetConfig::from_toml_file(&args.config)?.validate()?;
    spec.check_weights_memory(memory_limit)?;
    let device = BackendKind::default_enabled()
        .ok_or(CliError::NoBackend)?
        .device()?;
    let (backbone, report) = spec.init(&device).load_weights(&args.input, args.from)?;
    match args.to {
        ConvertTarget::Burnpack => backbone.save_burnpack(&args.output)?,
        ConvertTarget::Names(names) => backbone.save_weights(&args.output, names)?,
    }
    println!(
        "{} ({} names) -> {} ({}); {} non-backbone tensors left out",
        args.input.display(),
        report.source,
        args.output.display(),
        args.to,
        report.skipped.len()
    );
    Ok(())
}
