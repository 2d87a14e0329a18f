"""Embed stage: open_clip image and text embeddings of every downloaded sample, DataComp's way.

For each download shard it reads `shards/NNNNNNNN.tar` and the metadata part `metadata/NNNNNNNN.parquet`
and writes `metadata/NNNNNNNN.npz` (`<name>_img`, `<name>_txt` per model, float16, L2-normalised, rows
aligned with the parquet) and adds `clip_<name>_similarity_score` (float32 cosine) and `embed_error`
to the parquet. Rows without an image (failed download, undecodable) keep their row with a NaN image
embedding, a NaN score and the reason. `embed_shard` is a plain function; the stage wraps it so a
Ray actor loads the models once (`setup`) and then embeds shard after shard.
"""

from __future__ import annotations

import io
import os
import queue
import tarfile
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from curate.clipmodels import ClipModel, load_clip, model_problems, pick_device
from curate.config import EmbedConfig, PipelineConfig, settings_for_hash
from curate.imagedecode import TENSOR_RESIZE_MODES, TensorPreprocess, decode_pil, decode_tensors
from curate.rundir import RunDir, atomic_write_bytes
from curate.stages.base import ShardTask, Stage

IMAGE_EXTS = ("jpg", "jpeg", "png", "webp")
SCHEMA_KEY = b"curate.embed.columns"  # parquet metadata: the columns this stage wrote (replaced on rerun)


def score_column(name: str) -> str:
    return f"clip_{name}_similarity_score"


class EmbedStage(Stage):
    """Download shards -> npz embeddings + CLIP score columns in the metadata parts."""

    name = "embed"
    items_label = "images"
    uses_actors = True

    def __init__(self, cfg: PipelineConfig, run: RunDir) -> None:
        assert cfg.embed is not None
        self.embed: EmbedConfig = cfg.embed
        self.run = run
        self.device = self.embed.device
        self.num_gpus = 1.0 if self.device == "cuda" else 0.0
        self._models: list[ClipModel] | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_models": None}  # models are loaded where the stage runs, not shipped

    def settings(self) -> Any:
        return settings_for_hash(self.embed)

    def output_dirs(self) -> list[Path]:
        return []  # writes into metadata/, which the download stage owns; outputs are replaced per shard

    def describe(self) -> tuple[str, str]:
        names = ", ".join(f"{m.name}={m.arch}" for m in self.embed.models)
        return (f"shards/*.tar + metadata/*.parquet ({names})", "metadata/*.npz + clip_*_similarity_score")

    def preflight(self) -> list[str]:
        return [p for i, m in enumerate(self.embed.models) for p in model_problems(m, f"embed.models.{i}")]

    def place(self, cluster_gpus: float) -> None:
        """Choose CPU or GPU actors once the runner knows what the cluster has ('auto')."""
        if self.embed.device == "auto":
            self.device = "cuda" if cluster_gpus > 0 else "cpu"
            self.num_gpus = 1.0 if self.device == "cuda" else 0.0

    def plan(self) -> list[ShardTask]:
        tasks = []
        for stats in sorted(self.run.shards.glob("*_stats.json")):
            shard_id = stats.name[: -len("_stats.json")]
            meta = self.run.metadata / f"{shard_id}.parquet"
            if meta.exists():
                tasks.append(ShardTask(shard_id, pq.ParquetFile(meta).metadata.num_rows))
        return tasks

    def shard_outputs(self, shard_id: str) -> list[Path]:
        return [self.run.metadata / f"{shard_id}.npz"]

    def needs_rerun(self, record: dict[str, Any]) -> bool:
        """A shard downloaded again (`download --retry-failed`) since it was embedded must be redone."""
        sid = record.get("shard_id")
        return bool(sid) and record.get("stats", {}).get("input") != _fingerprint(
            self.run.shards / f"{sid}.tar"
        )

    def setup(self) -> None:
        """Once per worker: load every model (bf16 on GPU, fp32 on CPU)."""
        device = pick_device(self.device)
        if device == "cpu" and self.num_gpus == 0:
            import torch

            torch.set_num_threads(max(1, int(os.environ.get("CURATE_TORCH_THREADS", "1"))))
        self._models = [load_clip(m, device) for m in self.embed.models]

    def run_shard(self, task: ShardTask) -> dict[str, Any]:
        if self._models is None:
            self.setup()
        assert self._models is not None
        sid = task.shard_id
        tar = self.run.shards / f"{sid}.tar"
        stats = embed_shard(
            tar,
            self.run.metadata / f"{sid}.parquet",
            self.run.metadata / f"{sid}.npz",
            self._models,
            batch_size=self.embed.batch_size,
            gpu_decode=self.embed.gpu_decode,
        )
        return {**stats, "input": _fingerprint(tar), "shard_id": sid}

    def finish(self, results: dict[str, dict[str, Any]]) -> dict[str, Any]:
        totals = super().finish(results)
        totals.pop("seconds", None)
        return totals


