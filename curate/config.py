"""Pydantic models of a pipeline YAML, loading with every problem reported at once, and overrides.

Unknown keys are errors everywhere (`extra="forbid"`): a typo must never be silently ignored.
Fields marked `exec_only` change how fast a stage runs, not what it writes, so they are left out of
the stage's config hash and changing them never invalidates finished shards.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError

from curate.errors import ConfigError

SCALES = ("small", "medium", "large", "xlarge")
EXEC_ONLY = {"exec_only": True}


KeyPath = tuple[str, ...]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _show(value: Any) -> str:
    """A value as an error message shows it: YAML's null/true/false, Python's repr, cut to one short line."""
    text = "null" if value is None else str(value).lower() if isinstance(value, bool) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _problems_error(problems: list[tuple[KeyPath, str]]) -> PydanticCustomError:
    """One pydantic error carrying several (key path below the field, message) problems, each listed."""
    summary = "; ".join(f"{'.'.join(path)}: {msg}" for path, msg in problems)
    return PydanticCustomError("curate_problems", "{summary}", {"summary": summary, "problems": problems})


# ---------------------------------------------------------------- pools


class PoolBase(Strict):
    max_samples: int | None = Field(
        None, ge=1, description="Use only the first N candidates (in part order); for trying a pipeline."
    )


class DatacompPoolConfig(PoolBase):
    """A directory (local or fsspec URL) of DataComp metadata parts: <stem>.parquet [+ <stem>.npz]."""

    source: Literal["datacomp"]
    metadata: str
    scale: Literal["small", "medium", "large", "xlarge", "datacomp_1b"] | None = None


class ParquetPoolConfig(PoolBase):
    """Bring-your-own parquet files (paths, directories or globs) with a url and a text column."""

    source: Literal["parquet"]
    paths: list[str] = Field(min_length=1)
    url_col: str = "url"
    text_col: str = "text"
    uid_col: str | None = None


class OpenclipartPoolConfig(PoolBase):
    """Debian's openclipart-png + openclipart-svg as an image-text pool (the demo pool)."""

    source: Literal["openclipart"]
    root: str = "/usr/share/openclipart"
    serve: Literal["http", "file"] = "http"
    caption: Literal["title", "title_description", "full"] = "full"
    holdout: bool = Field(
        True,
        description="Leave out the ~5% of images that form the `openclipart` evaluation task "
        "(curate evalsets generate), so the model is evaluated on images it never trained on.",
    )


PoolConfig = Annotated[
    DatacompPoolConfig | ParquetPoolConfig | OpenclipartPoolConfig, Field(discriminator="source")
]

# ---------------------------------------------------------------- download


class DownloadConfig(Strict):
    """img2dataset settings; defaults are DataComp's (reference §1.5)."""

    image_size: int = Field(512, ge=1)
    resize_mode: Literal["no", "border", "keep_ratio", "keep_ratio_largest", "center_crop"] = (
        "keep_ratio_largest"
    )
    resize_only_if_bigger: bool = True
    encode_format: Literal["jpg", "png", "webp"] = "jpg"
    encode_quality: int = Field(95, ge=1, le=100)
    number_sample_per_shard: int = Field(10_000, ge=1)
    oom_shard_count: int = Field(8, ge=1)
    retries: int = Field(2, ge=0)
    timeout: float = Field(10.0, gt=0, description="Seconds per connect/read (img2dataset's timeout).")
    url_deadline: float = Field(
        60.0,
        gt=0,
        description="Wall-clock seconds one URL may take in all, so a trickling server cannot hang a shard.",
    )
    compute_hash: Literal["sha256", "md5", "sha512"] | None = "sha256"
    extract_exif: bool = True
    blur_faces: bool = Field(True, description="Blur the pool's face_bboxes (when the pool has them).")
    disallowed_header_directives: list[str] = ["noai", "noimageai", "noindex", "noimageindex"]
    user_agent_token: str | None = None
    max_image_pixels: int = Field(
        100_000_000, ge=1, description="Images larger than this (read from the header) are skipped undecoded."
    )
    max_image_bytes: int = Field(
        100_000_000, ge=1, description="Responses larger than this are abandoned (counted as failed)."
    )
    processes: int = Field(16, ge=1, json_schema_extra=EXEC_ONLY)
    threads: int = Field(128, ge=1, json_schema_extra=EXEC_ONLY)
    subset: str | None = Field(
        None,
        description="A strategy (under strategies) run over the pool's own metadata before download; "
        "only the rows it keeps are downloaded.",
    )


