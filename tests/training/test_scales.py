"""The scale recipes are DataComp's table (reference §4.1), written out here by hand, and cannot change."""

from __future__ import annotations

import dataclasses

import pytest

from curate.errors import CurateError
from curate.training.scales import OFFICIAL_SCALES, SCALES, Scale, get_scale, require_registered

# reference §4.1: model, global batch, lr, warmup, train_num_samples, beta2
DATACOMP = {
    "debug": ("ViT-B-32", 1024, 1e-4, 500, 128_000, None),
    "small": ("ViT-B-32", 4096, 5e-4, 500, 12_800_000, None),
    "medium": ("ViT-B-32", 4096, 5e-4, 500, 128_000_000, None),
    "large": ("ViT-B-16", 8192, 5e-4, 500, 1_280_000_000, None),
    "xlarge": ("ViT-L-14", 90112, 1e-3, 10_000, 12_800_000_000, 0.95),
}


@pytest.mark.parametrize("name", list(DATACOMP))
def test_official_scales_match_datacomp(name: str) -> None:
    model, batch, lr, warmup, samples, beta2 = DATACOMP[name]
    scale = get_scale(name)
    assert scale.official
    assert scale.datacomp_config() == {
        "batch_size": batch,
        "learning_rate": lr,
        "train_num_samples": samples,
        "warmup": warmup,
        "model": model,
        "beta2": beta2,
    }


def test_exactly_datacomps_scales_plus_curates_unofficial_ones() -> None:
    assert sorted(OFFICIAL_SCALES) == sorted(DATACOMP)
    assert set(SCALES) == set(DATACOMP) | {"tiny", "tiny_long", "smoke"}
    for name in ("tiny", "tiny_long", "smoke"):
        scale = get_scale(name)
        assert not scale.official and scale.model == "curate-tiny-vit64"
        assert scale.as_dict()["official"] is False
    assert get_scale("tiny_long").train_num_samples // get_scale("tiny_long").batch_size == 600


def test_a_changed_official_recipe_is_refused_and_never_official() -> None:
    changed = dataclasses.replace(get_scale("small"), learning_rate=1e-3)
    assert not changed.official
    with pytest.raises(CurateError, match="cannot be changed") as exc:
        require_registered(changed)
    assert exc.value.problems == ["learning_rate: 0.001 (DataComp: 0.0005)"]
    custom = Scale("mine", "ViT-B-32", 256, 1e-3, 10, 10_000)
    require_registered(custom)  # another name: allowed, unofficial
    assert not custom.official


def test_unknown_scale_names_the_valid_ones() -> None:
    with pytest.raises(CurateError, match="unknown training scale 'huge'; valid scales: debug, small"):
        get_scale("huge")
