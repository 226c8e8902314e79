"""Checkpoints of a running job: LoRA weights, optimizer state, RNG state and the step.

Layout: `<checkpoint_dir>/step-<8 digits>/` holding trainable.safetensors, optimizer.pt, rng.pt
and state.json (written last). A checkpoint is written under a temporary name and renamed, so a
crash never leaves a half-written `step-*` directory. The learning-rate schedule and the data
order are functions of the step (see schedule.py, batching.py): they need no state here.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

KEEP_CHECKPOINTS = 2
_PREFIX = "step-"


def capture_rng(device: torch.device) -> dict[str, torch.Tensor]:
    state = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def restore_rng(state: dict[str, torch.Tensor], device: torch.device) -> None:
    torch.set_rng_state(state["cpu"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def save_checkpoint(
    root: str | Path,
    step: int,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    rng_state: dict[str, torch.Tensor],
    state: dict[str, Any],
) -> Path:
    """Write the checkpoint after `step` optimizer steps; keep the newest KEEP_CHECKPOINTS."""
    root = Path(root)
    final = root / f"{_PREFIX}{step:08d}"
    tmp = root / f".tmp-{final.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    trainable = {name: p.detach().cpu().contiguous() for name, p in model.named_parameters() if p.requires_grad}
    save_file(trainable, str(tmp / "trainable.safetensors"))
    torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    torch.save(rng_state, tmp / "rng.pt")
    (tmp / "state.json").write_text(json.dumps({**state, "step": step}))
    shutil.rmtree(final, ignore_errors=True)
    os.rename(tmp, final)
    for old in _checkpoints(root)[KEEP_CHECKPOINTS:]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(root: str | Path, fingerprint: str) -> Path | None:
    """The newest complete checkpoint written under the same spec fingerprint, if any."""
    for path in _checkpoints(Path(root)):
        state = read_state(path)
        if state is not None and state.get("fingerprint") == fingerprint:
            return path
    return None


def read_state(path: str | Path) -> dict[str, Any] | None:
    try:
        return json.loads((Path(path) / "state.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None


def restore_checkpoint(
    path: str | Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, device: torch.device
) -> dict[str, Any]:
    """Load weights, optimizer and RNG state into the live objects; return state.json."""
    path = Path(path)
    trainable = load_file(str(path / "trainable.safetensors"))
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, tensor in trainable.items():
            params[name].copy_(tensor)
    optimizer.load_state_dict(torch.load(path / "optimizer.pt", map_location=device, weights_only=True))
    restore_rng(torch.load(path / "rng.pt", weights_only=True), device)
    return json.loads((path / "state.json").read_text())


def _checkpoints(root: Path) -> list[Path]:
    """step-* directories, newest first."""
    if not root.is_dir():
        return []
    found = [
        p for p in root.iterdir() if p.is_dir() and p.name.startswith(_PREFIX) and p.name[len(_PREFIX) :].isdigit()
    ]
    return sorted(found, key=lambda p: int(p.name[len(_PREFIX) :]), reverse=True)
