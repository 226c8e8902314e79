"""The OpenAI-compatible HTTP gateway: every OpenAI client (the SDK, LangChain, curl) in front of the
Kafka fleet. Just another `LoraClient`: imports schemas and streamer, never torch or consumers.

`requests` (bodies → Generation, refusals), `responses` (records → bodies and SSE chunks),
`errors` (every failure → status + OpenAI's error body), `models` (the `model` names: base and
the adapters topic), `answers` (one request answered through the client), `app` (routes, API keys,
probes, /metrics), `server` (the process: client + catalogue + uvicorn), `config`, `metrics`.
"""

from gateway.config import GatewayConfig
from gateway.server import Gateway, serve

__all__ = ["Gateway", "GatewayConfig", "serve"]