# ---------------------------------------------------------------- embed


class FromPipeline(Strict):
    """A filtering network (DFN-style): the CLIP another pipeline trains, e.g. on a trusted subset of a
    pool that has no pretrained CLIP. Resolved by curate.upstream to that run's epoch_latest.pt."""

    config: str = Field(description="That pipeline's YAML (a relative path: relative to the file naming it).")
    strategy: str = Field(description="Whose model: <that run>/train/<strategy>/checkpoints/epoch_latest.pt.")
    overrides: list[str] = Field([], description="key=value overrides for that pipeline (e.g. its run_dir).")
    trained: str | None = Field(
        None,
        description="Set by curate: the hash of that training's settings, so that a network trained again "
        "with other settings redoes the embeddings. Leave unset.",
    )


class EmbedModelConfig(Strict):
    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    arch: str
    pretrained: str | None = Field(None, description="open_clip tag (needs the network) or checkpoint path.")
    model_config_file: str | None = Field(None, description="open_clip model config JSON for custom models.")
    from_pipeline: FromPipeline | None = Field(
        None, description="Weights trained by another pipeline (instead of pretrained); see curate.upstream."
    )


class EmbedConfig(Strict):
    models: list[EmbedModelConfig] = Field(min_length=1)
    batch_size: int = Field(256, ge=1, json_schema_extra=EXEC_ONLY)
    device: Literal["auto", "cpu", "cuda"] = Field("auto", json_schema_extra=EXEC_ONLY)
    gpu_decode: bool = Field(True, json_schema_extra=EXEC_ONLY)
    cpu_decode_workers: Annotated[int, Field(ge=0)] | Literal["auto"] = Field(
        "auto",
        json_schema_extra=EXEC_ONLY,
        description="Processes per GPU that decode, resize and crop on CPU cores (auto: a GPU's share of the "
        "host's cores but 4, when 8+; 0 with gpu_decode_workers 0: decode in the model's process).",
    )
    gpu_decode_workers: Annotated[int, Field(ge=0)] | Literal["auto"] = Field(
        "auto",
        json_schema_extra=EXEC_ONLY,
        description="Processes per GPU that decode with nvJPEG when the CPU workers fall behind (auto: 2).",
    )

    @field_validator("models")
    @classmethod
    def _unique_names(cls, models: list[EmbedModelConfig]) -> list[EmbedModelConfig]:
        first: dict[str, int] = {}
        problems = []
        for i, model in enumerate(models):
            if model.name in first:
                msg = f"model names must be unique; item {first[model.name]} has this name too"
                problems.append(((str(i), "name"), f"{msg} (got {_show(model.name)})"))
            first.setdefault(model.name, i)
        if problems:
            raise _problems_error(problems)
        return models


# ---------------------------------------------------------------- strategies


_EXPR_FORMS = "{all: [...]}, {any: [...]}, {not: ...}, a filter name or {filter_name: {params}}"


def _expr_problems(expr: Any, path: KeyPath) -> list[tuple[KeyPath, str]]:
    """Problems of a filter expression: all/any/not, a filter name, or {name: {params}}."""
    if isinstance(expr, str) and expr and expr not in ("all", "any", "not"):
        return []
    if not isinstance(expr, dict):
        return [(path, f"must be one of {_EXPR_FORMS} (got {_show(expr)})")]
    if len(expr) != 1:
        msg = "must hold exactly one key (all, any, not or a filter name); combine filters with {all: [...]}"
        return [(path, f"{msg} (got {_show(expr)})")]
    ((key, value),) = expr.items()
    here = (*path, str(key))
    if key in ("all", "any"):
        if not isinstance(value, list) or not value:
            return [(here, f"must be a non-empty list of filter expressions (got {_show(value)})")]
        return [p for i, sub in enumerate(value) for p in _expr_problems(sub, (*here, str(i)))]
    if key == "not":
        return _expr_problems(value, here)
    if value is not None and not isinstance(value, dict):
        return [(here, f"filter parameters must be a mapping (got {_show(value)})")]
    return []


