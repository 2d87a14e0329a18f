"""Embed benchmark: tar shards on local disk -> npz written, against the model-only rate in the same run.

    python bench/embed.py --device cuda --models ViT-B-32,ViT-L-14 --images 160000     # on the GPU box
    python bench/embed.py --device cpu --models curate-tiny-vit64 --images 2000        # on 2 cores

It writes synthetic webdataset shards (photo-like JPEGs of DataComp's shapes: 512 px longest side or less,
~60-100 KB, half of them in six common shapes, half of any aspect from 1:2 to 2:1, so that a batch holds
hundreds of distinct sizes as real shards do; alt-text-like captions), then per model: (1) the model-only
rate, image and text towers on inputs already on the device at the same batch size; (2) `embed_shard` end
to end (tar read, decode, preprocess, both towers, npz + parquet written), once per `--decoders`
entry (CPU:GPU decode worker processes, curate.decodeworkers, 0:0 decoding in the model's process;
`@2`: two shards at once, as the stage's GPU worker runs them; a trailing `~`: captions batched in row
order instead of by length). Models
are randomly initialised (weights do not change speed). It also states how close the GPU path is to
open_clip's reference (PIL preprocess, fp32 on CPU): pixel difference and embedding cosine. Prints a
table and a JSON line.

Use enough shards for the steady state: the first chunks and the last shard running alone are fixed costs.
On an H200, ViT-B/32 with 12:2@2 gave 8,800-9,700 img/s over 4 shards of 10,000 but 12,500 over 16.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import inspect
import io
import json
import multiprocessing as mp
import os
import sys
import tarfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from curate.clipmodels import encode_text_trimmed, load_clip  # noqa: E402
from curate.config import EmbedModelConfig  # noqa: E402
from curate.decodeworkers import DecodeWorkers, PixelSpec  # noqa: E402
from curate.imagedecode import TensorPreprocess, decode_pil, decode_rgb, decode_tensors  # noqa: E402
from curate.patchconv import PatchMatmul  # noqa: E402
from curate.stages.embed import TokenizerPool, embed_shard  # noqa: E402

SHAPES = [(512, 384), (384, 512), (512, 341), (512, 512), (512, 288), (341, 512)]
WORDS = [
    "photo",
    "of",
    "a",
    "the",
    "red",
    "blue",
    "dog",
    "cat",
    "house",
    "beach",
    "sunset",
    "car",
    "vintage",
    "wooden",
    "table",
    "kitchen",
    "modern",
    "design",
    "garden",
    "flowers",
    "city",
    "street",
    "night",
    "portrait",
    "woman",
    "man",
    "child",
    "smiling",
    "mountain",
    "lake",
    "winter",
    "snow",
    "sale",
    "free",
    "shipping",
    "black",
    "white",
    "leather",
    "shoes",
    "dress",
    "wedding",
    "party",
    "cake",
    "logo",
    "icon",
    "vector",
    "illustration",
]


def _image(i: int, scale: float = 1.0) -> tuple[bytes, str]:
    from PIL import Image

    rng = np.random.default_rng(i)
    if i % 2:  # half the images: any aspect from 1:2 to 2:1, longest side 512 (or smaller, not resized up)
        longest, aspect = int(rng.choice([512, 512, 512, 400, 300])), float(np.exp(rng.uniform(-0.7, 0.7)))
        w, h = (
            (longest, max(1, round(longest / aspect)))
            if aspect >= 1
            else (max(1, round(longest * aspect)), longest)
        )
    else:
        w, h = SHAPES[i % len(SHAPES)]
    w, h = max(1, round(w * scale)), max(1, round(h * scale))  # --image-scale: decoding made cheap
    base = rng.integers(0, 255, (6, 8, 3), dtype=np.uint8)
    im = Image.fromarray(base).resize((w, h), Image.BICUBIC)
    arr = np.asarray(im).astype(np.int16) + rng.normal(0, 9, (h, w, 3)).astype(np.int16)
    buf = io.BytesIO()
    Image.fromarray(arr.clip(0, 255).astype(np.uint8)).save(buf, "JPEG", quality=90)
    caption = " ".join(rng.choice(WORDS, size=int(rng.integers(3, 25))))
    return buf.getvalue(), caption


def make_shards(out: Path, images: int, shard_size: int, scale: float = 1.0) -> list[tuple[Path, Path]]:
    """Synthetic shards in `out`, reused when a finished earlier call made the same ones with this same
    image generator (160,000 images take ~2 minutes on 16 cores, a good part of a device call)."""
    out.mkdir(parents=True, exist_ok=True)
    generator = hashlib.sha1((inspect.getsource(_image) + repr((SHAPES, WORDS))).encode()).hexdigest()
    recipe = {"images": images, "shard_size": shard_size, "scale": scale, "generator": generator}
    made_file = out / "made.json"
    names = [(out / f"{s:08d}.tar", out / f"{s:08d}.parquet") for s in range(-(-images // shard_size))]
    if made_file.exists() and json.loads(made_file.read_text()) == recipe:
        print(f"reusing {images} images in {len(names)} shards", flush=True)
        return names
    made_file.unlink(missing_ok=True)
    with mp.Pool(os.cpu_count()) as pool:
        made = pool.map(functools.partial(_image, scale=scale), range(images), chunksize=64)
    shards = []
    for s, start in enumerate(range(0, images, shard_size)):
        tar, meta = out / f"{s:08d}.tar", out / f"{s:08d}.parquet"
        keys, texts = [], []
        with tarfile.open(tar, "w") as tf:
            for i in range(start, min(start + shard_size, images)):
                key = f"{s:08d}{i - start:04d}"
                for ext, data in (("jpg", made[i][0]), ("txt", made[i][1].encode())):
                    info = tarfile.TarInfo(f"{key}.{ext}")
                    info.size = len(data)
                    tf.addfile(info, io.BytesIO(data))
                keys.append(key)
                texts.append(made[i][1])
        pq.write_table(pa.table({"key": keys, "status": ["success"] * len(keys), "text": texts}), meta)
        shards.append((tar, meta))
    kb = np.mean([len(m[0]) for m in made]) / 1024
    print(f"made {images} images in {len(shards)} shards, mean {kb:.0f} KB", flush=True)
    made_file.write_text(json.dumps(recipe))
    return shards


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def model_only(model, device: str, batch: int, texts: list[str], seconds: float = 8.0) -> dict:
    """Image and text towers on inputs already on the device (the ceiling a pipeline approaches)."""
    import torch

    s = model.image_size
    pixels = torch.randn(batch, 3, s, s, device=device).to(model.dtype)
    tokens = model.tokenizer(texts[:batch]).to(device)
    m = model.model
    out = {}
    with torch.inference_mode():
        for name, fn in (
            ("image", lambda: model.model.encode_image(pixels)),
            (
                "image+text",
                lambda: (model.model.encode_image(pixels), encode_text_trimmed(m, tokens)),
            ),
        ):
            for _ in range(3):
                fn()
            _sync(device)
            t0, n = time.time(), 0
            while time.time() - t0 < seconds:
                fn()
                n += batch
                if n % (batch * 8) == 0:
                    _sync(device)
            _sync(device)
            out[name] = n / (time.time() - t0)
    return out


def parity(arch: str, device: str, shard: tuple[Path, Path], count: int = 128) -> dict:
    """The two decode paths against open_clip's reference (PIL, fp32 CPU): the GPU path (nvJPEG, resize on
    the device: the model process's own and the GPU workers') and the CPU workers' (libjpeg-turbo, torch's
    uint8 resize on the CPU, normalised on the device); pixel difference and embedding cosine in bf16."""
    import torch

    from curate.stages.embed import read_tar_images

    datas = [d for _, (_, d) in zip(range(count), read_tar_images(shard[0]), strict=False)]
    spec = EmbedModelConfig(name="m", arch=arch)
    ref_model = load_clip(spec, "cpu", bf16=False)
    ref_pix = torch.stack([ref_model.preprocess(decode_pil(d)) for d in datas])
    ref = ref_model.encode_images(ref_pix)
    images, _ = decode_tensors(datas, device)
    tp = TensorPreprocess(ref_model.image_size, ref_model.mean, ref_model.std, ref_model.resize_mode)
    pix = tp(images, torch.float32).cpu()
    px = ((pix - ref_pix).abs() * torch.tensor(ref_model.std).view(1, 3, 1, 1) * 255).flatten()
    fp32_dev = ref_model.encode_images(pix)
    fast = load_clip(spec, device)  # bf16 on GPU
    got = fast.encode_images(tp(images, fast.dtype))
    cos = lambda a, b: (a * b).sum(1)  # noqa: E731
    crops = torch.stack([tp.crop_uint8(decode_rgb(d)) for d in datas]).to(device)
    cpu_pix = tp._normalise(crops.float(), torch.float32).cpu()
    cpu_px = ((cpu_pix - ref_pix).abs() * torch.tensor(ref_model.std).view(1, 3, 1, 1) * 255).flatten()
    cpu_got = fast.encode_images(tp._normalise(crops.float(), fast.dtype))
    return {
        "cpu_workers_pixel_absdiff_mean": float(cpu_px.mean()),
        "cpu_workers_pixel_absdiff_max": float(cpu_px.max()),
        "cpu_workers_cos_bf16_min": float(cos(ref, cpu_got).min()),
        "cpu_workers_cos_bf16_mean": float(cos(ref, cpu_got).mean()),
        "pixel_absdiff_mean": float(px.mean()),
        "pixel_absdiff_p99": float(px.quantile(0.99)) if px.numel() < 16_000_000 else None,
        "pixel_absdiff_max": float(px.max()),
        "cos_decode_fp32_min": float(cos(ref, fp32_dev).min()),
        "cos_decode_bf16_min": float(cos(ref, got).min()),
        "cos_decode_bf16_mean": float(cos(ref, got).mean()),
    }


def profile(arch: str, device: str, shard: tuple[Path, Path], batch: int) -> dict:
    """Each part of the pipeline alone, in items/s: where the end-to-end time goes."""
    import torch

    from curate.stages.embed import TokenizerPool, read_tar_images, tokenize_inline

    spec = EmbedModelConfig(name="m", arch=arch)
    model = load_clip(spec, device)
    out: dict = {}
    t0 = time.time()
    datas = [d for _, d in read_tar_images(shard[0])]
    out["tar_read"] = len(datas) / (time.time() - t0)
    texts = pq.read_table(shard[1]).column("text").to_pylist()
    t0 = time.time()
    for _ in tokenize_inline([model], texts, batch):
        pass
    out["tokenize_inline"] = len(texts) / (time.time() - t0)
    pool = TokenizerPool([spec], workers=12)
    list(pool.submit(texts[:batch], batch))  # workers started
    t0 = time.time()
    list(pool.submit(texts, batch))
    out["tokenize_pool"] = len(texts) / (time.time() - t0)
    pool.close()
    counters: dict = {}
    tp, dtype = TensorPreprocess(model.image_size, model.mean, model.std, model.resize_mode), model.dtype
    for name, fn in (
        ("decode", lambda chunk: decode_tensors(chunk, device, counters)),
        ("decode+preprocess", lambda chunk: tp(decode_tensors(chunk, device, counters)[0], dtype)),
    ):
        fn(datas[:batch])
        _sync(device)
        t0 = time.time()
        for i in range(0, len(datas), batch):
            fn(datas[i : i + batch])
        _sync(device)
        out[name] = len(datas) / (time.time() - t0)
    out["counters"] = counters
    del model
    torch.cuda.empty_cache() if device.startswith("cuda") else None
    return {k: (round(v) if isinstance(v, float) else v) for k, v in out.items()}


def decoders_alone(decoders: DecodeWorkers, shards: list[tuple[Path, Path]]) -> dict:
    """The decode workers with no model running (each chunk given back at once): img/s, the chunks each
    kind took, and the CPU time their processes used per image."""
    import torch

    from curate.stages.embed import tar_image_spans

    def cpu_seconds() -> dict[str, float]:
        out: dict[str, float] = {}
        for p in decoders._procs:
            fields = Path(f"/proc/{p.pid}/stat").read_text().rsplit(")", 1)[1].split()
            kind = "cpu" if "-cpu-" in p.name else "gpu"
            out[kind] = out.get(kind, 0.0) + (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        return out

    before, t0, n, chunks = cpu_seconds(), time.time(), 0, {}
    streams = []
    for tar, _ in shards:
        spans = tar_image_spans(tar)
        streams.append(decoders.stream(tar, np.arange(len(spans)), [(o, s) for _, o, s in spans]))
    for stream in streams:
        for item in stream:
            n += len(item.rows)
            for key, value in item.counters.items():
                chunks[key] = chunks.get(key, 0) + value
            if item.ready is not None:
                item.ready.synchronize()
            item.release()
    if decoders.device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = time.time() - t0
    used = {k: round((v - before.get(k, 0.0)) / n * 1e3, 3) for k, v in cpu_seconds().items()}
    return {"img_s": round(n / seconds, 1), "chunks": chunks, "cpu_ms_per_img": used}


def _restore_conv(model) -> None:
    """Undo load_clip's curate.patchconv swap: the patch embedding back on cuDNN's convolution."""
    import torch

    patch = model.model.visual.conv1
    if isinstance(patch, PatchMatmul):
        out, inp = patch.weight.shape[:2]
        conv = torch.nn.Conv2d(inp, out, patch.patch, stride=patch.patch, bias=patch.bias is not None)
        conv.weight, conv.bias = patch.weight, patch.bias
        model.model.visual.conv1 = conv.to(patch.weight.device, patch.weight.dtype)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--models", default="ViT-B-32,ViT-L-14")
    ap.add_argument("--images", type=int, default=20000)
    ap.add_argument("--shard-size", type=int, default=10000)
    ap.add_argument("--batch", default="ViT-B-32=1024,ViT-L-14=256,curate-tiny-vit64=256")
    ap.add_argument("--data", default="/tmp/curate_bench_embed")
    ap.add_argument(
        "--decoders",
        default="0:0,12:2@2",
        help="CPU:GPU decode workers[@shards at once], a run each (0:0: decoding in the model's process)",
    )
    ap.add_argument(
        "--image-scale",
        type=float,
        default=1.0,
        help="image sides times this (e.g. 0.125: decoding nearly free, the rest of the pipeline's ceiling)",
    )
    ap.add_argument("--conv", action="store_true", help="patch embedding by cuDNN's convolution (A/B)")
    ap.add_argument("--parity", action="store_true")
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--out", default="")
    args = ap.parse_args()
    if args.device == "cpu":
        import torch

        torch.set_num_threads(os.cpu_count() or 1)
    data = Path(args.data)
    shards = make_shards(data / "shards", args.images, args.shard_size, args.image_scale)
    warm = make_shards(data / "warm", 512, 512)[0]
    texts = pq.read_table(shards[0][1]).column("text").to_pylist()
    batches = dict(kv.split("=") for kv in args.batch.split(","))
    rows = []
    for arch in args.models.split(","):
        batch = int(batches.get(arch, 256))
        if args.profile:
            print("profile", arch, json.dumps(profile(arch, args.device, shards[0], batch)), flush=True)
        model = load_clip(EmbedModelConfig(name="m", arch=arch), args.device)
        if args.conv:
            _restore_conv(model)
        ceiling = model_only(model, args.device, batch, texts)
        pool = TokenizerPool([EmbedModelConfig(name="m", arch=arch)], 4) if args.device != "cpu" else None
        for workers in args.decoders.split(","):
            at_once_part, _, unsorted = workers.partition("~")  # ~: captions in row order, not by length
            counts, _, at_once = at_once_part.partition("@")
            cpu, gpu = (int(w) for w in counts.split(":"))
            decoders = (
                DecodeWorkers(
                    [PixelSpec.of(model)], args.device, cpu_workers=cpu, gpu_workers=gpu, batch=batch
                )
                if cpu + gpu
                else None
            )
            kw = {
                "batch_size": batch,
                "tokenizer_pool": pool,
                "decode_workers": decoders,
                "by_caption_length": not unsorted,
            }
            embed_shard(warm[0], warm[1], data / "warm.npz", [model], **kw)
            pq.write_table(pq.read_table(warm[1]).select(["key", "status", "text"]), warm[1])
            alone = decoders_alone(decoders, shards) if decoders is not None else {}
            t0 = time.time()
            with ThreadPoolExecutor(int(at_once or 1)) as shard_threads:  # as the stage's GPU worker does
                futures = [
                    shard_threads.submit(embed_shard, tar, meta, meta.with_suffix(".npz"), [model], **kw)
                    for tar, meta in shards
                ]
                last = [f.result() for f in futures][-1]
            e2e = args.images / (time.time() - t0)
            pinned = decoders is not None and decoders._pinned
            if decoders is not None:
                decoders.close()
            row = {
                "device": args.device,
                "arch": arch,
                "batch": batch,
                "images": args.images,
                "decoders": workers,
                "patch_embedding": "conv" if args.conv else "matmul",
                "pinned": pinned,
                "end_to_end_img_s": round(e2e, 1),
                "model_only_image_img_s": round(ceiling["image"], 1),
                "model_only_image_text_img_s": round(ceiling["image+text"], 1),
                "ratio_to_model_only": round(e2e / ceiling["image+text"], 3),
                "ratio_to_image_tower": round(e2e / ceiling["image"], 3),
                "decoders_alone": alone,
                "last_shard": last,
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
            for _tar, meta in shards:  # back to the download's columns for the next run
                pq.write_table(pq.read_table(meta).select(["key", "status", "text"]), meta)
        if args.parity:
            rows[-1].update(parity(arch, args.device, shards[0]))
            print(json.dumps(rows[-1]), flush=True)
        del model
        if pool is not None:
            pool.close()
    if args.device.startswith("cuda"):
        import torch

        print("gpu:", torch.cuda.get_device_name(0))
    head = f"{'arch':<20}{'decoders':>9}{'end-to-end img/s':>18}{'model-only img/s':>18}{'ratio':>8}"
    print(head + f"{'img tower':>12}")
    for r in rows:
        print(
            f"{r['arch']:<20}{r['decoders']:>9}{r['end_to_end_img_s']:>18,.0f}"
            f"{r['model_only_image_text_img_s']:>18,.0f}{r['ratio_to_model_only']:>8.2f}"
            f"{r['model_only_image_img_s']:>12,.0f}"
        )
    if args.out:
        Path(args.out).write_text("\n".join(json.dumps(r) for r in rows) + "\n")


if __name__ == "__main__":
    main()
