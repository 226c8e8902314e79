"""Issue 17's journey, as a new user walks it, through Apache Kafka on a tiny pretrained base:
a JSONL file of their own (300 headline → topic rows) → `lorastream train` with every setting left
to its default → the adapter beats the base on held-out rows → `lorastream eval` (a task file
without a template) shows the gain and sample misses.

Why headlines and not reviews: on the land's base, 300 review → sentiment rows teach an adapter the
label set but not the mapping (it answers "negative" to everything, 30% on held-out rows, with any
of the settings tried: lr 2e-3 and 5e-3, 150 and 400 steps, dropout 0 and 0.05); the land's
sentiment adapter learns from 2000 rows. 300 headline rows are enough (72.5% in a run outside Kafka).

The base is the land's quick one (the land's shape, 200 pretraining steps: what `lorastream land
--quick` builds). A training worker and an inference consumer run in this process, as `train-worker`
and `serve` would; `train` and `eval` run as the user runs them, as `lorastream` processes.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from consumers.training.config import TrainWorkerConfig
from land.base_model import cached_base
from land.land import quick_config
from land.tasks import builtin_task
from streamer import TopicNames
from streamer.admin import list_topics

pytestmark = pytest.mark.kafka

NUM_TRAIN_ROWS = 300
NUM_TEST_ROWS = 40
# held-out rows with a label the training rows never show: the adapter cannot get them right, so
# the report has misses to show whatever the rest scores
UNSEEN_LABEL_ROWS = 3
READY_TIMEOUT_S = 120
COMMAND_TIMEOUT_S = 600


@pytest.fixture(scope="module")
def land_base(tmp_path_factory) -> Path:
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one thread pretrains a tiny model fastest on a busy 2-core box
    try:
        return cached_base(tmp_path_factory.mktemp("land"), quick_config("unused").base)
    finally:
        torch.set_num_threads(threads)


def write_users_files(folder: Path) -> tuple[Path, Path]:
    """The user's data: headline → topic rows as prompt/completion JSONL, and an eval task file
    (no template: the rows carry ready prompts) over held-out rows."""
    task = builtin_task("topic")
    folder.mkdir(parents=True, exist_ok=True)
    train = folder / "headlines.jsonl"
    train.write_text("".join(json.dumps({"prompt": r.prompt, "completion": r.completion}) + "\n" for r in task.train[:NUM_TRAIN_ROWS]))
    unseen = task.test[NUM_TEST_ROWS : NUM_TEST_ROWS + UNSEEN_LABEL_ROWS]  # first: misses keep the first rows missed
    held_out = [{"prompt": r.prompt, "completion": " weather"} for r in unseen]
    held_out += [{"prompt": r.prompt, "completion": r.completion} for r in task.test[:NUM_TEST_ROWS]]
    (folder / "held_out.jsonl").write_text("".join(json.dumps(row) + "\n" for row in held_out))
    task_file = folder / "headlines.json"
    task_file.write_text(json.dumps({
        "name": "headlines", "metric": "accuracy", "labels": [*task.spec.labels, "weather"],
        "test": "held_out.jsonl", "max_new_tokens": 4,
    }))  # fmt: skip
    return train, task_file


@asynccontextmanager
async def services(kafka_config, topics: TopicNames, base: Path, tmp_path: Path, data_dir: Path):
    """A training worker and an inference consumer on this event loop, sharing the adapter root."""
    from consumers.config import ServeConfig
    from consumers.inference import InferenceService
    from consumers.serve import build_engine_thread
    from consumers.training.worker import TrainingWorker
    from streamer.transport.kafka import KafkaTransport

    adapters = tmp_path / "adapters"
    adapters.mkdir()
    worker = TrainingWorker(
        KafkaTransport(kafka_config),
        topics,
        TrainWorkerConfig(
            base_model_path=str(base), adapter_root=str(adapters), work_dir=str(tmp_path / "jobs"),
            dataset_roots=(str(data_dir),), device="cpu", job_threads=1, progress_interval_s=1.0,
            training_partitions=1,
        ),  # fmt: skip
    )
    runner = await asyncio.to_thread(build_engine_thread, model_path=str(base), adapter_root=str(adapters), device="cpu")
    service = InferenceService(KafkaTransport(kafka_config), topics, ServeConfig(request_partitions=2), runner)
    runs = [asyncio.create_task(worker.run()), asyncio.create_task(service.run())]
    try:
        ready = asyncio.gather(worker.ready.wait(), service.ready.wait())
        done, _ = await asyncio.wait({*runs, ready}, timeout=READY_TIMEOUT_S, return_when=asyncio.FIRST_COMPLETED)
        for run in runs:
            if run in done:
                run.result()
        assert ready in done, "training worker or inference consumer not ready"
        yield
    finally:
        worker.stop()
        service.stop()
        await asyncio.wait_for(asyncio.gather(*runs, return_exceptions=True), READY_TIMEOUT_S)


async def lorastream(*args: str, kafka_config, topics: TopicNames, cwd: Path) -> tuple[int, str]:
    """`lorastream ARGS` as a user runs it, output piped; (exit code, stdout + stderr)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cli", *args,
        "--bootstrap-servers", kafka_config.bootstrap_servers, "--topic-prefix", topics.prefix,
        cwd=cwd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2]), "COLUMNS": "200"},
    )  # fmt: skip
    output, _ = await asyncio.wait_for(process.communicate(), COMMAND_TIMEOUT_S)
    return process.returncode, output.decode()


