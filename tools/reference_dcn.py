"""mmcv's deformable convs (`DCN` = `DeformConv2dPack`, `DCNv2` = `ModulatedDeformConv2dPack`)
rebuilt on `torchvision.ops.deform_conv2d`, for fixtures: mmcv-lite has no compiled ops, so
mmdet's ResNet cannot build its own. `register()` puts them in mmengine's MODELS registry under
mmcv's names, and mmdet's real `ResNet(dcn=..., stage_with_dcn=...)` then builds with them.

The convention followed (mmcv 2.1 `ops/deform_conv.py`, `ops/modulated_deform_conv.py`; mmcv's
own MLU variants call torchvision the same way):
  * parameters: `weight` `[out, in / groups, k, k]`, no bias (mmdet passes `bias=False`), and
    `conv_offset`, an `nn.Conv2d(in, deform_groups * {2|3} * k * k, k)` with the main conv's
    stride, padding and dilation, with bias, zero-initialised;
  * offsets: per deform group and kernel position, `(dy, dx)` interleaved (torchvision's layout);
  * DCNv2: `o1, o2, mask = chunk(conv_offset(x), 3, dim=1)`, `offset = cat(o1, o2)`,
    `mask = sigmoid(mask)`.
"""
import math

import torch
from torch import nn
from torchvision.ops import deform_conv2d


class _DeformConvPack(nn.Module):
    modulated = False

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1,
                 groups=1, deform_groups=1, bias=False):
        super().__init__()
        assert not bias, "mmdet builds its DCNs without bias"
        k = kernel_size
        self.stride, self.padding, self.dilation = stride, padding, dilation
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels // groups, k, k))
        parts = 3 if self.modulated else 2
        self.conv_offset = nn.Conv2d(in_channels, deform_groups * parts * k * k, k, stride=stride,
                                     padding=padding, dilation=dilation, bias=True)
        if self.modulated:  # ModulatedDeformConv2d.init_weights
            bound = 1.0 / math.sqrt(in_channels * k * k)
            nn.init.uniform_(self.weight, -bound, bound)
        else:  # DeformConv2d.reset_parameters
            nn.init.kaiming_uniform_(self.weight, nonlinearity="relu")
        nn.init.zeros_(self.conv_offset.weight)
        nn.init.zeros_(self.conv_offset.bias)

    def forward(self, x):
        out = self.conv_offset(x)
        mask = None
        if self.modulated:
            o1, o2, mask = torch.chunk(out, 3, dim=1)
            out = torch.cat((o1, o2), dim=1)
            mask = torch.sigmoid(mask)
        return deform_conv2d(x, out, self.weight, stride=self.stride, padding=self.padding,
                             dilation=self.dilation, mask=mask)


class DeformConv2dPack(_DeformConvPack):
    """mmcv `DCN`."""


class ModulatedDeformConv2dPack(_DeformConvPack):
    """mmcv `DCNv2`."""
    modulated = True


def register():
    from mmengine.registry import MODELS
    MODELS.register_module("DCN", module=DeformConv2dPack, force=True)
    MODELS.register_module("DCNv2", module=ModulatedDeformConv2dPack, force=True)
