"""Readers for DataComp's evaluation data as it lies on disk (reference §5.2), streaming and skip-counting.

Two layouts, both exactly as DataComp's `download_evalsets.py` leaves them under a data directory:

* `wds_<task>_test/` folders (CLIP_benchmark's `build_wds_dataset` layout): `test/nshards.txt`,
  `test/0.tar ... test/{n-1}.tar`, `classnames.txt`, `zeroshot_classification_templates.txt` and an
  optional `dataset_type.txt`. Samples are grouped by webdataset's own tar reader (the same key/extension
  split DataComp relies on); the image is the first of `webp, png, jpg, jpeg, 0.webp`, the label `cls`
  (`npy` for a multilabel set), and WILDS/fairness samples also carry an `npy` metadata vector.
* Hugging Face `datasets` caches in `<data_dir>/hf_cache` for Flickr, MSCOCO and WinoGAViL, read with the
  very call DataComp makes (`datasets.load_dataset("nlphuji/<name>", split="test", cache_dir=...)`), with
  the hub switched off so that a local cache is all it ever reads.

A missing or malformed set is a CurateError naming the file, raised before any sample is read. A bad
sample inside a set (an image that does not decode, a missing label) is skipped and counted by reason in
`skipped`: a run never crashes on one, and never drops one silently.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import tarfile
import warnings
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import PIL.Image

from curate.errors import CurateError
from curate.eval.tasks import FAIRFACE, META_FIELDS, RETRIEVAL, WINOGAVIL, get_task

IMAGE_EXTS = ("webp", "png", "jpg", "jpeg", "0.webp")  # CLIP_benchmark's to_tuple order
DATASET_TYPES = ("classification", "multilabel")
HF_NAMESPACE = "nlphuji"
HF_CACHE = "hf_cache"
FETCH_HINT = (
    "fetch it with `curate evalsets fetch {data_dir} --tasks {key}` on a machine with network access "
    "(or DataComp's download_evalsets.py), or write small test sets with "
    "`curate evalsets generate {data_dir}`"
)
_KEY_EXT = re.compile(r"^((?:.*/|)[^.]+)[.]([^/]*)$")  # webdataset's base_plus_ext


@dataclass
class WdsSample:
    key: str
    image: PIL.Image.Image  # RGB
    label: int | np.ndarray  # class index; a 0/1 vector (the `npy` member) for a multilabel set;
    # -1 for FairFace/UTKFace samples without `cls` (their target is the metadata)
    meta: np.ndarray | None  # the per-sample `npy` metadata vector of WILDS/fairness sets, else None


@dataclass
class WdsTask:
    key: str
    root: Path
    classnames: list[str]  # as in classnames.txt (fairness sets keep their `objective:` prefixes)
    templates: list[str]  # as in zeroshot_classification_templates.txt, `{c}` placeholders
    dataset_type: str  # "classification" | "multilabel"
    size: int  # samples with an image member in the tars (counted from the tar headers)
    shards: list[Path] = field(default_factory=list)
    meta_fields: tuple[str, ...] | None = None  # the npy vector's fields, when the task has one
    kind: str = ""  # the registry's evaluator kind (curate.eval.tasks)
    skipped: Counter[str] = field(default_factory=Counter)  # reason -> count, for the last samples() pass

    def samples(self) -> Iterator[WdsSample]:
        """Every readable sample in tar order, decoded; bad ones are counted in `skipped` (reset here)."""
        self.skipped = Counter()
        for shard in self.shards:
            for raw in _tar_samples(shard, self.skipped):
                sample = self._decode(raw)
                if isinstance(sample, str):
                    self.skipped[sample] += 1
                else:
                    yield sample

    def _decode(self, raw: dict) -> WdsSample | str:
        """A WdsSample, or the reason the sample is skipped."""
        ext = next((e for e in IMAGE_EXTS if e in raw), None)
        if ext is None:
            return "no image member (webp/png/jpg/jpeg)"
        try:
            image = decode_image(raw[ext])
        except Exception:  # PIL raises many types (incl. DecompressionBombError) for bad images
            return "image does not decode"
        meta = None
        if self.meta_fields is not None:
            if "npy" not in raw:
                return "no npy metadata member"
            try:
                meta = _load_npy(raw["npy"]).reshape(-1)
            except Exception:
                return "npy metadata does not load"
            if len(meta) != len(self.meta_fields):
                return f"npy metadata has {len(meta)} values, expected {len(self.meta_fields)}"
        if self.dataset_type == "multilabel":
            if "npy" not in raw:
                return "no npy label member (multilabel)"
            try:
                label: int | np.ndarray = _load_npy(raw["npy"]).reshape(-1)
            except Exception:
                return "npy label does not load"
            if len(label) != len(self.classnames):
                return f"npy label has {len(label)} values, expected {len(self.classnames)} (one per class)"
        elif "cls" in raw:
            try:
                label = int(raw["cls"])
            except ValueError:
                return "cls label is not an integer"
            if not 0 <= label < len(self.classnames) and self.kind != FAIRFACE:
                return f"cls label outside 0..{len(self.classnames) - 1}"
        elif self.kind == FAIRFACE:
            label = -1  # DataComp reads only the image and the metadata of FairFace/UTKFace
        else:
            return "no cls label member"
        return WdsSample(key=raw["__key__"], image=image, label=label, meta=meta)


@dataclass
class RetrievalItem:
    image: PIL.Image.Image
    captions: list[str]


@dataclass
class WinogavilItem:
    cue: str
    candidates: list[str]
    candidate_images: list[PIL.Image.Image]
    associations: list[str]


class LoadedItems(list):
    """A list of items that also says which rows were skipped, by reason."""

    def __init__(self, items: list, skipped: Counter[str]) -> None:
        super().__init__(items)
        self.skipped = skipped


# ---------------------------------------------------------------- decoding


def decode_image(data: bytes) -> PIL.Image.Image:
    """PIL RGB image from encoded bytes (as webdataset's "pil" decoder, then open_clip's RGB conversion)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # palette/transparency notices
        with PIL.Image.open(io.BytesIO(data)) as im:
            im.load()
            return im.convert("RGB")


