"""The `curate` command line. User errors print as plain messages (exit 2); bugs keep their traceback."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from curate.config import PipelineConfig, load_config
from curate.errors import CurateError
from curate.rundir import RunDir

app = typer.Typer(
    add_completion=False, no_args_is_help=True, help="Build CLIP training sets the DataComp way."
)
pool_app = typer.Typer(no_args_is_help=True, help="Pools: fetch DataComp metadata.")
app.add_typer(pool_app, name="pool")
err = Console(stderr=True)
out = Console()

Overrides = Annotated[
    list[str] | None, typer.Argument(help="key.path=value overrides, e.g. download.processes=4")
]
PipelineFile = Annotated[Path, typer.Argument(help="pipeline YAML")]


def _print_error(exc: CurateError) -> None:
    """User text may hold [brackets]: escape it; never wrap, so each problem stays one line."""
    err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)


def user_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Print CurateError as a message and exit 2 instead of a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except CurateError as exc:
            _print_error(exc)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            err.print("interrupted; finished shards are kept, run again to resume")
            raise typer.Exit(130) from None

    return wrapper


def _not_yet(cfg: PipelineConfig) -> list[str]:
    """Configured sections whose stages this version does not run yet (said, never silently skipped)."""
    later: dict[str, Any] = {}  # every configured section runs now (train since issue 5)
    return [name for name, value in later.items() if value is not None]


@app.command()
@user_errors
def run(file: PipelineFile, overrides: Overrides = None) -> None:
    """Run a pipeline: every stage in order, resuming finished shards."""
    from curate.runner import run_pipeline
    from curate.upstream import prepare

    cfg = load_config(file, overrides)
    run_dir = RunDir(cfg.resolved_run_dir())
    where = f"{cfg.remote_run_dir()} (working copy: {run_dir.root})" if cfg.remote_run_dir() else run_dir.root
    err.print(f"run directory: {where}", markup=False, highlight=False)
    cfg = prepare(cfg, run_dir, err)  # first the models another pipeline trains (from_pipeline)
    run_pipeline(cfg, run_dir, console=err)
    pending = _not_yet(cfg)
    if pending:
        err.print(
            f"note: {', '.join(pending)} configured, but this version of curate does not run "
            "those stages yet, so they were not run"
        )


@app.command()
@user_errors
def download(
    file: PipelineFile,
    overrides: Overrides = None,
    retry_failed: Annotated[
        bool, typer.Option(help="Re-attempt only the rows that failed to download.")
    ] = False,
) -> None:
    """Run the download stage only (with --retry-failed: re-attempt failed rows of finished shards)."""
    from curate.runner import run_pipeline
    from curate.stages.download import DownloadStage

    cfg = load_config(file, overrides)
    run_dir = RunDir(cfg.resolved_run_dir())

    def retrying(stage: Any) -> Any:
        return DownloadStage(cfg, run_dir, retry_failed=True) if isinstance(stage, DownloadStage) else stage

    run_pipeline(
        cfg, run_dir, only=["download"], console=err, stage_filter=retrying if retry_failed else None
    )


@app.command()
def validate(files: Annotated[list[Path], typer.Argument(help="pipeline YAML files")]) -> None:
    """Check pipeline files; every problem of every file is reported (exit 1 if any)."""
    bad = 0
    for file in files:
        try:
            cfg = load_config(file)
            from curate.filtering.compose import parse_strategies
            from curate.upstream import resolve

            try:
                resolve(cfg)  # a pipeline it names (from_pipeline) must load and train that model
                if cfg.strategies:  # filter names and parameters too, not only the expressions' shape
                    parse_strategies(cfg.strategies)
            except CurateError as exc:
                raise CurateError(f"{file}: {exc.message}", exc.problems) from None
            out.print(f"[green]ok[/] {file}")
        except CurateError as exc:
            bad += 1
            _print_error(exc)
    if bad:
        raise typer.Exit(1)


@app.command()
@user_errors
def plan(file: PipelineFile, overrides: Overrides = None) -> None:
    """Show the stages, what each reads and writes, and what is already done."""
    from curate.runner import plan_status
    from curate.storage import pull_working_copy
    from curate.upstream import resolve

    cfg = resolve(load_config(file, overrides))
    run_dir = RunDir(cfg.resolved_run_dir())
    pull_working_copy(cfg, run_dir, lambda msg: err.print(msg, markup=False, highlight=False))
    table = Table(title=f"{cfg.name} -> {run_dir.root}")
    for col in ("stage", "reads", "writes", "shards done", "state"):
        table.add_column(col)
    for st in plan_status(cfg, run_dir):
        state = (
            "stale: settings changed, will rerun"
            if st.stale
            else ("done" if st.done == st.total else f"{st.total - st.done} to do")
        )
        table.add_row(st.name, st.reads, st.writes, f"{st.done}/{st.total}", state)
    for name in _not_yet(cfg):
        table.add_row(name, "", "", "", "configured; not in this version yet")
    out.print(table)


@app.command()
@user_errors
def sweep(
    file: PipelineFile,
    overrides: Overrides = None,
    seeds: Annotated[int, typer.Option(help="Trainings per strategy (seeds train.seed, +1, ...).")] = 1,
    scale: Annotated[
        str | None, typer.Option(help="Training scale for the sweep (default: the pipeline's train.scale).")
    ] = None,
    strategies: Annotated[
        str | None, typer.Option(help="Comma-separated strategies to sweep (default: all).")
    ] = None,
    baseline: Annotated[
        str | None, typer.Option(help="The strategy to beat (default: no_filter, when swept).")
    ] = None,
    from_resharded: Annotated[
        bool,
        typer.Option(
            help="Run only the sweep's training and evaluation, on the run directory's resharded/<strategy>/ "
            "(and subsets/, evalsets/) as they are: for a GPU machine training what a CPU machine curated."
        ),
    ] = False,
) -> None:
    """Train and evaluate every strategy at one scale, once per seed, and rank them: RUN/sweep/
    leaderboard.json and .csv (headline score, seed spread, whether each beats the baseline)."""
    from curate import leaderboard
    from curate.sweep import check_resharded, plan_sweep, run_sweep, swap_stages
    from curate.upstream import prepare

    names = [s.strip() for s in strategies.split(",") if s.strip()] if strategies is not None else None
    cfg, plan = plan_sweep(
        load_config(file, overrides), seeds=seeds, scale=scale, strategies=names, baseline=baseline
    )
    run_dir = RunDir(cfg.resolved_run_dir())
    err.print(f"run directory: {run_dir.root}")
    if from_resharded:
        check_resharded(run_dir, plan)
    else:
        cfg = prepare(cfg, run_dir, err, stage_filter=swap_stages(cfg, run_dir, plan))
    board = run_sweep(cfg, run_dir, plan, console=err, sweep_only=from_resharded)
    wide = out if out.is_terminal else Console(width=200)  # a log keeps the table's rows whole
    wide.print(leaderboard.table(board))
    where = run_dir.root / "sweep"
    err.print(f"leaderboard: {where / 'leaderboard.json'}, {where / 'leaderboard.csv'}", soft_wrap=True)


@pool_app.command("fetch")
@user_errors
def pool_fetch(
    data_dir: Annotated[Path, typer.Argument(help="where metadata/ is written")],
    scale: Annotated[str, typer.Option(help="small, medium, large, xlarge or datacomp_1b")] = "small",
    npz: Annotated[bool, typer.Option(help="Also fetch the .npz embeddings (large).")] = False,
    overwrite: Annotated[bool, typer.Option(help="Fetch again even if metadata/ exists.")] = False,
) -> None:
    """Download DataComp's CommonPool metadata from the Hugging Face hub (needs the network)."""
    from curate.pools.fetch import fetch_metadata

    path = fetch_metadata(scale, data_dir, npz=npz, overwrite=overwrite)
    out.print(f"metadata in {path}")


