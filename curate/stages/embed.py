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
import mmap
import os
import queue
import tarfile
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from curate.clipmodels import ClipModel, load_clip, model_problems, pick_device
from curate.config import EmbedConfig, EmbedModelConfig, PipelineConfig, settings_for_hash
from curate.decodeworkers import DecodeWorkers, PixelSpec, auto_workers
from curate.imagedecode import TENSOR_RESIZE_MODES, TensorPreprocess, decode_pil, decode_tensors, undecodable
from curate.rundir import RunDir, atomic_write_bytes
from curate.stages.base import ShardTask, Stage

IMAGE_EXTS = ("jpg", "jpeg", "png", "webp")
DECODE_THREADS = int(os.environ.get("CURATE_DECODE_THREADS", "2"))  # GPU path: batches decoded at once
SCHEMA_KEY = b"curate.embed.columns"  # parquet metadata: the columns this stage wrote (replaced on rerun)


def score_column(name: str) -> str:
    return f"clip_{name}_similarity_score"


class EmbedStage(Stage):
    """Download shards -> npz embeddings + CLIP score columns in the metadata parts."""

    name = "embed"
    items_label = "rows"
    uses_actors = True

    def __init__(self, cfg: PipelineConfig, run: RunDir) -> None:
        assert cfg.embed is not None
        self.embed: EmbedConfig = cfg.embed
        self.run = run
        self.device = self.embed.device
        self.num_gpus = 1.0 if self.device == "cuda" else 0.0
        self._models: list[ClipModel] | None = None
        self._tokenizers: TokenizerPool | None = None
        self._decoders: DecodeWorkers | None = None
        self._decoders_lock = threading.Lock()  # two shards run at once on a GPU worker

    def __getstate__(self) -> dict[str, Any]:
        return {
            **self.__dict__,
            "_models": None,
            "_tokenizers": None,
            "_decoders": None,
            "_decoders_lock": None,
        }  # models are loaded where the stage runs, not shipped

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._decoders_lock = threading.Lock()

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
        """Choose CPU or GPU actors once the runner knows what the cluster has ('auto'). A GPU worker
        runs two shards at once, so one's reading and writing overlap the other's GPU work."""
        if self.embed.device == "auto":
            self.device = "cuda" if cluster_gpus > 0 else "cpu"
            self.num_gpus = 1.0 if self.device == "cuda" else 0.0
        self.shards_per_worker = 2 if self.device == "cuda" else 1

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
        stats = record.get("stats", {})
        sid = stats.get("shard_id")
        return bool(sid) and stats.get("input") != _fingerprint(self.run.shards / f"{sid}.tar")

    def setup(self) -> None:
        """Once per worker: load every model (bf16 on GPU, fp32 on CPU)."""
        device = pick_device(self.device)
        if device == "cpu" and self.num_gpus == 0:
            import torch

            torch.set_num_threads(max(1, int(os.environ.get("CURATE_TORCH_THREADS", "1"))))
        self._models = [load_clip(m, device) for m in self.embed.models]
        if device.startswith("cuda") and (os.cpu_count() or 1) > 2:
            workers = min(4, (os.cpu_count() or 2) - 2)  # 4 tokenise ~60k captions/s
            self._tokenizers = TokenizerPool(self.embed.models, workers=workers)
        self._decoders = self._start_decoders(device)

    def _start_decoders(self, device: str) -> DecodeWorkers | None:
        """Decode worker processes beside the models, when there is a GPU and the counts ask for any."""
        assert self._models is not None
        auto_cpu, auto_gpu = auto_workers(device)
        cpu = auto_cpu if self.embed.cpu_decode_workers == "auto" else self.embed.cpu_decode_workers
        gpu = auto_gpu if self.embed.gpu_decode_workers == "auto" else self.embed.gpu_decode_workers
        if not cpu + gpu or not _tensor_path(self._models, self.embed.gpu_decode):
            return None
        specs = [PixelSpec.of(m) for m in self._models]
        return DecodeWorkers(specs, device, cpu_workers=cpu, gpu_workers=gpu, batch=self.embed.batch_size)

    def _replace_broken_decoders(self) -> None:
        """A decode worker that died (killed for memory, say) failed the shards it served; the next
        shard gets a fresh pool instead of failing too."""
        with self._decoders_lock:
            if self._decoders is not None and self._decoders.broken:
                self._decoders.close()
                self._decoders = self._start_decoders(self._models[0].device)

    def run_shard(self, task: ShardTask) -> dict[str, Any]:
        if self._models is None:
            self.setup()
        assert self._models is not None
        self._replace_broken_decoders()
        sid = task.shard_id
        tar = self.run.shards / f"{sid}.tar"
        stats = embed_shard(
            tar,
            self.run.metadata / f"{sid}.parquet",
            self.run.metadata / f"{sid}.npz",
            self._models,
            batch_size=self.embed.batch_size,
            gpu_decode=self.embed.gpu_decode,
            tokenizer_pool=self._tokenizers,
            decode_workers=self._decoders,
        )
        return {**stats, "input": _fingerprint(tar), "shard_id": sid}

    def finish(self, results: dict[str, dict[str, Any]]) -> dict[str, Any]:
        totals = super().finish(results)
        totals.pop("seconds", None)
        for key in ("image_seconds", "text_seconds"):
            totals[key] = round(totals.get(key, 0.0), 3)
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
    release: Any = None  # called once the model's kernels reading `pixels` are queued (decode workers)


