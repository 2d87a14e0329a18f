"""The tensor decode path against open_clip's own preprocessing, on real images; errors as reasons."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from curate.imagedecode import (
    TensorPreprocess,
    decode_padded,
    decode_pil,
    decode_rgb,
    decode_tensors,
    undecodable,
)
from tests.embed_fixtures import clipart_jpegs, tiny_model


def test_tensor_path_matches_open_clip_preprocess() -> None:
    m = tiny_model()
    datas = clipart_jpegs(24)
    png = io.BytesIO()
    Image.open(io.BytesIO(datas[0])).save(png, "PNG")  # a non-JPEG goes through PIL
    datas.append(png.getvalue())
    ref = torch.stack([m.preprocess(decode_pil(d)) for d in datas])
    images, errors = decode_tensors(datas, "cpu")
    assert errors == [None] * len(datas)
    got = TensorPreprocess(m.image_size, m.mean, m.std, m.resize_mode)(images, torch.float32)
    levels = (got - ref).abs() * torch.tensor(m.std).view(1, 3, 1, 1) * 255  # in 0-255 pixel levels
    assert float(levels.mean()) < 0.5 and float(levels.max()) <= 32
    cos = (m.encode_images(got) * m.encode_images(ref)).sum(1)
    assert cos.min() > 0.9999


def test_undecodable_bytes_get_a_reason_and_the_rest_still_decode() -> None:
    good = clipart_jpegs(2)
    truncated = good[0][:200]
    garbage = b"\xff\xd8\xff" + b"not a jpeg at all" * 10
    images, errors = decode_tensors([good[0], truncated, garbage, b"", good[1]], "cpu")
    assert images[0] is not None and images[4] is not None
    assert [e is None for e in errors] == [True, False, False, False, True]
    assert all(e.startswith("undecodable image: ") for e in errors[1:4])
    assert np.array_equal(images[0].numpy(), decode_tensors([good[0]], "cpu")[0][0].numpy())


def test_a_padded_cpu_decode_gives_pils_pixels_and_the_tensor_paths_preprocess() -> None:
    m = tiny_model()
    datas = clipart_jpegs(5, size=97)
    png = io.BytesIO()
    Image.open(io.BytesIO(datas[1])).resize((40, 130)).save(png, "PNG")
    datas += [png.getvalue(), datas[0][:200], b""]
    padded, sizes, errors = decode_padded(datas, shared=True)
    assert padded.is_shared() and padded.shape == (8, 130, 97, 3)
    assert [e is None for e in errors] == [True] * 6 + [False, False]
    assert all(e.startswith("undecodable image: ") for e in errors[6:])
    for i, data in enumerate(datas[:6]):
        pil = np.asarray(decode_pil(data).convert("RGB"))  # libjpeg-turbo via torchvision: PIL's pixels
        assert (
            sizes[i].tolist() == list(pil.shape[:2])
            and (padded[i, : pil.shape[0], : pil.shape[1]].numpy() == pil).all()
        )
    tp = TensorPreprocess(m.image_size, m.mean, m.std, m.resize_mode)
    images, _ = decode_tensors(datas[:6], "cpu")
    assert torch.equal(tp.padded(padded[:6], sizes[:6], torch.float32), tp(images, torch.float32))


def test_batched_resize_equals_torchvisions_resize_and_centre_crop_for_every_shape() -> None:
    """Shapes wider, taller, square, smaller than the crop (zero padding), one pixel; squash too."""
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import functional as TF

    g = torch.Generator().manual_seed(3)
    shapes = [(512, 384), (384, 512), (64, 64), (40, 90), (90, 40), (20, 20), (1, 1), (700, 33), (65, 64)]
    images = [torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=g) for h, w in shapes]
    for mode in ("shortest", "squash"):
        tp = TensorPreprocess(64, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), mode)
        got = tp(images, torch.float32) * 0.25 * 255 + 0.5 * 255  # back to pixel levels
        for image, row in zip(images, got, strict=True):
            size = [64, 64] if mode == "squash" else 64
            resized = TF.resize(image.float()[None], size, InterpolationMode.BICUBIC, antialias=True)
            if tuple(resized.shape[-2:]) == tuple(image.shape[1:]):
                resized = image.float()[None]  # torchvision skips an identity resize
            want = TF.center_crop(resized.round().clamp(0, 255), [64, 64])[0]
            assert (row - want).abs().max() <= 1.0001, (mode, image.shape)  # .5 rounding ties only


def test_resize_plan_follows_torchvisions_rules_for_many_sizes() -> None:
    """The vectorised plan (resized size, then CenterCrop's window) against torchvision's own output
    size rule and center_crop's offset, for 20,000 random shapes and every size near the crop."""
    from torchvision.transforms.functional import _compute_resized_output_size

    from curate.imagedecode import _window_starts

    rng = np.random.default_rng(0)
    h, w = rng.integers(1, 3000, 20_000), rng.integers(1, 3000, 20_000)
    th, tw = TensorPreprocess(224, (0, 0, 0), (1, 1, 1)).target_sizes(h, w)
    pairs = zip(h.tolist(), w.tolist(), strict=True)
    want = [tuple(_compute_resized_output_size((a, b), [224])) for a, b in pairs]
    assert list(zip(th.tolist(), tw.tolist(), strict=True)) == want
    sizes = np.arange(1, 1000)
    starts = _window_starts(sizes, 224)
    big = sizes >= 224
    assert starts[big].tolist() == [int(round((s - 224) / 2.0)) for s in sizes[big].tolist()]
    assert starts[~big].tolist() == [-((224 - s) // 2) for s in sizes[~big].tolist()]


def test_a_jpeg_over_the_pixel_limit_is_refused_from_its_header() -> None:
    buf = io.BytesIO()
    Image.new("RGB", (40, 24), (1, 2, 3)).save(buf, "JPEG")
    assert tuple(decode_rgb(buf.getvalue(), max_pixels=960).shape) == (24, 40, 3)
    with pytest.raises(ValueError, match="^40x24 pixels, over the limit of 959$"):
        decode_rgb(buf.getvalue(), max_pixels=959)


def test_decode_reasons_are_the_same_on_every_run() -> None:
    reasons = set()
    for _ in range(2):
        try:
            decode_pil(b"not an image")
        except Exception as exc:  # noqa: BLE001
            reasons.add(undecodable(exc))
    assert reasons == {
        "undecodable image: UnidentifiedImageError: cannot identify image file <_io.BytesIO object>"
    }
