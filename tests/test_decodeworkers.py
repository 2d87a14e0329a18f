"""Decode worker processes (curate.decodeworkers), run on the CPU: the same pixels as decoding in the
model's process (GPU workers' path) or within 2 levels of it (CPU workers' crops), errors per row,
several shards at once, early close, a dead worker. The last test runs both kinds on a GPU (device)."""

from __future__ import annotations

import io
import os
import signal
import time

import numpy as np
import pytest
import torch
from PIL import Image

from curate.decodeworkers import DecodeWorkers, PixelSpec, auto_workers
from curate.imagedecode import TensorPreprocess, decode_tensors
from curate.stages.embed import tar_image_spans
from tests.embed_fixtures import clipart_jpegs, write_shard

SPECS = [
    PixelSpec("a", 64, (0.48, 0.46, 0.41), (0.27, 0.26, 0.28), "shortest", "float32"),
    PixelSpec("b", 32, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), "squash", "bfloat16"),
]


def _png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (40, 24), (10, 200, 30)).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture(scope="module", params=["cpu", "gpu"])
def pool(request):  # noqa: ANN001, ANN201
    """A pool of one kind of worker (on this CPU device: GPU workers run their tensor path on the CPU)."""
    kind = (
        {"cpu_workers": 2, "gpu_workers": 0}
        if request.param == "cpu"
        else {"cpu_workers": 0, "gpu_workers": 2}
    )
    workers = DecodeWorkers(SPECS, "cpu", batch=3, gpu_slots=2, **kind)
    workers.kind = request.param
    yield workers
    workers.close()


@pytest.fixture(scope="module")
def shard(tmp_path_factory):
    images = clipart_jpegs(7)
    images[2] = b"\xff\xd8\xff not a jpeg at all"
    images[5] = _png()
    keys = {f"k{i}": data for i, data in enumerate(images)}
    tar, _ = write_shard(tmp_path_factory.mktemp("shard"), keys, [{"key": k, "text": k} for k in keys])
    return tar, images


def _pil_crop(data: bytes, spec: PixelSpec) -> torch.Tensor:
    """open_clip's eval transform up to ToTensor, with PIL: (3, S, S) pixel levels."""
    from torchvision import transforms as T

    size = spec.image_size if spec.resize_mode == "shortest" else (spec.image_size, spec.image_size)
    steps = T.Compose(
        [T.Resize(size, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(spec.image_size)]
    )
    image = steps(Image.open(io.BytesIO(data)).convert("RGB"))
    return torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1)


def _collect(items) -> tuple[dict[int, dict[str, torch.Tensor]], dict[int, str | None]]:  # noqa: ANN001
    pixels, errors = {}, {}
    for item in items:
        ok_rows = [r for r, e in zip(item.rows, item.errors, strict=True) if e is None]
        for i, row in enumerate(ok_rows):
            pixels[int(row)] = {name: t[i].clone() for name, t in item.pixels.items()}
        errors.update({int(r): e for r, e in zip(item.rows, item.errors, strict=True)})
        item.release()
    return pixels, errors


def _spans(tar) -> tuple[np.ndarray, list[tuple[int, int]]]:  # noqa: ANN001
    spans = tar_image_spans(tar)
    return np.arange(len(spans)) + 100, [(off, size) for _, off, size in spans]


def test_workers_give_the_pixels_of_decoding_in_process(pool, shard) -> None:  # noqa: ANN001
    tar, images = shard
    rows, spans = _spans(tar)
    pixels, errors = _collect(pool.stream(tar, rows, spans))
    assert sorted(errors) == list(rows)
    assert errors[102].startswith("undecodable image") and sum(e is not None for e in errors.values()) == 1
    decoded, _ = decode_tensors(images, "cpu")
    for spec in SPECS:
        prep = TensorPreprocess(spec.image_size, spec.mean, spec.std, spec.resize_mode)
        dtype = getattr(torch, spec.dtype)
        levels = torch.tensor(spec.std).view(3, 1, 1) * 255
        for i, image in enumerate(decoded):
            if image is None:
                continue
            want = prep([image], dtype)[0]
            got = pixels[100 + i][spec.name]
            assert got.dtype == dtype and got.shape == want.shape
            if pool.kind == "gpu":
                assert torch.equal(got, want), (spec.name, i)
            else:  # resized on the CPU (torch's uint8 bicubic): against PIL's, open_clip's reference
                ref = _pil_crop(images[i], spec).float()
                diff = (got.float() * levels + torch.tensor(spec.mean).view(3, 1, 1) * 255 - ref).abs()
                assert diff.max() <= 2.5 and diff.mean() < 0.5, (spec.name, i, diff.max(), diff.mean())