@app.command("filter")
@user_errors
def filter_cmd(
    metadata: Annotated[str, typer.Option(help="DataComp metadata directory (local path or fsspec URL).")],
    strategy: Annotated[
        str,
        typer.Option(
            help="A filter name (basic_filter), a strategy of pipelines/datacomp_small.yaml "
            "(clip_score_l14_30), a YAML file with one expression, PIPELINE.yaml:NAME, or inline YAML "
            "('{clip_score: {model: l14, fraction: 0.3}}')."
        ),
    ],
    out: Annotated[Path, typer.Option(help="Subset file to write (.npy, DataComp format).")],
    fit_dir: Annotated[
        Path | None, typer.Option(help="Where pool-wide fits are kept (default: <out>.fit next to --out).")
    ] = None,
    decisions: Annotated[
        Path | None, typer.Option(help="Also write per-part decisions (uid, keep, reasons) here.")
    ] = None,
    workers: Annotated[int | None, typer.Option(min=1, help="Processes (default: one per CPU).")] = None,
) -> None:
    """Filter a DataComp metadata directory with one strategy into a subset file (as DataComp's baselines)."""
    from curate.filtering.standalone import filter_metadata, resolve_strategy

    name, expr = resolve_strategy(strategy)
    summary = filter_metadata(
        metadata,
        name,
        expr,
        out,
        fit_dir=fit_dir,
        workers=workers,
        decisions=decisions,
        log=lambda msg: err.print(escape(msg), highlight=False),
    )
    table = Table(title=f"{name}: {summary['count']:,} of {summary['rows']:,} rows kept -> {out}")
    for col in ("step", "removed alone", "removed in sequence", "left"):
        table.add_column(col, justify="left" if col == "step" else "right")
    for step in summary["funnel"]:
        table.add_row(
            escape(step["step"]),
            f"{step['removed_alone']:,}",
            f"{step['removed_in_sequence']:,}",
            f"{step['left']:,}",
        )
    err.print(table)


