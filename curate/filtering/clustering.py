"""The pieces of DataComp's image_based baseline (§2.6): its caption filter, k-means, centroid argmax.

k-means is faiss `Clustering` with an exact L2 index in fp32, like DataComp's clustering script;
assignment is the argmax of the inner product with the (un-normalised) centroids, like its filter.
The two notions of "nearest" differ on purpose: the reference does exactly this.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curate.errors import CurateError
from curate.filtering.langid import english_mask, fasttext_token_counts
from curate.filtering.metadata import MetadataSource

SCORE_BYTES = 64 << 20  # memory for one chunk of the (rows, k) score matrix


def caption_checks(texts: pa.ChunkedArray | pa.Array, lid_model: str | None) -> list[tuple[np.ndarray, str]]:
    """§2.6.1, as (passes, reason) pairs: > 1 fastText token, > 5 characters, fastText English.

    Language ID runs only on captions that passed the length tests (it is the slow one)."""
    words = fasttext_token_counts(texts) > 1
    chars = pc.fill_null(pc.utf8_length(texts), 0).to_numpy(zero_copy_only=False) > 5
    english = np.zeros(len(words), dtype=bool)
    rows = np.flatnonzero(words & chars)
    if len(rows):
        english[rows] = english_mask(pc.take(texts, pa.array(rows)), lid_model)
    return [(words, "caption: too few words"), (chars, "caption: too short"), (english, "not English")]


def has_embedding(x: np.ndarray) -> np.ndarray:
    """Rows with a real vector (the embed stage writes NaN for images it could not read)."""
    return np.isfinite(x).all(axis=1)


def kmeans(x: np.ndarray, k: int, niter: int = 20, seed: int = 0) -> np.ndarray:
    """(k, d) float32 centroids: faiss k-means, exact L2, every point used (no internal subsampling)."""
    import faiss

    x = np.ascontiguousarray(x, dtype=np.float32)
    clustering = faiss.Clustering(x.shape[1], k)
    clustering.niter = niter
    clustering.seed = seed
    clustering.max_points_per_centroid = 10_000_000
    clustering.verbose = False
    clustering.train(x, faiss.IndexFlatL2(x.shape[1]))
    return faiss.vector_to_array(clustering.centroids).reshape(k, x.shape[1])


def nearest_centroid(x: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """int64 argmax_j <x_i, c_j> per row, in chunks that bound memory; exact ties go to the lowest j."""
    labels = np.empty(len(x), dtype=np.int64)
    chunk = max(1, SCORE_BYTES // (4 * len(centroids)))
    ct = np.ascontiguousarray(centroids.T, dtype=np.float32)
    for start in range(0, len(x), chunk):
        scores = np.asarray(x[start : start + chunk], dtype=np.float32) @ ct
        labels[start : start + chunk] = scores.argmax(axis=1)
    return labels


def passes_all(checks: list[tuple[np.ndarray, str]]) -> np.ndarray:
    return np.logical_and.reduce([passes for passes, _ in checks])


def pool_points(
    pool: MetadataSource, key: str, lid_model: str | None, sample_ratio: float, seed: int
) -> np.ndarray:
    """What DataComp's clustering script clusters: each part's `key` embeddings that pass the caption
    filter (and exist), parts in stem order; with `sample_ratio` > 0, a per-part sample drawn with
    replacement as the script does (seeded here by seed + part index, so reruns agree)."""
    if missing := [s for s in pool.stems if not pool.has_npz(s)]:
        raise CurateError(
            f"image_based needs '{key}' embeddings: no {pool.path(missing[0], 'npz')} "
            f"({len(missing)} of {len(pool.stems)} parts lack one; run the embed stage first)"
        )
    chunks = []
    for i, stem in enumerate(pool.stems):
        batch = pool.read(stem, ["text"], [key])
        x = batch.embeddings[key]
        x = x[passes_all(caption_checks(batch.table.column("text"), lid_model)) & has_embedding(x)]
        if sample_ratio > 0 and len(x):
            x = x[np.random.RandomState(seed + i).choice(len(x), int(len(x) * sample_ratio))]
        chunks.append(x)
    return np.concatenate(chunks) if chunks else np.zeros((0, 0), np.float32)
