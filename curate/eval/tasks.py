"""The evaluation task registry: DataComp's 40 tasks (tasklist.yml), their aggregates, and extra tasks.

DataComp's task list and its score groups are facts of the reference (§5.1, §6.1): keys, display
names, sizes, main metrics and tags are copied here so that `eval_results.jsonl` lines and the
aggregate scores are interchangeable with DataComp's. Extra tasks (e.g. `openclipart`) are our own:
they are evaluated the same way but never enter a DataComp aggregate, and `all` does not include them.

The metadata layouts of the WILDS and fairness sets (the per-sample `npy` vector) are DataComp's
(`eval_utils/wilds_eval.py`, `fairness_eval.py`); the generator of small eval sets writes them in the
field orders defined here, and the evaluators read them in the same orders.

Note on `voc2007`: DataComp's set is single-label classification (one cropped object per sample,
hence 14,976 samples from 4,952 images; `cls` labels, main metric acc1). A folder whose
`dataset_type.txt` says `multilabel` is still accepted and scored with CLIP_benchmark's multilabel
metric (mean average precision), but then it has no acc1 and its main metric is null.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from curate.errors import CurateError

# ------------------------------------------------------------------ evaluator kinds

CLASSIFICATION = "classification"  # zero-shot classification over a wds folder
RETRIEVAL = "retrieval"  # image<->text retrieval (Flickr, MSCOCO)
WINOGAVIL = "winogavil"
WILDS = "wilds"  # classification + WILDS metrics from the per-sample metadata
DOLLAR_STREET = "dollar_street"
GEODE = "geode"
FAIRFACE = "fairface"  # FairFace and UTKFace: per-objective classifiers, unscored
KINDS = (CLASSIFICATION, RETRIEVAL, WINOGAVIL, WILDS, DOLLAR_STREET, GEODE, FAIRFACE)

# ------------------------------------------------------------------ metadata layouts (npy vectors)

WILDS_META_FIELDS: dict[str, tuple[str, ...]] = {
    "wilds/iwildcam": ("location", "sequence", "year", "month", "day", "hour", "minute", "second", "y"),
    "wilds/camelyon17": ("hospital", "slide", "y"),
    "wilds/fmow": ("region", "year", "y"),
}
DOLLAR_STREET_META_FIELDS = ("income_ds", "income_meta", "region")
GEODE_META_FIELDS = ("region", "country")
FAIRNESS_META_FIELDS = ("age", "gender", "race", "race_binary")  # FairFace and UTKFace
META_FIELDS: dict[str, tuple[str, ...]] = {
    **WILDS_META_FIELDS,
    "fairness/dollar_street": DOLLAR_STREET_META_FIELDS,
    "fairness/geode": GEODE_META_FIELDS,
    "fairness/fairface": FAIRNESS_META_FIELDS,
    "fairness/utkface": FAIRNESS_META_FIELDS,
}
# FMoW's region codes (WILDS' metadata map); the "Other" region is left out of the worst region.
FMOW_REGIONS = ("Asia", "Europe", "Africa", "Americas", "Oceania", "Other")

# FairFace/UTKFace: classnames.txt and the templates are `objective:text` lines; one classifier per
# objective, in this order (the model's prediction vector has one entry per objective).
FAIRNESS_OBJECTIVES = ("race", "gender", "age", "toxic")
FAIRNESS_RACE_INDEX_OF_BINARY_0 = 1  # race prediction == this class <-> race_binary 0 ("not class 1" is 1)
FAIRNESS_TOXIC_NONHUMAN = (14, 18)  # toxic class indices [14, 18): non-human labels
FAIRNESS_TOXIC_CRIME_MIN = 18  # toxic class indices >= 18: crime-related labels


# ------------------------------------------------------------------ tasks


@dataclass(frozen=True)
class Task:
    """One evaluation task: what tasklist.yml says of it, plus how we evaluate it and where its data is."""

    key: str
    name: str  # DataComp's display name ("dataset" in eval_results.jsonl)
    kind: str  # which evaluator (KINDS)
    size: int | None  # test examples (None: whatever the data holds, for extra tasks)
    num_classes: int | None
    main_metric: str | None  # None: the task has no main metric and is unscored (FairFace, UTKFace)
    tags: tuple[str, ...] = ()
    source: str = ""  # where DataComp reads it: HF dataset repo
    random_score: float | None = None
    time: int | None = None  # tasklist's runtime estimate (seconds, presumably)
    dataset_type: str = "classification"  # classification | multilabel | retrieval | winogavil
    extra: bool = False  # not a DataComp task: reported separately, in no DataComp aggregate

    @property
    def folder(self) -> str | None:
        """The data folder under --data-dir: `wds_<key, '/'->'-', without 'fairness/'>_test` (§5.2);
        None for the Hugging Face `datasets` tasks (retrieval, WinoGAViL), whose layout the loaders own."""
        if self.kind in (RETRIEVAL, WINOGAVIL):
            return None
        return f"wds_{self.key.removeprefix('fairness/').replace('/', '-')}_test"

    @property
    def scored(self) -> bool:
        return self.main_metric is not None


def _wds(
    key: str,
    name: str,
    size: int,
    classes: int,
    random: float | None,
    time: int,
    tags: tuple[str, ...] = (),
    main: str = "acc1",
    kind: str = CLASSIFICATION,
) -> Task:
    folder = key.removeprefix("fairness/").replace("/", "-")
    return Task(
        key=key,
        name=name,
        kind=kind,
        size=size,
        num_classes=classes,
        main_metric=main,
        tags=tags,
        source=f"djghosh/wds_{folder}_test",
        random_score=random,
        time=time,
    )


NAT, SPEC, STRUCT = ("vtab_natural",), ("vtab_specialized",), ("vtab_structured",)
MPCR = "mean_per_class_recall"

# tasklist.yml, in its order (the order tasks run and lines are appended).
DATACOMP_TASKS: tuple[Task, ...] = (
    _wds("vtab/caltech101", "Caltech-101", 6085, 102, 0.009804, 29, NAT, MPCR),
    _wds("cifar10", "CIFAR-10", 10000, 10, 0.1, 18),
    _wds("vtab/cifar100", "CIFAR-100", 10000, 100, 0.01, 18, NAT),
    _wds("vtab/clevr_count_all", "CLEVR Counts", 15000, 8, 0.125061, 64, STRUCT),
    _wds("vtab/clevr_closest_object_distance", "CLEVR Distance", 15000, 6, 0.19052, 64, STRUCT),
    _wds("country211", "Country211", 21100, 211, 0.004739, 66),
    _wds("vtab/dtd", "Describable Textures", 1880, 47, 0.021277, 17, NAT),
    _wds("vtab/eurosat", "EuroSAT", 5400, 10, 0.101483, 12, SPEC),
    _wds("fgvc_aircraft", "FGVC Aircraft", 3333, 100, 0.01, 40, (), MPCR),
    _wds("food101", "Food-101", 25250, 101, 0.009901, 101),
    _wds("gtsrb", "GTSRB", 12630, 43, 0.037604, 20),
    _wds("imagenet1k", "ImageNet 1k", 50000, 1000, 0.001, 136),
    _wds("imagenet_sketch", "ImageNet Sketch", 50889, 1000, 0.001, 249),
    _wds("imagenetv2", "ImageNet v2", 10000, 1000, 0.001, 50),
    _wds("imagenet-a", "ImageNet-A", 7500, 200, 0.008056, 47),
    _wds("imagenet-o", "ImageNet-O", 2000, 200, 0.006047, 19),
    _wds("imagenet-r", "ImageNet-R", 30000, 200, 0.006163, 148),
    _wds("vtab/kitti_closest_vehicle_distance", "KITTI Vehicle Distance", 711, 4, 0.295289, 16, STRUCT),
    _wds("mnist", "MNIST", 10000, 10, 0.10035, 20),
    _wds("objectnet", "ObjectNet", 18574, 113, 0.009481, 317),
    _wds("vtab/flowers", "Oxford Flowers-102", 6149, 102, 0.009804, 51, NAT, MPCR),
    _wds("vtab/pets", "Oxford-IIIT Pet", 3669, 37, 0.027027, 34, NAT, MPCR),
    _wds("voc2007", "Pascal VOC 2007", 14976, 20, 0.154038, 41),
    _wds("vtab/pcam", "PatchCamelyon", 32768, 2, 0.5, 38, SPEC),
    _wds("renderedsst2", "Rendered SST2", 1821, 2, 0.500001, 10),
    _wds("vtab/resisc45", "RESISC45", 6300, 45, 0.022342, 28, SPEC),
    _wds("cars", "Stanford Cars", 8041, 196, 0.00516, 59),
    _wds("stl10", "STL-10", 8000, 10, 0.1, 20),
    _wds("sun397", "SUN397", 108754, 397, 0.004645, 923, NAT),
    _wds("vtab/svhn", "SVHN", 26032, 10, 0.117897, 39, NAT),
    Task(
        "retrieval/flickr_1k_test_image_text_retrieval",
        "Flickr",
        RETRIEVAL,
        1000,
        None,
        "mean_recall@1",
        ("retrieval",),
        "nlphuji/flickr_1k_test_image_text_retrieval",
        None,
        20,
        "retrieval",
    ),
    Task(
        "retrieval/mscoco_2014_5k_test_image_text_retrieval",
        "MSCOCO",
        RETRIEVAL,
        5000,
        None,
        "mean_recall@1",
        ("retrieval",),
        "nlphuji/mscoco_2014_5k_test_image_text_retrieval",
        None,
        23,
        "retrieval",
    ),
    Task(
        "misc/winogavil",
        "WinoGAViL",
        WINOGAVIL,
        3563,
        None,
        "jaccard_score_10-12",
        ("retrieval",),
        "nlphuji/winogavil",
        0.205,
        1096,
        "winogavil",
    ),
    _wds("wilds/iwildcam", "iWildCam", 42791, 182, 0.143056, 251, ("wilds",), "F1-macro_all", WILDS),
    _wds("wilds/camelyon17", "Camelyon17", 85054, 2, 0.5, 212, ("wilds",), "acc1", WILDS),
    _wds("wilds/fmow", "FMoW", 22108, 62, 0.027193, 88, ("wilds",), "acc_worst_region", WILDS),
    _wds(
        "fairness/dollar_street",
        "Dollar Street",
        3503,
        58,
        None,
        404,
        ("fairness",),
        "acc_top5_wg",
        DOLLAR_STREET,
    ),
    _wds("fairness/geode", "GeoDE", 12488, 40, None, 354, ("fairness",), "acc_wg", GEODE),
    Task(
        "fairness/fairface",
        "FairFace",
        FAIRFACE,
        10954,
        None,
        None,
        ("fairness",),
        "djghosh/wds_fairface_test",
        time=16,
    ),
    Task(
        "fairness/utkface",
        "UTKFace",
        FAIRFACE,
        23703,
        None,
        None,
        ("fairness",),
        "djghosh/wds_utkface_test",
        time=32,
    ),
)

# Extra (non-DataComp) tasks, evaluated after DataComp's, reported under their own key.
EXTRA_TASKS: dict[str, Task] = {
    "openclipart": Task(
        key="openclipart",
        name="openclipart",
        kind=CLASSIFICATION,
        size=None,
        num_classes=None,
        main_metric="acc1",
        tags=("extra",),
        source="held-out openclipart images; classes are their category folders (curate evalsets generate)",
        extra=True,
    ),
}


def register_extra_task(task: Task) -> None:
    """Add an extra task (a wds classification folder `wds_<key>_test` of your own, for instance)."""
    if task.key in DATACOMP_BY_KEY:
        raise CurateError(f"extra task '{task.key}': the key is a DataComp task")
    if task.kind not in KINDS:
        raise CurateError(f"extra task '{task.key}': unknown kind '{task.kind}' (kinds: {', '.join(KINDS)})")
    EXTRA_TASKS[task.key] = Task(**{**task.__dict__, "extra": True})


DATACOMP_BY_KEY: dict[str, Task] = {t.key: t for t in DATACOMP_TASKS}
assert len(DATACOMP_TASKS) == 40 and sum(t.scored for t in DATACOMP_TASKS) == 38


# ------------------------------------------------------------------ aggregates (§6.1)

IMAGENET_SHIFTS = ("imagenet_sketch", "imagenetv2", "imagenet-a", "imagenet-o", "imagenet-r", "objectnet")
VTAB = tuple(
    t.key for t in DATACOMP_TASKS if set(t.tags) & {"vtab_natural", "vtab_specialized", "vtab_structured"}
)
RETRIEVAL_GROUP = (
    "retrieval/flickr_1k_test_image_text_retrieval",
    "retrieval/mscoco_2014_5k_test_image_text_retrieval",
    "misc/winogavil",
)
SCORED = tuple(t.key for t in DATACOMP_TASKS if t.scored)


@dataclass(frozen=True)
class Aggregate:
    name: str
    keys: tuple[str, ...] = field(default_factory=tuple)


AGGREGATES: tuple[Aggregate, ...] = (
    Aggregate("ImageNet", ("imagenet1k",)),
    Aggregate("ImageNet dist. shifts", IMAGENET_SHIFTS),
    Aggregate("VTAB", VTAB),
    Aggregate("Retrieval", RETRIEVAL_GROUP),
    Aggregate("Average", SCORED),
)
assert len(VTAB) == 13 and len(SCORED) == 38


# ------------------------------------------------------------------ lookup and selection


def all_tasks() -> list[Task]:
    """DataComp's tasks in tasklist order, then the extra tasks."""
    return [*DATACOMP_TASKS, *EXTRA_TASKS.values()]


