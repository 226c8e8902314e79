"""The matrix's bookkeeping without a broker or a model: few-shot prompts and how many shots fit, the
mixed plan over lanes, scoring per base and the few-shot column, the JSON per base, the console
table and the heatmap, and the land's config of several bases."""

from __future__ import annotations

import dataclasses

import pytest
from rich.console import Console

from land.base_model import BaseModelConfig
from land.bases import DEFAULT_BASES, FEWSHOT_BASE, LandBase
from land.evaluate import ADAPTER, BASE, Answer, EvalConfig
from land.fewshot import (
    SHOT_SEPARATOR,
    FewShotPlan,
    FewShotScore,
    few_shot_prompt,
    plan_fewshot_requests,
    score_fewshot,
    shots_that_fit,
)
from land.land import LandConfig
from land.matrix import FewShotColumn, MatrixResult
from land.matrix_report import heatmap_rows, matrix_table, save_heatmap
from land.matrix_run import LandLane, matrix_result, plan_matrix
from land.results import EvalResult, TaskResult
from land.spec import LandError, Metric, Task, TaskRow, TaskSpec

LABELS = TaskSpec("labels", Metric.ACCURACY, "### Text: {text}\n### Label:", labels=("yes", "no"), max_new_tokens=3)
TASK = Task(
    LABELS,
    tuple(TaskRow(f"### Text: train {i}\n### Label:", " yes" if i % 2 else " no") for i in range(20)),
    tuple(TaskRow(f"### Text: test {i}\n### Label:", " yes" if i % 2 else " no") for i in range(6)),
)


def words(text: str) -> int:
    """A stand-in tokenizer: one token per word, plus one (the BOS a real tokenizer adds)."""
    return len(text.split()) + 1


@pytest.mark.parametrize(
    ("max_positions", "max_shots", "expected"),
    [
        # k shots of 7 words, the test prompt's 6 and a BOS: 7k + 7 tokens, then an answer of 3
        (10, 4, 0),
        (16, 4, 0),
        (17, 4, 1),
        (38, 4, 4),
        (38, 2, 2),
        (37, 4, 3),
        (1000, 0, 0),
    ],
)
def test_shots_that_fit_leave_room_for_every_test_prompt_and_its_answer(max_positions, max_shots, expected):
    assert shots_that_fit(TASK, words, max_positions, max_shots) == expected


def test_no_shots_fit_when_the_test_prompt_does_not_and_only_the_rows_evaluated_count():
    with pytest.raises(LandError, match="do not fit in 9 tokens"):
        shots_that_fit(TASK, words, 9, 4)
    long_last = Task(LABELS, TASK.train, (*TASK.test[:-1], TaskRow("### Text: a very long one\n### Label:", " no")))
    assert shots_that_fit(long_last, words, 38, 4) == 3
    assert shots_that_fit(long_last, words, 38, 4, num_rows=len(TASK.test) - 1) == 4


def test_few_shot_prompt_is_k_solved_training_rows_then_the_test_prompt():
    prompt = few_shot_prompt(TASK, row=3, shots=3)
    parts = prompt.split(SHOT_SEPARATOR)
    assert len(parts) == 4 and parts[-1] == TASK.test[3].prompt
    solved = {row.prompt + row.completion for row in TASK.train}
    assert all(part in solved for part in parts[:3]) and len(set(parts[:3])) == 3
    assert few_shot_prompt(TASK, row=3, shots=3) == prompt  # seeded
    assert few_shot_prompt(TASK, row=4, shots=3).split(SHOT_SEPARATOR)[:3] != parts[:3]  # drawn per row
    assert few_shot_prompt(TASK, row=0, shots=0) == TASK.test[0].prompt
    assert words(prompt) + LABELS.max_new_tokens == 7 * 3 + 7 + 3  # what shots_that_fit counts
    with pytest.raises(ValueError):
        few_shot_prompt(TASK, row=0, shots=21)


def test_fewshot_requests_go_to_the_fewshot_base_without_an_adapter_and_are_scored():
    plan = FewShotPlan("base-big", {"labels": 2})
    items = plan_fewshot_requests([TASK], plan, EvalConfig(max_test_rows=4))
    assert [i.row for i in items] == [0, 1, 2, 3]
    assert {(i.base, i.adapter_id, i.target) for i in items} == {("base-big", None, BASE)}
    assert all(i.prompt.endswith(TASK.test[i.row].prompt) and i.prompt.count("### Label:") == 3 for i in items)
    answers = [Answer(i, i.gold if i.row < 3 else " maybe") for i in items]
    answers[0] = Answer(items[0], "", error="RequestTimeout")
    (scored,) = score_fewshot([TASK], answers, plan)
    assert scored == FewShotScore("labels", 2, 50.0, 4, num_failed=1, example="[RequestTimeout]")


