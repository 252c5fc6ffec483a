//! `resnet extract`: run one image through a backbone.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use burn::tensor::TensorData;
use burn_resnet::weights::WeightSource;
use burn_resnet::{
    BackendKind, MemoryLimit, ModelSummary, ResNetConfig, ResNetError, ResNetSpec, Workload,
};

use crate::error::CliError;
use crate::image_input::{self, Preprocessing};
use crate::weights_report;
use crate::{options, output};

/// The options of `resnet extract`.
#[derive(clap::Args)]
pub struct ExtractArgs {
    /// A backbone config (TOML).
    #[arg(long)]
    config: PathBuf,
    /// The image (PNG or JPEG); without it, a bundled sample picture.
    #[arg(long)]
    image: Option<PathBuf>,
    /// Resize the image to HEIGHTxWIDTH before the backbone.
    #[arg(long, default_value = "224x224", value_parser = options::parse_size)]
    size: [usize; 2],
    /// A torchvision, timm or mmdet checkpoint (.pth or .safetensors); without it, mmdet's
    /// random init.
    #[arg(long)]
    weights: Option<PathBuf>,
    /// The checkpoint's key names: mmdet, torchvision or timm; default: detected.
    #[arg(long, value_parser = options::weight_source())]
    weights_source: Option<WeightSource>,
    /// Load what matches, keep the initial values of the rest, and list it.
    #[arg(long)]
    partial: bool,
    /// flex, ndarray, wgpu or cuda; default: the fastest CPU backend compiled in (flex).
    #[arg(long, value_parser = options::backend())]
    backend: Option<BackendKind>,
    /// Write the features (keys C1..C5) and the preprocessed image (`input`) to this
    /// safetensors file. Never onto an input, a directory, a device or a symbolic link; an
    /// existing file only with --force.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Replace an existing regular file at --out.
    #[arg(long)]
    force: bool,
}

/// Build the backbone, run the image twice (the first run includes one-off set-up such as
/// kernel compilation on wgpu) and print the outputs. The estimated memory of the run must fit
/// in `memory_limit`.
pub fn run(args: &ExtractArgs, memory_limit: &MemoryLimit) -> Result<(), CliError> {
    let backend = options::backend_or_default(args.backend)?;
    if let Some(out) = &args.out {
        let inputs: Vec<&Path> = [
            Some(&args.config),
            args.image.as_ref(),
            args.weights.as_ref(),
        ]
        .into_iter()
        .flatten()
        .map(PathBuf::as_path)
        .collect();
        output::check(out, &inputs, args.force)?;
    }
    let config = ResNetConfig::from_toml_file(&args.config)?;
    let spec = config.validate()?;
    check_request(&spec, args, memory_limit)?;
    let device = backend.device()?;
    let mut backbone = spec.init(&device);
    if let Some(weights) = &args.weights {
        let (loaded, report) = match args.partial {
            true => backbone.load_weights_partial(weights, args.weights_source)?,
            false => backbone.load_weights(weights, args.weights_source)?,
        };
        backbone = loaded;
        for line in weights_report::describe(weights, &report) {
            println!("{line}");
        }
    }
    let preprocessing = Preprocessing::for_style(spec.config.style);
    let images = image_input::load(args.image.as_deref(), args.size, preprocessing, &device)?;
    backbone.check_input(images.dims())?;

    let timed = || {
        let started = Instant::now();
        let features: Vec<TensorData> = backbone
            .forward(images.clone())
            .into_iter()
            .map(|f| f.into_data())
            .collect();
        (features, started.elapsed())
    };
    let (_, first) = timed();
    let (features, steady) = timed();

    let image = args
        .image
        .as_ref()
        .map_or("bundled sample".to_string(), |p| p.display().to_string());
    println!(
        "{} on {} ({}x{}, {}), backend {}",
        args.config.display(),
        image,
        args.size[0],
        args.size[1],
        preprocessing.describe(),
        backend
    );
    println!(
        "{:<6} {:<7} {:>22} {:>7} {:>11}",
        "level", "module", "shape", "stride", "non-finite"
    );
    let info = backbone.feature_info();
    let mut damaged = Vec::new();
    for (data, meta) in features.iter().zip(&info) {
        let counts = NonFinite::count(data);
        println!(
            "{:<6} {:<7} {:>22} {:>7} {:>11}",
            meta.level_name(),
            meta.module,
            format!("{:?}", data.shape().as_slice()),
            meta.reduction,
            counts.nan + counts.inf
        );
        if counts.nan + counts.inf > 0 {
            damaged.push(format!(
                "{} has {} NaN and {} ±Inf of {} values",
                meta.level_name(),
                counts.nan,
                counts.inf,
                counts.total
            ));
        }
    }
    println!(
        "forward: {} first run, {} second run",
        millis(first),
        millis(steady)
    );
    if !damaged.is_empty() {
        // The same numbers PyTorch would give (NaN and Inf propagate), but not features anyone
        // wants: say so where it cannot be missed.
        eprintln!(
            "warning: non-finite features: {}. Usually a NaN or Inf weight, or a negative running_var, in the weights; \
             PyTorch gives the same",
            damaged.join("; ")
        );
    }

    if let Some(out) = &args.out {
        // The preprocessed image goes along, so that another implementation can be run on
        // exactly the same input (tools/check_torchvision.py).
        let mut tensors = features;
        tensors.push(images.into_data());
        let mut names: Vec<String> = info.iter().map(|i| i.level_name()).collect();
        names.push("input".to_string());
        write_features(out, &tensors, &names, &args.config, backend)?;
        println!("features written to {}", out.display());
    }
    Ok(())
}