def tar_image_spans(tar: Path) -> list[tuple[str, int, int]]:
    """(key, offset, size) of every image member of a webdataset tar, in tar order.

    The 512-byte headers are walked directly (~0.5M members/s, against ~10k/s for `tarfile`, which would
    otherwise cap a GPU at a few thousand images/s). Tars with extended headers (pax, GNU long names) go
    through `tarfile`.
    """
    if tar.stat().st_size == 0:
        return []
    with open(tar, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        off, end, spans = 0, len(buf), []
        while off + 512 <= end and buf[off]:
            kind = buf[off + 156 : off + 157]
            if kind not in (b"0", b"\0", b"5"):
                return _spans_with_tarfile(tar)
            size = int(buf[off + 124 : off + 136].rstrip(b"\0 ") or b"0", 8)
            nul = buf.find(b"\0", off, off + 100)
            name = bytes(buf[off : nul if nul >= 0 else off + 100]).decode()
            key, _, ext = name.rpartition(".")
            if kind != b"5" and ext.lower() in IMAGE_EXTS:
                spans.append((key, off + 512, size))
            off += 512 + (size + 511) // 512 * 512
    return spans


def _spans_with_tarfile(tar: Path) -> list[tuple[str, int, int]]:
    with tarfile.open(tar, "r") as tf:
        return [
            (key, m.offset_data, m.size)
            for m in tf
            for key, _, ext in [m.name.rpartition(".")]
            if m.isfile() and ext.lower() in IMAGE_EXTS
        ]


def read_tar_images(tar: Path) -> Iterator[tuple[str, memoryview]]:
    """(key, image bytes) for every image member of a webdataset tar, in tar order.

    The tar is memory-mapped copy-on-write, so tensors can share its pages without a copy and pages are
    read only when decoded.
    """
    spans = tar_image_spans(tar)
    if not spans:
        return
    with open(tar, "rb") as f:
        view = memoryview(mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY))
    for key, start, size in spans:
        yield key, view[start : start + size]


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
    counters: dict[str, int],
) -> Iterator[ImageBatch]:
    """Decoded, preprocessed batches in tar order; every image decoded once and shared by all models.

    A reader thread walks the tar; two decoder threads (each with its own CUDA stream on the GPU path)
    decode and preprocess batches while the caller runs the models.
    """
    tensor_path = _tensor_path(models, gpu_decode)
    members = ((row_of[k], data) for k, data in read_tar_images(tar) if k in row_of)
    chunks = _prefetch(_chunks(members, batch_size), depth=4)
    local = threading.local()

    def decode(chunk: list[tuple[int, Any]]) -> tuple[ImageBatch, list[str | None]]:
        return _decode_chunk(chunk, models, tensor_path, counters, local)

    with ThreadPoolExecutor(DECODE_THREADS if tensor_path else 1) as pool:
        window: deque = deque()
        for chunk in chunks:
            window.append(pool.submit(decode, chunk))
            if len(window) >= 3:
                yield from _settle(window.popleft().result(), errors)
        while window:
            yield from _settle(window.popleft().result(), errors)


