"""Image decoding and CLIP preprocessing, on the CPU with PIL or batched on the GPU with nvJPEG.

The PIL path is open_clip's own `preprocess` (exact). The tensor path decodes JPEGs with
`torchvision.io.decode_jpeg` (on `cuda`: batched nvJPEG; other formats and any JPEG nvJPEG refuses go
through PIL), then resizes (bicubic, antialiased, rounded to uint8 like PIL), centre-crops and
normalises on the same device, so decoding does not starve the GPU. Images of one size are resized
together in one call. tests/test_imagedecode.py measures how close the two paths are.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

JPEG_MAGIC = b"\xff\xd8\xff"
TENSOR_RESIZE_MODES = ("shortest", "squash")


def undecodable(exc: Exception) -> str:
    """An image's decode error as a row's reason: the same text on every run (PIL names the buffer it
    read from by its memory address, which is dropped)."""
    text = re.sub(r" at 0x[0-9a-fA-F]+", "", str(exc))[:120]
    return f"undecodable image: {type(exc).__name__}: {text}"


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


def header_size(data: bytes | memoryview) -> tuple[int, int] | None:
    """(height, width) read from the image's header alone (PIL opens lazily), or None."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.height, image.width
    except Exception:  # noqa: BLE001 - unreadable: the caller gives the reason
        return None


def decode_rgb(data: bytes | memoryview, max_pixels: int | None = None) -> Any:
    """(H, W, 3) uint8 pixels: JPEGs with libjpeg-turbo through torchvision (the same pixels as PIL's
    decode, tested, without PIL's two extra copies), anything else (and any JPEG it refuses) with PIL.
    `max_pixels`: a JPEG whose header says more is refused before decoding (PIL checks its own)."""
    import torch
    from torchvision.io import ImageReadMode, decode_jpeg

    if bytes(data[:3]) == JPEG_MAGIC:
        size = header_size(data) if max_pixels is not None else None
        if size is not None and size[0] * size[1] > max_pixels:
            raise ValueError(f"{size[1]}x{size[0]} pixels, over the limit of {max_pixels}")
        try:
            raw = torch.frombuffer(bytearray(data), dtype=torch.uint8)
            return decode_jpeg(raw, mode=ImageReadMode.RGB).permute(1, 2, 0)
        except RuntimeError:
            pass  # PIL decides
    return torch.from_numpy(np.array(decode_pil(data).convert("RGB")))


def decode_padded(
    datas: list[bytes | memoryview], shared: bool = False, sizes: list[tuple[int, int] | None] | None = None
) -> tuple[Any, np.ndarray, list[str | None]]:
    """Images decoded on the CPU into one (n, H, W, 3) uint8 batch, each in the top-left corner of its
    slot (H, W: the largest height and width), with (n, 2) sizes and an error text per image (its slot
    then left as it is, its size (1, 1)). Sizes come from the headers first, so each image is decoded
    straight into the batch; `shared`: the batch lives in shared memory, for a worker process to hand
    over without another copy; `sizes`: the headers' sizes when the caller has read them already.
    Used by training's decode workers."""
    import torch

    sizes = [header_size(d) for d in datas] if sizes is None else list(sizes)
    found = [s for s in sizes if s is not None] or [(1, 1)]
    shape = (len(datas), max(h for h, _ in found), max(w for _, w in found), 3)
    if shared:
        storage = torch.UntypedStorage._new_shared(int(np.prod(shape)))
        padded = torch.empty(0, dtype=torch.uint8).set_(storage).view(shape)
    else:
        padded = torch.empty(shape, dtype=torch.uint8)
    errors: list[str | None] = [None] * len(datas)
    for i, (data, size) in enumerate(zip(datas, sizes, strict=True)):
        try:
            if size is None:
                decode_pil(data)  # raises with PIL's reason
                raise ValueError("no size in the image header")
            pixels = decode_rgb(data)
            if tuple(pixels.shape[:2]) != size:
                raise ValueError(f"decoded {tuple(pixels.shape[:2])}, the header says {size}")
            padded[i, : size[0], : size[1]] = pixels
        except Exception as exc:  # noqa: BLE001 - any decoder error is a per-image reason
            errors[i] = undecodable(exc)
            sizes[i] = None
    return padded, np.array([s or (1, 1) for s in sizes], dtype=np.int64).reshape(-1, 2), errors


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
                errors[i] = undecodable(exc)
    return out, errors


