"""Engine: continuous batching of many LoRA adapters over one base model.

`step()` is one iteration: take in new requests and aborts, let the scheduler pick this step's
chunks (decodes + prefill chunks), run one forward pass over all of them, sample, and turn the
new tokens into GenerationEvents. `add_request` and `abort` may be called from any thread;
`step` from one thread only (see runner.py).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

import torch

from gpu_engine.adapters import load_adapter
from gpu_engine.config import EngineConfig
from gpu_engine.detokenizer import IncrementalDetokenizer
from gpu_engine.errors import EngineError, PromptTooLongError, RequestInvalidError
from gpu_engine.kv_cache import KVCache
from gpu_engine.lora_bank import LoraBank
from gpu_engine.lora_ops import choose_backend
from gpu_engine.model_loader import load_base_model
from gpu_engine.sampler import make_generator
from gpu_engine.scheduler import Scheduler
from gpu_engine.segments import SlotKey
from gpu_engine.sequence import Sequence
from gpu_engine.step_runner import run_step
from gpu_engine.types import EngineErrorCode, FinishReason, GenerationEvent, GenerationRequest

logger = logging.getLogger(__name__)


@dataclass
class _Active:
    """A request the engine has accepted: its sequence, text state and random generator."""

    seq: Sequence
    detokenizer: IncrementalDetokenizer
    generator: torch.Generator | None


class Engine:
    def __init__(self, config: EngineConfig) -> None:
        from transformers import AutoTokenizer

        self.config = config
        self.model = load_base_model(config)
        self.tokenizer = AutoTokenizer.from_pretrained(config.model_path)
        self.spec = self.model.spec
        self.max_model_len = self.model.max_model_len
        self.cache = KVCache(self.spec, config.max_batch_size, self.max_model_len, self.model.dtype, self.model.device)
        self.bank = LoraBank(self.spec, self.model.dtype, self.model.device)
        self.lora_backend = choose_backend(config.lora_backend, self.model.device)
        logger.info(
            "engine ready: %s on %s, %d KV slots x %d positions (%.1f MiB), LoRA backend %s",
            self.spec.arch, self.model.device, config.max_batch_size, self.max_model_len,
            self.cache.num_bytes / 2**20, self.lora_backend,
        )
        self._adapter_keys: dict[str, SlotKey] = {}
        self._scheduler = Scheduler(config.max_batch_size, config.max_step_tokens)
        self._active: dict[str, _Active] = {}
        self._eos_ids = frozenset(self.spec.eos_token_ids)
        self._lock = threading.Lock()
        self._inbox: list[GenerationRequest] = []
        self._aborts: list[str] = []

    @property
    def num_running(self) -> int:
        return self._scheduler.num_running

    @property
    def num_waiting(self) -> int:
        return self._scheduler.num_waiting

    def add_request(self, request: GenerationRequest) -> None:
        """Queue a request (any thread). Problems surface later as its final ERROR event."""
        with self._lock:
            self._inbox.append(request)

    def abort(self, request_id: str) -> None:
        """Cancel a request (any thread); it ends with one CANCELLED event. Unknown ids are ignored."""
        with self._lock:
            self._aborts.append(request_id)

    def has_work(self) -> bool:
        with self._lock:
            if self._inbox or self._aborts:
                return True
        return self._scheduler.has_unfinished()

    def drop_all(self) -> None:
        """Forget every queued and running request without events (after a failed step)."""
        with self._lock:
            self._inbox, self._aborts = [], []
        for active in list(self._active.values()):
            self._scheduler.finish(active.seq)
        self._active.clear()

    def load_adapter(self, adapter_id: str) -> SlotKey:
        """Load (once) and pack an adapter; raises AdapterNotFoundError / AdapterInvalidError.

        Not thread-safe: call it before the runner starts or from the engine thread.
        """
        key = self._adapter_keys.get(adapter_id)
        if key is None:
            adapter = load_adapter(
                self.config.adapter_root, adapter_id, self.spec, self.model.dtype, self.config.max_lora_rank
            )
            key = self.bank.add(adapter)
            self._adapter_keys[adapter_id] = key
        return key

    def step(self) -> list[GenerationEvent]:
        with self._lock:
            inbox, self._inbox = self._inbox, []
            aborts, self._aborts = self._aborts, []
        events = [event for request in inbox if (event := self._accept(request)) is not None]
        for request_id in aborts:
            active = self._active.get(request_id)
            if active is not None:
                events.append(self._finish(active, FinishReason.CANCELLED, ()))
        chunks = self._scheduler.schedule()
        if not chunks:
            return events
        try:
            sampled = run_step(self, chunks, [self._active[c.seq.request_id].generator for c in chunks])
        except Exception as exc:  # the step's requests fail; the engine stays usable
            logger.exception("engine step failed")
            for chunk in chunks:
                active = self._active[chunk.seq.request_id]
                events.append(self._error(active.seq.request, EngineErrorCode.INTERNAL, repr(exc), active))
            return events
        for seq, token_id in sampled:
            events.append(self._on_token(self._active[seq.request_id], token_id))
        return events

    def _accept(self, request: GenerationRequest) -> GenerationEvent | None:
        if request.request_id in self._active:
            return self._error(request, EngineErrorCode.INVALID_PARAMS, "duplicate request_id")
        try:
            prompt_ids = list(self.tokenizer(request.prompt).input_ids)
            if not prompt_ids:
                raise RequestInvalidError("empty prompt")
            if len(prompt_ids) >= self.max_model_len:
                raise PromptTooLongError(f"prompt has {len(prompt_ids)} tokens; max_model_len is {self.max_model_len}")
            lora_key = self.load_adapter(request.adapter_id) if request.adapter_id is not None else None
            generator = make_generator(request.sampling, self.model.device)
        except EngineError as exc:
            return self._error(request, exc.code, str(exc))
        except Exception as exc:
            logger.exception("accepting request %s failed", request.request_id)
            return self._error(request, EngineErrorCode.INTERNAL, repr(exc))
        seq = Sequence.from_prompt(request, prompt_ids, lora_key)
        detokenizer = IncrementalDetokenizer(self.tokenizer, prompt_ids, request.sampling.stop)
        self._active[request.request_id] = _Active(seq, detokenizer, generator)
        self._scheduler.add(seq)
        return None

    def _on_token(self, active: _Active, token_id: int) -> GenerationEvent:
        seq, sampling = active.seq, active.seq.request.sampling
        seq.append_token(token_id)
        if token_id in self._eos_ids and not sampling.ignore_eos:
            return self._finish(active, FinishReason.EOS, (token_id,))
        text = active.detokenizer.push(token_id)
        if active.detokenizer.stopped:
            return self._finish(active, FinishReason.STOP, (token_id,), text)
        if seq.num_new_tokens >= sampling.max_new_tokens or len(seq.token_ids) >= self.max_model_len:
            return self._finish(active, FinishReason.LENGTH, (token_id,), text)
        return GenerationEvent(
            request_id=seq.request_id,
            text=text,
            token_ids=(token_id,),
            prompt_tokens=seq.num_prompt_tokens,
            completion_tokens=seq.num_new_tokens,
        )

    def _finish(
        self, active: _Active, reason: FinishReason, token_ids: tuple[int, ...], text: str = ""
    ) -> GenerationEvent:
        seq = active.seq
        self._scheduler.finish(seq)
        del self._active[seq.request_id]
        return GenerationEvent(
            request_id=seq.request_id,
            text=text + active.detokenizer.finish(),
            token_ids=token_ids,
            finish_reason=reason,
            prompt_tokens=seq.num_prompt_tokens,
            completion_tokens=seq.num_new_tokens,
        )

    def _error(
        self, request: GenerationRequest, code: EngineErrorCode, message: str, active: _Active | None = None
    ) -> GenerationEvent:
        prompt_tokens = completion_tokens = 0
        if active is not None:
            self._scheduler.finish(active.seq)
            del self._active[request.request_id]
            prompt_tokens, completion_tokens = active.seq.num_prompt_tokens, active.seq.num_new_tokens
        return GenerationEvent(
            request_id=request.request_id,
            finish_reason=FinishReason.ERROR,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            error_code=code,
            error_message=message,
        )
