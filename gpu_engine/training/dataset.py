"""JSONL datasets of {prompt, completion} rows: parsing with per-line validation and a row cap,
loading from a file, the eval split.

Pure Python (no torch), so a caller can validate a dataset before it starts a job.
"""

from __future__ import annotations

import io
import json
import random
from dataclasses import dataclass
from pathlib import Path

from gpu_engine.training.dataset_source import MAX_DATASET_BYTES, read_regular_file
from gpu_engine.training.errors import DatasetInvalidError, DatasetTooLargeError

MAX_LINE_ERRORS_SHOWN = 10
MAX_DATASET_ROWS = 1_000_000


@dataclass(frozen=True)
class Row:
    prompt: str
    completion: str
    line: int  # 1-based line number in the file


def load_rows(
    path: str | Path,
    prompt_field: str = "prompt",
    completion_field: str = "completion",
    *,
    max_bytes: int = MAX_DATASET_BYTES,
    max_rows: int = MAX_DATASET_ROWS,
) -> list[Row]:
    """Every non-blank line of a JSONL file at a location the caller chose (no roots apply).

    Raises DatasetNotFoundError, DatasetRefusedError (not a regular file), DatasetTooLargeError,
    or DatasetInvalidError as `parse_rows` does.
    """
    data = read_regular_file(path, max_bytes)
    return parse_rows(data, prompt_field, completion_field, max_rows=max_rows, name=Path(path).name)


def parse_rows(
    data: bytes,
    prompt_field: str = "prompt",
    completion_field: str = "completion",
    *,
    max_rows: int = MAX_DATASET_ROWS,
    name: str = "dataset",
) -> list[Row]:
    """Every non-blank line of JSONL bytes as a Row.

    Raises DatasetTooLargeError past `max_rows` non-blank lines, or DatasetInvalidError naming
    every malformed line (a line that is not UTF-8 JSON, not an object, or lacks a string field;
    an empty completion).
    """
    rows: list[Row] = []
    errors: list[tuple[int, str]] = []
    num_rows = 0
    for number, raw in enumerate(io.BytesIO(data), start=1):
        if not raw.strip():
            continue
        num_rows += 1
        if num_rows > max_rows:
            raise DatasetTooLargeError(f"dataset {name} has more than {max_rows} rows")
        row_or_error = _parse_line(raw, number, prompt_field, completion_field)
        if isinstance(row_or_error, Row):
            rows.append(row_or_error)
        else:
            errors.append((number, row_or_error))
    if errors:
        shown = "; ".join(f"line {n}: {why}" for n, why in errors[:MAX_LINE_ERRORS_SHOWN])
        more = f" (and {len(errors) - MAX_LINE_ERRORS_SHOWN} more)" if len(errors) > MAX_LINE_ERRORS_SHOWN else ""
        raise DatasetInvalidError(f"{len(errors)} malformed row(s) in {name}: {shown}{more}", tuple(errors))
    if not rows:
        raise DatasetInvalidError(f"dataset {name} has no rows")
    return rows


def _parse_line(raw: bytes, number: int, prompt_field: str, completion_field: str) -> Row | str:
    try:
        obj = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        return "not UTF-8"
    except json.JSONDecodeError as exc:
        return f"not valid JSON ({exc.msg} at column {exc.colno})"
    if not isinstance(obj, dict):
        return f"expected a JSON object, got {type(obj).__name__}"
    for field in (prompt_field, completion_field):
        if field not in obj:
            return f"missing field {field!r}"
        if not isinstance(obj[field], str):
            return f"field {field!r} must be a string, got {type(obj[field]).__name__}"
    if not obj[completion_field]:
        return f"field {completion_field!r} is empty"
    return Row(obj[prompt_field], obj[completion_field], number)


def split_rows(rows: list[Row], eval_fraction: float, max_eval_rows: int, seed: int) -> tuple[list[Row], list[Row]]:
    """(train, eval): a seeded random `eval_fraction` of the rows (at most `max_eval_rows`) held out.

    At least one row always stays for training.
    """
    num_eval = min(max_eval_rows, int(len(rows) * eval_fraction), len(rows) - 1)
    if num_eval <= 0:
        return list(rows), []
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    held_out = set(order[:num_eval])
    train = [row for i, row in enumerate(rows) if i not in held_out]
    evals = [row for i, row in enumerate(rows) if i in held_out]
    return train, evals
