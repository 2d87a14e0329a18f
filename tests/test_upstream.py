"""Embed models trained by another pipeline (from_pipeline, a DFN-style filtering network): the path is
relative to the YAML naming it, an untrained network is a clear problem naming the command, a trained
one resolves to its checkpoint and loads, and bad references stop before any work. The real two-pipeline
run (the upstream trained first, then used) is in tests/test_cli_sweep.py."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console
from typer.testing import CliRunner

from curate.cli import app
from curate.clipmodels import load_clip, model_problems
from curate.config import load_config
from curate.errors import CurateError, PreflightError
from curate.rundir import RunDir
from curate.upstream import prepare, resolve, trained_stamp
from tests.conftest import write_pool
from tests.eval.eval_fixtures import tiny_checkpoint


def _files(tmp_path: Path, upstream: str = "", model: str = "") -> tuple[Path, Path]:
    """conf/up.yaml (trains strategy `trusted`) and conf/main.yaml (embeds with it), a parquet pool."""
    pool = write_pool(tmp_path / "pool.parquet", [f"http://127.0.0.1:9/{i}.png" for i in range(4)])
    conf = tmp_path / "conf"
    conf.mkdir()
    up = conf / "up.yaml"
    up.write_text(
        f"name: up\nrun_dir: {tmp_path / 'up_run'}\npool: {{source: parquet, paths: [{pool}]}}\n"
        "strategies: {trusted: basic_filter}\ntrain: {scale: smoke}\n" + upstream
    )
    main = conf / "main.yaml"
    main.write_text(
        f"name: main\nrun_dir: {tmp_path / 'main_run'}\npool: {{source: parquet, paths: [{pool}]}}\n"
        "embed:\n  models:\n"
        "    - {name: dfn, arch: curate-tiny-vit64, from_pipeline: {config: up.yaml, strategy: trusted}"
        + model
        + "}\nstrategies: {top: {clip_score: {model: dfn, fraction: 0.5}}}\n"
    )
    return up, main


def _fake_training(run: RunDir, checkpoint: Path, config_hash: str = "abc123") -> Path:
    """What a finished train stage leaves: the checkpoint, info.pkl and the manifest record."""
    exp = run.train / "trusted"
    (exp / "checkpoints").mkdir(parents=True)
    shutil.copy(checkpoint, exp / "checkpoints" / "epoch_latest.pt")
    (exp / "info.pkl").write_bytes(b"")
    shard = {"trusted": {"status": "done"}}
    stages = {"train": {"config_hash": config_hash, "status": "done", "shards": shard}}
    run.manifest_path.write_text(json.dumps({"version": 1, "stages": stages}))
    return exp / "checkpoints" / "epoch_latest.pt"


def test_untrained_then_trained_network(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    up, main = _files(tmp_path)
    monkeypatch.chdir(tmp_path)  # the upstream path is relative to main.yaml, not to where curate runs
    cfg = load_config(Path("conf") / "main.yaml")
    (spec,) = cfg.embed.models if cfg.embed else []
    assert spec.from_pipeline is not None and spec.from_pipeline.config == str(up)

    untrained = resolve(cfg)
    (net,) = untrained.embed.models if untrained.embed else []
    assert net.pretrained is None and net.from_pipeline and net.from_pipeline.trained is None
    (problem,) = model_problems(net, "embed.models.0")
    assert problem == (
        f"embed.models.0.from_pipeline: the model of strategy 'trusted' of {up} is not trained yet; "
        f"`curate run {up}` trains it (`curate run` and `curate sweep` of this pipeline do that first)"
    )
    with pytest.raises(CurateError, match="has not trained it yet"):
        load_clip(net)  # never a silent random init

    up_run = RunDir(tmp_path / "up_run")
    assert trained_stamp(up_run, "trusted") is None
    ckpt = _fake_training(up_run, tiny_checkpoint(tmp_path_factory.getbasetemp()))
    trained = resolve(cfg)
    (net,) = trained.embed.models if trained.embed else []
    assert net.pretrained == str(ckpt) and net.from_pipeline and net.from_pipeline.trained == "abc123"
    assert model_problems(net, "embed.models.0") == []
    assert cfg.embed and cfg.embed.models[0].pretrained is None, "resolve returns a copy"
    random_init = load_clip(spec.model_copy(update={"from_pipeline": None}))
    loaded = load_clip(net)
    texts = ["a red house", "a dog"]
    assert not np.allclose(loaded.encode_texts(texts), random_init.encode_texts(texts))

    # the hash of the embed stage follows the network's training: trained again differently, redone
    (up_run.manifest_path).write_text(up_run.manifest_path.read_text().replace("abc123", "def456"))
    again = resolve(cfg)
    assert again.embed and again.embed.models[0].from_pipeline
    assert again.embed.models[0].from_pipeline.trained == "def456"


def test_bad_references_are_clear_errors(tmp_path: Path) -> None:
    up, main = _files(tmp_path)
    cfg = load_config(main)
    with pytest.raises(CurateError) as exc:
        resolve(load_config(main, ["embed.models.0.from_pipeline.config=nope.yaml"]))
    assert str(exc.value) == f"embed.models.0.from_pipeline.config: {up.parent / 'nope.yaml'}: no such file"
    with pytest.raises(
        CurateError, match=r"strategy: 'best' is not a strategy of .*up.yaml \(its strategies: trusted"
    ):
        resolve(load_config(main, ["embed.models.0.from_pipeline.strategy=best"]))
    with pytest.raises(CurateError, match=r"embed.models.0.from_pipeline: .*up.yaml has no train section"):
        resolve(load_config(main, ["embed.models.0.from_pipeline.overrides=[train=]"]))
    with pytest.raises(CurateError, match=r"config: .*up.yaml: 1 problem\n  - override 'train.scale=huge'"):
        resolve(load_config(main, ["embed.models.0.from_pipeline.overrides=[train.scale=huge]"]))
    with pytest.raises(CurateError, match=r"arch: 'ViT-B-32', but .*up.yaml trains curate-tiny-vit64"):
        resolve(load_config(main, ["embed.models.0.arch=ViT-B-32"]))
    assert resolve(cfg) is not cfg
    bad = main.with_name("bad.yaml")
    bad.write_text(main.read_text().replace("strategy: trusted", "strategy: best"))
    result = CliRunner().invoke(app, ["validate", str(main), str(bad)])
    output = " ".join(result.output.split())
    assert result.exit_code == 1 and f"ok {main}" in output
    assert f"error: {bad}: embed.models.0.from_pipeline.strategy: 'best' is not a strategy" in output
    _, both = _files(tmp_path / "both", model=", pretrained: /x/other.pt")
    with pytest.raises(CurateError, match="embed.models.0: give pretrained or from_pipeline, not both"):
        resolve(load_config(both))


def test_prepare_checks_this_pipeline_and_cycles_before_any_work(tmp_path: Path) -> None:
    up, main = _files(tmp_path)
    console = Console(stderr=True)
    typo = load_config(main, ["strategies.top={clip_score: {model: dfm, fraction: 0.5}}"])
    with pytest.raises(PreflightError, match="dfm"):
        prepare(typo, RunDir(tmp_path / "main_run"), console)
    # up.yaml embeds with main.yaml's network, which is up.yaml's: a cycle, found before any run
    up.write_text(
        up.read_text() + "embed:\n  models:\n    - {name: back, arch: curate-tiny-vit64, "
        "from_pipeline: {config: main.yaml, strategy: top, overrides: ['train={scale: smoke}']}}\n"
    )
    with pytest.raises(CurateError, match="depends on itself"):
        prepare(load_config(main), RunDir(tmp_path / "main_run"), console)
    assert not (tmp_path / "up_run").exists() and not (tmp_path / "main_run").exists()
