"""Strategy expressions: parsing with every problem at once, all/any/not, reasons, leaf paths."""

from __future__ import annotations

import numpy as np
import pytest

from curate.errors import ConfigError
from curate.filtering.compose import parse_strategies, parse_strategy
from tests.metadata_parts import batch, rows

TOY = "tests.filtering.toy_filters:AtLeast"


def _at_least(column: str, value: float) -> dict:
    return {TOY: {"column": column, "value": value}}


def _data() -> dict:
    # every combination of (a >= 1, b >= 1): rows FF, FT, TF, TT
    return rows(4, a=[0, 0, 1, 1], b=[0, 1, 0, 1])


def _keep(expr: object) -> list[bool]:
    return parse_strategy("s", expr).evaluate(batch(_data())).keep.tolist()


def test_all_any_not_truth_tables() -> None:
    a, b = _at_least("a", 1), _at_least("b", 1)
    assert _keep({"all": [a, b]}) == [False, False, False, True]
    assert _keep({"any": [a, b]}) == [False, True, True, True]
    assert _keep({"not": a}) == [True, True, False, False]
    assert _keep({"all": [a, {"not": b}]}) == [False, False, True, False]
    assert _keep({"any": [{"all": [a, b]}, {"not": {"any": [a, b]}}]}) == [True, False, False, True]
    assert _keep({"all": [b, a]}) == _keep({"all": [a, b]})  # order does not change the set


def test_leaf_paths_reasons_and_masks() -> None:
    expr = {"all": [_at_least("a", 1), {"any": [_at_least("b", 1), {"not": _at_least("a", 1)}]}]}
    ev = parse_strategy("s", expr).evaluate(batch(_data()))
    assert list(ev.leaves) == [f"all.0.{TOY}", f"all.1.any.0.{TOY}", f"all.1.any.1.not.{TOY}"]
    assert sorted(ev.masks) == sorted([*ev.leaves, "all.1.any.1.not", "all.1.any", "all"])
    assert ev.keep.tolist() == [False, False, False, True]
    assert ev.reason.tolist() == [
        f"all.0.{TOY}: a < 1.0",  # the first failing child, in expression order
        f"all.0.{TOY}: a < 1.0",
        f"none passed: all.1.any.0.{TOY}: b < 1.0 | all.1.any.1.not: all.1.any.1.not.{TOY} passed",
        None,
    ]
    leaf = ev.leaves[f"all.0.{TOY}"]
    assert leaf.keep.tolist() == [False, False, True, True] and leaf.score.tolist() == [0, 0, 1, 1]


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(ConfigError) as exc:
        parse_strategies(
            {
                "one": {
                    "all": [{"clip_scor": {"model": "l14", "fraction": 0.3}}, {"basic_filter": {"x": 1}}]
                },
                "two": {"all": []},
                "three": {"clip_score": {"model": "l14", "fraction": 0.3}, "basic_filter": None},
                "four": {"no.such.module:Thing": None},
                "five": {"not": "curate.errors:CurateError"},
                "six": {"clip_score": {"model": "l14"}},
            }
        )
    problems = exc.value.problems
    assert len(problems) == 7, problems
    assert problems[0].startswith(
        "strategies.one.all.0.clip_scor: unknown filter 'clip_scor' (built-in filters:"
    )
    assert problems[0].endswith("did you mean 'clip_score'?")
    assert problems[1] == ("strategies.one.all.1.basic_filter.x: unknown parameter; valid: lid_model")
    assert problems[2].startswith("strategies.two.all: must be a non-empty list")
    assert problems[3].startswith("strategies.three: must hold exactly one key")
    assert problems[4].startswith(
        "strategies.four.no.such.module:Thing: filter 'no.such.module:Thing': cannot import"
    )
    assert problems[5].startswith("strategies.five.not.curate.errors:CurateError: filter")
    assert "is not a subclass of curate.filtering.base.Filter" in problems[5]
    assert problems[6] == (
        "strategies.six.clip_score: give exactly one of threshold or fraction (got {'model': 'l14'})"
    )


def test_third_party_params_are_validated() -> None:
    with pytest.raises(ConfigError) as exc:
        parse_strategy("s", {TOY: {"column": "a", "value": "high"}})
    (problem,) = exc.value.problems
    assert problem.startswith(f"strategies.s.{TOY}.value: Input should be a valid number")
    assert problem.endswith("(got 'high')")


def test_evaluation_is_deterministic() -> None:
    expr = {"any": [_at_least("a", 1), "basic_filter"]}
    first = parse_strategy("s", expr).evaluate(batch(_data()))
    second = parse_strategy("s", expr).evaluate(batch(_data()))
    assert np.array_equal(first.keep, second.keep) and first.reason.tolist() == second.reason.tolist()


def test_columns_and_embeddings_of_a_tree() -> None:
    strategy = parse_strategy(
        "s", {"all": [{"clip_score": {"model": "b32", "threshold": 0.3}}, "basic_filter"]}
    )
    assert strategy.columns() == ["clip_b32_similarity_score", "text", "original_width", "original_height"]
    assert [s.path for s in strategy.steps()] == ["all.0.clip_score", "all.1.basic_filter"]
    assert [s.path for s in parse_strategy("t", "no_filter").steps()] == ["no_filter"]
