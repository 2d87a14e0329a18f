"""Training images augmented on the GPU (`train.gpu_decode`, on by default on GPUs).

open_clip's loader decodes every JPEG with PIL, random-resized-crops and normalises it in CPU worker
processes: ~6.7 ms a sample, so keeping one H200 busy with ViT-B/32 takes ~26 cores (bench/train.py).
Most of that is PIL's bicubic resize and the float conversion, not the decoding. With gpu_decode the
model's own train augmentation runs in the training process instead: RandomResizedCrop with the (size,
scale, ratio) of open_clip's transform (its parameters drawn as torchvision draws them, for a whole batch
at once), a bicubic antialiased resize rounded to uint8 as PIL's output is (all crops of a batch in a few
matmuls: curate/resize.py), then the transform's normalisation. Who decodes the JPEGs (`image_decoder`):

- `workers` (default): the loader workers, at the end of their pipeline, with libjpeg-turbo (through
  torchvision: the same pixels as the PIL decode of open_clip's loader; other formats with PIL), straight
  into one padded uint8 batch in shared memory. The training process copies it to the GPU through pinned
  memory and resizes it there (~200 ms of host time and ~70 ms of GPU time a 4096 batch).
- `nvjpeg`: the training process, in batches with nvJPEG (other formats through PIL); the workers only
  read the tars. On an H200 this costs the training GPU time the model needed: decoding does not overlap
  the training kernels (bench/train.py measured 78% of the synthetic rate), so it is not the default.

A batch is prepared one step ahead on its own CUDA stream, so it overlaps the previous training step. The
pixels differ from PIL's by resampling rounding only (tests/training/test_gpu_loader.py measures it).
An image no decoder accepts is replaced by the one before it in the batch (with its caption), because
distributed losses need equal batch sizes on every rank; each replacement is logged. A train transform of
another shape (a custom `aug_cfg`) keeps open_clip's own CPU path.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from curate.training.args import IMAGE_DECODERS as DECODERS

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CropSpec:
    """What open_clip's train transform does: RandomResizedCrop(size, scale, ratio), then Normalize."""

    size: int
    scale: tuple[float, float]
    ratio: tuple[float, float]
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @classmethod
    def from_transform(cls, transform: Any) -> CropSpec | None:
        """The spec of open_clip's default train Compose; None for any other shape (kept on the CPU)."""
        from torchvision import transforms as T

        steps = list(getattr(transform, "transforms", []))
        crops = [t for t in steps if isinstance(t, T.RandomResizedCrop)]
        norms = [t for t in steps if isinstance(t, T.Normalize)]
        known = (T.RandomResizedCrop, T.Normalize)
        others = [t for t in steps if not isinstance(t, known) and "Convert" not in type(t).__name__]
        others = [t for t in others if "ToTensor" not in type(t).__name__]
        if len(crops) != 1 or len(norms) != 1 or others:
            return None
        crop, norm = crops[0], norms[0]
        if crop.interpolation != T.InterpolationMode.BICUBIC or crop.size[0] != crop.size[1]:
            return None
        return cls(crop.size[0], tuple(crop.scale), tuple(crop.ratio), tuple(norm.mean), tuple(norm.std))


class KeepBytes:
    """Stands in for the train transform in the workers: the encoded image goes on as it is (decoded by
    pack_batch at the end of the worker's pipeline, or by nvJPEG in the training process)."""

    def __call__(self, data: bytes) -> bytes:
        return data


