"""Every base of the land served at once, each by its own inference consumer in its own lane, and
one mixed run through Kafka: every test prompt of every (base, task) — to the base and to its
adapter — and every few-shot prompt to the larger base, shuffled together.

Each consumer reads `<prefix>.requests.base.<base name>` in its own group (`ServeConfig.base_lane`);
the client finds a base's lane in the catalogue the consumers announce on, so a request names only
its base (`base=`) and its adapter.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console

from land.evaluate import Answer, EvalConfig, EvalItem, collect_answers, eval_result, plan_requests
from land.fewshot import FewShotPlan, plan_fewshot_requests, score_fewshot, shots_that_fit
from land.matrix import FewShotColumn, MatrixResult
from land.session import answer_progress
from land.spec import LandError, Task
from schemas import ErrorCode
from streamer import KafkaConfig, LoraClient, RequestFailed, TopicNames

_SERVICE_READY_TIMEOUT_S = 120.0
_CATALOGUE_TIMEOUT_S = 30.0
_CATALOGUE_RETRY_S = 0.2


@dataclass(frozen=True)
class LandLane:
    """A base as served in the run: its report name, its folder, its adapters (task → adapter id)."""

    name: str
    model_dir: Path
    adapter_root: Path | None = None
    adapter_ids: dict[str, str] = field(default_factory=dict)

    @property
    def base_name(self) -> str:
        """The base's name on the wire: the engine names a base after its folder."""
        return self.model_dir.name


@contextlib.asynccontextmanager
async def serving(kafka: KafkaConfig, topics: TopicNames, lanes: Sequence[LandLane]) -> AsyncIterator[None]:
    """One inference consumer per lane in this process (each engine on its own thread) until the block ends."""
    from consumers.config import ServeConfig
    from consumers.inference import InferenceService
    from consumers.serve import build_engine_thread
    from streamer.transport.kafka import KafkaTransport

    services, runs = [], []
    try:
        for lane in lanes:
            root = None if lane.adapter_root is None else str(lane.adapter_root)
            runner = await asyncio.to_thread(
                build_engine_thread, model_path=str(lane.model_dir), adapter_root=root, device="cpu"
            )
            config = ServeConfig(request_partitions=4, base_lane=True, consumer_id=f"land-{lane.name}")
            services.append(InferenceService(KafkaTransport(kafka), topics, config, runner))
            runs.append(asyncio.create_task(services[-1].run(), name=f"land-serve-{lane.name}"))
        ready = asyncio.gather(*(service.ready.wait() for service in services))
        done, _ = await asyncio.wait({*runs, ready}, timeout=_SERVICE_READY_TIMEOUT_S, return_when=asyncio.FIRST_COMPLETED)
        for run in runs:
            if run in done:
                run.result()  # a consumer that ended before it was ready raises its error here
        if ready not in done:
            ready.cancel()
            raise LandError(f"inference consumers not ready within {_SERVICE_READY_TIMEOUT_S:.0f}s")
        yield
    finally:
        for service in services:
            service.stop()
        await asyncio.gather(*runs, return_exceptions=True)


async def wait_for_lanes(client: LoraClient, base_names: Sequence[str]) -> None:
    """Until the client's catalogue shows a live consumer of every base (raises LandError after a while)."""
    deadline = time.monotonic() + _CATALOGUE_TIMEOUT_S
    for base in base_names:
        while True:
            try:
                await client.requests_topic(base)
                break
            except RequestFailed as exc:
                if exc.code is not ErrorCode.BASE_NOT_SERVED or time.monotonic() > deadline:
                    raise LandError(f"base {base} not in the catalogue: {exc}") from exc
                await asyncio.sleep(_CATALOGUE_RETRY_S)


def fewshot_plan(
    lane: LandLane, tasks: Sequence[Task], max_tokens: int, max_shots: int, config: EvalConfig
) -> FewShotPlan:
    """The shots per task that fit `max_tokens` of the few-shot base, counted with its own tokenizer."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(lane.model_dir))

    def count_tokens(text: str) -> int:
        return len(tokenizer(text)["input_ids"])

    return FewShotPlan(
        lane.base_name,
        {
            task.name: shots_that_fit(task, count_tokens, max_tokens, max_shots, config.max_test_rows, config.shuffle_seed)
            for task in tasks
        },
    )


def plan_matrix(
    tasks: Sequence[Task], lanes: Sequence[LandLane], fewshot: FewShotPlan | None, config: EvalConfig
) -> list[EvalItem]:
    """Every request of the run, shuffled together (seeded)."""
    items = [item for lane in lanes for item in plan_requests(tasks, lane.adapter_ids, config, lane.base_name)]
    if fewshot is not None:
        items.extend(plan_fewshot_requests(tasks, fewshot, config))
    random.Random(config.shuffle_seed).shuffle(items)
    return items


def matrix_result(
    tasks: Sequence[Task],
    lanes: Sequence[LandLane],
    fewshot: tuple[str, FewShotPlan] | None,
    answers: Sequence[Answer],
    wall_s: float,
) -> MatrixResult:
    """Score the answers per base (and the few-shot column, named `fewshot[0]`)."""
    bases = {
        lane.name: eval_result(
            tasks,
            [a for a in answers if a.item.base == lane.base_name],
            lane.adapter_ids,
            wall_s,
            f"{lane.name}: base vs fine-tuned",
        )
        for lane in lanes
    }
    column = None
    if fewshot is not None:
        name, plan = fewshot
        column = FewShotColumn(name, tuple(score_fewshot(tasks, answers, plan)))
    return MatrixResult(bases, column, len(answers), wall_s)


async def serve_and_evaluate_matrix(
    kafka: KafkaConfig,
    topics: TopicNames,
    tasks: Sequence[Task],
    lanes: Sequence[LandLane],
    fewshot: tuple[LandLane, FewShotPlan] | None,
    config: EvalConfig,
    console: Console,
) -> MatrixResult:
    """Serve every lane (and the few-shot base), send the whole mixed run, score it."""
    served = [*lanes, *([fewshot[0]] if fewshot else [])]
    plan = None if fewshot is None else fewshot[1]
    items = plan_matrix(tasks, lanes, plan, config)
    async with serving(kafka, topics, served):
        console.print(
            f"serving {len(served)} bases side by side, each by its own consumer in its own lane: "
            + ", ".join(f"{lane.name} ({len(lane.adapter_ids)} adapters)" for lane in served)
        )
        async with LoraClient(config=kafka, topics=topics, request_timeout_s=config.timeout_s) as client:
            await wait_for_lanes(client, [lane.base_name for lane in served])
            started = time.monotonic()
            answers = await _collect_with_progress(client, items, config, console)
            wall_s = time.monotonic() - started
    return matrix_result(tasks, lanes, None if fewshot is None else (fewshot[0].name, fewshot[1]), answers, wall_s)


async def _collect_with_progress(
    client: LoraClient, items: Sequence[EvalItem], config: EvalConfig, console: Console
) -> list[Answer]:
    with answer_progress(console, len(items)) as on_answer:
        return await collect_answers(client, items, config, on_answer)
