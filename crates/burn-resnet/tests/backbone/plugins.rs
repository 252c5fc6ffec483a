//! Plugin hooks: where plugins run, with how many channels, in which order, and the errors.

use burn::tensor::{Device, Distribution, Tensor};
use burn_resnet::block::Block;
use burn_resnet::norm::Norm;
use burn_resnet::plugin::{
    Plugin, PluginPosition, SqueezeExcitation, SqueezeExcitationConfig, make_divisible,
};
use burn_resnet::{ResNet, ResNetError};

use crate::common::{config, devices, values};

/// A squeeze-and-excitation whose excitation is sigmoid(0) = 0.5 everywhere: it halves its input.
fn halving_se(channels: usize, device: &Device) -> SqueezeExcitation {
    let mut se = SqueezeExcitationConfig::new(channels).init(device);
    se.fc2.weight = se.fc2.weight.map(|w| w.zeros_like());
    se.fc2.bias = se.fc2.bias.map(|b| b.map(|b| b.zeros_like()));
    se
}

fn max_abs_diff(a: &[Tensor<4>], b: &[Tensor<4>]) -> f32 {
    assert_eq!(a.len(), b.len(), "outputs");
    a.iter()
        .zip(b)
        .map(|(a, b)| {
            values((a.clone() - b.clone()).abs().max())
                .into_iter()
                .fold(0.0, f32::max)
        })
        .fold(0.0, f32::max)
}

#[test]
fn squeeze_excitation_scales_channels_by_the_gate() {
    for (_, device) in devices() {
        let x = Tensor::<4>::random([2, 16, 5, 3], Distribution::Normal(0.0, 1.0), &device);
        let out = halving_se(16, &device).forward(x.clone());
        assert_eq!(values(out), values(x.mul_scalar(0.5)));
    }
    assert_eq!(
        [
            make_divisible(4.0, 8),
            make_divisible(16.0, 8),
            make_divisible(6.25, 8),
            make_divisible(128.0, 8)
        ],
        [8, 16, 8, 128]
    );
}

/// `f` with flex's inference in the NCHW layout.
fn nchw<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(feature = "flex")]
    return burn_resnet::InferenceLayout::Nchw.force(f);
    #[cfg(not(feature = "flex"))]
    f()
}

/// Halving a Bottleneck's conv3 output before the residual add is the same as halving its last
/// norm's weight and bias (eval mode): proof that after_conv3 plugins run after the norm and
/// before the add, in the selected stages only.
#[test]
fn after_conv3_plugins_run_between_the_last_norm_and_the_residual_add() {
    let stages = [false, true, false, true];
    for (backend, device) in devices() {
        let backbone = config("depth = 50\nbase_channels = 4\nzero_init_residual = false")
            .init(&device)
            .unwrap();
        let with_plugins = backbone
            .clone()
            .add_plugins(PluginPosition::AfterConv3, Some(&stages), |c| {
                Plugin::SqueezeExcitation(halving_se(c, &device))
            })
            .unwrap();
        let mut halved = backbone.clone();
        for (layer, _) in halved.layers.iter_mut().zip(stages).filter(|(_, on)| *on) {
            for block in &mut layer.blocks {
                let Block::Bottleneck(block) = block else {
                    panic!("bottleneck")
                };
                let Norm::Batch(norm) = &mut block.norm3 else {
                    panic!("batch norm")
                };
                norm.gamma = norm.gamma.clone().map(|g| g.mul_scalar(0.5));
                norm.beta = norm.beta.clone().map(|b| b.mul_scalar(0.5));
            }
        }
        let x = Tensor::<4>::random([1, 3, 48, 40], Distribution::Normal(0.0, 1.0), &device);
        // On one inference path: flex's blocked layout would take the models without plugins
        // only, and its sums round differently (~5e-5 here) from the NCHW convs'.
        let (a, b, plain) = nchw(|| {
            (
                with_plugins.forward(x.clone()),
                halved.forward(x.clone()),
                backbone.forward(x),
            )
        });
        assert!(
            max_abs_diff(&a, &b) < 1e-5,
            "{backend}: {}",
            max_abs_diff(&a, &b)
        );
        assert!(
            max_abs_diff(&a, &plain) > 1e-2,
            "{backend}: the plugins changed nothing"
        );
    }
}