def _load_npy(data: bytes) -> np.ndarray:
    return np.lib.format.read_array(io.BytesIO(data), allow_pickle=False)


def _tar_samples(shard: Path, skipped: Counter[str]) -> Iterator[dict]:
    """Samples of one tar through webdataset's own reader (same grouping as DataComp's pipeline). A second
    member with one name is dropped and counted; a tar that breaks off mid-way (it was checked whole at
    load, so it changed since) ends its shard with a counted reason instead of ending the run."""
    from webdataset.tariterators import group_by_keys, tar_file_expander

    def duplicate(exc: Exception) -> bool:
        skipped["duplicate member name in a tar sample"] += 1
        return True

    try:
        with open(shard, "rb") as stream:
            source = [{"url": str(shard), "stream": stream}]
            yield from group_by_keys(tar_file_expander(source), handler=duplicate)
    except (OSError, tarfile.TarError) as exc:
        skipped[f"{shard.name}: tar unreadable from here on ({type(exc).__name__})"] += 1


# ---------------------------------------------------------------- paths and checks


def task_folder(data_dir: Path, key: str) -> Path:
    """<data_dir>/wds_<key>_test, named as DataComp names it: a leading `fairness/` dropped, '/' -> '-'."""
    return Path(data_dir) / f"wds_{key.removeprefix('fairness/').replace('/', '-')}_test"


def hf_name(key: str) -> str:
    """The nlphuji dataset name of a retrieval/misc task key (`retrieval/flickr_...` -> `flickr_...`)."""
    return key.split("/", 1)[1]


def hf_cache_dir(data_dir: Path, key: str) -> Path:
    """Where `datasets` keeps nlphuji/<name> under <data_dir>/hf_cache (its `namespace___name` folder)."""
    from datasets.naming import camelcase_to_snakecase

    return Path(data_dir) / HF_CACHE / f"{HF_NAMESPACE}___{camelcase_to_snakecase(hf_name(key))}"


def _is_hf(key: str) -> bool:
    return get_task(key).kind in (RETRIEVAL, WINOGAVIL)


def _hint(data_dir: Path, key: str) -> str:
    return FETCH_HINT.format(data_dir=data_dir, key=key)


def missing_reason(data_dir: Path, key: str) -> str | None:
    """None when the task's data is present and its layout readable; else one line saying what is wrong.
    Cheap: reads the small text files and tar headers' presence, never the images."""
    try:
        if _is_hf(key):
            _check_hf_cache(Path(data_dir), key)
        else:
            _wds_layout(Path(data_dir), key, count=False)
    except CurateError as exc:
        return exc.message
    return None


