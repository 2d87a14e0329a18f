"""GPU augmentation for training: the augmentation read from open_clip's train transform, its pixels
against open_clip's own PIL transform (same random crop), the workers' padded batches, undecodable images,
open_clip's data pipeline handing over decoded (workers) or encoded (nvjpeg) images, and (on a GPU) the
batches the training loop receives."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import open_clip
import open_clip_train.data as ocd
import open_clip_train.main as ocm
import pytest
import torch
from PIL import Image
from torchvision import transforms as T

from curate import resize
from curate.clipmodels import BUILTIN_CONFIGS
from curate.training.entry import patch_webdataset_eof
from curate.training.gpu_loader import (
    CropSpec,
    GpuBatches,
    KeepBytes,
    augment,
    augment_padded,
    crop_params,
    decode_batch,
    install,
    pack_batch,
)
from tests.training.shards import write_resharded

open_clip.add_model_config(BUILTIN_CONFIGS)


def _train_transform(arch: str = "ViT-B-32") -> T.Compose:
    return open_clip.create_model_and_transforms(arch)[1]


def _jpeg(w: int = 512, h: int = 384, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (h // 16, w // 16, 3), dtype=np.uint8)
    smooth = np.asarray(Image.fromarray(base).resize((w, h), Image.BICUBIC))
    noisy = np.clip(smooth + rng.normal(0, 12, smooth.shape), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(noisy).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def test_spec_is_read_from_open_clips_train_transform() -> None:
    spec = CropSpec.from_transform(_train_transform())
    assert spec == CropSpec(
        224,
        (0.9, 1.0),
        (0.75, 4 / 3),
        (0.48145466, 0.4578275, 0.40821073),
        (0.26862954, 0.26130258, 0.27577711),
    )
    assert CropSpec.from_transform(_train_transform("curate-tiny-vit64")).size == 64
    with_jitter = T.Compose([*_train_transform().transforms, T.ColorJitter(0.4)])
    assert CropSpec.from_transform(with_jitter) is None  # other augmentations keep the CPU path


def test_pixels_match_open_clips_pil_transform_for_the_same_crop() -> None:
    from torchvision.transforms import functional as TF

    transform = _train_transform()
    spec = CropSpec.from_transform(transform)
    assert spec is not None
    crop, rest = transform.transforms[0], T.Compose(transform.transforms[1:])
    diffs = []
    for seed in range(8):
        data = _jpeg(seed=seed)
        pil = Image.open(io.BytesIO(data)).convert("RGB")
        image = torch.from_numpy(np.asarray(pil).copy()).permute(2, 0, 1)
        params = crop_params(np.array([[pil.height, pil.width]]), spec, np.random.default_rng(seed))
        top, left, h, w = params[0].tolist()
        reference = rest(TF.resized_crop(pil, top, left, h, w, crop.size, crop.interpolation, antialias=True))
        ours = augment([image], spec, params)[0]
        diffs.append((ours - reference).abs() * torch.tensor(spec.std).view(3, 1, 1) * 255)
    levels = torch.stack(diffs)
    # measured: mean 0.165, max 2 levels of 255 (bicubic rounding; PIL filters in fixed point)
    assert levels.mean() < 0.5 and levels.max() <= 6


def test_crop_parameters_follow_torchvisions_rule() -> None:
    spec = CropSpec.from_transform(_train_transform())
    assert spec is not None
    sizes = np.array([[384, 512], [512, 512], [100, 700], [64, 48]] * 500)
    params = crop_params(sizes, spec, np.random.default_rng(0))
    top, left, h, w = params.T
    assert (top >= 0).all() and (left >= 0).all()
    assert (top + h <= sizes[:, 0]).all() and (left + w <= sizes[:, 1]).all()
    tried = sizes[:, 0] != 100  # 100 x 700: no try fits, so torchvision's central-crop fallback
    area = h * w / (sizes[:, 0] * sizes[:, 1])
    assert (area[tried] > 0.87).all() and (area[tried] <= 1.0).all()
    assert (w[tried] / h[tried] > 0.72).all() and (w[tried] / h[tried] < 1.38).all()
    assert params[2].tolist() == [0, 283, 100, 133]  # h = 100, w = round(100 * 4/3), centred
    assert len({tuple(p) for p in params[sizes[:, 0] == 384]}) > 200  # random where a try fits


def test_an_undecodable_image_takes_its_neighbours_place() -> None:
    spec = CropSpec.from_transform(_train_transform("curate-tiny-vit64"))
    assert spec is not None
    datas = [_jpeg(seed=1), b"\xff\xd8\xff garbage", _jpeg(seed=2)]
    texts = torch.tensor([[1], [2], [3]])
    images, kept_texts, replaced = decode_batch(datas, texts, spec, "cpu")
    assert images.shape == (3, 3, 64, 64) and replaced == 1
    assert kept_texts.tolist() == [[1], [1], [3]]
    with pytest.raises(RuntimeError, match="no image of a batch of 1 decodes"):
        decode_batch([b"nope"], texts[:1], spec, "cpu")


def _args(data: Path, samples: int, batch: int) -> SimpleNamespace:
    return SimpleNamespace(
        train_data=str(data / "{00000000..00000001}.tar"),
        val_data=None,
        train_num_samples=samples,
        val_num_samples=None,
        dataset_resampled=True,
        train_data_upsampling_factors=None,
        seed=0,
        batch_size=batch,
        workers=1,
        world_size=1,
    )


def _patched_open_clip(monkeypatch: pytest.MonkeyPatch, decoder: str) -> None:
    for module, name in ((ocm, "create_model_and_transforms"), (ocm, "get_data"), (ocd, "wds")):
        monkeypatch.setattr(module, name, getattr(module, name))  # restored after the test
    monkeypatch.setattr(ocd, "tarfile_to_samples_nothrow", ocd.tarfile_to_samples_nothrow)
    patch_webdataset_eof()
    install(decoder)


def test_open_clips_pipeline_hands_over_encoded_images_to_nvjpeg(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _patched_open_clip(monkeypatch, "nvjpeg")
    model, train_transform, _ = ocm.create_model_and_transforms("curate-tiny-vit64")
    assert isinstance(train_transform, KeepBytes)
    data = write_resharded(tmp_path / "data", 32, per_shard=16)
    tokenizer = open_clip.get_tokenizer("curate-tiny-vit64")
    info = ocd.get_wds_dataset(_args(data, 16, 8), train_transform, True, tokenizer=tokenizer)
    images, texts = next(iter(info.dataloader))
    assert len(images) == 8 and all(bytes(b[:3]) == b"\xff\xd8\xff" for b in images)
    assert texts.shape == (8, 77) and texts.dtype == torch.long


def test_open_clips_workers_hand_over_decoded_pixels_in_shared_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _patched_open_clip(monkeypatch, "workers")
    model, train_transform, _ = ocm.create_model_and_transforms("curate-tiny-vit64")
    assert isinstance(train_transform, KeepBytes)  # decoded at the end of the worker's pipeline
    data = write_resharded(tmp_path / "data", 32, per_shard=16)
    decoded = {}  # every training JPEG as PIL decodes it
    for tar in sorted(data.glob("*.tar")):
        with tarfile.open(tar) as tf:
            for m in tf:
                if m.name.endswith(".jpg"):
                    pil = Image.open(io.BytesIO(tf.extractfile(m).read())).convert("RGB")  # type: ignore[union-attr]
                    decoded[np.asarray(pil).tobytes()] = m.name
    tokenizer = open_clip.get_tokenizer("curate-tiny-vit64")
    info = ocd.get_wds_dataset(_args(data, 16, 8), train_transform, True, tokenizer=tokenizer)
    assert info.dataloader.pipeline[0].prefetch_factor == 1  # ~3 GB a 4096 batch: one ready per worker
    (groups, sizes, keep), texts = next(iter(info.dataloader))
    [(positions, padded)] = groups  # eight 48 px images: one group
    assert padded.dtype == torch.uint8 and padded.shape == (8, 48, 48, 3) and padded.is_shared()
    assert sorted(positions.tolist()) == list(range(8)) and keep.tolist() == list(range(8))
    assert sizes.tolist() == [[48, 48]] * 8
    assert all(padded[i].numpy().tobytes() in decoded for i in range(8))  # PIL's pixels, untouched
    assert texts.shape == (8, 77) and texts.dtype == torch.long


def _png(w: int, h: int, value: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((h, w), value, np.uint8)).save(buf, "PNG")  # grey: converted to RGB
    return buf.getvalue()


def _slots(groups: list) -> dict[int, torch.Tensor]:
    """Batch position -> its padded slot, over pack_batch's groups."""
    return {int(i): padded[k] for positions, padded in groups for k, i in enumerate(positions)}


