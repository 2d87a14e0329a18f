"""End to end: a real tiny open_clip checkpoint over generated eval sets; resume; missing sets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from curate.errors import CurateError
from curate.eval.evaluate import ModelInfo, evaluate_model
from curate.eval.tasks import select_tasks
from tests.eval.eval_fixtures import ARCH, GENERATED, generated_sets, tiny_checkpoint

SELECTED = ["imagenet1k", *GENERATED]  # imagenet1k is not generated: a missing set


@pytest.fixture(scope="module")
def first_run(tmp_path_factory: pytest.TempPathFactory):
    base = tmp_path_factory.getbasetemp()
    out = tmp_path_factory.mktemp("eval") / "out"
    info = ModelInfo(ARCH, str(tiny_checkpoint(base)), scale="tiny", official=False)
    logs: list[str] = []
    scores = evaluate_model(
        info, generated_sets(base), out, select_tasks(SELECTED), batch_size=16, device="cpu", log=logs.append
    )
    return info, out, scores, logs


def _lines(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "eval_results.jsonl").read_text().splitlines()]


def test_lines_in_tasklist_order_with_datacomp_format(first_run) -> None:
    _, out, _, _ = first_run
    lines = _lines(out)
    order = [t.key for t in select_tasks(GENERATED)]
    assert [line["key"] for line in lines] == order
    by_key = {line["key"]: line for line in lines}
    for line in lines:
        assert list(line) == ["key", "dataset", "metrics"] and "main_metric" in line["metrics"]
    pcam = by_key["vtab/pcam"]["metrics"]
    assert pcam["acc5"] is None and pcam["main_metric"] == pcam["acc1"]
    assert 0 <= by_key["cifar10"]["metrics"]["acc5"] <= 1
    fmow = by_key["wilds/fmow"]["metrics"]
    assert fmow["main_metric"] == fmow["acc_worst_region"] and "acc_worst_year" in fmow
    assert by_key["fairness/geode"]["metrics"]["main_metric"] == by_key["fairness/geode"]["metrics"]["acc_wg"]
    assert by_key["fairness/fairface"]["metrics"]["main_metric"] is None
    assert "acc_gender_x_avg" in by_key["fairness/fairface"]["metrics"]
    flickr = by_key["retrieval/flickr_1k_test_image_text_retrieval"]["metrics"]
    assert flickr["main_metric"] == pytest.approx(
        0.5 * (flickr["text_retrieval_recall@1"] + flickr["image_retrieval_recall@1"])
    )
    assert "jaccard_score_10-12" in by_key["misc/winogavil"]["metrics"]


def test_scores_state_coverage_missing_and_model(first_run) -> None:
    _, out, scores, logs = first_run
    assert json.loads((out / "scores.json").read_text()) == scores
    assert scores["model"]["official"] is False and scores["model"]["scale"] == "tiny"
    assert list(scores["missing"]) == ["imagenet1k"]
    assert any("ImageNet 1k: skipped, eval data missing" in line for line in logs)
    agg = scores["aggregates"]
    assert agg["ImageNet"] == {"score": None, "covered": "0/1", "partial": True, "missing": ["imagenet1k"]}
    assert agg["Retrieval"]["covered"] == "2/3" and agg["Retrieval"]["partial"]
    assert agg["Average"]["covered"] == "6/38" and scores["complete"] is False
    assert "vtab/pcam" in scores["small_eval_sets"]
    assert scores["tasks"]["fairness/fairface"]["unscored"] is True


def test_resume_appends_nothing_then_recomputes_a_removed_line(first_run) -> None:
    info, out, scores, _ = first_run
    before = (out / "eval_results.jsonl").read_text()
    logs: list[str] = []
    again = evaluate_model(
        info, Path(scores["data_dir"]), out, select_tasks(SELECTED), device="cpu", log=logs.append
    )
    assert (out / "eval_results.jsonl").read_text() == before
    assert not any(line.startswith("loading") for line in logs)  # nothing to do: no model loaded
    assert again["aggregates"] == scores["aggregates"]
    kept = [line for line in before.splitlines() if '"key": "cifar10"' not in line]
    (out / "eval_results.jsonl").write_text("\n".join(kept) + "\n")
    logs.clear()
    evaluate_model(info, Path(scores["data_dir"]), out, select_tasks(SELECTED), device="cpu", log=logs.append)
    lines = _lines(out)
    assert [line["key"] for line in lines][-1] == "cifar10" and len(lines) == len(GENERATED)
    assert [line.split(":")[0] for line in logs if "samples" in line] == ["CIFAR-10"]
    original = next(json.loads(x) for x in before.splitlines() if '"key": "cifar10"' in x)
    assert lines[-1] == original  # same model, same data, same numbers


def test_other_model_in_same_output_is_refused(first_run, tmp_path_factory) -> None:
    _, out, scores, _ = first_run
    other = ModelInfo(ARCH, str(tiny_checkpoint(tmp_path_factory.getbasetemp(), seed=4)))
    with pytest.raises(CurateError, match="another model"):
        evaluate_model(other, Path(scores["data_dir"]), out, select_tasks("cifar10"), device="cpu")