/// Refuse, before anything is allocated, a config that does not take RGB pictures, a size the
/// image decoder cannot make, or a run whose estimated memory exceeds the limit.
fn check_request(
    spec: &ResNetSpec,
    args: &ExtractArgs,
    memory_limit: &MemoryLimit,
) -> Result<(), CliError> {
    let [height, width] = args.size;
    if spec.config.in_channels != 3 {
        return Err(CliError::ResNet(ResNetError::Incompatible {
            field: "in_channels".into(),
            reason: format!(
                "{}: extract feeds RGB pictures (3 channels) and cannot make {} channels; \
                 build such an input tensor yourself and call ResNet::try_forward",
                args.config.display(),
                spec.config.in_channels
            ),
        }));
    }
    if let Some(side) = [height, width]
        .into_iter()
        .find(|&side| side > u32::MAX as usize)
    {
        return Err(CliError::Size(format!(
            "{side} is more than the image library's largest side, {}",
            u32::MAX
        )));
    }
    let mut estimate = ModelSummary::new(spec, height, width)?.memory(1, Workload::Inference)?;
    // The resized 8-bit RGB image and the decoder's float copy of it.
    let image = (height as u64)
        .checked_mul(width as u64)
        .and_then(|pixels| pixels.checked_mul(3 + 3 * 4));
    estimate.activations = image
        .and_then(|bytes| bytes.checked_add(estimate.activations))
        .ok_or_else(|| CliError::Size(format!("{height}x{width} overflows the memory estimate")))?;
    estimate.check(&format!("extract at {height}x{width}"), memory_limit)?;
    Ok(())
}

/// NaN and ±Inf counts of one output.
struct NonFinite {
    nan: usize,
    inf: usize,
    total: usize,
}

impl NonFinite {
    fn count(data: &TensorData) -> Self {
        let values = data.iter::<f32>();
        let (mut nan, mut inf, mut total) = (0, 0, 0);
        for v in values {
            nan += v.is_nan() as usize;
            inf += v.is_infinite() as usize;
            total += 1;
        }
        Self { nan, inf, total }
    }
}

fn millis(duration: Duration) -> String {
    format!("{:.1} ms", duration.as_secs_f64() * 1e3)
}

/// Write the features as float32 safetensors, keyed by level (`C2` …), and the input, with the
/// config's path and the backend as metadata.
fn write_features(
    out: &Path,
    features: &[TensorData],
    names: &[String],
    config: &Path,
    backend: BackendKind,
) -> Result<(), CliError> {
    let output_error = |message: String| CliError::Output {
        path: out.to_path_buf(),
        message,
    };
    let bytes: Vec<Vec<u8>> = features
        .iter()
        .map(|data| {
            let values = data
                .clone()
                .convert::<f32>()
                .try_into_vec::<f32>()
                .map_err(|e| output_error(format!("{e:?}")))?;
            Ok(values.iter().flat_map(|v| v.to_le_bytes()).collect())
        })
        .collect::<Result<_, CliError>>()?;
    let views = names
        .iter()
        .zip(features.iter().zip(&bytes))
        .map(|(name, (data, bytes))| {
            safetensors::tensor::TensorView::new(
                safetensors::Dtype::F32,
                data.shape().to_vec(),
                bytes,
            )
            .map(|view| (name.clone(), view))
            .map_err(|e| output_error(e.to_string()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let metadata = HashMap::from([
        ("config".to_string(), config.display().to_string()),
        ("backend".to_string(), backend.to_string()),
    ]);
    let bytes =
        safetensors::serialize(views, Some(metadata)).map_err(|e| output_error(e.to_string()))?;
    output::write_atomically(out, &bytes)
}
