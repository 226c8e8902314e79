"""Evaluation without a broker: request planning, scoring a fake answer set, a fake client, the
JSON / chart / leaderboard / land.md outputs, and the job ids that spread fine-tunes over workers."""

from __future__ import annotations

import json

import pytest
from aiokafka.partitioner import DefaultPartitioner
from rich.console import Console

from land.evaluate import (
    ADAPTER,
    BASE,
    Answer,
    EvalConfig,
    evaluate,
    plan_requests,
    score_answers,
)
from land.fewshot import FewShotScore
from land.land_doc import write_land_doc
from land.matrix import FewShotColumn, MatrixResult
from land.report import eval_title, leaderboard, misses_table, save_chart, write_json
from land.results import MAX_EXAMPLES, MAX_MISSES, EvalResult
from land.spec import Metric, Task, TaskRow, TaskSpec
from land.training_run import balanced_job_ids
from schemas import ErrorCode
from streamer import RequestFailed

LABELS = TaskSpec("labels", Metric.ACCURACY, "### Text: {text}\n### Label:", labels=("yes", "no"), max_new_tokens=3)
SUMS = TaskSpec("sums", Metric.LAST_NUMBER, "### Problem: {text}\n### Answer:", max_new_tokens=6)
TASKS = [
    Task(LABELS, (), tuple(TaskRow(f"### Text: {i}\n### Label:", " yes" if i % 2 else " no") for i in range(4))),
    Task(SUMS, (), tuple(TaskRow(f"### Problem: {i}+1\n### Answer:", f" {i + 1}") for i in range(5))),
]
ADAPTERS = {"labels": "land/labels", "sums": "land/sums"}


def test_plan_mixes_base_and_adapter_requests_of_every_task():
    items = plan_requests(TASKS, ADAPTERS, EvalConfig(max_test_rows=3))
    assert len(items) == 2 * (3 + 3)
    assert {(i.task, i.target, i.adapter_id) for i in items} == {
        ("labels", BASE, None),
        ("labels", ADAPTER, "land/labels"),
        ("sums", BASE, None),
        ("sums", ADAPTER, "land/sums"),
    }
    assert [i.task for i in items] != sorted(i.task for i in items)  # interleaved, not grouped
    assert items == plan_requests(TASKS, ADAPTERS, EvalConfig(max_test_rows=3))  # seeded
    with pytest.raises(ValueError, match="no adapter id"):
        plan_requests(TASKS, {"labels": "x"}, EvalConfig())


def fake_answer(item) -> Answer:
    """The adapter is always right; the base answers the label task with an echo, sums with junk."""
    if item.target == ADAPTER:
        return Answer(item, item.gold + "\n### trailing ramble")
    text = " yes or no" if item.task == "labels" else f" {item.row} apples and 0"
    return Answer(item, text)


def test_scoring_a_fake_answer_set():
    answers = [fake_answer(item) for item in plan_requests(TASKS, ADAPTERS, EvalConfig())]
    answers[0] = Answer(answers[0].item, "", error="RequestTimeout")  # a failure scores 0 and is counted
    results = {r.name: r for r in score_answers(TASKS, answers, ADAPTERS)}
    failed = answers[0].item
    rows = {"labels": 4, "sums": 5}
    for name, result in results.items():
        assert result.num_rows == rows[name]
        assert result.base == 0.0
        lost = 100.0 / rows[name] if (failed.task, failed.target) == (name, ADAPTER) else 0.0
        assert result.adapter == pytest.approx(100.0 - lost)
        assert result.num_failed_adapter + result.num_failed_base == (failed.task == name)
    assert results["labels"].example_base == " yes or no"


