"""image_based (§2.6) on synthetic embeddings with planted clusters, real faiss k-means and real files.

Pool embeddings (d = 8, unit norm) sit around the axes e0..e3 (one planted cluster each); rows whose
caption fails the §2.6.1 filter sit around e5, so that k-means with k = 4 recovers e0..e3 only if it
ran after the caption filter. Reference ("ImageNet") features sit near e0 and e2, so the target
clusters are those of e0 and e2, and the kept rows are the e0 / e2 rows with a good caption.
"""

from __future__ import annotations

import json
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from curate.filters.image_based import ImageBased, ImageBasedParams

from curate.errors import CurateError
from curate.filtering.array_files import load_matrix
from curate.filtering.metadata import MetadataSource
from tests.metadata_parts import ENGLISH, batch, rows, uid, write_part

D = 8
GOOD = "a dog on the grass"  # English, 5 fastText tokens, 18 characters


def around(axis: int, n: int, seed: int) -> np.ndarray:
    x = np.eye(D, dtype=np.float32)[axis] + 0.05 * np.random.RandomState(seed).randn(n, D).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def make_pool(directory: Path) -> dict[str, list[int]]:
    """Two parts: 10 rows per planted cluster, 8 rows near e5 with bad captions, 2 NaN rows.
    Returns the row uids (as ints) by group."""
    groups: dict[str, list[int]] = {}
    next_uid = 0
    for part, seed in (("part0", 1), ("part1", 2)):
        texts, vectors = [], []
        for axis in range(4):
            vectors.append(around(axis, 5, seed * 10 + axis))
            texts += [GOOD] * 5
            groups.setdefault(f"e{axis}", []).extend(range(next_uid, next_uid + 5))
            next_uid += 5
        bad = ["dogs", "puppies", "a dog", "un chien sur l'herbe"]  # 1 token; 1 token; 5 chars; French
        vectors.append(around(5, 4, seed))
        texts += bad
        groups.setdefault("bad caption", []).extend(range(next_uid, next_uid + 4))
        next_uid += 4
        vectors.append(np.full((1, D), np.nan, np.float32))  # image not downloaded
        texts.append(GOOD)
        groups.setdefault("nan", []).append(next_uid)
        next_uid += 1
        n = len(texts)
        first = next_uid - n
        data = rows(n, text=texts, uid=[uid(i) for i in range(first, next_uid)])
        write_part(directory, part, data, {"l14_img": np.concatenate(vectors)})
    return groups


def reference_files(directory: Path) -> Path:
    """DataComp-style in1k_clip_vit_l14_{0..4}.pt: dicts of fp16 tensors, 3 near e0 and 2 near e2."""
    directory.mkdir(parents=True, exist_ok=True)
    feats = np.concatenate([around(0, 3, 100), around(2, 2, 101)])
    for i in range(5):
        torch.save(
            {"image_features": torch.from_numpy(feats[i : i + 1]).half()},
            directory / f"in1k_clip_vit_l14_{i}.pt",
        )
    return directory


def kept_uids(f: ImageBased, pool: MetadataSource) -> set[int]:
    out: set[int] = set()
    for stem in pool.stems:
        b = pool.read(stem, f.columns(), f.embeddings())
        v = f.apply(b)
        out |= {int(u, 16) for u in np.asarray(b.texts("uid"), dtype=object)[v.keep]}
    return out


@pytest.fixture(scope="module")
def pool(tmp_path_factory: pytest.TempPathFactory) -> tuple[MetadataSource, dict[str, list[int]], Path]:
    root = tmp_path_factory.mktemp("image_based")
    groups = make_pool(root / "metadata")
    return MetadataSource(str(root / "metadata")), groups, reference_files(root / "assets")


def test_kmeans_fit_and_apply(pool, tmp_path: Path) -> None:
    source, groups, assets = pool
    f = ImageBased(ImageBasedParams(reference=str(assets), k=4))
    assert f.preflight() == []
    f.fit(source, tmp_path)
    f.load(tmp_path)
    info = json.loads((tmp_path / "fit.json").read_text())
    assert info["points"] == 40 and info["k"] == 4 and info["reference_rows"] == 5  # no bad, no NaN rows
    # k-means ran after the caption filter: one centroid per planted axis, none near e5
    centroids = np.load(tmp_path / "centroids.npy")
    nearest_axis = sorted(int(np.argmax(c)) for c in centroids)
    assert nearest_axis == [0, 1, 2, 3] and centroids.max(axis=1).min() > 0.95
    targets = np.load(tmp_path / "targets.npy")
    assert sorted(int(np.argmax(centroids[t])) for t in targets) == [0, 2]
    assert kept_uids(f, source) == set(groups["e0"] + groups["e2"])


