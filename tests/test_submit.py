"""Submission bundles: what goes in, and what `--check` refuses (subset format, 38 scored tasks, an
official scale's fixed settings; `tiny` never), with every problem listed; the upload refuses offline."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from curate.cli import app
from curate.errors import CurateError
from curate.eval.tasks import DATACOMP_TASKS, SCORED
from curate.submit import CHECKSUMS, build_bundle, check_bundle, upload
from curate.training.scales import OFFICIAL_SCALES, TINY
from curate.uids import write_subset
from tests.metadata_parts import uid


def _run(tmp: Path, scale: str = "small", tasks: tuple[str, ...] = SCORED, dup: bool = True) -> Path:
    """A run directory with what a finished strategy leaves: subset, eval lines, scores, training record."""
    run = tmp / "run"
    (run / "subsets").mkdir(parents=True)
    (run / "manifest.json").write_text("{}")
    (run / "config.yaml").write_text("name: x\n")
    write_subset(run / "subsets" / "s.npy", [uid(i) for i in (3, 1, 2)] + ([uid(2)] if dup else []))
    ev = run / "eval" / "s"
    ev.mkdir(parents=True)
    lines = [
        {"key": t.key, "dataset": t.name, "metrics": {"main_metric": 0.5 if t.key in tasks else None}}
        for t in DATACOMP_TASKS
        if t.key in tasks or not t.scored
    ]
    (ev / "eval_results.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    (ev / "scores.json").write_text(json.dumps({"aggregates": {"Average": {"score": 0.5}}}))
    recipe = (OFFICIAL_SCALES.get(scale) or TINY).as_dict()
    tr = run / "train" / "s"
    tr.mkdir(parents=True)
    checkpoint = tr / "checkpoints" / "epoch_latest.pt"
    checkpoint.parent.mkdir()
    checkpoint.write_bytes(b"weights")
    info = {
        "scale": scale,
        "official": scale in OFFICIAL_SCALES,
        "arch": recipe["model"],
        "scale_config": recipe,
        "status": "done",
        "checkpoint": str(checkpoint),
        "samples_seen": recipe["train_num_samples"],
    }
    (tr / "info.json").write_text(json.dumps(info))
    return run


def test_a_complete_official_bundle_passes(tmp_path: Path) -> None:
    bundle = build_bundle(_run(tmp_path), "s", tmp_path / "bundle", include_checkpoint=True)
    names = sorted(str(p.relative_to(bundle)) for p in bundle.rglob("*") if p.is_file())
    assert names == sorted(
        ["samples/s.npy", "eval_results.jsonl", "scores.json", "config.yaml", "info.json", "checkpoint.pt"]
        + ["submission.json", CHECKSUMS]
    )
    report = check_bundle(bundle)
    assert report.problems == []
    assert (
        "s.npy: 1 duplicate entries (each is resharded, so trained on, as many times as listed)"
        in report.notes
    )
    assert "evaluation: all 38 scored tasks, average 0.5000" in report.notes
    summary = json.loads((bundle / "submission.json").read_text())
    assert (summary["scale"], summary["official"], summary["subset_entries"]) == ("small", True, 4)


def test_tiny_scale_partial_eval_and_tampering_are_each_refused(tmp_path: Path) -> None:
    run = _run(tmp_path, scale="tiny", tasks=SCORED[:-1])
    bundle = build_bundle(run, "s", tmp_path / "bundle")
    (bundle / "config.yaml").write_text("name: changed\n")
    problems = check_bundle(bundle).problems
    assert len(problems) == 3, problems
    assert "config.yaml: changed since the bundle was made (sha256 differs)" in problems
    assert f"covers 37 of the 38 scored tasks; missing {SCORED[-1]}" in problems[1]
    assert "scale 'tiny' is curate's CPU demo scale, never a submission" in problems[2]


def test_a_recipe_that_differs_from_datacomps_is_refused(tmp_path: Path) -> None:
    run = _run(tmp_path)
    info_path = run / "train" / "s" / "info.json"
    info = json.loads(info_path.read_text())
    info["scale_config"]["learning_rate"] = 1e-3
    info_path.write_text(json.dumps(info))
    problems = check_bundle(build_bundle(run, "s", tmp_path / "bundle")).problems
    assert problems == [
        "training: not DataComp's fixed small settings: learning_rate: 0.001 (DataComp: 0.0005)"
    ]


@pytest.mark.parametrize(
    ("array", "message"),
    [
        (np.array([(2, 0), (1, 0)], dtype="u8,u8"), "not sorted"),
        (np.array([1, 2], dtype="u8"), "DataComp needs a 1-D u8,u8 array"),
    ],
)
def test_bad_subset_files_are_refused(tmp_path: Path, array: np.ndarray, message: str) -> None:
    bundle = build_bundle(_run(tmp_path), "s", tmp_path / "bundle")
    np.save(bundle / "samples" / "s.npy", array)
    problems = [p for p in check_bundle(bundle).problems if "sha256" not in p]
    assert len(problems) == 1 and message in problems[0]


def test_upload_refuses_an_invalid_bundle_and_needs_the_network(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bad = build_bundle(_run(tmp_path / "a", scale="tiny"), "s", tmp_path / "bad")
    with pytest.raises(CurateError, match="not a valid submission; nothing was uploaded"):
        upload(bad, "me/datacomp")
    good = build_bundle(_run(tmp_path / "b"), "s", tmp_path / "good")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(CurateError, match="uploading needs the network"):
        upload(good, "me/datacomp")
    with pytest.raises(CurateError, match="expected USER/NAME"):
        upload(good, "no-slash")


def test_cli(tmp_path: Path) -> None:
    cli = CliRunner()
    run = _run(tmp_path, scale="tiny")
    made = cli.invoke(app, ["submit", str(run), "--strategy", "s", "--out", str(tmp_path / "b")])
    assert made.exit_code == 1 and "tiny" in made.output and "bundle is kept" in made.output
    checked = cli.invoke(app, ["submit", "--check", str(tmp_path / "b")])
    assert checked.exit_code == 1 and "refused" in checked.output and "Traceback" not in checked.output
    for args, message in (
        (["submit", str(run), "--strategy", "nope", "--out", str(tmp_path / "c")], "no subsets/nope.npy"),
        (["submit", str(run), "--strategy", "s", "--out", str(tmp_path / "b")], "is not empty"),
        (["submit", str(run)], "give RUN --strategy NAME --out DIR"),
        (["submit", "--check", str(tmp_path / "b"), "--strategy", "s"], "--check DIR takes no run"),
    ):
        res = cli.invoke(app, args)
        assert res.exit_code == 2 and message in res.output, (args, res.output)
    ok = _run(tmp_path / "ok")
    res = cli.invoke(app, ["submit", str(ok), "--strategy", "s", "--out", str(tmp_path / "okb")])
    assert res.exit_code == 0 and "valid DataComp submission" in res.output


def test_a_damaged_record_is_a_listed_problem_not_a_traceback(tmp_path: Path) -> None:
    bundle = build_bundle(_run(tmp_path), "s", tmp_path / "bundle")
    (bundle / "info.json").write_text("{not json")
    problems = check_bundle(bundle).problems
    assert any("info.json: not readable JSON (the training record)" in p for p in problems), problems
    run = _run(tmp_path / "again")
    (run / "eval" / "s" / "scores.json").write_bytes(b"\xff")
    with pytest.raises(CurateError, match="scores.json: not readable JSON"):
        build_bundle(run, "s", tmp_path / "bundle2")