def check_filter_expr(expr: Any, where: str = "") -> list[str]:
    """Structural check of a filter expression: 'key.path: problem' lines, none when it is well formed."""
    problems = _expr_problems(expr, (where,) if where else ())
    return [f"{'.'.join(path) or '(expression)'}: {msg}" for path, msg in problems]


# ---------------------------------------------------------------- later stages


class ReshardConfig(Strict):
    """Output shards of the reshard stage (DataComp's resharder defaults)."""

    shard_size: int = Field(10_000, ge=1, description="Samples per output shard (all full but the last).")
    max_shard_bytes: int = Field(
        3_000_000_000, ge=1, description="Cap per output shard, planned from the inputs' mean sample size."
    )


class TrainConfig(Strict):
    """DataComp's train.py options. A scale's recipe (model, batch, lr, warmup, samples seen, beta2) is
    fixed: there is no key for it. `tiny`, `tiny_long` and `smoke` are curate's unofficial scales."""

    scale: Literal["tiny", "tiny_long", "smoke", "debug", "small", "medium", "large", "xlarge"]
    num_checkpoints: int = Field(5, ge=1)
    precision: Literal["amp", "amp_bf16", "amp_bfloat16", "bf16", "fp16", "fp32"] | None = Field(
        None, description="null: amp on GPU (amp_bfloat16 for xlarge, as DataComp advises), fp32 on CPU."
    )
    seed: int = 0
    gpus: int = Field(
        1, ge=0, json_schema_extra=EXEC_ONLY, description="GPUs per strategy's training (0: CPU)."
    )
    workers: int = Field(4, ge=0, json_schema_extra=EXEC_ONLY)
    trainings_per_gpu: int = Field(
        1,
        ge=1,
        json_schema_extra=EXEC_ONLY,
        description="With gpus: 1, how many trainings share one GPU at once (small unofficial scales on "
        "a big GPU, e.g. a sweep of tiny_long); each takes 1/N of it.",
    )
    accum_freq: int = Field(1, ge=1)
    gpu_decode: bool = Field(
        True,
        description="On GPUs: random-resized-crop and normalise training images on the GPU instead of in "
        "open_clip's CPU loader workers (same augmentation; resampling rounding differs).",
    )
    image_decoder: Literal["workers", "nvjpeg"] = Field(
        "workers",
        json_schema_extra=EXEC_ONLY,
        description="With gpu_decode, who decodes the JPEGs: the loader workers (libjpeg-turbo, the pixels "
        "of open_clip's PIL decode) or nvJPEG in the training process (slower on an H200: bench/train.py).",
    )


class EvaluateConfig(Strict):
    tasks: Literal["all"] | list[str] = Field(
        "all", description="'all' (DataComp's 40 tasks) or a list of task keys; extra tasks are named."
    )
    data_dir: str | None = Field(None, description="Eval sets in DataComp's layout (wds_*_test/, hf_cache/).")
    generate: bool = Field(
        False,
        description="Build the offline test eval sets (curate.eval.generate) into <run>/evalsets/ and "
        "evaluate on them instead of data_dir.",
    )
    generate_per_class: int = Field(
        2,
        ge=1,
        description="Samples per class in generated sets (mnist: digits per class; the openclipart "
        "task always holds every held-out image).",
    )
    batch_size: int = Field(64, ge=1, json_schema_extra=EXEC_ONLY)
    device: Literal["auto", "cpu", "cuda"] = Field("auto", json_schema_extra=EXEC_ONLY)


class RayConfig(Strict):
    address: str | None = Field(
        None, description="null: start a local Ray; 'auto' or host:port: join a cluster."
    )
    num_cpus: int | None = Field(None, ge=1, description="CPUs for a local Ray (default: all).")
    num_gpus: int | None = Field(None, ge=0)


