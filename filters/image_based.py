"""DataComp's `image_based` baseline (§2.6): keep images whose k-means cluster holds ImageNet images.

fit: cluster the pool's image embeddings (after the §2.6.1 caption filter; rows without an image
embedding left out) with faiss k-means, or take DataComp's released centroids; then the target
clusters are those that some ImageNet-1k training image falls into (argmax inner product with the
raw centroids). apply: caption filter, then keep a row when its own argmax cluster is a target.
DataComp's best baseline is this AND clip_score: `all: [clip_score, image_based]`.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field, model_validator

from curate.errors import CurateError
from curate.filtering.array_files import load_matrix
from curate.filtering.base import Batch, Filter, FilterParams, Verdict, merge_reasons
from curate.filtering.clustering import (
    caption_checks,
    has_embedding,
    kmeans,
    nearest_centroid,
    passes_all,
    pool_points,
)
from curate.filtering.metadata import MetadataSource
from curate.rundir import atomic_write_bytes, atomic_write_json

log = logging.getLogger(__name__)

# DataComp's clustering docs subsample large pools to fit in memory (with replacement).
SAMPLE_RATIO = {"small": -1.0, "medium": -1.0, "large": 0.3, "xlarge": 0.03}
REFERENCE_FILES = [f"in1k_clip_vit_l14_{i}.pt" for i in range(5)]


class ImageBasedParams(FilterParams):
    reference: str | list[str] | None = Field(
        None,
        description="ImageNet-1k CLIP image features: DataComp's in1k_clip_vit_l14_{0..4}.pt, a directory "
        "holding them, or .npy/.npz files of (n, d) arrays.",
    )
    scale: Literal["small", "medium", "large", "xlarge"] | None = Field(
        None, description="Picks <scale>_centroids_l14.pt when centroids is a directory; sets sample_ratio."
    )
    centroids: str | None = Field(
        None, description="DataComp's <scale>_centroids_l14.pt (or .npy, or their directory): no k-means."
    )
    k: int = Field(100_000, ge=1, description="k-means clusters (DataComp: 100,000).")
    embedding: str = Field("l14_img", description="npz key of the image embeddings.")
    niter: int = Field(20, ge=1, description="k-means iterations.")
    seed: int = Field(0, description="k-means (and subsampling) seed.")
    sample_ratio: float | None = Field(
        None, description="Subsample the pool per part before k-means (-1: none); default by scale."
    )
    lid_model: str | None = Field(None, description="fastText lid.176 .bin/.ftz (default: bundled .ftz).")

    @model_validator(mode="after")
    def _ratio(self) -> ImageBasedParams:
        if self.sample_ratio is not None and self.sample_ratio != -1 and not 0 < self.sample_ratio <= 1:
            raise ValueError(f"sample_ratio must be -1 (no sampling) or in (0, 1], got {self.sample_ratio}")
        return self


class ImageBased(Filter):
    name = "image_based"
    Params = ImageBasedParams
    needs_fit = True
    _centroids: np.ndarray  # set by load()
    _targets: np.ndarray

    def columns(self) -> list[str]:
        return ["text"]

    def embeddings(self) -> list[str]:
        return [self.params.embedding]

    def _centroids_file(self) -> Path | None:
        p = self.params
        if p.centroids is None:
            return None
        path = Path(p.centroids).expanduser()
        if not path.is_dir():
            return path
        names = [f"{p.scale}_centroids_l14.pt", f"{p.scale}_centroids.pt"]  # release name, DataComp's cache
        return next((path / n for n in names if (path / n).is_file()), path / names[0])

    def _reference_files(self) -> list[Path]:
        ref = self.params.reference
        paths = [Path(r).expanduser() for r in ([ref] if isinstance(ref, str) else ref or [])]
        return [f for p in paths for f in ([p / n for n in REFERENCE_FILES] if p.is_dir() else [p])]

    def preflight(self) -> list[str]:
        p, found = self.params, []
        if not p.reference:
            found.append(
                "reference: required: ImageNet-1k CLIP image features, e.g. DataComp's "
                "in1k_clip_vit_l14_{0..4}.pt (github.com/sagadre/datacomp_baseline_assets releases), a "
                "directory holding them, or .npy/.npz files of (n, d) arrays"
            )
        refs = self._reference_files()
        found += [f"reference: file not found: {f}" for f in refs if not f.is_file()]
        if p.centroids and Path(p.centroids).expanduser().is_dir() and p.scale is None:
            found.append(
                f"centroids: '{p.centroids}' is a directory: also set scale "
                "(small|medium|large|xlarge) to pick <scale>_centroids_l14.pt (or <scale>_centroids.pt) in it"
            )
        elif (c := self._centroids_file()) and not c.is_file():
            found.append(f"centroids: file not found: {c}")
        if p.lid_model and not Path(p.lid_model).is_file():
            found.append(f"lid_model: file not found (got '{p.lid_model}')")
        return found

    def fit(self, pool: MetadataSource, out_dir: Path) -> None:
        out_dir = Path(out_dir)
        fingerprint = self._fingerprint(pool)
        if _saved_fingerprint(out_dir) == fingerprint:
            log.info("image_based: fit state in %s is current; not recomputed", out_dir)
            return
        reference = np.concatenate([self._load_reference(f) for f in self._reference_files()])
        source, n_points = self._centroids_file(), None
        if source is not None:
            centroids = load_matrix(source)
        else:
            points = self._pool_points(pool)
            n_points, p = len(points), self.params
            log.info("image_based: k-means, k=%d over %d points of dim %d", p.k, *points.shape)
            centroids = kmeans(points, p.k, p.niter, p.seed)
            del points
        if reference.shape[1] != centroids.shape[1]:
            raise CurateError(
                f"image_based: reference features have dimension {reference.shape[1]} but the centroids "
                f"have {centroids.shape[1]} (both must come from the same CLIP model)"
            )
        targets = np.unique(nearest_centroid(reference, centroids))
        (out_dir / "fit.json").unlink(missing_ok=True)  # an old state is incomplete from here on
        _save_npy(out_dir / "centroids.npy", centroids)
        _save_npy(out_dir / "targets.npy", targets)
        info = {
            "centroids": str(source or "kmeans"),
            "k": len(centroids),
            "dim": centroids.shape[1],
            "points": n_points,
            "reference_rows": len(reference),
            "targets": len(targets),
            "fingerprint": fingerprint,
        }
        atomic_write_json(out_dir / "fit.json", info)  # written last: marks the fit complete
        log.info("image_based: %d of %d clusters hold ImageNet images", len(targets), len(centroids))

    def load(self, fit_dir: Path) -> None:
        try:
            self._centroids = np.load(Path(fit_dir) / "centroids.npy")
            self._targets = np.load(Path(fit_dir) / "targets.npy")
        except OSError:
            raise CurateError(
                f"{fit_dir}: no image_based fit state (centroids.npy, targets.npy): run its fit first"
            ) from None

    def apply(self, batch: Batch) -> Verdict:
        x = batch.embeddings[self.params.embedding]
        if x.shape[1] != self._centroids.shape[1]:
            raise CurateError(
                f"part {batch.part}: {self.params.embedding} has dimension {x.shape[1]}, the centroids "
                f"{self._centroids.shape[1]} (same CLIP model needed)"
            )
        checks = caption_checks(batch.table.column("text"), self.params.lid_model)
        checks.append((has_embedding(x), "no image embedding"))
        rows = np.flatnonzero(passes_all(checks))
        cluster = np.full(len(x), -1, dtype=np.int64)
        cluster[rows] = nearest_centroid(x[rows], self._centroids)
        in_targets = np.isin(cluster, self._targets)
        keep, reason = merge_reasons(*checks, (in_targets, "cluster not in reference targets"))
        score = np.where(cluster >= 0, cluster, np.nan).astype(np.float32)  # the row's cluster id
        return Verdict(keep, score=score, reason=reason)

    def _load_reference(self, path: Path) -> np.ndarray:
        return load_matrix(path, key="image_features", npz_keys=("image_features", self.params.embedding))

    def _pool_points(self, pool: MetadataSource) -> np.ndarray:
        p = self.params
        ratio = p.sample_ratio if p.sample_ratio is not None else SAMPLE_RATIO.get(p.scale or "", -1.0)
        points = pool_points(pool, p.embedding, p.lid_model, ratio, p.seed)
        if len(points) < p.k:
            raise CurateError(
                f"image_based.k: {p.k} clusters need at least {p.k} points, but the pool has {len(points)} "
                f"rows with an image embedding that pass the caption filter; set k to at most {len(points)}"
            )
        return points

    def _fingerprint(self, pool: MetadataSource) -> str:
        """What the fit depends on: parameters, input files, and (for k-means) the pool's parts."""
        files = [*self._reference_files(), *filter(None, [self._centroids_file()])]
        state = {
            "params": self.params.model_dump(),
            "files": {str(f): [f.stat().st_size, f.stat().st_mtime_ns] for f in files if f.is_file()},
            "pool": None if self._centroids_file() else {s: pool.num_rows(s) for s in pool.stems},
        }
        return hashlib.sha256(json.dumps(state, sort_keys=True).encode()).hexdigest()


def _saved_fingerprint(out_dir: Path) -> str | None:
    try:
        info = json.loads((out_dir / "fit.json").read_text())
    except (OSError, ValueError):
        return None
    complete = (out_dir / "centroids.npy").is_file() and (out_dir / "targets.npy").is_file()
    return info.get("fingerprint") if complete else None


def _save_npy(path: Path, array: np.ndarray) -> None:
    buffer = io.BytesIO()
    np.save(buffer, array)
    atomic_write_bytes(path, buffer.getvalue())
