"""Submission bundles: what DataComp's `evaluate.py --submit` uploads, gathered from a run, checked
before anything leaves the machine.

A bundle holds the subset file (DataComp's `--samples`), `eval_results.jsonl`, `scores.json`, the
resolved config, the training record, optionally the checkpoint, and `checksums.sha256`
(`sha256sum -c` reads it). `check_bundle` is what the benchmark would refuse: a subset file that is not
a sorted `u8,u8` array, an evaluation that does not cover the 38 scored tasks, or a training that did
not use an official scale's fixed settings (the `tiny` scale is never a submission).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from curate.errors import CurateError
from curate.rundir import atomic_write_json, atomic_write_text, now_iso, read_json, staging_dir

CHECKSUMS = "checksums.sha256"
SUMMARY = "submission.json"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _require(path: Path, what: str, made_by: str) -> Path:
    if not path.is_file():
        raise CurateError(f"{path}: missing {what} (made by {made_by})")
    return path


def build_bundle(run: Path, strategy: str, out: Path, *, include_checkpoint: bool = False) -> Path:
    """Gather one strategy's submission files from `run` into `out` (written whole, then renamed)."""
    if not (run / "manifest.json").exists():
        raise CurateError(f"{run}: not a run directory (no manifest.json)")
    subsets = sorted(p.stem for p in (run / "subsets").glob("*.npy") if not p.name.startswith("."))
    if strategy not in subsets:
        raise CurateError(
            f"--strategy {strategy}: no subsets/{strategy}.npy in {run} "
            f"(have: {', '.join(subsets) or 'none'})"
        )
    if out.exists() and any(out.iterdir()):
        raise CurateError(f"--out {out}: exists and is not empty; give a new directory")
    files = {
        f"samples/{strategy}.npy": _require(
            run / "subsets" / f"{strategy}.npy", "the subset", "the filter stage"
        ),
        "eval_results.jsonl": _require(
            run / "eval" / strategy / "eval_results.jsonl", "the evaluation results", "the evaluate stage"
        ),
        "scores.json": _require(run / "eval" / strategy / "scores.json", "the scores", "the evaluate stage"),
        "config.yaml": _require(run / "config.yaml", "the resolved config", "curate run"),
        "info.json": _require(
            run / "train" / strategy / "info.json", "the training record", "the train stage"
        ),
    }
    info = read_json(files["info.json"], "the training record")
    if (run / "train" / strategy / "info.pkl").exists():
        files["info.pkl"] = run / "train" / strategy / "info.pkl"
    if include_checkpoint:
        files["checkpoint.pt"] = _require(
            Path(info.get("checkpoint", "")), "the checkpoint", "the train stage"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    with staging_dir(out.parent, out.name) as tmp:
        for rel, src in files.items():
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, tmp / rel)
        scores = read_json(files["scores.json"], "the scores")
        atomic_write_json(
            tmp / SUMMARY,
            {
                "strategy": strategy,
                "scale": info.get("scale"),
                "official": info.get("official"),
                "arch": info.get("arch"),
                "subset_entries": int(len(np.load(files[f"samples/{strategy}.npy"], mmap_mode="r"))),
                "average": (scores.get("aggregates", {}).get("Average") or {}).get("score"),
                "created": now_iso(),
                "run": str(run.resolve()),
            },
        )
        lines = [f"{_sha256(tmp / rel)}  {rel}" for rel in sorted([*files, SUMMARY])]
        atomic_write_text(tmp / CHECKSUMS, "\n".join(lines) + "\n")
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
    return out


@dataclass
class CheckReport:
    """What `curate submit --check` found: problems refuse the bundle; notes are for the record."""

    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _check_checksums(bundle: Path, report: CheckReport) -> None:
    listing = bundle / CHECKSUMS
    if not listing.is_file():
        report.problems.append(f"{CHECKSUMS}: missing; the bundle was not made by `curate submit`")
        return
    for line in listing.read_text().splitlines():
        digest, _, rel = line.partition("  ")
        path = bundle / rel
        if not path.is_file():
            report.problems.append(f"{rel}: listed in {CHECKSUMS} but missing")
        elif _sha256(path) != digest:
            report.problems.append(f"{rel}: changed since the bundle was made (sha256 differs)")


def _check_subset(bundle: Path, report: CheckReport) -> None:
    from curate.uids import validate_subset

    found = sorted((bundle / "samples").glob("*.npy")) if (bundle / "samples").is_dir() else []
    if len(found) != 1:
        report.problems.append(f"samples/: expected one subset .npy, found {len(found)}")
        return
    path = found[0]
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as exc:
        report.problems.append(f"{path.name}: not a .npy file ({exc})")
        return
    if arr.dtype != np.dtype("u8,u8") or arr.ndim != 1:
        report.problems.append(
            f"{path.name}: dtype {arr.dtype} shape {arr.shape}; DataComp needs a 1-D u8,u8 array"
        )
        return
    found_report = validate_subset(np.asarray(arr))
    if not found_report.is_sorted:
        report.problems.append(
            f"{path.name}: not sorted; DataComp's resharder looks uids up by binary search"
        )
    if found_report.duplicates:
        report.notes.append(
            f"{path.name}: {found_report.duplicates:,} duplicate entries "
            "(each is resharded, so trained on, as many times as listed)"
        )
    report.notes.append(f"{path.name}: {len(arr):,} entries")


