"""Decode workers for the embed stage on a GPU: processes that turn a shard's JPEGs into model inputs
beside the model's process, on the CPU cores first and on the GPU when the cores fall behind.

Why: decoding on the GPU slows the model more than its kernels' time suggests. Measured on an H200
(bench/embed.py, torch.profiler): nvJPEG's kernels take ~7 us per 512 px JPEG and the resize ~11-14 us,
yet with nvJPEG alone ViT-B/32 (two towers ~37-44 us an image) ran at 7,600-8,500 img/s over 4 shards,
whether decoding in the model's process or in 1 to 4 other processes (whose CUDA contexts take turns
with the model's). CPU decoding costs the GPU only a copy. So:

- CPU workers (`cpu_workers`) decode with libjpeg-turbo (PIL's pixels) and resize and centre-crop on
  the CPU (torch's uint8 antialiased bicubic, within 2 levels of PIL's) into shared-memory slots, which
  are registered as pinned memory so the model's process copies them to the GPU by DMA and only
  normalises them there. A chunk is split across all CPU workers, so it is ready as soon as possible.
- GPU workers (`gpu_workers`) decode with nvJPEG and preprocess on the GPU into slots of normalised
  pixels, allocated once in the worker and opened by the model's process through CUDA IPC. They take a
  chunk only when the model has nothing decoded waiting (or there are no CPU workers).

Only (offset, size) spans of a tar go to a worker (it maps the tar itself) and only errors come back.
Chunks are queued first in, first out across all the shards being read, so a shard submitted while
another is still embedding is decoded as soon as slots free up. Works on a CPU device too (the tests).
"""

from __future__ import annotations

import contextlib
import mmap
import os
import queue
import threading
from collections import OrderedDict, deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

RESULT_POLL_S = 0.05  # how often a waiting consumer checks for dead workers and finished slots
CPU_SLOTS = 3  # chunks the CPU workers hold at once: one being decoded, others copying or queued

SlotKey = tuple[str, int, int]  # ("cpu", 0, slot) or ("gpu", worker, slot)


@dataclass(frozen=True)
class PixelSpec:
    """What one model needs from a decoded image: its preprocessing and input dtype."""

    name: str
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    resize_mode: str
    dtype: str  # torch dtype name, e.g. "bfloat16"

    @classmethod
    def of(cls, model: Any) -> PixelSpec:
        """The spec of a loaded curate.clipmodels.ClipModel."""
        return cls(
            model.name,
            model.image_size,
            tuple(model.mean),
            tuple(model.std),
            model.resize_mode,
            str(model.dtype).removeprefix("torch."),
        )

    def preprocess(self) -> Any:
        from curate.imagedecode import TensorPreprocess

        return TensorPreprocess(self.image_size, self.mean, self.std, self.resize_mode)


def auto_workers(device: str, cores: int | None = None, gpus: int | None = None) -> tuple[int, int]:
    """(CPU, GPU) workers for `auto`: the host's cores are shared by its GPUs (each has a model process);
    with 8 or more cores a GPU, all of its share but four for the CPU workers (the model's process,
    tokenizers) and two GPU workers; otherwise none (decoding then happens in the model's process)."""
    cores = cores if cores is not None else (os.cpu_count() or 1)
    gpus = gpus if gpus is not None else host_gpus()
    share = cores // max(1, gpus)
    return (share - 4, 2) if device.startswith("cuda") and share >= 8 else (0, 0)


def host_gpus() -> int:
    """NVIDIA GPUs on this host, whatever CUDA_VISIBLE_DEVICES shows this process (a Ray GPU worker sees
    one): the driver lists each in /proc/driver/nvidia/gpus."""
    try:
        return max(1, len(os.listdir("/proc/driver/nvidia/gpus")))
    except OSError:
        return 1


@dataclass
class Decoded:
    """One decoded chunk: its rows, an error text per row (None: decoded), each model's pixels for the
    rows that decoded (in order) and, when they are still being made on another CUDA stream, the event
    to wait for. Call `release()` once the model's kernels reading them are queued."""

    rows: np.ndarray
    errors: list[str | None]
    pixels: dict[str, Any]
    counters: dict[str, int]
    ready: Any = None
    _release: Any = field(repr=False, default=None)

    def release(self) -> None:
        if self._release is not None:
            self._release()
            self._release = None