def fake_answer(item) -> Answer:
    """llama's adapter is always right, qwen2's only on odd rows, the bases and the few-shot base never."""
    if item.target == ADAPTER and (item.base == "base-llama" or item.row % 2):
        return Answer(item, item.gold)
    return Answer(item, " perhaps")


def test_one_mixed_plan_over_every_lane_is_scored_per_base():
    lanes = [
        LandLane("llama", _path("base-llama"), adapter_ids={"labels": "land/llama/labels"}),
        LandLane("qwen2", _path("base-qwen"), adapter_ids={"labels": "land/qwen2/labels"}),
    ]
    plan = FewShotPlan("base-big", {"labels": 1})
    items = plan_matrix([TASK], lanes, plan, EvalConfig())
    assert len(items) == 2 * 2 * 6 + 6
    assert {(i.base, i.adapter_id) for i in items} == {
        ("base-llama", None), ("base-llama", "land/llama/labels"),
        ("base-qwen", None), ("base-qwen", "land/qwen2/labels"), ("base-big", None),
    }
    assert [i.base for i in items[:12]] != sorted(i.base for i in items[:12])  # lanes interleaved
    result = matrix_result([TASK], lanes, ("big", plan), [fake_answer(i) for i in items], wall_s=2.0)
    assert result.bases["llama"].tasks[0].adapter == 100.0 and result.bases["qwen2"].tasks[0].adapter == 50.0
    assert result.bases["llama"].num_requests == 12 and result.num_requests == 30
    assert result.fewshot.score("labels") == 0.0 and result.beaten_by_every_base() == ("labels",)


def _path(name: str):
    from pathlib import Path

    return Path("/nowhere") / name


def task_result(name: str, base: float, adapter: float) -> TaskResult:
    return TaskResult(name=name, metric="accuracy", adapter_id=f"land/{name}", num_rows=10, base=base, adapter=adapter)


def make_matrix(fewshot: FewShotColumn | None = None) -> MatrixResult:
    llama = EvalResult((task_result("a", 10, 90), task_result("b", 20, 60), task_result("c", 0, 30)), 60, 2.0)
    qwen2 = EvalResult((task_result("a", 0, 80), task_result("b", 30, 40), task_result("c", 10, 70)), 60, 2.0)
    return MatrixResult({"llama": llama, "qwen2": qwen2}, fewshot, num_requests=150, wall_s=3.0)


FEWSHOT = FewShotColumn(
    "big", (FewShotScore("a", 4, 50.0, 10), FewShotScore("b", 3, 50.0, 10), FewShotScore("c", 4, 40.0, 10))
)


def test_who_beats_the_fewshot_base_on_which_task():
    matrix = make_matrix(FEWSHOT)
    assert matrix.beats_fewshot("llama") == ("a", "b")
    assert matrix.beats_fewshot("qwen2") == ("a", "c")
    assert matrix.beaten_by_every_base() == ("a",)
    assert make_matrix().beats_fewshot("llama") == () and make_matrix().beaten_by_every_base() == ()


def test_matrix_json_has_one_entry_per_base_and_the_fewshot_column():
    body = make_matrix(FEWSHOT).to_json()
    assert list(body["bases"]) == ["llama", "qwen2"] and body["tasks"] == ["a", "b", "c"]
    assert body["bases"]["llama"]["mean_gain_points"] == pytest.approx((80 + 40 + 30) / 3)
    assert body["bases"]["qwen2"]["mean_gain_points"] == pytest.approx((80 + 10 + 60) / 3)
    c = body["bases"]["qwen2"]["tasks"]["c"]
    assert (c["base"], c["adapter"], c["gain"], c["metric"]) == (10, 70, 60, "accuracy")
    assert "wall_s" not in body["bases"]["llama"] and body["requests_per_s"] == 50.0
    few = body["fewshot"]
    assert few["base"] == "big" and few["mean"] == pytest.approx(140 / 3)
    assert few["tasks"]["b"] == {
        "score": 50.0, "shots": 3, "num_rows": 10, "num_failed": 0, "example": "", "beaten_by": ["llama"],
    }
    assert few["beaten_on"] == {"llama": 2, "qwen2": 2} and few["beaten_by_every_base_on"] == 1
    assert "fewshot" not in make_matrix().to_json()


def test_a_matrix_needs_the_same_tasks_everywhere():
    llama = make_matrix().bases["llama"]
    other = EvalResult((task_result("a", 0, 1),), 2, 1.0)
    with pytest.raises(ValueError, match="same tasks"):
        MatrixResult({"llama": llama, "qwen2": other}, None, 1, 1.0)
    with pytest.raises(ValueError, match="few-shot column"):
        MatrixResult({"llama": llama}, FewShotColumn("big", (FewShotScore("a", 1, 1.0, 1),)), 1, 1.0)
    with pytest.raises(ValueError, match="at least one base"):
        MatrixResult({}, None, 1, 1.0)


