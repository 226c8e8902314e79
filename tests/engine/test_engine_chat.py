"""Chat requests, every end-of-sequence id, and ignore_eos in the engine.

A chat request's prompt ids are exactly `apply_chat_template(messages, add_generation_prompt=True)`'s
(no BOS added again, no re-tokenization of the rendered text), and its greedy answer equals
`PeftModel.generate` on those ids.
"""

from __future__ import annotations

import shutil

import pytest
import torch

from gpu_engine.config import EngineConfig
from gpu_engine.engine import Engine
from gpu_engine.errors import ChatTemplateMissingError, PromptTooLongError, RequestInvalidError
from gpu_engine.tiny import build_tiny_adapter
from gpu_engine.types import ChatMessage, FinishReason, GenerationRequest, SamplingParams
from tests.engine.chat_models import build_chat_model, set_eos_ids
from tests.engine.engine_helpers import peft_model, run_all

MESSAGES = (ChatMessage("system", "be brief"), ChatMessage("user", "the quick dog runs over the river"))
ADAPTER = "chat-r8"
MAX_NEW = 10


@pytest.fixture(scope="module", params=["zephyr", "llama3"])
def chat_model(request, tmp_path_factory):
    """(model_dir, adapter_root, engine) of a tiny model whose tokenizer has the `param` chat template."""
    root = tmp_path_factory.mktemp(f"chat-{request.param}")
    model_dir = build_chat_model(root, request.param)
    build_tiny_adapter(model_dir, root / "adapters" / ADAPTER, r=8, alpha=16, target_modules=("q_proj", "v_proj", "down_proj"))
    engine = Engine(EngineConfig(str(model_dir), str(root / "adapters"), max_batch_size=4, max_step_tokens=64))
    return model_dir, root / "adapters", engine


def _turns(messages=MESSAGES) -> list[dict[str, str]]:
    return [{"role": m.role, "content": m.content} for m in messages]


def chat(engine, adapter=None, messages=MESSAGES, request_id="c", **sampling):
    sampling.setdefault("max_new_tokens", MAX_NEW)
    request = GenerationRequest(request_id, "", adapter, SamplingParams(**sampling), messages=messages)
    return run_all(engine, [request])[request_id]


