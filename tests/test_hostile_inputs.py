"""Hostile and malformed inputs through the real command line (`python -m curate.cli` in a subprocess):
parquet pools and metadata, subset files, tars and pipeline YAML.

Each case ends in a clear error naming the file, key or value (exit 2, before any work) or in a counted
skip with its reason; never a traceback, and nothing is written outside the run or --out directory (the
inputs and the working directory stay exactly as they were). Problems that one command reports together
share a command line; the command lines of a test run in parallel.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curate.uids import array_to_uids, read_subset, uids_to_array, write_subset
from tests.metadata_parts import rows, uid
from tests.shard_fixtures import add, sample_members, write_shards
from tests.shard_fixtures import uid as shard_uid

World = tuple[Path, Path, Path]  # inputs, working directory, outputs root


@dataclass
class Case:
    """One command line, what it must say and its exit code; `out` is the only place it may write."""

    name: str
    args: list[str]
    says: list[str]
    code: int = 2
    out: Path | None = None
    output: str = field(default="", init=False)
    exit_code: int = field(default=-1, init=False)


@pytest.fixture
def world(tmp_path: Path) -> World:
    dirs = (tmp_path / "in", tmp_path / "cwd", tmp_path / "out")
    for d in dirs:
        d.mkdir()
    return dirs


def _tree(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in sorted(root.rglob("*"))}


def _run(case: Case, cwd: Path) -> Case:
    proc = subprocess.run(
        [sys.executable, "-m", "curate.cli", *case.args], cwd=cwd, capture_output=True, text=True, timeout=180
    )
    case.exit_code, case.output = proc.returncode, " ".join((proc.stdout + proc.stderr).split())
    return case


def _check(cases: list[Case], world: World) -> None:
    """Run the cases; each exits as expected and says what it must; only their `out` paths appear."""
    inputs, cwd, outs = world
    before = _tree(inputs)
    with ThreadPoolExecutor(4) as ex:
        done = list(ex.map(lambda c: _run(c, cwd), cases))
    for case in done:
        where = f"{case.name}: exit {case.exit_code}: {case.output}"
        assert case.exit_code == case.code, where
        assert "Traceback" not in case.output and "Error: " not in case.output, where
        for text in case.says:
            assert text in case.output, f"{case.name}: expected {text!r} in: {case.output}"
        if case.code != 0 and case.out is not None:
            assert not case.out.exists(), f"{case.name}: wrote {case.out} before stopping"
    assert _tree(inputs) == before, "inputs were changed"
    assert _tree(cwd) == {}, "something was written to the working directory"
    allowed = {c.out for c in cases if c.out is not None and c.code == 0}
    allowed |= {p.with_name(p.stem + ".fit") for p in allowed}  # `curate filter`'s fits beside --out
    assert set(outs.iterdir()) <= allowed


# ---------------------------------------------------------------- parquet pools (`curate run`)


def test_bad_parquet_pools_stop_the_run_before_any_work(world: World) -> None:
    inputs, _, outs = world
    good = {"uid": [uid(0), uid(1)], "url": ["http://x/0.jpg", "http://x/1.jpg"], "text": ["a", "b"]}
    files = {
        "no_url": {"uid": good["uid"], "text": good["text"], "link": good["url"]},
        "int_url": {**good, "url": [1, 2]},
        "int_uid": {**good, "uid": [1, 2]},
        "list_text": {**good, "text": [["a"], ["b"]]},
        "no_uid": {"url": good["url"], "text": good["text"]},
    }
    for name, data in files.items():
        pq.write_table(pa.table(data), inputs / f"{name}.parquet")
    (inputs / "broken.parquet").write_bytes(b"PAR1" + b"\0" * 20)
    paths = ", ".join(str(p) for p in sorted(inputs.glob("*.parquet")))
    run_dir = outs / "run"
    yaml = f"name: pools\nrun_dir: {run_dir}\npool: {{source: parquet, paths: [{paths}], uid_col: uid}}\n"
    (inputs / "pools.yaml").write_text(yaml)
    says = [
        "error: pools: cannot start",
        f"{inputs}/broken.parquet: not a readable parquet file",
        f"{inputs}/int_uid.parquet: column 'uid' has type int64; expected a string",
        f"{inputs}/int_url.parquet: column 'url' has type int64; expected a string",
        f"{inputs}/list_text.parquet: column 'text' has type list<element: string>; expected a string",
        f"{inputs}/no_uid.parquet: column 'uid' is missing (columns: url, text)",
        f"{inputs}/no_url.parquet: column 'url' is missing (columns: uid, text, link)",
    ]
    _check([Case("pools", ["run", str(inputs / "pools.yaml")], says, out=run_dir)], world)


# ---------------------------------------------------------------- metadata (`curate filter`)


def _part(directory: Path, stem: str, **columns: list | None) -> None:
    data = {**rows(4), **columns}
    directory.mkdir(exist_ok=True)
    pq.write_table(pa.table({k: v for k, v in data.items() if v is not None}), directory / f"{stem}.parquet")


def test_bad_metadata_is_an_error_before_work_or_a_counted_drop(world: World) -> None:
    inputs, _, outs = world
    bad = inputs / "bad"
    _part(bad, "a_no_uid", uid=None)
    _part(bad, "b_int_uid", uid=[1, 2, 3, 4])
    _part(bad, "c_str_score", clip_l14_similarity_score=["0.3"] * 4)
    _part(bad, "d_int_text", text=[1, 2, 3, 4])
    odd = inputs / "odd"
    _part(odd, "a_hex", uid=["xyz", uid(1).replace("0", "O"), uid(2)[:31], None])
    _part(odd, "b_dup", uid=[uid(7), uid(7), uid(5), uid(7)])
    strategy = "{all: [basic_filter, {clip_score: {model: l14, fraction: 0.5}}]}"
    bad_out, odd_out = outs / "bad.npy", outs / "odd.npy"
    cases = [
        Case(
            "bad",
            ["filter", "--metadata", str(bad), "--strategy", strategy, "--out", str(bad_out)],
            [
                f"error: strategy strategy cannot run on {bad}",
                f"{bad}/a_no_uid.parquet: column 'uid' is missing (columns: url, text,",
                f"{bad}/b_int_uid.parquet: column 'uid' has type int64; expected a string",
                f"{bad}/c_str_score.parquet: column 'clip_l14_similarity_score' has type string; "
                "expected a number",
                f"{bad}/d_int_text.parquet: column 'text' has type int64; expected a string",
            ],
            out=bad_out,
        ),
        Case(
            "odd",
            ["filter", "--metadata", str(odd), "--strategy", "no_filter", "--out", str(odd_out)],
            ["no_filter: 4 of 8 rows kept", "invalid uid (expected 32", "note: 2 kept rows share their uid"],
            code=0,
            out=odd_out,
        ),
    ]
    _check(cases, world)
    # Invalid uids are dropped with their reason; a uid kept in k rows is listed k times (DataComp's
    # baselines do the same) and counted, above.
    assert array_to_uids(read_subset(odd_out)) == [uid(5), uid(7), uid(7), uid(7)]


# ---------------------------------------------------------------- subset files (`curate reshard`)


class _Pwn:
    """Unpickling this creates a file: proves an object-array subset is never unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (Path.touch, (self.marker,))


