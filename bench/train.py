"""Training throughput: open_clip's real training loop on resharded JPEG shards vs the same step on
random tensors already on the GPU (the model-only ceiling), in one run.

    python bench/train.py all --data /tmp/bench_data --samples 120000 --workers 12
    python bench/train.py gen --data DIR --samples N          # shards in the reshard layout
    python bench/train.py synthetic --batch 4096              # model/optimizer/loss/autocast step only
    python bench/train.py real --data DIR --gpus 1 --batch 4096 --steps 48 --workers 12 --decode workers
    python bench/train.py producer --data DIR --batch 4096   # GPU decode + augment alone, per batch
    python bench/train.py overlap --data DIR --batch 4096    # the synthetic step with the producer beside it

`all` runs the real loop once per `--decoders` entry (train.image_decoder: `workers` decode with PIL in
the loader workers, `nvjpeg` in the training process; `cpu` is open_clip's own CPU loader), each against
the synthetic rate of the same run. `real` goes through curate's own path (curate.training.job.train ->
launch -> entry -> open_clip_train.main.main; torchrun when --gpus > 1) with an unofficial ViT-B-32
scale whose global batch is --batch (DataComp small's 4096) and whose length is --steps optimiser steps.
Its rate is the steady state read from open_clip's out.log (each log line holds the mean batch time of
the steps since the previous line), so start-up, the first step and the final checkpoint are left out.
`producer` times what train.gpu_decode adds to the training process for one batch, apart: nvJPEG
decoding, the random-resized-crop resize done per image (F.interpolate in a loop, the old path) and
batched (curate/resize.py), and the `workers` decoder's part (copy of the padded batch to the GPU and
its batched resize), with a CUDA synchronise around each.
`synthetic` builds the same model (grad checkpointing), AdamW groups, ClipLoss (local loss, gather
with grad) and autocast, and times steps on random inputs that never leave the GPU.

The JPEGs: `--distinct` different 512 px images (~35 KB at quality 85: a smooth random field plus
noise), repeated under new keys and captions up to --samples; the loader decodes every sample, so
repetition does not make decoding cheaper, and it keeps generation to seconds.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import re
import statistics
import sys
import tarfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

WORDS = [
    "a",
    "photo",
    "of",
    "the",
    "red",
    "blue",
    "green",
    "small",
    "large",
    "dog",
    "cat",
    "car",
    "tree",
    "house",
    "street",
    "city",
    "beach",
    "mountain",
    "river",
    "person",
    "people",
    "sunset",
    "night",
    "food",
    "table",
    "chair",
    "window",
    "sky",
    "cloud",
    "flower",
    "bird",
    "boat",
]


# ------------------------------------------------------------------ data


def _jpeg(seed: int, size: int = 512, quality: int = 85) -> bytes:
    from PIL import Image

    rng = np.random.default_rng(seed)
    coarse = Image.fromarray(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)).resize(
        (size, size), Image.Resampling.BICUBIC
    )
    pixels = np.asarray(coarse, dtype=np.float32) + rng.normal(0, 4, (size, size, 3))
    buf = io.BytesIO()
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def _add(tf: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tf.addfile(info, io.BytesIO(data))


def generate(data: Path, samples: int, per_shard: int = 10_000, distinct: int = 2_000) -> dict[str, Any]:
    """Shards in the reshard layout (NNNNNNNN.tar with jpg/json/txt, _stats.json, meta.json)."""
    t0 = time.time()
    data.mkdir(parents=True, exist_ok=True)
    with ProcessPoolExecutor(min(16, os.cpu_count() or 1)) as pool:
        images = list(pool.map(_jpeg, range(distinct), chunksize=32))
    rng = np.random.default_rng(0)
    shards = math.ceil(samples / per_shard)
    for shard in range(shards):
        n = min(per_shard, samples - shard * per_shard)
        with tarfile.open(data / f"{shard:08d}.tar", "w") as tf:
            for row in range(n):
                i = shard * per_shard + row
                key = f"{shard:08d}{row:04d}"
                caption = " ".join(rng.choice(WORDS, int(rng.integers(5, 15))))
                _add(tf, f"{key}.jpg", images[int(rng.integers(distinct))])
                _add(tf, f"{key}.json", json.dumps({"uid": f"{i:032x}", "caption": caption}).encode())
                _add(tf, f"{key}.txt", caption.encode())
        (data / f"{shard:08d}_stats.json").write_text(json.dumps({"count": n, "successes": n}))
    meta = {"output_shard_count": shards, "output_shard_format": "{:08d}.tar"}
    (data / "meta.json").write_text(json.dumps(meta))
    mean_kb = sum(map(len, images)) / len(images) / 1024
    return {
        "samples": samples,
        "shards": shards,
        "mean_jpeg_kb": round(mean_kb, 1),
        "seconds": time.time() - t0,
    }


# ------------------------------------------------------------------ synthetic


def synthetic(
    batch: int,
    steps: int = 20,
    warmup: int = 5,
    grad_ckpt: bool = True,
    model_name: str = "ViT-B-32",
    background: Any = None,
) -> dict[str, Any]:
    """open_clip's train step (as open_clip_train.train does it) on random inputs on the GPU; with
    `background` (a callable) called in a loop in a thread meanwhile, as train.gpu_decode's producer runs."""
    import open_clip
    import torch

    from curate.clipmodels import BUILTIN_CONFIGS

    open_clip.add_model_config(BUILTIN_CONFIGS)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.benchmark = True
    model, _, _ = open_clip.create_model_and_transforms(
        model_name, precision="amp_bf16", device=device, output_dict=True
    )
    if grad_ckpt:
        model.set_grad_checkpointing()
    model.train()
    exclude = lambda n, p: p.ndim < 2 or "bn" in n or "ln" in n or "bias" in n or "logit_scale" in n  # noqa: E731
    named = list(model.named_parameters())
    optimizer = torch.optim.AdamW(
        [
            {"params": [p for n, p in named if exclude(n, p) and p.requires_grad], "weight_decay": 0.0},
            {"params": [p for n, p in named if not exclude(n, p) and p.requires_grad], "weight_decay": 0.2},
        ],
        lr=5e-4,
        betas=(0.9, 0.98),
        eps=1e-6,
    )
    loss_fn = open_clip.ClipLoss(local_loss=True, gather_with_grad=True, rank=0, world_size=1)
    size = model.visual.image_size
    size = size[0] if isinstance(size, tuple | list) else size
    images = torch.randn(batch, 3, size, size, device=device)
    texts = torch.randint(0, 49408, (batch, 77), device=device)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    times: list[float] = []
    stop, produced = threading.Event(), [0]

    def loop() -> None:
        with torch.cuda.stream(torch.cuda.Stream()):
            while not stop.is_set():
                background()
                produced[0] += 1

    if background is not None:
        threading.Thread(target=loop, daemon=True).start()
    started = time.perf_counter()
    for i in range(warmup + steps):
        sync()
        t0 = time.perf_counter()
        optimizer.zero_grad()
        with torch.amp.autocast(device_type=device, dtype=torch.bfloat16):
            out = model(images, texts)
            loss = loss_fn(**out)
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        sync()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    step = statistics.median(times)
    background_rate = produced[0] / (time.perf_counter() - started)
    stop.set()
    peak = torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else 0.0
    del model, optimizer, images, texts
    if device == "cuda":
        torch.cuda.empty_cache()
    return {
        "batch": batch,
        "grad_ckpt": grad_ckpt,
        "step_s": step,
        "samples_per_s": batch / step,
        "peak_gib": peak,
        **({"background_calls_per_s": background_rate} if background is not None else {}),
    }


