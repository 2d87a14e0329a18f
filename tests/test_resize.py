"""Batched crop-and-resize against torch's own per-image F.interpolate(bicubic, antialias)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from curate import resize
from curate.resize import resize_crops, resize_padded, resize_weights


def _random_crops(n: int, seed: int) -> tuple[list[torch.Tensor], list[tuple[int, int, int, int]]]:
    g = torch.Generator().manual_seed(seed)
    images, boxes = [], []
    for _ in range(n):
        height, width = torch.randint(1, 400, (2,), generator=g).tolist()
        images.append(torch.randint(0, 256, (3, height, width), dtype=torch.uint8, generator=g))
        h, w = (
            int(torch.randint(1, height + 1, (1,), generator=g)),
            int(torch.randint(1, width + 1, (1,), generator=g)),
        )
        top, left = (
            int(torch.randint(0, height - h + 1, (1,), generator=g)),
            int(torch.randint(0, width - w + 1, (1,), generator=g)),
        )
        boxes.append((top, left, h, w))
    return images, boxes


def _reference(images: list[torch.Tensor], boxes: list[tuple[int, int, int, int]], size: int) -> torch.Tensor:
    return torch.cat(
        [
            F.interpolate(
                im[None, :, t : t + h, x : x + w].float(), size=(size, size), mode="bicubic", antialias=True
            )
            for im, (t, x, h, w) in zip(images, boxes, strict=True)
        ]
    )


@pytest.mark.parametrize("size", [224, 64, 7])
def test_equals_per_image_interpolate_when_shrinking_and_enlarging(size: int) -> None:
    images, boxes = _random_crops(30, seed=size)
    boxes[0] = (0, 0, 1, 1)  # a single pixel, enlarged
    boxes[1] = (0, 0, images[1].shape[1], images[1].shape[2])  # the whole image
    ours, ref = resize_crops(images, boxes, size), _reference(images, boxes, size)
    assert ours.shape == (30, 3, size, size)
    assert (ours - ref).abs().max().item() < 0.02  # float rounding only (measured 0.005 at 224)


def test_chunks_give_the_same_pixels_as_one_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    images, boxes = _random_crops(12, seed=1)
    whole = resize_crops(images, boxes, 32)
    monkeypatch.setattr(resize, "CHUNK_PIXELS", 1)  # one image per chunk
    assert (resize_crops(images, boxes, 32) - whole).abs().max() < 1e-3  # padding changes float sums only


def test_weight_rows_sum_to_one_and_stay_inside_the_crop() -> None:
    w = resize_weights(torch.tensor([5, 300, 64]), 64, padded=320)
    assert torch.allclose(w.sum(-1), torch.ones(3, 64), atol=1e-5)
    assert w[0, :, 5:].abs().max() == 0 and w[2, :, 64:].abs().max() == 0
    assert torch.allclose(w[2], torch.eye(64, 320), atol=1e-6)  # same size: the identity


def test_a_padded_batch_gives_the_pixels_of_a_list(monkeypatch: pytest.MonkeyPatch) -> None:
    images, boxes = _random_crops(12, seed=2)
    tallest, widest = max(im.shape[1] for im in images), max(im.shape[2] for im in images)
    padded = torch.full((12, tallest, widest, 3), 255, dtype=torch.uint8)  # beyond each image: never read
    for i, im in enumerate(images):
        padded[i, : im.shape[1], : im.shape[2]] = im.permute(1, 2, 0)
    ref = _reference(images, boxes, 48)
    assert (resize_padded(padded, boxes, 48) - ref).abs().max() < 0.02
    monkeypatch.setattr(resize, "CHUNK_PIXELS", 1)  # one image per slice
    assert (resize_padded(padded, boxes, 48) - ref).abs().max() < 0.02


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU (runs on the device)")
def test_on_the_gpu_a_padded_batch_is_within_half_a_level_of_the_cpu() -> None:
    """fp16 matmuls on the GPU (pixels exact, weights to 2^-11) against the fp32 CPU path."""
    images, boxes = _random_crops(40, seed=3)
    tallest, widest = max(im.shape[1] for im in images), max(im.shape[2] for im in images)
    padded = torch.zeros((40, tallest, widest, 3), dtype=torch.uint8)
    for i, im in enumerate(images):
        padded[i, : im.shape[1], : im.shape[2]] = im.permute(1, 2, 0)
    for size in (224, 64):
        want = resize_padded(padded, boxes, size)
        got = resize_padded(padded.cuda(), boxes, size).cpu()
        assert (got - want).abs().max() < 0.5, size
