"""semantic_dedup: planted near-duplicate groups with known cosines, the greedy keep-smallest-uid rule,
threshold edges, NaN rows, independence from part layout and row order, errors."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from curate.filters.semantic_dedup import SemanticDedup, default_clusters

from curate.errors import CurateError
from curate.filtering.base import params_problems
from curate.filtering.metadata import MetadataSource
from curate.filtering.standalone import filter_metadata
from curate.uids import array_to_uids, read_subset
from tests.metadata_parts import batch, rows, uid, write_part

D = 32
BASIS = np.linalg.qr(np.random.default_rng(7).standard_normal((D, D)))[0].T  # orthonormal rows


def on_arc(group: int, angle: float) -> np.ndarray:
    """A unit vector in the group's own plane (orthogonal to others): cos(a, b) = cos(angle difference)."""
    return math.cos(angle) * BASIS[2 * group] + math.sin(angle) * BASIS[2 * group + 1]


T = math.acos(0.96)  # neighbours on an arc at this step have cosine 0.96; two steps apart 0.8432
# uid index -> (group, angle). Expected with threshold 0.95 (keeper: smallest uid among kept-earlier):
PLANTED = {
    21: (0, 0.0), 20: (0, T),  # pair at 0.96: 20 kept (smaller uid, though listed second), 21 removed
    30: (1, 0.0), 31: (1, math.acos(0.94)),  # pair at 0.94: both kept
    40: (2, 0.0), 41: (2, T), 42: (2, 2 * T),  # chain a<b<c: 41 removed by 40; 42 (0.84 to 40) kept
    51: (3, 0.0), 50: (3, T), 52: (3, 2 * T),  # chain with the middle smallest: 51 and 52 removed by 50
    62: (4, 0.0), 61: (4, 0.05), 60: (4, 0.1),  # clique (cos >= 0.995): 60 kept, 61 and 62 removed
    70: (5, 0.0), 71: (5, math.acos(0.9505)),  # just above the threshold: 71 removed
    80: (6, 0.0), 81: (6, math.acos(0.9495)),  # just below: both kept
    90: (7, 0.0), 91: (8, 0.0), 92: (9, 0.0),  # singletons
}  # fmt: skip
REMOVED = {21: 20, 41: 40, 51: 50, 52: 50, 61: 60, 62: 60, 71: 70}  # removed -> keeper
NO_IMAGE = [1, 95]  # NaN embeddings: never deduplicated, kept


def planted(ids: list[int]) -> np.ndarray:
    nan = np.full(D, np.nan)
    return np.stack([nan if i in NO_IMAGE else on_arc(*PLANTED[i]) for i in ids]).astype(np.float32)


def write_pool(
    directory: Path, layout: list[list[int]], embed: Callable[[list[int]], np.ndarray] = planted
) -> MetadataSource:
    for p, ids in enumerate(layout):
        write_part(directory, f"part{p}", rows(len(ids), uid=[uid(i) for i in ids]), {"l14_img": embed(ids)})
    return MetadataSource(str(directory))


ALL = [*PLANTED, *NO_IMAGE]


def fitted(out: Path, source: MetadataSource, **params: object) -> SemanticDedup:
    f = SemanticDedup(SemanticDedup.Params(**{"device": "cpu", **params}))
    out.mkdir(parents=True, exist_ok=True)
    f.fit(source, out)
    f.load(out)
    return f


def test_planted_groups_keep_the_smallest_uid(tmp_path: Path) -> None:
    source = write_pool(tmp_path / "meta", [ALL[:11], ALL[11:]])
    f = fitted(tmp_path / "fit", source, clusters=1)
    got = {}
    for stem in source.stems:
        b = source.read(stem, [], ["l14_img"])
        v = f.apply(b)
        got.update(zip(b.texts("uid"), zip(v.keep, v.score, v.reason, strict=True), strict=True))
    assert {u for u, (keep, _, _) in got.items() if not keep} == {uid(i) for i in REMOVED}
    for removed, keeper in REMOVED.items():
        _, score, reason = got[uid(removed)]
        want = float(on_arc(*PLANTED[removed]) @ on_arc(*PLANTED[keeper]))
        assert score == pytest.approx(want, abs=1e-5)
        assert reason == f"near-duplicate of {uid(keeper)} (cos={score:.3f})"
    assert all(np.isnan(s) and r is None for keep, s, r in got.values() if keep)
    summary = json.loads((tmp_path / "fit" / "summary.json").read_text())
    assert summary["rows"] == len(ALL) and summary["skipped_rows"] == len(NO_IMAGE)
    assert summary["removed"] == len(REMOVED) and summary["clusters"] == 1


def test_threshold_is_inclusive_at_one_for_exact_copies(tmp_path: Path) -> None:
    def copies(ids: list[int]) -> np.ndarray:
        return np.stack([BASIS[0] if i < 3 else BASIS[1] for i in ids]).astype(np.float32)

    f = fitted(tmp_path / "fit", write_pool(tmp_path / "meta", [[4, 2, 0, 1, 3]], copies), threshold=1.0)
    assert f.removed is not None
    assert array_to_uids(f.removed.uid) == [uid(1), uid(2), uid(4)]
    assert array_to_uids(f.removed.keeper) == [uid(0), uid(0), uid(3)]


