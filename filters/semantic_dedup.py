"""`semantic_dedup`: drop near-duplicate images (SemDeDup), keeping one row per group.

`fit`, over the whole pool, rows in uid order (so the result does not depend on parts or workers):
1. spherical k-means on the image embeddings (`clusters`, default pool/10,000 in [1, 50,000];
   faiss on cpu, the same Lloyd iterations in torch on cuda: curate.filtering.kmeans);
2. within each cluster, rows visited in uid order, a row is removed when its cosine with a row already
   kept is >= `threshold` (curate.filtering.neardup). A group of near-duplicates keeps its smallest
   uid; every removed row names its keeper (reason `near-duplicate of <uid> (cos=0.973)`).
Saved: `removed.npz` (removed uid, keeper uid, cosine), `centroids.npy`, `summary.json`.
`apply` looks each uid up. Rows without an image (NaN embedding) are not deduplicated: kept here,
the image filters drop them with their own reason.

Memory: the pool matrix, n x d x 4 bytes on cpu (x 2 on cuda, which stores float16; cosines are then
within ~1e-3). Near-duplicates that k-means splits across clusters are not found (as in SemDeDup).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
from pydantic import Field

from curate.errors import CurateError
from curate.filtering.base import Batch, Filter, FilterParams, Verdict
from curate.filtering.dedup import RemovedSet, save_npy
from curate.filtering.kmeans import assign_clusters, resolve_device, train_kmeans
from curate.filtering.neardup import NearDuplicates, dedup_by_cluster
from curate.filtering.pool_arrays import PoolMatrix, load_pool_matrix
from curate.rundir import atomic_write_json

if TYPE_CHECKING:
    from curate.filtering.metadata import MetadataSource


class SemanticDedupParams(FilterParams):
    embedding: str = Field(
        "l14_img", pattern=r"^[A-Za-z0-9_]+$", description="npz key: l14_img, b32_img, ..."
    )
    threshold: float = Field(0.95, gt=0, le=1, description="Near-duplicates: cosine >= threshold.")
    clusters: int | None = Field(None, ge=1, description="k-means k; default rows/10,000 in [1, 50,000].")
    niter: int = Field(20, ge=1, le=1000, description="k-means iterations.")
    seed: int = Field(0, ge=0, description="k-means seed (initial centroids, training sample).")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto: cuda when torch sees a GPU.")
    precision: Literal["auto", "float32", "float16"] = Field(
        "auto", description="Pool matrix dtype; auto: float16 on cuda, float32 on cpu."
    )


def default_clusters(rows: int) -> int:
    """SemDeDup's ~10k rows per cluster: each cluster's similarity pass is then a few GEMMs."""
    return int(min(50_000, max(1, round(rows / 10_000))))


class SemanticDedup(Filter):
    """One row per group of near-duplicate images (cosine >= threshold within a k-means cluster)."""

    name = "semantic_dedup"
    Params = SemanticDedupParams
    needs_fit = True

    def __init__(self, params: SemanticDedupParams | None = None) -> None:
        super().__init__(params)
        self.removed: RemovedSet | None = None

    def embeddings(self) -> list[str]:
        return [self.params.embedding]

    def preflight(self) -> list[str]:
        try:
            resolve_device(self.params.device)
        except CurateError as exc:
            return [f"{self.name}: {exc}"]
        return []

    def fit(self, pool: MetadataSource, out_dir: Path) -> None:
        p = self.params
        device = resolve_device(p.device)
        half = p.precision == "float16" or (p.precision == "auto" and device == "cuda")
        t0 = time.time()
        matrix = load_pool_matrix(pool, p.embedding, np.float16 if half else np.float32)
        t1 = time.time()
        found, centroids, seconds = near_duplicates(matrix, p.threshold, p.clusters, p.niter, p.seed, device)
        removed = RemovedSet.build(matrix.uids[found.removed], matrix.uids[found.keeper], found.cosine)
        save_npy(out_dir / "centroids.npy", centroids)
        removed.save(out_dir)
        usable = int(matrix.usable.sum())
        summary = {
            "embedding": p.embedding,
            "rows": len(matrix.uids),
            "deduplicated_rows": usable,
            "skipped_rows": len(matrix.uids) - usable,  # no image (NaN), zero vector, or a repeated uid
            "threshold": p.threshold,
            "device": device,
            "dtype": str(matrix.x.dtype),
            **found.stats,
            "removed": len(removed),
            "seconds": {"load": round(t1 - t0, 3), **seconds},
        }
        atomic_write_json(out_dir / "summary.json", summary)

    def load(self, fit_dir: Path) -> None:
        self.removed = RemovedSet.load(fit_dir, self.name)

    def apply(self, batch: Batch) -> Verdict:
        if self.removed is None:
            raise CurateError(f"{self.name}: apply before load (no fit state)")
        hit, idx = self.removed.lookup(batch.table.column("uid"))
        score = np.full(len(batch), np.nan, np.float32)
        score[hit] = self.removed.score[idx[hit]]
        reason = np.full(len(batch), None, dtype=object)
        keepers = self.removed.keeper_uids(idx[hit])
        reason[hit] = [
            f"near-duplicate of {k} (cos={c:.3f})" for k, c in zip(keepers, score[hit], strict=True)
        ]
        return Verdict(~hit, score=score, reason=reason)


def near_duplicates(
    matrix: PoolMatrix, threshold: float, clusters: int | None, niter: int, seed: int, device: str
) -> tuple[NearDuplicates, np.ndarray, dict[str, float]]:
    """k-means then the per-cluster greedy pass over the usable rows of `matrix` (rows of `matrix`
    in the result). Also returns the centroids and the seconds of each step."""
    rows = np.flatnonzero(matrix.usable)
    if len(rows) == 0:
        empty = np.empty(0, np.int64)
        return NearDuplicates(empty, empty, np.empty(0, np.float32)), np.empty((0, 0), np.float32), {}
    k = min(clusters or default_clusters(len(rows)), len(rows))
    t0 = time.time()
    centroids = train_kmeans(matrix.x, k, niter, seed, device, spherical=True, rows=rows)
    t1 = time.time()
    labels = assign_clusters(matrix.x, centroids, "ip", device, rows=rows)
    t2 = time.time()
    found = dedup_by_cluster(matrix.x, labels, rows, threshold, device, clusters=k)
    t3 = time.time()
    seconds = {"kmeans": round(t1 - t0, 3), "assign": round(t2 - t1, 3), "dedup": round(t3 - t2, 3)}
    return found, centroids, seconds
