"""The eval-set loaders on generated sets of every format, against the reference readers, and broken sets."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import PIL.Image
import pytest

from curate.errors import CurateError
from curate.eval.datasets import (
    hf_cache_dir,
    load_retrieval,
    load_wds_task,
    load_winogavil,
    missing_reason,
    task_folder,
)
from curate.eval.generate import (
    WdsRecord,
    _write_hf_cache,
    encode_image,
    generate_evalsets,
    npy_bytes,
    write_wds_set,
)
from curate.eval.tasks import FAIRNESS_OBJECTIVES, META_FIELDS, get_task

pytestmark = pytest.mark.skipif(
    not Path("/usr/share/openclipart/png").is_dir(), reason="needs apt-get install openclipart-png"
)
FLICKR = "retrieval/flickr_1k_test_image_text_retrieval"
TASKS = ["cifar10", "mnist", "wilds/fmow", "wilds/iwildcam", "fairness/fairface", FLICKR, "misc/winogavil"]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("evalsets")
    generate_evalsets(out, TASKS, per_class=2, shard_size=7)  # several shards per set
    return out


def _image(color: tuple[int, int, int], fmt: str = "png") -> bytes:
    return encode_image(PIL.Image.new("RGB", (8, 8), color), fmt)


def test_task_folder_names_follow_datacomp() -> None:
    assert task_folder(Path("/d"), "vtab/cifar100") == Path("/d/wds_vtab-cifar100_test")
    assert task_folder(Path("/d"), "fairness/dollar_street") == Path("/d/wds_dollar_street_test")
    assert task_folder(Path("/d"), "wilds/fmow") == Path("/d/wds_wilds-fmow_test")
    for key in ("cifar10", "fairness/geode", "wilds/iwildcam", "vtab/svhn"):
        assert task_folder(Path("/d"), key).name == get_task(key).folder


def test_classification_set_reads_like_clip_benchmark(data_dir: Path) -> None:
    """Same samples, order, labels and pixels as CLIP_benchmark's webdataset pipeline (§5.2)."""
    import webdataset as wds

    task = load_wds_task(data_dir, "cifar10")
    assert task.classnames[:3] == ["airplane", "automobile", "bird"] and len(task.classnames) == 10
    assert all("{c}" in t for t in task.templates) and task.dataset_type == "classification"
    assert (task.size, len(task.shards)) == (20, 3)
    ours = list(task.samples())
    assert not task.skipped and len(ours) == 20
    root = task_folder(data_dir, "cifar10")
    nshards = int((root / "test" / "nshards.txt").read_text())
    pipeline = (
        wds.WebDataset(
            str(root / "test" / f"{{0..{nshards - 1}}}.tar"), shardshuffle=False, empty_check=False
        )
        .decode(wds.autodecode.ImageHandler("pil", extensions=["webp", "png", "jpg", "jpeg"]))
        .to_tuple(["webp", "png", "jpg", "jpeg", "0.webp"], "cls")
    )
    reference = list(pipeline)
    assert [s.label for s in ours] == [label for _, label in reference]
    assert sorted({s.label for s in ours}) == list(range(10))  # per_class 2 of every class
    for mine, (theirs, _) in zip(ours, reference, strict=True):
        assert mine.image.mode == "RGB"
        assert np.array_equal(np.asarray(mine.image), np.asarray(theirs.convert("RGB")))
    with tarfile.open(root / "test" / "0.tar") as tf:
        first_keys = list(dict.fromkeys(m.name.split(".")[0] for m in tf))
    assert [s.key for s in ours[:7]] == first_keys


def test_wilds_and_fairness_metadata(data_dir: Path) -> None:
    import webdataset as wds

    fmow = load_wds_task(data_dir, "wilds/fmow")
    assert fmow.meta_fields == META_FIELDS["wilds/fmow"] == ("region", "year", "y")
    samples = list(fmow.samples())
    assert len(samples) == fmow.size == 124 and not fmow.skipped
    assert all(s.meta is not None and len(s.meta) == 3 and s.meta[2] == s.label for s in samples)
    # DataComp's metadata loader: the same tars, to_tuple("cls", "npy") (wilds_eval.create_metadata_loader)
    root = task_folder(data_dir, "wilds/fmow")
    last = len(fmow.shards) - 1
    meta = list(
        wds.WebDataset(str(root / "test" / f"{{0..{last}}}.tar"), shardshuffle=False, empty_check=False)
        .decode()
        .to_tuple("cls", "npy")
    )
    assert [(int(c), m.tolist()) for c, m in meta] == [(s.label, s.meta.tolist()) for s in samples]
    iwild = load_wds_task(data_dir, "wilds/iwildcam")
    assert next(iwild.samples()).meta.shape == (9,)

    face = load_wds_task(data_dir, "fairness/fairface")
    objectives = [c.split(":", 1)[0] for c in face.classnames]
    assert list(dict.fromkeys(objectives)) == list(FAIRNESS_OBJECTIVES)  # raw objective: prefixes kept
    assert all(t.split(":", 1)[0] in FAIRNESS_OBJECTIVES and "{c}" in t for t in face.templates)
    faces = list(face.samples())
    assert len(faces) == face.size and not face.skipped
    assert all(s.label == -1 and len(s.meta) == 4 for s in faces)  # no cls: the metadata is the target
    race, race_binary = (np.stack([s.meta for s in faces])[:, i] for i in (2, 3))
    assert np.array_equal(race_binary, (race != 1).astype(race_binary.dtype))


