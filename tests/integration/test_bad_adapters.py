"""Broken adapters through Apache Kafka: each request gets its own typed Error quickly, a good
request sent alongside them is answered, and the service keeps serving afterwards."""

from __future__ import annotations

import asyncio
import shutil
import time

import pytest

from schemas import ErrorCode
from streamer import LoraClient, RequestFailed

pytestmark = pytest.mark.kafka

PROMPT = "the cat sat on the mat"
GOOD = "acme/sentiment"
ANSWER_BOUND_S = 1.0  # issue 4: every broken adapter is answered with a typed Error within a second


@pytest.fixture(scope="module")
def broken_adapters(tiny_model, tmp_path_factory) -> dict[str, ErrorCode]:
    """Broken adapters written under the serving adapter root: adapter id → the code it must get."""
    from gpu_engine.tiny import build_tiny_adapter, build_tiny_model

    model_dir, root = tiny_model
    good = root / GOOD
    corrupt = root / "broken/corrupt"
    shutil.copytree(good, corrupt)
    (corrupt / "adapter_model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{garbage")
    missing = root / "broken/missing"
    missing.mkdir(parents=True)
    shutil.copy(good / "adapter_config.json", missing / "adapter_config.json")
    build_tiny_adapter(model_dir, root / "broken/rank", r=300, alpha=16, target_modules=("q_proj",), seed=5)
    other_base = build_tiny_model(tmp_path_factory.mktemp("other-base") / "model", hidden=96)
    build_tiny_adapter(other_base, root / "broken/other-base", r=4, alpha=8, seed=6)
    return {
        "broken/corrupt": ErrorCode.ADAPTER_CORRUPT,
        "broken/missing": ErrorCode.ADAPTER_MISSING_FILE,
        "broken/rank": ErrorCode.ADAPTER_RANK_TOO_LARGE,
        "broken/other-base": ErrorCode.ADAPTER_BASE_MISMATCH,
        "broken/never-published": ErrorCode.ADAPTER_NOT_FOUND,
    }


async def _outcome(client: LoraClient, adapter_id: str) -> tuple[ErrorCode | None, float]:
    """(error code or None for an answer, seconds from send to the answer)."""
    start = time.monotonic()
    try:
        await client.generate(PROMPT, adapter_id=adapter_id, max_new_tokens=4, timeout_s=30)
    except RequestFailed as exc:
        return exc.code, time.monotonic() - start
    return None, time.monotonic() - start


async def test_each_broken_adapter_gets_its_typed_error_within_a_second(serving, broken_adapters):
    _, _, service = serving
    async with LoraClient(config=serving[0], topics=serving[1]) as client:
        assert (await _outcome(client, GOOD))[0] is None  # warm: the service is up and answering
        ids = [*broken_adapters, GOOD]
        results = dict(zip(ids, await asyncio.gather(*(_outcome(client, i) for i in ids))))
        print("\nbroken adapters, send → answer: " + ", ".join(f"{i} {s * 1000:.0f} ms" for i, (_, s) in results.items()))
        assert {i: code for i, (code, _) in results.items()} == {**broken_adapters, GOOD: None}
        slow = {i: s for i, (_, s) in results.items() if s > ANSWER_BOUND_S}
        assert not slow, f"answered later than {ANSWER_BOUND_S} s: {slow}"
        # nothing crashed: the service still serves, and the same broken id is refused again
        assert (await _outcome(client, "acme/summary"))[0] is None
        assert (await _outcome(client, "broken/corrupt"))[0] is ErrorCode.ADAPTER_CORRUPT
    assert not service.answers  # every request answered, none left in flight

