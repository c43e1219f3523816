"""`python -m bench`: measure every hot path on one device and write one document.

    python -m bench                                   # CPU: docs/BENCHMARKS.md (~9 min on 2 cores, 5 of them the demo)
    python -m bench --quick                           # a one-minute smoke run (no demo)
    python -m bench --no-demo                         # everything but `make demo` timed end to end
    python -m bench --device cuda --output gpu.md     # the GPU column, in files of its own: gpu.md, gpu.json
    python -m bench --merge gpu.md                    # add that column to docs/BENCHMARKS.md

The raw results go beside the document (bench/results.json for docs/BENCHMARKS.md, NAME.json
for NAME.md) and the document is rendered from them. A run replaces its own device's column
in the output and keeps the other one. Only the
precisions the device computes natively are measured: bf16 on a CPU without bf16 units is
emulated, hundreds of times slower, and nothing here would run it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from bench.checkpointing import CPU_BATCH, bench_checkpointing
from bench.demo import bench_demo
from bench.data import COCO_MINI, DataSet, bench_data, shapes_dir
from bench.generation import bench_image_to_text, bench_text_to_image
from bench.report import DEVICES, DOCUMENT, read_results, results_path, targets, write_document
from bench.text_cache import bench_text_cache
from bench.timing import Timer, describe_machine, matmul_peak, peak_kernels, peak_sizes, precision_name
from bench.training import TrainingJob, run_in_fresh_process
from bench.unet import bench_unets
from multimodal import GenerativeMultimodalModel, model_preset
from multimodal.device import autocast_dtype, has_native_bf16, pick_device
from multimodal.models.text_encoder import bundled_bert_path


@dataclass(frozen=True)
class Plan:
    """How much of everything a run measures."""

    budget_s: float
    min_repeats: int
    max_repeats: int
    unet_batches: tuple[int, ...]
    unet_fp32_too: bool  # besides the training precision
    t2i_steps: int
    t2i_batches: tuple[int, ...]
    i2t_batches: tuple[int, ...]
    shapes_batch: int
    shapes_precisions: tuple[str, ...]  # the trainer's --precision values the shapes preset trains at
    coco_batch: int  # on the CPU; a GPU trains the coco preset at its batch of 64
    data_images: int
    data_passes: int
    demo: bool  # `make demo` end to end, at each native precision
    text_cache_captions: int  # distinct captions fed to the frozen-BERT text cache (0: not measured)
    checkpointing_batch: int  # coco with and without --gradient-checkpointing, on the CPU (0: not); a GPU: 64
    t2i_compiled: bool = False  # one picture with the UNet compiled too (its first call takes seconds)


FULL = Plan(1.5, 5, 15, (1, 16, 64), True, 50, (1, 8), (1, 8, 32), 32, ("fp32", "bf16"), 4, 320, 3, True, 50_000,
            CPU_BATCH, t2i_compiled=True)
QUICK = Plan(0.0, 1, 1, (1, 4), False, 5, (1, 2), (1,), 4, ("auto",), 2, 48, 1, False, 0, 0)
GPU_COCO_BATCH = 64


def log(message: str, start: float) -> None:
    print(f"[bench {time.perf_counter() - start:5.0f}s] {message}", file=sys.stderr, flush=True)


def random_bert_overrides(folder: Path) -> dict:
    """Model fields that build BERT from `folder`'s config.json with random weights and take
    the tokenizer from there: the same computation without the bundled weights."""
    config = json.loads((folder / "config.json").read_text())
    skip = {"architectures", "transformers_version", "_name_or_path"}
    return {"text_encoder": str(folder), "bert_config": {k: v for k, v in config.items() if k not in skip}}


def native_precisions(device: torch.device) -> tuple[str, ...]:
    """The precisions `device` computes in hardware: fp32, and bf16 on a GPU or a CPU with bf16 units."""
    return ("fp32", "bf16") if device.type == "cuda" or has_native_bf16() else ("fp32",)


def measure(device: torch.device, plan: Plan, quick: bool, coco_dir: Path, random_bert: Path | None) -> dict:
    """Every section on `device`; the results as report.py reads them."""
    start = time.perf_counter()
    native = native_precisions(device)
    timer = Timer(device, plan.budget_s, plan.min_repeats, plan.max_repeats)
    train_dtype = autocast_dtype("auto", device)
    generation_dtype = torch.bfloat16 if device.type == "cuda" else None  # the CLIs run fp32 on the CPU
    overrides = random_bert_overrides(random_bert) if random_bert else {}
    notes = []
    if device.type == "cuda":
        notes.append("cuDNN convolutions run fp32 as TF32 by default (torch.backends.cudnn.allow_tf32); the fp32 "
                      "matmul peak does not (allow_tf32 is off for matmuls), so fp32 convolution work can exceed it.")
    if "bf16" not in native:
        notes.append("bf16 not measured: this CPU has no bf16 units (AVX512-BF16 or AMX), so bf16 would be "
                     "emulated, hundreds of times slower than fp32; training and generation run fp32 here.")
    if random_bert:
        notes.append(f"BERT built from {random_bert}/config.json with random weights (same shape as the bundled one).")
    results: dict = {
        "device": device.type,
        "load_average": [os.getloadavg()[0]],  # at the start and at the end: other work on the machine
        "quick": quick,
        "machine": describe_machine(device),
        "training_precision": precision_name(train_dtype),
        "notes": notes,
    }

    log("matmul peak", start)
    dtypes_by_name = {"fp32": torch.float32, "bf16": torch.bfloat16}
    results["peak"] = {name: matmul_peak(device, dtypes_by_name[name], timer) for name in native}
    results["peak_sizes"] = list(peak_sizes(device))
    results["peak_kernels"] = list(peak_kernels(device))

    dtypes = list(dict.fromkeys([None, train_dtype] if plan.unet_fp32_too else [train_dtype]))
    results["unet"] = []
    for preset in ("coco", "shapes"):
        log(f"{preset} UNet against diffusers", start)
        results["unet"] += bench_unets(preset, device, dtypes, list(plan.unet_batches), timer)

    log("text → image", start)
    torch.manual_seed(0)
    model = GenerativeMultimodalModel(model_preset("shapes", **overrides)).to(device).eval()
    results["text_to_image"] = bench_text_to_image(model, generation_dtype, list(plan.t2i_batches), plan.t2i_steps, timer,
                                                   plan.t2i_compiled)
    log("image → text", start)
    model = GenerativeMultimodalModel(model_preset("coco", **overrides)).to(device).eval()
    results["image_to_text"] = bench_image_to_text(model, generation_dtype, list(plan.i2t_batches), timer)
    del model

    with tempfile.TemporaryDirectory() as scratch:
        shapes = shapes_dir(Path(scratch))
        coco = coco_dir if (coco_dir / "annotations").is_dir() else None
        coco_batch = GPU_COCO_BATCH if device.type == "cuda" else plan.coco_batch
        if device.type == "cpu":
            notes.append(f"The coco preset trains at batch {coco_batch} here (64 on a GPU): {os.cpu_count()} CPU cores.")
        if coco is None:
            notes.append(f"{coco_dir} not found: the coco preset trains on the shapes set at 224 px, COCO loading is skipped.")
        jobs = [TrainingJob("shapes", precision, plan.shapes_batch, str(shapes), "shapes", timer, overrides)
                for precision in plan.shapes_precisions if precision == "auto" or precision in native]
        jobs.append(TrainingJob("coco", "auto", coco_batch, str(coco or shapes),
                                coco.name if coco else "shapes at 224 px", timer, overrides))
        results["training"] = []
        for job in jobs:
            log(f"training: {job.preset}, {job.precision}, batch {job.batch_size}", start)
            results["training"].append(run_in_fresh_process(job))

        checkpointing_batch = GPU_COCO_BATCH if device.type == "cuda" else plan.checkpointing_batch
        if checkpointing_batch:
            log(f"gradient checkpointing: coco, batch {checkpointing_batch}, without and with", start)
            results["checkpointing"] = bench_checkpointing(device, checkpointing_batch, coco or shapes,
                                                           coco.name if coco else "shapes at 224 px", overrides)

        log("data loading", start)
        sets = [
            DataSet("shapes", shapes, model_preset("shapes").image_size, model_preset("shapes").max_text_length),
            DataSet("coco", coco, model_preset("coco").image_size, model_preset("coco").max_text_length),
        ]
        tokenizer = overrides.get("text_encoder") or bundled_bert_path()
        results["data"] = bench_data(sets, tokenizer, plan.data_images, plan.data_passes)
        if plan.text_cache_captions:
            log(f"text cache: {plan.text_cache_captions:,} captions, capped and not", start)
        results["text_cache"] = bench_text_cache(plan.text_cache_captions) if plan.text_cache_captions else []

        results["demo"] = []
        for precision in native if plan.demo else ():
            log(f"make demo, {precision} (about 5 minutes on 2 CPU cores)", start)
            results["demo"].append(bench_demo(Path(scratch), precision, device.type))
    results["timings_redone"] = timer.redone + sum(run["timings_redone"] for run in results["training"])
    results["timings_still_busy"] = timer.still_busy + sum(run["timings_still_busy"] for run in results["training"])
    results["seconds"] = time.perf_counter() - start
    results["load_average"].append(os.getloadavg()[0])
    log("done", start)
    return results


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda or auto")
    parser.add_argument("--quick", action="store_true", help="a smoke run of about a minute: fewer sizes and repeats")
    parser.add_argument("--no-demo", action="store_true", help="skip timing `make demo` end to end (5 minutes on 2 CPU cores)")
    parser.add_argument("--output", type=Path, default=DOCUMENT,
                        help="the markdown document (default: docs/BENCHMARKS.md, its raw results in bench/results.json; "
                             "NAME.md keeps them in NAME.json)")
    parser.add_argument("--merge", type=Path, nargs="+", metavar="FILE",
                        help="measure nothing: add the columns of these documents (their raw results) or results files "
                             "to --output")
    parser.add_argument("--coco", type=Path, default=COCO_MINI, metavar="DIR",
                        help="COCO-layout folder for the coco preset's data (default: ../shared/coco-mini)")
    parser.add_argument("--random-bert", type=Path, metavar="DIR",
                        help="a folder with a BERT config.json and tokenizer files, for a machine without the "
                             "bundled weights: BERT gets random weights of the same shape")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    results = read_results(args.output)
    if args.merge:
        for path in args.merge:
            found = read_results(path)
            if not found:
                raise SystemExit(f"{path}: no bench results in {results_path(path)} "
                                 f"(write them with python -m bench --output {path})")
            results |= found
    else:
        device = pick_device(args.device)
        plan = QUICK if args.quick else FULL
        if args.no_demo:
            plan = dataclasses.replace(plan, demo=False)
        results[device.type] = measure(device, plan, args.quick, args.coco.resolve(), args.random_bert)
    write_document(args.output, results)
    for device in (device for device in DEVICES if device in results):  # not the ONNX section (bench.export)
        for what, target, value, verdict in targets(results[device]):
            print(f"{device:4}  {what}: {value} (target {target}) {verdict}")
    print(f"wrote {args.output} and {results_path(args.output)}")
    return 0
