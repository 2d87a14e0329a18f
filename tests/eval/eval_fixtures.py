"""Shared by the evaluation tests: a random-init curate-tiny-vit64 saved as an open_clip training
checkpoint, and small eval sets from curate's own generator. Each is built once per test session."""

from __future__ import annotations

import functools
from pathlib import Path

ARCH = "curate-tiny-vit64"
# Enough to touch every evaluator: plain, 2-class (acc5 null), WILDS, worst-group, fairness tables,
# retrieval, WinoGAViL. imagenet1k is selected in tests but never generated: a missing set.
GENERATED = (
    "cifar10",
    "vtab/pcam",
    "wilds/fmow",
    "fairness/geode",
    "fairness/fairface",
    "retrieval/flickr_1k_test_image_text_retrieval",
    "misc/winogavil",
)


@functools.cache
def tiny_checkpoint(base: Path, seed: int = 3) -> Path:
    """{"epoch", "name", "state_dict"} as open_clip's training writes epoch_latest.pt."""
    import open_clip
    import torch

    from curate.eval.zeroshot import register_curate_configs

    register_curate_configs()
    torch.manual_seed(seed)
    model = open_clip.create_model(ARCH)
    path = base / f"ckpt-{seed}" / "epoch_latest.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"epoch": 1, "name": "test", "state_dict": model.state_dict()}, path)
    return path


@functools.cache
def generated_sets(base: Path) -> Path:
    from curate.eval.generate import generate_evalsets

    out = base / "evalsets"
    generate_evalsets(out_dir=out, tasks=list(GENERATED), per_class=1)
    return out
