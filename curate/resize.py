"""Many images of different sizes resized (and cropped) to one square size in a few batched matmuls.

An antialiased bicubic resize is linear and separable: out = Ay @ crop @ Ax^T, with Ay (S, h) and Ax (S, w)
the weights torch's `F.interpolate(mode="bicubic", antialias=True)` uses (PIL's filter, a = -0.5). A crop
of the source is a shift of those weights' columns, a crop of the resized image is a slice of their rows,
and CenterCrop's zero padding is rows of zeros. Padding every image into the corner of a zero batch (one
nested-tensor call) and building its two weight matrices on the GPU turns thousands of per-image
interpolate calls (~0.15 ms of Python and kernel launches each) into a handful of batched matmuls per
chunk of images, with no Python loop over the images. Used by training's random-resized-crop (gpu_decode) and
by the embed stage's resize + centre crop. Images that arrive already padded into one (n, H, W, 3) batch
(training's loader workers decode them so) skip the per-image nested tensor: `resize_padded`.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np

CHUNK_PIXELS = 2**27  # padded input pixels (x3 channels; fp16 on the GPU, fp32 on the CPU) at once

# Only nested tensors' padding is used, which is stable; their "prototype" warning is silenced once here
# (warnings.catch_warnings around the call would not be thread-safe, and embed decodes on two threads).
warnings.filterwarnings(
    "ignore", message="The PyTorch API of nested tensors is in prototype", category=UserWarning
)


def _cubic(x: Any) -> Any:
    """PIL's bicubic filter (a = -0.5), as torch's antialiased path uses it."""
    import torch

    a = -0.5
    x = x.abs()
    near = ((a + 2) * x - (a + 3)) * x * x + 1
    far = (((x - 5) * x + 8) * x - 4) * a
    return torch.where(x < 1, near, torch.where(x < 2, far, torch.zeros_like(x)))


def resize_weights(
    lengths: Any, size: int, padded: int, outs: Any = None, firsts: Any = None, starts: Any = None
) -> Any:
    """(n, size, padded) float32: matrix i resizes the lengths[i] input pixels from starts[i] (default 0:
    a crop's offset in its image) to outs[i] (default `size`) and keeps output pixels firsts[i] ..
    firsts[i]+size-1 (default from 0); rows outside 0..outs[i]-1 are zero (CenterCrop's padding).
    Weights as ATen's `_compute_indices_weights_aa` computes them."""
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
    if starts is not None:
        j = j + starts.to(device, torch.float64)[:, None, None]
    out = torch.zeros(len(lengths), size, padded + taps, dtype=torch.float64, device=device)
    out.scatter_add_(2, j.long(), w)  # taps past the end carry zero weight into the spare columns
    return out[..., :padded].to(torch.float32)


def resize_crops(images: list[Any], boxes: Any, size: int, plan: Any = None) -> Any:
    """(n, 3, size, size) float32 (not rounded) from uint8 (3, H, W) `images`, each cut to its row of
    `boxes` ((n, 4) ints: top, left, height, width) and resized as F.interpolate(bicubic, antialias) to
    size x size, or, with `plan` ((n, 4) ints: out height, out width, first row, first column), resized to
    out height x out width of which the size x size window at (first row, first column) is kept.

    Whole images are padded (the crop is in the weights), so nothing here loops over images in Python
    beyond reading their sizes: at thousands of images a batch, per-image slicing and copying cost more
    CPU time than the GPU spends on the matmuls."""
    import torch

    device = images[0].device
    boxes = np.asarray(boxes, dtype=np.int64).reshape(-1, 4)
    plan = np.asarray(plan, dtype=np.int64).reshape(-1, 4) if plan is not None else None
    full = np.array([im.shape[1:] for im in images], dtype=np.int64).reshape(-1, 2)
    out = torch.empty(len(images), 3, size, size, dtype=torch.float32, device=device)
    for chunk, tallest, widest in size_groups(full):
        part = plan[chunk] if plan is not None else None
        index = torch.as_tensor(chunk, device=device)
        out[index] = _resize_chunk([images[i] for i in chunk], boxes[chunk], size, tallest, widest, part)
    return out


def size_groups(full: np.ndarray) -> list[tuple[np.ndarray, int, int]]:
    """Images ((n, 2) heights and widths) grouped by similar size (less padding), each group's padded
    pixels within CHUNK_PIXELS (a huge image makes a group of its own): (positions, tallest, widest)."""
    order = np.argsort(full[:, 0] * full[:, 1], kind="stable")
    heights, widths = full[order, 0].tolist(), full[order, 1].tolist()
    groups, start = [], 0
    while start < len(order):
        stop, tallest, widest = start, 0, 0
        while stop < len(order):
            h, w = max(tallest, heights[stop]), max(widest, widths[stop])
            if stop > start and h * w * (stop - start + 1) > CHUNK_PIXELS:
                break
            tallest, widest, stop = h, w, stop + 1
        groups.append((order[start:stop], tallest, widest))
        start = stop
    return groups


def _resize_chunk(
    images: list[Any], boxes: np.ndarray, size: int, tallest: int, widest: int, plan: Any = None
) -> Any:
    import torch

    device = images[0].device
    # fp16 on the GPU (tensor cores; pixels 0..255 are exact, weights to 2^-11): within ~0.3 of fp32
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    nested = torch.nested.nested_tensor(images, dtype=dtype, device=device)
    padded = nested.to_padded_tensor(0.0, output_size=(len(images), 3, tallest, widest))
    ay, ax = _weights(torch.as_tensor(boxes, device=device), plan, size, tallest, widest, dtype)
    return (ay[:, None] @ padded @ ax[:, None].transpose(-1, -2)).float()


def _weights(b: Any, plan: Any, size: int, tallest: int, widest: int, dtype: Any) -> tuple[Any, Any]:
    """The (n, size, tallest) row and (n, size, widest) column weights for `b` (boxes on the device) and
    an optional `plan` (see resize_crops)."""
    import torch

    tops, lefts, heights, widths = b[:, 0], b[:, 1], b[:, 2], b[:, 3]
    if plan is None:
        ay = resize_weights(heights, size, tallest, starts=tops)
        ax = resize_weights(widths, size, widest, starts=lefts)
    else:
        p = torch.as_tensor(plan, device=b.device)
        ay = resize_weights(heights, size, tallest, p[:, 0], p[:, 2], starts=tops)
        ax = resize_weights(widths, size, widest, p[:, 1], p[:, 3], starts=lefts)
    return ay.to(dtype), ax.to(dtype)


def resize_padded(padded: Any, boxes: Any, size: int, plan: Any = None) -> Any:
    """(n, 3, size, size) float32 (not rounded) from `padded` ((n, H, W, 3) uint8, each image in the top
    left corner; whatever lies beyond it gets zero weight), each cut to its row of `boxes` (top, left,
    height, width) and resized as `resize_crops` does (`plan` too), in slices of at most CHUNK_PIXELS
    padded pixels: a few kernels per slice, none per image.

    The rows are resized first, straight from the channels-last layout ((H, W*3) per image: one plain
    batched matmul, no transpose of the large input), then the columns of the (size, W, 3) result: on an
    H200, 1,024 photos of up to 512 px to 224 took 10.9-11.6 us of GPU time per image, against 14.2 us
    with one broadcast matmul over the channels of a (n, 3, H, W) copy."""
    import torch

    n, tallest, widest = int(padded.shape[0]), int(padded.shape[1]), int(padded.shape[2])
    device = padded.device
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    b = torch.as_tensor(np.asarray(boxes, dtype=np.int64).reshape(-1, 4), device=device)
    plan = np.asarray(plan, dtype=np.int64).reshape(-1, 4) if plan is not None else None
    out = torch.empty(n, 3, size, size, dtype=torch.float32, device=device)
    step = max(1, CHUNK_PIXELS // max(1, tallest * widest))
    for s in range(0, n, step):
        e, m = min(n, s + step), min(n, s + step) - s
        ay, ax = _weights(b[s:e], plan[s:e] if plan is not None else None, size, tallest, widest, dtype)
        rows = torch.bmm(ay, padded[s:e].to(dtype).reshape(m, tallest, widest * 3))  # (m, size, W*3)
        cols = rows.view(m, size, widest, 3).transpose(1, 2).reshape(m, widest, size * 3)
        done = torch.bmm(ax, cols).view(m, size, size, 3)  # (m, out column, out row, channel)
        out[s:e] = done.permute(0, 3, 2, 1)
    return out
