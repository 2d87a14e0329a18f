"""Pydantic models of a pipeline YAML, loading with every problem reported at once, and overrides.

Unknown keys are errors everywhere (`extra="forbid"`): a typo must never be silently ignored.
Fields marked `exec_only` change how fast a stage runs, not what it writes, so they are left out of
the stage's config hash and changing them never invalidates finished shards.
"""

from __future__ import annotations

import difflib
import hashlib
import json
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from curate.errors import ConfigError

SCALES = ("small", "medium", "large", "xlarge")
EXEC_ONLY = {"exec_only": True}


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


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
        60.0, gt=0, description="Wall-clock seconds one URL may take in all, so a trickling server cannot hang a shard."
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


# ---------------------------------------------------------------- embed


class EmbedModelConfig(Strict):
    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    arch: str
    pretrained: str | None = Field(None, description="open_clip tag (needs the network) or checkpoint path.")
    model_config_file: str | None = Field(None, description="open_clip model config JSON for custom models.")


class EmbedConfig(Strict):
    models: list[EmbedModelConfig] = Field(min_length=1)
    batch_size: int = Field(256, ge=1, json_schema_extra=EXEC_ONLY)
    device: Literal["auto", "cpu", "cuda"] = Field("auto", json_schema_extra=EXEC_ONLY)
    gpu_decode: bool = Field(True, json_schema_extra=EXEC_ONLY)

    @field_validator("models")
    @classmethod
    def _unique_names(cls, models: list[EmbedModelConfig]) -> list[EmbedModelConfig]:
        names = [m.name for m in models]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"model names must be unique; repeated: {', '.join(dupes)}")
        return models


# ---------------------------------------------------------------- strategies


def check_filter_expr(expr: Any, where: str = "") -> list[str]:
    """Structural check of a filter expression: all/any/not, a filter name, or {name: {params}}."""
    here = where or "(expression)"
    if isinstance(expr, str):
        return [] if expr and expr not in ("all", "any", "not") else [f"{here}: '{expr}' is not a filter name"]
    if not isinstance(expr, dict) or len(expr) != 1:
        return [
            f"{here}: expected one of {{all: [...]}}, {{any: [...]}}, {{not: ...}}, a filter name or "
            f"{{filter_name: {{params}}}}; got {expr!r}"
        ]
    (key, value), = expr.items()
    if key in ("all", "any"):
        if not isinstance(value, list) or not value:
            return [f"{here}.{key}: expected a non-empty list of filter expressions; got {value!r}"]
        return [p for i, sub in enumerate(value) for p in check_filter_expr(sub, f"{here}.{key}[{i}]")]
    if key == "not":
        return check_filter_expr(value, f"{here}.not")
    if value is not None and not isinstance(value, dict):
        return [f"{here}.{key}: filter parameters must be a mapping; got {value!r}"]
    return []


# ---------------------------------------------------------------- later stages


class ReshardConfig(Strict):
    shard_size: int = Field(10_000, ge=1)
    max_shard_bytes: int = Field(3_000_000_000, ge=1)


class TrainConfig(Strict):
    scale: Literal["tiny", "debug", "small", "medium", "large", "xlarge"]
    num_checkpoints: int = Field(5, ge=1)
    precision: Literal["amp", "amp_bf16", "amp_bfloat16", "bf16", "fp16", "fp32"] = "amp"
    seed: int = 0
    gpus: int = Field(1, ge=0, json_schema_extra=EXEC_ONLY)
    workers: int = Field(4, ge=0, json_schema_extra=EXEC_ONLY)
    accum_freq: int = Field(1, ge=1)


class EvaluateConfig(Strict):
    tasks: Literal["all"] | list[str] = "all"
    data_dir: str | None = None
    batch_size: int = Field(64, ge=1, json_schema_extra=EXEC_ONLY)


class RayConfig(Strict):
    address: str | None = Field(None, description="null: start a local Ray; 'auto' or host:port: join a cluster.")
    num_cpus: int | None = Field(None, ge=1, description="CPUs for a local Ray (default: all).")
    num_gpus: int | None = Field(None, ge=0)