def test_bad_subset_files_are_errors_and_raw_memmaps_work(world: World) -> None:
    inputs, _, outs = world
    write_shards(inputs / "shards", [list(range(6))])
    chosen = np.sort(uids_to_array([shard_uid(i) for i in (1, 4)]))
    np.save(inputs / "unsorted.npy", chosen[::-1], allow_pickle=False)
    chosen.tofile(inputs / "raw.npy")  # no header: DataComp's raw memmap form, though named .npy
    chosen[::-1].tofile(inputs / "raw_unsorted.bin")
    (inputs / "raw_odd.bin").write_bytes(chosen.tobytes()[:-3])
    marker = inputs.parent / "pwned"
    np.save(inputs / "objects.npy", np.array([_Pwn(marker)], dtype=object), allow_pickle=True)
    shards = str(inputs / "shards")

    def case(name: str, says: list[str], code: int = 2) -> Case:
        out = outs / name
        args = ["reshard", "--shards", shards, "--subset", str(inputs / name), "--out", str(out)]
        return Case(name, args, says, code, out)

    cases = [
        case("unsorted.npy", ["unsorted.npy: uids are not sorted"]),
        case("raw_unsorted.bin", ["raw_unsorted.bin: uids are not sorted"]),
        case("raw_odd.bin", ["raw_odd.bin: not a .npy file and its size (29 bytes) is not a multiple of 16"]),
        case("objects.npy", ["objects.npy: not a readable .npy subset file"]),
        case("raw.npy", ["2 samples of 2 subset entries written to 1 shards", "0 missing"], code=0),
    ]
    _check(cases, world)
    assert not marker.exists()
    with tarfile.open(outs / "raw.npy" / "00000000.tar") as tf:
        assert sorted({m.name.split("-")[0] for m in tf}) == array_to_uids(chosen)


# ---------------------------------------------------------------- tars (`curate reshard`)