@app.command("reshard")
@user_errors
def reshard_cmd(
    shards: Annotated[
        str,
        typer.Option(help="Directory of img2dataset shards (NNNNNNNN.tar, .parquet): a path or fsspec URL."),
    ],
    subset: Annotated[Path, typer.Option(help="DataComp subset file (.npy of u8,u8 uids, sorted).")],
    out: Annotated[Path, typer.Option(help="Output directory (empty, or an unfinished reshard to resume).")],
    shard_size: Annotated[int, typer.Option(min=1, help="Samples per output shard.")] = 10_000,
    workers: Annotated[int | None, typer.Option(min=1, help="Processes (default: one per CPU).")] = None,
    overwrite: Annotated[
        bool, typer.Option(help="Replace an earlier reshard in --out (only reshard's own files are removed).")
    ] = False,
) -> None:
    """Write webdataset shards holding exactly a subset's samples (as DataComp's resharder, numbered
    deterministically); resumes an interrupted run into the same --out."""
    from curate.reshard import reshard

    counts = reshard(
        shards,
        subset,
        out,
        shard_size=shard_size,
        workers=workers,
        overwrite=overwrite,
        log=lambda msg: err.print(escape(msg), highlight=False),
    )
    err.print(
        f"{counts['output_count']:,} samples of {counts['subset_count']:,} subset entries written to "
        f"{counts['output_shard_count']} shards in {escape(str(out))}; {counts['missing_count']:,} missing "
        f"(listed in {counts['missing_uids_file']})",
        highlight=False,
        soft_wrap=True,
    )
    for reason, n in counts["skipped"].items():
        err.print(f"  skipped {n:,}: {escape(reason)}", highlight=False, soft_wrap=True)