@dataclass(frozen=True)
class TensorPreprocess:
    """open_clip's eval transform (resize, centre crop, normalise) on uint8 tensors, batched."""

    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    resize_mode: str = "shortest"

    def target_sizes(self, h: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Resized (height, width) per image: torchvision's rule for Resize(int), short side to the image
        size and long side int(size * long / short), or both sides to it when squashing."""
        s = self.image_size
        if self.resize_mode == "squash":
            return np.full_like(h, s), np.full_like(w, s)
        wide = h <= w
        th = np.where(wide, s, (s * h / np.maximum(w, 1)).astype(np.int64))
        tw = np.where(wide, (s * w / np.maximum(h, 1)).astype(np.int64), s)
        return th, tw

    def __call__(self, images: list[Any], dtype: Any) -> Any:
        """(B,3,S,S) normalised pixels in `dtype` from a list of uint8 (3,H,W) tensors: each resized as
        PIL does (bicubic, antialiased, rounded to uint8) and centre-cropped (zero-padded when smaller),
        all sizes of a batch together in a few batched matmuls (curate/resize.py)."""
        from curate.resize import resize_crops

        sizes = np.array([im.shape[1:] for im in images], dtype=np.int64).reshape(-1, 2)
        boxes, plan = self._plan(sizes)
        return self._normalise(resize_crops(images, boxes, self.image_size, plan), dtype)

    def padded(self, padded: Any, sizes: np.ndarray, dtype: Any) -> Any:
        """The same from decode_padded's (n, H, W, 3) uint8 batch (on the model's device) and its sizes."""
        from curate.resize import resize_padded

        boxes, plan = self._plan(np.asarray(sizes, dtype=np.int64).reshape(-1, 2))
        return self._normalise(resize_padded(padded, boxes, self.image_size, plan), dtype)

    def crop_uint8(self, pixels: Any, out: Any = None) -> Any:
        """One (H, W, 3) uint8 image resized and centre-cropped on the CPU to (3, S, S) uint8 (into `out`
        when given): torch's antialiased bicubic on uint8 (within 2 levels of PIL's,
        tests/test_imagedecode.py), for the embed stage's CPU decode workers; the GPU only normalises."""
        import torch

        h, w = pixels.shape[:2]
        th, tw = (int(v[0]) for v in self.target_sizes(np.array([h]), np.array([w])))
        x = pixels.permute(2, 0, 1).unsqueeze(0)  # channels-last strides: torch's fast uint8 path
        if (th, tw) != (h, w):
            x = torch.nn.functional.interpolate(x, size=(th, tw), mode="bicubic", antialias=True)
        s = self.image_size
        out = torch.empty((3, s, s), dtype=torch.uint8) if out is None else out
        top, left = (int(_window_starts(np.array([v]), s)[0]) for v in (th, tw))
        src_t, src_l, dst_t, dst_l = max(top, 0), max(left, 0), max(-top, 0), max(-left, 0)
        hh, ww = min(th - src_t, s - dst_t), min(tw - src_l, s - dst_l)
        if (hh, ww) != (s, s):
            out.zero_()  # smaller than the crop: zero padding around it, as CenterCrop pads
        out[:, dst_t : dst_t + hh, dst_l : dst_l + ww] = x[0, :, src_t : src_t + hh, src_l : src_l + ww]
        return out

    def _plan(self, sizes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Whole-image boxes and the resize + centre-crop plan (curate.resize.resize_crops) per image."""
        h, w = sizes[:, 0], sizes[:, 1]
        th, tw = self.target_sizes(h, w)
        boxes = np.stack([np.zeros_like(h), np.zeros_like(w), h, w], axis=1)
        s = self.image_size
        return boxes, np.stack([th, tw, _window_starts(th, s), _window_starts(tw, s)], axis=1)

    def _normalise(self, x: Any, dtype: Any) -> Any:
        import torch

        x = x.round_().clamp_(0, 255)  # PIL hands uint8 to ToTensor
        mean = torch.tensor(self.mean, device=x.device).view(1, 3, 1, 1) * 255
        std = torch.tensor(self.std, device=x.device).view(1, 3, 1, 1) * 255
        return ((x - mean) / std).to(dtype)


def _window_starts(sizes: np.ndarray, crop: int) -> np.ndarray:
    """First row (column) of each resized image in CenterCrop's output: torchvision's crop offset
    int(round((size - crop) / 2)) (round half to even, as Python's), or minus the zero padding above
    (left of) an image smaller than the crop."""
    offset = np.round((sizes - crop) / 2.0).astype(np.int64)
    return np.where(sizes >= crop, offset, -((crop - sizes) // 2))