class _Stream:
    """The chunks of one shard, as the pool decodes them."""

    def __init__(self, tar: str, chunks: int) -> None:
        self.tar = tar
        self.left = chunks  # chunks not yet handed to the consumer
        self.ready: deque[Decoded] = deque()
        self.error = ""
        self.closed = False


@dataclass
class _Job:
    """A chunk in a slot: for a CPU slot, its parts still out with the workers."""

    stream: _Stream
    rows: np.ndarray
    errors: list[str | None]
    parts: int
    counters: dict[str, int] = field(default_factory=dict)


class DecodeWorkers:
    """Spawned decode processes feeding one model process, `batch` images a chunk."""

    def __init__(
        self,
        specs: list[PixelSpec],
        device: str,
        *,
        cpu_workers: int,
        gpu_workers: int,
        batch: int,
        gpu_slots: int = 2,
    ) -> None:
        import torch
        import torch.multiprocessing as tmp

        if cpu_workers + gpu_workers < 1:
            raise ValueError("DecodeWorkers needs at least one worker")
        ctx = tmp.get_context("spawn")  # never fork a process that holds CUDA
        self.device, self.batch, self.specs = device, batch, specs
        self._preprocess = {s.name: s.preprocess() for s in specs}
        self._dtypes = {s.name: getattr(torch, s.dtype) for s in specs}
        self._results = ctx.Queue()
        self._cpu_tasks = ctx.Queue()
        self._gpu_tasks = [ctx.Queue() for _ in range(gpu_workers)]
        # CPU slots: uint8 crops in shared memory, made here so they can be pinned here
        self._cpu_buffers = [
            {s.name: torch.empty((batch, 3, s.image_size, s.image_size), dtype=torch.uint8) for s in specs}
            for _ in range(CPU_SLOTS if cpu_workers else 0)
        ]
        for slot in self._cpu_buffers:
            for buf in slot.values():
                buf.share_memory_()
        self._pinned = device.startswith("cuda") and all(
            _pin(b) for slot in self._cpu_buffers for b in slot.values()
        )
        self._procs = [
            ctx.Process(
                target=_cpu_worker_main,
                args=(specs, self._cpu_buffers, self._cpu_tasks, self._results, os.getpid()),
                daemon=True,
                name=f"curate-decode-cpu-{w}",
            )
            for w in range(cpu_workers)
        ] + [
            ctx.Process(
                target=_gpu_worker_main,
                args=(w, device, specs, batch, gpu_slots, self._gpu_tasks[w], self._results, os.getpid()),
                daemon=True,
                name=f"curate-decode-gpu-{w}",
            )
            for w in range(gpu_workers)
        ]
        for p in self._procs:
            p.start()
        self._closing = False
        self._gpu_buffers: dict[int, list[dict[str, Any]]] = {}
        for _ in self._procs:
            msg = self._get(timeout=None)
            if msg[0] != "ready":
                self.close()
                raise RuntimeError(
                    f"a decode worker could not start: {msg[1] if msg[0] == 'dead' else msg[3]}"
                )
            if msg[1] == "gpu":
                self._gpu_buffers[msg[2]] = msg[3]
        self._cpu_workers = cpu_workers
        self._free: dict[str, deque[SlotKey]] = {
            "cpu": deque(("cpu", 0, s) for s in range(len(self._cpu_buffers))),
            "gpu": deque(("gpu", w, s) for s in range(gpu_slots) for w in range(gpu_workers)),
        }
        self._released: deque[tuple[SlotKey, Any]] = deque()  # (slot, event) not finished yet
        self._pending: deque[tuple[_Stream, np.ndarray, list[tuple[int, int]]]] = deque()
        self._jobs: dict[SlotKey, _Job] = {}
        self._waiting = 0  # decoded chunks no consumer has taken yet
        self._changed = threading.Condition()
        self._failure = ""  # a worker died: every stream fails with this
        self._copy_stream = torch.cuda.Stream() if device.startswith("cuda") else None
        self._router = threading.Thread(target=self._route_results, daemon=True, name="curate-decode-router")
        self._router.start()

    @property
    def broken(self) -> bool:
        """A worker died: every stream fails from now on; close this pool and start another."""
        return bool(self._failure)

    # ------------------------------------------------------------ consumer side

    def stream(self, tar: Path, rows: np.ndarray, spans: list[tuple[int, int]]) -> Iterator[Decoded]:
        """Decode the images at `spans` ((offset, size) in `tar`) of the metadata rows `rows`, in chunks of
        the pool's batch; queued now, yielded as they finish (not necessarily in order). Closing the
        iterator early drops what is still queued."""
        n = self.batch
        stream = _Stream(str(tar), (len(spans) + n - 1) // n)
        with self._changed:
            self._pending.extend((stream, rows[i : i + n], spans[i : i + n]) for i in range(0, len(spans), n))
            self._submit()
        return self._iterate(stream)

    def _iterate(self, stream: _Stream) -> Iterator[Decoded]:
        try:
            while stream.left:
                with self._changed:
                    while not stream.ready and not stream.error and not self._failure:
                        self._changed.wait(RESULT_POLL_S)
                    if stream.error or self._failure:
                        raise RuntimeError(f"decoding {stream.tar}: {stream.error or self._failure}")
                    item = stream.ready.popleft()
                    self._waiting -= 1
                    self._submit()  # the model may now be starving: a GPU worker may take a chunk
                stream.left -= 1
                yield item
        finally:
            with self._changed:
                stream.closed = True  # what is still queued is dropped, what is decoded given back
                self._pending = deque(p for p in self._pending if p[0] is not stream)
                while stream.ready:
                    self._waiting -= 1
                    stream.ready.popleft().release()
                self._submit()

    # ------------------------------------------------------------ scheduling (under the lock)

    def _submit(self) -> None:
        """Hand queued chunks to free slots: CPU slots first, a GPU slot when the model is starving."""
        while self._released and _finished(self._released[0][1]):
            key = self._released.popleft()[0]
            self._free[key[0]].append(key)
        while self._pending:
            if self._free["cpu"]:
                key = self._free["cpu"].popleft()
            elif self._free["gpu"] and (self._waiting == 0 or not self._cpu_workers):
                key = self._free["gpu"].popleft()
            else:
                return
            stream, rows, spans = self._pending.popleft()
            if key[0] == "gpu":
                self._jobs[key] = _Job(stream, rows, [None] * len(rows), parts=1)
                self._gpu_tasks[key[1]].put((key[2], stream.tar, spans))
                continue
            size = -(-len(spans) // self._cpu_workers)  # every CPU worker takes a part
            starts = range(0, len(spans), size)
            self._jobs[key] = _Job(stream, rows, [None] * len(rows), parts=len(starts))
            for lo in starts:
                self._cpu_tasks.put((key[2], lo, stream.tar, spans[lo : lo + size]))

    def _route_results(self) -> None:
        """Router thread: results to their streams, finished slots back to the free lists, a dead worker
        reported to every waiting consumer."""
        while not self._closing:
            # a released slot is free once the kernels reading it finish: look again soon
            msg = self._get(timeout=0.002 if self._released else RESULT_POLL_S)
            with self._changed:
                if msg is not None:
                    self._route(msg)
                self._submit()
                self._changed.notify_all()

    def _route(self, msg: tuple[Any, ...]) -> None:
        if msg[0] == "dead":
            self._failure = msg[1]
            return
        kind, key, lo, payload, counters = msg
        job = self._jobs[key]
        if kind == "failed":
            job.stream.error = job.stream.error or payload
        else:
            job.errors[lo : lo + len(payload)] = payload
            for name, value in counters.items():
                job.counters[name] = job.counters.get(name, 0) + value
        job.parts -= 1
        if job.parts:
            return
        del self._jobs[key]
        job.counters[f"{key[0]}_decoded_chunks"] = 1
        if kind == "failed" or job.stream.closed or job.stream.error:
            self._free[key[0]].append(key)
            return
        ok = [i for i, e in enumerate(job.errors) if e is None]
        if key[0] == "gpu":
            pixels = {name: buf[: len(ok)] for name, buf in self._gpu_buffers[key[1]][key[2]].items()}
            item = Decoded(job.rows, job.errors, pixels, job.counters, None, lambda: self._release(key))
        else:
            pixels, ready = self._from_cpu_slot(key[2], ok, len(job.rows))
            self._released.append((key, ready))  # the slot is free once copied to the GPU
            item = Decoded(job.rows, job.errors, pixels, job.counters, ready)
        job.stream.ready.append(item)
        self._waiting += 1

    def _from_cpu_slot(self, slot: int, ok: list[int], n: int) -> tuple[dict[str, Any], Any]:
        """The decoded crops of a CPU slot as normalised model inputs on the device (on the copy stream,
        with the event that says they are done)."""
        import torch

        cuda = self._copy_stream is not None
        pixels = {}
        with torch.cuda.stream(self._copy_stream) if cuda else contextlib.nullcontext():
            for name, buf in self._cpu_buffers[slot].items():
                crops = buf[:n].to(self.device, non_blocking=self._pinned)
                if len(ok) < n:
                    crops = crops[torch.as_tensor(ok, device=crops.device)]
                pixels[name] = self._preprocess[name]._normalise(crops.float(), self._dtypes[name])
            if not cuda:
                return pixels, None
            event = torch.cuda.Event()
            event.record(self._copy_stream)
        return pixels, event

    def _release(self, key: SlotKey) -> None:
        """The consumer has queued the kernels that read a GPU slot: free it once they finish."""
        event = None
        if self.device.startswith("cuda"):
            import torch

            event = torch.cuda.Event()
            event.record()  # on the consumer's current stream, after its kernels
        self._released.append((key, event))  # deque.append is atomic: no lock on the model's path

    def _get(self, timeout: float | None) -> tuple[Any, ...] | None:
        """The next message from the workers (None after `timeout`); a dead worker is a message too."""
        while True:
            try:
                return self._results.get(timeout=RESULT_POLL_S if timeout is None else timeout)
            except queue.Empty:
                dead = [(p.name, p.exitcode) for p in self._procs if not p.is_alive() and not self._closing]
                if dead:
                    return ("dead", f"decode worker {dead[0][0]} died (exit code {dead[0][1]})")
                if timeout is not None:
                    return None

    def close(self) -> None:
        self._closing = True
        for q in [*self._gpu_tasks, *[self._cpu_tasks] * len(self._procs)]:
            q.put(None)
        for p in self._procs:
            p.join(timeout=5)
            if p.is_alive():
                p.terminate()
        if getattr(self, "_pinned", False):
            import torch

            for slot in self._cpu_buffers:
                for buf in slot.values():
                    torch.cuda.cudart().cudaHostUnregister(buf.data_ptr())
            self._pinned = False


def _finished(event: Any) -> bool:
    return event is None or event.query()


def _pin(tensor: Any) -> bool:
    """Register a shared-memory tensor's pages as pinned, for DMA copies to the GPU; False where there
    is no CUDA or the driver refuses (copies then go through a staging buffer, slower)."""
    import torch

    if not torch.cuda.is_available():
        return False
    rt = torch.cuda.cudart()
    return int(rt.cudaHostRegister(tensor.data_ptr(), tensor.numel() * tensor.element_size(), 0)) == 0


# ---------------------------------------------------------------- inside a worker process


def _next_task(tasks: Any, parent: int) -> Any:
    """The next task, or None when told to stop or when the model's process is gone."""
    while True:
        try:
            return tasks.get(timeout=1.0)
        except queue.Empty:
            if os.getppid() != parent:
                return None


def _cpu_worker_main(
    specs: list[PixelSpec], buffers: list[dict[str, Any]], tasks: Any, results: Any, parent: int
) -> None:
    """Decode parts of chunks into the shared CPU slots: libjpeg-turbo, resize and crop, uint8."""
    import torch

    from curate.imagedecode import decode_rgb, undecodable

    try:
        torch.set_num_threads(1)
        preprocess = {s.name: s.preprocess() for s in specs}
        for tp in preprocess.values():  # load the decoder and the resize kernels now
            tp.crop_uint8(decode_rgb(_tiny_jpeg()))
    except Exception as exc:  # noqa: BLE001 - reported to the parent, which raises it
        results.put(("failed", ("cpu", 0, -1), 0, f"{type(exc).__name__}: {exc}", {}))
        return
    results.put(("ready", "cpu", os.getpid(), None))
    while (task := _next_task(tasks, parent)) is not None:
        slot, lo, tar, spans = task
        errors: list[str | None] = []
        try:
            view = memoryview(_tar_bytes(tar))
            for i, (off, size) in enumerate(spans):
                try:
                    pixels = decode_rgb(view[off : off + size], max_pixels=_max_pixels())
                    for name, tp in preprocess.items():
                        tp.crop_uint8(pixels, out=buffers[slot][name][lo + i])
                    errors.append(None)
                except Exception as exc:  # noqa: BLE001 - any decoder error is a per-image reason
                    errors.append(undecodable(exc))
            view.release()
            results.put(("done", ("cpu", 0, slot), lo, errors, {}))
        except Exception as exc:  # noqa: BLE001 - the shard fails with this reason
            results.put(("failed", ("cpu", 0, slot), lo, f"{type(exc).__name__}: {str(exc)[:300]}", {}))


def _gpu_worker_main(
    wid: int,
    device: str,
    specs: list[PixelSpec],
    batch: int,
    slots: int,
    tasks: Any,
    results: Any,
    parent: int,
) -> None:
    """Allocate this worker's slots, send them to the parent once, then decode chunks into them."""
    import torch

    from curate.imagedecode import decode_tensors

    try:
        torch.set_num_threads(1)
        if device.startswith("cuda"):
            torch.cuda.set_device(torch.device(device).index or 0)
        dtypes = {s.name: getattr(torch, s.dtype) for s in specs}
        buffers = [
            {
                s.name: torch.empty(
                    (batch, 3, s.image_size, s.image_size), dtype=dtypes[s.name], device=device
                )
                for s in specs
            }
            for _ in range(slots)
        ]
        if not device.startswith("cuda"):
            for slot in buffers:
                for buf in slot.values():
                    buf.share_memory_()
        preprocess = {s.name: s.preprocess() for s in specs}
        images, _ = decode_tensors([_tiny_jpeg()] * 2, device)  # load nvJPEG and the resize kernels now
        for name, tp in preprocess.items():
            tp(images, dtypes[name])
    except Exception as exc:  # noqa: BLE001 - reported to the parent, which raises it
        results.put(("failed", ("gpu", wid, -1), 0, f"{type(exc).__name__}: {exc}", {}))
        return
    results.put(("ready", "gpu", wid, buffers))
    stream = torch.cuda.Stream() if device.startswith("cuda") else None
    while (task := _next_task(tasks, parent)) is not None:
        slot, tar, spans = task
        key = ("gpu", wid, slot)
        try:
            view = memoryview(_tar_bytes(tar))
            counters: dict[str, int] = {}
            with torch.cuda.stream(stream) if stream is not None else contextlib.nullcontext():
                images, errors = decode_tensors([view[o : o + n] for o, n in spans], device, counters)
                ok = [im for im in images if im is not None]
                for name, tp in preprocess.items():
                    if ok:
                        buffers[slot][name][: len(ok)].copy_(tp(ok, dtypes[name]))
            view.release()
            if stream is not None:
                _wait(stream)
            results.put(("done", key, 0, errors, counters))
        except Exception as exc:  # noqa: BLE001 - the shard fails with this reason
            results.put(("failed", key, 0, f"{type(exc).__name__}: {str(exc)[:300]}", {}))


def _wait(stream: Any) -> None:
    """Wait for a CUDA stream's work, sleeping: a plain synchronize spins a core, one the CPU workers
    could decode with."""
    import time

    import torch

    event = torch.cuda.Event()
    event.record(stream)
    while not event.query():
        time.sleep(0.0005)


def _max_pixels() -> int:
    """PIL's own refusal threshold (twice MAX_IMAGE_PIXELS), as open_clip's PIL preprocessing has it."""
    from PIL import Image

    return 2 * Image.MAX_IMAGE_PIXELS if Image.MAX_IMAGE_PIXELS else 2**62


def _tiny_jpeg() -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (64, 48), (120, 30, 200)).save(buf, "JPEG")
    return buf.getvalue()


_TARS: OrderedDict[tuple[str, int, int], mmap.mmap] = OrderedDict()


def _tar_bytes(tar: str) -> mmap.mmap:
    """The tar mapped copy-on-write (torch shares writable buffers without a copy), kept for the next
    chunks of the same shard; a rewritten tar (another size or mtime) is mapped anew; four stay mapped."""
    st = os.stat(tar)
    key = (tar, st.st_size, st.st_mtime_ns)
    if key not in _TARS:
        with open(tar, "rb") as f:
            _TARS[key] = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)
        while len(_TARS) > 4:
            with contextlib.suppress(BufferError):  # a view still open: the map goes with it
                _TARS.popitem(last=False)[1].close()
    _TARS.move_to_end(key)
    return _TARS[key]