def _fingerprint(path: Path) -> str:
    try:
        st = path.stat()
    except FileNotFoundError:
        return ""
    return f"{st.st_size}:{st.st_mtime_ns}"


# ---------------------------------------------------------------- one shard, no Ray


@dataclass
class ImageBatch:
    rows: np.ndarray  # positions in the metadata part
    pixels: dict[str, Any]  # model name -> (B,3,S,S) tensor on the model's device
    ready: Any = None  # CUDA event recorded after preprocessing (GPU path)


def read_tar_images(tar: Path) -> Iterator[tuple[str, bytes]]:
    """(key, image bytes) for every image member of a webdataset tar, in tar order."""
    with tarfile.open(tar, "r") as tf:
        for member in tf:
            if not member.isfile():
                continue
            key, _, ext = member.name.rpartition(".")
            if ext.lower() in IMAGE_EXTS:
                f = tf.extractfile(member)
                if f is not None:
                    yield key, f.read()


def _chunks(items: Iterable[Any], n: int) -> Iterator[list[Any]]:
    batch: list[Any] = []
    for item in items:
        batch.append(item)
        if len(batch) == n:
            yield batch
            batch = []
    if batch:
        yield batch


def _prefetch(it: Iterator[Any], depth: int) -> Iterator[Any]:
    """Run `it` in a background thread, `depth` items ahead (decoding overlaps the model)."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    done = object()

    def work() -> None:
        try:
            for item in it:
                q.put(item)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the consumer
            q.put(exc)
        q.put(done)

    threading.Thread(target=work, daemon=True).start()
    while (item := q.get()) is not done:
        if isinstance(item, BaseException):
            raise item
        yield item


def _image_batches(
    tar: Path,
    row_of: dict[str, int],
    models: list[ClipModel],
    batch_size: int,
    gpu_decode: bool,
    errors: list[str | None],
) -> Iterator[ImageBatch]:
    """Decoded, preprocessed batches; every image decoded once and shared by all models."""
    import torch

    device = models[0].device
    tensor_path = (
        gpu_decode and device.startswith("cuda") and all(m.resize_mode in TENSOR_RESIZE_MODES for m in models)
    )
    stream = torch.cuda.Stream() if tensor_path else None
    members = ((row_of[k], data) for k, data in read_tar_images(tar) if k in row_of)
    for chunk in _chunks(members, batch_size):
        rows = [r for r, _ in chunk]
        if tensor_path:
            with torch.cuda.stream(stream):
                images, errs = decode_tensors([d for _, d in chunk], device)
                ok = [i for i, im in enumerate(images) if im is not None]
                pixels = (
                    {
                        m.name: TensorPreprocess(m.image_size, m.mean, m.std, m.resize_mode)(
                            [images[i] for i in ok], m.dtype
                        )
                        for m in models
                    }
                    if ok
                    else {}
                )
                event = torch.cuda.Event()
                event.record(stream)
        else:
            images, errs, pixels_list = [], [], []
            for _, data in chunk:
                try:
                    images.append(decode_pil(data))
                    errs.append(None)
                except Exception as exc:  # noqa: BLE001 - a corrupt image is a per-row reason
                    images.append(None)
                    errs.append(f"undecodable image: {type(exc).__name__}: {str(exc)[:120]}")
            ok = [i for i, im in enumerate(images) if im is not None]
            for m in models:
                pixels_list.append(torch.stack([m.preprocess(images[i]) for i in ok]) if ok else None)
            pixels = {m.name: p for m, p in zip(models, pixels_list, strict=True) if p is not None}
            event = None
        for i, err in enumerate(errs):
            if err:
                errors[rows[i]] = err
        if ok:
            yield ImageBatch(np.asarray([rows[i] for i in ok]), pixels, event)


def _token_chunks(models: list[ClipModel], texts: list[str], batch_size: int) -> Iterator[tuple[int, Any]]:
    """Tokenised caption batches (one tokenizer call per batch; models sharing a tokenizer share it)."""
    for start in range(0, len(texts), batch_size):
        yield start, {id(m.tokenizer): m.tokenizer(texts[start : start + batch_size]) for m in models}


def embed_shard(
    tar: Path,
    meta_path: Path,
    npz_path: Path,
    models: list[ClipModel],
    *,
    batch_size: int = 256,
    gpu_decode: bool = True,
) -> dict[str, Any]:
    """Embed one shard's images and captions with every model; write the npz, then the parquet."""
    import torch

    t0 = time.time()
    table = _without_our_columns(pq.read_table(meta_path))
    n = table.num_rows
    keys = table.column("key").to_pylist()
    status = table.column("status").to_pylist() if "status" in table.column_names else ["success"] * n
    texts = ["" if t is None else str(t) for t in table.column("text").to_pylist()]
    errors: list[str | None] = [None if s == "success" else f"no image (download {s})" for s in status]
    row_of = {k: i for i, k in enumerate(keys) if status[i] == "success"}
    device = models[0].device
    img = {m.name: _nan_buffer(n, m, device) for m in models}
    txt = {m.name: _nan_buffer(n, m, device) for m in models}
    seen = np.zeros(n, dtype=bool)

    decode_s = time.time()
    batches = _prefetch(_image_batches(tar, row_of, models, batch_size, gpu_decode, errors), depth=3)
    for batch in batches:
        if batch.ready is not None:
            torch.cuda.current_stream().wait_event(batch.ready)
        idx = torch.as_tensor(batch.rows, device=device)
        with torch.inference_mode():
            for m in models:
                x = m.model.encode_image(batch.pixels[m.name].to(device, m.dtype))
                img[m.name][idx] = torch.nn.functional.normalize(x.float(), dim=-1)
        seen[batch.rows] = True
    image_s = time.time() - decode_s
    from curate.clipmodels import encode_text_trimmed

    for start, tokens in _prefetch(_token_chunks(models, texts, batch_size), depth=4):
        with torch.inference_mode():
            for m in models:
                x = encode_text_trimmed(m.model, tokens[id(m.tokenizer)].to(device))
                txt[m.name][start : start + x.shape[0]] = torch.nn.functional.normalize(x.float(), dim=-1)
    for i in np.flatnonzero(~seen):
        if errors[i] is None:
            errors[i] = "no image in the tar"

    arrays, scores = {}, {}
    for m in models:
        im, tx = img[m.name].cpu().numpy(), txt[m.name].cpu().numpy()
        scores[m.name] = np.einsum("ij,ij->i", im, tx).astype(np.float32)  # NaN where no image
        arrays[f"{m.name}_img"] = im.astype(np.float16)
        arrays[f"{m.name}_txt"] = tx.astype(np.float16)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    atomic_write_bytes(npz_path, buf.getvalue())
    _write_scores(meta_path, table, scores, errors)
    embedded = int(seen.sum())
    return {
        "rows": n,
        "embedded": embedded,
        "no_image": int(sum(1 for e in errors if e and not e.startswith("undecodable"))),
        "undecodable": int(sum(1 for e in errors if e and e.startswith("undecodable"))),
        "image_seconds": round(image_s, 3),
        "seconds": round(time.time() - t0, 3),
    }


