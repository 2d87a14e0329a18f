"""`curate evaluate`: a checkpoint over eval sets, its table, and user errors without tracebacks."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from curate.cli import app
from tests.eval.eval_fixtures import ARCH, generated_sets, tiny_checkpoint

runner = CliRunner()


def test_missing_checkpoint(tmp_path: Path) -> None:
    args = [
        "evaluate",
        "--arch",
        ARCH,
        "--checkpoint",
        str(tmp_path / "nope.pt"),
        "--data-dir",
        str(tmp_path),
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert "--checkpoint: file not found" in result.output and "Traceback" not in result.output


def test_unknown_task_lists_valid_keys(tmp_path: Path) -> None:
    ckpt = tmp_path / "x.pt"
    ckpt.write_bytes(b"")
    args = ["evaluate", "--arch", ARCH, "--checkpoint", str(ckpt), "--data-dir", str(tmp_path)]
    result = runner.invoke(app, [*args, "--tasks", "cifar10,imagenet"])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "unknown task key 'imagenet'" in result.output
    assert "vtab/caltech101" in result.output and "imagenet1k" in result.output


def test_evaluates_and_prints_table(tmp_path_factory) -> None:
    base = tmp_path_factory.getbasetemp()
    ckpt = tiny_checkpoint(base)
    args = ["evaluate", "--arch", ARCH, "--checkpoint", str(ckpt), "--data-dir", str(generated_sets(base))]
    result = runner.invoke(app, [*args, "--tasks", "vtab/pcam,mnist", "--batch-size", "4", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    out = ckpt.with_name(ckpt.name + ".eval")
    scores = json.loads((out / "scores.json").read_text())
    assert "mnist" in scores["missing"]
    assert "PatchCamelyon" in result.output and "VTAB" in result.output and "covers 1/13" in result.output
    assert "missing" in result.output
