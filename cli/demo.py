"""`lorastream demo`: the whole path on this machine, no Java and no Kafka install needed.

Builds a tiny Llama model and two PEFT adapters, starts the embedded Tansu broker and an
inference consumer in this process (engine on its own thread), then streams answers from the
base model and from each adapter through Kafka, and finishes with a mixed concurrent burst.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from rich.table import Table

from cli.commands import console, print_final
from consumers.config import ServeConfig
from consumers.inference import InferenceService
from consumers.serve import build_runner
from schemas import Final
from streamer import KafkaConfig, LoraClient, TansuBroker, TopicNames

ADAPTERS = {
    "demo/sentiment": dict(r=8, alpha=16, target_modules=("q_proj", "v_proj"), seed=11),
    "demo/summarize": dict(r=16, alpha=32, target_modules=("q_proj", "k_proj", "v_proj", "o_proj"), seed=22),
}
PROMPT = "The quick brown fox"


def prepare_models(workdir: Path) -> tuple[Path, Path]:
    """The tiny model and adapters, built once and reused by later runs."""
    from gpu_engine.tiny import build_tiny_adapter, build_tiny_model

    model_dir, adapter_root = workdir / "model", workdir / "adapters"
    if not (model_dir / "config.json").exists():
        build_tiny_model(model_dir, hidden=128, layers=4, heads=4, kv_heads=2)
    for adapter_id, spec in ADAPTERS.items():
        if not (adapter_root / adapter_id / "adapter_config.json").exists():
            build_tiny_adapter(model_dir, adapter_root / adapter_id, **spec)
    return model_dir, adapter_root


async def run_demo(workdir: str, *, max_new_tokens: int = 24) -> int:
    root = Path(workdir)
    console.rule("[bold]lorastream demo")
    started = time.monotonic()
    model_dir, adapter_root = prepare_models(root)
    console.print(f"tiny Llama model at [cyan]{model_dir}[/], adapters {', '.join(ADAPTERS)}")
    console.print("[dim](random weights: the text is noise; the path is real — Kafka, batching, LoRA)[/]")
    with TansuBroker() as broker:
        console.print(f"embedded Tansu broker at [cyan]{broker.bootstrap_servers}[/]")
        kafka = KafkaConfig(bootstrap_servers=broker.bootstrap_servers)
        topics = TopicNames("lorastream")
        runner = build_runner(model_path=str(model_dir), adapter_root=str(adapter_root), device="cpu")
        service = InferenceService(kafka, topics, ServeConfig(request_partitions=4), runner)
        serving = asyncio.create_task(service.run())
        try:
            await asyncio.wait_for(service.ready.wait(), 60)
            async with LoraClient(config=kafka, topics=topics) as client:
                for adapter_id in (None, *ADAPTERS):
                    await _stream_one(client, adapter_id, max_new_tokens)
                await _burst(client, max_new_tokens)
        finally:
            service.stop()
            await serving
    console.print(f"[dim]demo took {time.monotonic() - started:.1f}s[/]")
    return 0


async def _stream_one(client: LoraClient, adapter_id: str | None, max_new_tokens: int) -> None:
    label = adapter_id or "base model"
    console.print(f"\n[bold magenta]{label}[/] ← {PROMPT!r}")
    console.print(PROMPT, end="", style="dim", markup=False)
    async for record in client.stream(PROMPT, adapter_id=adapter_id, max_new_tokens=max_new_tokens):
        if isinstance(record, Final):
            print_final(record)
        else:
            console.print(record.text, end="", style="bold", markup=False)


async def _burst(client: LoraClient, max_new_tokens: int) -> None:
    """12 concurrent requests over the base and both adapters, answered in shared batches."""
    adapters = [None, *ADAPTERS] * 4
    started = time.monotonic()
    finals = await asyncio.gather(
        *(
            client.generate(f"{PROMPT} number {i}", adapter_id=adapter_id, max_new_tokens=max_new_tokens)
            for i, adapter_id in enumerate(adapters)
        )
    )
    elapsed_s = time.monotonic() - started
    table = Table(title=f"12 concurrent requests in {elapsed_s:.2f}s")
    for column in ("adapter", "tokens", "ttft ms", "total ms", "text"):
        table.add_column(column)
    for final in finals:
        table.add_row(
            final.adapter_id or "base",
            str(final.usage.completion_tokens),
            f"{final.timings.ttft_ms:.0f}",
            f"{final.timings.total_ms:.0f}",
            final.text[:40],
        )
    console.print(table)
