"""lorastream's inference engine: many LoRA adapters over one Llama-family base, continuously batched.

Public entry points: `gpu_engine.config.EngineConfig`, `gpu_engine.engine.Engine`,
`gpu_engine.engine_thread.EngineThread` and the dataclasses in `gpu_engine.types`. This package never
imports Kafka or the event schemas.
"""
