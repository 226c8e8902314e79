"""Training settings a request leaves unset, chosen from the size of the base it trains.

The rule, by the base's parameter count (estimated from its `config.json`, no weights read):

| base | r | alpha | targets | peak lr | steps |
|---|---:|---:|---|---:|---|
| >= 1B (LoRA Land's bases) | 8 | 16 | q/v | 2e-4 | 1 epoch |
| 100M - 1B | 16 | 32 | all linear | 5e-4 | 1 epoch, at least 50 |
| < 100M (the land's 1.0M base) | 16 | 32 | all linear | 5e-3 | 1 epoch, at least 150 |

LoRA Land (arXiv 2405.00732) measured the first row on 7B bases. The last row is what the land
measured on its ~1M-parameter base (docs/land.md): LoRA Land's settings leave such a base's
answers unchanged. The middle row sits between the two and was not measured here. Anything a
request sets wins; an `alpha` left unset is twice the rank. `max_seq_len` left unset is 512, and
any value above the base's positions is clamped to them with a notice instead of refused.

Targets are the base family's own module names (`gpu_engine.families`): "all linear" is every
attention and MLP projection the family has (phi: q/k/v_proj, dense, fc1, fc2; phi3: qkv_proj,
o_proj, gate_up_proj, down_proj), and a name that is one part of a fused projection means the fused
module (q/v on phi3: qkv_proj). A name the base does not have is refused.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gpu_engine.families.registry import FUSED_PROJECTIONS, LLAMA_ATTENTION, LLAMA_MLP, Family, family_for

ALL_LINEAR = LLAMA_ATTENTION + LLAMA_MLP  # a base of unknown family; a known one uses its own projections
DEFAULT_MAX_SEQ_LEN = 512
DEFAULT_EPOCHS = 1.0
# the settings this module may choose; a request's value for any of them wins
CHOSEN_FIELDS = ("r", "alpha", "target_modules", "learning_rate", "epochs", "max_seq_len")


@dataclass(frozen=True)
class SizeTier:
    """The settings for bases of at least `min_params` parameters (up to the next tier's)."""

    name: str
    min_params: int
    r: int
    alpha: float
    target_modules: tuple[str, ...]
    learning_rate: float
    min_steps: int  # a floor on optimizer steps when the request sets neither epochs nor max_steps


LORA_LAND = SizeTier("lora_land", 1_000_000_000, 8, 16.0, ("q_proj", "v_proj"), 2e-4, 1)
SIZE_TIERS = (
    LORA_LAND,
    SizeTier("small", 100_000_000, 16, 32.0, ALL_LINEAR, 5e-4, 50),
    SizeTier("tiny", 0, 16, 32.0, ALL_LINEAR, 5e-3, 150),
)


@dataclass(frozen=True)
class BaseShape:
    """What the rule needs to know of a base: its size, its positions and its `model_type`
    (None: unknown)."""

    num_params: int | None
    max_positions: int | None
    model_type: str | None = None


def read_base_shape(model_dir: str | Path) -> BaseShape:
    """The shape from `<model_dir>/config.json`; an unreadable config gives an unknown shape (the
    job itself reports a missing or unsupported base)."""
    try:
        config = json.loads((Path(model_dir) / "config.json").read_text())
    except (OSError, ValueError):
        return BaseShape(None, None)
    if not isinstance(config, dict):
        return BaseShape(None, None)
    positions = config.get("max_position_embeddings")
    model_type = config.get("model_type")
    return BaseShape(
        estimate_params(config),
        positions if isinstance(positions, int) and positions > 0 else None,
        model_type if isinstance(model_type, str) else None,
    )


def resolve_targets(family: Family | None, names: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """`names` as the modules of a `family` base (None: unknown, names kept): a part of a fused
    projection the family has becomes the fused module, duplicates collapse, order is kept.
    Raises ValueError naming what the base has for a name it does not have."""
    if family is None:
        return tuple(names)
    fused_of = {part: fused for fused in family.projections for part in FUSED_PROJECTIONS.get(fused, ())}
    resolved: list[str] = []
    for name in names:
        module = name if name in family.projections else fused_of.get(name)
        if module is None:
            raise ValueError(
                f"target {name!r}: a {family.model_type} base has no such projection; "
                f"its projections: {', '.join(family.projections)}"
            )
        if module not in resolved:
            resolved.append(module)
    return tuple(resolved)


def tier_targets(tier: SizeTier, family: Family | None) -> tuple[str, ...]:
    """The tier's targets on a `family` base: all linear is the family's every projection."""
    if family is not None and tier.target_modules == ALL_LINEAR:
        return family.projections
    return resolve_targets(family, tier.target_modules)


def estimate_params(config: dict[str, Any]) -> int | None:
    """Parameters of a decoder from its config (embeddings, attention, a gated MLP, norms): Llama's
    count, close enough for the tier of every family (an ungated MLP is counted a third larger)."""
    try:
        hidden = int(config["hidden_size"])
        layers = int(config["num_hidden_layers"])
        vocab = int(config["vocab_size"])
        intermediate = int(config.get("intermediate_size", 4 * hidden))
        heads = int(config.get("num_attention_heads", 1))
        kv_heads = int(config.get("num_key_value_heads", heads))
    except (KeyError, TypeError, ValueError):
        return None
    head_dim = int(config.get("head_dim") or hidden // max(heads, 1))
    attention = 2 * hidden * heads * head_dim + 2 * hidden * kv_heads * head_dim
    per_layer = attention + 3 * hidden * intermediate + 2 * hidden
    embeddings = vocab * hidden * (1 if config.get("tie_word_embeddings") else 2)
    return embeddings + layers * per_layer + hidden


def tier_for(num_params: int | None) -> SizeTier:
    """The tier of a base of `num_params` parameters; an unknown size gets LoRA Land's."""
    if num_params is None:
        return LORA_LAND
    return next(tier for tier in SIZE_TIERS if num_params >= tier.min_params)


@dataclass(frozen=True)
class ChosenSettings:
    """Concrete values for every field in CHOSEN_FIELDS plus `min_steps`, and what to tell the user
    (`notice` None: the request set everything and nothing was clamped)."""

    values: dict[str, Any]
    notice: str | None


def choose_settings(shape: BaseShape, given: dict[str, Any]) -> ChosenSettings:
    """Fill the CHOSEN_FIELDS that `given` (a request's hyperparameters, None = unset) leaves unset,
    and name the targets in the base family's modules. Raises ValueError for a target the base lacks."""
    tier = tier_for(shape.num_params)
    family = family_for(shape.model_type) if shape.model_type else None
    values = {name: given.get(name) for name in CHOSEN_FIELDS}
    chosen = []
    resolved_note = None
    if values["target_modules"] is not None:
        resolved = resolve_targets(family, values["target_modules"])
        if resolved != tuple(values["target_modules"]):
            given_names = ", ".join(values["target_modules"])
            resolved_note = f"targets {given_names} are {', '.join(resolved)} on a {family.model_type} base"
            values["target_modules"] = resolved
    tier_values = {"r": tier.r, "target_modules": tier_targets(tier, family), "learning_rate": tier.learning_rate}
    for name, value in tier_values.items():
        if values[name] is None:
            values[name] = value
            chosen.append(name)
    if values["alpha"] is None:
        values["alpha"] = 2.0 * values["r"]
        chosen.append("alpha")
    values["min_steps"] = 1
    if values["epochs"] is None and given.get("max_steps") is None:
        values["epochs"] = DEFAULT_EPOCHS
        values["min_steps"] = tier.min_steps
        chosen.append("epochs")
    notes = [_describe(shape, values, chosen, family)] if chosen else []
    if resolved_note:
        notes.append(resolved_note)
    if values["max_seq_len"] is None:
        values["max_seq_len"] = DEFAULT_MAX_SEQ_LEN
    if shape.max_positions is not None and values["max_seq_len"] > shape.max_positions:
        notes.append(f"max_seq_len {values['max_seq_len']} clamped to the base's {shape.max_positions} positions")
        values["max_seq_len"] = shape.max_positions
    return ChosenSettings(values, "; ".join(notes) or None)


def _describe(shape: BaseShape, values: dict[str, Any], chosen: list[str], family: Family | None) -> str:
    size = "a base of unknown size" if shape.num_params is None else f"a {_millions(shape.num_params)}-parameter base"
    parts = []
    if "r" in chosen:
        parts.append(f"r {values['r']}")
    if "alpha" in chosen:
        parts.append(f"alpha {values['alpha']:g}")
    if "learning_rate" in chosen:
        parts.append(f"lr {values['learning_rate']:g}")
    if "target_modules" in chosen:
        targets = tuple(values["target_modules"])
        all_linear = family.projections if family is not None else ALL_LINEAR
        parts.append("all-linear" if targets == all_linear else "/".join(t.removesuffix("_proj") for t in targets))
    if "epochs" in chosen:
        floor = values["min_steps"]
        parts.append(f"{values['epochs']:g} epoch" + (f", at least {floor} steps" if floor > 1 else ""))
    return f"chosen for {size}: " + ", ".join(parts)


def _millions(num_params: int) -> str:
    if num_params >= 1_000_000_000:
        return f"{num_params / 1e9:.1f}B"
    return f"{num_params / 1e6:.1f}M"