def _check_eval(bundle: Path, report: CheckReport) -> None:
    from curate.eval.tasks import DATACOMP_BY_KEY, SCORED

    path = bundle / "eval_results.jsonl"
    if not path.is_file():
        report.problems.append("eval_results.jsonl: missing")
        return
    scored: dict[str, float] = {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        try:
            row = json.loads(line)
            value = row["metrics"]["main_metric"]
        except (json.JSONDecodeError, KeyError, TypeError):
            report.problems.append(f"eval_results.jsonl line {n}: not a DataComp result line")
            continue
        if row.get("key") in DATACOMP_BY_KEY and isinstance(value, int | float):
            scored[row["key"]] = float(value)
    missing = [k for k in SCORED if k not in scored]
    if missing:
        shown = ", ".join(missing[:8]) + (" ..." if len(missing) > 8 else "")
        report.problems.append(
            f"eval_results.jsonl: covers {len(SCORED) - len(missing)} of the {len(SCORED)} scored tasks; "
            f"missing {shown}"
        )
    else:
        report.notes.append(
            f"evaluation: all {len(SCORED)} scored tasks, average {np.mean(list(scored.values())):.4f}"
        )


def _check_training(bundle: Path, report: CheckReport) -> None:
    from curate.training.scales import OFFICIAL_SCALES

    path = bundle / "info.json"
    if not path.is_file():
        report.problems.append("info.json: missing (the training record)")
        return
    try:
        info: dict[str, Any] = read_json(path, "the training record")
    except CurateError as exc:
        report.problems.append(exc.message)
        return
    scale = info.get("scale")
    if scale not in OFFICIAL_SCALES:
        why = "curate's CPU demo scale, never a submission" if scale == "tiny" else "not DataComp's"
        report.problems.append(
            f"training: scale '{scale}' is {why}; official scales: {', '.join(OFFICIAL_SCALES)}"
        )
        return
    official = OFFICIAL_SCALES[scale].datacomp_config()
    used = info.get("scale_config") or {}
    differ = [f"{k}: {used.get(k)!r} (DataComp: {v!r})" for k, v in official.items() if used.get(k) != v]
    if differ or not info.get("official"):
        report.problems.append(
            f"training: not DataComp's fixed {scale} settings: " + "; ".join(differ or ["marked unofficial"])
        )
    if info.get("status") != "done":
        report.problems.append(f"training: status {info.get('status')!r}, not done")
    report.notes.append(
        f"training: {scale} scale, {info.get('arch')}, {info.get('samples_seen', '?')} samples seen"
    )


def check_bundle(bundle: Path) -> CheckReport:
    """Everything the benchmark needs of a bundle, every problem listed (not only the first)."""
    if not bundle.is_dir():
        raise CurateError(f"{bundle}: no such directory")
    report = CheckReport()
    _check_checksums(bundle, report)
    _check_subset(bundle, report)
    _check_eval(bundle, report)
    _check_training(bundle, report)
    return report


def upload(bundle: Path, repo: str) -> str:
    """Upload like DataComp's --submit: one commit to the model repo USER/NAME with
    `<scale>_scale/results.jsonl`, `<scale>_scale/samples/<file>` and, if bundled, the checkpoint.
    Needs the network and a Hugging Face login; refuses a bundle that fails the check."""
    from curate.clipmodels import _online

    report = check_bundle(bundle)
    if not report.ok:
        raise CurateError(f"{bundle}: not a valid submission; nothing was uploaded", report.problems)
    if "/" not in repo or repo.count("/") != 1:
        raise CurateError(
            f"--hf-repo {repo}: expected USER/NAME (a model repository on the Hugging Face hub)"
        )
    if os.environ.get("HF_HUB_OFFLINE") == "1" or not _online():
        raise CurateError(
            "uploading needs the network (huggingface.co is unreachable or HF_HUB_OFFLINE=1); "
            f"the bundle in {bundle} is complete: upload it later with --hf-repo"
        )
    from huggingface_hub import CommitOperationAdd, HfApi
    from huggingface_hub.errors import HfHubHTTPError, LocalTokenNotFoundError

    api = HfApi()
    try:
        api.whoami()
    except (LocalTokenNotFoundError, HfHubHTTPError, OSError) as exc:
        raise CurateError(
            f"not logged in to the Hugging Face hub ({exc}); run `hf auth login` or set HF_TOKEN"
        ) from None
    scale = read_json(bundle / "info.json", "the training record")["scale"]
    ops = [CommitOperationAdd(f"{scale}_scale/results.jsonl", str(bundle / "eval_results.jsonl"))]
    ops += [
        CommitOperationAdd(f"{scale}_scale/samples/{p.name}", str(p))
        for p in sorted((bundle / "samples").glob("*"))
    ]
    if (bundle / "checkpoint.pt").exists():
        ops.append(CommitOperationAdd(f"{scale}_scale/checkpoint.pt", str(bundle / "checkpoint.pt")))
    try:
        commit = api.create_commit(repo, operations=ops, commit_message=f"Upload artifacts ({scale} scale)")
    except (HfHubHTTPError, OSError) as exc:
        raise CurateError(f"upload to {repo} failed: {exc}") from None
    return str(commit.commit_url)
