"""Tiny real checkpoints built locally: a BPE tokenizer, models of every served family and PEFT adapters.

Used by the tests and by `make demo`; nothing is downloaded. Every builder is deterministic
for a given seed and takes well under a few seconds on a CPU.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path

import torch

SPECIAL_TOKENS = ("<pad>", "<s>", "</s>")
_WORDS = (
    "the a an one every some many few model adapter token stream kafka batch request answer "
    "reply engine server client partition offset topic lora rank weight layer head cache slot "
    "cat dog bird fish tree river mountain city road house garden window door light night day "
    "runs jumps reads writes serves learns sends sees finds makes takes gives keeps holds "
    "quick slow bright dark small large green blue red old new happy quiet loud warm cold "
    "and or but with without under over near into from to of in on at by for"
).split()
_EXTRAS = ("café", "naïve", "über", "日本語", "señor", "ü", "€", "→", "😀", "ß")
_ARCHS = ("llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text", "phi3", "phi")
# families whose norm weights and biases are drawn at random too: HF initialises them to a constant,
# which would hide a wrong norm form (w vs 1 + w) or a dropped bias from the exactness tests
_RANDOM_VECTORS = ("qwen3", "gemma", "gemma2", "gemma3_text", "phi3", "phi")
# per family, the config values that make its differences visible at tiny scale
_FAMILY_OPTIONS = {
    "gemma2": dict(query_pre_attn_scalar=24, attn_logit_softcapping=4.0, final_logit_softcapping=20.0),
    "gemma3_text": dict(query_pre_attn_scalar=24, sliding_window_pattern=2, rope_local_base_freq=100.0,
                        final_logit_softcapping=20.0),
    "phi": dict(partial_rotary_factor=0.5),
    "phi3": dict(partial_rotary_factor=0.75),  # as Phi-4-mini
}


def _corpus(num_sentences: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    lines = []
    for _ in range(num_sentences):
        words = [rng.choice(_WORDS) for _ in range(rng.randint(4, 14))]
        if rng.random() < 0.25:
            words.insert(rng.randrange(len(words)), rng.choice(_EXTRAS))
        sentence = " ".join(words)
        lines.append(sentence[0].upper() + sentence[1:] + rng.choice((".", "!", "?", ",")))
    return lines


def build_tiny_tokenizer(out_dir: str | Path, vocab_size: int = 512, seed: int = 0, lines: Sequence[str] | None = None):
    """Train a byte-level BPE on `lines` (default: a corpus generated from `seed`); save it as a
    PreTrainedTokenizerFast that adds <s>."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(3000, seed) if lines is None else lines, trainer=trainer)
    bos_id = tok.token_to_id("<s>")
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", bos_id)])
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>"
    )
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(str(out_dir))
    return fast


def _model_config(arch: str, vocab_size: int, ids: dict[str, int], **kw):
    from transformers import AutoConfig

    common = dict(
        vocab_size=vocab_size,
        hidden_size=kw["hidden"],
        intermediate_size=kw["intermediate"],
        num_hidden_layers=kw["layers"],
        num_attention_heads=kw["heads"],
        num_key_value_heads=kw["kv_heads"],
        max_position_embeddings=kw["max_position_embeddings"],
        initializer_range=kw["init_std"],
        tie_word_embeddings=kw["tie_word_embeddings"],
        **ids,
    )
    window = kw["sliding_window"]
    if arch in ("qwen3", "gemma", "gemma2", "gemma3_text"):
        common["head_dim"] = kw["hidden"] // kw["heads"]  # their defaults (128, 256) are for large models
    if arch in ("gemma2", "gemma3_text"):
        common["sliding_window"] = window or 4  # a small window: the alternating local layers matter
    elif arch in ("qwen2", "qwen3") and window is not None:
        common.update(use_sliding_window=True, sliding_window=window, max_window_layers=0)
    elif arch in ("mistral", "phi3"):
        common["sliding_window"] = window
    return AutoConfig.for_model(arch, **{**common, **_FAMILY_OPTIONS.get(arch, {}), **kw["config_options"]})


def _randomize_vectors(model, std: float) -> None:
    """Norm weights and biases drawn around their HF initial values (1-D parameters only)."""
    with torch.no_grad():
        for param in model.parameters():
            if param.dim() == 1:
                param.add_(torch.randn_like(param) * std)


def build_tiny_model(
    out_dir: str | Path,
    arch: str = "llama",
    hidden: int = 64,
    layers: int = 2,
    heads: int = 4,
    kv_heads: int = 2,
    intermediate: int | None = None,
    vocab_size: int = 512,
    seed: int = 0,
    init_std: float = 0.2,
    max_position_embeddings: int = 1024,
    sliding_window: int | None = None,
    tie_word_embeddings: bool = False,
    tokenizer_dir: str | Path | None = None,
    config_options: dict | None = None,
) -> Path:
    """Random-init a model of family `arch` (see _ARCHS) and save it with its tokenizer in `out_dir`.

    `config_options` are passed to the family's config class (e.g. {"qk_layernorm": True} for phi).
    `init_std` is large on purpose: well-separated logits keep greedy decoding free of near-ties,
    so token-identity tests against PEFT are meaningful rather than flaky.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if arch not in _ARCHS:
        raise ValueError(f"arch must be one of {_ARCHS}, got {arch!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if tokenizer_dir is None:
        tokenizer = build_tiny_tokenizer(out, vocab_size=vocab_size)
    else:
        tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
        tokenizer.save_pretrained(str(out))
    ids = {
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    config = _model_config(
        arch,
        len(tokenizer),
        ids,
        hidden=hidden,
        intermediate=intermediate or 2 * hidden,
        layers=layers,
        heads=heads,
        kv_heads=kv_heads,
        max_position_embeddings=max_position_embeddings,
        init_std=init_std,
        sliding_window=sliding_window,
        tie_word_embeddings=tie_word_embeddings,
        config_options=config_options or {},
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        if arch in _RANDOM_VECTORS:
            _randomize_vectors(model, init_std)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(str(out))
    return out


def build_tiny_adapter(
    model_dir: str | Path,
    out_dir: str | Path,
    r: int = 8,
    alpha: float = 16,
    target_modules: str | Sequence[str] = ("q_proj", "v_proj"),
    seed: int = 1,
    b_std: float = 0.2,
    use_rslora: bool = False,
) -> Path:
    """Create a PEFT LoRA adapter for `model_dir` and save it (safetensors) in `out_dir`.

    PEFT zero-initialises lora_B, which would make the adapter a no-op; it is redrawn here with
    std `b_std` so greedy outputs differ visibly from the base model. `target_modules` is a list of
    module names or one of PEFT's strings ("all-linear").
    """
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    targets = target_modules if isinstance(target_modules, str) else list(target_modules)
    config = LoraConfig(r=r, lora_alpha=alpha, target_modules=targets, lora_dropout=0.0, use_rslora=use_rslora)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = get_peft_model(base, config)
        with torch.no_grad():
            for name, param in model.named_parameters():
                if "lora_B" in name:
                    param.normal_(0.0, b_std)
    out = Path(out_dir)
    model.save_pretrained(str(out), safe_serialization=True)
    return out