# ------------------------------------------------------------------ real


_LINE = re.compile(
    r"Train Epoch: \d+ \[\s*(?P<done>\d+)/\d+ .*?Data \(t\): (?P<data>[\d.]+) Batch \(t\): (?P<batch>[\d.]+),"
)


def steady_rate(out_log: Path, global_batch: int) -> dict[str, Any]:
    """Samples/s after the first logged step. open_clip logs the mean batch and data time of the steps
    since its previous log line (its meters reset at every line), so each window's time is known."""
    points = [(0, 0.0, 0.0)]
    for line in out_log.read_text().splitlines():
        m = _LINE.search(line)
        if m:
            points.append((int(m["done"]) // global_batch, float(m["batch"]), float(m["data"])))
    pairs = zip(points[1:], points[2:], strict=False)
    windows = [(b - a, avg * (b - a), data * (b - a)) for (a, _, _), (b, avg, data) in pairs]
    steps = sum(w[0] for w in windows)
    seconds = sum(w[1] for w in windows)
    return {
        "steps": steps,
        "seconds": seconds,
        "samples_per_s": steps * global_batch / seconds,
        "step_s": seconds / steps,
        "data_wait_s_per_step": sum(w[2] for w in windows) / steps,
        "window_rates": [round(n * global_batch / t, 1) for n, t, _ in windows],
    }


def real(
    data: Path,
    out: Path,
    gpus: int,
    batch: int,
    steps: int,
    workers: int,
    name: str,
    model: str = "ViT-B-32",
    decode: str = "workers",
) -> dict[str, Any]:
    from curate.training.args import TrainSettings
    from curate.training.job import train
    from curate.training.scales import Scale

    scale = Scale("bench", model, batch, 5e-4, 10, steps * batch, log_every_n_steps=8)
    settings = TrainSettings(
        scale,
        num_checkpoints=1,
        precision="amp_bf16",
        workers=workers,
        gpus=gpus,
        gpu_decode=decode != "cpu",
        image_decoder=decode if decode != "cpu" else "workers",
    )
    t0 = time.time()
    info = train(str(data), out, name, settings, log=lambda m: print(f"  [{name}] {m}", flush=True))
    rate = steady_rate(out / name / "out.log", batch)
    return {
        "gpus": gpus,
        "per_gpu_batch": settings.per_gpu_batch,
        "global_batch": batch,
        "workers_per_gpu": workers,
        "decode": decode if settings.effective_gpu_decode else "cpu (open_clip's PIL loader)",
        "wall_s": time.time() - t0,
        "samples_seen": info["samples_seen"],
        **rate,
    }


# ------------------------------------------------------------------ producer


def _batches_of_bytes(data: Path, batch: int, count: int) -> list[list[bytes]]:
    """The first `count` batches of JPEG bytes of the shards, read with tarfile (no loader involved)."""
    images: list[bytes] = []
    for tar in sorted(data.glob("*.tar")):
        with tarfile.open(tar) as tf:
            for member in tf:
                if member.name.endswith(".jpg"):
                    images.append(tf.extractfile(member).read())  # type: ignore[union-attr]
                    if len(images) == batch * count:
                        return [images[i : i + batch] for i in range(0, len(images), batch)]
    raise SystemExit(f"{data}: fewer than {batch * count} images (run `gen` first)")


def _resize_loop(images: list[Any], params: np.ndarray, size: int) -> Any:
    """The old per-image path: one F.interpolate per crop."""
    import torch
    import torch.nn.functional as F

    return torch.cat(
        [
            F.interpolate(
                im[None, :, t : t + h, x : x + w].float(), size=(size, size), mode="bicubic", antialias=True
            )
            for im, (t, x, h, w) in zip(images, params.tolist(), strict=True)
        ]
    )


def producer(data: Path, batch: int, count: int = 4, size: int = 224) -> dict[str, Any]:
    import torch

    from curate.imagedecode import decode_tensors
    from curate.pinned import PinnedStaging
    from curate.resize import resize_crops
    from curate.training.gpu_loader import CropSpec, augment_padded, crop_params, pack_batch

    spec = CropSpec(size, (0.9, 1.0), (3 / 4, 4 / 3), (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    batches = _batches_of_bytes(data, batch, count)
    rng = np.random.default_rng(0)
    times: dict[str, list[float]] = {
        "decode": [],
        "resize_loop": [],
        "resize_batched": [],
        "worker_pack_one_process": [],
        "workers_copy_and_augment": [],
        "workers_pinned_copy_and_augment": [],
    }

    device = "cuda" if torch.cuda.is_available() else "cpu"  # cpu: to try the script here
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def timed(key: str, fn: Any) -> Any:
        sync()
        t0 = time.perf_counter()
        out = fn()
        sync()
        times[key].append(time.perf_counter() - t0)
        return out

    diffs = []
    for datas in batches:
        images, errors = timed("decode", lambda d=datas: decode_tensors(d, device))
        assert not any(errors), errors[:3]
        params = crop_params(np.array([tuple(im.shape[1:]) for im in images]), spec, rng)
        old = timed("resize_loop", lambda i=images, p=params: _resize_loop(i, p, size))
        new = timed("resize_batched", lambda i=images, p=params: resize_crops(i, p, size))
        diffs.append(float((old - new).abs().max()))
        del old, new, images
        tokens = torch.zeros(77, dtype=torch.long)
        (groups, sizes, keep), _ = timed(
            "worker_pack_one_process", lambda d=datas, t=tokens: pack_batch([(x, t) for x in d])
        )
        timed(
            "workers_copy_and_augment",
            lambda g=groups, z=sizes, k=keep: augment_padded(g, z, k, spec, device),
        )
        if device == "cuda":
            stage = PinnedStaging()
            for _ in range(2):  # the first call allocates the pinned buffers
                timed(
                    "workers_pinned_copy_and_augment",
                    lambda g=groups, z=sizes, k=keep, st=stage: augment_padded(g, z, k, spec, device, st),
                )
        del groups
    out: dict[str, Any] = {"batch": batch, "batches": count, "max_abs_diff_levels": max(diffs)}
    for key, values in times.items():
        if not values:
            continue
        steady = statistics.median(values[1:] if len(values) > 1 else values)
        out[f"{key}_ms"] = round(steady * 1000, 1)
        out[f"{key}_img_per_s"] = round(batch / steady)
    return out


def overlap(data: Path, batch: int, size: int = 224) -> dict[str, Any]:
    """The synthetic step alone, then with the GPU-decode producer (decode + crop + resize of real JPEG
    batches, on its own stream and thread) running beside it: what the producer costs the training, and
    where the producer's own time goes meanwhile (median ms of each part, each ended by a synchronise
    of the producer's stream), against the same parts with the GPU to itself. Also the rate of decoding
    on the CPU with torchvision's libjpeg in a pool of threads (decode_jpeg releases the GIL), an
    alternative to nvJPEG inside the training process."""
    import torch

    from curate.imagedecode import decode_tensors
    from curate.resize import resize_crops
    from curate.training.gpu_loader import CropSpec, crop_params

    spec = CropSpec(size, (0.9, 1.0), (3 / 4, 4 / 3), (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    batches = _batches_of_bytes(data, batch, 2)
    rng = np.random.default_rng(0)
    turn = [0]
    parts: dict[str, list[float]] = {"decode": [], "resize": []}

    def produce() -> None:
        stream = torch.cuda.current_stream()
        t0 = time.perf_counter()
        images, _ = decode_tensors(batches[turn[0] % len(batches)], "cuda")
        stream.synchronize()
        t1 = time.perf_counter()
        turn[0] += 1
        params = crop_params(np.array([tuple(im.shape[1:]) for im in images]), spec, rng)
        resize_crops(images, params, size).round_()
        stream.synchronize()
        parts["decode"].append(t1 - t0)
        parts["resize"].append(time.perf_counter() - t1)

    with torch.cuda.stream(torch.cuda.Stream()):
        for _ in range(3):
            produce()
    alone_parts = {k: round(statistics.median(v) * 1000, 1) for k, v in parts.items()}
    parts = {"decode": [], "resize": []}
    alone = synthetic(batch)
    beside = synthetic(batch, background=produce)
    return {
        "step_alone_s": alone["step_s"],
        "step_with_producer_s": beside["step_s"],
        "producer_batches_per_s_meanwhile": beside["background_calls_per_s"],
        "samples_per_s_with_producer": beside["samples_per_s"],
        "ratio": alone["step_s"] / beside["step_s"],
        "producer_ms_alone": alone_parts,
        "producer_ms_beside_training": {
            k: round(statistics.median(v) * 1000, 1) if v else None for k, v in parts.items()
        },
        "cpu_decode_img_per_s": _cpu_decode_rate(batches[0]),
    }


def _cpu_decode_rate(datas: list[bytes], threads: int = 12) -> dict[str, float]:
    """img/s of torchvision's CPU decode_jpeg over one batch in a pool of threads (and in one)."""
    from concurrent.futures import ThreadPoolExecutor

    import torch
    from torchvision.io import ImageReadMode, decode_jpeg

    def one(data: bytes) -> Any:
        return decode_jpeg(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.RGB)

    out = {}
    for n in (1, threads):
        with ThreadPoolExecutor(n) as pool:
            list(pool.map(one, datas[:64]))
            t0 = time.perf_counter()
            list(pool.map(one, datas))
            out[f"{n}_threads"] = round(len(datas) / (time.perf_counter() - t0))
    return out


# ------------------------------------------------------------------ main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["all", "gen", "synthetic", "real", "producer", "overlap"])
    ap.add_argument("--data", type=Path, default=Path("/tmp/bench_train_data"))
    ap.add_argument("--out", type=Path, default=Path("/tmp/bench_train_out"))
    ap.add_argument("--samples", type=int, default=120_000)
    ap.add_argument("--distinct", type=int, default=2_000)
    ap.add_argument("--batch", type=int, default=4096, help="global batch (DataComp small: 4096)")
    ap.add_argument("--steps", type=int, default=48)
    ap.add_argument("--workers", type=int, default=24, help="data loader workers per GPU")
    ap.add_argument("--gpus", type=int, default=1)
    ap.add_argument("--two-gpu-workers", type=int, default=14)
    ap.add_argument("--name", default="real", help="experiment folder under --out")
    ap.add_argument("--model", default="ViT-B-32", help="curate-tiny-vit64 to try the script on CPU")
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    ap.add_argument(
        "--decode",
        choices=["workers", "nvjpeg", "cpu"],
        default="workers",
        help="real: train.image_decoder with gpu_decode, or cpu (open_clip's CPU loader)",
    )
    ap.add_argument("--decoders", default="workers,nvjpeg", help="all: the real runs, one per decoder")
    args = ap.parse_args()
    results: dict[str, Any] = {}
    meta = args.data / "meta.json"
    made = meta.exists() and sum(json.loads(f.read_text())["count"] for f in args.data.glob("*_stats.json"))
    if args.what == "gen" or (args.what == "all" and made != args.samples):
        results["data"] = generate(args.data, args.samples, distinct=args.distinct)
        print("data:", results["data"], flush=True)
    if args.what in ("all", "synthetic"):
        results["synthetic"] = synthetic(args.batch, model_name=args.model)
        print("synthetic:", results["synthetic"], flush=True)
        plain = synthetic(1024, steps=10, grad_ckpt=False, model_name=args.model)
        results["synthetic_1024_no_ckpt"] = plain
        print("synthetic 1024 no ckpt:", plain, flush=True)
    if args.what in ("all", "producer"):
        results["producer"] = producer(args.data, args.batch)
        print("producer:", results["producer"], flush=True)
    if args.what == "overlap":
        results["overlap"] = overlap(args.data, args.batch)
        print("overlap:", results["overlap"], flush=True)
    if args.what == "real":
        results["real"] = real(
            args.data,
            args.out,
            args.gpus,
            args.batch,
            args.steps,
            args.workers,
            args.name,
            args.model,
            args.decode,
        )
        print("real:", results["real"], flush=True)
    if args.what == "all":
        env1 = os.environ.get("CUDA_VISIBLE_DEVICES")
        os.environ["CUDA_VISIBLE_DEVICES"] = "0"
        for decode in args.decoders.split(","):
            key = f"real_1gpu_{decode}"
            results[key] = real(
                args.data, args.out, 1, args.batch, args.steps, args.workers, key, args.model, decode
            )
            ratio = results[key]["samples_per_s"] / results["synthetic"]["samples_per_s"]
            results[f"real_over_synthetic_{decode}"] = ratio
            print(f"real 1 GPU ({decode}):", results[key], flush=True)
            print(f"real ({decode}) / synthetic on one GPU: {ratio:.1%} (target >= 85%)", flush=True)
        if env1 is None:
            del os.environ["CUDA_VISIBLE_DEVICES"]
        else:
            os.environ["CUDA_VISIBLE_DEVICES"] = env1
        import torch

        if torch.cuda.device_count() >= 2:
            decode = args.decoders.split(",")[0]
            results["real_2gpu"] = real(
                args.data,
                args.out,
                2,
                args.batch,
                args.steps,
                args.two_gpu_workers,
                "real_2gpu",
                args.model,
                decode,
            )
            print(f"real 2 GPUs (torchrun, {decode}):", results["real_2gpu"], flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    sys.exit(main())