def test_reasons_and_scores(pool, tmp_path: Path) -> None:
    source, groups, assets = pool
    f = ImageBased(
        ImageBasedParams(reference=[str(assets / f"in1k_clip_vit_l14_{i}.pt") for i in range(5)], k=4)
    )
    f.fit(source, tmp_path)
    f.load(tmp_path)
    b = source.read("part0", f.columns(), f.embeddings())
    v = f.apply(b)
    assert v.reason.tolist() == (
        [None] * 5
        + ["cluster not in reference targets"] * 5
        + [None] * 5
        + ["cluster not in reference targets"] * 5
        + ["caption: too few words", "caption: too few words", "caption: too short", "not English"]
        + ["no image embedding"]
    )
    assert np.isnan(v.score[20:]).all() and np.isfinite(v.score[:20]).all()  # score = cluster id
    assert len(set(v.score[:5])) == 1 and v.score[0] != v.score[5]


def test_caption_filter_edges(tmp_path: Path) -> None:
    """> 1 fastText token and > 5 characters: 'a dog' (2 tokens, 5 chars) fails, 'my dog' (6) passes;
    'puppies' (1 token) fails; a newline is a token of its own in fastText."""
    np.save(tmp_path / "centroids.npy", np.eye(D, dtype=np.float32)[:1])
    np.save(tmp_path / "targets.npy", np.array([0]))
    f = ImageBased(ImageBasedParams(reference="unused.npy", k=1))
    f.load(tmp_path)  # a saved fit: one centroid, which is a target
    texts = ["a dog", "my dog", "puppies", "puppies\n", ENGLISH, None, ""]
    v = f.apply(batch(rows(len(texts), text=texts), {"l14_img": around(0, len(texts), 3)}))
    assert v.keep.tolist() == [False, True, False, True, True, False, False]
    assert v.reason.tolist() == [
        "caption: too short",
        None,
        "caption: too few words",
        None,
        None,
        "caption: too few words",
        "caption: too few words",
    ]


def _numpy1_pickle(array: np.ndarray) -> bytes:
    """`pickle.dumps(array, protocol=4)` as numpy 1.x wrote it (module numpy.core, not numpy._core)."""
    data = pickle.dumps(array, protocol=4)
    old, new = b"\x8c\x16numpy._core.multiarray", b"\x8c\x15numpy.core.multiarray"
    count = data.count(old)
    data = data.replace(old, new)
    assert data[2] == 0x95  # one FRAME, whose length shrinks by one byte per replacement
    return data[:3] + (int.from_bytes(data[3:11], "little") - count).to_bytes(8, "little") + data[11:]


def datacomp_centroids(path: Path, centroids: np.ndarray) -> Path:
    """A centroid file as DataComp wrote it: torch.save(numpy array, pickle_protocol=4) under numpy 1.x."""
    torch.save(centroids, path, pickle_protocol=4)
    with zipfile.ZipFile(path) as z:
        members = {n: z.read(n) for n in z.namelist()}
    with zipfile.ZipFile(path, "w") as z:
        for name, data in members.items():
            z.writestr(name, _numpy1_pickle(centroids) if name.endswith("/data.pkl") else data)
    return path


def test_released_centroids_use_raw_inner_product(pool, tmp_path: Path) -> None:
    """With given centroids there is no k-means; assignment is argmax <x, c> with the raw centroids,
    so a long centroid wins over a nearer short one (exactly as the reference)."""
    source, groups, assets = pool
    e = np.eye(D, dtype=np.float32)
    # c0 = e0, c1 = 3 (e0 + e1) / sqrt 2, c2 = e2, c3 = e3: an e0 row scores 1 on c0 but 2.12 on c1
    centroids = np.stack([e[0], 3 * (e[0] + e[1]) / np.sqrt(2), e[2], e[3]]).astype(np.float32)
    asset_dir = tmp_path / "datacomp"
    asset_dir.mkdir()
    datacomp_centroids(asset_dir / "small_centroids_l14.pt", centroids)
    assert np.array_equal(load_matrix(asset_dir / "small_centroids_l14.pt"), centroids)
    f = ImageBased(ImageBasedParams(reference=str(assets), centroids=str(asset_dir), scale="small", k=10**6))
    assert f.preflight() == []
    f.fit(source, tmp_path / "fit")
    f.load(tmp_path / "fit")
    assert np.load(tmp_path / "fit" / "targets.npy").tolist() == [1, 2]  # e0 features land on c1
    info = json.loads((tmp_path / "fit" / "fit.json").read_text())
    assert info["centroids"].endswith("small_centroids_l14.pt") and info["points"] is None
    # e0 rows go to c1 (a target), e1 rows to c1 as well (2.12 > 1), e2 rows to c2, e3 rows to c3
    assert kept_uids(f, source) == set(groups["e0"] + groups["e1"] + groups["e2"])


