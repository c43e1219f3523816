"""Training curves where people already look: TensorBoard (torch's own SummaryWriter) and
Weights & Biases (the `wandb` package), under the same names in both:

    train/<loss>   the mean of each training loss and accuracy over the last `log_every` steps
    train/lr       the learning rate
    val/<metric>   each epoch's validation losses and retrieval recalls
    samples        each epoch's sample sheet, as an image

On with `train.py --report-to tensorboard`, `wandb` or `tensorboard,wandb`. TensorBoard's files go
to <output-dir>/tensorboard/; W&B's run is named after the output folder, keeps its files in
<output-dir>/wandb/ and records the run's configuration (WANDB_MODE=offline keeps it on this
machine; `wandb sync` uploads it later).
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

TENSORBOARD_DIR = "tensorboard"  # inside the run's output folder
WANDB_DIR = "wandb"
WANDB_RUN_ID = "run_id"  # inside WANDB_DIR: a resumed run goes on logging into the same W&B run


class _Report:
    """Sums the step metrics and hands their means on every `log_every` steps."""

    def __init__(self, log_every: int) -> None:
        self.log_every = log_every
        self.sums: dict[str, float] = {}
        self.count = 0

    def step(self, step: int, metrics: dict[str, float]) -> None:
        """One optimiser step's metrics (`step` counts the steps done)."""
        for name, value in metrics.items():
            self.sums[name] = self.sums.get(name, 0.0) + value
        self.count += 1
        if step % self.log_every == 0:
            self.scalars({f"train/{name}": total / self.count for name, total in self.sums.items()}, step)
            self.sums, self.count = {}, 0

    def epoch(self, step: int, row: dict[str, Any], sample_sheet: Path | None) -> None:
        """An epoch's validation metrics (the `val_` columns of metrics.csv) and sample sheet."""
        self.scalars({f"val/{name[4:]}": value for name, value in row.items() if name.startswith("val_")}, step)
        if sample_sheet is not None and sample_sheet.is_file():
            self.image(sample_sheet, step)
        self.flush()

    def scalars(self, values: dict[str, float], step: int) -> None:
        raise NotImplementedError

    def image(self, path: Path, step: int) -> None:
        raise NotImplementedError

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


class TensorBoardLog(_Report):
    """A resumed run (`first_step` > 0) drops what an earlier run logged after its last checkpoint."""

    def __init__(self, output_dir: Path, log_every: int, first_step: int = 0) -> None:
        from torch.utils.tensorboard import SummaryWriter  # needs the tensorboard package

        super().__init__(log_every)
        self.writer = SummaryWriter(str(Path(output_dir) / TENSORBOARD_DIR), purge_step=first_step or None)

    def scalars(self, values: dict[str, float], step: int) -> None:
        for name, value in values.items():
            self.writer.add_scalar(name, value, step)

    def image(self, path: Path, step: int) -> None:
        with Image.open(path) as sheet:
            self.writer.add_image("samples", np.asarray(sheet.convert("RGB")), step, dataformats="HWC")

    def flush(self) -> None:
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class WandbLog(_Report):
    """A resumed run continues the W&B run its output folder started (W&B ignores the steps it
    has already seen, so an earlier run's steps after its last checkpoint stay)."""

    def __init__(self, output_dir: Path, log_every: int, config: dict[str, Any]) -> None:
        import wandb

        super().__init__(log_every)
        folder = Path(output_dir) / WANDB_DIR
        folder.mkdir(parents=True, exist_ok=True)
        id_file = folder / WANDB_RUN_ID
        run_id = id_file.read_text().strip() if id_file.is_file() else secrets.token_hex(4)
        id_file.write_text(run_id + "\n")
        self.wandb = wandb
        self.run = wandb.init(dir=str(output_dir), name=Path(output_dir).resolve().name, id=run_id,
                              resume="allow", config=config)

    def scalars(self, values: dict[str, float], step: int) -> None:
        self.run.log(values, step=step)

    def image(self, path: Path, step: int) -> None:
        self.run.log({"samples": self.wandb.Image(str(path))}, step=step)

    def close(self) -> None:
        self.run.finish()


class Reports:
    """Every place `--report-to` names, as one."""

    def __init__(self, reports: list[_Report]) -> None:
        self.reports = reports

    def step(self, step: int, metrics: dict[str, float]) -> None:
        for report in self.reports:
            report.step(step, metrics)

    def epoch(self, step: int, row: dict[str, Any], sample_sheet: Path | None) -> None:
        for report in self.reports:
            report.epoch(step, row, sample_sheet)

    def close(self) -> None:
        for report in self.reports:
            report.close()


def open_reports(report_to: str, output_dir: Path, log_every: int, first_step: int,
                 config: dict[str, Any]) -> Reports | None:
    """The reports `report_to` names ("none", or destinations joined by commas), or None."""
    names = [name for name in report_to.split(",") if name != "none"]
    if not names:
        return None
    reports: list[_Report] = []
    if "tensorboard" in names:
        reports.append(TensorBoardLog(output_dir, log_every, first_step))
    if "wandb" in names:
        reports.append(WandbLog(output_dir, log_every, config))
    return Reports(reports)
