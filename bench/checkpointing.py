"""Gradient checkpointing (`--gradient-checkpointing`): the coco preset's training step with and
without it, its time and its peak memory, each in a fresh process.

    python -m bench.checkpointing                          # CPU, batch 8: prints the rows, keeps them in bench/results.json
    python -m bench.checkpointing --device cuda            # batch 64, as `python -m bench` on a GPU

`python -m bench` measures them too (results[device]["checkpointing"]). Memory: on a GPU
`torch.cuda.max_memory_allocated` over the timed steps; on the CPU the process's peak resident
set (VmHWM) over the timed steps, reset to the resident set of the warmed-up trainer just before
them (/proc/self/clear_refs), so the warm-up and the set-up do not count. The steps are
`Trainer.train_step` on one fixed batch after one warm-up step, as bench/training.py times them.
Beside them, what each part of the model keeps for the backward pass per image (the tensors
autograd saves, parameters not counted): what a step's memory grows with per image, whatever
else the machine runs.
"""

from __future__ import annotations

import argparse
import gc
import json
import multiprocessing
import os
import tempfile
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import torch

from bench.data import COCO_MINI
from bench.report import DOCUMENT, num, read_results, results_path, table
from bench.timing import Timer, describe_machine, precision_name
from multimodal import GenerativeMultimodalModel
from multimodal.config import model_preset, train_preset
from multimodal.device import pick_device
from multimodal.files import write_text_atomically
from multimodal.training import Trainer

CPU_BATCH = 8  # the coco preset's batch of 64 takes minutes a step on 2 CPU cores; a GPU measures 64
SAVED_BATCH = 2  # the saved tensors grow linearly with the batch: two images tell the bytes per image


@dataclass
class CheckpointingJob:
    device: str
    batch_size: int
    data_dir: str
    checkpointing: bool
    model_overrides: dict = field(default_factory=dict)


def bench_checkpointing(device: torch.device, batch_size: int, data_dir: Path, data_name: str,
                        model_overrides: dict | None = None) -> dict:
    """The step without and with checkpointing, each in a process of its own."""
    load = [os.getloadavg()[0]]
    rows = []
    for checkpointing in (False, True):
        job = CheckpointingJob(str(device), batch_size, str(data_dir), checkpointing, model_overrides or {})
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
            rows.append(pool.submit(measure_step, job).result())
    load.append(os.getloadavg()[0])
    return {"preset": "coco", "batch": batch_size, "data": data_name, "rows": rows, "load_average": load,
            "machine": describe_machine(device), "saved_mb_per_image": saved_per_image(device, model_overrides or {})}


def saved_per_image(device: torch.device, model_overrides: dict) -> dict[str, list[float]]:
    """MiB per image each part keeps for the backward pass, [without, with] checkpointing: the
    storage of the tensors autograd saves in a training forward (fp32), parameters not counted.
    Each part gets its inputs detached, as bench/training.py's parts do."""
    torch.manual_seed(0)
    model = GenerativeMultimodalModel(model_preset("coco", **model_overrides)).to(device).train()
    parameters = {p.untyped_storage().data_ptr() for p in model.parameters()}
    images = torch.rand(SAVED_BATCH, 3, 224, 224, device=device) * 2 - 1
    tokens = model.text_encoder.tokenize(["a dog running on the beach with a ball in its mouth"] * SAVED_BATCH)
    ids, mask = tokens["input_ids"].to(device), tokens["attention_mask"].to(device)
    with torch.no_grad():
        z = model.image_encoder.encode(images)
        states = model.text_encoder.token_states(ids, mask)
        embedding = model.text_encoder.project(states, mask)

    def leaf(tensor: torch.Tensor) -> torch.Tensor:
        return tensor.detach().requires_grad_()

    parts = {
        "image encoder (frozen trunk)": lambda: model.image_encoder(images),
        "BERT": lambda: model.text_encoder.token_states(ids, mask),
        "image decoder": lambda: model.image_decoder.decode_from_latent(leaf(z)),
        "caption decoder": lambda: model.caption_decoder(leaf(z), ids, mask),
        "UNet (diffusion loss)": lambda: model.diffusion.training_loss(z, leaf(embedding), leaf(states), mask),
        "the whole forward": lambda: model(images, ids, mask)["loss"],
    }
    saved: dict[str, list[float]] = {name: [] for name in parts}
    for on in (False, True):
        model.set_gradient_checkpointing(on)
        for name, part in parts.items():
            storages: dict[int, int] = {}

            def pack(tensor: torch.Tensor) -> torch.Tensor:
                storage = tensor.untyped_storage()
                if storage.data_ptr() not in parameters:
                    storages[storage.data_ptr()] = storage.nbytes()
                return tensor

            with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
                part()
            saved[name].append(sum(storages.values()) / 2**20 / SAVED_BATCH)
    return saved


