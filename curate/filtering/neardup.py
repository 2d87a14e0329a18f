"""Near-duplicates among unit vectors: SemDeDup's k-means split, then a greedy pass per cluster.

The rule (deterministic, no dependence on workers or input order):
  rows are in uid order; within each k-means cluster they are visited in that order, and a row is
  removed when its cosine with a row already *kept* in the same cluster is >= threshold.
So each group of near-duplicates keeps its smallest uid, every removed row has a kept near-duplicate
(its keeper, the kept row with the highest cosine), and no two kept rows of a cluster are near
duplicates. Unlike SemDeDup's "any earlier row" rule, a chain a~b~c with a !~ c keeps a and c.
Near-duplicates that k-means put in different clusters are not compared (SemDeDup's trade-off).

The per-cluster pass is batched matrix multiplies in torch (CPU or GPU): a block of rows against the
rows kept so far, then the block against itself, where the greedy order is settled in a few
vectorised rounds instead of a Python loop over rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from curate.filtering.dedup import COS_SLACK

if TYPE_CHECKING:
    import torch


@dataclass
class NearDuplicates:
    """Rows (indices into the matrix given) removed, their keeper rows, and the cosine between them."""

    removed: np.ndarray  # int64 (m,)
    keeper: np.ndarray  # int64 (m,)
    cosine: np.ndarray  # float32 (m,)
    stats: dict[str, float] = field(default_factory=dict)


def greedy_in_order(x: torch.Tensor, threshold: float, block: int = 2048) -> tuple[torch.Tensor, ...]:
    """The greedy rule on rows of `x` (unit vectors, visiting order = row order).
    Returns (removed bool (m,), keeper int64 (m,), cosine float32 (m,)); keeper/cosine are -1/NaN
    where kept."""
    import torch

    m, dev = len(x), x.device
    thr = threshold - COS_SLACK
    removed = torch.zeros(m, dtype=torch.bool, device=dev)
    keeper = torch.full((m,), -1, dtype=torch.int64, device=dev)
    cosine = torch.full((m,), float("nan"), dtype=torch.float32, device=dev)
    kept_x = torch.empty_like(x)  # rows kept so far, packed
    kept_at = torch.empty(m, dtype=torch.int64, device=dev)
    n_kept = 0
    earlier_full = torch.ones(min(block, m), min(block, m), dtype=torch.bool, device=dev).tril_(-1)
    for s in range(0, m, block):
        xb = x[s : s + block]
        b = len(xb)
        best = torch.full((b,), -float("inf"), dtype=torch.float32, device=dev)
        arg = torch.full((b,), -1, dtype=torch.int64, device=dev)
        step = max(block, (1 << 24) // b)  # one similarity tile: at most 16M elements
        for t in range(0, n_kept, step):  # against rows kept in earlier blocks
            sims = xb @ kept_x[t : min(t + step, n_kept)].T
            top = sims.amax(1).float()
            wins = torch.nonzero((top > best) & (top >= thr)).flatten()
            best = torch.maximum(best, top)
            if len(wins):  # argmax only for the few rows that are near-duplicates
                arg[wins] = kept_at[t + sims[wins].argmax(1)]
        sims = (xb @ xb.T).float()
        near = (sims >= thr) & earlier_full[:b, :b]  # [i, j]: j comes before i and is near it
        gone = best >= thr
        kept = torch.zeros(b, dtype=torch.bool, device=dev)
        undecided = ~gone
        while bool(undecided.any()):  # each round settles at least the first undecided row
            has_kept = (near & kept[None, :]).any(1)
            has_open = (near & undecided[None, :]).any(1)
            gone |= undecided & has_kept
            kept |= undecided & ~has_kept & ~has_open
            undecided &= ~(gone | kept)
        near_kept = near & kept[None, :]
        inside = torch.nonzero(gone & near_kept.any(1)).flatten()  # near a row kept in this block
        if len(inside):
            top, where = sims[inside].masked_fill(~near_kept[inside], -float("inf")).max(1)
            better = top > best[inside]
            best[inside] = torch.where(better, top, best[inside])
            arg[inside] = torch.where(better, where + s, arg[inside])
        removed[s : s + b] = gone
        keeper[s : s + b] = torch.where(gone, arg, keeper[s : s + b])
        cosine[s : s + b] = torch.where(gone, best, cosine[s : s + b])
        k = int(kept.sum())
        kept_x[n_kept : n_kept + k] = xb[kept]
        kept_at[n_kept : n_kept + k] = torch.nonzero(kept).flatten() + s
        n_kept += k
    return removed, keeper, cosine


def dedup_by_cluster(
    x: np.ndarray,
    labels: np.ndarray,
    rows: np.ndarray,
    threshold: float,
    device: str = "cpu",
    block: int | None = None,
    clusters: int | None = None,
) -> NearDuplicates:
    """Apply `greedy_in_order` within each cluster. `rows` (ascending) are the rows of `x` taking part,
    `labels` their clusters (of `clusters`). Rows are normalised again (float16 storage rounds them).
    On cuda the similarity is computed in the storage dtype (float16: cosines within about 1e-3), on
    cpu in float32. Returned indices are rows of `x`."""
    import torch

    order = np.argsort(labels, kind="stable")  # cluster by cluster, uid (row) order inside
    sizes = np.bincount(labels, minlength=clusters or 0)
    starts = np.concatenate([[0], np.cumsum(sizes)])
    dtype = torch.float16 if (device == "cuda" and x.dtype == np.float16) else torch.float32
    block = block or (8192 if device == "cuda" else 1024)
    out_removed, out_keeper, out_cos = [], [], []
    for c in np.flatnonzero(sizes > 1):
        members = rows[order[starts[c] : starts[c + 1]]]
        xc = torch.from_numpy(np.ascontiguousarray(x[members])).to(device)
        xc = torch.nn.functional.normalize(xc.float(), dim=1).to(dtype)
        gone, keeper, cos = greedy_in_order(xc, threshold, block)
        gone_at = torch.nonzero(gone).flatten()
        if len(gone_at):
            out_removed.append(members[gone_at.cpu().numpy()])
            out_keeper.append(members[keeper[gone_at].cpu().numpy()])
            out_cos.append(cos[gone_at].cpu().numpy())
    stats = {
        "clusters": int(len(sizes)),
        "largest_cluster": int(sizes.max()) if len(sizes) else 0,
        "singleton_clusters": int((sizes == 1).sum()),
        "empty_clusters": int((sizes == 0).sum()),
    }
    return NearDuplicates(
        _cat(out_removed, np.int64), _cat(out_keeper, np.int64), _cat(out_cos, np.float32), stats
    )


def _cat(parts: list[np.ndarray], dtype: type) -> np.ndarray:
    return np.concatenate(parts) if parts else np.empty(0, dtype)
