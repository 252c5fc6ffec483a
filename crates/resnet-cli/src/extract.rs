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
use crate::output;

/// What `resnet extract` was asked to do.
pub struct Request {
    pub config: PathBuf,
    pub image: Option<PathBuf>,
    pub size: [usize; 2],
    pub weights: Option<PathBuf>,
    /// The weights' key names; `None` detects them.
    pub weights_source: Option<WeightSource>,
    /// Load what matches and report the rest instead of failing.
    pub partial: bool,
    pub backend: BackendKind,
    pub out: Option<PathBuf>,
    /// Replace an existing regular file at `out`.
    pub force: bool,
    /// The estimated memory of the run must fit in this.
    pub memory_limit: MemoryLimit,
}

/// Build the backbone, run the image twice (the first run includes one-off set-up such as
/// kernel compilation on wgpu) and print the outputs.
pub fn run(request: &Request) -> Result<(), CliError> {
    if let Some(out) = &request.out {
        let inputs: Vec<&Path> = [
            Some(&request.config),
            request.image.as_ref(),
            request.weights.as_ref(),
        ]
        .into_iter()
        .flatten()
        .map(PathBuf::as_path)
        .collect();
        output::check(out, &inputs, request.force)?;
    }
    let config = ResNetConfig::from_toml_file(&request.config)?;
    let spec = config.validate()?;
    check_request(&spec, request)?;
    let device = request.backend.device()?;
    let mut backbone = spec.init(&device);
    if let Some(weights) = &request.weights {
        let (loaded, report) = match request.partial {
            true => backbone.load_weights_partial(weights, request.weights_source)?,
            false => backbone.load_weights(weights, request.weights_source)?,
        };
        backbone = loaded;
        println!(
            "weights: {} ({} names{}; {} non-backbone tensors skipped{})",
            weights.display(),
            report.source,
            if report.detected { ", detected" } else { "" },
            report.skipped.len(),
            if report.skipped.is_empty() {
                String::new()
            } else {
                format!(": {}", report.skipped.join(", "))
            }
        );
        if !report.zero_offsets.is_empty() {
            println!(
                "weights: the file has no DCN offset convs; {} offset tensors keep their zero init (each DCN starts as a regular conv)",
                report.zero_offsets.len()
            );
        }
        if !report.not_loaded.is_empty() {
            println!(
                "--partial: {} tensors keep their initial values:\n  {}",
                report.not_loaded.len(),
                report.not_loaded.join("\n  ")
            );
        }
    }
    let preprocessing = Preprocessing::for_style(spec.config.style);
    let images = image_input::load(
        request.image.as_deref(),
        request.size,
        preprocessing,
        &device,
    )?;
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

    let image = request
        .image
        .as_ref()
        .map_or("bundled sample".to_string(), |p| p.display().to_string());
    println!(
        "{} on {} ({}x{}, {}), backend {}",
        request.config.display(),
        image,
        request.size[0],
        request.size[1],
        preprocessing.describe(),
        request.backend
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

    if let Some(out) = &request.out {
        // The preprocessed image goes along, so that another implementation can be run on
        // exactly the same input (tools/check_torchvision.py).
        let mut tensors = features;
        tensors.push(images.into_data());
        let mut names: Vec<String> = info.iter().map(|i| i.level_name()).collect();
        names.push("input".to_string());
        write_features(out, &tensors, &names, request)?;
        println!("features written to {}", out.display());
    }
    Ok(())
}

/// Refuse, before anything is allocated, a config that does not take RGB pictures, a size the
/// image decoder cannot make, or a run whose estimated memory exceeds the limit.
fn check_request(spec: &ResNetSpec, request: &Request) -> Result<(), CliError> {
    let [height, width] = request.size;
    if spec.config.in_channels != 3 {
        return Err(CliError::ResNet(ResNetError::Incompatible {
            field: "in_channels".into(),
            reason: format!(
                "{}: extract feeds RGB pictures (3 channels) and cannot make {} channels; \
                 build such an input tensor yourself and call ResNet::try_forward",
                request.config.display(),
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
    estimate.check(
        &format!("extract at {height}x{width}"),
        &request.memory_limit,
    )?;
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

/// Write the features as float32 safetensors, keyed by level (`C2` …), and the input.
fn write_features(
    out: &Path,
    features: &[TensorData],
    names: &[String],
    request: &Request,
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
        ("config".to_string(), request.config.display().to_string()),
        ("backend".to_string(), request.backend.to_string()),
    ]);
    let bytes =
        safetensors::serialize(views, Some(metadata)).map_err(|e| output_error(e.to_string()))?;
    output::write_atomically(out, &bytes)
}