def _tensor_path(models: list[ClipModel], gpu_decode: bool) -> bool:
    """Whether images are decoded and preprocessed as tensors on the GPU (else PIL, open_clip's own)."""
    return (
        gpu_decode
        and models[0].device.startswith("cuda")
        and all(m.resize_mode in TENSOR_RESIZE_MODES for m in models)
    )


def _worker_batches(
    workers: DecodeWorkers,
    tar: Path,
    row_of: dict[str, int],
    errors: list[str | None],
    counters: dict[str, int],
) -> Iterator[ImageBatch]:
    """The shard's images from the decode workers, as they finish; failures recorded in `errors`."""
    spans = [(row_of[k], off, size) for k, off, size in tar_image_spans(tar) if k in row_of]
    rows = np.asarray([r for r, _, _ in spans], dtype=np.int64)
    decoded = workers.stream(tar, rows, [(off, size) for _, off, size in spans])
    try:
        for item in decoded:
            for key, value in item.counters.items():
                counters[key] = counters.get(key, 0) + value
            batch = ImageBatch(item.rows, item.pixels, item.ready, item.release)
            yield from _settle((batch, item.errors), errors)
    finally:
        decoded.close()


def _settle(result: tuple[ImageBatch, list[str | None]], errors: list[str | None]) -> Iterator[ImageBatch]:
    """Record each row's error; the batch of the rows that decoded (its pixels hold only those), if any."""
    batch, errs = result
    for row, err in zip(batch.rows, errs, strict=True):
        if err:
            errors[row] = err
    ok = np.asarray([e is None for e in errs], dtype=bool)
    if ok.any():
        yield ImageBatch(batch.rows[ok], batch.pixels, batch.ready, batch.release)
    elif batch.release is not None:
        batch.release()


def _decode_chunk(
    chunk: list[tuple[int, Any]],
    models: list[ClipModel],
    tensor_path: bool,
    counters: dict[str, int],
    local: threading.local,
) -> tuple[ImageBatch, list[str | None]]:
    """One batch decoded and preprocessed for every model; rows that fail carry their reason."""
    import torch

    rows = np.asarray([r for r, _ in chunk])
    datas = [d for _, d in chunk]
    event = None
    if tensor_path:
        if not hasattr(local, "stream"):
            local.stream = torch.cuda.Stream(priority=-1)  # ahead of the model kernels
        with torch.cuda.stream(local.stream):
            images, errs = decode_tensors(datas, models[0].device, counters)
            ok = [im for im in images if im is not None]
            pixels = {
                m.name: TensorPreprocess(m.image_size, m.mean, m.std, m.resize_mode)(ok, m.dtype)
                for m in models
                if ok
            }
            event = torch.cuda.Event()
            event.record(local.stream)
    else:
        images, errs = [], []
        for data in datas:
            try:
                images.append(decode_pil(data))
                errs.append(None)
            except Exception as exc:  # noqa: BLE001 - a corrupt image is a per-row reason
                images.append(None)
                errs.append(undecodable(exc))
        ok = [im for im in images if im is not None]
        pixels = {m.name: torch.stack([m.preprocess(im) for im in ok]) for m in models if ok}
    return ImageBatch(rows, pixels, event), errs


TokenBatches = Iterator[tuple[int, dict[str, Any]]]  # (first row, model name -> (B, 77) token ids)


def tokenize_inline(models: list[ClipModel], texts: list[str], batch_size: int) -> TokenBatches:
    """Caption batches tokenised here, once per distinct architecture."""
    for start in range(0, len(texts), batch_size):
        yield (
            start,
            _tokenize_all([(m.name, m.tokenizer, m.arch) for m in models], texts[start : start + batch_size]),
        )


def _tokenize_all(tokenizers: list[tuple[str, Any, str]], texts: list[str]) -> dict[str, Any]:
    by_arch: dict[str, Any] = {}
    for _, tok, arch in tokenizers:
        if arch not in by_arch:
            by_arch[arch] = tok(texts)
    return {name: by_arch[arch] for name, _, arch in tokenizers}