def _read_lines(path: Path, what: str) -> list[str]:
    """CLIP_benchmark's reading: splitlines, each stripped (so a blank line inside stays an entry)."""
    try:
        return [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    except FileNotFoundError:
        raise CurateError(f"{path}: missing ({what})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CurateError(f"{path}: cannot read it ({exc})") from None


def _wds_layout(data_dir: Path, key: str, count: bool) -> WdsTask:
    task = get_task(key)
    root = task_folder(data_dir, key)
    if not root.is_dir():
        raise CurateError(f"{root}: no evaluation data for '{key}'; {_hint(data_dir, key)}")
    nshards_file = root / "test" / "nshards.txt"
    text = _read_lines(nshards_file, "the number of test shards; mandatory in DataComp's layout")
    try:
        nshards = int("".join(text))
    except ValueError:
        nshards = 0
    if nshards < 1:
        raise CurateError(f"{nshards_file}: expected a positive whole number of shards, found {text[:1]}")
    shards = [root / "test" / f"{i}.tar" for i in range(nshards)]
    absent = [s for s in shards if not s.is_file()]
    if absent:
        more = f" and {len(absent) - 1} more" if len(absent) > 1 else ""
        raise CurateError(
            f"{absent[0]}{more}: missing ({nshards_file.name} says {nshards} shards); {_hint(data_dir, key)}"
        )
    classnames = _read_lines(root / "classnames.txt", "one class name per line")
    templates = _read_lines(
        root / "zeroshot_classification_templates.txt", "zero-shot templates, one per line with {c}"
    )
    if not classnames or not any(classnames):
        raise CurateError(f"{root / 'classnames.txt'}: no class names")
    if not any("{c}" in t for t in templates):
        raise CurateError(
            f"{root / 'zeroshot_classification_templates.txt'}: no template has the {{c}} placeholder"
        )
    type_file = root / "dataset_type.txt"
    dataset_type = "classification"  # CLIP_benchmark's default when the file is absent
    if type_file.is_file():
        dataset_type = " ".join(_read_lines(type_file, "the dataset type")).strip().lower()
    if dataset_type not in DATASET_TYPES:
        raise CurateError(
            f"{type_file}: dataset type '{dataset_type}' is not evaluated as zero-shot classification; "
            f"valid: {', '.join(DATASET_TYPES)} (no file means classification)"
        )
    size = sum(_count_samples(s) for s in shards) if count else 0
    return WdsTask(
        key=key,
        root=root,
        classnames=classnames,
        templates=templates,
        dataset_type=dataset_type,
        size=size,
        shards=shards,
        meta_fields=META_FIELDS.get(task.key),
        kind=task.kind,
    )


def _count_samples(shard: Path) -> int:
    """Samples with an image member, from the tar headers only (a seek per member, no image is read)."""
    keys = set()
    try:
        file_size = shard.stat().st_size
        with tarfile.open(shard, "r:") as tf:
            for member in tf:
                if member.offset_data + member.size > file_size:  # tarfile stops quietly at a cut
                    raise tarfile.ReadError(f"cut off inside member {member.name}")
                match = _KEY_EXT.match(member.name)
                if member.isreg() and match and match.group(2).lower() in IMAGE_EXTS:
                    keys.add(match.group(1))
    except (OSError, tarfile.TarError) as exc:
        raise CurateError(f"{shard}: not a readable tar ({exc}); fetch the set again") from None
    return len(keys)


def load_wds_task(data_dir: Path, key: str) -> WdsTask:
    """The task's wds folder, checked (text files, every shard present and readable), ready to stream."""
    task = get_task(key)
    if _is_hf(key):
        raise CurateError(f"'{key}' is a Hugging Face datasets task, not a wds folder (kind {task.kind})")
    return _wds_layout(Path(data_dir), key, count=True)


# ---------------------------------------------------------------- Hugging Face datasets caches


def _check_hf_cache(data_dir: Path, key: str) -> None:
    folder = hf_cache_dir(data_dir, key)
    infos = sorted(folder.glob("*/*/*/dataset_info.json"))
    if not infos:
        raise CurateError(
            f"{folder}: no cached copy of {HF_NAMESPACE}/{hf_name(key)} for '{key}'; {_hint(data_dir, key)}"
        )


@contextlib.contextmanager
def _hub_off() -> Iterator[None]:
    """Make `datasets` read only its local cache: HF_DATASETS_OFFLINE as `datasets` saw it at import, plus
    its environment variable, restored afterwards; and its cache-fallback warning silenced."""
    import datasets

    saved_flag = datasets.config.HF_HUB_OFFLINE
    saved_env = {k: os.environ.get(k) for k in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE")}
    saved_level = datasets.utils.logging.get_verbosity()
    datasets.config.HF_HUB_OFFLINE = True
    os.environ["HF_DATASETS_OFFLINE"] = "1"
    datasets.utils.logging.set_verbosity_error()
    try:
        yield
    finally:
        datasets.config.HF_HUB_OFFLINE = saved_flag
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        datasets.utils.logging.set_verbosity(saved_level)


def _load_hf(data_dir: Path, key: str):
    """DataComp's own call on the local cache: load_dataset("nlphuji/<name>", split="test", cache_dir=...)."""
    import datasets

    _check_hf_cache(data_dir, key)
    name = f"{HF_NAMESPACE}/{hf_name(key)}"
    cache_dir = str(Path(data_dir) / HF_CACHE)
    try:
        with _hub_off():
            return datasets.load_dataset(name, split="test", cache_dir=cache_dir)
    except Exception as exc:  # datasets raises many types (ValueError, FileNotFoundError, ConnectionError)
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CurateError(
            f"{hf_cache_dir(data_dir, key)}: the cached copy of {name} cannot be read ({detail}); "
            f"{_hint(data_dir, key)}"
        ) from None


def _require_columns(ds, key: str, data_dir: Path, columns: tuple[str, ...]) -> None:
    missing = [c for c in columns if c not in ds.column_names]
    if missing:
        raise CurateError(
            f"{hf_cache_dir(data_dir, key)}: {HF_NAMESPACE}/{hf_name(key)} has no column "
            f"{', '.join(missing)} (columns: {', '.join(ds.column_names)})"
        )


def _rows(ds) -> Iterator[dict]:
    """Rows with images left undecoded ({bytes, path} dicts), so one bad image is one counted skip."""
    for batch in ds.with_format("arrow").iter(batch_size=64):
        yield from batch.to_pylist()


def _hf_image(value: object) -> PIL.Image.Image:
    """An image cell of a `datasets` Image feature ({bytes, path}), a local path, or raw bytes, as RGB."""
    if isinstance(value, dict):
        if value.get("bytes"):
            return decode_image(value["bytes"])
        value = value.get("path")
    if isinstance(value, bytes | bytearray):
        return decode_image(bytes(value))
    if isinstance(value, str) and value and "://" not in value:
        return decode_image(Path(value).read_bytes())
    raise ValueError(f"not an image: {str(value)[:80]!r}")


def load_retrieval(data_dir: Path, key: str) -> LoadedItems:
    """Flickr/MSCOCO rows (image, caption list) from <data_dir>/hf_cache; bad rows counted in `.skipped`."""
    if get_task(key).kind != RETRIEVAL:
        raise CurateError(f"'{key}' is not a retrieval task")
    ds = _load_hf(Path(data_dir), key)
    _require_columns(ds, key, Path(data_dir), ("image", "caption"))
    items, skipped = [], Counter()
    for row in _rows(ds):
        captions = row["caption"]
        captions = [captions] if isinstance(captions, str) else [c for c in captions or [] if c]
        if not captions:
            skipped["no caption"] += 1
            continue
        try:
            image = _hf_image(row["image"])
        except Exception:
            skipped["image does not decode"] += 1
            continue
        items.append(RetrievalItem(image=image, captions=list(captions)))
    return LoadedItems(items, skipped)


def load_winogavil(data_dir: Path) -> LoadedItems:
    """WinoGAViL instances from <data_dir>/hf_cache (cue, candidates, their images, gold associations).

    DataComp passes `candidate_images` straight to the model's transform, so they must be images (a
    `datasets` Image sequence); an instance whose images are URLs or do not decode is a counted skip."""
    key = "misc/winogavil"
    ds = _load_hf(Path(data_dir), key)
    _require_columns(ds, key, Path(data_dir), ("cue", "candidates", "candidate_images", "associations"))
    items, skipped = [], Counter()
    for row in _rows(ds):
        candidates, associations = list(row["candidates"] or []), list(row["associations"] or [])
        if not row["cue"] or not candidates:
            skipped["no cue or no candidates"] += 1
            continue
        if len(row["candidate_images"] or []) != len(candidates):
            skipped["candidate_images and candidates differ in length"] += 1
            continue
        if not associations or not set(associations) <= set(candidates):
            skipped["associations empty or not among the candidates"] += 1
            continue
        try:
            images = [_hf_image(v) for v in row["candidate_images"]]
        except Exception:
            skipped["a candidate image does not decode"] += 1
            continue
        items.append(
            WinogavilItem(
                cue=row["cue"], candidates=candidates, candidate_images=images, associations=associations
            )
        )
    return LoadedItems(items, skipped)
