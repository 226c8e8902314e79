"""The matrix on the console (a rich table: task × base, with the few-shot column) and as a heatmap
PNG (rows: each base, then its fine-tunes, then the few-shot base; columns: the tasks and the mean),
as LoRA Land's table and heatmap show theirs."""

from __future__ import annotations

import statistics
from pathlib import Path

from rich.markup import escape
from rich.table import Table

from land.matrix import MatrixResult

TITLE = "LoRA Land, in miniature: bases × tasks"


def matrix_table(result: MatrixResult) -> Table:
    """One row per task (then the mean): per base `base → fine-tuned (gain)`, then the few-shot score."""
    table = Table(title=TITLE, title_style="bold")
    table.add_column("task")
    for name in result.bases:
        table.add_column(escape(f"{name}: base → fine-tuned"), justify="right")
    if result.fewshot is not None:
        table.add_column(escape(f"{result.fewshot.base} few-shot"), justify="right")
    for i, task in enumerate(result.task_names):
        cells = [task]
        for scores in result.bases.values():
            t = scores.tasks[i]
            failed = t.num_failed_base + t.num_failed_adapter
            note = f" [red]({failed} failed)[/]" if failed else ""
            cells.append(f"{t.base:.1f} → {t.adapter:.1f} ({_gain(t.gain)}){note}")
        if result.fewshot is not None:
            cells.append(f"{result.fewshot.score(task):.1f}")
        table.add_row(*cells)
    table.add_section()
    means = ["[bold]mean"]
    for scores in result.bases.values():
        means.append(f"{scores.mean_base:.1f} → {scores.mean_adapter:.1f} ([bold]{_gain(scores.mean_gain_points)}[/])")
    if result.fewshot is not None:
        means.append(f"{result.fewshot.mean:.1f}")
    table.add_row(*means)
    return table


def heatmap_rows(result: MatrixResult) -> list[tuple[str, list[float]]]:
    """(label, score per task then the mean) for every row of the heatmap, top to bottom."""
    rows = []
    for name, scores in result.bases.items():
        for label, values in ((f"{name} base", [t.base for t in scores.tasks]),
                              (f"{name} + LoRA", [t.adapter for t in scores.tasks])):
            rows.append((label, [*values, statistics.fmean(values)]))
    if result.fewshot is not None:
        values = [result.fewshot.score(task) for task in result.task_names]
        rows.append((f"{result.fewshot.base} few-shot", [*values, statistics.fmean(values)]))
    return rows


def save_heatmap(path: str | Path, result: MatrixResult) -> Path:
    """Scores (0-100) of every row of `heatmap_rows` per task, annotated, in one colour scale."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = heatmap_rows(result)
    columns = [*result.task_names, "mean"]
    values = [scores for _, scores in rows]
    fig, ax = plt.subplots(figsize=(1.1 * len(columns) + 2.5, 0.55 * len(rows) + 1.6))
    image = ax.imshow(values, cmap="viridis", vmin=0, vmax=100, aspect="auto")
    ax.set_xticks(range(len(columns)), columns, fontsize=8, rotation=20, ha="right")
    ax.set_yticks(range(len(rows)), [label for label, _ in rows], fontsize=8)
    for y, row in enumerate(values):
        for x, value in enumerate(row):
            ax.text(x, y, f"{value:.0f}", ha="center", va="center", fontsize=8,
                    color="black" if value > 60 else "white")
    gains = ", ".join(f"{name} {scores.mean_gain_points:+.1f}" for name, scores in result.bases.items())
    ax.set_title(f"{TITLE}\nmean gain (points): {gains}", fontsize=9)
    fig.colorbar(image, ax=ax, label="score (points)", fraction=0.04)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def fewshot_line(result: MatrixResult) -> str:
    """On how many tasks the small fine-tuned adapters beat the few-shot base (every base's, then each's)."""
    if result.fewshot is None:
        return ""
    total = len(result.task_names)
    each = ", ".join(f"{name}: {len(result.beats_fewshot(name))} of {total}" for name in result.bases)
    return (
        f"the small fine-tuned adapters beat the few-shot {escape(result.fewshot.base)} on "
        f"[bold]{len(result.beaten_by_every_base())} of {total}[/] tasks ({each})"
    )


def _gain(points: float) -> str:
    return f"[green]{points:+.1f}[/]" if points > 0 else f"[red]{points:+.1f}[/]"
