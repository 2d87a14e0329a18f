"""The test-set generator: every task in its format, determinism, the openclipart holdout, user errors."""

from __future__ import annotations

import hashlib
import json
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest

from curate.config import OpenclipartPoolConfig
from curate.errors import CurateError
from curate.eval.datasets import load_wds_task, missing_reason, task_folder
from curate.eval.generate import digits, generate_evalsets, ustar_header
from curate.eval.tasks import DATACOMP_TASKS, FAIRFACE, META_FIELDS, RETRIEVAL, WINOGAVIL
from curate.pools.openclipart import OpenclipartPool, holdout_key, is_held_out, scan_pngs

ROOT = Path("/usr/share/openclipart")
pytestmark = pytest.mark.skipif(not (ROOT / "png").is_dir(), reason="needs apt-get install openclipart-png")


def _digests(root: Path) -> dict[str, str]:
    """Every file's sha256 (datasets' lock files aside: they are named after the absolute path)."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.name.endswith(".lock")
    }


@pytest.fixture(scope="module")
def everything(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, float]:
    out = tmp_path_factory.mktemp("all")
    start = time.process_time()
    result = generate_evalsets(out, "all", per_class=1)
    return out, result, time.process_time() - start


def test_all_40_tasks_and_openclipart_in_their_formats(everything: tuple[Path, dict, float]) -> None:
    out, result, cpu = everything
    assert list(result["tasks"]) == [t.key for t in DATACOMP_TASKS] + ["openclipart"]
    assert cpu < 60, f"generating every set took {cpu:.1f} s of CPU"
    formats = set()
    for task in DATACOMP_TASKS:
        assert missing_reason(out, task.key) is None, task.key
        info = result["tasks"][task.key]
        if task.kind in (RETRIEVAL, WINOGAVIL):
            assert info["format"] == "hf" and info["samples"] >= 2
            continue
        wds = load_wds_task(out, task.key)
        assert wds.size == info["samples"]
        if task.kind == FAIRFACE:
            assert {c.split(":")[0] for c in wds.classnames} == {"race", "gender", "age", "toxic"}
            continue
        assert len(wds.classnames) == task.num_classes == wds.size, task.key  # per_class 1
        first = next(wds.samples())
        assert 0 <= first.label < task.num_classes and first.image.mode == "RGB"
        assert (first.meta is None) == (task.key not in META_FIELDS)
        formats.add(info["format"])
    assert formats == {"webp", "jpg", "png"}


def test_mnist_is_sklearn_digits(everything: tuple[Path, dict, float]) -> None:
    from sklearn.datasets import load_digits

    images, targets = digits()
    ref = load_digits()
    assert np.array_equal(targets, ref.target)
    assert np.array_equal(images, (ref.images * (255.0 / 16.0)).round().astype(np.uint8))
    out, _, _ = everything
    task = load_wds_task(out, "mnist")
    samples = list(task.samples())
    assert task.classnames == [str(d) for d in range(10)] and sorted(s.label for s in samples) == list(
        range(10)
    )
    assert {s.image.size for s in samples} == {(28, 28)}


def test_same_seed_same_bytes_other_seed_other_sets(tmp_path: Path) -> None:
    tasks = ["cifar10", "fairness/geode", "mnist", "misc/winogavil"]
    generate_evalsets(tmp_path / "a", tasks, seed=3)
    generate_evalsets(tmp_path / "b", tasks, seed=3)
    generate_evalsets(tmp_path / "c", tasks, seed=4)
    a, b, c = (_digests(tmp_path / x) for x in "abc")
    assert a == b and len(a) > 10
    wds = {k for k in a if k.startswith("wds_")}
    assert wds == {k for k in c if k.startswith("wds_")} and all(
        a[k] != c[k] for k in wds if k.endswith(".tar")
    )
    assert a.keys() != c.keys(), "the hf cache folder is named by a hash of the content"
    generate_evalsets(tmp_path / "a", ["cifar10"], seed=4)  # rewriting a set replaces it whole
    assert _digests(tmp_path / "a") == {**a, **{k: v for k, v in c.items() if "cifar10" in k}}
    assert not [p for p in (tmp_path / "a").iterdir() if p.name.startswith(".")], "no temp folders left"


def test_tar_headers_are_what_tarfile_writes() -> None:
    for name, size in [("s0000001.webp", 1234), ("k.cls", 0), ("x" * 100, 10**9)]:
        info = tarfile.TarInfo(name)
        info.size, info.mtime, info.mode = size, 0, 0o644
        assert ustar_header(name, size) == info.tobuf(tarfile.USTAR_FORMAT)
    with pytest.raises(ValueError, match="longer than 100"):
        ustar_header("y" * 101, 1)


def test_openclipart_eval_set_is_exactly_the_pool_holdout(
    everything: tuple[Path, dict, float], tmp_path: Path
) -> None:
    """The pool (holdout on) and the `openclipart` eval set share no image and together hold them all."""
    out, result, _ = everything
    png = str(ROOT / "png")
    every = {holdout_key(png, r) for r in scan_pngs(png)}
    pool = OpenclipartPool(OpenclipartPoolConfig(source="openclipart", root=str(ROOT)))
    pool.prepare(tmp_path)
    (part,) = pool.parts()
    pool_keys = {holdout_key(png, r) for r in pool.read(part, 0, part.num_rows).column("relpath").to_pylist()}
    folder = task_folder(out, "openclipart")
    eval_keys = set()
    for shard in sorted((folder / "test").glob("*.tar")):
        with tarfile.open(shard) as tf:
            for m in tf:
                if m.name.endswith(".json"):
                    eval_keys.add(json.loads(tf.extractfile(m).read())["relpath"])
    assert result["skipped_sources"] == {}  # no held-out image is too large or broken in Debian's set
    assert pool_keys.isdisjoint(eval_keys)
    assert pool_keys | eval_keys == every
    assert 0.03 < len(eval_keys) / len(every) < 0.07, "about 5% held out"
    task = load_wds_task(out, "openclipart")
    assert task.size == len(eval_keys) == result["tasks"]["openclipart"]["samples"]
    assert task.classnames == sorted(p.name.replace("_", " ") for p in (ROOT / "png").iterdir() if p.is_dir())
    assert all("{c}" in t and "clip art" in " ".join(task.templates) for t in task.templates)
    labels = {s.label for s in task.samples()}
    assert len(labels) > 10 and not task.skipped


def test_holdout_follows_symlinks(tmp_path: Path) -> None:
    """A symlink and its target are on the same side, whatever the hash of the link's own path."""
    png = tmp_path / "png"
    (png / "a").mkdir(parents=True)
    (png / "a" / "real.png").write_bytes(b"x")
    links = []
    for i in range(60):
        link = png / "a" / f"link{i}.png"
        link.symlink_to("real.png")
        links.append(f"a/link{i}.png")
    (png / "a" / "dangling.png").symlink_to("nowhere.png")
    assert {holdout_key(str(png), r) for r in links} == {"a/real.png"}
    assert len({is_held_out(str(png), r) for r in [*links, "a/real.png"]}) == 1
    assert holdout_key(str(png), "a/dangling.png") == "a/dangling.png"


def test_user_errors(tmp_path: Path) -> None:
    with pytest.raises(CurateError, match="unknown task key 'nope'"):
        generate_evalsets(tmp_path, "cifar10,nope")
    with pytest.raises(CurateError, match="per_class: must be at least 1"):
        generate_evalsets(tmp_path, "cifar10", per_class=0)
    with pytest.raises(
        CurateError, match=r"openclipart root '.*/missing' has no png/ folder.*apt-get install"
    ):
        generate_evalsets(tmp_path, "cifar10", openclipart_root=str(tmp_path / "missing"))
    generate_evalsets(
        tmp_path / "m", "mnist", openclipart_root=str(tmp_path / "missing")
    )  # needs no clip art
    assert missing_reason(tmp_path / "m", "mnist") is None
