#!/usr/bin/env python3
"""Make tests/fixtures/plugins/: mmcv's own ContextBlock (GCNet), NonLocal2d and
GeneralizedAttention with random weights — every parameter random, the zero-initialised last convs and the LayerNorm included —
on a random input, in float32. Keys: `<case>.input`, `<case>.output`, and
`<case>.<mmcv parameter name>`; the metadata lists each case's arguments.

    python3 tools/make_plugin_fixtures.py
"""
import copy
import os
import re

import torch
from mmcv.cnn.bricks.context_block import ContextBlock
from mmcv.cnn.bricks.generalized_attention import GeneralizedAttention
from mmcv.cnn.bricks.non_local import NonLocal2d
from safetensors.torch import save_file

CASES = {
    # name: (channels, ratio, pooling_type, fusion_types, input shape)
    "att_add": (16, 1 / 4, "att", ("channel_add",), (2, 16, 7, 5)),
    "avg_mul_add": (12, 1 / 3, "avg", ("channel_mul", "channel_add"), (2, 12, 6, 6)),
    "att_mul": (8, 1 / 2, "att", ("channel_mul",), (1, 8, 9, 4)),
}


NON_LOCAL_CASES = {
    # name: (channels, reduction, use_scale, mode, sub_sample, input shape)
    "embedded_gaussian": (16, 2, True, "embedded_gaussian", False, (2, 16, 6, 5)),
    "dot_product_sub_sample": (8, 4, False, "dot_product", True, (1, 8, 6, 6)),
    "gaussian_sub_sample": (8, 2, True, "gaussian", True, (2, 8, 5, 4)),
}


GENERALIZED_ATTENTION_CASES = {
    # name: (kwargs, input shape). mmcv builds its spatial_range mask only for 256 or 512
    # input channels.
    "default_1111": (dict(in_channels=16, num_heads=2), (2, 16, 7, 6)),
    "q_stride_2_kv_1": (dict(in_channels=16, num_heads=4, kv_stride=1, q_stride=2, attention_type="1111",
                             position_embedding_dim=8, position_magnitude=2), (1, 16, 7, 5)),
    "content_only_1000": (dict(in_channels=12, num_heads=3, attention_type="1000"), (2, 12, 6, 6)),
    "key_bias_only_0010": (dict(in_channels=8, num_heads=1, attention_type="0010", q_stride=2), (2, 8, 6, 5)),
    "geometry_only_0001": (dict(in_channels=8, num_heads=2, attention_type="0001"), (1, 8, 6, 7)),
    # As in a backbone: after a ReLU (exact zeros), small query/key weights (near-uniform attention).
    "relu_input_1111": (dict(in_channels=16, num_heads=2), (2, 16, 7, 6)),
    "spatial_range_1": (dict(in_channels=256, num_heads=8, spatial_range=1, kv_stride=2), (1, 256, 6, 5)),
    # mmcv gets content·position wrong without bias·position (types x1x0): it transposes the
    # query grid for the y term (and fails on non-square maps). The correct x1x0 equals mmcv's
    # x1x1 with geom_bias zero, which these cases run (metadata: the x1x0 type).
    "position_only_0100": (dict(in_channels=8, num_heads=2, attention_type="0101"), (1, 8, 5, 6)),
    "pair_0110": (dict(in_channels=12, num_heads=2, attention_type="0111"), (1, 12, 5, 7)),
}
# Cases whose geom_bias is zeroed (see above) and left out of the file, and the type they stand for.
ZERO_GEOM_BIAS = {"position_only_0100": "0100", "pair_0110": "0110"}
# Derived from the arguments (a uint8 "Parameter" of 84x84x42x42 at 256 channels): not a weight.
DERIVED = ("local_constraint_map",)


def run_cases(generator, cases, build, describe, out, adjust=lambda name, block: None, with_gradients=False):
    tensors, metadata = {}, {}
    for name, case in cases.items():
        block = build(case)
        with torch.no_grad():
            for parameter in block.parameters():
                if parameter.dtype.is_floating_point:
                    # Std 0.5, less for weights with more than 16 inputs (keeps the 256-channel
                    # attention's logits, and so float32's rounding, in check).
                    fan_in = parameter[0].numel() if parameter.dim() > 1 else 1
                    scale = 0.5 * min(1.0, (16 / fan_in) ** 0.5)
                    parameter.copy_(scale * torch.randn(parameter.shape, generator=generator))
            adjust(name, block)
        block.eval()
        x = torch.randn(case[-1], generator=generator)
        if name.startswith("relu_"):
            x = x.clamp_min(0)
        with torch.no_grad():
            y = block(x)
        tensors[f"{name}.input"] = x
        tensors[f"{name}.output"] = y.contiguous()
        if with_gradients:
            # Gradients of sum(output * probe), in float64 from the same weights and input.
            block64 = copy.deepcopy(block).double()
            x64 = x.double().requires_grad_()
            probe = torch.randn(y.shape, generator=generator)
            (block64(x64) * probe.double()).sum().backward()
            tensors[f"{name}.probe"] = probe
            tensors[f"{name}.grad.input"] = x64.grad.float()
            for key, parameter in block64.named_parameters():
                if parameter.grad is not None and key in block.state_dict() and not key.endswith(DERIVED):
                    if not (name in ZERO_GEOM_BIAS and key == "geom_bias"):
                        tensors[f"{name}.grad.{key}"] = parameter.grad.float().contiguous()
        for key, value in block.state_dict().items():
            if not key.endswith(DERIVED) and not (name in ZERO_GEOM_BIAS and key == "geom_bias"):
                tensors[f"{name}.{key}"] = value.contiguous()
        metadata[name] = describe(case)
        if name in ZERO_GEOM_BIAS:
            metadata[name] = re.sub(r"attention_type=\d{4}", f"attention_type={ZERO_GEOM_BIAS[name]}", metadata[name])
    save_file(tensors, out, metadata=metadata)
    print(out, os.path.getsize(out))


def main():
    out = os.path.join("tests", "fixtures", "plugins")
    os.makedirs(out, exist_ok=True)
    run_cases(torch.Generator().manual_seed(7), NON_LOCAL_CASES,
              lambda c: NonLocal2d(c[0], reduction=c[1], use_scale=c[2], mode=c[3], sub_sample=c[4]),
              lambda c: f"{c[0]} {c[1]} {str(c[2]).lower()} {c[3]} {str(c[4]).lower()}",
              os.path.join(out, "non_local.safetensors"))
    run_cases(torch.Generator().manual_seed(6), CASES,
              lambda c: ContextBlock(c[0], c[1], pooling_type=c[2], fusion_types=c[3]),
              lambda c: f"{c[0]} {c[1]!r} {c[2]} {','.join(c[3])}",
              os.path.join(out, "context_block.safetensors"))
    run_cases(torch.Generator().manual_seed(8), GENERALIZED_ATTENTION_CASES,
              lambda c: GeneralizedAttention(**c[0]),
              lambda c: " ".join(f"{k}={v}" for k, v in c[0].items()),
              os.path.join(out, "generalized_attention.safetensors"),
              adjust=zero_geom_bias, with_gradients=True)


def zero_geom_bias(name, block):
    if name in ZERO_GEOM_BIAS:
        block.geom_bias.zero_()
    if name.startswith("relu_"):
        block.query_conv.weight.mul_(1 / 16)
        block.key_conv.weight.mul_(1 / 16)

if __name__ == "__main__":
    main()