class FakeClient:
    """LoraClient's `generate`, answering from `fake_answer`; one request fails."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str | None, int]] = []

    async def generate(self, prompt, adapter_id=None, *, max_new_tokens, timeout_s):
        self.seen.append((prompt, adapter_id, max_new_tokens))
        if prompt.startswith("### Problem: 0+1") and adapter_id is None:
            raise RequestFailed("r1", ErrorCode.OVERLOADED, "busy")
        item = next(
            i for i in plan_requests(TASKS, ADAPTERS, EvalConfig()) if i.prompt == prompt and i.adapter_id == adapter_id
        )

        class Final:
            text = fake_answer(item).text

        return Final()


async def test_evaluate_sends_every_request_once_and_scores_them():
    client, answered = FakeClient(), []
    result = await evaluate(client, TASKS, ADAPTERS, EvalConfig(max_inflight=3), answered.append)
    assert result.num_requests == len(client.seen) == len(answered) == 18
    assert len(set(client.seen)) == 18
    assert {n for _, _, n in client.seen} == {3, 6}
    by_name = {t.name: t for t in result.tasks}
    assert by_name["sums"].num_failed_base == 1 and by_name["sums"].adapter == 100.0
    assert result.mean_gain_points == pytest.approx(100.0)


def make_result() -> EvalResult:
    answers = [fake_answer(item) for item in plan_requests(TASKS, ADAPTERS, EvalConfig())]
    return EvalResult(tuple(score_answers(TASKS, answers, ADAPTERS)), num_requests=len(answers), wall_s=2.0)


def test_json_round_trip_chart_and_leaderboard(tmp_path):
    result = make_result()
    path = write_json(tmp_path / "out" / "eval.json", result, {"note": "x"})
    body = json.loads(path.read_text())
    assert body["tasks"]["labels"]["base"] == 0.0 and body["tasks"]["labels"]["adapter"] == 100.0
    assert body["mean_gain_points"] == 100.0 and body["note"] == "x" and body["requests_per_s"] == 9.0
    assert EvalResult.from_json(body) == result
    png = save_chart(tmp_path / "eval.png", result)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    console = Console(record=True, width=100)
    console.print(leaderboard(result))
    text = console.export_text()
    assert "labels" in text and "+100.0" in text and "mean" in text


def test_misses_and_examples_are_kept_per_task_bounded_and_shown(tmp_path):
    """Issue 17: the report shows a sample of wrong answers (prompt, expected, got) per task, in the
    console and in the JSON, and is titled by what was evaluated."""
    rows = tuple(TaskRow(f"### Text: {i}\n### Label:", " yes" if i % 2 else " no") for i in range(12))
    task = Task(LABELS, (), rows)

    def answer(item) -> Answer:  # the adapter answers "yes" to everything: every even row is a miss
        return Answer(item, " yes" if item.target == ADAPTER else " maybe")

    answers = [answer(item) for item in plan_requests([task], {"labels": "acme/labels"}, EvalConfig())]
    scored = score_answers([task], answers, {"labels": "acme/labels"})[0]
    assert scored.adapter == 50.0
    assert [m.prompt for m in scored.misses] == [rows[i].prompt for i in (0, 2, 4, 6, 8)][:MAX_MISSES]
    assert all((m.gold, m.adapter, m.base, m.score) == (" no", " yes", " maybe", 0.0) for m in scored.misses)
    assert [e.prompt for e in scored.examples] == [r.prompt for r in rows[:MAX_EXAMPLES]]
    result = EvalResult((scored,), num_requests=len(answers), wall_s=1.0, title=eval_title(["labels"]))
    body = json.loads(write_json(tmp_path / "eval.json", result).read_text())
    assert body["title"] == "Base vs fine-tuned: labels"
    assert len(body["tasks"]["labels"]["misses"]) == MAX_MISSES and len(body["tasks"]["labels"]["examples"]) == 3
    assert body["tasks"]["labels"]["misses"][0] == {
        "prompt": "### Text: 0\n### Label:", "gold": " no", "base": " maybe", "adapter": " yes", "score": 0.0
    }
    assert EvalResult.from_json(body) == result
    console = Console(record=True, width=120)
    console.print(leaderboard(result))
    console.print(misses_table(result))
    text = console.export_text()
    assert "Base vs fine-tuned: labels" in text and "LoRA Land" not in text
    assert "Sample misses" in text and "### Text: 0 ### Label:" in text and text.count(" no ") >= MAX_MISSES
    assert misses_table(make_result()) is None  # an adapter that is always right has nothing to show


def test_land_doc_takes_every_figure_from_the_json(tmp_path):
    result = make_result()
    fewshot = FewShotColumn("big", (FewShotScore("labels", 3, 50.0, 4), FewShotScore("sums", 2, 100.0, 5)))
    matrix = MatrixResult({"llama": result, "qwen2": result}, fewshot, num_requests=46, wall_s=2.0)
    model = {"layers": 4, "hidden": 128, "steps": 1000, "batch_size": 16, "seq_len_tokens": 64, "max_positions": 256}
    extra = {
        "timings_s": {"base_s": 1.0, "train_s": 2.0, "eval_s": 3.0, "total_s": 6.0},
        "config": {
            "tasks": ["labels", "sums"],
            "steps": 7,
            "learning_rate": 0.005,
            "rank": 16,
            "target_modules": ["q_proj"],
            "batch_size": 16,
            "num_workers": 2,
            "max_shots": 4,
        },
        "models": {
            "llama": {"config": {**model, "arch": "llama"}, "num_params": 860000, "final_loss": 1.23, "pretrain_s": 90},
            "qwen2": {"config": {**model, "arch": "qwen2"}, "num_params": 860000, "final_loss": 1.31, "pretrain_s": 95},
            "big": {"config": {**model, "arch": "llama", "max_positions": 512}, "num_params": 3440000,
                    "final_loss": 1.01, "pretrain_s": 300},
        },
        "environment": {"cpus": 2, "platform": "Linux", "python": "3.11", "loadavg_1m_end": 0.5},
    }
    json_path = tmp_path / "bench" / "land.json"
    json_path.parent.mkdir()
    json_path.write_text(json.dumps({**matrix.to_json(), **extra}))
    doc = write_land_doc(tmp_path / "land.md", json_path, tmp_path / "bench" / "land.png").read_text()
    assert "**llama: mean gain +100.0 points**" in doc and "**qwen2: mean gain +100.0 points**" in doc
    assert "(bench/land.png)" in doc
    assert "| labels | accuracy | 0.0 | 100.0 | +100.0 | 0.0 | 100.0 | +100.0 | 50.0 |" in doc
    assert "| llama | llama | 0.9M | 4 × 128 |" in doc and "| 1.23 |" in doc and "| qwen2 | qwen2 |" in doc
    assert "| **total** | **6** |" in doc and "big 300 s" in doc
    # sums: 100 vs 100 is not a win; labels: 100 vs 50 is, for both bases
    assert "beat the few-shot big on 1 of 2 tasks (llama's on 1 of 2, qwen2's on 1 of 2)" in doc
    assert "4.0x the\nparameters" in doc and "| labels | 3 | 50.0 | 100.0 ✓ | 100.0 ✓ |" in doc
    assert "Mean few-shot score 75.0, against 0.0" in doc and "gift of scale" not in doc
    body = json.loads(json_path.read_text())
    body["fewshot"]["mean"] = 49.0  # closer to the small bases without examples than to their adapters: why
    json_path.write_text(json.dumps(body))
    doc = write_land_doc(tmp_path / "land.md", json_path, tmp_path / "bench" / "land.png").read_text()
    assert "Mean few-shot score 49.0, against 0.0" in doc and "gift of scale" in doc


@pytest.mark.parametrize("num_partitions", [1, 2, 3])
def test_job_ids_spread_fine_tunes_evenly_over_partitions(num_partitions):
    tasks = ["a", "b", "c", "d", "e", "f"]
    job_ids = balanced_job_ids(tasks, num_partitions, salt="base-1")
    partitions = list(range(num_partitions))
    placed = [DefaultPartitioner()(job_ids[t].encode(), partitions, partitions) for t in tasks]
    assert placed == [i % num_partitions for i in range(len(tasks))]
    assert len(set(job_ids.values())) == len(tasks)