@app.command("train")
@user_errors
def train_cmd(
    scale: Annotated[
        str,
        typer.Option(help="debug, small, medium, large, xlarge (DataComp's, fixed) or tiny (curate's, CPU)."),
    ],
    data: Annotated[
        str, typer.Option(help="Data directory (resharded, or folders of .tar shards); several with '::'.")
    ],
    out: Annotated[Path, typer.Option(help="Output directory (DataComp's --output_dir).")],
    name: Annotated[
        str | None, typer.Option(help="Experiment name: trains into OUT/NAME (default: <scale>_scale).")
    ] = None,
    gpus: Annotated[
        int | None,
        typer.Option(
            min=0, help="GPUs on this node, torchrun over them (default: 1 if a GPU is seen; 0: CPU)."
        ),
    ] = None,
    nodes: Annotated[
        int, typer.Option(min=1, help="Nodes (with --dry-run: prints each node's command).")
    ] = 1,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    precision: Annotated[
        str | None,
        typer.Option(
            help="amp, amp_bf16, amp_bfloat16, bf16, fp16, fp32 (default: amp on GPU, "
            "amp_bfloat16 for xlarge, fp32 on CPU)."
        ),
    ] = None,
    num_checkpoints: Annotated[int, typer.Option(min=1, help="Checkpoints (epochs) over the training.")] = 5,
    workers: Annotated[int, typer.Option(min=0, help="Data loader workers per GPU.")] = 4,
    accum_freq: Annotated[int, typer.Option(min=1, help="Gradient accumulation steps.")] = 1,
    data_weights: Annotated[
        str | None, typer.Option(help="Sampling weight per '::'-separated data entry (e.g. 1::2).")
    ] = None,
    log_every_n_steps: Annotated[int | None, typer.Option(min=1, help="Progress line cadence.")] = None,
    grad_clip_norm: Annotated[
        float | None, typer.Option(help="Gradient clipping (DataComp's option).")
    ] = None,
    imagenet_val: Annotated[
        str | None, typer.Option(help="ImageNet val folder for open_clip's zero-shot check.")
    ] = None,
    gpu_decode: Annotated[
        bool, typer.Option(help="On GPUs: augment images on the GPU (open_clip's CPU path: off).")
    ] = True,
    image_decoder: Annotated[
        str,
        typer.Option(help="With --gpu-decode, who decodes JPEGs: workers (libjpeg-turbo) or nvjpeg."),
    ] = "workers",
    dry_run: Annotated[
        bool, typer.Option(help="Print the command and open_clip argv; train nothing.")
    ] = False,
) -> None:
    """Train CLIP on a data directory with DataComp's fixed recipe for a scale (open_clip's training code);
    rerun to resume from the last checkpoint. The recipe (model, batch, lr, warmup, samples) cannot change."""
    import shlex

    from curate.training.args import TrainSettings, build_argv
    from curate.training.data import train_data_pattern
    from curate.training.job import train, unofficial_note
    from curate.training.launch import command, multinode_command
    from curate.training.scales import get_scale

    def log(msg: str) -> None:
        err.print(escape(msg), highlight=False, soft_wrap=True)

    spec = get_scale(scale)
    if gpus is None:
        gpus = min(_visible_gpus(), 1)
    elif gpus > 0 and not dry_run:
        seen = _visible_gpus()
        if gpus > seen:
            found = f"only {seen} GPU(s) are visible" if seen else "no GPU is visible"
            raise CurateError(f"--gpus {gpus}: {found} here; use --gpus 0 to train on CPU")
    settings = TrainSettings(
        scale=spec,
        num_checkpoints=num_checkpoints,
        precision=precision,
        seed=seed,
        workers=workers,
        accum_freq=accum_freq,
        gpus=gpus,
        nodes=nodes,
        log_every_n_steps=log_every_n_steps,
        grad_clip_norm=grad_clip_norm,
        imagenet_val=imagenet_val,
        gpu_decode=gpu_decode,
        image_decoder=image_decoder,
    )
    settings.check()
    exp_name = name or f"{scale}_scale"
    if dry_run or nodes > 1:
        if not dry_run:
            raise CurateError(
                "--nodes > 1: curate does not start other nodes; add --dry-run for their command"
            )
        pattern, weights = train_data_pattern(data, data_weights)
        argv = build_argv(settings, pattern, str(out.absolute()), exp_name, weights)
        cmd = multinode_command(argv, gpus, nodes) if nodes > 1 else command(argv, gpus)
        note = unofficial_note(settings)
        if note:
            log(note)
        sched = settings.schedule()
        log(
            f"world size {settings.world_size}, per-GPU batch {settings.per_gpu_batch}, "
            f"{sched['samples_seen']:,} samples seen, {sched['optimizer_steps']:,} optimizer steps"
        )
        out_console = Console(soft_wrap=True)
        out_console.print(shlex.join(cmd), highlight=False, markup=False)
        return
    info = train(data, out, exp_name, settings, data_weights=data_weights, log=log)
    flag = "official" if info["official"] else "UNOFFICIAL"
    err.print(
        f"{flag} {escape(spec.name)} scale: {escape(info['checkpoint'])}; records in "
        f"{escape(str(Path(info['experiment_dir']) / 'info.json'))} and info.pkl",
        highlight=False,
        soft_wrap=True,
    )


def _visible_gpus() -> int:
    import torch

    return torch.cuda.device_count()