fn plugin_channels(backbone: &ResNet, position: PluginPosition) -> Vec<Vec<usize>> {
    let mut backbone = backbone.clone();
    backbone
        .layers
        .iter_mut()
        .map(|layer| {
            layer
                .blocks
                .iter_mut()
                .filter_map(|block| {
                    let (stack, _) = block.plugin_stack_mut(position)?;
                    match stack.plugins.first()? {
                        Plugin::SqueezeExcitation(se) => Some(se.fc1.weight.dims()[1]),
                        Plugin::ContextBlock(block) => block
                            .channel_add
                            .as_ref()
                            .map(|t| t.reduce.weight.dims()[1]),
                        Plugin::NonLocal2d(block) => Some(block.config.channels),
                        Plugin::GeneralizedAttention(block) => Some(block.config.channels),
                    }
                })
                .collect()
        })
        .collect()
}

#[test]
fn plugins_get_the_block_width_or_the_output_channels() {
    let (_, device) = devices().remove(0);
    // ResNeXt 4x2d at base 8: width = planes; after conv1/conv2 the plugin sees the width.
    let resnext =
        config("depth = 50\nbase_channels = 8\ngroups = 4\nbase_width = 4\nnum_stages = 2")
            .init(&device)
            .unwrap();
    let se = |c| Plugin::SqueezeExcitation(SqueezeExcitationConfig::new(c).init(&device));
    let resnext = resnext
        .add_plugins(PluginPosition::AfterConv2, None, se)
        .unwrap()
        .add_plugins(PluginPosition::AfterConv3, Some(&[false, true]), se)
        .unwrap();
    // width = floor(planes * 4 / 8) * 4 = 2 * planes: 16, 32.
    assert_eq!(
        plugin_channels(&resnext, PluginPosition::AfterConv2),
        [vec![16; 3], vec![32; 4]]
    );
    assert_eq!(
        plugin_channels(&resnext, PluginPosition::AfterConv3),
        [vec![], vec![64; 4]]
    );
    let out = resnext.forward(Tensor::<4>::ones([1, 3, 32, 32], &device));
    assert_eq!(out[1].dims(), [1, 64, 4, 4]);

    let basic = config("depth = 18\nbase_channels = 4")
        .init(&device)
        .unwrap();
    let basic = basic
        .add_plugins(PluginPosition::AfterConv1, None, se)
        .unwrap();
    assert_eq!(
        plugin_channels(&basic, PluginPosition::AfterConv1),
        [vec![4; 2], vec![8; 2], vec![16; 2], vec![32; 2]]
    );
}

#[test]
fn plugins_at_one_position_run_in_the_order_added() {
    let (_, device) = devices().remove(0);
    let backbone = config("depth = 18\nbase_channels = 4\nnum_stages = 1")
        .init(&device)
        .unwrap();
    let mut calls = 0;
    let backbone = backbone
        .add_plugins(PluginPosition::AfterConv2, None, |c| {
            calls += 1;
            Plugin::SqueezeExcitation(
                SqueezeExcitationConfig {
                    channels: c,
                    reduced: 8,
                }
                .init(&device),
            )
        })
        .unwrap()
        .add_plugins(PluginPosition::AfterConv2, None, |c| {
            Plugin::SqueezeExcitation(
                SqueezeExcitationConfig {
                    channels: c,
                    reduced: 16,
                }
                .init(&device),
            )
        })
        .unwrap();
    assert_eq!(calls, 2, "one plugin per block");
    let Block::Basic(block) = &backbone.layers[0].blocks[1] else {
        panic!("basic")
    };
    let reduced: Vec<_> = block
        .after_conv2
        .plugins
        .iter()
        .map(|plugin| match plugin {
            Plugin::SqueezeExcitation(se) => se.fc1.weight.dims()[0],
            Plugin::ContextBlock(_) | Plugin::NonLocal2d(_) | Plugin::GeneralizedAttention(_) => {
                panic!("only SE plugins were added")
            }
        })
        .collect();
    assert_eq!(reduced, [8, 16]);
}

#[test]
fn invalid_plugin_placements_are_typed_errors() {
    let (_, device) = devices().remove(0);
    let se = |c| Plugin::SqueezeExcitation(SqueezeExcitationConfig::new(c).init(&device));
    let basic = config("depth = 18\nbase_channels = 4")
        .init(&device)
        .unwrap();
    let error = basic
        .clone()
        .add_plugins(PluginPosition::AfterConv3, None, se)
        .unwrap_err();
    assert!(
        matches!(&error, ResNetError::Incompatible { field, .. } if field == "plugins.position"),
        "{error:?}"
    );
    assert!(error.to_string().contains("after_conv2"), "{error}");
    let error = basic
        .add_plugins(PluginPosition::AfterConv1, Some(&[true, false]), se)
        .unwrap_err();
    assert!(
        matches!(&error, ResNetError::WrongLength { field, expected: 4, got: 2 } if field == "plugins.stages"),
        "{error:?}"
    );
}

