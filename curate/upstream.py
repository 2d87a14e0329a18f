"""Pipelines a pipeline depends on: an embed model trained by another pipeline (a filtering network).

DFN-style filtering for a pool that has no pretrained CLIP: one pipeline trains a CLIP on a trusted
subset (pipelines/openclipart_dfn.yaml), another embeds the whole pool with it and keeps the pairs it
scores best (`clip_score: {model: dfn, fraction: 0.5}`). The embed model names its source as
`from_pipeline: {config, strategy, overrides}`.

`resolve` points the model's `pretrained` at that run's train/<strategy>/checkpoints/epoch_latest.pt
once that training is done, and stamps it with the training's settings hash, so a network trained
again with other settings redoes the embeddings (and every later stage). `prepare` first runs that
pipeline up to its training when needed (resumable and quick when done, like any run), after checking
this pipeline's own settings, so that a typo here never waits behind a training there.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from rich.console import Console

from curate.config import ConfigError, EmbedModelConfig, PipelineConfig, load_config
from curate.errors import CurateError, PreflightError
from curate.rundir import RunDir
from curate.stages.base import Stage
from curate.training import info as records

StageFilter = Callable[[Stage], Stage]


def networks(cfg: PipelineConfig) -> list[tuple[str, EmbedModelConfig]]:
    """(key path, model) of every embed model trained by another pipeline."""
    models = cfg.embed.models if cfg.embed else []
    return [(f"embed.models.{i}", m) for i, m in enumerate(models) if m.from_pipeline is not None]


def upstream_config(spec: EmbedModelConfig, where: str) -> PipelineConfig:
    """The pipeline that trains `spec`, loaded with its overrides and checked to train that model."""
    up = spec.from_pipeline
    assert up is not None
    try:
        cfg = load_config(up.config, up.overrides)
    except ConfigError as exc:
        raise CurateError(f"{where}.from_pipeline.config: {exc.message}", exc.problems) from None
    if up.strategy not in cfg.strategies:
        have = ", ".join(cfg.strategies) or "none"
        raise CurateError(
            f"{where}.from_pipeline.strategy: '{up.strategy}' is not a strategy of {up.config} "
            f"(its strategies: {have})"
        )
    if cfg.train is None:
        raise CurateError(f"{where}.from_pipeline: {up.config} has no train section, so it trains no model")
    from curate.training.scales import get_scale

    model = get_scale(cfg.train.scale).model
    if model != spec.arch:
        raise CurateError(
            f"{where}.arch: '{spec.arch}', but {up.config} trains {model} (train.scale {cfg.train.scale}); "
            f"set arch: {model}"
        )
    return cfg


def upstream_run(cfg: PipelineConfig) -> RunDir:
    return RunDir(cfg.resolved_run_dir().absolute())


def trained_stamp(run: RunDir, strategy: str) -> str | None:
    """The train stage's settings hash when `strategy`'s training in `run` is finished, else None."""
    record = run.read_manifest().data.get("stages", {}).get("train", {})
    done = record.get("shards", {}).get(strategy, {}).get("status") == "done"
    exp = run.train / strategy
    if done and (exp / records.INFO_PKL).exists() and records.checkpoint_path(exp).exists():
        return record.get("config_hash")
    return None


def resolve(cfg: PipelineConfig) -> PipelineConfig:
    """A copy of `cfg` whose trained networks point at their checkpoints (untouched when not trained:
    the embed stage's check then says which command trains them)."""
    if not networks(cfg):
        return cfg
    out = cfg.model_copy(deep=True)
    for where, spec in networks(out):
        assert spec.from_pipeline is not None
        up_cfg = upstream_config(spec, where)
        run = upstream_run(up_cfg)
        checkpoint = str(records.checkpoint_path(run.train / spec.from_pipeline.strategy))
        if spec.pretrained and spec.pretrained != checkpoint:
            raise CurateError(
                f"{where}: give pretrained or from_pipeline, not both (from_pipeline means {checkpoint})"
            )
        stamp = trained_stamp(run, spec.from_pipeline.strategy)
        spec.pretrained = checkpoint if stamp else None
        spec.from_pipeline.trained = stamp
    return out


def _stand_in(cfg: PipelineConfig) -> PipelineConfig:
    """`cfg` with each network replaced by a random init of its architecture, for checks only."""
    out = cfg.model_copy(deep=True)
    for _, spec in networks(out):
        spec.pretrained, spec.from_pipeline = None, None
    return out


def check_first(cfg: PipelineConfig, run: RunDir, stage_filter: StageFilter | None = None) -> None:
    """This pipeline's own before-work checks, its networks standing in as random inits."""
    from curate.runner import build_stages

    stages = build_stages(_stand_in(cfg), run)
    if stage_filter is not None:
        stages = [stage_filter(s) for s in stages]
    problems = [p for stage in stages for p in stage.preflight()]
    if problems:
        raise PreflightError(f"{cfg.name}: cannot start", problems)


def prepare(
    cfg: PipelineConfig,
    run: RunDir,
    console: Console,
    stage_filter: StageFilter | None = None,
    _chain: tuple[str, ...] = (),
) -> PipelineConfig:
    """Train the networks `cfg` embeds with (their pipelines up to train; nothing when done) and return
    `cfg` resolved to their checkpoints. `cfg`'s own problems are raised first, before any work."""
    found = networks(cfg)
    if not found:
        return cfg
    check_first(cfg, run, stage_filter)
    from curate.runner import build_stages, run_pipeline

    for where, spec in found:
        assert spec.from_pipeline is not None
        up_cfg = upstream_config(spec, where)
        path = str(Path(spec.from_pipeline.config).resolve())
        if path in _chain:
            raise CurateError(f"{where}.from_pipeline.config: {path} depends on itself (via {_chain[-1]})")
        up_run = upstream_run(up_cfg)
        up_cfg = prepare(up_cfg, up_run, console, _chain=(*_chain, path))
        console.print(
            f"{where} ({spec.name}): the model of strategy '{spec.from_pipeline.strategy}' of "
            f"{up_cfg.name}, run in {up_run.root}"
        )
        only = [s.name for s in build_stages(up_cfg, up_run) if s.name != "evaluate"]
        run_pipeline(up_cfg, up_run, only=only, console=console)
        console.print(f"{where} ({spec.name}): trained; now {cfg.name}")
    return resolve(cfg)
