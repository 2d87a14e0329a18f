"""The model side of evaluation: loading a checkpoint as DataComp does, encoders, zero-shot classifiers.

Loading follows reference §5.3: `torch.manual_seed(0)`, `open_clip.create_model_and_transforms(arch,
pretrained=checkpoint)`, eval mode, fp32 weights, the model's own val transform and tokenizer. Text
embeddings for classifiers and retrieval run under autocast on CUDA (DataComp's amp=True; a no-op on
CPU, as `torch.cuda.amp.autocast` is there); image embeddings for classification run without it.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from curate.errors import CurateError

T = TypeVar("T")
log = logging.getLogger(__name__)


@dataclass
class EvalModel:
    arch: str
    checkpoint: str
    model: Any
    preprocess: Any
    tokenizer: Any
    device: str

    def autocast(self, amp: bool) -> contextlib.AbstractContextManager[Any]:
        import torch

        if amp and self.device.startswith("cuda"):
            return torch.autocast("cuda", dtype=torch.float16)
        return contextlib.nullcontext()

    def encode_texts(self, texts: Sequence[str], amp: bool = True) -> Any:
        """L2-normalised float32 text embeddings (a torch tensor on the model's device)."""
        import torch

        from curate.clipmodels import encode_text_trimmed

        tokens = self.tokenizer(list(texts)).to(self.device)
        with torch.no_grad(), self.autocast(amp):
            x = encode_text_trimmed(self.model, tokens)  # same embeddings as encode_text, less padding
        return torch.nn.functional.normalize(x.float(), dim=-1)

    def encode_pixels(self, pixels: Any, amp: bool = False) -> Any:
        """(B,3,S,S) preprocessed images -> L2-normalised float32 embeddings (torch, on device)."""
        import torch

        with torch.no_grad(), self.autocast(amp):
            x = self.model.encode_image(pixels.to(self.device))
        return torch.nn.functional.normalize(x.float(), dim=-1)

    def encode_images(self, images: Sequence[Any], amp: bool = False) -> np.ndarray:
        import torch

        return self.encode_pixels(torch.stack([self.preprocess(im) for im in images]), amp).cpu().numpy()


def register_curate_configs() -> None:
    """curate's own architectures (curate-tiny-vit64, ...) must be known to open_clip before loading."""
    from curate.clipmodels import _register_configs

    _register_configs()


def resolve_device(requested: str = "auto") -> str:
    import torch

    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise CurateError(f"device '{requested}': CUDA is not available here (use --device cpu or auto)")
    return requested


def model_problems(arch: str, checkpoint: str | Path, where: str = "") -> list[str]:
    """Why this model cannot be evaluated (checked before any work; no weights read)."""
    import open_clip

    register_curate_configs()
    prefix = f"{where}: " if where else ""
    problems = []
    if arch not in open_clip.list_models():
        problems.append(
            f"{prefix}unknown open_clip architecture '{arch}' (curate ships curate-tiny-vit64; "
            "see open_clip.list_models())"
        )
    if not Path(checkpoint).is_file():
        problems.append(f"{prefix}checkpoint file not found: {checkpoint}")
    return problems


def load_eval_model(arch: str, checkpoint: str | Path, device: str = "auto") -> EvalModel:
    """DataComp's create_model: seed 0, open_clip's loader with the checkpoint as `pretrained`, fp32."""
    import open_clip

    problems = model_problems(arch, checkpoint)
    if problems:
        raise CurateError(f"cannot load model {arch} from {checkpoint}", problems)
    device = resolve_device(device)
    try:
        model, preprocess = _create(arch, str(checkpoint), weights_only=True)
    except Exception as exc:
        if "weights_only" not in str(exc):
            raise _unloadable(arch, checkpoint, exc) from None
        # an open_clip training checkpoint holding more than tensors (the user's own file)
        log.warning("%s: not loadable with weights_only=True; loading it as a full pickle", checkpoint)
        try:
            model, preprocess = _create(arch, str(checkpoint), weights_only=False)
        except Exception as exc2:
            raise _unloadable(arch, checkpoint, exc2) from None
    model.eval()
    model = model.to(device)
    return EvalModel(arch, str(checkpoint), model, preprocess, open_clip.get_tokenizer(arch), device)


def _create(arch: str, checkpoint: str, weights_only: bool) -> tuple[Any, Any]:
    import open_clip
    import torch

    torch.manual_seed(0)
    model, _, preprocess = open_clip.create_model_and_transforms(
        arch, pretrained=checkpoint, weights_only=weights_only
    )
    return model, preprocess


def _unloadable(arch: str, checkpoint: str | Path, exc: Exception) -> CurateError:
    detail = str(exc).splitlines()[0] if str(exc) else ""
    return CurateError(f"cannot load checkpoint {checkpoint} as {arch}: {type(exc).__name__}: {detail}")


def zero_shot_classifier(
    model: EvalModel, classnames: Sequence[str], templates: Sequence[str], chunk: int = 512
) -> Any:
    """(dim, C) float32 weights: per class, every template formatted with the class name, encoded
    (autocast on CUDA), each embedding normalised, averaged, and the mean normalised again. Texts of
    several classes share a forward pass (each text's embedding does not depend on its batch)."""
    import torch

    if not templates:
        raise CurateError("zero-shot classifier: no templates")
    texts = [t.format(c=name) for name in classnames for t in templates]
    emb = torch.cat([model.encode_texts(part, amp=True) for part in batched(texts, chunk)])
    mean = emb.view(len(classnames), len(templates), -1).mean(dim=1)
    return (mean / mean.norm(dim=-1, keepdim=True)).T.contiguous()


def batched(items: Iterable[T], size: int) -> Iterator[list[T]]:
    batch: list[T] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def preprocess_threads() -> int:
    return max(1, min(8, (os.cpu_count() or 2) - 1))


def encode_image_batches(
    model: EvalModel, items: Iterable[T], image_of: Callable[[T], Any], batch_size: int, amp: bool = False
) -> Iterator[tuple[list[T], np.ndarray]]:
    """(items, their L2-normalised image embeddings) per batch; preprocessing runs in a few threads
    (PIL releases the GIL) while the model works on the previous batch."""
    import torch

    with ThreadPoolExecutor(preprocess_threads()) as workers, ThreadPoolExecutor(1) as ahead:

        def prep(batch: list[T]) -> Any:
            return torch.stack(list(workers.map(lambda it: model.preprocess(image_of(it)), batch)))

        pending = None
        for batch in batched(items, batch_size):
            future = ahead.submit(prep, batch)
            if pending is not None:
                yield pending[0], model.encode_pixels(pending[1].result(), amp).cpu().numpy()
            pending = (batch, future)
        if pending is not None:
            yield pending[0], model.encode_pixels(pending[1].result(), amp).cpu().numpy()


def logits_from(features: np.ndarray, classifier: Any) -> np.ndarray:
    """100 · image_embedding @ W, in float32 (DataComp's run_classification, amp off)."""
    import torch

    w = classifier.float()
    x = torch.from_numpy(np.ascontiguousarray(features)).to(w.device)
    return (100.0 * x @ w).cpu().numpy()
