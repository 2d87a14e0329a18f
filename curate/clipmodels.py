"""Loading open_clip models for embedding: a pretrained tag, a local checkpoint, or a custom config.

A model is `{name, arch, pretrained, model_config_file}`. `pretrained` is an open_clip tag (e.g.
`openai`: fetched from the network on first use, then cached), a local checkpoint path, or null (random
init, seeded so every worker builds the same weights: for tests and CPU demos). `model_config_file`
registers a custom architecture; `curate-tiny-vit64` (a 64 px ViT) ships with curate. A model with
`from_pipeline` (a filtering network another pipeline trains) loads once curate.upstream has resolved
its checkpoint into `pretrained`; before that it is refused, never silently a random init.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shlex
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from curate.config import EmbedModelConfig
from curate.errors import CurateError

BUILTIN_CONFIGS = Path(__file__).parent / "model_configs"
RANDOM_INIT_SEED = 0


@cache
def _register_configs(extra: tuple[str, ...] = ()) -> None:
    import open_clip

    open_clip.add_model_config(BUILTIN_CONFIGS)
    for path in extra:
        open_clip.add_model_config(Path(path))


def register(spec: EmbedModelConfig) -> None:
    """Make `spec.arch` known to open_clip (built-in configs plus the spec's own config file)."""
    _register_configs((spec.model_config_file,) if spec.model_config_file else ())


def is_checkpoint_path(pretrained: str | None) -> bool:
    return bool(pretrained) and (
        os.sep in pretrained or Path(pretrained).suffix in (".pt", ".bin", ".safetensors")
    )


def _online(host: str = "huggingface.co", port: int = 443, timeout: float = 3.0) -> bool:
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        return False
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _cached_tag(arch: str, tag: str) -> bool:
    """Whether the weights for an open_clip tag are already in a local cache (no network needed)."""
    import open_clip
    from huggingface_hub import try_to_load_from_cache

    cfg = open_clip.get_pretrained_cfg(arch, tag)
    if cfg.get("hf_hub"):
        repo_id = "/".join(cfg["hf_hub"].strip("/").split("/")[:2])
        for filename in ("open_clip_model.safetensors", "open_clip_pytorch_model.bin"):
            if isinstance(try_to_load_from_cache(repo_id, filename), str):
                return True
    url = cfg.get("url", "")
    if url:
        cache_dir = Path(os.path.expanduser("~/.cache/clip"))
        return (cache_dir / os.path.basename(url)).exists()
    return False


def model_problems(spec: EmbedModelConfig, where: str) -> list[str]:
    """Why this model cannot be loaded here, checked before any work (no weights are read)."""
    import open_clip

    up = spec.from_pipeline
    if up is not None and not spec.pretrained:  # curate.upstream.resolve sets pretrained once trained
        command = shlex.join(["curate", "run", up.config, *up.overrides])
        return [
            f"{where}.from_pipeline: the model of strategy '{up.strategy}' of {up.config} is not trained "
            f"yet; `{command}` trains it (`curate run` and `curate sweep` of this pipeline do that first)"
        ]
    problems = []
    if spec.model_config_file and not Path(spec.model_config_file).is_file():
        problems.append(f"{where}.model_config_file: file not found (got '{spec.model_config_file}')")
        return problems
    register(spec)
    if spec.arch not in open_clip.list_models():
        problems.append(
            f"{where}.arch: unknown open_clip architecture (got '{spec.arch}'); see open_clip.list_models(), "
            f"or give model_config_file; curate ships: "
            + ", ".join(p.stem for p in sorted(BUILTIN_CONFIGS.glob("*.json")))
        )
        return problems
    tag = spec.pretrained
    if not tag:
        return problems
    if is_checkpoint_path(tag):
        if not Path(tag).is_file():
            problems.append(f"{where}.pretrained: checkpoint file not found (got '{tag}')")
        return problems
    tags = open_clip.list_pretrained_tags_by_model(spec.arch)
    if tag not in tags:
        problems.append(
            f"{where}.pretrained: '{tag}' is not an open_clip tag for {spec.arch} "
            f"(tags: {', '.join(tags) or 'none'}) and not a checkpoint file"
        )
    elif not _cached_tag(spec.arch, tag) and not _online():
        problems.append(
            f"{where}.pretrained: the '{tag}' weights of {spec.arch} must be downloaded from the network, "
            "which is unreachable here; download them on a connected machine and give the checkpoint "
            "file's path as pretrained"
        )
    return problems


@dataclass
class ClipModel:
    """One loaded model with what embedding needs: its towers, tokenizer and preprocessing settings."""

    name: str
    arch: str
    model: Any
    preprocess: Any  # open_clip's own PIL -> tensor transform (the reference for the GPU path)
    tokenizer: Any
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    interpolation: str
    resize_mode: str
    device: str
    dtype: Any

    @property
    def embed_dim(self) -> int:
        """Width of the joint embedding space (from one caption: works for every open_clip model)."""
        if not hasattr(self, "_embed_dim"):
            self._embed_dim = int(self.encode_texts([""]).shape[-1])
        return self._embed_dim

    def encode_images(self, pixels: Any) -> np.ndarray:
        """(B,3,S,S) normalised pixels -> L2-normalised float32 embeddings."""
        import torch

        with torch.inference_mode():
            x = self.model.encode_image(pixels.to(self.device, self.dtype))
            return torch.nn.functional.normalize(x.float(), dim=-1).cpu().numpy()

    def encode_tokens(self, tokens: Any) -> np.ndarray:
        """(B, 77) token ids -> L2-normalised float32 embeddings."""
        import torch

        with torch.inference_mode():
            x = encode_text_trimmed(self.model, tokens.to(self.device))
            return torch.nn.functional.normalize(x.float(), dim=-1).cpu().numpy()

    def encode_texts(self, texts: list[str]) -> np.ndarray:
        return self.encode_tokens(self.tokenizer(texts))

    def encode_pil(self, images: list[Any]) -> np.ndarray:
        """open_clip's reference path: preprocess(img) for each PIL image, then the image tower."""
        import torch

        return self.encode_images(torch.stack([self.preprocess(im) for im in images]))


def encode_text_trimmed(model: Any, tokens: Any) -> Any:
    """The text tower on tokens cut to the batch's longest caption instead of 77 positions.

    CLIP's text attention is causal and pools at the end-of-text token, so positions after the
    longest caption's last token cannot change any output: the same embeddings for a fraction of the
    work (alt-texts average ~20 tokens). Models without that structure use their own encode_text.
    Tokens may be on the host: they are cut there and copied without waiting for queued GPU work.
    """
    import torch

    device = next(model.parameters()).device
    causal = (
        getattr(model, "text_pool_type", None) == "argmax" and getattr(model, "attn_mask", None) is not None
    )
    if not causal or not hasattr(model, "token_embedding"):
        return model.encode_text(_to_device(tokens, device))
    n = int(tokens.argmax(dim=1).max()) + 1  # the last end-of-text position in the batch
    tokens = _to_device(tokens[:, :n], device)
    cast = model.transformer.get_cast_dtype()
    x = model.token_embedding(tokens).to(cast) + model.positional_embedding[:n].to(cast)
    x = model.transformer(x, attn_mask=model.attn_mask[:n, :n])
    x = model.ln_final(x)
    x = x[torch.arange(x.shape[0], device=x.device), tokens.argmax(dim=-1)]
    proj = model.text_projection
    if proj is not None:
        x = proj(x) if isinstance(proj, torch.nn.Linear) else x @ proj
    return x


def _to_device(tensor: Any, device: Any) -> Any:
    """A host tensor on a CUDA device through pinned memory, without a sync (a plain copy from pageable
    memory waits for every kernel queued on the stream)."""
    if tensor.device == device or device.type != "cuda":
        return tensor.to(device)
    return tensor.contiguous().pin_memory().to(device, non_blocking=True)


def pick_device(requested: str) -> str:
    import torch

    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return requested


@contextlib.contextmanager
def _quiet_random_init() -> Iterator[None]:
    """open_clip warns on the root logger about random init; for pretrained=null that is the intent."""

    class _Drop(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            return "initialized randomly" not in record.getMessage()

    root = logging.getLogger()
    drop = _Drop()
    root.addFilter(drop)
    try:
        yield
    finally:
        root.removeFilter(drop)


def load_clip(spec: EmbedModelConfig, device: str = "cpu", bf16: bool | None = None) -> ClipModel:
    """Load a model for inference; bf16 weights on GPU (default), fp32 on CPU."""
    import open_clip
    import torch

    from curate.patchconv import swap_patch_conv

    if spec.from_pipeline is not None and not spec.pretrained:
        raise CurateError(f"embed model {spec.name}: {spec.from_pipeline.config} has not trained it yet")
    register(spec)
    bf16 = device.startswith("cuda") if bf16 is None else bf16
    if not spec.pretrained:
        torch.manual_seed(RANDOM_INIT_SEED)  # every worker must build the same random model
    with _quiet_random_init():
        model, _, preprocess = open_clip.create_model_and_transforms(
            spec.arch, pretrained=spec.pretrained or None, device=device
        )
    model.eval()
    dtype = torch.bfloat16 if bf16 else torch.float32
    model.to(dtype)
    if device.startswith("cuda"):
        swap_patch_conv(model)  # cuDNN's kernel for it is slow; the same sums as one matmul
    cfg = model.visual.preprocess_cfg if hasattr(model.visual, "preprocess_cfg") else {}
    size = model.visual.image_size
    size = size[0] if isinstance(size, tuple | list) else size
    return ClipModel(
        name=spec.name,
        arch=spec.arch,
        model=model,
        preprocess=preprocess,
        tokenizer=open_clip.get_tokenizer(spec.arch),
        image_size=int(size),
        mean=tuple(cfg.get("mean", open_clip.OPENAI_DATASET_MEAN)),
        std=tuple(cfg.get("std", open_clip.OPENAI_DATASET_STD)),
        interpolation=cfg.get("interpolation", "bicubic"),
        resize_mode=cfg.get("resize_mode", "shortest"),
        device=device,
        dtype=dtype,
    )