def test_hostile_tar_members_are_counted_skips_and_nothing_escapes(world: World) -> None:
    inputs, _, outs = world
    shards = inputs / "shards"
    write_shards(shards, [list(range(3))])
    target = inputs.parent / "escaped.txt"  # where a traversal, an absolute name or a link would land
    records = []
    with tarfile.open(shards / "00000001.tar", "w") as tf:
        for r, i in enumerate(range(10, 15)):
            key, members = f"00000001{r:04d}", sample_members(i, shard_uid(i))
            records.append({"uid": shard_uid(i), "key": key, "status": "success"})
            for ext, data in members.items():
                if (r, ext) == (1, "json"):
                    continue  # sample 11: no json member
                if (r, ext) == (2, "jpg"):  # sample 12: its image is a symlink out of the tree
                    link = tarfile.TarInfo(f"{key}.jpg")
                    link.type, link.linkname = tarfile.SYMTYPE, str(target)
                    tf.addfile(link)
                    continue
                add(tf, f"{key}.{ext}", data)
        add(tf, "../../escaped.txt", b"x")
        add(tf, str(target), b"x")
        add(tf, f"../{records[3]['key']}.jpg", b"x")  # a traversal dressed as a member of sample 13
    pq.write_table(pa.Table.from_pylist(records), shards / "00000001.parquet")
    (shards / "00000001_stats.json").write_text(json.dumps({"count": 5, "successes": 5}))
    subset = inputs / "s.npy"
    write_subset(subset, [shard_uid(i) for i in (1, 10, 11, 12, 13)])
    out = outs / "out"
    args = ["reshard", "--shards", str(shards), "--subset", str(subset), "--out", str(out)]
    says = [
        "4 samples of 5 subset entries written",
        "1 missing",
        "skipped 1: no json member",
        "skipped 1: member skipped: symlink",
    ]
    _check([Case("hostile tar", args, says, code=0, out=out)], world)
    assert not target.exists()
    with tarfile.open(out / "00000000.tar") as tf:
        names = tf.getnames()
        assert all(m.isfile() for m in tf.getmembers())
    assert all(not n.startswith("/") and ".." not in n for n in names)
    assert {n.rsplit(".", 1)[0] for n in names} == {f"{shard_uid(i)}-0" for i in (1, 10, 12, 13)}
    assert f"{shard_uid(12)}-0.jpg" not in names  # the link was dropped, the rest of sample 12 kept
    assert f"{shard_uid(13)}-0.jpg" in names  # its own image, not the traversal beside it
    missing = (out / "missing_uids.txt").read_text()
    assert missing.startswith(f"{shard_uid(11)}\tno json member (00000001.tar, key 000000010001)")


# ---------------------------------------------------------------- pipeline YAML (`curate validate`, `run`)


def test_bad_yaml_is_refused_and_tags_never_run(world: World) -> None:
    inputs, _, outs = world
    marker = inputs.parent / "pwned"
    head = f"name: demo\nrun_dir: {outs / 'run'}\npool: {{source: datacomp, metadata: {inputs}}}\n"
    tags = [
        f'!!python/object/apply:os.system ["touch {marker}"]',
        f'!!python/object/new:pathlib.Path.touch ["{marker}"]',
        "!!python/name:os.system",
        "!!python/module:os",
    ]
    for i, tag in enumerate(tags):
        (inputs / f"tag{i}.yaml").write_text(f"{head}download:\n  processes: {tag}\n")
    (inputs / "keys.yaml").write_text(f"{head}dowload: {{processes: 2}}\nembed: {{batch_size: many}}\n")
    (inputs / "paths.yaml").write_text(
        f"name: demo\nrun_dir: {outs / 'run'}\n"
        f"pool: {{source: parquet, paths: [{inputs}/nope.parquet, {inputs}/nodir/]}}\n"
        f"embed: {{models: [{{name: m, arch: ViT-B-32, pretrained: {inputs}/nope.pt}}]}}\n"
    )
    (inputs / "metadata.yaml").write_text(head.replace(f"metadata: {inputs}", f"metadata: {inputs}/none"))
    validate = ["validate", *(str(inputs / f"tag{i}.yaml") for i in range(len(tags)))]
    cases = [
        Case(
            "tags",
            validate,
            [
                f"tag{i}.yaml: line 5: YAML tag '{tag.split()[0]}' is not allowed"
                for i, tag in enumerate(tags)
            ],
            code=1,
        ),
        Case("run tag", ["run", str(inputs / "tag0.yaml")], ["tags are never executed"]),
        Case(
            "keys",
            ["run", str(inputs / "keys.yaml")],
            [
                "keys.yaml: 3 problems",
                "line 4: dowload: unknown key (did you mean 'download'?)",
                "line 5: embed.models: required key is missing",
                "line 5: embed.batch_size: must be an integer (got 'many')",
            ],
        ),
        Case(
            "paths",
            ["run", str(inputs / "paths.yaml")],
            [
                "error: demo: cannot start",
                f"pool.paths[0]: '{inputs}/nope.parquet' does not exist",
                f"pool.paths[1]: '{inputs}/nodir/' does not exist",
                f"embed.models.0.pretrained: checkpoint file not found (got '{inputs}/nope.pt')",
            ],
        ),
        Case(
            "metadata",
            ["run", str(inputs / "metadata.yaml")],
            ["error: demo: cannot start", f"pool.metadata: directory '{inputs}/none' does not exist"],
        ),
    ]
    _check(cases, world)
    assert not marker.exists()
    assert not (outs / "run").exists()
