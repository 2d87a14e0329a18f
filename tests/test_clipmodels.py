"""Model loading: clear problems before any work, seeded random init, checkpoints, the trimmed text tower."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from curate.clipmodels import encode_text_trimmed, load_clip, model_problems
from curate.config import EmbedModelConfig
from tests.embed_fixtures import TINY, tiny_model


def test_problems_name_the_key_and_what_is_valid(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # the offline answer, whatever this machine can reach
    (unknown,) = model_problems(EmbedModelConfig(name="a", arch="ViT-Nope"), "embed.models.0")
    assert unknown.startswith("embed.models.0.arch: unknown open_clip architecture (got 'ViT-Nope')")
    assert "curate-tiny-vit64" in unknown
    (missing,) = model_problems(
        EmbedModelConfig(name="a", arch="ViT-B-32", pretrained=str(tmp_path / "no.pt")), "embed.models.1"
    )
    assert missing == f"embed.models.1.pretrained: checkpoint file not found (got '{tmp_path / 'no.pt'}')"
    (tag,) = model_problems(EmbedModelConfig(name="a", arch="ViT-B-32", pretrained="nonsense"), "m")
    assert "'nonsense' is not an open_clip tag for ViT-B-32" in tag and "openai" in tag
    (offline,) = model_problems(EmbedModelConfig(name="a", arch="ViT-B-32", pretrained="openai"), "m")
    assert "must be downloaded from the network" in offline and "checkpoint file's path" in offline
    (config,) = model_problems(
        EmbedModelConfig(name="a", arch="x", model_config_file=str(tmp_path / "x.json")), "m"
    )
    assert config == f"m.model_config_file: file not found (got '{tmp_path / 'x.json'}')"
    assert model_problems(TINY, "m") == []


def test_random_init_is_the_same_in_every_process_and_checkpoints_load(tmp_path: Path) -> None:
    a, b = tiny_model(), load_clip(TINY, "cpu")
    texts = ["a red house", "two dogs"]
    assert np.array_equal(a.encode_texts(texts), b.encode_texts(texts))
    ckpt = tmp_path / "tiny.pt"
    torch.manual_seed(5)
    for p in b.model.parameters():  # different weights, saved as a plain state dict
        p.data.normal_(0, 0.02)
    torch.save(b.model.state_dict(), ckpt)
    c = load_clip(EmbedModelConfig(name="t", arch="curate-tiny-vit64", pretrained=str(ckpt)), "cpu")
    assert (
        model_problems(EmbedModelConfig(name="t", arch="curate-tiny-vit64", pretrained=str(ckpt)), "m") == []
    )
    assert np.allclose(c.encode_texts(texts), b.encode_texts(texts), atol=1e-6)
    assert not np.allclose(c.encode_texts(texts), a.encode_texts(texts), atol=1e-3)


def test_trimmed_text_tower_equals_open_clip_encode_text() -> None:
    m = tiny_model()
    texts = ["", "a dog", "a very long caption " * 30, "ünïcödé 漢字 caption"]
    tokens = m.tokenizer(texts)
    with torch.inference_mode():
        full = torch.nn.functional.normalize(m.model.encode_text(tokens), dim=-1).numpy()
        trimmed = torch.nn.functional.normalize(encode_text_trimmed(m.model, tokens[:3]), dim=-1).numpy()
    assert np.allclose(m.encode_tokens(tokens), full, atol=1e-5)
    assert np.allclose(trimmed, full[:3], atol=1e-5)  # a batch without the longest caption is cut shorter
