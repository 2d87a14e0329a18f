"""Image decoding and CLIP preprocessing, on the CPU with PIL or batched on the GPU with nvJPEG.

The PIL path is open_clip's own `preprocess` (exact). The tensor path decodes JPEGs with
`torchvision.io.decode_jpeg` (on `cuda`: batched nvJPEG; other formats and any JPEG nvJPEG refuses go
through PIL), then resizes (bicubic, antialiased, rounded to uint8 like PIL), centre-crops and
normalises on the same device, so decoding does not starve the GPU. Images of one size are resized
together in one call. tests/test_imagedecode.py measures how close the two paths are.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

JPEG_MAGIC = b"\xff\xd8\xff"
TENSOR_RESIZE_MODES = ("shortest", "squash")


def decode_pil(data: bytes | memoryview) -> Image.Image:
    """Decode fully now (PIL is lazy), so a corrupt image fails here with a reason, not later."""
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def _pil_to_tensor(image: Image.Image) -> Any:
    import torch

    arr = np.asarray(image.convert("RGB"))
    return torch.from_numpy(arr.copy()).permute(2, 0, 1)


def _writable(data: bytes | memoryview) -> memoryview | bytearray:
    """torch.frombuffer shares writable buffers (no copy) and warns on read-only ones."""
    return data if isinstance(data, memoryview) and not data.readonly else bytearray(data)


def decode_tensors(
    datas: list[bytes | memoryview], device: str, counters: dict[str, int] | None = None
) -> tuple[list[Any], list[str | None]]:
    """uint8 (3,H,W) tensors on `device` (None where undecodable) and an error text per image.

    `counters` (optional) counts the slow paths taken: batches split after an error, PIL decodes.
    """
    counters = counters if counters is not None else {}
    import torch
    from torchvision.io import ImageReadMode, decode_jpeg

    out: list[Any] = [None] * len(datas)
    errors: list[str | None] = [None] * len(datas)
    jpegs = [i for i, d in enumerate(datas) if d[:3] == JPEG_MAGIC]
    if jpegs:
        raw = [torch.frombuffer(_writable(datas[i]), dtype=torch.uint8) for i in jpegs]
        try:
            decoded = decode_jpeg(raw, mode=ImageReadMode.RGB, device=device)
        except RuntimeError:  # one bad image fails the whole batch: find it, decode the rest one by one
            counters["decode_batch_splits"] = counters.get("decode_batch_splits", 0) + 1
            decoded = []
            for r in raw:
                try:
                    decoded.append(decode_jpeg(r, mode=ImageReadMode.RGB, device=device))
                except RuntimeError:
                    decoded.append(None)
        for i, tensor in zip(jpegs, decoded, strict=True):
            out[i] = tensor
    for i, data in enumerate(datas):
        if out[i] is None:  # not a JPEG, or one nvJPEG/libjpeg refused: PIL decides
            counters["decode_pil"] = counters.get("decode_pil", 0) + 1
            try:
                out[i] = _pil_to_tensor(decode_pil(data)).to(device, non_blocking=True)
            except Exception as exc:  # noqa: BLE001 - any decoder error is a per-image reason
                errors[i] = f"undecodable image: {type(exc).__name__}: {str(exc)[:120]}"
    return out, errors


@dataclass(frozen=True)
class TensorPreprocess:
    """open_clip's eval transform (resize, centre crop, normalise) on uint8 tensors, batched."""

    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    resize_mode: str = "shortest"

    def target_size(self, h: int, w: int) -> tuple[int, int]:
        s = self.image_size
        if self.resize_mode == "squash":
            return s, s
        if h <= w:  # torchvision's rule for Resize(int): short side to s, long side int(s * long / short)
            return s, int(s * w / h)
        return int(s * h / w), s

    def __call__(self, images: list[Any], dtype: Any) -> Any:
        """(B,3,S,S) normalised pixels in `dtype` from a list of uint8 (3,H,W) tensors: each resized as
        PIL does (bicubic, antialiased, rounded to uint8) and centre-cropped (zero-padded when smaller),
        all sizes of a batch together in a few batched matmuls (curate/resize.py)."""
        import torch

        from curate.resize import resize_crops

        s = self.image_size
        device = images[0].device
        boxes, plan = [], []
        for im in images:
            h, w = im.shape[1:]
            th, tw = self.target_size(h, w)
            boxes.append((0, 0, h, w))
            plan.append((th, tw, _window_start(th, s), _window_start(tw, s)))
        x = resize_crops(images, boxes, s, plan).round_().clamp_(0, 255)  # PIL hands uint8 to ToTensor
        mean = torch.tensor(self.mean, device=device).view(1, 3, 1, 1) * 255
        std = torch.tensor(self.std, device=device).view(1, 3, 1, 1) * 255
        return ((x - mean) / std).to(dtype)


def _window_start(size: int, crop: int) -> int:
    """First row (column) of the resized image in CenterCrop's output: its crop offset, or minus the
    zero padding above (left of) an image smaller than the crop."""
    return _crop_offset(size, crop) if size >= crop else -((crop - size) // 2)


def _crop_offset(size: int, crop: int) -> int:
    """torchvision CenterCrop's offset: int(round((size - crop) / 2))."""
    return int(round((size - crop) / 2.0)) if size >= crop else 0