async def test_own_jsonl_to_a_served_adapter_that_beats_the_base(kafka_config, topic_names, land_base, tmp_path):
    data_dir = tmp_path / "data"
    train_file, task_file = write_users_files(data_dir)
    async with services(kafka_config, topic_names, land_base, tmp_path, data_dir):
        code, trained = await lorastream(
            "train", "--adapter", "acme/headlines", "--dataset", str(train_file),
            kafka_config=kafka_config, topics=topic_names, cwd=tmp_path,
        )  # fmt: skip
        assert code == 0, trained
        code, evaluated = await lorastream(
            "eval", "--task", str(task_file), "--adapter", "headlines=acme/headlines",
            "--json", "eval.json", "--plot", "eval.png",
            kafka_config=kafka_config, topics=topic_names, cwd=tmp_path,
        )  # fmt: skip
        assert code == 0, evaluated
    print(trained, evaluated, sep="\n")  # what the user sees (pytest -s shows it)

    # train: defaults chosen for the base's size, said in words; a line per event when piped
    assert "chosen for a 1.0M-parameter base: r 16, alpha 32, lr 0.005, all-linear" in trained, trained
    assert "max_seq_len 512 clamped to the base's 256 positions" in trained
    progress = [line for line in trained.splitlines() if " progress " in line]
    assert progress and all(line.startswith("acme/headlines (job ") and "/150" in line for line in progress), trained
    assert "completed acme/headlines" in trained

    # eval: titled by the user's task, the adapter beats the base, misses shown and kept
    report = json.loads((tmp_path / "eval.json").read_text())
    headlines = report["tasks"]["headlines"]
    assert report["title"] == "Base vs fine-tuned: headlines" and "LoRA Land" not in evaluated
    assert headlines["num_rows"] == NUM_TEST_ROWS + UNSEEN_LABEL_ROWS
    assert headlines["adapter"] > headlines["base"] + 20, headlines
    assert headlines["adapter"] <= 100.0 * NUM_TEST_ROWS / (NUM_TEST_ROWS + UNSEEN_LABEL_ROWS)
    missed_gold = {miss["gold"] for miss in headlines["misses"]}
    assert " weather" in missed_gold and 1 <= len(headlines["misses"]) <= 5
    assert "Sample misses" in evaluated and "weather" in evaluated
    assert f"{headlines['gain']:+.1f}" in evaluated

    # what the other half of issue 17 asks: no reply topic of `train` or `eval` outlives them
    left = [name for name in await list_topics(kafka_config, prefix=topic_names.prefix) if ".replies." in name]
    assert left == [], left
