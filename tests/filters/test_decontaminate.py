"""decontaminate: cosine >= threshold to any eval image drops a row (edges on both sides, exact copies
at 1.0), NaN rows kept, reasons name the eval image, clear errors for missing files and dimensions."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from curate.filters.decontaminate import Decontaminate

from curate.errors import CurateError
from curate.filtering.base import params_problems
from curate.filtering.metadata import MetadataSource
from curate.filtering.standalone import filter_metadata
from curate.uids import array_to_uids, read_subset
from tests.metadata_parts import batch, rows, uid, write_part

D = 16
E = np.eye(D, dtype=np.float32)


def at_cos(axis: int, cos: float) -> np.ndarray:
    """A unit vector with cosine `cos` to axis `axis` (and 0 to every other axis but the next one)."""
    v = np.zeros(D)
    v[axis], v[axis + 1] = cos, math.sqrt(1 - cos * cos)
    return v


def eval_files(tmp_path: Path) -> list[str]:
    """Eval set: e0, e2 in a .npy (plus a NaN row, skipped); e4 in a .npz under the pool's key."""
    first = np.stack([E[0], np.full(D, np.nan), E[2]]).astype(np.float32)
    np.save(tmp_path / "evalset_a.npy", first)
    np.savez(tmp_path / "evalset_b.npz", l14_img=(3.0 * E[4:5]), other=np.zeros((1, D)))  # not unit
    return [str(tmp_path / "evalset_a.npy"), str(tmp_path / "evalset_b.npz")]


POOL = np.stack(
    [
        at_cos(0, 0.901),  # just above 0.9: dropped (near evalset_a#0)
        at_cos(0, 0.899),  # just below: kept
        at_cos(2, 0.95),  # near evalset_a#2 (row 1 of the file is the skipped NaN)
        2.0 * at_cos(4, 0.93),  # near evalset_b#0; pool vectors are normalised before the search
        E[6],  # far from everything
        np.full(D, np.nan),  # no image: kept, no score
    ]
).astype(np.float32)


def fitted(tmp_path: Path, **params: object) -> tuple[Decontaminate, MetadataSource]:
    write_part(tmp_path / "meta", "p0", rows(len(POOL)), {"l14_img": POOL})
    source = MetadataSource(str(tmp_path / "meta"))
    f = Decontaminate(Decontaminate.Params(**{"eval_embeddings": eval_files(tmp_path), **params}))
    assert f.preflight() == []
    (tmp_path / "fit").mkdir()
    f.fit(source, tmp_path / "fit")
    f.load(tmp_path / "fit")
    return f, source


def test_threshold_edges_scores_and_reasons(tmp_path: Path) -> None:
    f, source = fitted(tmp_path, threshold=0.9)
    v = f.apply(source.read("p0", [], ["l14_img"]))
    assert v.keep.tolist() == [False, True, False, False, True, True]
    assert v.score is not None
    assert np.allclose(v.score[:5], [0.901, 0.899, 0.95, 0.93, 0.0], atol=1e-5) and np.isnan(v.score[5])
    assert v.reason.tolist() == [
        "near eval image evalset_a#0 (cos=0.901)",
        None,
        "near eval image evalset_a#2 (cos=0.950)",
        "near eval image evalset_b#0 (cos=0.930)",
        None,
        None,
    ]
    summary = (tmp_path / "fit" / "summary.json").read_text()
    assert '"rows": 3' in summary and '"used": 2' in summary


def test_exact_copies_are_caught_at_threshold_one(tmp_path: Path) -> None:
    f, _ = fitted(tmp_path, threshold=1.0)
    copies = np.stack([E[0], E[2], 7.0 * E[4], at_cos(0, 0.9999)]).astype(np.float32)
    v = f.apply(batch(rows(4), {"l14_img": copies}))
    assert v.keep.tolist() == [False, False, False, True]


def test_end_to_end_through_filter_metadata(tmp_path: Path) -> None:
    write_part(tmp_path / "metadata", "p0", rows(len(POOL)), {"l14_img": POOL})
    out = tmp_path / "s.npy"
    expr = {"decontaminate": {"eval_embeddings": eval_files(tmp_path)[0], "threshold": 0.9}}
    filter_metadata(str(tmp_path / "metadata"), "s", expr, out, workers=1)
    assert array_to_uids(read_subset(out)) == [uid(i) for i in (1, 3, 4, 5)]


def test_missing_and_unsupported_files_are_preflight_problems(tmp_path: Path) -> None:
    (tmp_path / "feats.csv").write_text("1,2\n")
    f = Decontaminate(
        Decontaminate.Params(eval_embeddings=[str(tmp_path / "nope.npy"), str(tmp_path / "feats.csv")])
    )
    problems = f.preflight()
    assert problems[0] == f"decontaminate: eval_embeddings: file not found: {tmp_path / 'nope.npy'}"
    assert "feats.csv is not one of .npy, .npz, .pt, .pth" in problems[1]
    with pytest.raises(CurateError, match="file not found"):
        f.fit(MetadataSource(str(tmp_path)), tmp_path / "fit")


def test_dimension_mismatch_names_both_dims(tmp_path: Path) -> None:
    write_part(tmp_path / "meta", "p0", rows(2), {"l14_img": np.zeros((2, 768), np.float32)})
    f = Decontaminate(Decontaminate.Params(eval_embeddings=eval_files(tmp_path)))
    with pytest.raises(
        CurateError, match=r"eval embeddings have dim 16 but the pool's 'l14_img' has dim 768"
    ):
        f.fit(MetadataSource(str(tmp_path / "meta")), tmp_path / "fit")


def test_npz_without_the_key_lists_what_it_has(tmp_path: Path) -> None:
    np.savez(tmp_path / "two.npz", a=np.eye(4), b=np.eye(4))
    write_part(tmp_path / "meta", "p0", rows(1), {"l14_img": np.ones((1, 4), np.float32)})
    f = Decontaminate(Decontaminate.Params(eval_embeddings=str(tmp_path / "two.npz")))
    with pytest.raises(CurateError, match=r"two.npz: no array named l14_img.*\(has a, b\)"):
        f.fit(MetadataSource(str(tmp_path / "meta")), tmp_path / "fit")


def test_params() -> None:
    assert params_problems(Decontaminate, {})  # eval_embeddings is required
    assert params_problems(Decontaminate, {"eval_embeddings": "x.npy", "threshold": 0})
    assert params_problems(Decontaminate, {"eval_embeddings": [], "threshold": 0.9})
    assert not params_problems(Decontaminate, {"eval_embeddings": "x.npy", "embedding": "b32_img"})
