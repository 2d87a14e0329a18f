"""Small evaluation sets in every DataComp format, written from real local images: TEST DATA, not benchmarks.

`generate_evalsets` writes, under one directory, a set for each of DataComp's 40 task keys plus our own
`openclipart` task, in exactly the layouts the loaders (curate/eval/datasets.py) and DataComp read:

* wds folders (`wds_<task>_test/`: test/nshards.txt, test/<i>.tar, classnames.txt,
  zeroshot_classification_templates.txt), with the per-sample `npy` metadata vectors of the WILDS and
  fairness sets in the field orders of curate/eval/tasks.py, and `objective:`-prefixed class names and
  templates for FairFace/UTKFace;
* Hugging Face `datasets` caches under `hf_cache/` for Flickr, MSCOCO and WinoGAViL, written by a real
  `datasets` builder in the layout `load_dataset("nlphuji/<name>", cache_dir=...)` finds offline.

What the images and labels are:
* `mnist`: scikit-learn's bundled handwritten digits (8x8, upscaled to 28x28) with their real labels.
* `openclipart`: every image of the openclipart holdout (curate/pools/openclipart.py `is_held_out`, the
  images the openclipart pool leaves out), labelled with its top-level category folder. A real task.
* every other task: held-out clip art, lightly varied, with random labels, the task's real class count,
  class names that are real where they are short (CIFAR-10, STL-10, ...) and `<task> class <i>`
  placeholders otherwise. Scores on these sets mean nothing; they exist so that a full 40-task
  evaluation and DataComp's 38-task aggregation run end to end offline.
* retrieval/WinoGAViL: held-out clip art with captions (and cues) from its own SVG titles and categories.

Output is byte-for-byte deterministic for a seed (tar members carry fixed times and owners).
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import importlib.util
import io
import json
import os
import shutil
import tarfile
import tempfile
import time
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import PIL.Image
import PIL.ImageOps

from curate.errors import CurateError
from curate.eval.datasets import HF_CACHE, HF_NAMESPACE, hf_cache_dir, hf_name, task_folder
from curate.eval.tasks import (
    FAIRFACE,
    FAIRNESS_OBJECTIVES,
    FAIRNESS_RACE_INDEX_OF_BINARY_0,
    FAIRNESS_TOXIC_CRIME_MIN,
    FMOW_REGIONS,
    META_FIELDS,
    RETRIEVAL,
    WILDS,
    WINOGAVIL,
    Task,
    select_tasks,
)
from curate.pools.openclipart import (
    SvgMeta,
    holdout_key,
    is_held_out,
    openclipart_uid,
    png_size,
    scan_pngs,
    svg_metadata,
)

IMAGE_SIDE = 64  # stand-in images; every model resizes anyway
OPENCLIPART_SIDE = 224  # the openclipart task keeps more detail
MAX_SOURCE_SIDE = 4096  # larger PNGs (19 in Debian's set, up to 20990x29700) are not decoded
N_SOURCES = 32  # distinct clip-art images behind the stand-in sets
SHARD_SIZE = 500
GENERATED_TASKS = ("openclipart",)  # extra tasks this module can write (besides DataComp's 40)
OPENCLIPART_TEMPLATES = ("a clip art of {c}.", "an illustration of {c}.", "a drawing of {c}.")
TEMPLATES = ("a photo of a {c}.", "a blurry photo of a {c}.")
REAL_CLASSNAMES = {
    "cifar10": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"],
    "stl10": ["airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck"],
    "mnist": [str(d) for d in range(10)],
    "vtab/svhn": [str(d) for d in range(10)],
    "vtab/clevr_count_all": ["three", "four", "five", "six", "seven", "eight", "nine", "ten"],
    "vtab/eurosat": [
        "annual crop land",
        "forest",
        "brushland or shrubland",
        "highway or road",
        "industrial buildings",
        "pasture land",
        "permanent crop land",
        "residential buildings",
        "river",
        "lake or sea",
    ],
    "vtab/pcam": ["lymph node", "lymph node containing metastatic tumor tissue"],
    "wilds/camelyon17": ["lymph node", "lymph node containing metastatic tumor tissue"],
    "renderedsst2": ["negative", "positive"],
    "vtab/kitti_closest_vehicle_distance": [
        "a photo i took of a car on my left or right side.",
        "a photo i took with a car nearby.",
        "a photo i took with a car in the distance.",
        "a photo i took with no car.",
    ],
}
MNIST_TEMPLATES = ('a photo of the number: "{c}".',)
# FairFace/UTKFace: classes per objective (race 7 or 5 groups; toxic needs the crime indices >= 18).
FAIRNESS_CLASSES = {"race": 7, "gender": 2, "age": 9, "toxic": FAIRNESS_TOXIC_CRIME_MIN + 3}
UTKFACE_RACES = 5
WINOGAVIL_SIZES = (5, 6, 10, 12)  # candidate counts of DataComp's jaccard_score_{5,6,10,12}
WINOGAVIL_POOL = 48  # clip arts the WinoGAViL instances draw their candidates from


# ---------------------------------------------------------------- writing wds folders


@dataclass
class WdsRecord:
    key: str
    members: dict[str, bytes]  # extension -> bytes, written in this order


def ustar_header(name: str, size: int) -> bytes:
    """A ustar header for a regular file with mode 0644, owner 0/0 and mtime 0: what tarfile writes for
    such a TarInfo (tested byte for byte), built directly because tarfile's pure-Python header code is the
    slowest part of writing 20k members."""
    encoded = name.encode()
    if len(encoded) > 100:
        raise ValueError(f"tar member name longer than 100 bytes: {name}")
    head = b"".join(
        [
            encoded.ljust(100, b"\0"),
            b"0000644\0",
            b"0000000\0",
            b"0000000\0",
            b"%011o\0" % size,
            b"00000000000\0",
            b" " * 8,  # checksum placeholder
            b"0",
            bytes(100),
            b"ustar\x0000",
            bytes(32 + 32 + 8 + 8 + 155 + 12),  # uname, gname, devmajor/minor (empty for files), prefix
        ]
    )
    checksum = b"%06o\0 " % sum(head)
    return head[:148] + checksum + head[156:]


def _tar_bytes(records: list[WdsRecord]) -> bytes:
    """One ustar tar with fixed member times and owners, so equal input gives equal bytes."""
    parts = []
    for rec in records:
        for ext, data in rec.members.items():
            parts += [
                ustar_header(f"{rec.key}.{ext}", len(data)),
                data,
                bytes(-len(data) % tarfile.BLOCKSIZE),
            ]
    body = b"".join(parts)
    end = bytes(2 * tarfile.BLOCKSIZE)  # two zero blocks, then padding to tarfile's record size
    return body + end + bytes(-(len(body) + len(end)) % tarfile.RECORDSIZE)


def write_wds_set(
    folder: Path,
    records: list[WdsRecord],
    classnames: list[str],
    templates: list[str],
    *,
    dataset_type: str | None = None,
    shard_size: int = SHARD_SIZE,
) -> Path:
    """Write one `wds_<task>_test` folder (CLIP_benchmark's layout) atomically: built beside it, then
    swapped in, so a reader never sees half a set. `dataset_type` None writes no dataset_type.txt."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".tmp", dir=folder.parent))
    try:
        (tmp / "test").mkdir()
        shards = [records[i : i + shard_size] for i in range(0, len(records), shard_size)] or [[]]
        for i, shard in enumerate(shards):
            (tmp / "test" / f"{i}.tar").write_bytes(_tar_bytes(shard))
        (tmp / "test" / "nshards.txt").write_text(f"{len(shards)}\n")
        (tmp / "classnames.txt").write_text("".join(f"{c}\n" for c in classnames), encoding="utf-8")
        (tmp / "zeroshot_classification_templates.txt").write_text(
            "".join(f"{t}\n" for t in templates), encoding="utf-8"
        )
        if dataset_type is not None:
            (tmp / "dataset_type.txt").write_text(f"{dataset_type}\n")
        old = folder.with_name(folder.name + ".old")
        if folder.exists():
            shutil.rmtree(old, ignore_errors=True)
            os.replace(folder, old)
        os.replace(tmp, folder)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder


def npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.ascontiguousarray(array), allow_pickle=False)
    return buf.getvalue()