def pack_batch(samples: list[tuple[Any, Any]]) -> Any:
    """webdataset's collation in the workers (decoder `workers`): ((groups, (n, 2) heights and widths,
    (n,) the sample each position takes), (n, 77) token ids. Images are grouped by size (curate.resize.
    size_groups: little padding, and one huge image cannot make a whole batch huge) and each group decoded
    into one padded (k, H, W, 3) uint8 batch (curate.imagedecode.decode_padded), a group being (positions,
    batch). In a loader worker the groups live in shared memory (as torch's default_collate allocates),
    so they reach the training process without another copy. An image that does not decode takes the
    previous good sample's place (and caption), as with nvjpeg. Other batches (validation) collate as
    usual."""
    import torch
    from torch.utils.data import get_worker_info
    from webdataset.filters import default_collation_fn

    from curate.imagedecode import decode_padded, header_size
    from curate.resize import size_groups

    datas = [sample[0] for sample in samples]
    if not datas or not all(isinstance(d, bytes | bytearray | memoryview) for d in datas):
        return default_collation_fn(samples)
    headers = [header_size(d) for d in datas]
    sizes = np.array([s or (1, 1) for s in headers], dtype=np.int64)
    errors: list[str | None] = [None] * len(datas)
    groups = []
    for positions, _, _ in size_groups(sizes):
        padded, got, errs = decode_padded(
            [datas[i] for i in positions], get_worker_info() is not None, [headers[i] for i in positions]
        )
        sizes[positions] = got
        for i, err in zip(positions, errs, strict=True):
            errors[i] = err
        groups.append((torch.from_numpy(positions), padded))
    keep = replacements(errors)
    texts = torch.stack([torch.as_tensor(sample[1]) for sample in samples])[keep]
    return (groups, torch.from_numpy(sizes), torch.tensor(keep)), texts


def crop_params(sizes: np.ndarray, spec: CropSpec, rng: np.random.Generator) -> np.ndarray:
    """(top, left, height, width) per image of `sizes` ((n, 2): height, width), drawn as torchvision's
    RandomResizedCrop.get_params draws them (10 tries of area x aspect, then a central crop), for a whole
    batch at once: get_params costs ~0.1-0.2 ms a call, which alone would cap a GPU at ~5k images/s."""
    n = len(sizes)
    height, width = sizes[:, :1].astype(np.float64), sizes[:, 1:].astype(np.float64)
    area = height * width * rng.uniform(spec.scale[0], spec.scale[1], (n, 10))
    aspect = np.exp(rng.uniform(np.log(spec.ratio[0]), np.log(spec.ratio[1]), (n, 10)))
    w = np.round(np.sqrt(area * aspect)).astype(
        np.int64
    )  # Python's round() and numpy's both round half to even
    h = np.round(np.sqrt(area / aspect)).astype(np.int64)
    ok = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = ok.argmax(axis=1)
    rows = np.arange(n)
    h, w = h[rows, first], w[rows, first]
    top = (rng.random(n) * (sizes[:, 0] - h + 1)).astype(np.int64)
    left = (rng.random(n) * (sizes[:, 1] - w + 1)).astype(np.int64)
    none = ~ok.any(axis=1)
    if none.any():  # torchvision's fallback: the largest central crop within the ratio range
        hh, ww = sizes[none, 0], sizes[none, 1]
        in_ratio = ww / hh
        fw = np.where(in_ratio > max(spec.ratio), np.round(hh * max(spec.ratio)), ww).astype(np.int64)
        fh = np.where(in_ratio < min(spec.ratio), np.round(ww / min(spec.ratio)), hh).astype(np.int64)
        h[none], w[none] = fh, fw
        top[none], left[none] = (hh - fh) // 2, (ww - fw) // 2
    return np.stack([top, left, h, w], axis=1)


def augment(images: list[Any], spec: CropSpec, params: np.ndarray | None = None) -> Any:
    """(B,3,S,S) float32 normalised pixels from uint8 (3,H,W) tensors, each randomly resized-cropped
    (`params`: (top, left, height, width) rows; drawn by crop_params from torch's RNG when None)."""
    import torch

    from curate.resize import resize_crops

    if params is None:
        sizes = np.array([tuple(im.shape[1:]) for im in images], dtype=np.int64)
        rng = np.random.default_rng(int(torch.randint(0, 2**62, (1,)).item()))
        params = crop_params(sizes, spec, rng)
    return _normalise(resize_crops(images, params, spec.size), spec)


