"""`decontaminate`: drop pool images that are near copies of evaluation images.

A pool row is dropped when its image embedding has cosine >= `threshold` with any eval image embedding
(exact search: faiss IndexFlatIP over unit vectors, k=1); its score is that best cosine and its reason
names the eval image: `near eval image <file>#<row> (cos=0.953)`. The eval embeddings must come from
the same model as the pool's `embedding` (a dimension mismatch stops the fit with both shapes).

`fit` reads `eval_embeddings` (.npy, .npz, or DataComp-style .pt; rows with NaN are skipped), checks
the dimension against the pool, and saves them normalised in `eval.npz`, so every worker loads one
file and the run records which eval set it was cleaned against. Rows without an image (NaN) are kept:
there is no image to leak, and the image filters drop them anyway.

Default threshold 0.9: for CLIP image embeddings that is a near copy (a resize, crop or re-encode);
the filter errs towards removing, which costs a few pool rows, never a contaminated benchmark.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import Field, field_validator

from curate.errors import CurateError
from curate.filtering.array_files import load_matrix
from curate.filtering.base import Batch, Filter, FilterParams, Verdict
from curate.filtering.dedup import COS_SLACK
from curate.filtering.pool_arrays import read_part
from curate.rundir import atomic_write_json, atomic_write_with

if TYPE_CHECKING:
    from curate.filtering.metadata import MetadataSource

SUFFIXES = (".npy", ".npz", ".pt", ".pth")


class DecontaminateParams(FilterParams):
    eval_embeddings: list[str] = Field(
        min_length=1,
        description="File(s) of eval image embeddings (n, d): .npy, .npz (its only array or "
        "the one named like `embedding`), .pt.",
    )
    embedding: str = Field("l14_img", pattern=r"^[A-Za-z0-9_]+$", description="Pool npz key, same model.")
    threshold: float = Field(0.9, gt=0, le=1, description="Drop when cosine >= threshold.")

    @field_validator("eval_embeddings", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value


class Decontaminate(Filter):
    """Drop pool images within `threshold` cosine of an eval image."""

    name = "decontaminate"
    Params = DecontaminateParams
    needs_fit = True

    def __init__(self, params: DecontaminateParams | None = None) -> None:
        super().__init__(params)
        self.index: Any = None  # faiss.IndexFlatIP over the eval embeddings
        self.names: list[str] = []
        self.source: np.ndarray = np.empty(0, np.int32)
        self.row: np.ndarray = np.empty(0, np.int64)

    def embeddings(self) -> list[str]:
        return [self.params.embedding]

    def preflight(self) -> list[str]:
        problems = []
        for p in self.params.eval_embeddings:
            path = Path(p).expanduser()
            if not path.is_file():
                problems.append(f"{self.name}: eval_embeddings: file not found: {p}")
            elif path.suffix.lower() not in SUFFIXES:
                problems.append(f"{self.name}: eval_embeddings: {p} is not one of {', '.join(SUFFIXES)}")
        return problems

    def fit(self, pool: MetadataSource, out_dir: Path) -> None:
        problems = self.preflight()
        if problems:
            raise CurateError(problems[0], problems[1:])
        key = self.params.embedding
        x, source, row, files = load_eval(self.params.eval_embeddings, key)
        if pool.stems:
            pool_dim = read_part(pool, pool.stems[0], [], [key]).embeddings[key].shape[-1]
            if pool_dim != x.shape[1]:
                raise CurateError(
                    f"{self.name}: eval embeddings have dim {x.shape[1]} but the pool's '{key}' has dim "
                    f"{pool_dim} (metadata part {pool.stems[0]}); embed the eval images with that model"
                )
        atomic_write_with(out_dir / "eval.npz", lambda f: np.savez(f, x=x, source=source, row=row))
        atomic_write_json(out_dir / "summary.json", {"embedding": key, "dim": x.shape[1], "files": files})

    def load(self, fit_dir: Path) -> None:
        import faiss

        with np.load(Path(fit_dir) / "eval.npz", allow_pickle=False) as data:
            x, self.source, self.row = data["x"], data["source"], data["row"]
        self.names = [
            Path(f["path"]).stem for f in json.loads((Path(fit_dir) / "summary.json").read_text())["files"]
        ]
        self.index = faiss.IndexFlatIP(x.shape[1])
        self.index.add(np.ascontiguousarray(x, np.float32))

    def apply(self, batch: Batch) -> Verdict:
        if self.index is None:
            raise CurateError(f"{self.name}: apply before load (no fit state)")
        x = batch.embeddings[self.params.embedding]
        if x.ndim != 2 or x.shape[1] != self.index.d:
            raise CurateError(
                f"{self.name}: metadata part {batch.part}: '{self.params.embedding}' has shape {x.shape}; "
                f"the eval embeddings have dim {self.index.d}"
            )
        score = np.full(len(x), np.nan, np.float32)
        nearest = np.full(len(x), -1, np.int64)
        norms = np.linalg.norm(np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0), axis=1)
        real = np.flatnonzero(np.isfinite(x).all(axis=1) & (norms > 0))
        if len(real):
            sims, idx = self.index.search(np.ascontiguousarray(x[real] / norms[real, None], np.float32), 1)
            score[real], nearest[real] = sims[:, 0], idx[:, 0]
        drop = score >= self.params.threshold - COS_SLACK  # NaN (no image) is never >=
        reason = np.full(len(x), None, dtype=object)
        reason[drop] = [
            f"near eval image {self.names[self.source[i]]}#{self.row[i]} (cos={c:.3f})"
            for i, c in zip(nearest[drop], score[drop], strict=True)
        ]
        return Verdict(~drop, score=score, reason=reason)


def load_eval(paths: list[str], key: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[dict[str, Any]]]:
    """Eval embeddings of every file, unit rows (NaN / zero rows skipped), with the file and row each
    came from, and a per-file record for the summary."""
    xs, sources, rows, files = [], [], [], []
    for i, p in enumerate(paths):
        path = Path(p).expanduser()
        pt_key = "image_features"  # DataComp's feature files: {"image_features": tensor}
        x = load_matrix(path, key=pt_key if path.suffix.lower() in (".pt", ".pth") else key, npz_keys=(key,))
        if xs and x.shape[1] != xs[0].shape[1]:
            raise CurateError(f"{p}: dim {x.shape[1]}, but {paths[0]} has dim {xs[0].shape[1]}")
        norms = np.linalg.norm(np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0), axis=1)
        ok = np.flatnonzero(np.isfinite(x).all(axis=1) & (norms > 0))
        xs.append(x[ok] / norms[ok, None])
        sources.append(np.full(len(ok), i, np.int32))
        rows.append(ok)
        files.append({"path": str(p), "rows": len(x), "used": len(ok)})
    x = np.concatenate(xs).astype(np.float32)
    if len(x) == 0:
        raise CurateError(f"eval_embeddings: no usable rows in {', '.join(paths)} (all NaN or zero)")
    return x, np.concatenate(sources), np.concatenate(rows).astype(np.int64), files
