"""The base model (plain or 4-bit NF4) with trainable LoRA layers from peft, and its tokenizer."""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from gpu_engine.families.registry import FAMILIES, family_for
from gpu_engine.training.defaults import resolve_targets
from gpu_engine.training.errors import (
    BaseNotFoundError,
    BaseUnsupportedError,
    InvalidSpecError,
    QuantizationUnavailableError,
)
from gpu_engine.training.spec import TrainJobSpec

log = logging.getLogger(__name__)

# every served family: the loss computes lm_head(decoder(x)) on target positions only, so a base
# that soft-caps its final logits (Gemma 2/3 checkpoints that set final_logit_softcapping) is refused
SUPPORTED_MODEL_TYPES = tuple(FAMILIES)


@dataclass(frozen=True)
class LoadedModel:
    model: torch.nn.Module  # a peft PeftModelForCausalLM
    tokenizer: object
    device: torch.device
    quantization: str  # "nf4" or "none": what was actually loaded
    pad_id: int


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise InvalidSpecError(f"device {device} asked for, but CUDA is not available")
    return torch.device(device)


def resolve_quantization(mode: str, device: torch.device) -> str:
    """auto: nf4 on CUDA when bitsandbytes is installed, else none.

    bitsandbytes also quantizes on CPU (quantize="nf4" uses it), but there it dequantizes per
    matmul and is slower than the plain fp32 base, so auto does not pick it.
    """
    has_bnb = importlib.util.find_spec("bitsandbytes") is not None
    if mode == "none" or (mode == "auto" and not (device.type == "cuda" and has_bnb)):
        return "none"
    if not has_bnb:
        raise QuantizationUnavailableError("quantize=nf4 needs bitsandbytes, which is not installed")
    return "nf4"


def compute_dtype_for(device: torch.device) -> torch.dtype:
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


def load_model(spec: TrainJobSpec) -> LoadedModel:
    """Tokenizer, base (maybe NF4) and LoRA layers initialised from `spec.seed`."""
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

    path = Path(spec.base_model_path)
    if not (path / "config.json").is_file():
        raise BaseNotFoundError(f"no Hugging Face model at {path} (config.json missing)")
    config = AutoConfig.from_pretrained(str(path))
    family = family_for(config.model_type)
    if family is None:
        raise BaseUnsupportedError(f"model_type {config.model_type!r}; supported: {SUPPORTED_MODEL_TYPES}")
    if getattr(config, "final_logit_softcapping", None) is not None:
        raise BaseUnsupportedError(f"a {config.model_type} base with final_logit_softcapping is not trained")
    try:
        targets = resolve_targets(family, spec.target_modules)
    except ValueError as exc:
        raise InvalidSpecError(str(exc)) from exc
    max_positions = getattr(config, "max_position_embeddings", None)
    if max_positions is not None and spec.max_seq_len > max_positions:
        raise InvalidSpecError(f"max_seq_len {spec.max_seq_len} exceeds the base's {max_positions} positions")
    device = resolve_device(spec.device)
    quantization = resolve_quantization(spec.quantize, device)
    dtype = compute_dtype_for(device)
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    kwargs: dict = {"dtype": dtype}
    if quantization == "nf4":
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_compute_dtype=dtype,
            bnb_4bit_use_double_quant=True,
        )
        kwargs["device_map"] = {"": str(device)}
    base = AutoModelForCausalLM.from_pretrained(str(path), **kwargs)
    if quantization == "none":
        base.to(device)
    _check_targets(base, targets)
    if quantization == "nf4":
        base = prepare_model_for_kbit_training(base, use_gradient_checkpointing=False)
    base.config.use_cache = False
    lora = LoraConfig(
        r=spec.r,
        lora_alpha=spec.alpha,
        lora_dropout=spec.dropout,
        target_modules=list(targets),
        bias="none",
        task_type="CAUSAL_LM",
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.seed)
        model = get_peft_model(base, lora)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id or 0
    log.info("base %s on %s, quantization %s", path, device, quantization)
    return LoadedModel(model, tokenizer, device, quantization, pad_id)


def _check_targets(base: torch.nn.Module, targets: tuple[str, ...]) -> None:
    present = {name.rsplit(".", 1)[-1] for name, module in base.named_modules() if isinstance(module, torch.nn.Linear)}
    missing = sorted(set(targets) - present)
    if missing:
        raise BaseUnsupportedError(f"the base has no linear layers named {missing}")
