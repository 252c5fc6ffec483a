//! `resnet convert`: checkpoints rewritten under another library's names and to burnpack.

use super::*;

#[test]
fn convert_rewrites_a_timm_checkpoint_under_mmdet_names_and_to_burnpack() {
    let out = std::env::temp_dir().join(format!(
        "resnet-cli-convert-{}.safetensors",
        std::process::id()
    ));
    let args = |to: &str, out: &str| {
        vec![
            "convert".to_string(),
            "--config".into(),
            "tests/fixtures/checkpoints/timm_resnet18d.toml".into(),
            "tests/fixtures/checkpoints/timm_resnet18d.pth".into(),
            out.to_string(),
            "--to".into(),
            to.to_string(),
        ]
    };
    let text = stdout(&resnet(
        &args("mmdet", out.to_str().unwrap())
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    ));
    assert!(text.contains("(timm names) ->"), "{text}");
    let bytes = std::fs::read(&out).unwrap();
    let names: Vec<String> = safetensors::SafeTensors::deserialize(&bytes)
        .unwrap()
        .names()
        .into_iter()
        .map(str::to_string)
        .collect();
    assert!(
        names.iter().any(|n| n == "stem.0.weight")
            && names.iter().any(|n| n == "layer2.0.downsample.1.weight"),
        "{names:?}"
    );
    std::fs::remove_file(&out).unwrap();
    let err = stderr_of_failure(&resnet(
        &args("torchvision", out.to_str().unwrap())
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    ));
    assert!(err.contains("no deep stem"), "{err}");
}
