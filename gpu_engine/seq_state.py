"""SeqState: the engine-side state of one request. Pure Python, no torch."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gpu_engine.adapter_ref import AdapterRef
from gpu_engine.segments import BankSlot
from gpu_engine.types import GenerationRequest

AdapterKey = tuple[str, int]  # (adapter_id, version): one version of an adapter in the cache tiers


@dataclass(eq=False, slots=True)
class SeqState:
    """Token ids of prompt + output, and how many of them are already in the KV cache.

    The engine also keeps the request's text state (`detokenizer`) and random generator here, so
    a step's per-token work reads one object per sequence.

    `adapter_ref` is the adapter version resolved when the request arrived (None = the base
    model); `bank_slot` where its weights sit in the LoRA bank (rank, index), set at admission and
    pinned until the sequence finishes; `kv_blocks` its block table in the paged KV cache while it
    runs (position p in block `kv_blocks[p // block_size]`), emptied when it finishes or is
    preempted (then `num_computed` goes back to 0 and every token is computed again).
    """

    request: GenerationRequest
    token_ids: list[int]
    num_prompt_tokens: int
    bank_slot: BankSlot | None = None
    adapter_ref: AdapterRef | None = None
    num_computed: int = 0  # tokens whose keys/values are in the cache
    kv_blocks: list[int] = field(default_factory=list)  # KV-cache block table (not its adapter's bank slot)
    num_new_tokens: int = 0
    num_preemptions: int = 0  # times its KV blocks were taken back (it is then computed again)
    adapter_tier: str | None = None  # where its adapter was when it arrived: "device", "host" or "store"
    detokenizer: Any = None  # its IncrementalDetokenizer (the engine's; opaque here)
    generator: Any = None  # its torch.Generator when it samples at a temperature; None: greedy

    @classmethod
    def from_prompt(
        cls,
        request: GenerationRequest,
        prompt_ids: list[int],
        bank_slot: BankSlot | None = None,
        adapter_ref: AdapterRef | None = None,
    ) -> SeqState:
        return cls(
            request=request,
            token_ids=list(prompt_ids),
            num_prompt_tokens=len(prompt_ids),
            bank_slot=bank_slot,
            adapter_ref=adapter_ref,
        )

    @property
    def request_id(self) -> str:
        return self.request.request_id

    @property
    def adapter_key(self) -> AdapterKey | None:
        ref = self.adapter_ref
        return None if ref is None else (ref.adapter_id, ref.version)

    @property
    def num_pending(self) -> int:
        """Tokens still to be fed to the model before the next token can be sampled."""
        return len(self.token_ids) - self.num_computed

    @property
    def output_ids(self) -> list[int]:
        return self.token_ids[self.num_prompt_tokens :]

    def append_token(self, token_id: int) -> None:
        self.token_ids.append(token_id)
        self.num_new_tokens += 1
