"""What the pool-wide dedup filters save and how `apply` looks it up: the set of removed uids.

A dedup `fit` ends with a list of removed uids, each with the uid it is a duplicate of (its keeper)
and a score (a cosine, or NaN). Saved as one `.npz` (uids sorted, DataComp's `u8,u8`), it is read by
every worker; `apply` is then a vectorised binary search per batch, independent of the pool's size
and of which worker sees which part.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from curate.errors import CurateError
from curate.rundir import atomic_write_with
from curate.uids import UID_DTYPE, array_to_uids, as_uid_array, uids_to_array

# Cosines are compared as `cos >= threshold - COS_SLACK`. Two float32 copies of one unit vector can
# score 0.99999994: without the slack an exact copy would escape `threshold: 1.0`. 1e-5 is above
# float32 dot-product rounding at d <= 1024 and far below any threshold a user would tell apart.
COS_SLACK = 1e-5


def save_npy(path: Path, arr: np.ndarray) -> None:
    atomic_write_with(path, lambda f: np.save(f, arr, allow_pickle=False))


def sort_uids(uids: np.ndarray) -> np.ndarray:
    """Permutation that sorts a `u8,u8` array on (f0, f1): DataComp's subset order. One argsort on f0
    when the high halves are distinct (random uids: 3x faster than lexsort), else a lexsort."""
    order = np.argsort(uids["f0"])
    high = uids["f0"][order]
    if len(high) > 1 and bool((high[1:] == high[:-1]).any()):
        order = np.lexsort((uids["f1"], uids["f0"]))
    return order


def uid_index(sorted_uids: np.ndarray, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(found, index) of each key in a sorted `u8,u8` array, by binary search on the high half (numpy's
    searchsorted on a structured array goes through a generic comparison, ~10x slower)."""
    n = len(sorted_uids)
    if n == 0:
        return np.zeros(len(keys), bool), np.zeros(len(keys), np.int64)
    high = sorted_uids["f0"]
    left = np.searchsorted(high, keys["f0"], "left")
    right = np.searchsorted(high, keys["f0"], "right")
    idx = np.minimum(left, n - 1)
    ties = np.flatnonzero(right - left > 1)
    if len(ties):  # several uids share the high half: search those keys on the full (f0, f1)
        idx[ties] = np.minimum(np.searchsorted(sorted_uids, keys[ties]), n - 1)
    found = (high[idx] == keys["f0"]) & (sorted_uids["f1"][idx] == keys["f1"])
    return found, idx


@dataclass
class RemovedSet:
    """Removed uids (sorted, unique), the uid each duplicates (its keeper) and a float32 score."""

    uid: np.ndarray  # u8,u8 (m,), sorted, unique
    keeper: np.ndarray  # u8,u8 (m,)
    score: np.ndarray  # float32 (m,)

    FILE = "removed.npz"

    @classmethod
    def build(cls, uid: np.ndarray, keeper: np.ndarray, score: np.ndarray | None = None) -> RemovedSet:
        """Sort on uid; a uid listed twice keeps its first entry (a pool that repeats a uid)."""
        uid, keeper = as_uid_array(uid), as_uid_array(keeper)
        score = np.full(len(uid), np.nan, np.float32) if score is None else np.asarray(score, np.float32)
        order = sort_uids(uid)
        uid, keeper, score = uid[order], keeper[order], score[order]
        if len(uid) > 1:
            first = np.r_[True, (uid["f0"][1:] != uid["f0"][:-1]) | (uid["f1"][1:] != uid["f1"][:-1])]
            uid, keeper, score = uid[first], keeper[first], score[first]
        return cls(uid, keeper, score)

    def __len__(self) -> int:
        return len(self.uid)

    def save(self, out_dir: Path) -> None:
        arrays = {"uid": self.uid, "keeper": self.keeper, "score": self.score}
        atomic_write_with(out_dir / self.FILE, lambda f: np.savez(f, **arrays))

    @classmethod
    def load(cls, fit_dir: Path, filter_name: str) -> RemovedSet:
        path = Path(fit_dir) / cls.FILE
        if not path.is_file():
            raise CurateError(f"{path}: missing; run the {filter_name} fit first (it writes this file)")
        with np.load(path, allow_pickle=False) as data:
            uid, keeper, score = data["uid"], data["keeper"], data["score"]
        if uid.dtype != UID_DTYPE or keeper.dtype != UID_DTYPE or not (len(uid) == len(keeper) == len(score)):
            raise CurateError(
                f"{path}: not a {filter_name} removed set (uid/keeper u8,u8, score f4, aligned)"
            )
        return cls(uid, keeper, score)

    def lookup(self, uids: pa.Array | pa.ChunkedArray | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For each uid: whether it was removed, and its index in this set (valid where removed)."""
        keys = uids_to_array(uids) if not isinstance(uids, np.ndarray) else as_uid_array(uids)
        return uid_index(self.uid, keys)

    def keeper_uids(self, idx: np.ndarray) -> list[str]:
        return array_to_uids(self.keeper[idx])