def test_multilabel_set(tmp_path: Path) -> None:
    folder = task_folder(tmp_path, "voc2007")
    good = np.array([1, 0, 1] + [0] * 17, dtype=np.int64)
    records = [
        WdsRecord("a", {"jpg": _image((255, 0, 0), "jpg"), "npy": npy_bytes(good)}),
        WdsRecord("b", {"jpg": _image((0, 255, 0), "jpg"), "npy": npy_bytes(np.ones(3))}),  # wrong length
        WdsRecord("c", {"jpg": _image((0, 0, 255), "jpg"), "cls": b"3"}),  # a cls is no multilabel target
    ]
    write_wds_set(folder, records, [f"c{i}" for i in range(20)], ["a {c}."], dataset_type="multilabel")
    task = load_wds_task(tmp_path, "voc2007")
    assert task.dataset_type == "multilabel" and task.size == 3
    samples = list(task.samples())
    assert [s.key for s in samples] == ["a"] and np.array_equal(samples[0].label, good)
    assert task.skipped == {
        "npy label has 3 values, expected 20 (one per class)": 1,
        "no npy label member (multilabel)": 1,
    }


def test_bad_samples_are_counted_skips(tmp_path: Path) -> None:
    folder = task_folder(tmp_path, "wilds/camelyon17")
    meta = npy_bytes(np.array([2, 21, 1]))
    records = [
        WdsRecord("ok1", {"webp": _image((1, 2, 3), "webp"), "cls": b"1", "npy": meta}),
        WdsRecord("corrupt", {"png": b"\x89PNG\r\n\x1a\n not really", "cls": b"0", "npy": meta}),
        WdsRecord("nolabel", {"jpeg": _image((9, 9, 9), "jpg"), "npy": meta}),
        WdsRecord("badlabel", {"png": _image((9, 9, 9)), "cls": b"one", "npy": meta}),
        WdsRecord("range", {"png": _image((9, 9, 9)), "cls": b"7", "npy": meta}),
        WdsRecord("nometa", {"png": _image((9, 9, 9)), "cls": b"1"}),
        WdsRecord("shortmeta", {"png": _image((9, 9, 9)), "cls": b"1", "npy": npy_bytes(np.array([1]))}),
        WdsRecord("noimage", {"txt": b"hello", "cls": b"1", "npy": meta}),
        WdsRecord("ok2", {"0.webp": _image((4, 5, 6), "webp"), "cls": b"0", "npy": meta}),
    ]
    write_wds_set(folder, records, ["a", "b"], ["a photo of {c}."], shard_size=4)
    task = load_wds_task(tmp_path, "wilds/camelyon17")
    samples = list(task.samples())
    assert [(s.key, s.label) for s in samples] == [("ok1", 1), ("ok2", 0)]
    assert task.skipped == {
        "image does not decode": 1,
        "no cls label member": 1,
        "cls label is not an integer": 1,
        "cls label outside 0..1": 1,
        "no npy metadata member": 1,
        "npy metadata has 1 values, expected 3": 1,
        "no image member (webp/png/jpg/jpeg)": 1,
    }
    assert task.size == 8  # samples with an image member, from the headers
    list(task.samples())
    assert sum(task.skipped.values()) == 7, "counts restart with each pass"


@pytest.fixture(scope="module")
def good_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("good")
    generate_evalsets(out, ["cifar10"], per_class=1, shard_size=4)
    return out


def _copy(good_dir: Path, dst: Path) -> Path:
    shutil.copytree(task_folder(good_dir, "cifar10"), task_folder(dst, "cifar10"))
    return dst


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (
            lambda r: (r / "test" / "nshards.txt").unlink(),
            r"test/nshards.txt: missing \(the number of test shards",
        ),
        (lambda r: (r / "test" / "nshards.txt").write_text("three\n"), r"expected a positive whole number"),
        (lambda r: (r / "test" / "2.tar").unlink(), r"test/2.tar: missing \(nshards.txt says 3 shards\)"),
        (lambda r: (r / "classnames.txt").unlink(), r"classnames.txt: missing \(one class name per line\)"),
        (lambda r: (r / "zeroshot_classification_templates.txt").write_text("a photo\n"), r"no template has"),
        (lambda r: (r / "dataset_type.txt").write_text("retrieval\n"), r"dataset type 'retrieval' is not"),
        (
            lambda r: shutil.rmtree(r),
            r"no evaluation data for 'cifar10'; fetch it with `curate evalsets fetch",
        ),
    ],
)
def test_malformed_sets_are_clear_errors(good_dir: Path, tmp_path: Path, damage, message: str) -> None:  # noqa: ANN001
    data_dir = _copy(good_dir, tmp_path)
    damage(task_folder(data_dir, "cifar10"))
    with pytest.raises(CurateError, match=message):
        load_wds_task(data_dir, "cifar10")
    reason = missing_reason(data_dir, "cifar10")
    assert reason is not None and str(task_folder(data_dir, "cifar10")) in reason
    assert missing_reason(good_dir, "cifar10") is None


