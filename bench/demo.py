"""The demo as a user runs it: `make demo`'s two commands, timed end to end in fresh processes
(imports, data generation on a first run, training, evaluation), with images/s per stage read
from the run's metrics.csv and the evaluation's targets."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run_timed(command: list[str], precision: str) -> float:
    """Seconds `command` took; its output is dropped, its failure raises with the last lines."""
    start = time.perf_counter()
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).splitlines()[-5:])
        raise RuntimeError(f"{' '.join(command[1:3])} (--precision {precision}) failed:\n{tail}")
    return time.perf_counter() - start


def stage_rates(metrics_csv: Path) -> dict[str, float]:
    """Mean images/s of each stage's epochs, in the order the stages ran."""
    per_stage: dict[str, list[float]] = {}
    with metrics_csv.open() as rows:
        for row in csv.DictReader(rows):
            per_stage.setdefault(row["stage"], []).append(float(row["images_per_s"]))
    return {stage: sum(rates) / len(rates) for stage, rates in per_stage.items()}


def bench_demo(scratch: Path, precision: str, device: str) -> dict:
    """`make demo` at `precision` on `device`, into `scratch`: its wall times and its results."""
    output = scratch / f"demo-{precision}"
    train = [sys.executable, "train.py", "--preset", "shapes", "--output-dir", str(output), "--overwrite",
             "--no-sample-every-epoch", "--precision", precision, "--device", device]
    evaluate = [sys.executable, "evaluate.py", "--checkpoint", str(output), "--device", device,
                "--output", str(output / "evaluation.json")]
    train_s = run_timed(train, precision)
    evaluate_s = run_timed(evaluate, precision)
    evaluation = json.loads((output / "evaluation.json").read_text())
    return {
        "precision": precision,
        "train_s": train_s,
        "evaluate_s": evaluate_s,
        "stage_images_per_s": stage_rates(output / "metrics.csv"),
        "targets_met": sum(target["met"] for target in evaluation["targets"].values()),
        "targets": len(evaluation["targets"]),
        "t2i_all": evaluation["metrics"]["t2i/all"],
        "caption_all": evaluation["metrics"]["caption/all"],
    }