_WORKER_TOKENIZERS: list[tuple[str, Any, str]] = []


def _init_tokenizer_worker(specs: list[EmbedModelConfig]) -> None:
    import open_clip

    from curate.clipmodels import register

    for spec in specs:
        register(spec)
        _WORKER_TOKENIZERS.append((spec.name, open_clip.get_tokenizer(spec.arch), spec.arch))


def _tokenize_in_worker(texts: list[str]) -> dict[str, Any]:
    return {k: v.numpy() for k, v in _tokenize_all(_WORKER_TOKENIZERS, texts).items()}


class TokenizerPool:
    """Captions tokenised in worker processes while the GPU embeds images.

    open_clip's tokenizer is pure Python (~10-20k captions/s on one core): inline, it would cap a GPU
    that embeds 12k+ images/s. Workers are spawned (never forked from a process holding CUDA).
    """

    def __init__(self, specs: list[EmbedModelConfig], workers: int) -> None:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        self.executor = ProcessPoolExecutor(
            workers, mp_context=mp.get_context("spawn"), initializer=_init_tokenizer_worker, initargs=(specs,)
        )
        # Workers start on demand: start them all now, not during the first shard.
        for fut in [self.executor.submit(_tokenize_in_worker, ["warm up"]) for _ in range(workers)]:
            fut.result()

    def submit(self, texts: list[str], batch_size: int) -> TokenBatches:
        """Start every batch now; the returned iterator yields them in order as they finish."""
        import torch

        futures = [
            (start, self.executor.submit(_tokenize_in_worker, texts[start : start + batch_size]))
            for start in range(0, len(texts), batch_size)
        ]

        def results() -> TokenBatches:
            for start, fut in futures:
                yield start, {k: torch.from_numpy(v) for k, v in fut.result().items()}

        return results()

    def close(self) -> None:
        self.executor.shutdown(cancel_futures=True)


def embed_shard(
    tar: Path,
    meta_path: Path,
    npz_path: Path,
    models: list[ClipModel],
    *,
    batch_size: int = 256,
    gpu_decode: bool = True,
    tokenizer_pool: TokenizerPool | None = None,
    decode_workers: DecodeWorkers | None = None,
    by_caption_length: bool = True,
) -> dict[str, Any]:
    """Embed one shard's images and captions with every model; write the npz, then the parquet.

    Images come from `decode_workers` (separate processes, GPU) when given, else are decoded here.
    Caption batches are embedded between image batches, captions of similar length together
    (`by_caption_length`). `image_seconds` is that loop's time, `text_seconds` the captions left after
    the last image."""

    t0 = time.time()
    table = _without_our_columns(pq.read_table(meta_path))
    n = table.num_rows
    keys = table.column("key").to_pylist()
    status = table.column("status").to_pylist() if "status" in table.column_names else ["success"] * n
    texts = ["" if t is None else str(t) for t in table.column("text").to_pylist()]
    errors: list[str | None] = [None if s == "success" else f"no image (download {s})" for s in status]
    row_of = {k: i for i, k in enumerate(keys) if status[i] == "success"}
    device = models[0].device
    img, txt = _Embeddings(models), _Embeddings(models)
    seen = np.zeros(n, dtype=bool)

    # captions of similar length together: the text tower runs only to each batch's longest one
    by_length = np.argsort([len(t) if by_caption_length else 0 for t in texts], kind="stable")
    ordered = [texts[i] for i in by_length]
    if tokenizer_pool is not None:  # starts now, runs while the images are embedded
        token_batches = tokenizer_pool.submit(ordered, batch_size)
    else:
        token_batches = _prefetch(tokenize_inline(models, ordered, batch_size), depth=4)
    counters: dict[str, int] = {}
    decode_s = time.time()
    if decode_workers is not None:
        batches = _worker_batches(decode_workers, tar, row_of, errors, counters)
    else:
        batches = _prefetch(
            _image_batches(tar, row_of, models, batch_size, gpu_decode, errors, counters), depth=3
        )
    captions = _Captions(models, iter(token_batches), by_length, txt)
    try:
        for batch in batches:
            img.add_images(batch)
            seen[batch.rows] = True
            captions.embed(upto=int(seen.sum()))
        _sync(device)
        image_s = time.time() - decode_s
        captions.embed(upto=n)
    finally:
        batches.close()  # after a failure above: the decoders drop this shard's queued chunks
    _sync(device)
    text_s = time.time() - decode_s - image_s
    for i in np.flatnonzero(~seen):
        if errors[i] is None:
            errors[i] = "no image in the tar"

    arrays, scores = {}, {}
    for m in models:
        im, tx = img.gathered(m, n), txt.gathered(m, n)
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
        "text_seconds": round(text_s, 3),
        **counters,
        "seconds": round(time.time() - t0, 3),
    }


