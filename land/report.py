"""An evaluation's leaderboard and its misses (rich tables), its JSON file and its bar chart (PNG)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.markup import escape
from rich.table import Table

from land.results import EvalResult

_CELL_CHARS = 60  # prompt, gold and answer cells of the misses table are cut to this


def eval_title(task_names: list[str] | tuple[str, ...]) -> str:
    """What `lorastream eval` evaluated, for its table, JSON and chart."""
    return f"Base vs fine-tuned: {', '.join(task_names)}"


def leaderboard(result: EvalResult, title: str | None = None) -> Table:
    """Tasks by gain, best first, then the mean row; titled by `title` or the result's own."""
    table = Table(title=escape(title or result.title), title_style="bold")
    for column, justify in (
        ("task", "left"),
        ("metric", "left"),
        ("rows", "right"),
        ("base", "right"),
        ("fine-tuned", "right"),
        ("gain", "right"),
    ):
        table.add_column(column, justify=justify)
    for task in sorted(result.tasks, key=lambda t: t.gain, reverse=True):
        failed = task.num_failed_base + task.num_failed_adapter
        note = f" [red]({failed} failed)[/]" if failed else ""
        table.add_row(
            task.name,
            task.metric,
            str(task.num_rows),
            f"{task.base:.1f}",
            f"{task.adapter:.1f}",
            f"[green]{task.gain:+.1f}[/]{note}" if task.gain > 0 else f"[red]{task.gain:+.1f}[/]{note}",
        )
    table.add_section()
    table.add_row(
        "[bold]mean",
        "",
        "",
        f"{result.mean_base:.1f}",
        f"{result.mean_adapter:.1f}",
        f"[bold]{result.mean_gain_points:+.1f}",
    )
    return table


def misses_table(result: EvalResult) -> Table | None:
    """A sample of the adapter's wrong answers per task (None when it missed nothing)."""
    if not any(task.misses for task in result.tasks):
        return None
    table = Table(title="Sample misses of the fine-tuned adapters", title_style="bold")
    for column in ("task", "prompt (end)", "expected", "got", "score"):
        table.add_column(column, justify="right" if column == "score" else "left", overflow="fold")
    for task in result.tasks:
        for miss in task.misses:
            prompt = " ".join(miss.prompt.split())
            prompt = prompt if len(prompt) <= _CELL_CHARS else "…" + prompt[-_CELL_CHARS + 1 :]
            table.add_row(task.name, escape(prompt), escape(_cut(miss.gold)), escape(_cut(miss.adapter)), f"{miss.score:.0f}")
    return table


def _cut(text: str) -> str:
    text = repr(text)[1:-1]  # newlines and tabs shown, not obeyed
    return text if len(text) <= _CELL_CHARS else text[: _CELL_CHARS - 1] + "…"


def write_json(path: str | Path, result: EvalResult, extra: dict[str, Any] | None = None) -> Path:
    """The result's JSON form, with `extra` top-level keys (a run's timings, config)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**result.to_json(), **(extra or {})}, indent=2) + "\n")
    return path


def save_chart(path: str | Path, result: EvalResult, title: str | None = None) -> Path:
    """Grouped bars: base and fine-tuned score per task, with the mean gain in the title."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(result.tasks)
    positions = range(len(tasks))
    width = 0.38
    fig, ax = plt.subplots(figsize=(max(6.0, 1.3 * len(tasks) + 2), 4.2))
    base = ax.bar([p - width / 2 for p in positions], [t.base for t in tasks], width, label="base", color="tab:gray")
    tuned = ax.bar(
        [p + width / 2 for p in positions],
        [t.adapter for t in tasks],
        width,
        label="fine-tuned (LoRA)",
        color="tab:blue",
    )
    ax.bar_label(base, fmt="%.0f", fontsize=8)
    ax.bar_label(tuned, fmt="%.0f", fontsize=8)
    ax.set_xticks(list(positions), [f"{t.name}\n({t.metric})" for t in tasks], fontsize=8)
    ax.set_ylim(0, 108)
    ax.set_ylabel("score (points)")
    ax.set_title(f"{title or result.title} — mean gain {result.mean_gain_points:+.1f} points", fontsize=10)
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
