"""Many images of different sizes resized (and cropped) to one square size in a few batched matmuls.

An antialiased bicubic resize is linear and separable: out = Ay @ crop @ Ax^T, with Ay (S, h) and Ax (S, w)
the weights torch's `F.interpolate(mode="bicubic", antialias=True)` uses (PIL's filter, a = -0.5). A crop
of the resized image is a slice of those rows, and CenterCrop's zero padding is rows of zeros. Writing
every source box into the corner of a zero-padded batch and building its two weight matrices on the GPU
turns thousands of per-image interpolate calls (~0.15 ms of Python and kernel launches each) into a
handful of batched matmuls per chunk of images. Used by training's random-resized-crop (gpu_decode) and
by the embed stage's resize + centre crop.
"""

from __future__ import annotations

import math
from typing import Any

CHUNK_PIXELS = 2**27  # padded input pixels (x3 channels, fp32) handled at once: ~1.6 GB of scratch


def _cubic(x: Any) -> Any:
    """PIL's bicubic filter (a = -0.5), as torch's antialiased path uses it."""
    import torch

    a = -0.5
    x = x.abs()
    near = ((a + 2) * x - (a + 3)) * x * x + 1
    far = (((x - 5) * x + 8) * x - 4) * a
    return torch.where(x < 1, near, torch.where(x < 2, far, torch.zeros_like(x)))


def resize_weights(lengths: Any, size: int, padded: int, outs: Any = None, firsts: Any = None) -> Any:
    """(n, size, padded) float32: matrix i resizes lengths[i] input pixels to outs[i] (default `size`) and
    keeps output pixels firsts[i] .. firsts[i]+size-1 (default from 0); rows outside 0..outs[i]-1 are zero
    (CenterCrop's padding). Weights as ATen's `_compute_indices_weights_aa` computes them."""
    import torch

    device = lengths.device
    lengths = lengths.to(torch.float64)
    outs = lengths.new_full(lengths.shape, size) if outs is None else outs.to(device, torch.float64)
    firsts = lengths.new_zeros(lengths.shape) if firsts is None else firsts.to(device, torch.float64)
    scale = lengths / outs  # input pixels per output pixel
    support = 2.0 * scale.clamp(min=1.0)  # bicubic: interp_size 4, half of it, widened when shrinking
    inv = 1.0 / scale.clamp(min=1.0)
    rows = firsts[:, None] + torch.arange(size, device=device, dtype=torch.float64)
    inside = (rows >= 0) & (rows < outs[:, None])
    held = torch.minimum(rows.clamp(min=0), outs[:, None] - 1)  # outside rows: any valid row, zeroed below
    centre = scale[:, None] * (held + 0.5)
    xmin = (centre - support[:, None] + 0.5).trunc().clamp(min=0)  # C's (int) truncates towards zero
    xmax = torch.minimum((centre + support[:, None] + 0.5).trunc(), lengths[:, None])
    taps = int(math.ceil(float(support.max()) * 2)) + 2
    j = xmin[..., None] + torch.arange(taps, device=device, dtype=torch.float64)
    w = _cubic((j - centre[..., None] + 0.5) * inv[:, None, None])
    w = torch.where(j < xmax[..., None], w, torch.zeros_like(w))
    w = w / w.sum(-1, keepdim=True) * inside[..., None]
    out = torch.zeros(len(lengths), size, padded + taps, dtype=torch.float64, device=device)
    out.scatter_add_(2, j.long(), w)  # taps past the end carry zero weight into the spare columns
    return out[..., :padded].to(torch.float32)


def resize_crops(images: list[Any], boxes: Any, size: int, plan: Any = None) -> Any:
    """(n, 3, size, size) float32 (not rounded) from uint8 (3, H, W) `images`, each cut to its row of
    `boxes` ((n, 4) ints: top, left, height, width) and resized as F.interpolate(bicubic, antialias) to
    size x size, or, with `plan` ((n, 4) ints: out height, out width, first row, first column), resized to
    out height x out width of which the size x size window at (first row, first column) is kept."""
    import torch

    device = images[0].device
    boxes = torch.as_tensor(boxes, dtype=torch.int64)
    plan = torch.as_tensor(plan, dtype=torch.int64) if plan is not None else None
    out = torch.empty(len(images), 3, size, size, dtype=torch.float32, device=device)
    order = torch.argsort(boxes[:, 2] * boxes[:, 3]).tolist()  # similar sizes share a chunk: less padding
    start = 0
    while start < len(order):
        stop, tallest, widest = start, 0, 0
        while stop < len(order):
            _, _, h, w = boxes[order[stop]].tolist()
            grown = max(tallest, h) * max(widest, w) * (stop - start + 1)
            if stop > start and grown > CHUNK_PIXELS:
                break
            tallest, widest, stop = max(tallest, h), max(widest, w), stop + 1
        chunk = order[start:stop]
        part = plan[chunk] if plan is not None else None
        out[chunk] = _resize_chunk([images[i] for i in chunk], boxes[chunk], size, tallest, widest, part)
        start = stop
    return out


def _resize_chunk(
    images: list[Any], boxes: Any, size: int, tallest: int, widest: int, plan: Any = None
) -> Any:
    import torch

    device = images[0].device
    padded = torch.zeros(len(images), 3, tallest, widest, dtype=torch.uint8, device=device)
    rows = boxes.tolist()
    dst = [padded[k, :, :h, :w] for k, (_, _, h, w) in enumerate(rows)]
    src = [im[:, t : t + h, x : x + w] for im, (t, x, h, w) in zip(images, rows, strict=True)]
    torch._foreach_copy_(dst, src)  # one fused launch on CUDA instead of one copy per image
    # fp16 on the GPU (tensor cores; pixels 0..255 are exact, weights to 2^-11): within ~0.3 of fp32
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    heights, widths = boxes[:, 2].to(device), boxes[:, 3].to(device)
    if plan is None:
        ay = resize_weights(heights, size, tallest).to(dtype)
        ax = resize_weights(widths, size, widest).to(dtype)
    else:
        ay = resize_weights(heights, size, tallest, plan[:, 0], plan[:, 2]).to(dtype)
        ax = resize_weights(widths, size, widest, plan[:, 1], plan[:, 3]).to(dtype)
    return (ay[:, None] @ padded.to(dtype) @ ax[:, None].transpose(-1, -2)).float()
