"""The benchmark measures only what the machine runs natively, reports the demo's time, and keeps its
raw results in a JSON file beside the rendered document."""

import json
from pathlib import Path

import pytest
import torch

from bench import report, run
from bench.demo import stage_rates
from bench.timing import matmul_peak


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


RESULTS = json.loads(report.RESULTS.read_text())  # the committed raw results: every section filled


def test_the_document_keeps_its_raw_results_in_a_json_file_beside_it(tmp_path: Path):
    document = tmp_path / "gpu.md"
    report.write_document(document, RESULTS)
    raw = tmp_path / "gpu.json"
    assert raw.read_text() == json.dumps(RESULTS, indent=1) + "\n"
    assert report.read_results(document) == RESULTS == report.read_results(raw)
    text = document.read_text()
    assert text.startswith("# Benchmarks\n") and "## Summary" in text and "## ONNX Runtime against PyTorch (CPU)" in text
    assert "The raw results are in [gpu.json](gpu.json)" in text
    assert "<!--" not in text and '"load_average"' not in text  # the rendered text only, no JSON
    assert sorted(path.name for path in tmp_path.iterdir()) == ["gpu.json", "gpu.md"]  # no temporary file left


def test_docs_benchmarks_is_rendered_from_bench_results_json():
    assert report.results_path(report.DOCUMENT) == report.ROOT / "bench" / "results.json"
    assert report.read_results(report.DOCUMENT) == RESULTS
    expected = report.render(RESULTS, "[bench/results.json](../bench/results.json)")
    assert report.DOCUMENT.read_text() == expected, "re-render it: python -m bench --merge bench/results.json"


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path: Path, monkeypatch):
    document, target = tmp_path / "gpu.md", tmp_path / "gpu.json"
    target.write_text("old\n")

    def fail(source, destination):
        raise OSError("disk full")

    monkeypatch.setattr(Path, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        report.write_document(document, RESULTS)
    assert target.read_text() == "old\n"
    assert [path.name for path in tmp_path.iterdir()] == ["gpu.json"]


def test_the_results_file_is_not_a_document(tmp_path: Path):
    with pytest.raises(ValueError, match="results file"):
        report.write_document(tmp_path / "gpu.json", RESULTS)


def test_merge_adds_another_runs_columns_without_measuring(tmp_path: Path, capsys):
    cpu, gpu = tmp_path / "cpu.md", tmp_path / "gpu.md"
    report.write_document(cpu, {"cpu": RESULTS["cpu"]})
    report.write_document(gpu, {"cuda": RESULTS["cuda"]})
    assert "GPU: NVIDIA" not in cpu.read_text()
    assert run.main(["--output", str(cpu), "--merge", str(gpu)]) == 0
    assert report.read_results(cpu) == {"cpu": RESULTS["cpu"], "cuda": RESULTS["cuda"]}
    assert f"GPU: {RESULTS['cuda']['machine']['gpu']}" in cpu.read_text()
    assert f"wrote {cpu} and {tmp_path / 'cpu.json'}" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="no bench results in"):
        run.main(["--output", str(cpu), "--merge", str(tmp_path / "nothing.md")])


def test_the_matmul_peak_is_the_fastest_of_its_sizes_and_libraries():
    # per size (1024², 2048², 4096²): matmul, then the 1×1 convolution; oneDNN's 2048² fastest
    times = iter([1.0, 1.0, 0.02, 0.01, 1.0, 1.0])
    peak = matmul_peak(torch.device("cpu"), torch.float32, lambda fn: next(times))
    assert peak == pytest.approx(2 * 2048**3 / 0.01 / 1e9)


def test_one_picture_is_held_to_the_time_its_flops_take_at_the_peak():
    results = json.loads(json.dumps(RESULTS["cpu"]))
    one = next(r for r in results["text_to_image"] if r["batch"] == 1 and r["guidance"] == 3.0)
    floor_ms = one["gflop_per_image"] / results["peak"]["fp32"] * 1e3
    rows = {what: (value, verdict) for what, _, value, verdict in report.targets(results)}
    what = "one picture, batch 1, 50 guided DDIM steps, fp32: time / its FLOPs at the fp32 matmul peak"
    assert rows[what] == (f"{one['ms_per_image'] / floor_ms:.1f}×", report.at_most(one["ms_per_image"] / floor_ms, 2.0))
    one["ms_per_image"] = 1.5 * floor_ms
    assert dict((w, v) for w, _, *v in report.targets(results))[what] == ["1.5×", "met"]
    assert any(line.startswith("**One picture at batch 1**") for line in report.bounds(results))


def test_a_speed_up_below_one_reads_as_slower():
    assert report.faster_or_slower(1.3) == "1.30× faster"
    assert report.faster_or_slower(0.8) == "1.25× slower"


def test_a_training_step_is_set_against_the_matmul_peak_of_its_precision():
    results = json.loads(json.dumps(RESULTS["cpu"]))
    shapes = report.training(results, "shapes", results["training_precision"])
    for stage in shapes["stages"]:
        stage["step_gflop"] = stage["step_ms"] / 1e3 * results["peak"]["bf16"] / 4  # a quarter of the bf16 peak
    assert "| whole step: GFLOP, % of the matmul peak |" in report.training_details(results)
    assert f"{report.num(shapes['stages'][0]['step_gflop'])}, 25%" in report.training_details(results)
    demo = next(line for line in report.bounds(results) if line.startswith("**The demo's training**"))
    assert "Whole steps reach 25% of the matmul peak (encoders" in demo and "and 25% of the matmul peak (diffusion" in demo