def test_two_shards_at_once_and_an_early_close(pool, shard) -> None:  # noqa: ANN001
    tar, _ = shard
    rows, spans = _spans(tar)
    first = pool.stream(tar, rows, spans)
    second = pool.stream(tar, rows + 1000, spans)
    third = pool.stream(tar, rows + 2000, spans)
    next(first).release()
    first.close()  # its queued chunks are dropped, its slots come back
    pixels, errors = _collect(second)
    assert sorted(errors) == list(rows + 1000) and len(pixels) == 6
    _, errors = _collect(third)
    assert sorted(errors) == list(rows + 2000)


def test_a_missing_tar_fails_its_stream_with_the_reason(pool, shard, tmp_path) -> None:  # noqa: ANN001
    tar, _ = shard
    rows, spans = _spans(tar)
    with pytest.raises(RuntimeError, match="FileNotFoundError"):
        _collect(pool.stream(tmp_path / "gone.tar", rows, spans))
    _, errors = _collect(pool.stream(tar, rows, spans))  # the pool still works
    assert len(errors) == len(rows)


def test_a_dead_worker_fails_the_stream_instead_of_hanging(shard) -> None:  # noqa: ANN001
    tar, _ = shard
    rows, spans = _spans(tar)
    workers = DecodeWorkers(SPECS[:1], "cpu", cpu_workers=1, gpu_workers=0, batch=2)
    try:
        assert not workers.broken
        os.kill(workers._procs[0].pid, signal.SIGKILL)
        time.sleep(0.2)
        with pytest.raises(RuntimeError, match="died"):
            _collect(workers.stream(tar, rows, spans))
        assert workers.broken
        stage = _stage_with(workers)
        stage._replace_broken_decoders()  # the stage's next shard drops the broken pool
        assert stage._decoders is None and not any(p.is_alive() for p in workers._procs)
    finally:
        workers.close()


def _stage_with(workers: DecodeWorkers):  # noqa: ANN202
    """An embed stage on this CPU whose decode pool is `workers` (its replacement there: none)."""
    import threading

    from curate.clipmodels import load_clip
    from curate.config import EmbedConfig
    from curate.stages.embed import EmbedStage

    stage = EmbedStage.__new__(EmbedStage)
    stage.embed = EmbedConfig(models=[{"name": "t", "arch": "curate-tiny-vit64"}])
    stage._models = [load_clip(stage.embed.models[0], "cpu")]
    stage._decoders, stage._decoders_lock = workers, threading.Lock()
    return stage


def test_auto_workers_share_the_host_cores_among_its_gpus() -> None:
    assert auto_workers("cuda", cores=16, gpus=1) == (12, 2)
    assert auto_workers("cuda:1", cores=8, gpus=1) == (4, 2)
    assert auto_workers("cuda", cores=128, gpus=8) == (12, 2)
    assert auto_workers("cuda", cores=32, gpus=8) == (0, 0)  # 4 cores a GPU: decode in the model process
    assert auto_workers("cuda", cores=4, gpus=1) == (0, 0)
    assert auto_workers("cpu", cores=64, gpus=0) == (0, 0)