def _nan_buffer(n: int, model: ClipModel, device: str) -> Any:
    import torch

    dim = int(model.model.text_projection.shape[-1]) if hasattr(model.model, "text_projection") else None
    if dim is None:
        dim = int(model.model.encode_text(model.tokenizer([""]).to(device)).shape[-1])
    return torch.full((n, dim), float("nan"), dtype=torch.float32, device=device)


def _without_our_columns(table: pa.Table) -> pa.Table:
    """The metadata part as the download wrote it: drop what an earlier embed added (keeps reruns exact)."""
    meta = table.schema.metadata or {}
    ours = meta.get(SCHEMA_KEY, b"").decode().split(",")
    table = table.drop_columns([c for c in ours if c and c in table.column_names])
    return table.replace_schema_metadata({k: v for k, v in meta.items() if k != SCHEMA_KEY})


def _write_scores(
    meta_path: Path, table: pa.Table, scores: dict[str, np.ndarray], errors: list[str | None]
) -> None:
    """Add score columns (a pool's own score of the same name is kept as `pool_<column>`) and reasons."""
    written = []
    for name, values in scores.items():
        col = score_column(name)
        if col in table.column_names:
            table = table.append_column(f"pool_{col}", table.column(col)).drop_columns([col])
            written.append(f"pool_{col}")
        table = table.append_column(col, pa.array(values, type=pa.float32()))
        written.append(col)
    table = table.append_column("embed_error", pa.array(errors, type=pa.string()))
    written.append("embed_error")
    meta = dict(table.schema.metadata or {})
    meta[SCHEMA_KEY] = ",".join(written).encode()
    table = table.replace_schema_metadata(meta)
    buf = pa.BufferOutputStream()
    pq.write_table(table, buf)
    atomic_write_bytes(meta_path, buf.getvalue().to_pybytes())