class PipelineConfig(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    run_dir: str | None = Field(
        None,
        description="Default: runs/<name> under the current directory. A URL (s3://bucket/runs/x) keeps "
        "the run on object storage; it is then worked on in work_dir (see curate.storage).",
    )
    work_dir: str | None = Field(
        None, description="With a run_dir URL: the local working copy the stages read and write."
    )
    pool: PoolConfig
    download: DownloadConfig = DownloadConfig()
    embed: EmbedConfig | None = None
    strategies: dict[str, Any] = {}
    reshard: ReshardConfig | None = Field(
        None, description="Reshard each strategy's subset (also done, with defaults, when train is set)."
    )
    train: TrainConfig | None = None
    evaluate: EvaluateConfig | None = None
    ray: RayConfig = RayConfig()

    @field_validator("strategies")
    @classmethod
    def _check_strategies(cls, strategies: dict[str, Any]) -> dict[str, Any]:
        problems = []
        for name, expr in strategies.items():
            if not re.fullmatch(r"[A-Za-z0-9_-]+", name):
                msg = "strategy names may hold only letters, digits, '_' and '-'"
                problems.append(((name,), f"{msg} (got {_show(name)})"))
            problems += _expr_problems(expr, (name,))
        if problems:
            raise _problems_error(problems)
        return strategies

    @model_validator(mode="after")
    def _check_download_subset(self) -> PipelineConfig:
        name = self.download.subset
        if name is not None and name not in self.strategies:
            have = ", ".join(self.strategies) or "none are defined"
            msg = f"must name a strategy under strategies (strategies: {have}) (got {_show(name)})"
            raise _problems_error([(("download", "subset"), msg)])
        return self

    @model_validator(mode="after")
    def _check_storage(self) -> PipelineConfig:
        problems = storage_problems(self.run_dir, self.work_dir)
        if problems:
            raise _problems_error(problems)
        return self

    def resolved_run_dir(self) -> Path:
        """Where the stages work: run_dir, or work_dir when run_dir is a URL."""
        if self.remote_run_dir() is not None:
            return Path(str(self.work_dir))
        return Path(self.run_dir) if self.run_dir else Path("runs") / self.name

    def remote_run_dir(self) -> str | None:
        """run_dir when it is a URL (object storage), else None."""
        return self.run_dir if self.run_dir and is_url(self.run_dir) else None


_URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://(.*)$")


def is_url(text: str) -> bool:
    """Whether a path option is a URL (s3://, gs://, file://, ...) rather than a local path."""
    return _URL.match(text) is not None


def storage_problems(run_dir: str | None, work_dir: str | None) -> list[tuple[KeyPath, str]]:
    """run_dir may be a URL only together with a local work_dir, and work_dir is only for that."""
    match = _URL.match(run_dir or "")
    if match is None:
        if work_dir is not None:
            msg = "is only used when run_dir is a URL such as s3://bucket/runs/NAME; remove it"
            return [(("work_dir",), f"{msg} (run_dir: {_show(run_dir)}) (got {_show(work_dir)})")]
        return []
    problems: list[tuple[KeyPath, str]] = []
    scheme, rest = match[1].lower(), match[2]
    if scheme != "file" and not rest.split("/", 1)[0]:
        msg = "a URL needs a bucket (or host) after '://', e.g. s3://bucket/runs/NAME"
        problems.append((("run_dir",), f"{msg} (got {_show(run_dir)})"))
    if work_dir is None:
        msg = (
            "required when run_dir is a URL: a local directory where the stages work; each finished output "
            "is copied to run_dir"
        )
        problems.append((("work_dir",), f"{msg} (run_dir: {_show(run_dir)})"))
    elif is_url(work_dir):
        problems.append((("work_dir",), f"must be a local directory, not a URL (got {_show(work_dir)})"))
    return problems


# ---------------------------------------------------------------- hashing


def settings_for_hash(model: BaseModel) -> dict[str, Any]:
    """The model's values without exec-only fields: what decides a stage's output."""
    out: dict[str, Any] = {}
    for name, field in type(model).model_fields.items():
        extra = field.json_schema_extra
        if isinstance(extra, dict) and extra.get("exec_only"):
            continue
        value = getattr(model, name)
        if isinstance(value, BaseModel):
            value = settings_for_hash(value)
        elif isinstance(value, list):
            value = [settings_for_hash(v) if isinstance(v, BaseModel) else v for v in value]
        out[name] = value
    return out


def config_hash(*parts: Any) -> str:
    """Stable short hash of JSON-able parts (models are reduced by settings_for_hash)."""
    norm = [settings_for_hash(p) if isinstance(p, BaseModel) else p for p in parts]
    blob = json.dumps(norm, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


# ---------------------------------------------------------------- loading, errors, overrides


def _yaml_lines(text: str) -> tuple[dict[KeyPath, int], list[tuple[KeyPath, int, int]]]:
    """Map every key path of a YAML document to its 1-based line; also list (path, line, first line)
    of keys repeated in one mapping, which YAML loaders would otherwise silently collapse."""
    lines: dict[KeyPath, int] = {}
    repeated: list[tuple[KeyPath, int, int]] = []

    def walk(node: yaml.Node, path: KeyPath) -> None:
        if isinstance(node, yaml.MappingNode):
            seen: dict[str, int] = {}
            for key, value in node.value:
                sub, line = (*path, str(key.value)), key.start_mark.line + 1
                if sub[-1] in seen:
                    repeated.append((sub, line, seen[sub[-1]]))
                seen.setdefault(sub[-1], line)
                lines[sub] = line
                walk(value, sub)
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                lines[(*path, str(i))] = item.start_mark.line + 1
                walk(item, (*path, str(i)))

    root = yaml.compose(text, Loader=yaml.SafeLoader)
    if root is not None:
        walk(root, ())
    return lines, repeated


_POOLS: dict[Any, type[BaseModel]] = {
    "datacomp": DatacompPoolConfig,
    "parquet": ParquetPoolConfig,
    "openclipart": OpenclipartPoolConfig,
}


def _first_model(ann: Any) -> type[BaseModel] | None:
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return ann
    for arg in getattr(ann, "__args__", ()) or ():
        found = _first_model(arg)
        if found is not None:
            return found
    return None


def _model_at(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The pydantic model a pydantic error location points into, to list its valid keys."""
    model: type[BaseModel] | None = PipelineConfig
    for part in loc:
        field = model.model_fields.get(str(part)) if model else None
        if field is not None:
            model = _first_model(field.annotation)
        elif part in _POOLS:  # the member of the pool union that was tried
            model = _POOLS[part]
        elif not isinstance(part, int):  # list indices stay in the same model
            return None
    return model


def _clean_loc(loc: tuple[Any, ...], etype: str, data: Any) -> tuple[KeyPath, int | None]:
    """The key path of an error location, without the union member names pydantic puts in it
    (pool.parquet.paths -> pool.paths); also how long the path was where a union member was named."""
    path: list[str] = []
    union_at = None
    node = data
    for i, part in enumerate(loc):
        if i == 1 and loc[0] == "pool":  # the pool member tried, named by its source
            union_at = 1
            continue
        in_data = isinstance(node, dict) and part in node or isinstance(node, list) and isinstance(part, int)
        if in_data or (i == len(loc) - 1 and etype in ("missing", "extra_forbidden")):
            path.append(str(part))
            node = node[part] if in_data else None
        elif part != "[key]":
            union_at = len(path)
    return tuple(path), union_at


_MESSAGES = {
    "missing": "required key is missing",
    "int_type": "must be an integer",
    "int_parsing": "must be an integer",
    "int_from_float": "must be a whole number",
    "float_type": "must be a number",
    "float_parsing": "must be a number",
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
    "string_type": "must be a string",
    "list_type": "must be a list",
    "dict_type": "must be a mapping",
    "model_type": "must be a mapping",
    "model_attributes_type": "must be a mapping",
    "invalid_key": "key must be a string",
    "greater_than_equal": "must be >= {ge}",
    "greater_than": "must be > {gt}",
    "less_than_equal": "must be <= {le}",
    "less_than": "must be < {lt}",
    "too_short": "must hold at least {min_length} item(s)",
    "union_tag_invalid": "must be one of {expected_tags}",
    "union_tag_not_found": "required key is missing; valid: " + ", ".join(map(repr, _POOLS)),
}
_PATTERNS = {
    r"^[a-z][a-z0-9_]*$": "must be a lowercase letter followed by lowercase letters, digits or '_'",
    r"^[A-Za-z0-9][A-Za-z0-9_.-]*$": "must be a letter or digit followed by letters, digits, '_', '.' or '-'",
}


def _message(err: dict[str, Any]) -> str:
    """What is wrong, without the key path and the value."""
    etype, ctx, loc = err["type"], err.get("ctx", {}), err["loc"]
    if etype == "extra_forbidden":
        model = _model_at(loc[:-1])
        valid = list(model.model_fields) if model else []
        msg = "unknown key" + (f" for source '{loc[1]}'" if loc[0] == "pool" and len(loc) == 3 else "")
        hint = difflib.get_close_matches(str(loc[-1]), valid, n=1)
        msg += f" (did you mean '{hint[0]}'?)" if hint else ""
        return msg + (f"; valid keys here: {', '.join(valid)}" if valid else "")
    if etype == "literal_error":
        one = "," not in ctx["expected"] and " or " not in ctx["expected"]
        return f"must be {'' if one else 'one of '}{ctx['expected']}"
    if etype == "string_pattern_mismatch":
        return _PATTERNS.get(ctx["pattern"], f"must match {ctx['pattern']}")
    template = _MESSAGES.get(etype)
    msg = template.format(**ctx) if template else err["msg"].removeprefix("Value error, ")
    return f"key {msg.removeprefix('key ')}" if loc[-1:] == ("[key]",) else msg


def _got(err: dict[str, Any]) -> str:
    if err["type"] in ("missing", "extra_forbidden", "union_tag_not_found"):
        return ""
    value = err["input"]
    if err["type"] == "union_tag_invalid":  # the input is the whole mapping; show its discriminator's value
        value = value.get(err["ctx"]["discriminator"].strip("'"), err["ctx"]["tag"])
    return f" (got {_show(value)})"


def _validation_problems(exc: ValidationError, data: dict[str, Any]) -> list[tuple[KeyPath, str]]:
    """(key path, message) for every validation error; the attempts at each member of a union
    (evaluate.tasks: 'all' or a list) become one message, unless one member got further."""
    found: list[tuple[KeyPath, str]] = []
    unions: dict[KeyPath, list[tuple[KeyPath, str, str]]] = {}
    for err in exc.errors():
        path, union_at = _clean_loc(err["loc"], err["type"], data)
        if err["type"] == "curate_problems":
            found += [((*path, *sub), msg) for sub, msg in err["ctx"]["problems"]]
        elif err["type"].startswith("union_tag_"):
            found.append(((*path, "source"), _message(err) + _got(err)))
        elif union_at is None:
            found.append((path, _message(err) + _got(err)))
        else:
            unions.setdefault(path[:union_at], []).append((path, _message(err), _got(err)))
    for at, tries in unions.items():
        deeper = [(path, msg + got) for path, msg, got in tries if len(path) > len(at)]
        msgs = [msg for _, msg, _ in tries]
        merged = " or ".join([msgs[0], *(msg.removeprefix("must be ") for msg in msgs[1:])])
        found += deeper or [(at, merged + tries[0][2])]
    return found


def parse_override(text: str) -> tuple[list[str], Any]:
    """'download.processes=4' -> (['download', 'processes'], 4). Values are YAML scalars or flow YAML."""
    if "=" not in text:
        raise ConfigError(f"override '{text}': expected key.path=value, e.g. download.processes=4")
    key, raw = text.split("=", 1)
    parts = key.strip().split(".")
    if any(not p for p in parts):
        raise ConfigError(f"override '{text}': empty key in key path '{key.strip()}'")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"override '{text}': value is not valid YAML: {_yaml_problem(exc)}") from None
    return parts, value


def _apply_override(data: dict[str, Any], text: str) -> None:
    """Set one key path in the raw YAML data; unknown keys are then caught by validation like any other."""
    parts, value = parse_override(text)
    node: Any = data
    for i, part in enumerate(parts):
        here, parent = ".".join(parts[: i + 1]), ".".join(parts[:i])
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise ConfigError(f"override '{text}': {here}: no such item ({parent} has {len(node)})")
            key: Any = int(part)
        elif isinstance(node, dict):
            key = part
            if i < len(parts) - 1 and node.get(part) is None:
                node[part] = {}
        else:
            raise ConfigError(f"override '{text}': {here}: {parent} holds no keys (got {_show(node)})")
        if i == len(parts) - 1:
            node[key] = value
        node = node[key]


def _apply_all(data: dict[str, Any], overrides: list[str]) -> list[tuple[int, str]]:
    """Apply every override that can be; (index, message) for each that cannot."""
    problems = []
    for i, text in enumerate(overrides):
        try:
            _apply_override(data, text)
        except ConfigError as exc:
            problems.append((i, exc.message))
    return problems


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Set key paths in the raw YAML data (ConfigError listing every override that cannot be applied)."""
    problems = [msg for _, msg in _apply_all(data, overrides)]
    if problems:
        raise ConfigError(f"{len(problems)} bad override{'s' if len(problems) > 1 else ''}", problems)
    return data


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """What is wrong in a YAML text; tags that would build Python objects are refused, never run."""
    problem = getattr(exc, "problem", None) or str(exc)
    tag = re.search(r"constructor for the tag '([^']*)'", problem)
    if tag:
        name = tag[1].replace("tag:yaml.org,2002:", "!!")
        return (
            f"YAML tag '{name}' is not allowed (a pipeline holds plain YAML values; tags are never executed)"
        )
    return "invalid YAML: " + ", ".join(filter(None, [getattr(exc, "context", None), problem]))


def read_yaml(path: Path) -> tuple[dict[str, Any], str]:
    """Read a pipeline YAML safely (no Python tags ever execute); raise ConfigError naming the file."""
    if not path.exists():
        raise ConfigError(f"{path}: no such file")
    if path.is_dir():
        raise ConfigError(f"{path}: is a directory, expected a pipeline YAML file")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read ({exc})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f"line {mark.line + 1}: " if mark else ""
        raise ConfigError(f"{path}: {line}{_yaml_problem(exc)}") from None
    if data is None:
        raise ConfigError(f"{path}: the file is empty; a pipeline needs at least 'name' and 'pool'")
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys like 'name:' (got {_show(data)})")
    return data, text


def load_config(path: str | Path, overrides: list[str] | None = None) -> PipelineConfig:
    """Load, override and validate a pipeline YAML; all problems are raised together as ConfigError,
    each as 'line N: key.path: what is wrong (got VALUE)' (or naming the override that set the key)."""
    path = Path(path)
    data, text = read_yaml(path)
    lines, repeated = _yaml_lines(text)
    overrides = list(overrides or [])
    problems = [
        (line, f"line {line}: {'.'.join(p)}: key appears twice (first on line {first})")
        for p, line, first in repeated
    ]
    after_file = max(lines.values(), default=0) + 1  # override problems are listed after the file's
    failed = _apply_all(data, overrides)
    problems += [(after_file + i, msg) for i, msg in failed]
    applied = [text for i, text in enumerate(overrides) if i not in dict(failed)]
    try:
        cfg = PipelineConfig.model_validate(data)
    except ValidationError as exc:
        for key, msg in _validation_problems(exc, data):
            override = _override_of(key, applied, lines)
            line = next((lines[key[:i]] for i in range(len(key), 0, -1) if key[:i] in lines), 0)
            where = f"override '{override}': " if override else f"line {line}: " if line else ""
            order = after_file + overrides.index(override) if override else line
            problems.append((order, f"{where}{'.'.join(key) or '(top level)'}: {msg}"))
    if problems:
        n = len(problems)
        problems.sort(key=lambda problem: problem[0])
        raise ConfigError(f"{path}: {n} problem{'s' if n > 1 else ''}", [msg for _, msg in problems])
    return _paths_relative_to(cfg, path.parent)


def _paths_relative_to(cfg: PipelineConfig, base: Path) -> PipelineConfig:
    """Another pipeline named by this one (embed.models.N.from_pipeline.config) is found relative to
    this file, wherever curate runs from; the resolved config then holds its absolute path."""
    for model in cfg.embed.models if cfg.embed else []:
        upstream = model.from_pipeline
        if upstream is not None and not Path(upstream.config).is_absolute():
            upstream.config = str((base / upstream.config).resolve())
    return cfg


def _override_of(key: KeyPath, overrides: list[str], lines: dict[KeyPath, int]) -> str | None:
    """The last override that set `key`, or that made the part of its path the file does not have."""
    new = next((key[:i] for i in range(1, len(key) + 1) if key[:i] not in lines), None)
    for text in reversed(overrides):
        target = tuple(text.split("=", 1)[0].strip().split("."))
        if key[: len(target)] == target or (new and target[: len(new)] == new):
            return text
    return None


def dump_config(cfg: PipelineConfig) -> str:
    """The resolved config as YAML (what `config.yaml` in a run directory holds)."""
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