class PipelineConfig(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    run_dir: str | None = Field(None, description="Default: runs/<name> under the current directory.")
    pool: PoolConfig
    download: DownloadConfig = DownloadConfig()
    embed: EmbedConfig | None = None
    strategies: dict[str, Any] = {}
    reshard: ReshardConfig = ReshardConfig()
    train: TrainConfig | None = None
    evaluate: EvaluateConfig | None = None
    ray: RayConfig = RayConfig()

    @field_validator("strategies")
    @classmethod
    def _check_strategies(cls, strategies: dict[str, Any]) -> dict[str, Any]:
        problems = []
        for name, expr in strategies.items():
            if not name.replace("_", "").replace("-", "").isalnum():
                problems.append(f"strategy name '{name}' may hold only letters, digits, '_' and '-'")
            problems += check_filter_expr(expr, name)
        if problems:
            raise ValueError("; ".join(problems))
        return strategies

    def resolved_run_dir(self) -> Path:
        return Path(self.run_dir) if self.run_dir else Path("runs") / self.name


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


def _yaml_lines(text: str) -> dict[tuple[str, ...], int]:
    """Map every key path of a YAML document to its 1-based line, for error messages."""
    lines: dict[tuple[str, ...], int] = {}

    def walk(node: yaml.Node, path: tuple[str, ...]) -> None:
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                sub = (*path, str(key.value))
                lines[sub] = key.start_mark.line + 1
                walk(value, sub)
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                lines[(*path, str(i))] = item.start_mark.line + 1
                walk(item, (*path, str(i)))

    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return lines
    if root is not None:
        walk(root, ())
    return lines


_UNION_TAGS = {"datacomp", "parquet", "openclipart", "str", "list[str]", "literal['all']"}


def _model_at(path: tuple[str, ...]) -> type[BaseModel] | None:
    """The pydantic model a key path points into, to list its valid keys."""
    model: Any = PipelineConfig
    for part in path:
        if model is None:
            return None
        field = model.model_fields.get(part) if isinstance(model, type) else None
        if field is None:
            if part.isdigit() and model is not None:
                continue
            return None
        ann = field.annotation
        model = _first_model(ann)
    return model


def _first_model(ann: Any) -> type[BaseModel] | None:
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return ann
    for arg in getattr(ann, "__args__", ()) or ():
        found = _first_model(arg)
        if found is not None:
            return found
    return None


def _pool_model(source: Any) -> type[BaseModel] | None:
    return {
        "datacomp": DatacompPoolConfig,
        "parquet": ParquetPoolConfig,
        "openclipart": OpenclipartPoolConfig,
    }.get(source)


def _format_error(err: dict[str, Any], data: dict[str, Any], lines: dict[tuple[str, ...], int]) -> str:
    loc = tuple(str(p) for p in err["loc"])
    # Drop discriminator tags pydantic inserts into union locations (pool.openclipart.root -> pool.root).
    if len(loc) >= 2 and loc[0] == "pool" and loc[1] in ("datacomp", "parquet", "openclipart"):
        loc = (loc[0], *loc[2:])
    key = ".".join(loc) if loc else "(top level)"
    line = lines.get(loc) or lines.get(loc[:-1]) if loc else None
    where = f"line {line}: " if line else ""
    etype = err["type"]
    if etype == "extra_forbidden":
        parent = loc[:-1]
        model = _model_at(parent)
        if parent == ("pool",):
            model = _pool_model(data.get("pool", {}).get("source")) or model
        valid = [k for k in model.model_fields] if model else []
        hint = difflib.get_close_matches(loc[-1], valid, n=1)
        did = f" (did you mean '{hint[0]}'?)" if hint else ""
        return f"{where}{key}: unknown key{did}; valid keys here: {', '.join(valid)}"
    if etype == "missing":
        return f"{where}{key}: required key is missing"
    if etype == "union_tag_invalid":
        ctx = err.get("ctx", {})
        return f"{where}{key}: '{ctx.get('tag')}' is not a valid source; valid: {ctx.get('expected_tags')}"
    if etype == "union_tag_not_found":
        return f"{where}{key}: 'source' is required; valid: 'datacomp', 'parquet', 'openclipart'"
    value = err.get("input")
    shown = repr(value) if not isinstance(value, dict | list) or len(repr(value)) < 80 else type(value).__name__
    msg = err["msg"].removeprefix("Value error, ")
    if etype == "literal_error":
        msg = "must be one of " + err["ctx"]["expected"]
    return f"{where}{key}: {msg} (got {shown})"


def parse_override(text: str) -> tuple[list[str], Any]:
    """'download.processes=4' -> (['download', 'processes'], 4). Values are YAML scalars or flow YAML."""
    if "=" not in text:
        raise ConfigError(f"override '{text}': expected key.path=value, e.g. download.processes=4")
    key, raw = text.split("=", 1)
    parts = [p for p in key.strip().split(".")]
    if not key.strip() or any(not p for p in parts):
        raise ConfigError(f"override '{text}': empty key path")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"override '{text}': value is not valid YAML ({exc.__class__.__name__})") from None
    return parts, value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Set key paths in the raw YAML data; unknown keys are then caught by validation like any other."""
    for text in overrides:
        parts, value = parse_override(text)
        node: Any = data
        for i, part in enumerate(parts[:-1]):
            if isinstance(node, list):
                if not part.isdigit() or int(part) >= len(node):
                    raise ConfigError(f"override '{text}': '{'.'.join(parts[: i + 1])}' is not a list index")
                node = node[int(part)]
                continue
            if not isinstance(node, dict):
                raise ConfigError(f"override '{text}': '{'.'.join(parts[:i])}' is not a mapping")
            if node.get(part) is None:
                node[part] = {}
            node = node[part]
        last = parts[-1]
        if isinstance(node, list):
            if not last.isdigit() or int(last) >= len(node):
                raise ConfigError(f"override '{text}': '{last}' is not an index of that list")
            node[int(last)] = value
        elif isinstance(node, dict):
            node[last] = value
        else:
            raise ConfigError(f"override '{text}': '{'.'.join(parts[:-1])}' is not a mapping")
    return data


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
    except yaml.constructor.ConstructorError as exc:
        mark = exc.problem_mark
        line = f"line {mark.line + 1}: " if mark else ""
        raise ConfigError(
            f"{path}: {line}unsupported YAML tag ({exc.problem}); only plain YAML is allowed"
        ) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f"line {mark.line + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{path}: {line}invalid YAML: {problem}") from None
    if data is None:
        raise ConfigError(f"{path}: the file is empty; a pipeline needs at least 'name' and 'pool'")
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of keys at the top level, got {type(data).__name__}")
    return data, text


def load_config(path: str | Path, overrides: list[str] | None = None) -> PipelineConfig:
    """Load, override and validate a pipeline YAML; all problems are raised together as ConfigError."""
    path = Path(path)
    data, text = read_yaml(path)
    data = apply_overrides(data, list(overrides or []))
    try:
        return PipelineConfig.model_validate(data)
    except ValidationError as exc:
        lines = _yaml_lines(text)
        problems = [_format_error(e, data, lines) for e in exc.errors()]
        n = len(problems)
        raise ConfigError(f"{path}: {n} problem{'s' if n > 1 else ''}", problems) from None


def dump_config(cfg: PipelineConfig) -> str:
    """The resolved config as YAML (what `config.yaml` in a run directory holds)."""
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
