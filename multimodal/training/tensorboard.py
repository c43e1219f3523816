"""Training curves where people already look: TensorBoard, through torch's own SummaryWriter.

    train/<loss>   the mean of each training loss and accuracy over the last `log_every` steps
    train/lr       the learning rate
    val/<metric>   each epoch's validation losses and retrieval recalls
    samples        each epoch's sample sheet, as an image

On with `train.py --report-to tensorboard`; the files go to <output-dir>/tensorboard/.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

LOG_DIR = "tensorboard"  # inside the run's output folder


class TensorBoardLog:
    """Sums the step metrics and writes their means every `log_every` steps. A resumed run
    (`first_step` > 0) drops what an earlier run logged after its last checkpoint."""

    def __init__(self, output_dir: Path, log_every: int, first_step: int = 0) -> None:
        from torch.utils.tensorboard import SummaryWriter  # needs the tensorboard package

        self.writer = SummaryWriter(str(Path(output_dir) / LOG_DIR), purge_step=first_step or None)
        self.log_every = log_every
        self.sums: dict[str, float] = {}
        self.count = 0

    def step(self, step: int, metrics: dict[str, float]) -> None:
        """One optimiser step's metrics (`step` counts the steps done)."""
        for name, value in metrics.items():
            self.sums[name] = self.sums.get(name, 0.0) + value
        self.count += 1
        if step % self.log_every == 0:
            for name, total in self.sums.items():
                self.writer.add_scalar(f"train/{name}", total / self.count, step)
            self.sums, self.count = {}, 0

    def epoch(self, step: int, row: dict[str, Any], sample_sheet: Path | None) -> None:
        """An epoch's validation metrics (the `val_` columns of metrics.csv) and sample sheet."""
        for name, value in row.items():
            if name.startswith("val_"):
                self.writer.add_scalar(f"val/{name[4:]}", value, step)
        if sample_sheet is not None and sample_sheet.is_file():
            with Image.open(sample_sheet) as sheet:
                self.writer.add_image("samples", np.asarray(sheet.convert("RGB")), step, dataformats="HWC")
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
