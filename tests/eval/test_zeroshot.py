"""Model loading as DataComp does it, the template-ensemble classifier and the logits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from curate.errors import CurateError
from curate.eval.zeroshot import load_eval_model, logits_from, model_problems, zero_shot_classifier
from tests.eval.eval_fixtures import ARCH, tiny_checkpoint


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory):
    return load_eval_model(ARCH, tiny_checkpoint(tmp_path_factory.getbasetemp()), "cpu")


def test_checkpoint_weights_are_loaded(model, tmp_path_factory: pytest.TempPathFactory) -> None:
    saved = torch.load(tiny_checkpoint(tmp_path_factory.getbasetemp()), weights_only=True)["state_dict"]
    for name, value in model.model.state_dict().items():
        assert torch.equal(value, saved[name]), name
    assert next(model.model.parameters()).dtype == torch.float32 and not model.model.training


def test_classifier_is_the_normalised_mean_of_normalised_template_embeddings(model) -> None:
    classes, templates = ["cat", "dog", "red car"], ["a photo of a {c}.", "{c}", "art of the {c}"]
    w = zero_shot_classifier(model, classes, templates)
    assert w.shape == (128, 3)
    for j, name in enumerate(classes):
        tokens = model.tokenizer([t.format(c=name) for t in templates])
        with torch.no_grad():
            emb = torch.nn.functional.normalize(model.model.encode_text(tokens), dim=-1)
        mean = emb.mean(dim=0)
        assert torch.allclose(w[:, j], mean / mean.norm(), atol=1e-5)
    feats = np.random.default_rng(0).normal(size=(4, 128)).astype(np.float32)
    assert np.allclose(logits_from(feats, w), 100 * feats @ w.numpy(), atol=1e-4)


def test_problems_before_loading(tmp_path: Path) -> None:
    problems = model_problems("no-such-arch", tmp_path / "missing.pt")
    assert any("no-such-arch" in p for p in problems) and any("missing.pt" in p for p in problems)
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CurateError, match="bad.pt"):
        load_eval_model(ARCH, bad, "cpu")
