"""Metrics files and the progress bar (rank 0 only).

``metrics.jsonl`` gets one JSON object per logged step (and one per skipped non-finite step);
``metrics.csv`` the same regular rows with a fixed header. On resume, rows written after the
checkpoint being resumed from are dropped first, so a run that was killed and resumed has exactly
the rows of an uninterrupted run (the kill -9 test compares them).
"""

from __future__ import annotations

import csv
import json
import math
import warnings
from pathlib import Path
from typing import Any

from tim.errors import TimError
from tim.io import write_text
from tim.training.checkpoint import write_json_atomic

JSONL = "metrics.jsonl"
CSV = "metrics.csv"


def _finite_or_text(value: Any) -> Any:
    # JSON has no NaN/Inf: write them as strings so the file stays standard and the value visible.
    return str(value) if isinstance(value, float) and not math.isfinite(value) else value


def _truncate_jsonl(path: Path, after_step: int) -> None:
    """Keep the rows up to ``after_step``; drop (and name, in one warning) lines that are not rows."""
    if not path.is_file():
        return
    kept, dropped = [], []
    for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        try:
            row = json.loads(line)
        except json.JSONDecodeError:  # a line cut by a kill, or not JSON at all
            row = None
        step = row.get("step") if isinstance(row, dict) else None
        if not isinstance(step, int) or isinstance(step, bool):
            if line.strip():
                dropped.append(number)
            continue
        if step <= after_step:
            kept.append(line)
    if len(dropped) > 1 or (
        dropped and dropped[-1] != number
    ):  # a single cut last line is the normal kill case
        shown = ", ".join(map(str, dropped[:5])) + (
            f" (+{len(dropped) - 5} more)" if len(dropped) > 5 else ""
        )
        warnings.warn(
            f"{path}: dropped {len(dropped)} line(s) that are not metric rows (a JSON object with an "
            f"integer 'step'): line {shown}",
            stacklevel=3,
        )
    write_text(path, "".join(f"{line}\n" for line in kept))


def _truncate_csv(path: Path, after_step: int) -> None:
    if not path.is_file():
        return
    lines = path.read_text().splitlines()
    if not lines:
        return
    header = lines[0].split(",")
    step_column = header.index("step") if "step" in header else 0
    kept = [lines[0]]
    for line in lines[1:]:
        cells = line.split(",")
        if (
            len(cells) == len(header)
            and cells[step_column].isdigit()
            and int(cells[step_column]) <= after_step
        ):
            kept.append(line)
    write_text(path, "".join(f"{line}\n" for line in kept))


class MetricsLogger:
    """Append metric rows to JSONL/CSV (and TensorBoard) in the run directory.

    Args:
        run_dir: the run directory.
        jsonl: write ``metrics.jsonl``.
        csv_file: write ``metrics.csv``.
        tensorboard: also write TensorBoard events under ``run_dir/tensorboard``.
        enabled: False on ranks other than 0 (then every method does nothing).
        resume_step: drop rows with a larger step (written after the checkpoint resumed from).
    """

    def __init__(
        self,
        run_dir: Path,
        *,
        jsonl: bool,
        csv_file: bool,
        tensorboard: bool,
        enabled: bool,
        resume_step: int,
    ) -> None:
        self.enabled = enabled
        self.jsonl = run_dir / JSONL if jsonl else None
        self.csv = run_dir / CSV if csv_file else None
        self.writer = None
        if not enabled:
            return
        for path, truncate in ((self.jsonl, _truncate_jsonl), (self.csv, _truncate_csv)):
            if path is not None:
                truncate(path, resume_step)
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                raise TimError(
                    "logging.tensorboard=true needs the tensorboard package",
                    "pip install tensorboard, or set logging.tensorboard=false",
                ) from None
            self.writer = SummaryWriter(str(run_dir / "tensorboard"))

    def log(self, row: dict[str, Any]) -> None:
        """Append one row (``row["step"]`` required)."""
        if not self.enabled:
            return
        row = {key: _finite_or_text(value) for key, value in row.items()}
        if self.jsonl is not None:
            with open(self.jsonl, "a") as handle:
                handle.write(json.dumps(row) + "\n")
        if self.csv is not None and "event" not in row:
            self._append_csv(row)
        if self.writer is not None:
            for key, value in row.items():
                if isinstance(value, (int, float)) and key != "step":
                    self.writer.add_scalar(key, value, row["step"])

    def _append_csv(self, row: dict[str, Any]) -> None:
        assert self.csv is not None
        if self.csv.is_file() and self.csv.stat().st_size:
            with open(self.csv) as handle:
                header = handle.readline().strip().split(",")
        else:
            header = list(row)
            self.csv.write_text(",".join(header) + "\n")
        with open(self.csv, "a", newline="") as handle:
            csv.writer(handle).writerow([row.get(key, "") for key in header])

    def close(self) -> None:
        """Flush TensorBoard."""
        if self.writer is not None:
            self.writer.close()


def write_summary(run_dir: Path, summary: dict[str, Any]) -> None:
    """Write ``run_dir/summary.json`` atomically (final counters of the run)."""
    write_json_atomic(run_dir / "summary.json", summary)


class Progress:
    """A tqdm bar counting optimizer steps (mse, it/s and ETA shown); silent when disabled.

    The bar shows the unweighted squared error: with adaptive normalisation the weighted loss
    stays near the mean time weight whatever the fit, so it says nothing to a person watching.
    """

    def __init__(self, total: int, initial: int, enabled: bool) -> None:
        self.bar = None
        if enabled:
            from tim.progress import progress_bar

            self.bar = progress_bar(
                total=total, initial=initial, unit="step", dynamic_ncols=True, desc="train"
            )

    def update(self, loss: float | None, images: int) -> None:
        """Advance by one step and show the latest (unweighted) loss."""
        if self.bar is None:
            return
        self.bar.update(1)
        if loss is not None:
            self.bar.set_postfix(
                mse=f"{loss:.4f}", images=f"{images:,}", refresh=False
            )  # tqdm prints ints as 1e+4

    def write(self, message: str) -> None:
        """Print a line above the bar (rank 0)."""
        if self.bar is not None:
            self.bar.write(message)

    def close(self) -> None:
        """Close the bar."""
        if self.bar is not None:
            self.bar.close()
