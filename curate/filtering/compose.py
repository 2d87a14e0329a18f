"""Strategies: filter expressions (`all`, `any`, `not`, a filter name, `{name: {params}}`, `module:Class`)
parsed into trees of filter instances, and evaluated over a Batch.

Every leaf is named by its path in the expression (`all.0.clip_score`), which is also how its
verdict, score and reason columns are named in the decisions and how config problems are reported
(`strategies.<name>.all.0.clip_score.fraction: ...`). Parsing reports every problem at once.
Evaluation is deterministic: each leaf runs once per batch, in expression order.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pydantic import BaseModel, ValidationError

from curate.config import check_filter_expr
from curate.errors import ConfigError, CurateError
from curate.filtering.base import Batch, Filter, Verdict
from curate.filtering.registry import filter_class

OPS = ("all", "any", "not")


@dataclass
class Leaf:
    """One filter instance at `path` in the expression."""

    path: str
    filter: Filter

    @property
    def spec(self) -> str:
        return self.filter.describe()


@dataclass
class Node:
    """`all` / `any` over children, or `not` over one child."""

    op: str
    path: str
    children: list[Leaf | Node] = field(default_factory=list)


Tree = Leaf | Node


@dataclass
class Evaluation:
    """A strategy's answer for one batch: the final keep-mask and reason, and each leaf's verdict."""

    keep: np.ndarray
    codes: np.ndarray  # int32 per row: index into `labels` of why it was dropped, -1 where kept
    labels: list[str]  # "<leaf path>: <the filter's reason>", the first failing leaf in expression order
    leaves: dict[str, Verdict]
    masks: dict[str, np.ndarray]  # the keep-mask of every node and leaf, by path

    @property
    def reason(self) -> np.ndarray:
        return decode(self.codes, self.labels)


@dataclass
class Strategy:
    """A named filter tree."""

    name: str
    root: Tree
    expr: Any = None  # the expression as written, for hashing and messages
    prefix: str = ""  # how problems name it: `strategies.<name>` in a pipeline, `--strategy ` on the CLI

    def leaves(self) -> list[Leaf]:
        return list(_leaves(self.root))

    def columns(self) -> list[str]:
        return list(dict.fromkeys(c for leaf in self.leaves() for c in leaf.filter.columns()))

    def embeddings(self) -> list[str]:
        return list(dict.fromkeys(k for leaf in self.leaves() for k in leaf.filter.embeddings()))

    def steps(self) -> list[Tree]:
        """The funnel's steps: the children of a top-level `all`, else the whole tree."""
        return (
            list(self.root.children) if isinstance(self.root, Node) and self.root.op == "all" else [self.root]
        )

    def evaluate(self, batch: Batch, reasons: bool = True) -> Evaluation:
        """Every leaf once, in expression order. `reasons=False` skips collecting the per-row reasons
        (each dropped row then reads '<leaf path>: dropped'), for callers that only need the keep-mask."""
        verdicts: dict[str, Verdict] = {}
        masks: dict[str, np.ndarray] = {}
        keep, codes, labels = _evaluate(self.root, batch, verdicts, masks, reasons)
        return Evaluation(keep, codes, labels, verdicts, masks)


def _leaves(tree: Tree) -> Iterator[Leaf]:
    if isinstance(tree, Leaf):
        yield tree
    else:
        for child in tree.children:
            yield from _leaves(child)


def label(tree: Tree) -> str:
    """How a funnel step is shown: the leaf's filter with its parameters, or the sub-expression's path."""
    return f"{tree.path}: {tree.spec}" if isinstance(tree, Leaf) else tree.path


# ---------------------------------------------------------------- parsing


def _join(path: str, key: str) -> str:
    """Key paths joined with '.'; a prefix ending in a space (`--strategy `) is followed directly."""
    return f"{path}.{key}" if path and not path.endswith(" ") else f"{path}{key}"