def encode_image(image: PIL.Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    if fmt == "jpg":
        image.save(buf, "JPEG", quality=90)
    elif fmt == "webp":
        image.save(buf, "WEBP", quality=80, method=0)
    else:
        image.save(buf, "PNG")
    return buf.getvalue()


# ---------------------------------------------------------------- image sources


@dataclass
class ClipArt:
    key: str  # the holdout key: PNG path relative to png/, symlinks resolved
    category: str
    svg_path: str

    @functools.cached_property
    def svg(self) -> SvgMeta:
        return svg_metadata(self.svg_path)

    @property
    def title(self) -> str:
        return self.svg.title


class Sources:
    """The openclipart holdout (decoded lazily, once) and scikit-learn's digits."""

    def __init__(self, openclipart_root: str) -> None:
        self.root = os.path.abspath(os.path.expanduser(openclipart_root))
        self.png_root = os.path.join(self.root, "png")
        self._held: list[ClipArt] | None = None
        self._images: dict[str, PIL.Image.Image | None] = {}
        self._encoded: dict[tuple, bytes] = {}
        self._stand_ins: list[PIL.Image.Image] | None = None
        self.skipped: Counter[str] = Counter()

    def held_out(self) -> list[ClipArt]:
        """Each held-out file once (symlinked paths folded onto their target), in key order."""
        if self._held is None:
            if not os.path.isdir(self.png_root):
                raise CurateError(
                    f"openclipart root '{self.root}' has no png/ folder: the generated eval sets are made "
                    "from its held-out images. Install it with `apt-get install openclipart-png "
                    "openclipart-svg` (Debian/Ubuntu) or pass --openclipart-root"
                )
            keys = sorted(
                {
                    holdout_key(self.png_root, r)
                    for r in scan_pngs(self.png_root)
                    if is_held_out(self.png_root, r)
                }
            )
            self._held = [
                ClipArt(
                    key,
                    key.split("/")[0] if "/" in key else "",
                    os.path.join(self.root, "svg", *key[: -len(".png")].split("/")) + ".svg",
                )
                for key in keys
            ]
        return self._held

    def categories(self) -> list[str]:
        """Top-level category folders of the openclipart root, sorted (the `openclipart` task's classes)."""
        return sorted(e.name for e in os.scandir(self.png_root) if e.is_dir())

    def image(self, art: ClipArt, side: int) -> PIL.Image.Image | None:
        """The clip art on white (as img2dataset mats transparent images), longest side <= side (at most
        OPENCLIPART_SIDE); None (and a counted reason) when it cannot be used. Decoded once."""
        if art.key not in self._images:
            self._images[art.key] = self._load(art, OPENCLIPART_SIDE)
        im = self._images[art.key]
        if im is None or max(im.size) <= side:
            return im
        small = im.copy()
        small.thumbnail((side, side), PIL.Image.Resampling.LANCZOS)
        return small

    def _load(self, art: ClipArt, side: int) -> PIL.Image.Image | None:
        path = os.path.join(self.png_root, *art.key.split("/"))
        w, h = png_size(path)
        if w is None or h is None:
            self.skipped[f"{art.key}: not a readable PNG"] += 1
            return None
        if max(w, h) > MAX_SOURCE_SIDE:
            self.skipped[f"{art.key}: {w}x{h} is larger than {MAX_SOURCE_SIDE} px, not decoded"] += 1
            return None
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                with PIL.Image.open(path) as im:
                    rgba = im.convert("RGBA")
        except Exception:  # PIL raises many types for broken files
            self.skipped[f"{art.key}: does not decode"] += 1
            return None
        rgba.thumbnail((side, side), PIL.Image.Resampling.LANCZOS)
        white = PIL.Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        white.alpha_composite(rgba)
        return white.convert("RGB")

    def stand_ins(self) -> list[PIL.Image.Image]:
        """N_SOURCES square images for the stand-in sets: the first usable held-out files in key order."""
        out = []
        for art in self.held_out():
            im = self.image(art, IMAGE_SIDE * 2)
            if im is not None:
                out.append(PIL.ImageOps.pad(im, (IMAGE_SIDE, IMAGE_SIDE), color=(255, 255, 255)))
            if len(out) == N_SOURCES:
                break
        if not out:
            raise CurateError(f"openclipart root '{self.root}': no held-out image could be decoded")
        return out

    def variant(self, index: int, variant: int, fmt: str) -> bytes:
        """Encoded stand-in `index` under one of 8 variants (rotations x mirror), cached: equal inputs are
        encoded once, which keeps 11k-sample generation to seconds."""
        key = (index, variant, fmt)
        if key not in self._encoded:
            if self._stand_ins is None:
                self._stand_ins = self.stand_ins()
            im = self._stand_ins[index % len(self._stand_ins)].rotate(90 * (variant % 4))
            if variant >= 4:
                im = PIL.ImageOps.mirror(im)
            self._encoded[key] = encode_image(im, fmt)
        return self._encoded[key]


def digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled 1,797 handwritten 8x8 digits (0-255) and labels: what load_digits returns,
    read from the same digits.csv.gz without importing scikit-learn (which takes seconds)."""
    spec = importlib.util.find_spec("sklearn")
    csv = Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "digits.csv.gz" if spec else None
    if csv is None or not csv.is_file():
        raise CurateError(
            "scikit-learn's bundled digits are needed for the mnist set: pip install scikit-learn"
        )
    with gzip.open(csv, "rt") as f:
        data = np.loadtxt(f, delimiter=",")
    small = (data[:, :-1].reshape(-1, 8, 8) * (255.0 / 16.0)).round().astype(np.uint8)
    return small, data[:, -1].astype(np.int64)


def upscale_digit(image: np.ndarray) -> PIL.Image.Image:
    """An 8x8 digit as a 28x28 grayscale image (MNIST's size)."""
    return PIL.Image.fromarray(image).resize((28, 28), PIL.Image.Resampling.BILINEAR)


# ---------------------------------------------------------------- one set per task kind


def _image_format(task: Task) -> str:
    """Spread webp/jpg/png over the tasks so the loaders meet every image member type."""
    digest = hashlib.sha256(task.key.encode()).digest()[0]
    return ("webp", "jpg", "png")[digest % 3]


def _classnames(task: Task) -> list[str]:
    if task.key in REAL_CLASSNAMES:
        return list(REAL_CLASSNAMES[task.key])
    short = task.key.removeprefix("fairness/").split("/")[-1]
    return [f"{short} class {i}" for i in range(task.num_classes or 2)]


def _metadata(task: Task, label: int, rng: np.random.Generator) -> np.ndarray:
    """A metadata vector in the field order of curate.eval.tasks.META_FIELDS, plausible ranges."""
    fields = META_FIELDS[task.key]
    if task.kind == FAIRFACE:
        races = UTKFACE_RACES if task.key.endswith("utkface") else FAIRNESS_CLASSES["race"]
        race = int(rng.integers(races))
        values = {
            "age": int(rng.integers(FAIRNESS_CLASSES["age"])),
            "gender": int(rng.integers(2)),
            "race": race,
            "race_binary": int(race != FAIRNESS_RACE_INDEX_OF_BINARY_0),
        }
    else:
        values = {
            "y": label,
            "location": int(rng.integers(8)),
            "sequence": int(rng.integers(1000)),
            "year": int(rng.integers(4)) if task.kind == WILDS and task.key.endswith("fmow") else 2013,
            "month": int(rng.integers(1, 13)),
            "day": int(rng.integers(1, 29)),
            "hour": int(rng.integers(24)),
            "minute": int(rng.integers(60)),
            "second": int(rng.integers(60)),
            "hospital": 2,
            "slide": int(rng.integers(20, 30)),
            "region": int(rng.integers(len(FMOW_REGIONS) if task.key.endswith("fmow") else 4)),
            "income_ds": int(rng.integers(4)),
            "income_meta": int(rng.integers(30, 10000)),
            "country": int(rng.integers(20)),
        }
        if task.key.endswith("iwildcam"):
            values["year"] = int(rng.integers(2013, 2017))
    return np.array([values[f] for f in fields], dtype=np.int64)


def _stand_in_set(task: Task, folder: Path, src: Sources, per_class: int, seed: int, shard_size: int) -> dict:
    rng = np.random.default_rng([seed, int.from_bytes(hashlib.sha256(task.key.encode()).digest()[:4], "big")])
    fmt = _image_format(task)
    if task.kind == FAIRFACE:
        races = UTKFACE_RACES if task.key.endswith("utkface") else FAIRNESS_CLASSES["race"]
        counts = {**FAIRNESS_CLASSES, "race": races}
        classnames = [f"{obj}:{obj} group {i}" for obj in FAIRNESS_OBJECTIVES for i in range(counts[obj])]
        templates = [f"{obj}:{t}" for obj in FAIRNESS_OBJECTIVES for t in TEMPLATES]
        n_classes = races  # samples per race group
    else:
        classnames, templates = _classnames(task), list(TEMPLATES)
        n_classes = len(classnames)
    labels = np.repeat(np.arange(n_classes), per_class)
    rng.shuffle(labels)
    records = []
    for i, label in enumerate(labels):
        members = {fmt: src.variant(int(rng.integers(N_SOURCES)), int(rng.integers(8)), fmt)}
        if task.kind != FAIRFACE:  # DataComp reads only image + npy for FairFace/UTKFace
            members["cls"] = f"{int(label)}".encode()
        if task.key in META_FIELDS:
            members["npy"] = npy_bytes(_metadata(task, int(label), rng))
        records.append(WdsRecord(f"s{i:07d}", members))
    write_wds_set(folder, records, classnames, templates, shard_size=shard_size)
    return {"samples": len(records), "classes": len(classnames), "format": fmt}


def _mnist_set(folder: Path, per_class: int, seed: int, shard_size: int) -> dict:
    images, targets = digits()
    rng = np.random.default_rng([seed, 19])
    chosen = np.concatenate(
        [
            rng.choice(
                np.flatnonzero(targets == d), size=min(per_class, int((targets == d).sum())), replace=False
            )
            for d in range(10)
        ]
    )
    rng.shuffle(chosen)
    records = [
        WdsRecord(
            f"s{i:07d}",
            {"png": encode_image(upscale_digit(images[j]), "png"), "cls": f"{targets[j]}".encode()},
        )
        for i, j in enumerate(chosen)
    ]
    write_wds_set(folder, records, REAL_CLASSNAMES["mnist"], list(MNIST_TEMPLATES), shard_size=shard_size)
    return {"samples": len(records), "classes": 10, "format": "png"}


def _openclipart_set(folder: Path, src: Sources, shard_size: int) -> dict:
    """Every held-out clip art (each file once), its category as the label; the key is the pool uid the
    file's resolved path would have had, and a json member names the path."""
    categories = src.categories()
    classnames = [c.replace("_", " ") for c in categories]
    records = []
    for art in src.held_out():
        image = src.image(art, OPENCLIPART_SIDE)
        if image is None or art.category not in categories:
            continue
        meta = json.dumps({"relpath": art.key, "title": art.title}, sort_keys=True).encode()
        records.append(
            WdsRecord(
                openclipart_uid(art.key),
                {
                    "jpg": encode_image(image, "jpg"),
                    "cls": f"{categories.index(art.category)}".encode(),
                    "json": meta,
                },
            )
        )
    write_wds_set(folder, records, classnames, list(OPENCLIPART_TEMPLATES), shard_size=shard_size)
    return {"samples": len(records), "classes": len(classnames), "format": "jpg"}


# ---------------------------------------------------------------- Hugging Face datasets caches


def _write_hf_cache(out_dir: Path, task: Task, rows: list[dict], features) -> Path:
    """Write `rows` as the cached `nlphuji/<name>` test split with a real `datasets` builder, in the layout
    load_dataset(..., cache_dir=<out_dir>/hf_cache) falls back to when the hub is offline:
    hf_cache/nlphuji___<name>/default/0.0.0/<hash>/{dataset_info.json, <name>-test.arrow}."""
    import datasets

    name = hf_name(task.key)
    digest = hashlib.sha256(
        json.dumps([{k: v for k, v in r.items() if "image" not in k} for r in rows], sort_keys=True).encode()
    ).hexdigest()[:16]

    class Builder(datasets.GeneratorBasedBuilder):
        VERSION = datasets.Version("0.0.0")

        def _info(self) -> datasets.DatasetInfo:
            return datasets.DatasetInfo(
                description="curate evalsets generate: small TEST data in this dataset's format, "
                "not the real benchmark",
                features=features,
            )

        def _split_generators(self, dl_manager):  # noqa: ANN001, ANN202 - datasets' signature
            return [datasets.SplitGenerator(name=datasets.Split.TEST, gen_kwargs={})]

        def _generate_examples(self):  # noqa: ANN202
            yield from enumerate(rows)

    target = hf_cache_dir(out_dir, task.key)
    shutil.rmtree(target, ignore_errors=True)  # one cached version: the newest is what load_dataset picks
    level = datasets.utils.logging.get_verbosity()
    datasets.utils.logging.set_verbosity_error()
    progress = datasets.utils.logging.is_progress_bar_enabled()
    datasets.utils.logging.disable_progress_bar()
    try:
        builder = Builder(
            cache_dir=str(out_dir / HF_CACHE),
            dataset_name=name,
            repo_id=f"{HF_NAMESPACE}/{name}",
            config_name="default",
            hash=digest,
        )
        builder.download_and_prepare()
    finally:
        datasets.utils.logging.set_verbosity(level)
        if progress:
            datasets.utils.logging.enable_progress_bar()
    return target


def _captions(art: ClipArt) -> list[str]:
    """Five alt-text-like captions from the clip art's own SVG metadata (like Flickr/COCO's five)."""
    category = art.category.replace("_", " ")
    pieces = [art.svg.title, art.svg.description, ", ".join(art.svg.keywords[:6])]
    captions = [p for p in dict.fromkeys(p.strip() for p in pieces) if p]
    captions += [f"a clip art of {category}: {art.title}".strip(" :"), f"{category} clip art"]
    return captions[:5]


def _usable(src: Sources, arts: list[ClipArt], want: int) -> list[tuple[ClipArt, bytes]]:
    """Up to `want` of `arts` (in order) that decode, each with a square JPEG; only these are decoded."""
    out = []
    for art in arts:
        im = src.image(art, IMAGE_SIDE * 2)
        if im is not None:
            square = PIL.ImageOps.pad(im, (IMAGE_SIDE, IMAGE_SIDE), color=(255, 255, 255))
            out.append((art, encode_image(square, "jpg")))
        if len(out) == want:
            break
    return out


def _shuffled(items: list, rng: np.random.Generator) -> list:
    return [items[i] for i in rng.permutation(len(items))]


def _retrieval_cache(out_dir: Path, task: Task, src: Sources, per_class: int, seed: int) -> dict:
    import datasets

    rng = np.random.default_rng([seed, len(task.key)])
    usable = _usable(src, _shuffled(src.held_out(), rng), max(2, 5 * per_class))
    rows = [
        {"image": {"bytes": jpg, "path": None}, "caption": _captions(art), "filename": art.key}
        for art, jpg in usable
    ]
    features = datasets.Features(
        {
            "image": datasets.Image(),
            "caption": datasets.List(datasets.Value("string")),
            "filename": datasets.Value("string"),
        }
    )
    _write_hf_cache(out_dir, task, rows, features)
    return {"samples": len(rows), "classes": None, "format": "hf"}


def _winogavil_cache(out_dir: Path, task: Task, src: Sources, per_class: int, seed: int) -> dict:
    """Instances of 5, 6, 10 and 12 candidates (DataComp's score groups): the cue is a category, the
    candidates are clip-art titles, the associations those of the cue's category."""
    import datasets

    rng = np.random.default_rng([seed, 7])
    titled = [a for a in _shuffled(src.held_out(), rng) if a.title]
    usable = _usable(src, titled, WINOGAVIL_POOL)
    by_cat: dict[str, list[int]] = {}
    for i, (art, _) in enumerate(usable):
        by_cat.setdefault(art.category, []).append(i)
    cues = sorted(c for c, idx in by_cat.items() if len(idx) >= 2)
    if not cues:
        raise CurateError("openclipart holdout: too few titled images for WinoGAViL instances")
    rows = []
    for n_cand in WINOGAVIL_SIZES:
        for _ in range(per_class):
            cue = cues[int(rng.integers(len(cues)))]
            n_assoc = min(len(by_cat[cue]), 2 + int(rng.integers(2)), n_cand - 1)
            gold = rng.choice(by_cat[cue], size=n_assoc, replace=False).tolist()
            others = [i for i in range(len(usable)) if usable[i][0].category != cue]
            chosen = gold + rng.choice(others, size=n_cand - n_assoc, replace=False).tolist()
            rng.shuffle(chosen)
            titles = [f"{usable[i][0].title} #{i}" for i in chosen]  # unique candidate names
            rows.append(
                {
                    "cue": cue.replace("_", " "),
                    "candidates": titles,
                    "candidate_images": [{"bytes": usable[i][1], "path": None} for i in chosen],
                    "associations": [t for t, i in zip(titles, chosen, strict=True) if i in gold],
                    "num_associations": n_assoc,
                    "num_candidates": n_cand,
                    "ID": len(rows),
                }
            )
    features = datasets.Features(
        {
            "cue": datasets.Value("string"),
            "candidates": datasets.List(datasets.Value("string")),
            "candidate_images": datasets.List(datasets.Image()),
            "associations": datasets.List(datasets.Value("string")),
            "num_associations": datasets.Value("int64"),
            "num_candidates": datasets.Value("int64"),
            "ID": datasets.Value("int64"),
        }
    )
    _write_hf_cache(out_dir, task, rows, features)
    return {"samples": len(rows), "classes": None, "format": "hf"}


# ---------------------------------------------------------------- entry point


def generatable_tasks(tasks: list[str] | str) -> list[Task]:
    """The tasks named (`all` = DataComp's 40 plus the extra tasks this module writes), checked."""
    names = (
        [s.strip() for s in tasks.split(",")] if isinstance(tasks, str) else [str(t).strip() for t in tasks]
    )
    if "all" in names:
        names = [*names, *GENERATED_TASKS]
    selected = select_tasks(names, where="tasks")
    unknown = [t.key for t in selected if t.extra and t.key not in GENERATED_TASKS]
    if unknown:
        raise CurateError(
            f"tasks: no generator for extra task {', '.join(unknown)}; "
            f"generated: DataComp's 40 tasks and {', '.join(GENERATED_TASKS)}"
        )
    return selected


def generate_evalsets(
    out_dir: Path,
    tasks: list[str] | str = "all",
    *,
    per_class: int = 2,
    seed: int = 0,
    openclipart_root: str = "/usr/share/openclipart",
    shard_size: int = SHARD_SIZE,
) -> dict:
    """Write small TEST eval sets (see the module docstring) under out_dir; returns, per task key, where it
    went and how many samples/classes it has, plus the sources' skipped images by reason."""
    if per_class < 1:
        raise CurateError(f"per_class: must be at least 1, got {per_class}")
    if shard_size < 1:
        raise CurateError(f"shard_size: must be at least 1, got {shard_size}")
    selected = generatable_tasks(tasks)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    src = Sources(openclipart_root)
    start = time.perf_counter()
    result: dict = {"tasks": {}, "skipped_sources": {}}
    for task in selected:
        if task.kind == RETRIEVAL:
            info = _retrieval_cache(out_dir, task, src, per_class, seed)
            path = hf_cache_dir(out_dir, task.key)
        elif task.kind == WINOGAVIL:
            info = _winogavil_cache(out_dir, task, src, per_class, seed)
            path = hf_cache_dir(out_dir, task.key)
        elif task.key == "mnist":
            path = task_folder(out_dir, task.key)
            info = _mnist_set(path, per_class, seed, shard_size)
        elif task.key == "openclipart":
            path = task_folder(out_dir, task.key)
            info = _openclipart_set(path, src, shard_size)
        else:
            path = task_folder(out_dir, task.key)
            info = _stand_in_set(task, path, src, per_class, seed, shard_size)
        result["tasks"][task.key] = {"path": str(path), **info}
    result["skipped_sources"] = dict(sorted(src.skipped.items()))
    result["seconds"] = round(time.perf_counter() - start, 2)
    return result