def test_embed_shard_takes_its_images_from_the_workers(tmp_path) -> None:  # noqa: ANN001
    """The stage's glue on this CPU: rows, reasons and embeddings as when decoding in process (PIL)."""
    import pyarrow.parquet as pq

    from curate.clipmodels import load_clip
    from curate.config import EmbedModelConfig
    from curate.stages.embed import embed_shard

    images = clipart_jpegs(9)
    images[4] = b"\xff\xd8\xff broken"
    keys = {f"k{i}": data for i, data in enumerate(images)}
    rows = [{"key": k, "text": f"clip art {k}", "status": "success"} for k in keys]
    rows.append({"key": "gone", "text": "never downloaded", "status": "failed_to_download"})
    tar, meta = write_shard(tmp_path, keys, rows)
    model = load_clip(EmbedModelConfig(name="t", arch="curate-tiny-vit64"), "cpu")
    embed_shard(tar, meta, tmp_path / "p.npz", [model], batch_size=4)
    reference = pq.read_table(meta)
    workers = DecodeWorkers([PixelSpec.of(model)], "cpu", cpu_workers=2, gpu_workers=0, batch=4)
    try:
        stats = embed_shard(tar, meta, tmp_path / "w.npz", [model], batch_size=4, decode_workers=workers)
    finally:
        workers.close()
    got = pq.read_table(meta)
    assert stats["embedded"] == 8 and stats["undecodable"] == 1 and stats["no_image"] == 1
    assert stats["cpu_decoded_chunks"] == 3
    assert got.column("embed_error").to_pylist() == reference.column("embed_error").to_pylist()
    w, p = np.load(tmp_path / "w.npz"), np.load(tmp_path / "p.npz")
    assert np.array_equal(w["t_txt"], p["t_txt"])
    ok = ~np.isnan(p["t_img"][:, 0])
    assert ok.sum() == 8 and np.array_equal(ok, ~np.isnan(w["t_img"][:, 0]))
    cosine = (w["t_img"][ok].astype(float) * p["t_img"][ok].astype(float)).sum(1)
    assert cosine.min() > 0.995, cosine


def _photo_jpegs(n: int) -> list[bytes]:
    """Noisy photo-like JPEGs of mixed sizes (the device has no openclipart)."""
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        h, w = int(rng.integers(90, 300)), int(rng.integers(90, 300))
        base = Image.fromarray(rng.integers(0, 255, (4, 6, 3), dtype=np.uint8)).resize((w, h), Image.BICUBIC)
        buf = io.BytesIO()
        base.save(buf, "JPEG", quality=85 + i % 10)
        out.append(buf.getvalue())
    return out


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU (runs on the device)")
def test_on_the_gpu_workers_embed_as_the_model_process_does(tmp_path) -> None:  # noqa: ANN001
    import pyarrow.parquet as pq

    from curate.clipmodels import load_clip
    from curate.config import EmbedModelConfig
    from curate.stages.embed import embed_shard

    images = _photo_jpegs(40)
    images[7] = b"\xff\xd8\xff broken"
    keys = {f"k{i:03d}": data for i, data in enumerate(images)}
    rows = [{"key": k, "text": f"caption {k}", "status": "success"} for k in keys]
    tar, meta = write_shard(tmp_path, keys, rows)
    model = load_clip(EmbedModelConfig(name="t", arch="curate-tiny-vit64"), "cuda")
    embed_shard(tar, meta, tmp_path / "p.npz", [model], batch_size=16)  # decoded in this process
    scores_p = pq.read_table(meta).column("clip_t_similarity_score").to_numpy()
    prep = TensorPreprocess(model.image_size, model.mean, model.std, model.resize_mode)
    decoded, _ = decode_tensors(images, "cuda")
    for kind in ({"cpu_workers": 3, "gpu_workers": 0}, {"cpu_workers": 0, "gpu_workers": 2}):
        workers = DecodeWorkers([PixelSpec.of(model)], "cuda", batch=16, **kind)
        try:
            rows_, spans = _spans(tar)
            pixels, errors = _collect(workers.stream(tar, rows_, spans))
            for i, image in enumerate(decoded):
                assert (image is None) == (errors[100 + i] is not None)
                if image is not None and kind["gpu_workers"]:  # batched on the GPU: bf16 rounding apart
                    want = prep([image], torch.float32)[0]
                    levels = (
                        (pixels[100 + i]["t"].float() - want).abs()
                        * torch.tensor(model.std, device="cuda").view(3, 1, 1)
                        * 255
                    )
                    assert levels.max() < 1.5, (i, levels.max())
            stats = embed_shard(tar, meta, tmp_path / "w.npz", [model], batch_size=16, decode_workers=workers)
        finally:
            workers.close()
        scores_w = pq.read_table(meta).column("clip_t_similarity_score").to_numpy()
        assert stats["embedded"] == 39 and stats["undecodable"] == 1, kind
        assert np.isnan(scores_w[7]) and np.isnan(scores_p[7])
        np.testing.assert_allclose(scores_w, scores_p, atol=5e-3)
        w, p = np.load(tmp_path / "w.npz"), np.load(tmp_path / "p.npz")
        np.testing.assert_allclose(w["t_img"].astype(float), p["t_img"].astype(float), atol=1e-2)
