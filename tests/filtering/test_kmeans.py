"""k-means helpers: faiss and the torch Lloyd iterations (run on CPU here), seeded sampling, assignment."""

from __future__ import annotations

import numpy as np
import pytest

from curate.errors import CurateError
from curate.filtering.kmeans import assign_clusters, train_kmeans, training_rows


def blobs(n: int = 400, d: int = 8, k: int = 5, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (5 * rng.standard_normal((k, d))[rng.integers(0, k, n)] + rng.standard_normal((n, d))).astype(
        np.float32
    )


def lloyd(x: np.ndarray, k: int, niter: int, seed: int) -> np.ndarray:
    """Plain numpy Lloyd with the torch backend's initialisation (seeded sorted sample of rows)."""
    c = x[np.sort(np.random.default_rng(seed).choice(len(x), k, replace=False))].astype(np.float64)
    for _ in range(niter):
        labels = ((x[:, None, :] - c[None]) ** 2).sum(-1).argmin(1)
        for j in range(k):
            if (labels == j).any():
                c[j] = x[labels == j].mean(0)
    return c


def test_torch_backend_is_lloyd() -> None:
    x = blobs()
    got = train_kmeans(x, 5, niter=8, seed=3, device="cpu", backend="torch")
    assert got.dtype == np.float32 and got.shape == (5, 8)
    assert np.allclose(got, lloyd(x, 5, 8, 3), atol=1e-4)


@pytest.mark.parametrize("backend", ["faiss", "torch"])
def test_spherical_centroids_are_unit_and_seeded(backend: str) -> None:
    x = blobs(seed=1)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    a = train_kmeans(x, 4, niter=5, seed=0, spherical=True, backend=backend)
    b = train_kmeans(x, 4, niter=5, seed=0, spherical=True, backend=backend)
    assert np.allclose(np.linalg.norm(a, axis=1), 1, atol=1e-5) and (a == b).all()


def test_float16_rows_subset() -> None:
    x = blobs(seed=2)
    rows = np.arange(0, 400, 2)
    c = train_kmeans(x.astype(np.float16), 3, niter=4, rows=rows)
    assert c.shape == (3, 8) and np.isfinite(c).all()
    with pytest.raises(CurateError, match=r"k=300 clusters needs 1 <= k <= the number of rows \(200\)"):
        train_kmeans(x, 300, rows=rows)


def test_training_rows_are_a_seeded_sorted_sample() -> None:
    assert training_rows(100, k=1, max_points_per_centroid=256).tolist() == list(range(100))
    a = training_rows(np.arange(10, 5000), k=2, seed=5, max_points_per_centroid=100)
    assert len(a) == 200 and (np.diff(a) > 0).all() and a.min() >= 10
    assert (a == training_rows(np.arange(10, 5000), k=2, seed=5, max_points_per_centroid=100)).all()


@pytest.mark.parametrize("metric", ["l2", "ip"])
def test_assignment_matches_numpy(metric: str) -> None:
    x = blobs(seed=4)
    c = np.random.default_rng(0).standard_normal((7, 8)).astype(np.float32)
    want = ((x[:, None] - c[None]) ** 2).sum(-1).argmin(1) if metric == "l2" else (x @ c.T).argmax(1)
    assert (assign_clusters(x, c, metric, chunk=64) == want).all()
    assert (assign_clusters(x, c, metric, rows=np.arange(5, 50)) == want[5:50]).all()
