"""The greedy near-duplicate rule: blocked torch passes equal a row-by-row reference for any block size."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from curate.filtering.neardup import dedup_by_cluster, greedy_in_order


def reference(x: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Row by row: removed if cosine >= threshold with a kept earlier row; keeper = the most similar."""
    sims = x @ x.T
    kept: list[int] = []
    removed = np.zeros(len(x), bool)
    keeper = np.full(len(x), -1)
    for i in range(len(x)):
        near = [j for j in kept if sims[i, j] >= threshold - 1e-5]
        if near:
            removed[i], keeper[i] = True, max(near, key=lambda j: sims[i, j])
        else:
            kept.append(i)
    return removed, keeper


def clustered(n: int, d: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((20, d))[rng.integers(0, 20, n)] + 0.2 * rng.standard_normal((n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.mark.parametrize("block", [1, 3, 64, 4096])
def test_blocked_pass_equals_the_row_by_row_rule(block: int) -> None:
    x = clustered(400, 16, seed=1)
    want_removed, want_keeper = reference(x, 0.95)
    assert 50 < want_removed.sum() < 350  # chains, cliques and singletons all occur
    removed, keeper, cosine = greedy_in_order(torch.from_numpy(x), 0.95, block)
    assert (removed.numpy() == want_removed).all()
    assert (keeper.numpy() == want_keeper).all()
    got = cosine.numpy()[want_removed]
    assert np.allclose(got, np.einsum("ij,ij->i", x[want_removed], x[want_keeper[want_removed]]), atol=1e-5)
    assert np.isnan(cosine.numpy()[~want_removed]).all()


def test_chain_keeps_both_ends() -> None:
    t = np.arccos(0.96)
    x = np.array([[np.cos(a), np.sin(a)] for a in (0, t, 2 * t)], np.float32)
    removed, keeper, _ = greedy_in_order(torch.from_numpy(x), 0.95, 2)
    assert removed.tolist() == [False, True, False] and keeper.tolist() == [-1, 0, -1]


def test_clusters_are_not_compared_with_each_other() -> None:
    x = np.array([[1, 0], [1, 0], [1, 0], [0, 1]], np.float32)
    found = dedup_by_cluster(x, labels=np.array([0, 1, 0]), rows=np.array([0, 1, 2]), threshold=0.9)
    assert found.removed.tolist() == [2] and found.keeper.tolist() == [0]  # row 1 is alone in cluster 1
    assert found.stats["clusters"] == 2 and found.stats["largest_cluster"] == 2