@app.command()
@user_errors
def report(
    run_dir: Annotated[Path, typer.Argument(help="A run directory (runs/<name>).")],
    per_side: Annotated[
        int, typer.Option(min=1, help="Samples shown on each side of a filter's boundary.")
    ] = 6,
) -> None:
    """Write RUN/report/index.html: timings, funnels, distributions, and per filter the samples it kept
    and removed nearest its decision boundary (thumbnails from the shards)."""
    from curate.report import build_report
    from curate.storage import refuse_url

    refuse_url(run_dir, "RUN_DIR", "report")
    path = build_report(run_dir, per_side=per_side)
    out.print(f"report: {path}")


@app.command()
@user_errors
def submit(
    run_dir: Annotated[Path | None, typer.Argument(help="The run directory to bundle from.")] = None,
    strategy: Annotated[str | None, typer.Option(help="The strategy whose subset is submitted.")] = None,
    out_dir: Annotated[Path | None, typer.Option("--out", help="New directory for the bundle.")] = None,
    check: Annotated[
        Path | None, typer.Option(help="Only check an existing bundle (subset, 38 tasks, official scale).")
    ] = None,
    include_checkpoint: Annotated[bool, typer.Option(help="Bundle (and upload) the checkpoint too.")] = False,
    hf_repo: Annotated[
        str | None, typer.Option(help="USER/NAME: upload like DataComp's --submit (needs network + login).")
    ] = None,
) -> None:
    """Bundle a strategy's submission (subset, results, scores, config, training record, checksums),
    check it as the benchmark would, and optionally upload it to the Hugging Face hub."""
    from curate.storage import refuse_url
    from curate.submit import build_bundle, check_bundle, upload

    if run_dir is not None:
        refuse_url(run_dir, "RUN_DIR", "submit")
    if check is not None:
        if run_dir or strategy or out_dir:
            raise CurateError("--check DIR takes no run, --strategy or --out")
        bundle = check
    else:
        if run_dir is None or strategy is None or out_dir is None:
            raise CurateError("give RUN --strategy NAME --out DIR (or --check DIR for an existing bundle)")
        bundle = build_bundle(run_dir, strategy, out_dir, include_checkpoint=include_checkpoint)
        err.print(f"bundle: {bundle}")
    report_ = check_bundle(bundle)
    for note in report_.notes:
        err.print(f"  {escape(note)}", highlight=False, soft_wrap=True)
    if not report_.ok:
        for problem in report_.problems:
            err.print(f"  [red]refused:[/] {escape(problem)}", highlight=False, soft_wrap=True)
        kept = " (the bundle is kept for inspection)" if check is None else ""
        err.print(f"not a valid DataComp submission{kept}")
        raise typer.Exit(1)
    err.print("[green]valid DataComp submission[/]")
    if hf_repo:
        err.print(f"uploaded: {upload(bundle, hf_repo)}")


@app.command("sql")
@user_errors
def sql_cmd(
    query: Annotated[
        str | None,
        typer.Argument(help="SQL text, a .sql file, or a named query (funnel, sql/funnel.sql); see --list."),
    ] = None,
    run_dir: Annotated[Path | None, typer.Option("--run", help="A run directory.")] = None,
    metadata: Annotated[
        str | None, typer.Option(help="A plain DataComp metadata directory (a `samples` view only).")
    ] = None,
    param: Annotated[
        list[str] | None, typer.Option(help="NAME=VALUE for a named query's $NAME (repeatable).")
    ] = None,
    fmt: Annotated[
        str, typer.Option("--format", help="table, csv, parquet or json (one object per line).")
    ] = "table",
    out_file: Annotated[Path | None, typer.Option("--out", help="File for csv/parquet/json output.")] = None,
    limit: Annotated[int, typer.Option(min=1, help="Rows shown in the terminal table.")] = 50,
    list_queries: Annotated[bool, typer.Option("--list", help="List the named queries and exit.")] = False,
) -> None:
    """DuckDB SQL over a run's tables: samples, shards, decisions, subsets, eval, stages (read-only)."""
    from curate import sql
    from curate.storage import refuse_url

    if run_dir is not None:
        refuse_url(run_dir, "--run", "sql")
    if list_queries:
        table = Table(title="named queries (sql/)")
        for col in ("name", "parameters", "what it answers"):
            table.add_column(col)
        for name, q in sql.library().items():
            table.add_row(name, ", ".join(f"{k}={v}" for k, v in q.params.items()), escape(q.description))
        out.print(table)
        return
    if query is None:
        raise CurateError("give a query: SQL text, a .sql file or a named query (curate sql --list)")
    if fmt not in sql.FORMATS:
        raise CurateError(f"--format {fmt}: must be one of {', '.join(sql.FORMATS)}")
    if (fmt == "table") != (out_file is None):
        raise CurateError("--out FILE goes with --format csv|parquet|json (the table format prints)")
    q = sql.resolve_query(query)
    given = dict(_key_value(p) for p in param or [])
    params = sql.bind_params(q, given)
    con, views = sql.connect(run_dir, metadata, wanted=q.text)
    if out_file is not None:
        n = sql.write_result(con, views, q, params, fmt, out_file)
        err.print(f"{n:,} rows -> {out_file}")
        return
    columns, rows, more = sql.fetch_rows(con, views, q, params, limit)
    table = Table(title=q.description or None, title_justify="left")
    for col in columns:
        table.add_column(escape(col), overflow="fold")
    for row in rows:
        table.add_row(*(escape(sql.show_value(v)) for v in row))
    out.print(table)
    err.print(f"{len(rows)} rows" + (" shown (more exist; raise --limit or use --out)" if more else ""))