def test_resume_keeps_a_current_fit(pool, tmp_path: Path) -> None:
    source, _, assets = pool
    f = ImageBased(ImageBasedParams(reference=str(assets), k=4))
    f.fit(source, tmp_path)
    stamp = {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()}
    ImageBased(ImageBasedParams(reference=str(assets), k=4)).fit(source, tmp_path)
    assert {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()} == stamp  # not recomputed
    (tmp_path / "targets.npy").unlink()  # an incomplete state is recomputed
    f.fit(source, tmp_path)
    assert (tmp_path / "targets.npy").is_file()
    ImageBased(ImageBasedParams(reference=str(assets), k=3)).fit(source, tmp_path)  # other params: refit
    assert len(np.load(tmp_path / "centroids.npy")) == 3


def test_clear_errors(pool, tmp_path: Path) -> None:
    source, _, assets = pool
    with pytest.raises(CurateError, match=r"image_based.k: 41 clusters need at least 41 points.*has 40 rows"):
        ImageBased(ImageBasedParams(reference=str(assets), k=41)).fit(source, tmp_path)
    problems = ImageBased(ImageBasedParams()).preflight()
    assert len(problems) == 1 and problems[0].startswith("reference: required")
    problems = ImageBased(
        ImageBasedParams(reference=str(tmp_path / "x.pt"), centroids=str(assets))
    ).preflight()
    assert "file not found" in problems[0] and "also set scale" in problems[1]
    with pytest.raises(ValueError, match="sample_ratio"):
        ImageBasedParams(reference="r.npy", sample_ratio=0)
    np.save(tmp_path / "ref.npy", np.ones((3, D + 1), np.float32))
    with pytest.raises(CurateError, match="dimension 9 but the centroids have 8"):
        ImageBased(ImageBasedParams(reference=str(tmp_path / "ref.npy"), k=4)).fit(source, tmp_path / "f")
    torch.save({"features": torch.ones(2, D)}, tmp_path / "bad.pt")
    with pytest.raises(CurateError, match=r"no key 'image_features' \(has features\)"):
        load_matrix(tmp_path / "bad.pt", key="image_features")


def test_intersection_with_clip_score(pool, tmp_path: Path) -> None:
    """DataComp's image_based_intersect_clip_score is `all: [clip_score, image_based]` (§2.9)."""
    from curate.filtering.apply import fit_filters, load_fits
    from curate.filtering.compose import parse_strategy

    source, groups, assets = pool
    strategy = parse_strategy(
        "intersect",
        {
            "all": [
                {"clip_score": {"model": "l14", "threshold": 0.3}},
                {"image_based": {"reference": str(assets), "k": 4}},
            ]
        },
    )
    fit_filters([strategy], source, tmp_path)
    load_fits([strategy], [tmp_path])
    # hand-set scores: even uids score 0.35 (pass), odd ones 0.25 (fail)
    kept: set[int] = set()
    for stem in source.stems:
        b = source.read(stem, strategy.columns(), strategy.embeddings())
        ids = [int(u, 16) for u in b.texts("uid")]
        scores = np.array([0.35 if i % 2 == 0 else 0.25 for i in ids], np.float32)
        b.table = b.table.set_column(
            b.table.schema.get_field_index("clip_l14_similarity_score"), "clip_l14_similarity_score", [scores]
        )
        ev = strategy.evaluate(b)
        kept |= {i for i, k in zip(ids, ev.keep, strict=True) if k}
    assert kept == {i for i in groups["e0"] + groups["e2"] if i % 2 == 0}