class _Embeddings:
    """Every model's normalised embeddings, batch by batch. They stay on the device in the order the
    batches came (indexing rows there would copy indices to the GPU each batch, and a copy from pageable
    memory waits for all queued kernels) and go to their rows once, on the host, at the end."""

    def __init__(self, models: list[ClipModel]) -> None:
        self.models = models
        self.rows: list[np.ndarray] = []
        self.parts: dict[str, list[Any]] = {m.name: [] for m in models}

    def add(self, rows: np.ndarray, outputs: dict[str, Any]) -> None:
        import torch

        for name, x in outputs.items():
            self.parts[name].append(torch.nn.functional.normalize(x.float(), dim=-1))
        self.rows.append(rows)

    def add_images(self, batch: ImageBatch) -> None:
        """Run every model's image tower on a batch."""
        import torch

        if batch.ready is not None:  # made on another stream: wait for it, keep its memory till used here
            stream = torch.cuda.current_stream()
            stream.wait_event(batch.ready)
            for pixels in batch.pixels.values():
                pixels.record_stream(stream)
        with torch.inference_mode():
            self.add(
                batch.rows,
                {
                    m.name: m.model.encode_image(batch.pixels[m.name].to(m.device, m.dtype))
                    for m in self.models
                },
            )
        if batch.release is not None:
            batch.release()

    def gathered(self, model: ClipModel, n: int) -> np.ndarray:
        """(n, dim) float32 on the host, NaN in rows without an embedding."""
        import torch

        out = np.full((n, model.embed_dim), np.nan, dtype=np.float32)
        if self.rows:
            out[np.concatenate(self.rows)] = torch.cat(self.parts[model.name]).cpu().numpy()
        return out


class _Captions:
    """Caption batches (in `order`, rows by caption length) embedded between image batches, so the GPU
    keeps busy while the decoders work and few captions are left for after the last image."""

    def __init__(
        self,
        models: list[ClipModel],
        batches: Iterator[tuple[int, dict[str, Any]]],
        order: np.ndarray,
        out: _Embeddings,
    ) -> None:
        self.models, self.batches, self.order, self.out, self.done = models, batches, order, out, 0

    def embed(self, upto: int) -> None:
        """Embed batches until `upto` captions are done (or none are left)."""
        import torch

        from curate.clipmodels import encode_text_trimmed

        while self.done < upto and (item := next(self.batches, None)) is not None:
            start, tokens = item
            with torch.inference_mode():
                outputs = {m.name: encode_text_trimmed(m.model, tokens[m.name]) for m in self.models}
            count = len(next(iter(outputs.values())))
            self.out.add(self.order[start : start + count], outputs)
            self.done = start + count


def _sync(device: str) -> None:
    """Wait for queued GPU work, so phase timings measure work done, not work queued."""
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def _without_our_columns(table: pa.Table) -> pa.Table:
    """The metadata part as the download wrote it: drop what an earlier embed added and give a pool's
    own score column back its name (keeps reruns byte-identical)."""
    meta = table.schema.metadata or {}
    ours = [c for c in meta.get(SCHEMA_KEY, b"").decode().split(",") if c in table.column_names]
    kept_pool = [c for c in ours if c.startswith("pool_")]
    table = table.drop_columns([c for c in ours if c not in kept_pool])
    names = [c[len("pool_") :] if c in kept_pool else c for c in table.column_names]
    return table.rename_columns(names).replace_schema_metadata(
        {k: v for k, v in meta.items() if k != SCHEMA_KEY}
    )


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