def test_truncated_tar_is_refused_at_load_and_counted_if_cut_later(good_dir: Path, tmp_path: Path) -> None:
    data_dir = _copy(good_dir, tmp_path)
    tar = task_folder(data_dir, "cifar10") / "test" / "1.tar"
    whole = tar.read_bytes()
    tar.write_bytes(whole[:700])  # inside the first member's data
    with pytest.raises(CurateError, match=r"1.tar: not a readable tar \(cut off inside member"):
        load_wds_task(data_dir, "cifar10")
    tar.write_bytes(whole)
    task = load_wds_task(data_dir, "cifar10")
    tar.write_bytes(whole[:700])  # changed after the check: the run goes on, the loss is counted
    samples = list(task.samples())
    assert len(samples) == 6 and task.skipped == {"1.tar: tar unreadable from here on (ReadError)": 1}


def test_retrieval_and_winogavil_caches(data_dir: Path) -> None:
    items = load_retrieval(data_dir, FLICKR)
    assert len(items) == 10 and not items.skipped
    assert all(item.image.mode == "RGB" and 1 <= len(item.captions) <= 5 for item in items)
    wino = load_winogavil(data_dir)
    assert len(wino) == 8 and not wino.skipped
    assert sorted(len(w.candidates) for w in wino) == [5, 5, 6, 6, 10, 10, 12, 12]
    for w in wino:
        assert len(w.candidate_images) == len(w.candidates) and w.cue
        gold = np.isin(w.candidates, w.associations)  # DataComp's y_true
        assert 0 < gold.sum() == len(w.associations) < len(w.candidates)


def test_the_reference_call_reads_our_cache_offline(data_dir: Path) -> None:
    """DataComp's exact call, in a fresh interpreter with HF_DATASETS_OFFLINE=1 set before import."""
    code = (
        "import datasets, json, os, sys\n"
        "out = {}\n"
        "for name in ('flickr_1k_test_image_text_retrieval', 'winogavil'):\n"
        "    ds = datasets.load_dataset(f'nlphuji/{name}', split='test',\n"
        "                               cache_dir=os.path.join(sys.argv[1], 'hf_cache'))\n"
        "    row = ds[0]\n"
        "    imgs = row.get('candidate_images') or [row.get('image')]\n"
        "    out[name] = [len(ds), sorted(ds.column_names), type(imgs[0]).__module__]\n"
        "print(json.dumps(out))\n"
    )
    env = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", code, str(data_dir)], capture_output=True, text=True, env=env, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["flickr_1k_test_image_text_retrieval"][:2] == [10, ["caption", "filename", "image"]]
    assert got["winogavil"][0] == 8
    assert {"cue", "candidates", "candidate_images", "associations"} <= set(got["winogavil"][1])
    assert all(v[2].startswith("PIL.") for v in got.values()), "images decode to PIL, as DataComp needs"


def test_hf_cache_errors_and_bad_rows(tmp_path: Path) -> None:
    assert "no cached copy of nlphuji/winogavil" in missing_reason(tmp_path, "misc/winogavil")
    with pytest.raises(
        CurateError, match=r"hf_cache/nlphuji___flickr_1k_test_image_text_retrieval: no cached"
    ):
        load_retrieval(tmp_path, FLICKR)
    import datasets

    good = _image((10, 200, 30), "jpg")
    rows = [
        {"image": {"bytes": good, "path": None}, "caption": ["a green square", "green"]},
        {"image": {"bytes": b"garbage", "path": None}, "caption": ["broken"]},
        {"image": {"bytes": good, "path": None}, "caption": []},
    ]
    features = datasets.Features(
        {"image": datasets.Image(), "caption": datasets.List(datasets.Value("string"))}
    )
    _write_hf_cache(tmp_path, get_task(FLICKR), rows, features)
    assert missing_reason(tmp_path, FLICKR) is None
    items = load_retrieval(tmp_path, FLICKR)
    assert [i.captions for i in items] == [["a green square", "green"]]
    assert items.skipped == {"image does not decode": 1, "no caption": 1}
    for arrow in hf_cache_dir(tmp_path, FLICKR).rglob("*.arrow"):
        arrow.write_bytes(b"not arrow")
    with pytest.raises(
        CurateError, match=r"cached copy of nlphuji/flickr_1k_test_image_text_retrieval cannot be"
    ):
        load_retrieval(tmp_path, FLICKR)
    with pytest.raises(CurateError, match="is a Hugging Face datasets task"):
        load_wds_task(tmp_path, FLICKR)
