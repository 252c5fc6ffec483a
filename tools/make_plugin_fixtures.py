#!/usr/bin/env python3
"""Make tests/fixtures/plugins/: mmcv's own ContextBlock (GCNet) with random weights — every
parameter random, the zero-initialised last convs and the LayerNorm included — on a random
input, in float32. Keys: `<case>.input`, `<case>.output`, and `<case>.<mmcv parameter name>`;
the metadata lists each case's ratio, pooling type and fusion types.

    python3 tools/make_plugin_fixtures.py
"""
import os

import torch
from mmcv.cnn.bricks.context_block import ContextBlock
from safetensors.torch import save_file

CASES = {
    # name: (channels, ratio, pooling_type, fusion_types, input shape)
    "att_add": (16, 1 / 4, "att", ("channel_add",), (2, 16, 7, 5)),
    "avg_mul_add": (12, 1 / 3, "avg", ("channel_mul", "channel_add"), (2, 12, 6, 6)),
    "att_mul": (8, 1 / 2, "att", ("channel_mul",), (1, 8, 9, 4)),
}


def main():
    generator = torch.Generator().manual_seed(6)
    tensors, metadata = {}, {}
    for name, (channels, ratio, pooling, fusions, shape) in CASES.items():
        block = ContextBlock(channels, ratio, pooling_type=pooling, fusion_types=fusions)
        with torch.no_grad():
            for parameter in block.parameters():
                parameter.copy_(0.5 * torch.randn(parameter.shape, generator=generator))
        block.eval()
        x = torch.randn(shape, generator=generator)
        with torch.no_grad():
            y = block(x)
        tensors[f"{name}.input"] = x
        tensors[f"{name}.output"] = y
        for key, value in block.state_dict().items():
            tensors[f"{name}.{key}"] = value.contiguous()
        metadata[name] = f"{channels} {ratio!r} {pooling} {','.join(fusions)}"
    out = os.path.join("tests", "fixtures", "plugins", "context_block.safetensors")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    save_file(tensors, out, metadata=metadata)
    print(out, os.path.getsize(out))


if __name__ == "__main__":
    main()