def test_console_matrix_and_heatmap(tmp_path):
    matrix = make_matrix(FEWSHOT)
    console = Console(record=True, width=140)
    console.print(matrix_table(matrix))
    text = console.export_text()
    assert "10.0 → 90.0 (+80.0)" in text and "big few-shot" in text and "46.7" in text
    rows = heatmap_rows(matrix)
    assert [label for label, _ in rows] == ["llama base", "llama + LoRA", "qwen2 base", "qwen2 + LoRA", "big few-shot"]
    assert rows[1][1] == [90, 60, 30, 60] and rows[4][1][-1] == pytest.approx(140 / 3)
    png = save_heatmap(tmp_path / "land.png", matrix)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_land_config_names_its_bases_once_and_keeps_the_first_as_the_base():
    config = LandConfig()
    assert [b.name for b in config.bases] == ["llama", "qwen2"] and config.fewshot_base == FEWSHOT_BASE
    assert {b.model.arch for b in DEFAULT_BASES} == {"llama", "qwen2"} and config.base == DEFAULT_BASES[0].model
    assert LandConfig(fewshot_base=None).fewshot_base is None
    with pytest.raises(ValueError, match="distinct names"):
        LandConfig(bases=(DEFAULT_BASES[0], LandBase("llama", FEWSHOT_BASE.model)), fewshot_base=None)
    with pytest.raises(ValueError, match="same model"):
        LandConfig(bases=(DEFAULT_BASES[0], LandBase("again", DEFAULT_BASES[0].model)))
    with pytest.raises(ValueError, match="base name"):
        LandBase("Not A Name", BaseModelConfig())
    with pytest.raises(ValueError, match="arch"):
        BaseModelConfig(arch="gpt2")


def test_the_fewshot_base_is_several_times_larger_and_reads_longer_blocks():
    small, large = DEFAULT_BASES[0].model, FEWSHOT_BASE.model

    def approx_params(c: BaseModelConfig) -> int:
        head = c.hidden // c.heads
        attention = 2 * c.hidden * c.hidden + 2 * c.hidden * c.kv_heads * head
        return c.layers * (attention + 3 * c.hidden * c.intermediate) + 2 * c.vocab_size * c.hidden

    assert approx_params(large) >= 3 * approx_params(small)
    assert large.seq_len_tokens >= 4 * small.seq_len_tokens and large.max_positions >= 2 * small.max_positions
    # a Llama keeps the fingerprint (and so the cache folder) it had before bases had a family
    assert DEFAULT_BASES[0].model.fingerprint() == "b6c8aed59bb1"
    assert dataclasses.replace(small, arch="qwen2").fingerprint() != small.fingerprint()


def test_the_longest_pretraining_starts_first_and_cached_bases_are_not_rebuilt(tmp_path, monkeypatch):
    from land import base_builds

    costs = {b.name: base_builds.pretraining_cost(b.model) for b in (*DEFAULT_BASES, FEWSHOT_BASE)}
    assert costs["llama-large"] > costs["llama"] + costs["qwen2"]  # it alone takes a core while they share one
    assert costs["llama"] == costs["qwen2"]
    for base in DEFAULT_BASES:
        folder = tmp_path / f"base-{base.model.fingerprint()}"
        folder.mkdir()
        (folder / "config.json").write_text("{}")
        (folder / "pretraining.json").write_text("{}")

    def no_build(*args, **kwargs):
        raise AssertionError("a cached base was built again")

    monkeypatch.setattr(base_builds, "cached_base", no_build)
    monkeypatch.setattr(base_builds, "base_with_progress", no_build)
    folders = base_builds.build_bases(tmp_path, DEFAULT_BASES, Console(), max_processes=2)
    assert folders == {b.name: tmp_path / f"base-{b.model.fingerprint()}" for b in DEFAULT_BASES}


def test_missing_bases_are_pretrained_side_by_side_in_their_own_processes(tmp_path):
    from land import base_builds

    tiny = BaseModelConfig(
        hidden=16, layers=1, heads=2, kv_heads=1, intermediate=32, vocab_size=300, corpus_lines=60,
        seq_len_tokens=16, batch_size=2, steps=3, warmup_steps=1,
    )
    bases = (LandBase("one", tiny), LandBase("two", dataclasses.replace(tiny, arch="qwen2", seed=1)))
    console = Console(record=True, width=120)
    folders = base_builds.build_bases(tmp_path, bases, console, max_processes=2)
    for base in bases:
        assert folders[base.name] == tmp_path / f"base-{base.model.fingerprint()}"
        assert (folders[base.name] / "pretraining.json").is_file()
    printed = console.export_text()
    assert "pretraining one" in printed and "pretraining two" in printed and "3/3" in printed
