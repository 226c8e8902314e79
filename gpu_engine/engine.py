"""Engine: continuous batching of many LoRA adapters over one base model.

`step()` is one iteration: take in new requests and aborts, let the scheduler pick this step's
chunks (decodes + prefill chunks), run one forward pass over all of them, sample, and turn the
new tokens into GenerationEvents. Adapters come through the cache tiers (adapter_cache.py):
`add_request` starts loading a request's adapter at once, and a request waits, without holding
up others, until its adapter is on the device. `add_request`, `abort`, `register_adapter`,
`retire_adapter` and `prefetch` may be called from any thread; `step` and `load_adapter` from
one thread only (see runner.py).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from gpu_engine.adapter_cache import AdapterCache
from gpu_engine.adapter_ref import AdapterRef
from gpu_engine.base_hash import base_sha256
from gpu_engine.block_table import blocks_for
from gpu_engine.cache_stats import CacheStats
from gpu_engine.config import EngineConfig
from gpu_engine.cuda_graphs import DecodeGraphs
from gpu_engine.detokenizer import IncrementalDetokenizer
from gpu_engine.errors import ChatTemplateMissingError, EngineError, PromptTooLongError, RequestInvalidError
from gpu_engine.kv_cache import KVCache
from gpu_engine.lora_bank import LoraBank
from gpu_engine.lora_ops import choose_backend
from gpu_engine.model_loader import load_base_model
from gpu_engine.sampler import make_generator
from gpu_engine.scheduler import Scheduler
from gpu_engine.segments import BankSlot
from gpu_engine.seq_state import SeqState
from gpu_engine.step_buffers import StagingBuffer
from gpu_engine.step_runner import run_step
from gpu_engine.store import open_store
from gpu_engine.types import FinishReason, GenerationEvent, GenerationRequest, Provenance

logger = logging.getLogger(__name__)

# how long `step` waits when called with nothing runnable (only adapter loads pending), so a
# caller's `while engine.has_work(): engine.step()` loop sleeps instead of spinning
_IDLE_WAIT_S = 0.05


@dataclass(frozen=True)
class _Arrival:
    """A request from `add_request`, with its adapter version resolved there (or why not)."""

    request: GenerationRequest
    adapter_ref: AdapterRef | None
    error: EngineError | None
    adapter_tier: str | None = None  # where the adapter was on arrival: device, host or store


class Engine:
    def __init__(self, config: EngineConfig) -> None:
        from transformers import AutoTokenizer

        self.config = config
        self.model = load_base_model(config)
        self.base_name = config.base_name or Path(config.model_path).name
        started = time.monotonic()
        self.base_sha256 = base_sha256(config.model_path)  # once: it names the base in every answer's lineage
        logger.info("base %s weights sha256 %s (%.1f s)", self.base_name, self.base_sha256 or "-", time.monotonic() - started)
        self.tokenizer = AutoTokenizer.from_pretrained(config.model_path)
        self.spec = self.model.spec
        self.max_model_len = self.model.max_model_len
        self.kv_cache = self._make_kv_cache(config)
        self.step_staging = StagingBuffer(self.model.device)
        self.decode_graphs = self._make_graphs(config)
        self.bank = LoraBank(self.spec, self.model.dtype, self.model.device)
        self.lora_backend = choose_backend(config.lora_backend, self.model.device)
        logger.info(
            "engine ready: %s on %s, %d KV blocks x %d positions (%.1f MiB), LoRA backend %s, CUDA graphs %s",
            self.spec.arch, self.model.device, self.kv_cache.num_blocks, self.kv_cache.block_size,
            self.kv_cache.num_bytes / 2**20, self.lora_backend, "on" if self.decode_graphs else "off",
        )
        self.cache_stats = CacheStats()
        self._changed = threading.Condition()  # guards the inbox and aborts; notified when work may be runnable
        self._wakeup_listeners: list[Callable[[], None]] = []
        self.adapter_cache = AdapterCache(
            config, self.spec, self.bank, open_store(config, self.cache_stats), self.cache_stats, self._wake
        )
        self._scheduler = Scheduler(
            config.max_batch_size,
            config.max_step_tokens,
            max_adapters_per_step=config.max_adapters_per_step,
            fairness=config.fairness,
            admit=self.adapter_cache.admit,
            num_kv_blocks=self.kv_cache.num_blocks,
            kv_block_size=self.kv_cache.block_size,
        )
        self._active: dict[str, SeqState] = {}  # every accepted request not finished yet
        self._eos_ids = frozenset(self.spec.eos_token_ids)
        self._inbox: list[_Arrival] = []
        self._aborts: list[str] = []

    def _make_kv_cache(self, config: EngineConfig) -> KVCache:
        per_seq = blocks_for(self.max_model_len, config.kv_block_size)
        num_blocks = config.kv_cache_blocks if config.kv_cache_blocks is not None else config.max_batch_size * per_seq
        if num_blocks < per_seq:
            raise ValueError(f"kv_cache_blocks={num_blocks} cannot hold one sequence of max_model_len "
                             f"{self.max_model_len} ({per_seq} blocks of {config.kv_block_size})")
        return KVCache(self.spec, num_blocks, config.kv_block_size, self.model.dtype, self.model.device)

    def _make_graphs(self, config: EngineConfig) -> DecodeGraphs | None:
        on_cuda = self.model.device.type == "cuda"
        if config.cuda_graphs and not on_cuda:
            raise ValueError("cuda_graphs needs a CUDA device")
        if not (on_cuda if config.cuda_graphs is None else config.cuda_graphs):
            return None
        return DecodeGraphs(self, blocks_for(self.max_model_len, config.kv_block_size))

    @property
    def num_preemptions(self) -> int:
        """Running requests whose KV blocks were taken back so far (each is then computed again)."""
        return self._scheduler.num_preemptions

    @property
    def num_running(self) -> int:
        return self._scheduler.num_running

    @property
    def num_waiting(self) -> int:
        return self._scheduler.num_waiting

    # --- any thread ------------------------------------------------------------------------

    def add_request(self, request: GenerationRequest) -> None:
        """Queue a request and start loading its adapter. Problems surface later as its final ERROR event."""
        adapter_ref = error = tier = None
        if request.adapter_id is not None:
            try:
                adapter_ref = self.adapter_cache.resolve(request.adapter_id)
                tier = self.adapter_cache.prefetch(adapter_ref)
            except EngineError as exc:
                error = exc
        with self._changed:
            self._inbox.append(_Arrival(request, adapter_ref, error, tier))
            self._changed.notify_all()

    def abort(self, request_id: str) -> None:
        """Cancel a request; it ends with one CANCELLED event. Unknown ids are ignored."""
        with self._changed:
            self._aborts.append(request_id)
            self._changed.notify_all()

    def register_adapter(self, ref: AdapterRef) -> None:
        """A new version of `ref.adapter_id`: requests from now on get it (its load starts now);
        running requests finish on the version they started with, which then leaves the cache."""
        self.adapter_cache.register(ref)

    def retire_adapter(self, adapter_id: str) -> None:
        """The adapter was deleted: later requests get ADAPTER_NOT_FOUND; running ones finish."""
        self.adapter_cache.retire(adapter_id)

    def prefetch(self, adapter_id: str) -> None:
        """Start loading an adapter's current version into the host tier (no-op when resident)."""
        try:
            self.adapter_cache.prefetch(self.adapter_cache.resolve(adapter_id))
        except EngineError:
            pass  # a request for it gets the error

    def add_wakeup_listener(self, listener: Callable[[], None]) -> None:
        """`listener()` is called (on a loader or registry thread) when waiting work may have become
        runnable without a new request: an adapter load ended, or a version was superseded."""
        self._wakeup_listeners.append(listener)

    def _wake(self) -> None:
        with self._changed:
            self._changed.notify_all()
        for listener in self._wakeup_listeners:
            listener()

    # --- engine thread -----------------------------------------------------------------------

    def has_work(self) -> bool:
        """Any request not answered yet (including ones waiting for their adapter to load)."""
        with self._changed:
            if self._inbox or self._aborts:
                return True
        return self._scheduler.has_unfinished()

    def has_runnable_work(self) -> bool:
        """Would `step` make progress now? False while the only work waits for adapter loads, so
        the runner thread can sleep until `add_wakeup_listener`'s call or a new request."""
        with self._changed:
            if self._inbox or self._aborts:
                return True
        scheduler = self._scheduler
        if scheduler.num_running or self.adapter_cache.has_news() or scheduler.num_waiting > self.adapter_cache.num_blocked:
            return True
        deadline = self.adapter_cache.next_blocked_deadline()
        return deadline is not None and deadline <= time.time()

    def idle_timeout_s(self) -> float | None:
        """How long an idle runner may sleep: until the earliest deadline of a request whose
        adapter is still loading (None: until woken)."""
        deadline = self.adapter_cache.next_blocked_deadline()
        return None if deadline is None else max(0.0, deadline - time.time())

    def drop_all(self) -> None:
        """Forget every queued and running request without events (after a failed step)."""
        with self._changed:
            self._inbox, self._aborts = [], []
        for seq in list(self._active.values()):
            self._release(seq)
        self.adapter_cache.take_refused()

    def load_adapter(self, adapter_id: str, hold: bool = True) -> BankSlot:
        """Load an adapter's current version onto the device now, blocking; returns its slot.

        `hold` keeps it resident (never evicted) until a new version is registered or it is
        retired. Raises the load's EngineError (AdapterNotFoundError, AdapterInvalidError, ...).
        Call it before the runner starts or from the engine thread.
        """
        return self.adapter_cache.load_now(self.adapter_cache.resolve(adapter_id), hold)

    def step(self) -> list[GenerationEvent]:
        if not self.has_runnable_work():
            with self._changed:
                self._changed.wait_for(self.has_runnable_work, _IDLE_WAIT_S)
        with self._changed:
            inbox, self._inbox = self._inbox, []
            aborts, self._aborts = self._aborts, []
        events = [event for arrival in inbox if (event := self._accept(arrival)) is not None]
        for seq, error in self.adapter_cache.begin_step():
            events.append(self._error(seq.request, error.code, str(error), seq))
        for request_id in aborts:
            seq = self._active.get(request_id)
            if seq is not None:
                events.append(self._finish(seq, FinishReason.CANCELLED, ()))
        for seq in self._scheduler.take_expired():
            events.append(self._finish(seq, FinishReason.EXPIRED, ()))
        chunks = self._scheduler.schedule()
        for seq, error in self.adapter_cache.take_refused():
            events.append(self._error(seq.request, error.code, str(error), seq))
        if not chunks:
            return events
        try:
            sampled = run_step(self, chunks)
        except Exception as exc:  # the step's requests fail; the engine stays usable
            logger.exception("engine step failed")
            for chunk in chunks:
                events.append(self._error(chunk.seq.request, EngineError.code, repr(exc), chunk.seq))
            return events
        self._on_tokens(sampled, events)
        return events

    def _accept(self, arrival: _Arrival) -> GenerationEvent | None:
        request = arrival.request
        if request.request_id in self._active:
            return self._error(request, RequestInvalidError.code, "duplicate request_id")
        try:
            if arrival.error is not None:
                raise arrival.error
            prompt_ids = self._prompt_ids(request)
            if not prompt_ids:
                raise RequestInvalidError("empty prompt")
            if len(prompt_ids) >= self.max_model_len:
                raise PromptTooLongError(f"prompt has {len(prompt_ids)} tokens; max_model_len is {self.max_model_len}")
            seq = SeqState.from_prompt(request, prompt_ids, adapter_ref=arrival.adapter_ref)
            seq.generator = make_generator(request.sampling, self.model.device)
            seq.detokenizer = IncrementalDetokenizer(self.tokenizer, prompt_ids, request.sampling.stop)
            seq.adapter_tier = arrival.adapter_tier
            self.adapter_cache.accept(seq)  # last: nothing after it can fail and leave its pin behind
        except EngineError as exc:
            return self._error(request, exc.code, str(exc))
        except Exception as exc:
            logger.exception("accepting request %s failed", request.request_id)
            return self._error(request, EngineError.code, repr(exc))
        self._active[request.request_id] = seq
        self._scheduler.add(seq)
        return None

    def _prompt_ids(self, request: GenerationRequest) -> list[int]:
        """The prompt's token ids: the prompt tokenized, or the messages rendered by the chat template
        (its own special tokens, none added again), exactly as `apply_chat_template` gives them."""
        if request.messages is None:
            return list(self.tokenizer(request.prompt).input_ids)
        if not self.tokenizer.chat_template:
            raise ChatTemplateMissingError("this model's tokenizer has no chat template: send a prompt instead")
        from jinja2 import TemplateError

        turns = [{"role": m.role, "content": m.content} for m in request.messages]
        try:
            rendered = self.tokenizer.apply_chat_template(turns, add_generation_prompt=True, tokenize=True, return_dict=True)
        except TemplateError as exc:  # the template refused these turns (e.g. roles that do not alternate)
            raise RequestInvalidError(f"the chat template refused the messages: {exc}") from exc
        return list(rendered["input_ids"])

    def _on_tokens(self, sampled: list[tuple[SeqState, int]], events: list[GenerationEvent]) -> None:
        """One event per sampled sequence for its new token (its final event when the token ends it).
        The hot loop of a decode step: one pass, nothing per token but the sequence's own state."""
        eos_ids, max_model_len = self._eos_ids, self.max_model_len
        for seq, token_id in sampled:
            token_ids = seq.token_ids
            token_ids.append(token_id)
            seq.num_new_tokens += 1
            sampling = seq.request.sampling
            if token_id in eos_ids and not sampling.ignore_eos:
                events.append(self._finish(seq, FinishReason.EOS, (token_id,)))
                continue
            detokenizer = seq.detokenizer
            text = detokenizer.push(token_id)
            if detokenizer.stopped:
                events.append(self._finish(seq, FinishReason.STOP, (token_id,), text))
            elif seq.num_new_tokens >= sampling.max_new_tokens or len(token_ids) >= max_model_len:
                events.append(self._finish(seq, FinishReason.LENGTH, (token_id,), text))
            else:
                events.append(GenerationEvent(seq.request.request_id, text, (token_id,), None,
                                              seq.num_prompt_tokens, seq.num_new_tokens))

    def _finish(self, seq: SeqState, reason: FinishReason, token_ids: tuple[int, ...], text: str = "") -> GenerationEvent:
        self._release(seq)
        return GenerationEvent(
            request_id=seq.request_id,
            text=text + seq.detokenizer.finish(),
            token_ids=token_ids,
            finish_reason=reason,
            prompt_tokens=seq.num_prompt_tokens,
            completion_tokens=seq.num_new_tokens,
            adapter_tier=seq.adapter_tier,
            provenance=self._provenance(seq),
        )

    def _provenance(self, seq: SeqState) -> Provenance:
        ref = seq.adapter_ref
        if ref is None:
            return Provenance(self.base_name, self.base_sha256)
        return Provenance(self.base_name, self.base_sha256, ref.adapter_id, ref.version, ref.checksum)

    def _error(
        self, request: GenerationRequest, code: str, message: str, seq: SeqState | None = None
    ) -> GenerationEvent:
        prompt_tokens = completion_tokens = 0
        tier = None
        if seq is not None:
            self._release(seq)
            prompt_tokens, completion_tokens, tier = seq.num_prompt_tokens, seq.num_new_tokens, seq.adapter_tier
        return GenerationEvent(
            request_id=request.request_id,
            finish_reason=FinishReason.ERROR,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            error_code=code,
            error_message=message,
            adapter_tier=tier,
        )

    def _release(self, seq: SeqState) -> None:
        """The one way out for an accepted request: frees its KV blocks and unpins its adapter."""
        self._scheduler.finish(seq)
        self.adapter_cache.release(seq)
        del self._active[seq.request_id]
