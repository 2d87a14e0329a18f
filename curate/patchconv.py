"""A ViT's patch embedding (a convolution whose kernel equals its stride) as one matmul.

Why: on an H200 in bf16, cuDNN runs open_clip's ViT-B/32 `conv1` (32x32 kernel, stride 32) with a generic
`precomputed_convolve_sgemm` kernel: 8.7 ms per batch of 1,024 images, ~20% of the whole image tower's
GPU time (torch.profiler on the embed stage). Such a convolution only multiplies each image's
non-overlapping patches by the kernel: a reshape of the pixels and one matmul with the same weights,
which the GPU's tensor cores run at matmul speed. The swapped module keeps the parameter names, so the
model's state dict is unchanged.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


class PatchMatmul(nn.Module):
    """Drop-in for an `nn.Conv2d` with kernel == stride, no padding, dilation or groups: the same output,
    (B, out, H // p, W // p), computed as patches @ weight^T."""

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        self.weight = conv.weight
        self.bias = conv.bias
        self.patch = tuple(conv.kernel_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        ph, pw = self.patch
        gh, gw = h // ph, w // pw
        x = x[:, :, : gh * ph, : gw * pw]  # the rows and columns a strided convolution never reaches
        patches = x.reshape(b, c, gh, ph, gw, pw).permute(0, 2, 4, 1, 3, 5).reshape(b, gh * gw, c * ph * pw)
        y = nn.functional.linear(patches, self.weight.reshape(self.weight.shape[0], -1), self.bias)
        return y.transpose(1, 2).view(b, -1, gh, gw)  # a view in the convolution's layout, no copy


def is_patch_conv(module: Any) -> bool:
    """A convolution that cuts its input into non-overlapping patches."""
    return (
        isinstance(module, nn.Conv2d)
        and tuple(module.kernel_size) == tuple(module.stride)
        and tuple(module.padding) == (0, 0)
        and tuple(module.dilation) == (1, 1)
        and module.groups == 1
    )


def swap_patch_conv(model: Any) -> bool:
    """Replace an open_clip ViT's `visual.conv1` with a PatchMatmul; False where the model has none (a
    ResNet or timm tower: left as it is)."""
    visual = getattr(model, "visual", None)
    conv = getattr(visual, "conv1", None)
    if not is_patch_conv(conv):
        return False
    visual.conv1 = PatchMatmul(conv)
    return True
