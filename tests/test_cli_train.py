"""`curate train`: user errors as plain messages (exit 2), the recipe not settable, --dry-run's command."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest
from typer.testing import CliRunner

from curate.cli import app


def _run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, ["train", *args])
    return result.exit_code, result.stdout, " ".join(result.output.split())


def _resharded(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    data.mkdir()
    for i in range(3):
        (data / f"{i:08d}.tar").write_bytes(b"")
    (data / "meta.json").write_text(
        json.dumps({"output_shard_count": 3, "output_shard_format": "{:08d}.tar"})
    )
    return data


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--scale", "huge", "--data", "{data}"],
            "unknown training scale 'huge'; valid scales: debug, small",
        ),
        (["--scale", "small", "--data", "{tmp}/nothing"], "training data: no such directory"),
        (["--scale", "small", "--data", "{data}", "--precision", "fp8"], "precision must be one of amp"),
        (["--scale", "small", "--data", "{data}", "--gpus", "64"], "--gpus 64:"),
        (
            ["--scale", "small", "--data", "{data}", "--nodes", "2", "--gpus", "0"],
            "multi-node training needs",
        ),
        (["--scale", "small", "--data", "{data}", "--data-weights", "1::2"], "2 weight(s) for 1 data entry"),
        (
            ["--scale", "small", "--data", "{data}", "--image-decoder", "dali"],
            "image_decoder must be one of workers, nvjpeg (got 'dali')",
        ),
    ],
)
def test_user_errors(tmp_path: Path, args: list[str], message: str) -> None:
    data = _resharded(tmp_path)
    args = [a.format(data=data, tmp=tmp_path) for a in args]
    code, _, output = _run(*args, "--out", str(tmp_path / "out"))
    assert code == 2, output
    assert message in output and "Traceback" not in output
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "flag", ["--lr", "--batch-size", "--warmup", "--model", "--beta2", "--train-num-samples"]
)
def test_the_recipe_has_no_flag(tmp_path: Path, flag: str) -> None:
    code, _, output = _run("--scale", "small", "--data", str(_resharded(tmp_path)), "--out", "o", flag, "1")
    assert code == 2 and "No such option" in output


def test_dry_run_prints_the_command(tmp_path: Path) -> None:
    data = _resharded(tmp_path)
    out = tmp_path / "out"
    base = ["--scale", "small", "--data", str(data), "--out", str(out), "--dry-run"]
    code, stdout, output = _run(*base, "--gpus", "2", "--accum-freq", "2", "--num-checkpoints", "8")
    assert code == 0, output
    cmd = shlex.split(stdout.strip())
    assert cmd[2:8] == [
        "curate.training.entry",
        "--torchrun",
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "--",
    ]
    argv = cmd[9:]
    assert argv[argv.index("--batch-size") + 1] == "1024" and argv[argv.index("--epochs") + 1] == "8"
    assert argv[argv.index("--train-data") + 1] == f"{data}/{{00000000..00000002}}.tar"
    assert argv[argv.index("--name") + 1] == "small_scale" and argv[argv.index("--logs") + 1] == str(out)
    assert "world size 2, per-GPU batch 1024" in output
    assert not out.exists()

    code, stdout, output = _run(*base, "--scale", "xlarge", "--gpus", "8", "--nodes", "4", "--name", "x")
    assert code == 0, output
    cmd = shlex.split(stdout.strip())
    assert cmd[:4] == ["torchrun", "--nnodes=4", "--nproc_per_node=8", "--rdzv_backend=c10d"]
    assert cmd[cmd.index("--batch-size") + 1] == "2816" and cmd[-2:] == ["--beta2", "0.95"]
    code, _, output = _run(*base, "--scale", "tiny", "--gpus", "0")
    assert code == 0 and "UNOFFICIAL scale 'tiny'" in output
