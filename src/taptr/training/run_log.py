"""Training logs: a CSV file with fixed columns and TensorBoard scalars when it is installed.

The CSV (`runs/NAME/log.csv`) has one row per logged step; columns are fixed when the run
starts, empty cells mean "not measured at this step" (evaluation columns, mostly). A resumed run
first drops the rows logged after its checkpoint, so the file never holds two histories.
"""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path


class CsvLog:
    """Append-only CSV with a fixed header."""

    def __init__(self, path: str | os.PathLike, columns: list[str], resume_step: int | None = None):
        self.path = Path(path)
        self.columns = list(columns)
        if resume_step is not None and self.path.is_file():
            self._truncate_after(resume_step)
        else:
            with open(self.path, "w", newline="") as handle:
                csv.writer(handle).writerow(self.columns)

    def _truncate_after(self, step: int) -> None:
        with open(self.path, newline="") as handle:
            rows = list(csv.DictReader(handle))
        kept = [row for row in rows if row.get("step") and int(row["step"]) <= step]
        with open(self.path, "w", newline="") as handle:
            writer = csv.DictWriter(handle, self.columns, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(kept)

    def write(self, values: dict) -> None:
        row = {name: _format(values.get(name)) for name in self.columns}
        with open(self.path, "a", newline="") as handle:
            csv.DictWriter(handle, self.columns).writerow(row)


def _format(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.6g}"
    return str(value)


class TensorBoardLog:
    """SummaryWriter when `tensorboard` is importable, otherwise a no-op."""

    def __init__(self, folder: str | os.PathLike):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            self.writer = None
        else:
            self.writer = SummaryWriter(log_dir=str(folder))

    @property
    def available(self) -> bool:
        return self.writer is not None

    def write(self, step: int, values: dict[str, float]) -> None:
        """values: scalar tag (e.g. "loss/vis", "eval/AJ") -> number."""
        if self.writer is None:
            return
        for tag, value in values.items():
            if value is not None:
                self.writer.add_scalar(tag, value, step)
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
