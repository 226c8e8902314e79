"""Engine behaviour per request: limits, EOS, stop strings, errors, aborts, chunked prefill, seeds."""

from __future__ import annotations

import json
import shutil

import pytest

from gpu_engine import engine as engine_module
from gpu_engine.config import EngineConfig
from gpu_engine.engine import Engine
from gpu_engine.types import FinishReason, GenerationRequest, SamplingParams
from gpu_engine.errors import AdapterNotFoundError, EngineError, PromptTooLongError, RequestInvalidError
from tests.engine.engine_helpers import run_all

PROMPT = "The quick dog runs over the river"


@pytest.fixture(scope="module")
def engine(tiny_model_dir, adapter_root):
    return Engine(EngineConfig(str(tiny_model_dir), str(adapter_root), max_batch_size=8, max_step_tokens=64))


def greedy(engine, prompt=PROMPT, adapter=None, max_new_tokens=12, **kw):
    request = GenerationRequest("g", prompt, adapter, SamplingParams(max_new_tokens=max_new_tokens, **kw))
    return run_all(engine, [request])["g"]


def test_max_new_tokens_ends_with_length(engine):
    outcome = greedy(engine, max_new_tokens=7)
    assert len(outcome.token_ids) == 7 and outcome.final.completion_tokens == 7
    assert outcome.final.finish_reason is FinishReason.LENGTH
    assert outcome.final.prompt_tokens == len(engine.tokenizer(PROMPT).input_ids)
    assert outcome.text == engine.tokenizer.decode(outcome.token_ids, skip_special_tokens=True)


def test_stop_string_cuts_text_before_it(engine):
    full = greedy(engine, max_new_tokens=20).text
    stop = full[5:8]
    outcome = greedy(engine, max_new_tokens=20, stop=(stop, "never-produced"))
    assert outcome.final.finish_reason is FinishReason.STOP
    assert outcome.text == full[: full.index(stop)]


def test_eos_from_generation_config_ends_generation(tmp_path, tiny_model_dir, engine):
    tokens = greedy(engine, max_new_tokens=6).token_ids
    model_dir = tmp_path / "eos-model"
    shutil.copytree(tiny_model_dir, model_dir)
    gen_path = model_dir / "generation_config.json"
    gen = json.loads(gen_path.read_text())
    gen["eos_token_id"] = [engine.tokenizer.eos_token_id, tokens[3]]
    gen_path.write_text(json.dumps(gen))
    eos_engine = Engine(EngineConfig(str(model_dir), max_batch_size=2, max_step_tokens=64))
    outcome = greedy(eos_engine, max_new_tokens=6)
    assert outcome.final.finish_reason is FinishReason.EOS
    assert outcome.token_ids == tokens[: tokens.index(tokens[3]) + 1]


def test_chunked_prefill_gives_the_same_tokens(tiny_model_dir, adapter_root, engine):
    long_prompt = "kafka topic offset partition batch " * 6
    small_budget = Engine(EngineConfig(str(tiny_model_dir), str(adapter_root), max_batch_size=2, max_step_tokens=5))
    for adapter in (None, "r16-all"):
        expected = greedy(engine, long_prompt, adapter).token_ids
        assert greedy(small_budget, long_prompt, adapter).token_ids == expected


@pytest.mark.parametrize(
    ("adapter_id", "code"),
    [
        ("no-such-adapter", AdapterNotFoundError.code),
        ("../llama", AdapterNotFoundError.code),
        ("/etc", AdapterNotFoundError.code),
        ("r8-qv/../../x", AdapterNotFoundError.code),
    ],
)
def test_bad_adapter_ids_become_error_events(engine, adapter_id, code):
    final = greedy(engine, adapter=adapter_id).final
    assert final.finish_reason is FinishReason.ERROR and final.error_code is code and final.error_message


def test_prompt_too_long_is_an_error_event(tiny_model_dir):
    short = Engine(EngineConfig(str(tiny_model_dir), max_batch_size=2, max_step_tokens=64, max_model_len=16))
    final = greedy(short, "word " * 40).final
    assert final.error_code == PromptTooLongError.code


def test_generation_stops_at_max_model_len(tiny_model_dir):
    short = Engine(EngineConfig(str(tiny_model_dir), max_batch_size=2, max_step_tokens=64, max_model_len=12))
    prompt_len = len(short.tokenizer(PROMPT).input_ids)
    outcome = greedy(short, max_new_tokens=50)
    assert outcome.final.finish_reason is FinishReason.LENGTH
    assert prompt_len + len(outcome.token_ids) == 12


def test_duplicate_request_id_is_refused(engine):
    request = GenerationRequest("dup", PROMPT, sampling=SamplingParams(max_new_tokens=3))
    engine.add_request(request)
    engine.add_request(request)
    events = []
    while engine.has_work():
        events += engine.step()
    finals = [(e.finish_reason, e.error_code) for e in events if e.is_final]
    assert finals == [(FinishReason.ERROR, RequestInvalidError.code), (FinishReason.LENGTH, None)]


def test_abort_ends_with_cancelled(engine):
    engine.add_request(GenerationRequest("a", PROMPT, sampling=SamplingParams(max_new_tokens=50)))
    engine.step()
    engine.abort("a")
    engine.abort("unknown-id")
    events = engine.step()
    assert [e.finish_reason for e in events if e.request_id == "a"] == [FinishReason.CANCELLED]
    assert not engine.has_work() and engine.num_running == 0


def test_failing_step_fails_its_requests_with_internal_and_engine_recovers(engine, monkeypatch):
    def explode(*args, **kwargs):
        raise RuntimeError("kernel exploded")

    monkeypatch.setattr(engine_module, "run_step", explode)
    final = greedy(engine).final
    assert final.error_code == EngineError.code and "kernel exploded" in final.error_message
    monkeypatch.undo()
    assert engine.num_running == 0
    assert greedy(engine).final.finish_reason is FinishReason.LENGTH


def test_same_seed_same_tokens_whatever_shares_the_batch(engine):
    params = SamplingParams(max_new_tokens=12, temperature=0.9, top_p=0.9, top_k=50, seed=1234)
    alone = run_all(engine, [GenerationRequest("s", PROMPT, "r8-qv", params)])["s"].token_ids
    crowd = [GenerationRequest(f"o{i}", f"other prompt {i}", "r4-qv", SamplingParams(max_new_tokens=5 + i,
             temperature=1.0, seed=i)) for i in range(5)]
    crowded = run_all(engine, [*crowd, GenerationRequest("s", PROMPT, "r8-qv", params)])["s"].token_ids
    assert crowded == alone
    other_seed = SamplingParams(max_new_tokens=12, temperature=0.9, top_p=0.9, top_k=50, seed=99)
    assert run_all(engine, [GenerationRequest("s", PROMPT, "r8-qv", other_seed)])["s"].token_ids != alone


def test_streamed_text_is_whole_characters_and_adds_up(engine):
    requests = [
        GenerationRequest(f"u{i}", "café 日本語 😀 über", sampling=params)
        for i, params in enumerate(SamplingParams(max_new_tokens=24, temperature=1.5, seed=s) for s in range(6))
    ]
    for request_id, outcome in run_all(engine, requests).items():
        ids = [t for t in outcome.token_ids if t != engine.tokenizer.eos_token_id]
        assert outcome.text == engine.tokenizer.decode(ids, skip_special_tokens=True), request_id
        for event in outcome.events[:-1]:
            assert not event.text.endswith("\ufffd")
