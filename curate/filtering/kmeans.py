"""k-means for pool-wide fits: faiss on CPU, the same Lloyd iterations in torch on a GPU.

The pip wheel of faiss has no GPU code, and a 10M-row pool needs one, so `device="cuda"` runs the
same algorithm in torch: random initial centroids drawn from the training rows (numpy, `seed`),
`niter` rounds of assign-to-nearest then mean, an empty cluster re-seeded by splitting the largest
one (faiss splits a random large one), centroids re-normalised each round when `spherical`. Results
on CPU and GPU are equally good clusterings, not the same numbers.

Training rows are subsampled as faiss does (at most `max_points_per_centroid` x k, drawn with
`seed`), but here, before anything is copied, so a float16 pool matrix is never upcast whole.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import numpy as np

from curate.errors import CurateError

if TYPE_CHECKING:
    import torch

Metric = Literal["l2", "ip"]
Backend = Literal["auto", "faiss", "torch"]


def resolve_device(device: str) -> str:
    """'auto' -> 'cuda' when torch sees a GPU, else 'cpu'; 'cuda' without one is an error."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise CurateError("device: cuda was asked for but torch sees no GPU (use cpu or auto)")
    if device not in ("cpu", "cuda"):
        raise CurateError(f"device: {device!r} is not one of auto, cpu, cuda")
    return device


def training_rows(
    n_or_rows: int | np.ndarray, k: int, seed: int = 0, max_points_per_centroid: int = 256
) -> np.ndarray:
    """Sorted row indices k-means trains on: all candidate rows, or a seeded sample of
    `max_points_per_centroid * k` of them."""
    rows = np.arange(n_or_rows) if isinstance(n_or_rows, int) else np.asarray(n_or_rows)
    cap = max_points_per_centroid * k
    if len(rows) <= cap:
        return rows
    pick = np.random.default_rng(seed).choice(len(rows), cap, replace=False)
    return rows[np.sort(pick)]


def train_kmeans(
    x: np.ndarray,
    k: int,
    niter: int = 20,
    seed: int = 0,
    device: str = "cpu",
    spherical: bool = False,
    rows: np.ndarray | None = None,
    max_points_per_centroid: int = 256,
    backend: Backend = "auto",
) -> np.ndarray:
    """Centroids (k, d) float32 of the rows `rows` of `x` (default: all), L2 (or inner product and
    unit centroids when `spherical`). `x` may be float16; only the training sample is upcast.
    `backend` auto = faiss on cpu, torch on cuda (torch on cpu is there for tests and comparisons)."""
    candidates = np.arange(len(x)) if rows is None else rows
    if k < 1 or k > len(candidates):
        raise CurateError(f"k-means: k={k} clusters needs 1 <= k <= the number of rows ({len(candidates)})")
    train = np.ascontiguousarray(x[training_rows(candidates, k, seed, max_points_per_centroid)], np.float32)
    device = resolve_device(device)
    if backend == "faiss" or (backend == "auto" and device == "cpu"):
        return _faiss_kmeans(train, k, niter, seed, spherical)
    return _torch_kmeans(train, k, niter, seed, spherical, device)


def _faiss_kmeans(train: np.ndarray, k: int, niter: int, seed: int, spherical: bool) -> np.ndarray:
    import faiss

    km = faiss.Kmeans(
        train.shape[1],
        k,
        niter=niter,
        seed=seed,
        spherical=spherical,
        max_points_per_centroid=len(train),  # already subsampled by training_rows
        min_points_per_centroid=1,  # no "please provide at least ..." warning on small pools
        verbose=False,
    )
    km.train(train)
    return np.asarray(km.centroids, np.float32)


def _torch_kmeans(
    train: np.ndarray, k: int, niter: int, seed: int, spherical: bool, device: str
) -> np.ndarray:
    """Lloyd's algorithm in torch (see the module docstring for how it matches faiss)."""
    import torch

    xt = torch.from_numpy(train).to(device)
    init = np.random.default_rng(seed).choice(len(train), k, replace=False)
    c = xt[torch.from_numpy(np.sort(init)).to(device)].clone()
    for _ in range(niter):
        labels = _nearest_torch(xt, c, "ip" if spherical else "l2")
        sums = torch.zeros_like(c).index_add_(0, labels, xt)
        counts = torch.bincount(labels, minlength=k)
        nonempty = counts > 0
        c[nonempty] = sums[nonempty] / counts[nonempty, None].to(c.dtype)
        for j in torch.nonzero(~nonempty).flatten().tolist():  # few, if any: split the largest
            big = int(torch.argmax(counts))
            c[j] = c[big] * (1 + 1 / 1024)
            c[big] = c[big] * (1 - 1 / 1024)
            counts[j] = counts[big] // 2
            counts[big] -= counts[j]
        if spherical:
            c = torch.nn.functional.normalize(c, dim=1)
    return c.float().cpu().numpy()


def _nearest_torch(x: torch.Tensor, c: torch.Tensor, metric: Metric, chunk: int = 1 << 16) -> torch.Tensor:
    import torch

    out = torch.empty(len(x), dtype=torch.int64, device=x.device)
    half_sq = 0.5 * (c.float() * c.float()).sum(1).to(c.dtype) if metric == "l2" else None
    for s in range(0, len(x), chunk):
        scores = x[s : s + chunk] @ c.T
        if half_sq is not None:
            scores -= half_sq  # argmin |x-c|^2 = argmax x.c - |c|^2/2
        out[s : s + chunk] = scores.argmax(1)
    return out


def assign_clusters(
    x: np.ndarray,
    centroids: np.ndarray,
    metric: Metric = "l2",
    device: str = "cpu",
    rows: np.ndarray | None = None,
    chunk: int = 1 << 16,
) -> np.ndarray:
    """Index of the nearest centroid (L2) or of the largest inner product (ip) for rows `rows` of `x`
    (default: all), int64. Chunked, so `x` may be a large float16 matrix."""
    rows = np.arange(len(x)) if rows is None else np.asarray(rows)
    out = np.empty(len(rows), np.int64)
    centroids = np.ascontiguousarray(centroids, np.float32)
    if resolve_device(device) == "cpu":
        import faiss

        index = (
            faiss.IndexFlatL2(centroids.shape[1]) if metric == "l2" else faiss.IndexFlatIP(centroids.shape[1])
        )
        index.add(centroids)
        for s in range(0, len(rows), chunk):
            _, nearest = index.search(np.ascontiguousarray(x[rows[s : s + chunk]], np.float32), 1)
            out[s : s + chunk] = nearest[:, 0]
        return out
    import torch

    dtype = torch.float16 if x.dtype == np.float16 else torch.float32
    c = torch.from_numpy(centroids).to("cuda", dtype)
    for s in range(0, len(rows), chunk):
        xc = torch.from_numpy(np.ascontiguousarray(x[rows[s : s + chunk]])).to("cuda", dtype)
        out[s : s + chunk] = _nearest_torch(xc, c, metric).cpu().numpy()
    return out
