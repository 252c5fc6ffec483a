//! Swapping backends at run time: the module type is the same on every backend; the `Device`
//! picks one. A model saved on one backend (burnpack) loads on any other and gives the same
//! features.
//!
//! ```sh
//! cargo run --release -p burn-resnet --features ndarray,wgpu --example backends
//! ```

use burn::tensor::{Distribution, Tensor};
use burn_resnet::{BackendKind, ResNetConfig};

/// The largest difference of each backend's features from the first backend's.
fn run() -> Result<Vec<(BackendKind, f32)>, Box<dyn std::error::Error>> {
    let spec =
        ResNetConfig::from_toml_str("depth = 18\nbase_channels = 8", "example")?.validate()?;
    let backends = BackendKind::enabled();
    let first = backends[0].device()?;
    let model = spec.init(&first);
    let file =
        std::env::temp_dir().join(format!("burn-resnet-backends-{}.bpk", std::process::id()));
    model.save_burnpack(&file)?;
    let images = Tensor::<4>::random([1, 3, 64, 64], Distribution::Normal(0.0, 1.0), &first);
    let reference: Vec<Vec<f32>> = model
        .forward(images.clone())
        .into_iter()
        .map(|f| f.into_data().try_to_vec::<f32>().unwrap())
        .collect();

    let mut differences = Vec::new();
    for backend in backends {
        let device = backend.device()?;
        // The same weights and the same input, on this backend.
        let model = spec.init(&device).load_burnpack(&file)?;
        let input = Tensor::<4>::from_data(images.clone().into_data(), &device);
        let features = model.forward(input);
        let largest = features
            .into_iter()
            .zip(&reference)
            .flat_map(|(f, r)| {
                let values: Vec<f32> = f.into_data().try_to_vec::<f32>().unwrap();
                values
                    .iter()
                    .zip(r)
                    .map(|(a, b)| (a - b).abs())
                    .collect::<Vec<_>>()
            })
            .fold(0f32, |m, d| if d > m || d.is_nan() { d } else { m });
        println!(
            "{backend}: largest difference from {} {largest:.2e}",
            BackendKind::enabled()[0]
        );
        differences.push((backend, largest));
    }
    std::fs::remove_file(&file)?;
    Ok(differences)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    run().map(|_| ())
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_backend_gives_the_same_features() {
        for (backend, difference) in super::run().unwrap() {
            assert!(difference < 1e-3, "{backend}: {difference}");
        }
    }
}
