#!/usr/bin/env python3
"""Make tests/fixtures/plugins/: mmcv's own ContextBlock (GCNet) and NonLocal2d with random
weights — every parameter random, the zero-initialised last convs and the LayerNorm included —
on a random input, in float32. Keys: `<case>.input`, `<case>.output`, and
`<case>.<mmcv parameter name>`; the metadata lists each case's arguments.

    python3 tools/make_plugin_fixtures.py
"""
import os

import torch
from mmcv.cnn.bricks.context_block import ContextBlock
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


def run_cases(generator, cases, build, describe, out):
    tensors, metadata = {}, {}
    for name, case in cases.items():
        block = build(case)
        with torch.no_grad():
            for parameter in block.parameters():
                parameter.copy_(0.5 * torch.randn(parameter.shape, generator=generator))
        block.eval()
        x = torch.randn(case[-1], generator=generator)
        with torch.no_grad():
            y = block(x)
        tensors[f"{name}.input"] = x
        tensors[f"{name}.output"] = y
        for key, value in block.state_dict().items():
            tensors[f"{name}.{key}"] = value.contiguous()
        metadata[name] = describe(case)
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

if __name__ == "__main__":
    main()
