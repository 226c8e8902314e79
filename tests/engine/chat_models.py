"""Tiny checkpoints whose tokenizers ship a chat template, as Zephyr and Llama 3 do (built locally).

`llama3` adds Llama 3's header and end-of-turn special tokens and, like Llama-3-Instruct, names
`</s>` (its <|end_of_text|>) as config.json's eos_token_id and [`</s>`, `<|eot_id|>`] as
generation_config.json's, so `<|eot_id|>` is a second end-of-sequence id.
"""

from __future__ import annotations

import json
from pathlib import Path

from gpu_engine.tiny import build_tiny_model, build_tiny_tokenizer

ZEPHYR_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|>\n{{ message['content'] }}{{ eos_token }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
LLAMA3_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "<|start_header_id|>{{ message['role'] }}<|end_header_id|>\n\n{{ message['content'] | trim }}<|eot_id|>"
    "{% endfor %}{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)
# Gemma-it style: a template that refuses what it cannot render
ALTERNATING_TEMPLATE = (
    "{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "<{{ message['role'] }}>{{ message['content'] }}\n{% endfor %}{% if add_generation_prompt %}<assistant>{% endif %}"
)
TEMPLATES = {"zephyr": ZEPHYR_TEMPLATE, "llama3": LLAMA3_TEMPLATE, "alternating": ALTERNATING_TEMPLATE}
LLAMA3_SPECIAL_TOKENS = ("<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>")


def build_chat_model(out_dir: str | Path, style: str) -> Path:
    """A tiny Llama checkpoint in `out_dir` whose tokenizer carries the `style` chat template."""
    out = Path(out_dir)
    tokenizer_dir = out / "tokenizer"
    tokenizer = build_tiny_tokenizer(tokenizer_dir)
    if style == "llama3":
        tokenizer.add_tokens(list(LLAMA3_SPECIAL_TOKENS), special_tokens=True)
    tokenizer.chat_template = TEMPLATES[style]
    tokenizer.save_pretrained(str(tokenizer_dir))
    model_dir = build_tiny_model(out / "model", arch="llama", tokenizer_dir=tokenizer_dir)
    if style == "llama3":
        eot = tokenizer.convert_tokens_to_ids("<|eot_id|>")
        set_eos_ids(model_dir, tokenizer.eos_token_id, [tokenizer.eos_token_id, eot])
    return model_dir


def set_eos_ids(model_dir: Path, config_eos: int | list[int], generation_eos: int | list[int]) -> None:
    """Write config.json's and generation_config.json's eos_token_id."""
    for name, value in (("config.json", config_eos), ("generation_config.json", generation_eos)):
        path = model_dir / name
        data = json.loads(path.read_text())
        data["eos_token_id"] = value
        path.write_text(json.dumps(data))


def greedy_answer(model_dir: Path, messages, max_new_tokens: int) -> tuple[list[int], str]:
    """(token ids, text) of transformers' greedy generate on the chat template's ids: the oracle.
    `messages`: objects with role and content."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    turns = [{"role": m.role, "content": m.content} for m in messages]
    ids = tokenizer.apply_chat_template(turns, add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"]
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).eval()
    with torch.no_grad():
        out = model.generate(input_ids=torch.tensor([ids]), max_new_tokens=max_new_tokens, do_sample=False)
    new = out[0, len(ids) :].tolist()
    return new, tokenizer.decode(new, skip_special_tokens=True)