def _parse(expr: Any, path: str, problems: list[str], where: str) -> Tree | None:
    """The tree of one (structurally valid) expression; problems get `where.path: ` prefixes."""
    if isinstance(expr, str):
        name, raw = expr, None
    else:
        ((name, raw),) = expr.items()
    if name in OPS:
        here = _join(path, name)
        subs = [raw] if name == "not" else raw
        keys = [here] if name == "not" else [_join(here, str(i)) for i in range(len(subs))]
        children = [_parse(sub, key, problems, where) for sub, key in zip(subs, keys, strict=True)]
        if any(c is None for c in children):
            return None
        return Node(name, here, [c for c in children if c is not None])
    here = _join(path, name)
    try:
        cls = filter_class(name)
    except ConfigError as exc:
        problems.append(f"{_join(where, here)}: {exc.message}")
        return None
    params, bad = _params(cls, raw)
    problems += [f"{_join(where, here)}{p}" for p in bad]
    if params is None:
        return None
    return Leaf(here, cls(params))


def _params(cls: type[Filter], raw: Any) -> tuple[BaseModel | None, list[str]]:
    """Validated parameters, or None and problems as '.key: what is wrong (got value)' (': ...' for the
    whole mapping), naming the valid keys for an unknown one."""
    try:
        return cls.Params.model_validate(raw or {}), []
    except ValidationError as exc:
        problems = []
        valid = list(cls.Params.model_fields)
        for err in exc.errors():
            key = "".join(f".{p}" for p in err["loc"]) or ""
            if err["type"] == "extra_forbidden":
                hint = difflib.get_close_matches(str(err["loc"][-1]), valid, n=1)
                msg = "unknown parameter" + (f" (did you mean '{hint[0]}'?)" if hint else "")
                msg += f"; valid: {', '.join(valid) or 'none'}"
            elif err["type"] == "missing":
                msg = "required parameter is missing"
            else:
                msg = err["msg"].removeprefix("Value error, ") + f" (got {err.get('input')!r})"
            problems.append(f"{key}: {msg}")
        return None, problems


def parse_strategy(name: str, expr: Any, prefix: str | None = None) -> Strategy:
    """One strategy's tree; ConfigError listing every problem as `<prefix>.<path>: problem` (the prefix
    is `strategies.<name>` unless given)."""
    problems: list[str] = []
    strategy = _parse_one(name, expr, _join("strategies", name) if prefix is None else prefix, problems)
    if strategy is None:
        raise ConfigError(
            f"{len(problems)} problem{'s' if len(problems) > 1 else ''} in strategy {name}", problems
        )
    return strategy


def _parse_one(name: str, expr: Any, prefix: str, problems: list[str]) -> Strategy | None:
    shape = check_filter_expr(expr)
    if shape:
        root = "(expression): "
        problems += [
            f"{prefix.rstrip()}: {p[len(root) :]}" if p.startswith(root) else _join(prefix, p) for p in shape
        ]
        return None
    tree = _parse(expr, "", problems, prefix)
    return None if tree is None else Strategy(name, tree, expr, prefix)


def parse_strategies(exprs: dict[str, Any], where: str = "strategies") -> dict[str, Strategy]:
    """Every strategy's tree; one ConfigError listing every problem of every strategy."""
    problems: list[str] = []
    out: dict[str, Strategy] = {}
    for name, expr in exprs.items():
        strategy = _parse_one(name, expr, _join(where, name), problems)
        if strategy is not None:
            out[name] = strategy
    if problems:
        n = len(problems)
        raise ConfigError(f"{n} problem{'s' if n > 1 else ''} in the filter strategies", problems)
    return out


def preflight_problems(
    strategies: dict[str, Strategy],
    columns: set[str] | None,
    embeddings: set[str] | None,
    produced_by: str = "",
) -> list[str]:
    """Problems that must stop a run before any work: each filter's own preflight, and columns or
    embeddings it needs that the data will not have (None: not checked)."""
    problems = []
    for strategy in strategies.values():
        for leaf in strategy.leaves():
            key = _join(strategy.prefix, leaf.path)
            problems += [f"{key}: {p}" for p in leaf.filter.preflight()]
            if columns is not None:
                missing = [c for c in leaf.filter.columns() if c not in columns]
                if missing:
                    problems.append(
                        f"{key}: needs column {', '.join(missing)}, which {produced_by or 'the metadata'} "
                        f"does not have (available: {', '.join(sorted(columns))})"
                    )
            if embeddings is not None:
                missing = [k for k in leaf.filter.embeddings() if k not in embeddings]
                if missing:
                    have = ", ".join(sorted(embeddings)) or "none"
                    problems.append(
                        f"{key}: needs embedding {', '.join(missing)}, which {produced_by or 'the metadata'} "
                        f"does not have (available: {have})"
                    )
    return problems