def augment_padded(
    groups: Any, sizes: Any, keep: Any, spec: CropSpec, device: str, staging: Any = None
) -> Any:
    """(B,3,S,S) float32 normalised pixels on `device` from pack_batch's groups: each group copied to the
    device (through `staging`, a PinnedStaging, when given) and resized in a few batched matmuls (no
    per-image kernels), crops drawn for the whole batch as `augment` draws them; position i then takes
    sample keep[i]'s pixels (replaced images)."""
    import torch

    from curate.resize import resize_padded

    rng = np.random.default_rng(int(torch.randint(0, 2**62, (1,)).item()))
    params = crop_params(np.asarray(sizes, dtype=np.int64).reshape(-1, 2), spec, rng)
    out = torch.empty(len(params), 3, spec.size, spec.size, dtype=torch.float32, device=device)
    for positions, padded in groups:
        pixels = staging.to_device(padded, device) if staging is not None else padded.to(device)
        index = positions.to(device)
        out[index] = resize_padded(pixels, params[positions.numpy()], spec.size)
    keep = torch.as_tensor(keep)
    if not torch.equal(keep, torch.arange(len(keep))):
        out = out[keep.to(device)]
    return _normalise(out, spec)


def _normalise(resized: Any, spec: CropSpec) -> Any:
    """Rounded to uint8 levels (PIL hands uint8 to ToTensor), then the transform's Normalize."""
    import torch

    out = resized.round_().clamp_(0, 255)
    mean = torch.tensor(spec.mean, device=out.device).view(1, 3, 1, 1) * 255
    std = torch.tensor(spec.std, device=out.device).view(1, 3, 1, 1) * 255
    return out.sub_(mean).div_(std)


def decode_batch(datas: list[bytes], texts: Any, spec: CropSpec, device: str) -> tuple[Any, Any, int]:
    """Decode and augment one batch; undecodable images take the previous good sample's place."""
    from curate.imagedecode import decode_tensors

    images, errors = decode_tensors(datas, device)
    keep = replacements(errors)
    replaced = sum(1 for i, j in enumerate(keep) if i != j)
    if replaced:
        texts = texts[keep]
    return augment([images[j] for j in keep], spec), texts, replaced


def replacements(errors: list[str | None]) -> list[int]:
    """Which sample each batch position takes: itself, or where its image failed (`errors[i]` set) the
    previous good one (the first good one at the start); distributed losses need equal batch sizes on
    every rank, so a batch keeps its size. Replacements are logged."""
    good = [i for i, e in enumerate(errors) if e is None]
    if not good:
        raise RuntimeError(f"no image of a batch of {len(errors)} decodes (first error: {errors[0]})")
    keep = [
        i if e is None else max((g for g in good if g < i), default=good[0]) for i, e in enumerate(errors)
    ]
    bad = [e for e in errors if e is not None]
    if bad:
        log.warning("%d undecodable image(s) in a batch replaced by a neighbour: %s", len(bad), bad[0])
    return keep