def test_chat_prompt_ids_are_the_templates_and_greedy_equals_peft(chat_model):
    model_dir, adapter_root, engine = chat_model
    tokenizer = engine.tokenizer
    ids = tokenizer.apply_chat_template(_turns(), add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"]
    rendered = tokenizer.apply_chat_template(_turns(), add_generation_prompt=True, tokenize=False)
    assert rendered.endswith("\n") and "be brief" in rendered
    oracle = peft_model(model_dir, adapter_root, [ADAPTER])
    outputs = {}
    for adapter in (None, ADAPTER):
        outcome = chat(engine, adapter, request_id=f"c-{adapter}")
        assert outcome.final.prompt_tokens == len(ids)
        input_ids = torch.tensor([ids])
        with torch.no_grad():
            if adapter is None:
                with oracle.disable_adapter():
                    out = oracle.generate(input_ids=input_ids, max_new_tokens=MAX_NEW, do_sample=False)
            else:
                oracle.set_adapter(adapter)
                out = oracle.generate(input_ids=input_ids, max_new_tokens=MAX_NEW, do_sample=False)
        assert outcome.token_ids == out[0, len(ids) :].tolist()
        assert outcome.text == tokenizer.decode(outcome.token_ids, skip_special_tokens=True)
        outputs[adapter] = outcome.token_ids
    assert outputs[None] != outputs[ADAPTER]


def test_the_rendered_text_is_not_tokenized_again(chat_model):
    """Tokenizing the template's text would add <s> again (a second one for Llama 3's template,
    which writes it itself): the engine takes the template's ids as they are."""
    _, _, engine = chat_model
    tokenizer = engine.tokenizer
    rendered = tokenizer.apply_chat_template(_turns(), add_generation_prompt=True, tokenize=False)
    ids = tokenizer.apply_chat_template(_turns(), add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"]
    retokenized = list(tokenizer(rendered).input_ids)
    assert retokenized == [tokenizer.bos_token_id, *ids]
    assert chat(engine, request_id="n").final.prompt_tokens == len(ids) != len(retokenized)


def test_chat_requests_batch_with_prompt_requests(chat_model):
    _, _, engine = chat_model
    alone = chat(engine, ADAPTER).token_ids
    requests = [
        GenerationRequest("mixed-chat", "", ADAPTER, SamplingParams(max_new_tokens=MAX_NEW), messages=MESSAGES),
        GenerationRequest("mixed-prompt", "the cat", None, SamplingParams(max_new_tokens=MAX_NEW)),
    ]
    outcomes = run_all(engine, requests)
    assert outcomes["mixed-chat"].token_ids == alone
    assert outcomes["mixed-prompt"].final.finish_reason in (FinishReason.LENGTH, FinishReason.EOS)


def test_a_model_without_a_chat_template_refuses_messages(tiny_model_dir):
    engine = Engine(EngineConfig(str(tiny_model_dir), max_batch_size=2, max_step_tokens=64))
    assert not engine.tokenizer.chat_template
    final = chat(engine).final
    assert final.finish_reason is FinishReason.ERROR
    assert final.error_code == ChatTemplateMissingError.code == "chat_template_missing"
    assert "chat template" in final.error_message
    prompt = run_all(engine, [GenerationRequest("p", "the cat", None, SamplingParams(max_new_tokens=2))])["p"]
    assert prompt.final.finish_reason is FinishReason.LENGTH  # the engine stays usable


def test_a_template_that_refuses_the_messages_is_an_invalid_request(tmp_path):
    model_dir = build_chat_model(tmp_path, "alternating")
    engine = Engine(EngineConfig(str(model_dir), max_batch_size=2, max_step_tokens=64))
    bad = chat(engine, messages=(ChatMessage("assistant", "hi"),), request_id="bad").final
    assert bad.finish_reason is FinishReason.ERROR and bad.error_code == RequestInvalidError.code
    assert "alternate" in bad.error_message
    good = chat(engine, messages=(ChatMessage("user", "hi"),), request_id="good")
    assert good.final.finish_reason in (FinishReason.LENGTH, FinishReason.EOS) and good.token_ids


def test_a_rendered_prompt_past_the_models_positions_is_too_long(chat_model):
    model_dir, _, _ = chat_model
    engine = Engine(EngineConfig(str(model_dir), max_batch_size=2, max_step_tokens=64, max_model_len=48))
    final = chat(engine, messages=(ChatMessage("user", "the cat " * 40),)).final
    assert final.finish_reason is FinishReason.ERROR and final.error_code == PromptTooLongError.code


# --- end-of-sequence ids ---------------------------------------------------------------------


def test_eos_ids_are_the_union_of_config_and_generation_config(chat_model):
    _, _, engine = chat_model
    tokenizer = engine.tokenizer
    expected = {tokenizer.eos_token_id}
    if "<|eot_id|>" in tokenizer.get_vocab():  # the llama3-style model: generation_config adds it
        expected.add(tokenizer.convert_tokens_to_ids("<|eot_id|>"))
    assert set(engine.spec.eos_token_ids) == expected
    assert len(expected) == (2 if tokenizer.chat_template.startswith("{{ bos_token }}") else 1)


@pytest.fixture(scope="module")
def free_run(tiny_model_dir):
    """Greedy tokens of the plain tiny model past every EOS, and two that first appear at distinct steps."""
    engine = Engine(EngineConfig(str(tiny_model_dir), max_batch_size=2, max_step_tokens=64))
    tokens = run_all(engine, [GenerationRequest("f", "the cat", None, SamplingParams(max_new_tokens=12, ignore_eos=True))])["f"].token_ids
    firsts = [i for i, t in enumerate(tokens) if t not in tokens[:i] and t not in engine.spec.eos_token_ids]
    assert len(firsts) >= 2, tokens
    return tokens, firsts[1], firsts[-1]  # stop early (not at step 0) and late


@pytest.mark.parametrize("early_from", ["config", "generation_config"])
def test_every_eos_id_stops_generation(tmp_path, tiny_model_dir, free_run, early_from):
    """config.json names one id (an int), generation_config.json another (a list): both stop."""
    tokens, early, late = free_run
    model_dir = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model_dir)
    if early_from == "config":
        set_eos_ids(model_dir, tokens[early], [tokens[late]])
    else:
        set_eos_ids(model_dir, tokens[late], [tokens[early]])
    engine = Engine(EngineConfig(str(model_dir), max_batch_size=2, max_step_tokens=64))
    assert set(engine.spec.eos_token_ids) == {tokens[early], tokens[late]}
    request = GenerationRequest("e", "the cat", None, SamplingParams(max_new_tokens=12))
    outcome = run_all(engine, [request])["e"]
    assert outcome.final.finish_reason is FinishReason.EOS
    assert outcome.token_ids == tokens[: early + 1]
    # with the early id gone, the late one stops it
    set_eos_ids(model_dir, tokens[late], [tokens[late]])
    late_engine = Engine(EngineConfig(str(model_dir), max_batch_size=2, max_step_tokens=64))
    outcome = run_all(late_engine, [GenerationRequest("l", "the cat", None, SamplingParams(max_new_tokens=12))])["l"]
    assert outcome.final.finish_reason is FinishReason.EOS and outcome.token_ids == tokens[: late + 1]


def test_ignore_eos_generates_exactly_max_new_tokens(tmp_path, tiny_model_dir, free_run):
    tokens, early, late = free_run
    model_dir = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model_dir)
    set_eos_ids(model_dir, tokens[early], [tokens[early], tokens[late]])
    engine = Engine(EngineConfig(str(model_dir), max_batch_size=2, max_step_tokens=64))
    requests = [
        GenerationRequest("ignore", "the cat", None, SamplingParams(max_new_tokens=12, ignore_eos=True)),
        GenerationRequest("stops", "the cat", None, SamplingParams(max_new_tokens=12)),
    ]
    outcomes = run_all(engine, requests)
    assert outcomes["ignore"].token_ids == tokens and outcomes["ignore"].final.finish_reason is FinishReason.LENGTH
    assert outcomes["ignore"].final.completion_tokens == 12
    assert outcomes["stops"].token_ids == tokens[: early + 1]


def test_ignore_eos_still_stops_at_a_stop_string(tiny_model_dir, free_run):
    tokens, _, _ = free_run
    engine = Engine(EngineConfig(str(tiny_model_dir), max_batch_size=2, max_step_tokens=64))
    full = engine.tokenizer.decode(tokens, skip_special_tokens=True)
    stop = full[len(full) // 2 : len(full) // 2 + 2]
    params = SamplingParams(max_new_tokens=12, ignore_eos=True, stop=(stop,))
    outcome = run_all(engine, [GenerationRequest("s", "the cat", None, params)])["s"]
    assert outcome.final.finish_reason is FinishReason.STOP and outcome.text == full[: full.index(stop)]