# ---------------------------------------------------------------- evaluation
# Reasons travel as (codes, labels): per row an index into a short list of distinct texts (-1: kept).
# Millions of rows share a handful of reasons, so this avoids building a string per dropped row.

Coded = tuple[np.ndarray, np.ndarray, list[str]]  # keep, codes (int32), labels


def factorize(reason: np.ndarray, keep: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """An object array of reasons as (codes, labels); rows kept get -1, a dropped row without a reason
    gets 'dropped'."""
    import pandas as pd

    values = np.where(keep, None, reason)
    codes, uniques = pd.factorize(values, use_na_sentinel=True)
    labels = [str(u) for u in uniques]
    missing = ~keep & (codes < 0)
    if missing.any():
        codes[missing] = len(labels)
        labels.append("dropped")
    return codes.astype(np.int32), labels


def decode(codes: np.ndarray, labels: list[str]) -> np.ndarray:
    """(codes, labels) back to an object array with None where kept."""
    table = np.array([*labels, None], dtype=object)
    return table[np.where(codes < 0, len(labels), codes)]


def _check(leaf: Leaf, verdict: Verdict, n: int) -> Verdict:
    if len(verdict.keep) != n:
        raise CurateError(
            f"filter {leaf.spec} at {leaf.path} returned {len(verdict.keep)} verdicts for {n} rows"
        )
    if verdict.reason is None:
        verdict.reason = np.full(n, None, dtype=object)
    verdict.reason = np.asarray(verdict.reason, dtype=object)
    if verdict.score is not None:
        verdict.score = np.asarray(verdict.score, dtype=np.float32)
    return verdict


def _evaluate(
    tree: Tree, batch: Batch, verdicts: dict[str, Verdict], masks: dict[str, np.ndarray], reasons: bool
) -> Coded:
    keep, codes, labels = _evaluate_node(tree, batch, verdicts, masks, reasons)
    masks[tree.path] = keep
    return keep, codes, labels


def _evaluate_node(
    tree: Tree, batch: Batch, verdicts: dict[str, Verdict], masks: dict[str, np.ndarray], reasons: bool
) -> Coded:
    n = len(batch)
    if isinstance(tree, Leaf):
        verdict = _check(tree, tree.filter.apply(batch), n)
        verdicts[tree.path] = verdict
        if reasons:
            codes, labels = factorize(verdict.reason, verdict.keep)
        else:
            codes, labels = np.where(verdict.keep, -1, 0).astype(np.int32), ["dropped"]
        return verdict.keep, codes, [f"{tree.path}: {x}" for x in labels]
    results = [_evaluate(child, batch, verdicts, masks, reasons) for child in tree.children]
    if tree.op == "not":
        keep, _, _ = results[0]
        codes = np.where(keep, 0, -1).astype(np.int32)
        return ~keep, codes, [f"{tree.path}: {tree.children[0].path} passed"]
    if tree.op == "all":
        keep = np.logical_and.reduce([k for k, _, _ in results])
        codes = np.full(n, -1, dtype=np.int32)
        labels: list[str] = []
        for k, c, lab in results:  # the first failing child (in expression order) gives the reason
            todo = (codes < 0) & ~k
            codes[todo] = c[todo] + len(labels)
            labels += lab
        return keep, codes, labels
    keep = np.logical_or.reduce([k for k, _, _ in results])
    stacked = np.stack([c for _, c, _ in results], axis=1)
    combos, inverse = np.unique(stacked[~keep], axis=0, return_inverse=True)
    codes = np.full(n, -1, dtype=np.int32)
    codes[~keep] = inverse.reshape(-1)
    labels = [
        "none passed: " + " | ".join(lab[c] for c, (_, _, lab) in zip(combo, results, strict=True))
        for combo in combos
    ]
    return keep, codes, labels