@app.command("evaluate")
@user_errors
def evaluate_cmd(
    arch: Annotated[str, typer.Option(help="open_clip architecture (e.g. ViT-B-32, curate-tiny-vit64).")],
    checkpoint: Annotated[Path, typer.Option(help="Checkpoint file (open_clip's epoch_*.pt).")],
    data_dir: Annotated[Path, typer.Option(help="Eval sets in DataComp's layout (curate evalsets fetch).")],
    tasks: Annotated[
        str, typer.Option(help="all (DataComp's 40 tasks) or comma-separated task keys (and extras).")
    ] = "all",
    out_dir: Annotated[
        Path | None, typer.Option("--out", help="Output folder (default: <checkpoint>.eval/ next to it).")
    ] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Images per batch.")] = 64,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
) -> None:
    """Evaluate a checkpoint on DataComp's tasks: eval_results.jsonl (resumable) and scores.json."""
    from curate.eval.evaluate import ModelInfo, evaluate_model
    from curate.eval.tasks import get_task, select_tasks

    selected = select_tasks(tasks, where="--tasks")
    if not checkpoint.is_file():
        raise CurateError(f"--checkpoint: file not found (got '{checkpoint}')")
    if not data_dir.is_dir():
        raise CurateError(f"--data-dir: directory not found (got '{data_dir}')")
    if device not in ("auto", "cpu") and not device.startswith("cuda"):
        raise CurateError(f"--device: must be auto, cpu or cuda (got '{device}')")
    target = out_dir or checkpoint.with_name(checkpoint.name + ".eval")
    scores = evaluate_model(
        ModelInfo(arch, str(checkpoint)),
        data_dir,
        target,
        selected,
        batch_size=batch_size,
        device=device,
        log=lambda msg: err.print(escape(msg), highlight=False, soft_wrap=True),
    )
    table = Table(title=f"{escape(arch)} {escape(str(checkpoint))}")
    for col in ("task", "main metric", "value"):
        table.add_column(col, justify="right" if col == "value" else "left")
    for key, entry in {**scores["tasks"], **scores["extra"]}.items():
        value = entry["main_metric"]
        task = get_task(key)
        table.add_row(
            escape(entry["dataset"]),
            task.main_metric or "(unscored)",
            f"{value:.4f}" if isinstance(value, float) else ("missing" if key in scores["missing"] else "-"),
        )
    for name, agg in scores["aggregates"].items():
        value = agg["score"]
        shown = f"{value:.4f}" if value is not None else "-"
        partial = " (partial)" if agg["partial"] else ""
        table.add_row(f"[bold]{escape(name)}[/]", f"covers {agg['covered']}", shown + partial)
    out.print(table)
    err.print(f"results in {escape(str(target))}", highlight=False, soft_wrap=True)


def _key_value(text: str) -> tuple[str, str]:
    if "=" not in text:
        raise CurateError(f"--param {text}: expected NAME=VALUE")
    key, value = text.split("=", 1)
    return key.strip(), value


from curate.cli_evalsets import make_evalsets_app  # noqa: E402

app.add_typer(make_evalsets_app(user_errors, err, out), name="evalsets")


def main() -> None:
    app(prog_name="curate")


if __name__ == "__main__":
    sys.exit(main())
