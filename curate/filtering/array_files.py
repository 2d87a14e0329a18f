"""Read the (n, d) float arrays DataComp ships as torch pickles, or the same as .npy / .npz.

DataComp's centroid files are numpy arrays saved with `torch.save(..., pickle_protocol=4)`, and its
ImageNet feature files are dicts `{"image_features": tensor}`. `torch.load(weights_only=True)` cannot
read protocol-4 pickles, and a full unpickle would run whatever code a file names, so .pt files go
through an unpickler that only builds numpy arrays, tensors, dicts and plain values.
"""

from __future__ import annotations

import pickle
import types
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from curate.errors import CurateError

_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"),  # pickles written by numpy 1.x (DataComp's)
    ("numpy._core.multiarray", "_reconstruct"),  # ... and by numpy 2.x
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("torch._utils", "_rebuild_tensor"),
    ("torch._utils", "_rebuild_tensor_v2"),
    ("collections", "OrderedDict"),
}


class _ArrayUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED or (module.startswith("numpy.dtypes") and name.endswith("DType")):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)  # numpy.core is an alias in numpy 2
                return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} (only arrays and tensors are read)")


_ARRAY_PICKLE = types.SimpleNamespace(Unpickler=_ArrayUnpickler, load=pickle.load, __name__="array_pickle")


def _load_pt(path: Path) -> Any:
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=False, pickle_module=_ARRAY_PICKLE)
    except Exception as exc:  # noqa: BLE001 - any failure here means: not a file we can read
        raise CurateError(
            f"{path}: cannot read it as a torch.save'd array or dict of arrays ({exc})"
        ) from None


def _as_array(obj: Any, path: Path, key: str | None) -> np.ndarray:
    if isinstance(obj, dict):
        if key is None or key not in obj:
            raise CurateError(f"{path}: no key '{key}' (has {', '.join(map(str, obj)) or 'nothing'})")
        obj = obj[key]
    if hasattr(obj, "detach"):  # a torch tensor
        obj = obj.detach().cpu().float().numpy()
    if not isinstance(obj, np.ndarray) or obj.ndim != 2 or not np.issubdtype(obj.dtype, np.number):
        raise CurateError(f"{path}: expected a 2-d numeric array (n, d), got {type(obj).__name__}")
    return np.ascontiguousarray(obj, dtype=np.float32)


def load_matrix(path: str | Path, key: str | None = None, npz_keys: tuple[str, ...] = ()) -> np.ndarray:
    """An (n, d) float32 array from .pt (array, tensor, or a dict holding one under `key`), .npy, or
    .npz (its only array, else the first of `key`, *npz_keys* it has)."""
    path = Path(path)
    if not path.is_file():
        raise CurateError(f"{path}: file not found")
    suffix = path.suffix.lower()
    if suffix in (".pt", ".pth"):
        return _as_array(_load_pt(path), path, key)
    try:
        if suffix == ".npy":
            return _as_array(np.load(path, allow_pickle=False), path, None)
        if suffix == ".npz":
            with np.load(path, allow_pickle=False) as data:
                names = list(data.files)
                wanted = names if len(names) == 1 else [k for k in (key, *npz_keys) if k in names]
                if not wanted:
                    raise CurateError(f"{path}: no array named {key or npz_keys} (has {', '.join(names)})")
                return _as_array(data[wanted[0]], path, None)
    except (OSError, ValueError) as exc:
        raise CurateError(f"{path}: cannot read it as {suffix} ({exc})") from None
    raise CurateError(f"{path}: unsupported file type '{suffix}' (valid: .pt, .pth, .npy, .npz)")
