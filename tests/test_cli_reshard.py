"""`curate reshard`: a run through the real command line, and user errors as messages (exit 2)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from curate.cli import app
from curate.uids import uids_to_array, write_subset
from tests.shard_fixtures import uid, write_shards


def _run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["reshard", *args])
    return result.exit_code, " ".join(result.output.split())


def test_reshard_command(tmp_path: Path) -> None:
    write_shards(tmp_path / "shards", [list(range(0, 6)), list(range(6, 9))])
    write_subset(tmp_path / "s.npy", [uid(1), uid(7), uid(7), uid(50)])
    out = tmp_path / "out"
    args = ["--shards", str(tmp_path / "shards"), "--subset", str(tmp_path / "s.npy"), "--out", str(out)]
    proc = subprocess.run(
        [sys.executable, "-c", "from curate.cli import main; main()", "reshard", *args, "--shard-size", "2"]
        + ["--workers", "2"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    said = " ".join(proc.stderr.split())
    assert "3 samples of 4 subset entries written to 2 shards" in said and "1 missing" in said
    meta = json.loads((out / "meta.json").read_text())
    assert (meta["output_shard_count"], meta["output_count"], meta["missing_count"]) == (2, 3, 1)
    code, output = _run(*args, "--shard-size", "2")  # the same again: a resume with nothing left to do
    assert code == 0 and "resuming: 2 of 2 output shards already written" in output


def test_user_errors_are_messages(tmp_path: Path) -> None:
    write_shards(tmp_path / "shards", [list(range(3))])
    good = tmp_path / "s.npy"
    write_subset(good, [uid(1)])
    unsorted = tmp_path / "unsorted.npy"
    np.save(unsorted, uids_to_array(sorted([uid(1), uid(2)], reverse=True)), allow_pickle=False)
    wrong = tmp_path / "wrong.npy"
    np.save(wrong, np.zeros(3, np.float32))
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "x.txt").write_text("x")
    (tmp_path / "none").mkdir()
    shards, out = str(tmp_path / "shards"), str(tmp_path / "out")
    cases = [
        (["--shards", shards, "--subset", str(unsorted), "--out", out], "uids are not sorted"),
        (["--shards", shards, "--subset", str(wrong), "--out", out], "dtype u8,u8"),
        (["--shards", shards, "--subset", str(tmp_path / "no.npy"), "--out", out], "does not exist"),
        (["--shards", str(tmp_path / "none"), "--subset", str(good), "--out", out], "holds no .tar shards"),
        (["--shards", shards, "--subset", str(good), "--out", str(tmp_path / "busy")], "is not empty"),
    ]
    for args, message in cases:
        code, output = _run(*args)
        assert code == 2, output
        assert message in output and "Traceback" not in output
    assert not Path(out).exists()