def test_pack_batch_decodes_each_image_into_the_corner_of_its_slot() -> None:
    jpeg = _jpeg(40, 30, seed=3)
    samples = [(jpeg, torch.tensor([1, 2])), (_png(3, 9, 200), torch.tensor([3, 4]))]
    (groups, sizes, keep), texts = pack_batch(samples)
    assert len(groups) == 1 and groups[0][1].shape == (2, 30, 40, 3)
    assert sizes.tolist() == [[30, 40], [9, 3]] and keep.tolist() == [0, 1]
    slots = _slots(groups)
    pil = np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB"))
    assert (slots[0].numpy() == pil).all()  # libjpeg-turbo through torchvision: PIL's very pixels
    assert (slots[1][:9, :3] == 200).all()
    assert texts.tolist() == [[1, 2], [3, 4]]
    floats = pack_batch([(torch.zeros(3, 4, 4), torch.tensor([1])), (torch.ones(3, 4, 4), torch.tensor([2]))])
    assert floats[0].shape == (2, 3, 4, 4)  # a validation batch (already transformed) collates as usual


def test_a_huge_image_gets_a_group_of_its_own(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(resize, "CHUNK_PIXELS", 2000 * 1500)  # the real cap is 2^27 pixels
    small = [(_jpeg(40, 30, seed=i), torch.tensor([i])) for i in range(3)]
    (groups, sizes, _), _ = pack_batch([*small, (_png(2000, 1500, 5), torch.tensor([3]))])
    shapes = sorted(tuple(padded.shape) for _, padded in groups)
    assert shapes == [(1, 1500, 2000, 3), (3, 30, 40, 3)]  # not four 1500 x 2000 slots
    assert sizes.tolist()[3] == [1500, 2000]


def test_pack_batch_replaces_an_undecodable_image_by_its_neighbour() -> None:
    truncated = _jpeg(seed=4)[:600]  # a header with a size, then no image data
    samples = [(b"not an image", torch.tensor([0])), (_png(6, 5, 9), torch.tensor([1]))]
    samples += [(truncated, torch.tensor([2])), (_png(4, 4, 7), torch.tensor([3]))]
    (groups, sizes, keep), texts = pack_batch(samples)
    assert keep.tolist() == [1, 1, 1, 3] and texts.flatten().tolist() == [1, 1, 1, 3]
    assert sizes.tolist()[1] == [5, 6] and (_slots(groups)[1][:5, :6] == 9).all()
    spec = CropSpec.from_transform(_train_transform("curate-tiny-vit64"))
    assert spec is not None
    out = augment_padded(groups, sizes, keep, spec, "cpu")
    assert torch.equal(out[0], out[1]) and torch.equal(out[2], out[1])  # the neighbour's pixels
    with pytest.raises(RuntimeError, match="no image of a batch of 1 decodes"):
        pack_batch([(b"nope", torch.tensor([0]))])


@pytest.mark.parametrize("chunk_pixels", [resize.CHUNK_PIXELS, 1])
def test_padded_batches_augment_as_lists_do(monkeypatch: pytest.MonkeyPatch, chunk_pixels: int) -> None:
    monkeypatch.setattr(resize, "CHUNK_PIXELS", chunk_pixels)  # 1: one group per image
    spec = CropSpec.from_transform(_train_transform())
    assert spec is not None
    jpegs = [_jpeg(w, h, seed=w) for w, h in [(512, 384), (300, 500), (224, 224), (640, 200)]]
    (groups, sizes, keep), _ = pack_batch([(j, torch.tensor([0])) for j in jpegs])
    assert len(groups) == (1 if chunk_pixels > 1 else 4)
    torch.manual_seed(5)
    ours = augment_padded(groups, sizes, keep, spec, "cpu")
    torch.manual_seed(5)  # the same crops, drawn the same way
    rng = np.random.default_rng(int(torch.randint(0, 2**62, (1,)).item()))
    params = crop_params(sizes.numpy(), spec, rng)
    arrays = [np.asarray(Image.open(io.BytesIO(j)).convert("RGB")) for j in jpegs]
    reference = augment([torch.from_numpy(a.copy()).permute(2, 0, 1) for a in arrays], spec, params)
    assert ours.shape == (4, 3, 224, 224)
    assert (ours - reference).abs().max() < 0.02  # float sums only; the same rounding to uint8 levels


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU (runs on the device)")
def test_batches_arrive_on_the_gpu_ready_to_train(tmp_path: Path) -> None:
    spec = CropSpec.from_transform(_train_transform())
    assert spec is not None

    class Loader:
        num_batches, num_samples = 3, 12

        def __iter__(self):  # noqa: ANN204
            for b in range(3):
                yield [_jpeg(seed=b * 4 + i) for i in range(4)], torch.full((4, 77), b)

    batches = list(GpuBatches(Loader(), spec, "nvjpeg"))
    assert [t[0, 0].item() for _, t in batches] == [0, 1, 2]
    for images, _ in batches:
        assert images.is_cuda and images.shape == (4, 3, 224, 224) and torch.isfinite(images).all()

    class Packed:
        num_batches, num_samples = 3, 12

        def __iter__(self):  # noqa: ANN204
            for b in range(3):
                yield pack_batch([(_jpeg(seed=b * 4 + i), torch.full((77,), b)) for i in range(4)])

    for b, (images, texts) in enumerate(GpuBatches(Packed(), spec, "workers")):
        assert images.is_cuda and images.shape == (4, 3, 224, 224) and torch.isfinite(images).all()
        assert texts[0, 0].item() == b
