"""The patch embedding as a matmul (curate.patchconv) gives the convolution's output."""

from __future__ import annotations

import types

import pytest
import torch
from torch import nn

from curate.clipmodels import load_clip
from curate.config import EmbedModelConfig
from curate.patchconv import PatchMatmul, swap_patch_conv


@pytest.mark.parametrize(("patch", "side", "bias"), [(32, 224, False), (14, 224, False), (8, 70, True)])
def test_equals_the_convolution(patch: int, side: int, bias: bool) -> None:
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 48, kernel_size=patch, stride=patch, bias=bias)
    x = torch.randn(5, 3, side, side + 3)  # a width the patches do not divide: the rest is dropped
    want = conv(x)
    got = PatchMatmul(conv)(x)
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


def test_a_swapped_model_embeds_the_same_and_keeps_its_state_dict() -> None:
    model = load_clip(EmbedModelConfig(name="t", arch="curate-tiny-vit64"), "cpu")
    pixels = torch.randn(6, 3, model.image_size, model.image_size)
    keys = list(model.model.state_dict())
    before = model.encode_images(pixels)
    assert swap_patch_conv(model.model)
    assert isinstance(model.model.visual.conv1, PatchMatmul)
    assert list(model.model.state_dict()) == keys
    after = model.encode_images(pixels)
    assert abs(after - before).max() < 1e-5


def test_other_first_convolutions_are_left_alone() -> None:
    resnet_like = types.SimpleNamespace(visual=types.SimpleNamespace(conv1=nn.Conv2d(3, 8, 3, stride=2)))
    assert not swap_patch_conv(resnet_like)
    assert isinstance(resnet_like.visual.conv1, nn.Conv2d)
    assert not swap_patch_conv(types.SimpleNamespace())  # a tower with no conv1 (timm)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU (runs on the device)")
def test_on_the_gpu_a_loaded_vit_embeds_as_with_its_convolution() -> None:
    model = load_clip(EmbedModelConfig(name="b", arch="ViT-B-32"), "cuda")
    swapped = model.model.visual.conv1
    assert isinstance(swapped, PatchMatmul)
    pixels = torch.randn(64, 3, 224, 224, device="cuda")
    got = model.encode_images(pixels)
    conv = nn.Conv2d(3, swapped.weight.shape[0], 32, stride=32, bias=False).to("cuda", torch.bfloat16)
    conv.weight = swapped.weight
    model.model.visual.conv1 = conv
    want = model.encode_images(pixels)
    assert (got * want).sum(1).min() > 0.999  # bf16 sums in another order
