"""The benchmark measures only what the machine runs natively and reports the demo's time."""

from pathlib import Path

import pytest
import torch

from bench import report, run
from bench.demo import stage_rates


def test_a_cpu_without_bf16_units_is_measured_in_fp32_only(monkeypatch):
    monkeypatch.setattr(run, "has_native_bf16", lambda: False)
    assert run.native_precisions(torch.device("cpu")) == ("fp32",)
    monkeypatch.setattr(run, "has_native_bf16", lambda: True)
    assert run.native_precisions(torch.device("cpu")) == ("fp32", "bf16")


def test_stage_rates_average_each_stages_epochs_in_order(tmp_path: Path):
    metrics = tmp_path / "metrics.csv"
    metrics.write_text("epoch,stage,images_per_s\n1,encoders,80\n2,encoders,90\n3,diffusion,200\n4,diffusion,220\n")
    assert stage_rates(metrics) == {"encoders": pytest.approx(85.0), "diffusion": pytest.approx(210.0)}


@pytest.mark.parametrize(("features", "limit"), [("avx2", 6), ("avx2 avx512f avx512_bf16 amx_bf16", 4)])
def test_demo_time_is_held_to_the_machines_target(features, limit):
    demo = {"precision": "fp32", "train_s": 300.0, "evaluate_s": 30.0, "stage_images_per_s": {"encoders": 80.0},
            "targets_met": 8, "targets": 8, "t2i_all": 0.93, "caption_all": 0.99}
    results = {"device": "cpu", "machine": {"cpu_features": features}, "demo": [demo]}
    assert report.demo_minutes_target(results) == limit
    details = report.demo_details(results)
    assert "| fp32 | 300 | 30.0 | 5.50 | 80.0 | 93.0% | 99.0% | 8 of 8 |" in details
    assert report.at_most(5.5, limit) == ("met" if limit == 6 else "missed by 37.5%")
