"""`curate validate` and the start of `curate run`, through the real command line in a subprocess."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

GOOD = "name: demo\npool: {source: datacomp, metadata: /data/metadata}\n"
BAD = (
    "name: demo\n"
    "pool: {source: datacomp, metadata: /data/metadata}\n"
    "download:\n"
    "  procesess: 4\n"
    "  resize_mode: squash\n"
    "embed:\n"
    "  models:\n"
    "    - {name: b32, arch: ViT-B-32}\n"
    "    - {name: b32, arch: ViT-B-16}\n"
)
BAD_PROBLEMS = [
    "line 4: download.procesess: unknown key (did you mean 'processes'?); valid keys here: image_size,",
    "line 5: download.resize_mode: must be one of 'no', 'border', 'keep_ratio', 'keep_ratio_largest' or "
    "'center_crop' (got 'squash')",
    "line 9: embed.models.1.name: model names must be unique; item 0 has this name too (got 'b32')",
]


def curate(*args: str | Path, cwd: Path) -> tuple[int, str]:
    """Run `curate ARGS`; exit code and stdout+stderr with whitespace collapsed (the console may wrap)."""
    proc = subprocess.run(
        [sys.executable, "-m", "curate.cli", *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return proc.returncode, " ".join((proc.stdout + proc.stderr).split())


def flat(text: str) -> str:
    return " ".join(text.split())


def test_validate_good_file(tmp_path: Path) -> None:
    (tmp_path / "good.yaml").write_text(GOOD)
    code, output = curate("validate", "good.yaml", cwd=tmp_path)
    assert (code, output) == (0, "ok good.yaml")


def test_validate_reports_every_problem(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text(BAD)
    code, output = curate("validate", "bad.yaml", cwd=tmp_path)
    assert code == 1
    assert output.startswith("error: bad.yaml: 3 problems - line 4:")
    for problem in BAD_PROBLEMS:
        assert flat(problem) in output
    assert "Traceback" not in output


def test_validate_reports_each_file(tmp_path: Path) -> None:
    (tmp_path / "good.yaml").write_text(GOOD)
    (tmp_path / "bad.yaml").write_text(BAD)
    (tmp_path / "evil.yaml").write_text('name: !!python/object/apply:os.system ["touch pwned"]\n')
    code, output = curate("validate", "bad.yaml", "good.yaml", "evil.yaml", "missing.yaml", cwd=tmp_path)
    assert code == 1
    assert "ok good.yaml" in output
    assert "error: bad.yaml: 3 problems" in output
    assert "error: evil.yaml: line 1: YAML tag '!!python/object/apply:os.system' is not allowed" in output
    assert "error: missing.yaml: no such file" in output
    assert "Traceback" not in output
    assert not (tmp_path / "pwned").exists()


def test_run_with_bad_config_stops_before_any_work(tmp_path: Path) -> None:
    run_dir = tmp_path / "runs" / "demo"
    (tmp_path / "bad.yaml").write_text(BAD + f"run_dir: {run_dir}\n")
    code, output = curate("run", "bad.yaml", cwd=tmp_path)
    assert code == 2
    assert "error: bad.yaml: 3 problems" in output
    for problem in BAD_PROBLEMS:
        assert flat(problem) in output
    assert "Traceback" not in output
    assert not (tmp_path / "runs").exists()


def test_run_with_unknown_override_names_it(tmp_path: Path) -> None:
    run_dir = tmp_path / "runs" / "demo"
    (tmp_path / "good.yaml").write_text(GOOD + f"run_dir: {run_dir}\n")
    code, output = curate(
        "run", "good.yaml", "download.procesess=4", "embed.models.0.arch=ViT-B-32", cwd=tmp_path
    )
    assert code == 2
    assert "error: good.yaml: 2 problems" in output
    unknown = "download.procesess: unknown key (did you mean 'processes'?); valid keys here: image_size,"
    assert f"- override 'download.procesess=4': {unknown}" in output
    no_list = "embed.models: must be a list (got {'0': {'arch': 'ViT-B-32'}})"
    assert f"- override 'embed.models.0.arch=ViT-B-32': {no_list}" in output
    assert "Traceback" not in output
    assert not (tmp_path / "runs").exists()
