"""`curate evalsets`: get DataComp's evaluation data (fetch), or write small offline test sets (generate).

curate/cli.py builds this sub-app with its own error handling and consoles (`make_evalsets_app`), so this
module never imports curate.cli (which would be circular under `python -m curate.cli`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

TasksOption = Annotated[
    str, typer.Option("--tasks", help="Comma-separated task keys, or all (e.g. cifar10,vtab/svhn).")
]


def make_evalsets_app(
    user_errors: Callable[[Callable[..., Any]], Callable[..., Any]], err: Console, out: Console
) -> typer.Typer:
    """The `evalsets` sub-app, its commands wrapped in the main app's user-error handling."""
    evalsets_app = typer.Typer(
        no_args_is_help=True,
        help="Evaluation data: fetch DataComp's sets (network), or generate small offline test sets.",
    )

    @evalsets_app.command("fetch")
    @user_errors
    def fetch(
        data_dir: Annotated[Path, typer.Argument(help="data directory (evaluate.data_dir)")],
        tasks: TasksOption = "all",
    ) -> None:
        """Download DataComp's evaluation sets (like download_evalsets.py); complete ones are skipped."""
        from curate.eval.fetch import fetch_evalsets

        status = fetch_evalsets(data_dir, tasks, log=lambda line: err.print(escape(line)))
        fetched = sum(v == "fetched" for v in status.values())
        out.print(f"{fetched} fetched, {len(status) - fetched} already present, in {escape(str(data_dir))}")

    @evalsets_app.command("generate")
    @user_errors
    def generate(
        data_dir: Annotated[Path, typer.Argument(help="where the sets are written")],
        tasks: Annotated[
            str,
            typer.Option(
                "--tasks", help="Comma-separated task keys, or all (DataComp's 40 and openclipart)."
            ),
        ] = "all",
        per_class: Annotated[int, typer.Option("--per-class", min=1, help="Samples per class.")] = 2,
        seed: Annotated[int, typer.Option(help="Seed: equal seeds write equal files.")] = 0,
        openclipart_root: Annotated[
            str, typer.Option(help="Debian's openclipart (the images come from its holdout).")
        ] = "/usr/share/openclipart",
    ) -> None:
        """Write small evaluation sets in DataComp's formats from local images: TEST data, not benchmarks."""
        from curate.eval.generate import generate_evalsets

        result = generate_evalsets(
            data_dir, tasks, per_class=per_class, seed=seed, openclipart_root=openclipart_root
        )
        sets = result["tasks"]
        samples = sum(v["samples"] for v in sets.values())
        out.print(
            f"{len(sets)} evaluation sets ({samples} samples) written to {escape(str(data_dir))} in "
            f"{result['seconds']} s: test data in DataComp's formats; their scores are not benchmark scores"
        )
        for reason, count in result["skipped_sources"].items():
            err.print(f"skipped source image: {escape(reason)} ({count})")

    return evalsets_app
