"""Lineage on every answer, with a real tiny engine behind the service: two answers from two versions
of one adapter (hot reload: publish version 1, answer, publish version 2, answer) are told apart by
their lineage alone, on the reply and on the results copy; on the in-memory bus and on Kafka."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import pytest

import lorastream
from cli.commands import tail_matches
from consumers.inference.answer import derived_seed
from consumers.serve import build_engine_thread
from schemas import AdapterEvent, Final, InferenceRequest, ReplyAddress, SamplingParams, decode_reply, encode
from tests.consumers.scenarios.harness import WAIT_S, Bus

ADAPTER = "acme/lineage"
PROMPT = "the cat sat on the mat"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[Path, Path, Path, Path]:
    """(model_dir, adapter_root, version 1's dir, version 2's dir): same shape, other weights."""
    from gpu_engine.tiny import build_tiny_adapter, build_tiny_model

    root = tmp_path_factory.mktemp("lineage")
    model_dir = build_tiny_model(root / "tiny-base")
    adapter_root = root / "adapters"
    v1 = build_tiny_adapter(model_dir, adapter_root / "v1" / ADAPTER, seed=11)
    v2 = build_tiny_adapter(model_dir, adapter_root / "v2" / ADAPTER, seed=99)
    return model_dir, adapter_root, v1, v2


def independent_sha256(model_dir: Path) -> str:
    files = sorted(model_dir.glob("*.safetensors"))
    assert files, "the tiny model must have weight files"
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.read_bytes())
    return digest.hexdigest()


async def publish_version(bus: Bus, service, version: int, path: Path) -> None:
    from gpu_engine.adapter_files import adapter_checksum

    event = AdapterEvent(ADAPTER, version=version, uri=path.as_uri(), checksum=adapter_checksum(path))
    await bus.send(bus.topics.adapters, encode(event), key=ADAPTER.encode())
    async with asyncio.timeout(WAIT_S):
        while service.adapters_topic.versions.get(ADAPTER) != version:
            await asyncio.sleep(0.01)


async def answer(bus: Bus, reply: str, request: InferenceRequest) -> Final:
    await bus.request(request)
    records = await bus.replies(reply, lambda rs: any(isinstance(r, Final) and r.request_id == request.request_id for r in rs))
    (final,) = [r for r in records if isinstance(r, Final) and r.request_id == request.request_id]
    return final


async def test_two_versions_of_one_adapter_are_told_apart_by_lineage_alone(bus, tiny):
    from gpu_engine.adapter_files import adapter_checksum

    model_dir, adapter_root, v1, v2 = tiny
    reply = bus.reply_topic()
    await bus.create_reply_topic(reply)
    runner = build_engine_thread(model_path=str(model_dir), adapter_root=str(adapter_root), device="cpu")
    service = await bus.start_service(runner)

    def request(request_id: str, seed: int | None) -> InferenceRequest:
        params = SamplingParams(max_new_tokens=4, temperature=0.7, seed=seed)
        return InferenceRequest(request_id, PROMPT, adapter_id=ADAPTER, params=params, reply_to=ReplyAddress(reply, 0))

    await publish_version(bus, service, 1, v1)
    first = await answer(bus, reply, request("lin-1", None))
    await publish_version(bus, service, 2, v2)
    second = await answer(bus, reply, request("lin-2", 5))

    one, two = first.lineage, second.lineage
    assert one is not None and two is not None
    assert (one.adapter_id, one.adapter_version, one.adapter_checksum) == (ADAPTER, 1, adapter_checksum(v1))
    assert (two.adapter_id, two.adapter_version, two.adapter_checksum) == (ADAPTER, 2, adapter_checksum(v2))
    assert one.adapter_checksum != two.adapter_checksum
    base_hash = independent_sha256(model_dir)
    assert one.base_sha256 == two.base_sha256 == base_hash == runner.base_sha256
    assert one.base_name == two.base_name == model_dir.name
    assert one.seed == one.params.seed == derived_seed("lin-1")  # none given: the derived one was used
    assert two.seed == two.params.seed == 5
    assert (one.params.max_new_tokens, one.params.temperature) == (4, 0.7)
    assert one.engine_version == two.engine_version == lorastream.__version__
    assert one.served_by == two.served_by == first.served_by == "c0"

    # the results copies carry the same lineage, and `tail --adapter/--version` selects by it alone
    records = await bus.read(bus.topics.results, lambda rs: len(rs) >= 2)
    copies = {f.request_id: f for f in map(lambda r: decode_reply(r.value), records) if isinstance(f, Final)}
    assert copies["lin-1"].lineage == one and copies["lin-2"].lineage == two
    for version, expected in ((1, "lin-1"), (2, "lin-2"), (3, None)):
        chosen = [rid for rid, f in copies.items() if tail_matches(f, ADAPTER, version)]
        assert chosen == ([expected] if expected else [])
    assert sorted(rid for rid, f in copies.items() if tail_matches(f, ADAPTER, None)) == ["lin-1", "lin-2"]
    assert [rid for rid, f in copies.items() if tail_matches(f, "acme/other", None)] == []
