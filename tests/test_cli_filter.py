"""`curate filter` on a plain DataComp metadata directory: subset file, funnel, fits reused, user errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from curate.cli import app
from curate.uids import array_to_uids, read_subset
from tests.metadata_parts import rows, uid, write_part


def _metadata(tmp_path: Path) -> Path:
    meta = tmp_path / "metadata"
    first = rows(4, clip_l14_similarity_score=[0.9, 0.1, 0.5, 0.3], text=["a b", None, "the red car", "x"])
    second = rows(4, clip_l14_similarity_score=[0.2, 0.8, 0.4, 0.6])
    second["uid"] = [uid(i) for i in range(4, 8)]
    write_part(meta, "0a", first)
    write_part(meta, "0b", second)
    return meta


def _run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, " ".join(result.output.split())


def test_filter_writes_a_datacomp_subset_and_reuses_fits(tmp_path: Path) -> None:
    meta = _metadata(tmp_path)
    out = tmp_path / "out" / "clip.npy"
    # through the real command line once: an fsspec URL, inline YAML
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "curate.cli",
            "filter",
            "--metadata",
            f"file://{meta}",
            "--strategy",
            "{clip_score: {model: l14, fraction: 0.5}}",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    # 8 rows, n = 4: the 5th largest is 0.4 -> .9 .5 .8 .4 .6
    assert array_to_uids(read_subset(out)) == [uid(i) for i in (0, 2, 5, 6, 7)]
    assert "5 of 8 rows kept" in " ".join(proc.stderr.split())
    fits = list((tmp_path / "out" / "clip.fit").iterdir())
    assert len(fits) == 1 and (fits[0] / "threshold.json").exists()
    code, output = _run(
        "filter",
        "--metadata",
        str(meta),
        "--strategy",
        "{clip_score: {model: l14, fraction: 0.5}}",
        "--out",
        str(out),
        "--workers",
        "2",
    )
    assert code == 0 and "fit clip_score" not in output, "the saved fit is reused"


def test_named_strategy_and_funnel(tmp_path: Path) -> None:
    meta = _metadata(tmp_path)
    code, output = _run(
        "filter",
        "--metadata",
        str(meta),
        "--strategy",
        "basic_filter",
        "--out",
        str(tmp_path / "b.npy"),
        "--decisions",
        str(tmp_path / "dec"),
    )
    assert code == 0, output
    assert array_to_uids(read_subset(tmp_path / "b.npy")) == [uid(i) for i in (2, 4, 5, 6, 7)]
    assert "basic_filter: 5 of 8 rows kept" in output
    assert sorted(p.name for p in (tmp_path / "dec" / "basic_filter").iterdir()) == [
        "0a.parquet",
        "0b.parquet",
    ]


def test_user_errors_are_messages_not_tracebacks(tmp_path: Path) -> None:
    meta = _metadata(tmp_path)
    out = str(tmp_path / "x.npy")
    cases = [
        (["--strategy", "clip_score"], "--strategy clip_score: give exactly one of model or column"),
        (
            ["--strategy", "{clip_score: {model: h14, threshold: 0.3}}"],
            "needs column clip_h14_similarity_score, which the metadata in",
        ),
        (["--strategy", "basic_filtr"], "unknown filter 'basic_filtr'"),
        (["--strategy", "{all: [}"], "--strategy: not valid YAML"),
        (["--strategy", str(tmp_path / "none.yaml")], "--strategy: no such file"),
    ]
    for args, message in cases:
        code, output = _run("filter", "--metadata", str(meta), "--out", out, *args)
        assert code == 2 and message in output and "Traceback" not in output, (args, output)
    code, output = _run(
        "filter", "--metadata", str(tmp_path / "missing"), "--strategy", "no_filter", "--out", out
    )
    assert code == 2 and "metadata directory not found" in output
    assert not Path(out).exists()
