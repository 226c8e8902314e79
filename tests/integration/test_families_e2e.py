"""Every new family through Apache Kafka: base and adapter rows in one mixed batch equal PEFT's greedy
tokens, and a chat request is rendered exactly as `tokenizer.apply_chat_template` renders it.

qwen3, gemma, phi3 and phi (the bases the issue names) are served by a real `lorastream serve`
process; gemma2 and gemma3_text by the in-process InferenceService on KafkaTransport (the same
service, without a second interpreter's start-up). The gemma checkpoint's tokenizer ships a
Zephyr-style chat template.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import pytest

from consumers.config import ServeConfig
from consumers.inference import InferenceService
from consumers.serve import build_engine_thread
from gpu_engine.tiny import build_tiny_adapter, build_tiny_model, build_tiny_tokenizer
from schemas import ChatMessage, Final, TokenChunk
from streamer import KafkaConfig, LoraClient, TopicNames
from streamer.transport.kafka import KafkaTransport
from tests.engine.chat_models import ZEPHYR_TEMPLATE, greedy_answer
from tests.engine.engine_helpers import peft_greedy, peft_model
from tests.engine.test_engine_families import family_adapters
from tests.reliability.conftest import ServeProcess

pytestmark = pytest.mark.kafka

SUBPROCESS_FAMILIES = ("qwen3", "gemma", "phi3", "phi")
IN_PROCESS_FAMILIES = ("gemma2", "gemma3_text")
CHAT_FAMILY = "gemma"
ADAPTERS = ("all-linear", "attn")
PROMPTS = ("the cat sat on the mat", "a long river")
MESSAGES = [ChatMessage("system", "be brief"), ChatMessage("user", "the cat sat on the mat")]
MAX_NEW = 8
TIMEOUT_S = 180.0


@pytest.fixture(scope="module")
def tokenizer_dirs(tmp_path_factory) -> dict[str, Path]:
    """A plain tiny tokenizer and the same one with a chat template."""
    root = tmp_path_factory.mktemp("family-tokenizers")
    tokenizer = build_tiny_tokenizer(root / "plain")
    tokenizer.chat_template = ZEPHYR_TEMPLATE
    tokenizer.save_pretrained(str(root / "chat"))
    return {"plain": root / "plain", "chat": root / "chat"}


def build_family(root: Path, arch: str, tokenizer_dir: Path) -> tuple[Path, Path]:
    """(model_dir, adapter_root): a tiny `arch` checkpoint with the family's all-linear and attention adapters."""
    model_dir = build_tiny_model(root / "model", arch=arch, tokenizer_dir=tokenizer_dir)
    for seed, name in enumerate(ADAPTERS, start=1):
        rank, alpha, targets, rslora = family_adapters(arch)[name]
        build_tiny_adapter(model_dir, root / "adapters" / name, r=rank, alpha=alpha, target_modules=targets,
                           seed=seed, use_rslora=rslora)
    return model_dir, root / "adapters"


@contextlib.asynccontextmanager
async def serving(arch: str, model_dir: Path, adapter_root: Path, kafka: KafkaConfig, topics: TopicNames, log: Path):
    """Serve the checkpoint on `topics`: a `lorastream serve` process or the in-process service."""
    if arch in SUBPROCESS_FAMILIES:
        process = ServeProcess(
            [
                "--model", str(model_dir), "--adapters", str(adapter_root), "--device", "cpu",
                "--bootstrap-servers", kafka.bootstrap_servers, "--topic-prefix", topics.prefix,
                "--instance-id", f"families-{arch}", "--request-partitions", "1",
            ],
            log,
        )
        try:
            yield
        finally:
            process.close()
        return
    runner = build_engine_thread(model_path=str(model_dir), adapter_root=str(adapter_root), device="cpu")
    service = InferenceService(KafkaTransport(kafka), topics, ServeConfig(request_partitions=1), runner)
    task = asyncio.create_task(service.run())
    ready = asyncio.create_task(service.ready.wait())
    done, _ = await asyncio.wait({task, ready}, timeout=60, return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        task.result()
    assert ready in done, "inference service did not become ready in 60 s"
    try:
        yield
    finally:
        service.stop()
        await asyncio.wait_for(task, 60)


async def answer(client: LoraClient, **request) -> tuple[list[int], Final]:
    """The streamed token ids and the Final of one greedy request."""
    token_ids: list[int] = []
    async for record in client.stream(max_new_tokens=MAX_NEW, timeout_s=TIMEOUT_S, **request):
        if isinstance(record, TokenChunk):
            token_ids.extend(record.token_ids)
        elif isinstance(record, Final):
            return token_ids, record
    raise AssertionError(f"no Final for {request}")


@pytest.mark.parametrize("arch", SUBPROCESS_FAMILIES + IN_PROCESS_FAMILIES)
async def test_family_through_kafka_equals_peft_greedy(arch, kafka_bootstrap, topic_prefix, tokenizer_dirs, tmp_path):
    from transformers import AutoTokenizer

    tokenizer_dir = tokenizer_dirs["chat" if arch == CHAT_FAMILY else "plain"]
    model_dir, adapter_root = await asyncio.to_thread(build_family, tmp_path, arch, tokenizer_dir)
    kafka, topics = KafkaConfig(bootstrap_servers=kafka_bootstrap), TopicNames(topic_prefix)
    rows = [(prompt, adapter) for prompt in PROMPTS for adapter in (None, *ADAPTERS)]
    async with serving(arch, model_dir, adapter_root, kafka, topics, tmp_path / "serve.log"):
        async with LoraClient(config=kafka, topics=topics) as client:
            requests = [answer(client, prompt=prompt, adapter_id=adapter) for prompt, adapter in rows]
            if arch == CHAT_FAMILY:
                requests.append(answer(client, messages=MESSAGES))
            answers = await asyncio.gather(*requests)  # one mixed batch: base, both adapters, chat

    oracle = await asyncio.to_thread(peft_model, model_dir, adapter_root, list(ADAPTERS))
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    for (prompt, adapter), (token_ids, final) in zip(rows, answers):
        expected = peft_greedy(oracle, tokenizer, prompt, adapter, MAX_NEW)
        assert token_ids == expected, f"{arch} {adapter} {prompt!r}"
        assert final.usage.completion_tokens == len(expected)
    for p in range(len(PROMPTS)):  # the adapters change the answers: not base against base
        base_ids = answers[p * (1 + len(ADAPTERS))][0]
        assert any(answers[p * (1 + len(ADAPTERS)) + 1 + a][0] != base_ids for a in range(len(ADAPTERS)))
    if arch == CHAT_FAMILY:
        chat_ids, chat_final = answers[-1]
        turns = [{"role": m.role, "content": m.content} for m in MESSAGES]
        rendered = tokenizer.apply_chat_template(turns, add_generation_prompt=True, tokenize=True, return_dict=True)
        assert chat_final.usage.prompt_tokens == len(rendered["input_ids"])
        expected_ids, expected_text = await asyncio.to_thread(greedy_answer, model_dir, MESSAGES, MAX_NEW)
        assert chat_ids == expected_ids and chat_final.text == expected_text