/// mmdet's `plugins` list in a TOML config: built in the given stages and positions, in order.
#[test]
fn plugins_from_the_config_are_built_where_they_say() {
    let toml = "depth = 50\nbase_channels = 8\n\
        [[plugins]]\nposition = \"after_conv3\"\nstages = [false, true, true, true]\ncfg = { type = \"ContextBlock\", ratio = 0.0625 }\n\
        [[plugins]]\nposition = \"after_conv2\"\ncfg = { type = \"SE\" }\n\
        [[plugins]]\nposition = \"after_conv2\"\ncfg = { type = \"ContextBlock\", ratio = 0.25, pooling_type = \"avg\", fusion_types = [\"channel_mul\"], postfix = \"_2\" }\n";
    for (_, device) in devices() {
        let backbone = config(toml).init(&device).unwrap();
        for (stage, layer) in backbone.layers.iter().enumerate() {
            for block in &layer.blocks {
                let Block::Bottleneck(b) = block else {
                    panic!("depth 50 has Bottlenecks")
                };
                let after_conv3: Vec<_> = b
                    .after_conv3
                    .plugins
                    .iter()
                    .map(|p| matches!(p, Plugin::ContextBlock(_)))
                    .collect();
                assert_eq!(
                    after_conv3,
                    if stage == 0 { vec![] } else { vec![true] },
                    "stage {stage}"
                );
                let after_conv2: Vec<&str> = b
                    .after_conv2
                    .plugins
                    .iter()
                    .map(|p| match p {
                        Plugin::SqueezeExcitation(_) => "SE",
                        Plugin::ContextBlock(c) => {
                            if c.conv_mask.is_none() && c.channel_mul.is_some() {
                                "GC avg mul"
                            } else {
                                "GC?"
                            }
                        }
                        Plugin::NonLocal2d(_) => "NL",
                        Plugin::GeneralizedAttention(_) => "GA",
                    })
                    .collect();
                assert_eq!(
                    after_conv2,
                    ["SE", "GC avg mul"],
                    "stage {stage}: in the order given"
                );
            }
        }
        // And the backbone runs with them.
        let images = Tensor::<4>::random([1, 3, 32, 32], Distribution::Normal(0.0, 1.0), &device);
        assert_eq!(backbone.forward(images).len(), 4);
    }
}

#[test]
fn invalid_plugin_configs_are_typed_errors() {
    let error = |toml: &str| {
        burn_resnet::ResNetConfig::from_toml_str(toml, "test")
            .and_then(|c| c.validate())
            .unwrap_err()
    };
    let base = "depth = 50\nbase_channels = 8\n[[plugins]]\n";
    let mask = error(&format!(
        "{base}position = \"after_conv3\"\nstages = [true, false]\ncfg = {{ type = \"SE\" }}\n"
    ));
    assert!(
        matches!(mask, ResNetError::WrongLength { ref field, expected: 4, got: 2 } if field == "plugins[0].stages"),
        "{mask}"
    );
    let kind = error(&format!(
        "{base}position = \"after_conv3\"\ncfg = {{ type = \"NonLocal9d\" }}\n"
    ));
    assert!(
        matches!(kind, ResNetError::Parse { .. }) && kind.to_string().contains("NonLocal9d"),
        "{kind}"
    );
    let position = error(&format!(
        "{base}position = \"after_conv4\"\ncfg = {{ type = \"SE\" }}\n"
    ));
    assert!(position.to_string().contains("after_conv4"), "{position}");
    let ratio = error(&format!(
        "{base}position = \"after_conv1\"\ncfg = {{ type = \"ContextBlock\", ratio = 0.01 }}\n"
    ));
    assert!(
        ratio.to_string().contains("plugins[0].cfg (ContextBlock)"),
        "{ratio}"
    );
    let twice = format!(
        "{base}position = \"after_conv3\"\ncfg = {{ type = \"SE\" }}\n[[plugins]]\nposition = \"after_conv2\"\ncfg = {{ type = \"SE\" }}\n"
    );
    let twice = error(&twice);
    assert!(
        twice
            .to_string()
            .contains("plugins[0] and plugins[1] would both be `se`"),
        "{twice}"
    );
    let basic = error(
        "depth = 18\nbase_channels = 8\n[[plugins]]\nposition = \"after_conv3\"\ncfg = { type = \"SE\" }\n",
    );
    assert!(
        basic.to_string().starts_with("plugins[0].position"),
        "{basic}"
    );
}