class GpuBatches:
    """open_clip's train dataloader, with images (decoded and) augmented on the GPU one batch ahead."""

    def __init__(self, loader: Any, spec: CropSpec, decoder: str = "workers") -> None:
        if decoder not in DECODERS:
            raise ValueError(f"image decoder must be one of {', '.join(DECODERS)} (got '{decoder}')")
        self.loader = loader
        self.spec = spec
        self.decoder = decoder
        self.staging: Any = None
        self.num_batches = loader.num_batches
        self.num_samples = loader.num_samples
        self.replaced = 0

    def __iter__(self) -> Iterator[tuple[Any, Any]]:
        import torch

        device = torch.device("cuda", torch.cuda.current_device())
        ready: queue.Queue[Any] = queue.Queue(maxsize=2)
        prepare = self._prepare_function(str(device))

        def produce() -> None:
            torch.cuda.set_device(device)
            stream = torch.cuda.Stream(device, priority=-1)  # ahead of training kernels
            try:
                with torch.cuda.stream(stream):
                    for images, texts in self.loader:
                        images, texts, replaced = prepare(images, texts)
                        self.replaced += replaced
                        done = torch.cuda.Event()
                        done.record(stream)
                        ready.put((images, texts, done))
            except BaseException as exc:  # noqa: BLE001 - handed to the training thread
                ready.put(exc)
                return
            ready.put(None)

        threading.Thread(target=produce, name="gpu-decode", daemon=True).start()
        while (item := ready.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            images, texts, done = item
            current = torch.cuda.current_stream(device)
            current.wait_event(done)
            images.record_stream(current)  # allocated on the side stream, used on this one
            yield images, texts

    def _prepare_function(self, device: str) -> Callable[[Any, Any], tuple[Any, Any, int]]:
        """(images, texts, replaced) from what the loader yields for one batch."""
        if self.decoder == "nvjpeg":
            return lambda datas, texts: decode_batch(list(datas), texts, self.spec, device)

        import torch

        from curate.pinned import PinnedStaging

        self.staging = self.staging or PinnedStaging()  # pinned buffers kept from epoch to epoch

        def from_workers(packed: Any, texts: Any) -> tuple[Any, Any, int]:
            groups, sizes, keep = packed
            replaced = int((keep != torch.arange(len(keep))).sum())
            return augment_padded(groups, sizes, keep, self.spec, device, self.staging), texts, replaced

        return from_workers


def install(decoder: str = "workers") -> None:
    """Patch open_clip_train (in this process) so its train data takes the GPU path above, with JPEGs
    decoded by `decoder` (DECODERS)."""
    import open_clip_train.data as ocd
    import open_clip_train.main as ocm
    import webdataset as wds

    if decoder not in DECODERS:
        raise ValueError(f"image decoder must be one of {', '.join(DECODERS)} (got '{decoder}')")
    state: dict[str, CropSpec | None] = {"spec": None}
    create, get_data = ocm.create_model_and_transforms, ocm.get_data
    decode, batched, web_loader = wds.decode, wds.batched, wds.WebLoader

    def create_model_and_transforms(*args: Any, **kwargs: Any) -> Any:
        model, train_transform, val_transform = create(*args, **kwargs)
        state["spec"] = CropSpec.from_transform(train_transform)
        if state["spec"] is None:
            log.warning("gpu_decode: unusual train transform, CPU path kept: %s", train_transform)
            return model, train_transform, val_transform
        return model, KeepBytes(), val_transform

    def decode_keeping_images(*handlers: Any, **kwargs: Any) -> Any:
        if state["spec"] is not None and handlers == ("pilrgb",):
            return decode(**kwargs)  # text decoded as usual; image bytes left encoded
        return decode(*handlers, **kwargs)

    def batched_packing(*args: Any, **kwargs: Any) -> Any:
        if state["spec"] is not None and decoder == "workers" and "collation_fn" not in kwargs:
            kwargs["collation_fn"] = pack_batch
        return batched(*args, **kwargs)

    def loader_one_ahead(*args: Any, **kwargs: Any) -> Any:
        """A decoded 4096 batch is ~3 GB: each worker keeps one ready, not open_clip's default two."""
        if state["spec"] is not None and decoder == "workers" and kwargs.get("num_workers", 0) > 0:
            kwargs.setdefault("prefetch_factor", 1)
        return web_loader(*args, **kwargs)

    def get_data_on_gpu(*args: Any, **kwargs: Any) -> Any:
        data = get_data(*args, **kwargs)
        if state["spec"] is not None and "train" in data:
            data["train"].dataloader = GpuBatches(data["train"].dataloader, state["spec"], decoder)
        return data

    wrapped = {"decode": decode_keeping_images, "batched": batched_packing, "WebLoader": loader_one_ahead}

    class _Wds:  # webdataset as open_clip's data module sees it, with three functions wrapped
        def __getattr__(self, name: str) -> Any:
            return wrapped[name] if name in wrapped else getattr(wds, name)

    ocm.create_model_and_transforms = create_model_and_transforms
    ocm.get_data = get_data_on_gpu
    ocd.wds = _Wds()