def measure_step(job: CheckpointingJob) -> dict:
    """Median time and peak memory of the training step of one configuration (in a fresh process)."""
    device = torch.device(job.device)
    timer = Timer(device)
    with tempfile.TemporaryDirectory() as output_dir:
        trainer = Trainer(
            model_preset("coco", **job.model_overrides),
            train_preset("coco", data_dir=job.data_dir, output_dir=output_dir, device=job.device,
                         batch_size=job.batch_size, num_workers=0, sample_every_epoch=False,
                         gradient_checkpointing=job.checkpointing),
        )
        batch = trainer.collate([trainer.train_set[i % len(trainer.train_set)] for i in range(job.batch_size)])
        trainer.train_step([batch])  # the optimiser's state, the allocator's first blocks
        trainer.step += 1
        gc.collect()
        before_mb = resident_mb("VmRSS")
        reset = reset_peak_resident()
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        seconds: list[float] = []  # steps of tens of seconds on a CPU: two; a GPU's, more while under 2 s in all
        while len(seconds) < 2 or (sum(seconds) < 2.0 and len(seconds) < 10):
            seconds.append(timer.once(lambda: trainer.train_step([batch])))
        seconds.sort()
        result = {
            "checkpointing": job.checkpointing,
            "precision": precision_name(trainer.autocast),
            "step_s": seconds[len(seconds) // 2],
            "steps_timed": len(seconds),
            "rss_before_mb": before_mb,
            "peak_rss_mb": resident_mb("VmHWM"),
            "peak_reset": reset,  # False: VmHWM is the whole process's (set-up and warm-up included)
        }
        if device.type == "cuda":
            result["peak_gpu_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    return result


def resident_mb(field_name: str) -> float:
    """VmRSS (now) or VmHWM (the peak) of this process, in MiB."""
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith(field_name + ":")) / 1024


def reset_peak_resident() -> bool:
    """Set VmHWM to the present resident set (Linux 4.0 on); False where the kernel refuses."""
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
        return True
    except OSError:
        return False


def checkpointing_details(results: dict) -> str:
    """The rows as Markdown tables and a line on how they were measured."""
    rows, gpu = results["rows"], "peak_gpu_mb" in results["rows"][0]
    header = ["coco preset, 224 px, batch " + str(results["batch"]), "step (s)", "images/s",
              "peak GPU memory (MiB)" if gpu else "peak RSS in the step (MiB)", "above the RSS before it (MiB)"]
    lines = []
    for row in rows:
        peak = row["peak_gpu_mb"] if gpu else row["peak_rss_mb"]
        lines.append([f"{'with' if row['checkpointing'] else 'without'} --gradient-checkpointing, {row['precision']}",
                      num(row["step_s"]), num(results["batch"] / row["step_s"]), num(peak),
                      "" if gpu else num(row["peak_rss_mb"] - row["rss_before_mb"])])
    plain, checked = rows
    field_name = "peak_gpu_mb" if gpu else "peak_rss_mb"
    machine = results["machine"]
    where = machine.get("gpu") or f"{machine['cpu']} ({machine['cores']} cores; {machine['cpu_features']})"
    return table(header, lines) + (
        f"\n\nWith checkpointing a step takes {checked['step_s'] / plain['step_s']:.2f}× the time and "
        f"{checked[field_name] / plain[field_name]:.2f}× the peak memory. Measured {machine['date']} on {where}, "
        f"torch {machine['torch']}, data {results['data']}: `Trainer.train_step` on one fixed batch, each "
        f"configuration in a fresh process, one warm-up step, then the median of {plain['steps_timed']} / "
        f"{checked['steps_timed']} steps; "
        + ("`torch.cuda.max_memory_allocated` over them" if gpu else
           "VmHWM over them, reset to the warmed-up trainer's resident set just before (the last column: the "
           "step's own memory)")
        + f". Load average {' / '.join(f'{v:.1f}' for v in results['load_average'])} at the start / end "
        "(other work on the machine slows the steps, not the memory)."
    ) + "\n\n" + table(
        ["kept for the backward pass (MiB per image, fp32)", "without", "with --gradient-checkpointing"],
        [[name, num(without), num(with_)] for name, (without, with_) in results["saved_mb_per_image"].items()],
    ) + ("\n\nThe storage of the tensors autograd saves in one training forward of each part (its inputs "
         f"detached; parameters not counted), {SAVED_BATCH} images, per image: what a step's memory grows with "
         "per image.")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.checkpointing", description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda or auto")
    parser.add_argument("--batch-size", type=int, help=f"default: {CPU_BATCH} on the CPU, python -m bench's 64 on a GPU")
    parser.add_argument("--coco", type=Path, default=COCO_MINI, help="COCO-layout folder (default: ../shared/coco-mini)")
    parser.add_argument("--output", type=Path, default=DOCUMENT,
                        help="the document whose raw results keep the rows (default: docs/BENCHMARKS.md's, bench/results.json)")
    args = parser.parse_args(argv)
    from bench.run import GPU_COCO_BATCH  # here: bench.run imports this module

    device = pick_device(args.device)
    batch = args.batch_size or (GPU_COCO_BATCH if device.type == "cuda" else CPU_BATCH)
    if not (args.coco / "annotations").is_dir():
        parser.error(f"--coco {args.coco} has no annotations/: give a COCO-layout folder")
    results = bench_checkpointing(device, batch, args.coco.resolve(), args.coco.name)
    stored = read_results(args.output)
    if device.type in stored:  # beside that device's other results (the document renders a device's results whole)
        stored[device.type]["checkpointing"] = results
        write_text_atomically(results_path(args.output), json.dumps(stored, indent=1) + "\n")
    print(checkpointing_details(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