def get_task(key: str) -> Task:
    task = DATACOMP_BY_KEY.get(key) or EXTRA_TASKS.get(key)
    if task is None:
        raise CurateError(f"unknown evaluation task '{key}'", [valid_keys_line()])
    return task


def valid_keys_line() -> str:
    extra = ", ".join(EXTRA_TASKS) or "none"
    return (
        "valid: all (DataComp's 40 tasks), " + ", ".join(t.key for t in DATACOMP_TASKS) + f"; extra: {extra}"
    )


def select_tasks(spec: str | Iterable[str], where: str = "tasks") -> list[Task]:
    """Tasks named by `all`, a comma-separated string or a list of keys (and `all`), in run order:
    DataComp's tasklist order first, then extras. Unknown keys are all reported at once."""
    names = [s.strip() for s in spec.split(",")] if isinstance(spec, str) else [str(s).strip() for s in spec]
    names = [n for n in names if n]
    if not names:
        raise CurateError(f"{where}: no task named", [valid_keys_line()])
    unknown = [n for n in names if n != "all" and n not in DATACOMP_BY_KEY and n not in EXTRA_TASKS]
    if unknown:
        raise CurateError(
            f"{where}: unknown task key{'s' if len(unknown) > 1 else ''} "
            + ", ".join(f"'{u}'" for u in unknown),
            [valid_keys_line()],
        )
    wanted = set(names)
    if "all" in wanted:
        wanted |= set(DATACOMP_BY_KEY)
    return [t for t in all_tasks() if t.key in wanted]
