"""Training scales: DataComp's fixed recipes (reference §4.1) and curate's unofficial ones: `tiny` (CPU
demo), `tiny_long` (the same model trained longer, for GPU sweeps) and `smoke` (a two-step check).

The recipe of a scale (model, global batch, learning rate, warmup, samples seen, beta2) is what makes
results comparable, so nothing a user sets can change it: no CLI flag and no config key reaches these
numbers. A `Scale` built by hand (tests, experiments through the Python API) is never official:
`official` is true only for a value equal to DataComp's table entry of the same name.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from curate.errors import CurateError


@dataclass(frozen=True)
class Scale:
    """One training recipe; `batch_size` is the global batch (all GPUs, all accumulation steps)."""

    name: str
    model: str
    batch_size: int
    learning_rate: float
    warmup: int  # optimiser steps of linear warmup
    train_num_samples: int  # samples seen over the whole training
    beta2: float | None = None  # None: not passed, open_clip's ViT default (0.98) applies
    log_every_n_steps: int = 100  # console/log cadence only (DataComp's train.py default)

    @property
    def official(self) -> bool:
        """Whether this is exactly one of DataComp's scales (results comparable with the leaderboard)."""
        return OFFICIAL_SCALES.get(self.name) == self

    def datacomp_config(self) -> dict[str, Any]:
        """The scale as DataComp's `scale_configs.py` spells it (info.pkl's `scale_config`)."""
        return {
            "batch_size": self.batch_size,
            "learning_rate": self.learning_rate,
            "train_num_samples": self.train_num_samples,
            "warmup": self.warmup,
            "model": self.model,
            "beta2": self.beta2,
        }

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "official": self.official}


OFFICIAL_SCALES: dict[str, Scale] = {
    s.name: s
    for s in (
        Scale("debug", "ViT-B-32", 1_024, 1e-4, 500, 128_000),
        Scale("small", "ViT-B-32", 4_096, 5e-4, 500, 12_800_000),
        Scale("medium", "ViT-B-32", 4_096, 5e-4, 500, 128_000_000),
        Scale("large", "ViT-B-16", 8_192, 5e-4, 500, 1_280_000_000),
        Scale("xlarge", "ViT-L-14", 90_112, 1e-3, 10_000, 12_800_000_000, beta2=0.95),
    )
}

# Not DataComp's: a 64 px ViT shipped with curate, sized so that a CPU run over a few thousand samples
# (the openclipart demo) finishes in minutes on 2 cores. Its scores mean nothing against the leaderboard.
TINY = Scale(
    "tiny",
    "curate-tiny-vit64",
    batch_size=64,
    learning_rate=1e-3,
    warmup=20,
    train_num_samples=9_600,  # 150 steps; measured ~3 min on 2 CPU cores (fp32, 2 data workers)
    log_every_n_steps=10,
)

# Not DataComp's either: the same 64 px ViT trained ~16x longer, for comparing strategies on a GPU (a
# `curate sweep` of the openclipart pool, several seeds): 600 steps of 256, ~20 passes over the pool.
TINY_LONG = Scale(
    "tiny_long",
    "curate-tiny-vit64",
    batch_size=256,
    learning_rate=1e-3,
    warmup=60,
    train_num_samples=153_600,
    log_every_n_steps=50,
)

# Not a recipe: two optimiser steps, to check that a pipeline runs end to end (CI, `curate sweep` tests).
SMOKE = Scale(
    "smoke",
    "curate-tiny-vit64",
    batch_size=16,
    learning_rate=1e-3,
    warmup=1,
    train_num_samples=32,
    log_every_n_steps=1,
)

UNOFFICIAL_SCALES: dict[str, Scale] = {s.name: s for s in (TINY, TINY_LONG, SMOKE)}
SCALES: dict[str, Scale] = {**OFFICIAL_SCALES, **UNOFFICIAL_SCALES}


def get_scale(name: str) -> Scale:
    """A scale by name, or a CurateError listing the valid names."""
    try:
        return SCALES[name]
    except KeyError:
        valid = ", ".join(SCALES)
        raise CurateError(f"unknown training scale '{name}'; valid scales: {valid}") from None


def require_registered(scale: Scale) -> None:
    """An official-looking name with other numbers is refused: DataComp's recipes are not adjustable."""
    if scale.name in OFFICIAL_SCALES and not scale.official:
        official = OFFICIAL_SCALES[scale.name]
        diff = [
            f"{key}: {getattr(scale, key)!r} (DataComp: {getattr(official, key)!r})"
            for key in official.datacomp_config()
            if getattr(scale, key) != getattr(official, key)
        ]
        raise CurateError(
            f"scale '{scale.name}' is DataComp's and its hyper-parameters cannot be changed; "
            "name a custom scale differently",
            diff,
        )
