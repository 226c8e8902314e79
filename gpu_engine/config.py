"""EngineConfig: every knob of the engine, frozen and validated at construction."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

DTYPES = ("float32", "bfloat16", "float16")
QUANTIZATIONS = ("nf4",)
LORA_BACKENDS = ("auto", "loop", "grouped", "triton")
FAIRNESS = ("vtc", "fifo")


@dataclass(frozen=True)
class EngineConfig:
    """How to load the model and how much work one engine step may take.

    `max_batch_size` is the most requests running at once. The KV cache is paged: blocks of
    `kv_block_size` positions, `kv_cache_blocks` of them (None = `max_batch_size` x the blocks of
    `max_model_len`, the memory one full-length slot per request would take); a request holds
    blocks for the positions it has, and admission waits for free blocks (see docs/engine.md).
    `cuda_graphs`: capture static-shape decode steps in CUDA graphs (None = on for CUDA).
    """

    model_path: str
    adapter_root: str | None = None
    dtype: str = "float32"
    device: str = "auto"  # "auto" = cuda when available, else cpu
    quantize: str | None = None  # None | "nf4" (bitsandbytes, base weights only)
    max_batch_size: int = 64
    max_step_tokens: int = 2048
    max_model_len: int | None = None  # None = the model's max_position_embeddings, capped at 4096
    lora_backend: str = "auto"  # "auto" = triton on cuda, grouped_mm on cpu when present, else loop
    max_lora_rank: int = 256
    kv_block_size: int = 16  # positions per KV-cache block
    kv_cache_blocks: int | None = None  # None = max_batch_size * ceil(max_model_len / kv_block_size)
    cuda_graphs: bool | None = None  # None = on when the engine runs on CUDA; True on a CPU is an error
    # --- adapter store and cache tiers (docs/adapter-cache.md) ---
    # adapter_root: a local directory, or "s3://bucket/prefix" (credentials from the usual AWS env)
    s3_endpoint_url: str | None = None  # e.g. a MinIO or moto server; None = AWS
    base_name: str | None = None  # the served base's name; adapters naming another base are refused
    device_cache_bytes: int | None = None  # packed adapter weights on the device; None = memory only limits
    host_cache_bytes: int | None = None  # parsed adapters in host memory (pinned on CUDA); None = unlimited
    disk_cache_dir: str | None = None  # local copies of remote adapters; None = a temp dir
    disk_cache_bytes: int | None = None  # None = unlimited
    load_workers: int = 2  # threads that fetch and parse adapters off the engine thread
    max_pending_adapter_loads: int = 256  # loads queued or running; more answer adapter_unavailable
    # --- where adapter files may come from, and how large they may be (docs/adapter-store.md) ---
    adapter_uri_roots: tuple[str, ...] = ()  # besides adapter_root: directories or s3://bucket/prefix uris may name
    max_adapter_config_bytes: int = 1 << 20
    max_adapter_weights_bytes: int = 8 << 30  # rank 256 on all projections of a 70B base in fp16 is ~6.6 GB
    # --- scheduling across adapters ---
    max_adapters_per_step: int | None = None  # distinct adapters in one step; None = memory only limits
    fairness: str = "vtc"  # "vtc": virtual token counters per adapter (S-LoRA); "fifo": arrival order

    def __post_init__(self) -> None:
        if not self.model_path:
            raise ValueError("model_path must not be empty")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES}, got {self.dtype!r}")
        if self.quantize is not None and self.quantize not in QUANTIZATIONS:
            raise ValueError(f"quantize must be None or one of {QUANTIZATIONS}, got {self.quantize!r}")
        if self.device != "auto" and not (self.device == "cpu" or self.device.startswith("cuda")):
            raise ValueError(f"device must be 'auto', 'cpu' or 'cuda[:N]', got {self.device!r}")
        if self.max_batch_size < 1:
            raise ValueError("max_batch_size must be >= 1")
        if self.max_step_tokens < self.max_batch_size:
            raise ValueError("max_step_tokens must be >= max_batch_size (every running request decodes each step)")
        if self.max_model_len is not None and self.max_model_len < 2:
            raise ValueError("max_model_len must be >= 2")
        if self.lora_backend not in LORA_BACKENDS:
            raise ValueError(f"lora_backend must be one of {LORA_BACKENDS}, got {self.lora_backend!r}")
        if self.kv_block_size < 1:
            raise ValueError("kv_block_size must be >= 1")
        if self.kv_cache_blocks is not None and self.kv_cache_blocks < 1:
            raise ValueError("kv_cache_blocks must be >= 1 or None")
        if self.cuda_graphs is True and self.device == "cpu":
            raise ValueError("cuda_graphs needs a CUDA device")
        if self.max_lora_rank < 1:
            raise ValueError("max_lora_rank must be >= 1")
        for name in ("device_cache_bytes", "host_cache_bytes", "disk_cache_bytes"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be >= 1 or None")
        if self.load_workers < 1:
            raise ValueError("load_workers must be >= 1")
        for name in ("max_pending_adapter_loads", "max_adapter_config_bytes", "max_adapter_weights_bytes"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if not isinstance(self.adapter_uri_roots, tuple):
            raise ValueError("adapter_uri_roots must be a tuple")
        for root in self.adapter_uri_roots:
            if not (root.startswith("s3://") or Path(root).is_absolute()):
                raise ValueError(f"adapter_uri_roots: {root!r} is neither an absolute directory nor an s3:// uri")
        if self.max_adapters_per_step is not None and self.max_adapters_per_step < 1:
            raise ValueError("max_adapters_per_step must be >= 1 or None")
        if self.fairness not in FAIRNESS:
            raise ValueError(f"fairness must be one of {FAIRNESS}, got {self.fairness!r}")