def test_same_result_for_any_layout_and_row_order(tmp_path: Path) -> None:
    """Clustered random data, 4 k-means clusters: bit-identical state from permuted, re-split parts."""
    rng = np.random.default_rng(3)
    centers = rng.standard_normal((6, D))
    x = centers[rng.integers(0, 6, 600)] + 0.35 * rng.standard_normal((600, D))
    x[300:360] = x[:60] + 0.05 * rng.standard_normal((60, D))  # planted near-duplicates
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)

    def by_id(ids: list[int]) -> np.ndarray:
        return x[ids]

    ids = list(range(600))
    a = fitted(tmp_path / "fa", write_pool(tmp_path / "a", [ids[:250], ids[250:]], by_id), clusters=4)
    shuffled = [int(i) for i in rng.permutation(600)]
    layout = [shuffled[:100], shuffled[100:420], shuffled[420:]]
    b = fitted(tmp_path / "fb", write_pool(tmp_path / "b", layout, by_id), clusters=4)
    assert a.removed is not None and b.removed is not None and len(a.removed) >= 50
    for field in ("uid", "keeper", "score"):
        assert getattr(a.removed, field).tobytes() == getattr(b.removed, field).tobytes()
    check_invariants(x, a, tmp_path / "fa", threshold=0.95)


def check_invariants(x: np.ndarray, f: SemanticDedup, fit_dir: Path, threshold: float) -> None:
    """Each removed row has a kept keeper in its cluster with a smaller uid and cosine >= threshold; no
    two kept rows of a cluster are near-duplicates (uid(i) sorts like i, so row = uid index here)."""
    assert f.removed is not None
    labels = (x @ np.load(fit_dir / "centroids.npy").T).argmax(1)
    removed = f.removed.uid["f1"].astype(int)
    keeper = f.removed.keeper["f1"].astype(int)
    kept = np.setdiff1d(np.arange(len(x)), removed)
    assert not np.isin(keeper, removed).any() and (keeper < removed).all()
    assert (labels[keeper] == labels[removed]).all()
    assert np.allclose(f.removed.score, np.einsum("ij,ij->i", x[removed], x[keeper]), atol=1e-5)
    assert (f.removed.score >= threshold - 1e-5).all()
    sims = x[kept] @ x[kept].T
    same = labels[kept][:, None] == labels[kept][None, :]
    np.fill_diagonal(sims, 0)
    assert not ((sims >= threshold) & same).any()


def test_float16_storage_agrees_away_from_the_edge(tmp_path: Path) -> None:
    source = write_pool(tmp_path / "meta", [ALL])
    f = fitted(tmp_path / "fit", source, clusters=1, precision="float16")
    assert f.removed is not None
    assert set(array_to_uids(f.removed.uid)) == {uid(i) for i in REMOVED}  # edges are 5e-4 apart
    assert json.loads((tmp_path / "fit" / "summary.json").read_text())["dtype"] == "float16"


def test_end_to_end_through_filter_metadata(tmp_path: Path) -> None:
    write_pool(tmp_path / "metadata", [ALL[:7], ALL[7:]])
    out = tmp_path / "s.npy"
    expr = {"all": [{"semantic_dedup": {"clusters": 1, "device": "cpu"}}]}
    filter_metadata(str(tmp_path / "metadata"), "s", expr, out, workers=1)
    assert set(array_to_uids(read_subset(out))) == {uid(i) for i in ALL if i not in REMOVED}


def test_uids_outside_the_fit_are_kept(tmp_path: Path) -> None:
    f = fitted(tmp_path / "fit", write_pool(tmp_path / "meta", [ALL]), clusters=1)
    v = f.apply(batch(rows(2, uid=[uid(1000), uid(21)])))
    assert v.keep.tolist() == [True, False]


def test_bad_npz_is_reported_with_its_part(tmp_path: Path) -> None:
    write_part(tmp_path / "a", "p0", rows(2), {"b32_img": np.zeros((2, 4), np.float32)})
    with pytest.raises(CurateError, match=r"no array l14_img \(has b32_img\)"):
        fitted(tmp_path / "fa", MetadataSource(str(tmp_path / "a")))
    write_part(tmp_path / "b", "p0", rows(3), {"l14_img": np.zeros((2, 4), np.float32)})
    with pytest.raises(
        CurateError, match=r"metadata part p0: 'l14_img' has shape \(2, 4\); expected \(3, dim\)"
    ):
        fitted(tmp_path / "fb", MetadataSource(str(tmp_path / "b")))


def test_params_and_defaults() -> None:
    assert params_problems(SemanticDedup, {"threshold": 0})
    assert params_problems(SemanticDedup, {"threshold": 1.5})
    assert params_problems(SemanticDedup, {"device": "tpu"})
    assert params_problems(SemanticDedup, {"clusters": 0})
    assert not params_problems(SemanticDedup, {"embedding": "b32_img", "threshold": 0.9, "clusters": 7})
    assert [default_clusters(n) for n in (10, 1_000_000, 12_800_000, 10**10)] == [1, 100, 1280, 50_000]
    if not __import__("torch").cuda.is_available():
        f = SemanticDedup(SemanticDedup.Params(device="cuda"))
        assert "torch sees no GPU" in f.preflight()[0]
