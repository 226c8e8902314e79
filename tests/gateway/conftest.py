"""A tiny model whose tokenizer has a chat template (and two adapters), served by an inference
consumer on Apache Kafka (the integration suite's `serving` fixture), with a gateway in front."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from gateway import Gateway, GatewayConfig
from gateway.server import bound_port, uvicorn_server
from tests.integration.conftest import ADAPTER_SPECS, serving  # noqa: F401 (a fixture, over our tiny_model)

BASE_NAME = "tiny-chat"
# ChatML-like: every turn between markers, the answer opened by the generation prompt
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}[{{ message['role'] }}] {{ message['content'] }}{{ eos_token }}\n"
    "{% endfor %}{% if add_generation_prompt %}[assistant] {% endif %}"
)
_START_TIMEOUT_S = 30.0


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> tuple[Path, Path]:
    """(model_dir, adapter_root): the integration suite's adapters on a base with a chat template."""
    from transformers import AutoTokenizer

    from gpu_engine.tiny import build_tiny_adapter, build_tiny_model

    root = tmp_path_factory.mktemp("gateway-tiny")
    model_dir = build_tiny_model(root / "model")
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(str(model_dir))
    for adapter_id, spec in ADAPTER_SPECS.items():
        build_tiny_adapter(model_dir, root / "adapters" / adapter_id, **spec)
    return model_dir, root / "adapters"


@pytest.fixture
async def gateway_url(serving):  # noqa: F811
    """http://127.0.0.1:PORT/v1 of a gateway (uvicorn, on this event loop) in front of `serving`."""
    kafka, topics, _ = serving
    gateway = Gateway(GatewayConfig(port=0, base_name=BASE_NAME, request_timeout_s=60), kafka, topics)
    server = uvicorn_server(gateway)
    task = asyncio.create_task(server.serve())
    async with asyncio.timeout(_START_TIMEOUT_S):
        while not server.started:  # uvicorn offers no event to wait on
            if task.done():
                task.result()
            await asyncio.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{bound_port(server)}/v1"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, _START_TIMEOUT_S)
