"""The results as docs/BENCHMARKS.md: the targets first, then each device's details.

The raw numbers are kept beside the document as JSON (bench/results.json for
docs/BENCHMARKS.md, NAME.json for any other NAME.md), so a CPU run and a GPU run written to
different files can be combined later without measuring again; the document holds only the
rendered text.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from multimodal.files import write_text_atomically

ROOT = Path(__file__).resolve().parents[1]
DOCUMENT = ROOT / "docs" / "BENCHMARKS.md"
RESULTS = ROOT / "bench" / "results.json"
DEVICES = {"cpu": "CPU", "cuda": "GPU"}
COCO_EPOCH_IMAGES = 118_287
BERT_WORDS = 30_522  # the bundled BERT's vocabulary: every word a caption decoder writes unless trained narrower
REPORTED_EPOCH_MINUTES = (30, 40)  # reported for a model of this kind on one GPU
DATA_PART = "data (main process)"
PART_ORDER = (
    DATA_PART, "BERT", "BERT (cache warm)", "BERT (cache cold)", "image encoder", "image encoder (no grad)",
    "text head + contrastive", "image decoder", "caption decoder", "diffusion UNet", "optimizer + EMA",
)


# -- storing the numbers beside the document ------------------------------------------------
def results_path(path: Path) -> Path:
    """Where the raw results of the document `path` are kept: bench/results.json for
    docs/BENCHMARKS.md, NAME.json beside any other NAME.md; a .json path is itself."""
    if path.suffix == ".json":
        return path
    return RESULTS if path.resolve() == DOCUMENT else path.with_suffix(".json")


def read_results(path: Path) -> dict[str, dict]:
    """{device: results} stored for the document `path` (or in the results file `path`); {} if none."""
    source = results_path(path)
    return json.loads(source.read_text()) if source.is_file() else {}


def write_document(path: Path, results: dict[str, dict]) -> None:
    """The raw results to results_path(path), then the rendered document to `path`."""
    if path.suffix == ".json":
        raise ValueError(f"{path} would be the results file; give the Markdown document (.md)")
    source = results_path(path)
    for folder in {source.parent, path.parent}:
        folder.mkdir(parents=True, exist_ok=True)
    write_text_atomically(source, json.dumps(results, indent=1) + "\n")
    shown = source.resolve().relative_to(ROOT) if source.resolve().is_relative_to(ROOT) else source.name
    write_text_atomically(path, render(results, f"[{shown}]({os.path.relpath(source.resolve(), path.resolve().parent)})"))


# -- numbers --------------------------------------------------------------------------------
def num(value: float) -> str:
    """Three significant digits or so, never scientific."""
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def at_least(value: float, target: float, percent: bool = False) -> str:
    if value >= target:
        return "met"
    return f"missed by {target - value:.0f} points" if percent else f"missed by {100 * (target / value - 1):.1f}%"


def at_most(value: float, target: float) -> str:
    return "met" if value <= target else f"missed by {100 * (value / target - 1):.1f}%"


def peak_for(results: dict, precision: str) -> float:
    return results["peak"]["bf16" if precision.startswith("bf16") else "fp32"]


def unet_row(results: dict, preset: str, unet: str, batch: int, kind: str, precision: str) -> dict | None:
    for row in results["unet"]:
        if (row["preset"], row["unet"].split(" ")[0], row["batch"], row["pass"], row["precision"]) == (
            preset, unet, batch, kind, precision
        ):
            return row
    return None


def percent_of_peak(results: dict, row: dict) -> float:
    return 100 * row["gflop"] / (row["ms"] / 1e3) / peak_for(results, row["precision"])


def step_percent_of_peak(results: dict, run: dict, stage: dict) -> float:
    """How much of its precision's matmul peak a whole training step reaches (FLOPs over time)."""
    return 100 * stage["step_gflop"] / (stage["step_ms"] / 1e3) / peak_for(results, run["precision"])


def training(results: dict, preset: str, precision: str | None = None) -> dict | None:
    for run in results["training"]:
        if run["preset"] == preset and (precision is None or run["precision"] == precision):
            return run
    return None


def loader_rate(results: dict, name: str, workers: int) -> float | None:
    for row in results["data"]:
        if row["set"] == name and row.get("workers") == workers:
            return row["images_per_s"]
    return None


# -- the targets ----------------------------------------------------------------------------
def demo_minutes_target(results: dict) -> int:
    """Issue #21: ≤ 4 minutes where the CPU has AMX, ≤ 6 on a common (AVX2, fp32) CPU."""
    return 4 if "amx" in results["machine"].get("cpu_features", "") or results["device"] == "cuda" else 6


def targets(results: dict) -> list[tuple[str, str, str, str]]:
    """(what, target, measured, verdict) for each target the issue set, on one device."""
    rows = []
    precision = results["training_precision"]
    batch = max(row["batch"] for row in results["unet"])
    precisions = list(dict.fromkeys([precision] + [row["precision"] for row in results["unet"]]))
    for preset in ("coco", "shapes"):
        for measured in precisions:
            ours = unet_row(results, preset, "ours", batch, "forward+backward", measured)
            share = percent_of_peak(results, ours)
            rows.append((f"{preset} UNet fwd+bwd, batch {batch}, {measured}: % of the {measured[:4]} matmul peak",
                         "≥ 50%", f"{share:.0f}%", at_least(share, 50, percent=True)))
        ours = unet_row(results, preset, "ours", batch, "forward+backward", precision)
        theirs = unet_row(results, preset, "diffusers", batch, "forward+backward", precision)
        ratio = ours["ms"] / theirs["ms"]
        rows.append((f"{preset} UNet fwd+bwd, batch {batch}, {precision}: time ours / diffusers (FLOPs ours / its)",
                     "≤ 1.0×", f"{ratio:.2f}× ({ours['gflop'] / theirs['gflop']:.2f}×)", at_most(ratio, 1.0)))
    for batch in sorted({r["batch"] for r in results["image_to_text"]}):
        for beams in (1, 3):
            cached = [r for r in results["image_to_text"] if r["beams"] == beams and r["batch"] == batch]
            if len(cached) == 2:
                on, off = sorted(cached, key=lambda r: not r["cache"])
                ratio = on["tokens_per_s"] / off["tokens_per_s"]
                name = "greedy" if beams == 1 else f"{beams} beams"
                rows.append((f"captions, {name}, batch {batch}, 32 new tokens: cached / uncached tokens/s", "≥ 3×",
                             f"{ratio:.2f}×", at_least(ratio, 3.0)))
                if "loop_tokens_per_s" in on:
                    loop, bound = on["loop_tokens_per_s"] / on["tokens_per_s"], on["matmul_tokens_per_s"] / on["tokens_per_s"]
                    rows.append((f"captions, greedy, batch {batch}, 32 new tokens: our decode loop / generate() "
                                 "tokens/s (the matmuls alone / generate())", "≥ 4×", f"{loop:.2f}× ({bound:.2f}×)",
                                 at_least(loop, 4.0)))
                if "narrow_loop_tokens_per_s" in on:
                    narrow = on["narrow_loop_tokens_per_s"] / on["tokens_per_s"]
                    rows.append((f"captions, greedy, batch {batch}, 32 new tokens, a vocabulary of the shapes set's "
                                 f"{on['narrow_words']} words: our decode loop / generate() over every word", "≥ 4×",
                                 f"{narrow:.2f}×", at_least(narrow, 4.0)))
    for batch in sorted({r["batch"] for r in results["text_to_image"]}):
        by_scale = {r["guidance"]: r for r in results["text_to_image"] if r["batch"] == batch}
        ratio = by_scale[3.0]["ms_per_image"] / by_scale[1.0]["ms_per_image"]
        rows.append((f"text→image, batch {batch}: guided / unguided sampling time", "≤ 1.3×",
                     f"{ratio:.2f}×", at_most(ratio, 1.3)))
    one = guided_picture(results)
    if "gflop_per_image" in one:
        floor = times_floor(results, one)
        rows.append((f"one picture, batch 1, {one['steps']} guided DDIM steps, {one['precision']}: time / its FLOPs at "
                     f"the {one['precision'][:4]} matmul peak", "≤ 2.0×", f"{floor:.1f}×", at_most(floor, 2.0)))
    for preset in ("shapes", "coco"):
        workers = max((row.get("workers", 0) for row in results["data"] if row["set"] == preset), default=0)
        run, rate = training(results, preset, precision), loader_rate(results, preset, workers)
        if run is None or rate is None:
            continue
        fastest = max(stage["images_per_s"] for stage in run["stages"])  # the stage that needs the most data
        rows.append((f"data: {preset} loader (the trainer's default workers) / {preset} training images/s "
                     f"at {run['image_size']} px",
                     "≥ 3×", f"{rate / fastest:.2f}× ({workers} workers)", at_least(rate / fastest, 3.0)))
    run = training(results, "shapes", precision)
    if run is not None:
        stage = run["stages"][0]
        warm = 100 * stage["parts_ms"]["BERT (cache warm)"] / stage["step_ms"]
        cold = 100 * stage["parts_ms"]["BERT (cache cold)"] / stage["step_cold_cache_ms"]
        rows.append(("frozen BERT's share of a shapes step, cache warm (cold)", "~0 (≤ 1%)",
                     f"{warm:.1f}% ({cold:.0f}%)", "met" if warm <= 1 else f"missed by {warm - 1:.1f} points"))
    for demo in results.get("demo", []):
        minutes = (demo["train_s"] + demo["evaluate_s"]) / 60
        limit = demo_minutes_target(results)
        rows.append((f"`make demo` end to end (train.py + evaluate.py), {demo['precision']}, "
                     f"{demo['targets_met']} of {demo['targets']} demo targets met",
                     f"≤ {limit} min", f"{num(minutes)} min", at_most(minutes, limit)))
    run = training(results, "coco")
    if run is not None:
        minutes = COCO_EPOCH_IMAGES / run["stages"][0]["images_per_s"] / 60
        low, high = REPORTED_EPOCH_MINUTES
        rows.append(("one COCO 2017 epoch, coco preset at 224 px", f"~{low}–{high} min",
                     f"{num(minutes)} min", at_most(minutes, high) if results["device"] == "cuda" else "(a GPU target)"))
    return rows


# -- the document ---------------------------------------------------------------------------
def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def summary(results: dict[str, dict]) -> str:
    """One table, a column pair per device; "not measured" where a device has no run."""
    per_device = {device: {what: (target, value, verdict) for what, target, value, verdict in targets(run)}
                  for device, run in results.items() if device in DEVICES}
    names = list(dict.fromkeys(what for device in DEVICES if device in per_device for what in per_device[device]))
    header = ["what", "target"]
    for device, label in DEVICES.items():
        header += [f"{label}: {results[device]['machine'].get('gpu', results[device]['machine']['cpu'])}"
                   if device in results else label, "verdict"]
    rows = []
    for what in names:
        target = next(per_device[d][what][0] for d in per_device if what in per_device[d])
        row = [what, target]
        for device in DEVICES:
            found = per_device.get(device, {}).get(what)
            row += [found[1], found[2]] if found else ["not measured", ""]
        rows.append(row)
    return table(header, rows)


def machine_table(results: dict[str, dict]) -> str:
    keys = ["date", "gpu", "cuda", "cpu", "cpu_features", "cores", "torch_threads", "torch", "cpu_capability", "python"]
    rows = []
    for key in keys:
        values = [results[d]["machine"].get(key, "") if d in results else "not measured" * (key == "date") for d in DEVICES]
        if any(values):
            rows.append([key.replace("_", " ")] + values)
    rows.append(["load average (1 min), start / end (the end counts this run's own work)"] + [
        " / ".join(f"{load:.1f}" for load in results[d]["load_average"]) if d in results else "" for d in DEVICES])
    rows.append(["timings measured again: other processes were busy (still busy after 4 tries)"] + [
        f"{results[d]['timings_redone']} ({results[d]['timings_still_busy']})" if "timings_redone" in results.get(d, {}) else ""
        for d in DEVICES])
    rows.append(["training precision"] + [results[d]["training_precision"] if d in results else "" for d in DEVICES])
    rows.append(["whole run"] + [f"{results[d]['seconds'] / 60:.1f} min" + (" (--quick)" if results[d]["quick"] else "")
                                 if d in results else "" for d in DEVICES])
    return table(["", *[f"{label} column" for label in DEVICES.values()]], rows)


def unet_details(results: dict) -> str:
    rows = []
    for ours in results["unet"]:
        if ours["unet"] != "ours":
            continue
        theirs = unet_row(results, ours["preset"], "diffusers", ours["batch"], ours["pass"], ours["precision"])
        rows.append([
            f"{ours['preset']} (w{ours['width']}×{ours['blocks']})", str(ours["batch"]), ours["pass"], ours["precision"],
            num(ours["gflop"]), num(ours["ms"]), num(ours["gflop"] / ours["ms"] * 1e3),
            f"{percent_of_peak(results, ours):.0f}%",
            num(theirs["gflop"]), num(theirs["ms"]), f"{percent_of_peak(results, theirs):.0f}%",
            f"{ours['ms'] / theirs['ms']:.2f}×",
        ])
    params = {(r["preset"], r["unet"]): r["params_m"] for r in results["unet"]}
    sizes = "; ".join(f"{preset} {unet}: {num(p)} M parameters" for (preset, unet), p in params.items())
    return table(
        ["UNet", "batch", "pass", "precision", "GFLOP", "ms", "GFLOP/s", "% peak",
         "diffusers GFLOP", "diffusers ms", "diffusers % peak", "time ours / diffusers"],
        rows,
    ) + f"\n\nSizes: {sizes}."


def guided_picture(results: dict, batch: int = 1) -> dict:
    """The guided (scale 3) text→image row at `batch`; {} if none."""
    return next((r for r in results["text_to_image"] if r["batch"] == batch and r["guidance"] == 3.0), {})


def floor_ms(results: dict, row: dict) -> float:
    """The ms a picture's FLOPs would take at the matmul peak of its precision."""
    return row["gflop_per_image"] / peak_for(results, row["precision"]) * 1e3


def times_floor(results: dict, row: dict) -> float:
    """A picture's time over the time its FLOPs would take at the matmul peak."""
    return row["ms_per_image"] / floor_ms(results, row)


def unet_share(row: dict) -> str:
    """The share of a picture's time its UNet calls take alone."""
    return f"{100 * row['unet_ms_per_image'] / row['ms_per_image']:.0f}%"


def threads_used(results: dict) -> str:
    return str(results["machine"].get("torch_threads", "all"))


def text_to_image_details(results: dict) -> str:
    rows, counted = [], all("gflop_per_image" in r for r in results["text_to_image"])
    for batch in sorted({r["batch"] for r in results["text_to_image"]}):
        by_scale = {r["guidance"]: r for r in results["text_to_image"] if r["batch"] == batch}
        guided, plain = by_scale[3.0], by_scale[1.0]
        rows.append([str(batch), str(guided["steps"]), guided["precision"], num(guided["ms_per_image"]),
                     num(plain["ms_per_image"]), f"{guided['ms_per_image'] / plain['ms_per_image']:.2f}×"]
                    + ([num(guided["gflop_per_image"]), f"{times_floor(results, guided):.1f}×",
                        unet_share(guided)] if counted else []))
    text = table(["batch", "DDIM steps", "precision", "ms/image, guidance 3", "ms/image, guidance 1", "guided / unguided"]
                 + (["GFLOP/image, guidance 3", "time / its FLOPs at the peak", "its UNet calls alone"] if counted else []),
                 rows)
    one = guided_picture(results)
    if "one_thread_ms_per_image" in one:
        text += (f"\n\nOne guided picture at batch 1: {num(one['ms_per_image'])} ms on "
                 f"{threads_used(results)} threads, {num(one['one_thread_ms_per_image'])} ms on one")
        if "compiled_ms_per_image" in one:
            text += (f"; with the UNet compiled (`torch.compile`, inductor, frozen weights) "
                     f"{num(one['compiled_ms_per_image'])} ms, after a first call of {num(one['compiled_first_call_s'])} s")
        elif "compiled_error" in one:
            text += f"; the compiled UNet did not build ({one['compiled_error']})"
        text += "."
    return text


def image_to_text_details(results: dict) -> str:
    rows = []
    keys = sorted({(r["batch"], r["beams"]) for r in results["image_to_text"]})
    for batch, beams in keys:
        on, off = (next(r for r in results["image_to_text"] if (r["batch"], r["beams"], r["cache"]) == (batch, beams, c))
                   for c in (True, False))
        rows.append([str(batch), "greedy" if beams == 1 else f"{beams} beams", on["precision"],
                     num(on["tokens_per_s"]), num(off["tokens_per_s"]), f"{on['tokens_per_s'] / off['tokens_per_s']:.2f}×",
                     num(on["loop_tokens_per_s"]) if "loop_tokens_per_s" in on else "",
                     num(on["matmul_tokens_per_s"]) if "matmul_tokens_per_s" in on else "",
                     num(on["narrow_loop_tokens_per_s"]) if "narrow_loop_tokens_per_s" in on else ""])
    narrow = next((r["narrow_words"] for r in results["image_to_text"] if "narrow_words" in r), None)
    return table(["batch", "search", "precision", "tokens/s, cache", "tokens/s, no cache", "cache speed-up",
                  "tokens/s, our decode loop", "tokens/s, its matmuls alone",
                  "tokens/s, our decode loop, the shapes set's words"], rows) + (
        f"\n\n{results['image_to_text'][0]['new_tokens']} new tokens forced (min_new_tokens = max_new_tokens), coco "
        "preset caption decoder. The first columns decode by transformers' generate() "
        "(`CaptionDecoder.generate_with_transformers`); \"our decode loop\" is `models/caption_decoding.py`, the route "
        "greedy and sampled captions take (the same tokens; beams stay on generate()); \"its matmuls alone\" runs "
        "only the decoder's matrix products for as many tokens: at batch 1 each token reads every weight once (the "
        "30,522-word output layer most), so that is the bound of any decode loop over every word on the machine's "
        "memory bandwidth. The last column is our loop with the decoder's vocabulary cut to the "
        f"{narrow} ids of the shapes set's captions, as training on them sets it (`--caption-vocabulary captions`): "
        "it computes only those rows of the output layer."
    )


def compute_ms(stage: dict) -> float:
    """The parts that make up a step with a warm cache (data loading runs beside it)."""
    return sum(ms for part, ms in stage["parts_ms"].items() if part not in (DATA_PART, "BERT (cache cold)"))


def disagreements(results: dict) -> list[str]:
    """A warning where a whole step and the sum of its parts, timed apart, disagree: the machine
    was busy during one of them. (The parts may add up to a little more than the step: each is
    synchronised on its own.)"""
    warnings = []
    for run in results["training"]:
        for stage in run["stages"]:
            ratio = stage["step_ms"] / compute_ms(stage)
            if not 0.7 < ratio < 1.3:
                warnings.append(
                    f"**{run['preset']} {run['precision']} {stage['stage']}: the whole step took {ratio:.2f}× the sum "
                    "of its parts; other work on the machine probably slowed one of them. Re-run on a quiet machine.**"
                )
    return warnings


def training_details(results: dict) -> str:
    columns = [(run, stage) for run in results["training"] for stage in run["stages"]]
    parts = [part for part in PART_ORDER if any(part in stage["parts_ms"] for _, stage in columns)]
    header = ["part (ms, share of the step)"] + [
        f"{run['preset']} {run['image_size']} px, batch {run['batch']}, {run['precision']}: {stage['stage']}"
        for run, stage in columns
    ]
    rows = []
    for part in parts:
        row = [part]
        for _, stage in columns:
            ms = stage["parts_ms"].get(part)
            if ms is None:
                row.append("")
                continue
            if part == DATA_PART:  # done by loader workers beside the step, not a share of it
                row.append(num(ms))
                continue
            step = stage["step_cold_cache_ms"] if part == "BERT (cache cold)" else stage["step_ms"]
            row.append(f"{num(ms)} ({100 * ms / step:.0f}%)")
        rows.append(row)
    rows.append(["sum of the parts (no data, warm cache)"] + [num(compute_ms(stage)) for _, stage in columns])
    rows.append(["whole step (Trainer.train_step)"] + [num(stage["step_ms"]) for _, stage in columns])
    if any("step_gflop" in stage for _, stage in columns):
        rows.append(["whole step: GFLOP, % of the matmul peak"] + [
            f"{num(stage['step_gflop'])}, {step_percent_of_peak(results, run, stage):.0f}%" if "step_gflop" in stage else ""
            for run, stage in columns])
    rows.append(["whole step, text cache cold"] + [num(stage["step_cold_cache_ms"]) if "step_cold_cache_ms" in stage else ""
                                                   for _, stage in columns])
    rows.append(["**images/s**"] + [f"**{num(stage['images_per_s'])}**" for _, stage in columns])
    if any("accumulation" in stage for _, stage in columns):
        rows.append(["--grad-accum N: step over N batches / its no-grad feature pass (share of N plain steps)"] + [
            accumulation_cell(stage) for _, stage in columns])
    rows.append(["peak RSS (MiB)"] + [num(run["peak_rss_mb"]) for run, _ in columns])
    if any("peak_gpu_mb" in run for run, _ in columns):
        rows.append(["peak GPU memory (MiB)"] + [num(run.get("peak_gpu_mb", 0)) for run, _ in columns])
    data = "; ".join(dict.fromkeys(f"{run['preset']}: {run['data']}" for run, _ in columns))
    return table(header, rows) + f"\n\nData: {data}."


def data_details(results: dict) -> str:
    rows = []
    for row in results["data"]:
        if "skipped" in row:
            rows.append([row["set"], str(row["image_size"]), "", row["skipped"], ""])
            continue
        run = training(results, row["set"], results["training_precision"])
        versus = f"{row['images_per_s'] / max(s['images_per_s'] for s in run['stages']):.1f}×" if run else ""
        rows.append([f"{row['set']} ({row['folder']})", str(row["image_size"]), str(row["workers"]), num(row["images_per_s"]), versus])
    return table(["set", "px", "workers", "images/s", f"× training ({results['training_precision']})"], rows)


def text_cache_details(results: dict) -> str:
    rows = [[f"{row['cap_mb']} MB" if row["cap_mb"] else "none", f"{row['captions']:,}", f"{row['cached']:,}",
             num(row["cache_mb"]), num(row["rss_before_mb"]), num(row["peak_rss_mb"]), num(row["seconds"])]
            for row in results.get("text_cache", [])]
    if not rows:
        return "not measured in this run (`--quick` leaves it out)"
    return table(["cap (--text-cache-mb)", "distinct captions", "cached at the end", "cache MB", "RSS before MB",
                  "peak RSS MB", "s"], rows) + (
        "\n\n`TextFeatureCache` fed every caption once, in batches of 256, each configuration in a fresh "
        "process; BERT of the bundled MiniLM's width (384), one layer, random weights; ~14-token captions.")


def demo_details(results: dict) -> str:
    if not results.get("demo"):
        return "not measured (`--quick` and `--no-demo` leave it out)"
    stages = list(dict.fromkeys(stage for demo in results["demo"] for stage in demo["stage_images_per_s"]))
    rows = [[
        demo["precision"], num(demo["train_s"]), num(demo["evaluate_s"]), num((demo["train_s"] + demo["evaluate_s"]) / 60),
        *[num(demo["stage_images_per_s"].get(stage, 0)) for stage in stages],
        f"{100 * demo['t2i_all']:.1f}%", f"{100 * demo['caption_all']:.1f}%", f"{demo['targets_met']} of {demo['targets']}",
    ] for demo in results["demo"]]
    return table(["precision", "train.py s", "evaluate.py s", "total min",
                  *[f"{stage} images/s" for stage in stages], "t2i all four", "captions all four", "targets met"],
                 rows) + ("\n\n`train.py --preset shapes --no-sample-every-epoch --precision P` then `evaluate.py`, "
                          "each a fresh process (imports included), as `make demo` runs them; images/s is the mean "
                          "of each stage's epochs as the progress bar reports it.")


def accumulation_cell(stage: dict) -> str:
    """What accumulating the contrastive features over N batches costs, beside N plain steps."""
    if "accumulation" not in stage:
        return ""
    accumulation = stage["accumulation"]
    plain = accumulation["batches"] * stage["step_ms"]
    return (f"N={accumulation['batches']}: {num(accumulation['step_ms'])} / {num(accumulation['feature_pass_ms'])} "
            f"(+{100 * accumulation['feature_pass_ms'] / plain:.0f}%)")


def faster_or_slower(speedup: float) -> str:
    """A speed-up in words: "1.30× faster", or "1.14× slower" where it is below one."""
    return f"{speedup:.2f}× faster" if speedup >= 1 else f"{1 / speedup:.2f}× slower"


def bounds(results: dict) -> list[str]:
    """What limits each hot path on this device, read from the run's own numbers."""
    lines = []
    one = guided_picture(results)
    if "gflop_per_image" in one:
        line = (f"**One picture at batch 1** ({one['steps']} guided DDIM steps, {one['precision']}): the latency of many "
                f"small operations, not arithmetic. Its {num(one['gflop_per_image'])} GFLOP would take {num(floor_ms(results, one))} ms "
                f"at the matmul peak; it takes {num(one['ms_per_image'])} ms, {unet_share(one)} "
                "of it in the UNet calls. A step at batch 2 is about a hundred operations (3×3 convolutions over 7×7, "
                "GroupNorm, SiLU, attention over 49 positions), each too small to fill the cores")
        if "one_thread_ms_per_image" in one:
            line += (f": {threads_used(results)} threads make it "
                     f"{faster_or_slower(one['one_thread_ms_per_image'] / one['ms_per_image'])} than one")
        if "compiled_ms_per_image" in one:
            speedup = one["ms_per_image"] / one["compiled_ms_per_image"]
            line += (f". Compiling the UNet (inductor fuses the elementwise work and prepacks the convolution weights) "
                     f"makes the picture {faster_or_slower(speedup)} after a first call of "
                     f"{num(one['compiled_first_call_s'])} s (and another for each new batch size)"
                     + (", which a picture or a page session rarely earns back" if speedup > 1 else "")
                     + ", so generation stays eager")
        lines.append(line + ".")
        batched = guided_picture(results, max(r["batch"] for r in results["text_to_image"]))
        if batched is not one and "gflop_per_image" in batched:
            lines.append(f"**Pictures in a batch** ({batched['batch']}): {num(batched['ms_per_image'])} ms each, "
                         f"{times_floor(results, batched):.1f}× their FLOPs' floor: batching is what approaches the "
                         "limit (best of N candidates, `--num-samples` and evaluate.py draw in batches), and the ONNX "
                         "runner (below) is the faster route for one picture.")
    greedy = next((r for r in results["image_to_text"] if r["batch"] == 1 and r["beams"] == 1 and r["cache"]), {})
    if "loop_tokens_per_s" in greedy:
        lines.append(f"**Captions at batch 1**: memory bandwidth. Each new token reads every weight of the decoder once "
                     f"(the 30,522-word output layer most); its matrix products alone reach {num(greedy['matmul_tokens_per_s'])} "
                     f"tokens/s, our decode loop {num(greedy['loop_tokens_per_s'])} "
                     f"({100 * greedy['loop_tokens_per_s'] / greedy['matmul_tokens_per_s']:.0f}% of that bound), generate() "
                     f"{num(greedy['tokens_per_s'])}"
                     + (f"; with the vocabulary a decoder trained on the shapes set writes ({greedy['narrow_words']} "
                        f"words), our loop reads only their rows of that layer and reaches "
                        f"{num(greedy['narrow_loop_tokens_per_s'])}" if "narrow_loop_tokens_per_s" in greedy else "")
                     + ".")
    batch = max(row["batch"] for row in results["unet"])
    fp32 = unet_row(results, "shapes", "ours", batch, "forward+backward", "fp32")
    bf16 = unet_row(results, "shapes", "ours", batch, "forward+backward", "bf16 autocast")
    coco = unet_row(results, "coco", "ours", batch, "forward+backward", "bf16 autocast")
    if results["device"] == "cpu" and None not in (fp32, bf16, coco) and "bf16" in results["peak"]:
        lines.append(f"**UNet training in bf16** (shapes, batch {batch}): the size of its products. bf16 runs it at "
                     f"{fp32['ms'] / bf16['ms']:.2f}× fp32's speed where the bf16 matmul peak is "
                     f"{results['peak']['bf16'] / results['peak']['fp32']:.1f}× the fp32 one: {percent_of_peak(results, bf16):.0f}% "
                     f"of the bf16 peak against {percent_of_peak(results, fp32):.0f}% of the fp32 one. Width 64 over 49 "
                     "positions makes products too small for the bf16 units, and autocast converts weights and "
                     "activations between fp32 and bf16 every step; the coco preset's width 256 reaches "
                     f"{percent_of_peak(results, coco):.0f}%.")
    shapes = training(results, "shapes", results["training_precision"])
    if shapes is not None:
        parts, step = shapes["stages"][0]["parts_ms"], shapes["stages"][0]["step_ms"]
        lines.append(f"**The demo's training** (shapes, {shapes['precision']}): its encoders stage, where the caption "
                     f"decoder takes {100 * parts['caption decoder'] / step:.0f}% of a step (teacher-forced over "
                     f"{vocabulary(shapes)}) and the image decoder {100 * parts['image decoder'] / step:.0f}%; the "
                     f"diffusion stage runs {num(shapes['stages'][1]['images_per_s'])} images/s against "
                     f"{num(shapes['stages'][0]['images_per_s'])}."
                     + (" Whole steps reach " + " and ".join(
                         f"{step_percent_of_peak(results, shapes, stage):.0f}% of the matmul peak ({stage['stage']}, "
                         f"{num(stage['step_gflop'])} GFLOP)" for stage in shapes["stages"])
                        + " (docs/PERFORMANCE.md: where the rest of a step goes)."
                        if all("step_gflop" in stage for stage in shapes["stages"]) else ""))
    return lines


def vocabulary(run: dict) -> str:
    """The caption decoder's vocabulary in a training run, in words (runs before it was recorded wrote every word)."""
    words = run.get("caption_words", BERT_WORDS)
    return f"BERT's {BERT_WORDS:,}-word vocabulary" if words == BERT_WORDS else f"the {words} words of its captions"


def peak_sides(device: str, results: dict) -> str:
    """The square products the peak was the best of (earlier runs timed one size, or matmuls alone)."""
    sides = results.get("peak_sizes", [8192 if device == "cuda" else 4096])
    shown = f"square {sides[0]}²" if len(sides) == 1 else "the best of square " + ", ".join(f"{n}²" for n in sides)
    kernels = results.get("peak_kernels", ["matmul"])
    return shown + (f" as {' and '.join(kernels)}" if len(kernels) > 1 else "")


def device_section(device: str, results: dict) -> str:
    peak = results["peak"]
    coco = training(results, "coco")
    epoch = ""
    if coco is not None:
        minutes = COCO_EPOCH_IMAGES / coco["stages"][0]["images_per_s"] / 60
        epoch = (f"\n\nOne COCO 2017 epoch ({COCO_EPOCH_IMAGES:,} images) at the coco preset's measured "
                 f"{num(coco['stages'][0]['images_per_s'])} images/s: **{num(minutes)} min** ({num(minutes / 60)} h); "
                 f"reported for a model of this kind on one GPU: ~{REPORTED_EPOCH_MINUTES[0]}–{REPORTED_EPOCH_MINUTES[1]} min.")
    notes = "".join(f"\n- {note}" for note in results["notes"] + disagreements(results))
    limits = bounds(results)
    return "\n\n".join([
        f"## {DEVICES[device]} details",
        f"Matmul peak ({peak_sides(device, results)}, median): "
        + ", ".join(f"**{name} {num(value)} GFLOP/s**" for name, value in peak.items()) + ".",
        *(["### What each path is bound by\n\n" + "\n".join(f"- {line}" for line in limits)] if limits else []),
        "### UNet at the 256×7×7 latent (16 context tokens)\n\n" + unet_details(results),
        "### Text → image (shapes preset, random weights)\n\n" + text_to_image_details(results),
        "### Image → text\n\n" + image_to_text_details(results),
        "### Training\n\n" + training_details(results) + epoch,
        "### Data loading\n\n" + data_details(results),
        "### Frozen-BERT text cache\n\n" + text_cache_details(results),
        "### `make demo`\n\n" + demo_details(results),
        *(["### Gradient checkpointing\n\n" + checkpointing_section(results["checkpointing"])]
          if "checkpointing" in results else []),
    ]) + (f"\n\nNotes:{notes}" if notes else "")


def checkpointing_section(results: dict) -> str:
    from bench.checkpointing import checkpointing_details  # it imports this module

    return checkpointing_details(results)


METHOD = """\
## How it was measured

- One command, `python -m bench` (`--quick`: a one-minute smoke run; `--device cuda`: the GPU
  column; `--output PATH`: where the document goes; `--merge FILE`: add another run's column
  without measuring). Every ratio in the summary comes from one run on one machine, so drift of
  a shared machine between runs does not enter it.
- Each timing: one warm-up call, then the median of at least 5 calls (more while they take
  under ~1.5 s together); on a GPU with `torch.cuda.synchronize` around each call.
- The limit is the fastest of a few large square products in the same run (on a CPU both as
  a matmul, through MKL, and as a 1×1 convolution, through oneDNN): fp32, and bf16 (what autocast uses)
  where the device computes bf16 natively; on a CPU without bf16 units only fp32 is measured.
- diffusers' `UNet2DConditionModel` for comparison: one `CrossAttnDownBlock2D` and one
  `CrossAttnUpBlock2D` at our width (no resampling: 7×7 does not halve), cross-attention to
  the 384-wide BERT states with 4 heads, the pooled text embedding as its "projection" class
  embedding (added to the time embedding, as our FiLM condition is); of 1 or 2 layers per
  block, with or without the mid block, the one with FLOPs nearest ours (its name and size are
  under each UNet table). Same inputs, same precision, same timer.
- FLOPs are counted by `torch.utils.flop_counter.FlopCounterMode` (convolutions, matmuls,
  attention) on one sample, times the batch; GroupNorm, SiLU and other elementwise work are
  not FLOPs there but do take time.
- Training precision follows the trainer (`autocast_dtype("auto")`): bf16 autocast on CUDA and
  on CPUs with native bf16 (AMX / AVX512-BF16), fp32 elsewhere. Generation: fp32 on the CPU,
  as the CLIs run it; bf16 autocast on a GPU (the CLIs run fp32 there too).
- The machine may be shared. Two busy threads on two cores make OpenMP stall when anything
  else runs, inflating times up to tenfold. So each timing reads /proc/stat around its series
  of calls, and a series during which other processes used more than a quarter of a core is
  measured again (after a second's pause, up to 4 tries); the table above counts them. The
  load average at the start and the end of the run is there too.
- Training: `Trainer.train_step` on one fixed batch (data loading is measured on its own);
  the shapes preset trains in two stages (encoders, then the UNet alone), each measured. The
  parts are timed separately, forward+backward each, their inputs detached at the borders that
  `GenerativeMultimodalModel.forward` has; "data (main process)" is what a loader worker must
  hide per batch. Each configuration runs in a fresh process; its peak RSS is VmHWM from
  /proc/self/status (`resource.getrusage`'s ru_maxrss would carry over the peak of the
  process it was forked from).
- Data: the trainer's DataLoader (CaptionCollator tokenises), batch 16, images/s after the
  first batch, median of 3 passes after a warm-up pass.
- Models have random weights (the bundled BERT's are loaded): speed does not depend on them.
"""


def onnx_section(onnx: dict) -> str:
    """ONNX Runtime against PyTorch on the CPU, from `python -m bench.export`."""
    rows = [[row["what"], num(row["pytorch"]), num(row["onnxruntime"]), f"{row['pytorch'] / row['onnxruntime']:.2f}×",
             onnx_verdict(row)] for row in onnx["rows"]]
    machine = onnx["machine"]
    same = all(row.get("same_output", True) for row in onnx["rows"])
    return "\n\n".join([
        "## ONNX Runtime against PyTorch (CPU)",
        table(["", "PyTorch, fp32", "ONNX Runtime, fp32", "PyTorch / ONNX Runtime",
               f"ONNX Runtime / PyTorch, median of pairs (spread): {onnx.get('target', 'no target')}"], rows),
        f"Measured {machine['date']} by `python -m bench.export` on the checkpoint `{onnx['checkpoint']}`: "
        f"{machine['cpu']} ({machine['cores']} cores; {machine['cpu_features']}), torch {machine['torch']} with "
        f"{machine['torch_threads']} thread{'' if str(machine['torch_threads']) == '1' else 's'} (OpenMP threads sleeping while they wait, as the CLIs set them), onnxruntime {onnx['onnxruntime']} (CPU provider, default threads, not spinning: the runner's setting). "
        f"Load average {' / '.join(f'{v:.1f}' for v in onnx['load_average'])} at the start / end; timings measured "
        f"again because other processes were busy: {onnx['timings_redone']} ({onnx['timings_still_busy']} still busy). "
        + (f"Text → image is timed quiet and then beside one busy process ({onnx['busy_process']}; load average "
           f"{onnx['load_average_busy_started']:.1f} once it ran), each as {len(onnx['rows'][0]['pairs_ms_per_call'])} "
           "pairs of PyTorch then ONNX Runtime series, so that both sides of a pair see the same load. "
           if "busy_process" in onnx else "")
        + f"The export itself took {num(onnx['export_s'])} s. Both sides draw for the same prompt (batch 1; the runner, "
        "`python -m multimodal.onnx_run`, draws its noise with numpy: another picture, the same work) and caption "
        "the same picture; the runner decodes over the whole caption at each step (no key/value cache), PyTorch "
        f"through its own decode loop with a key/value cache. {'Both wrote the same caption.' if same else 'The captions differed.'} "
        "Timings as in the section above: a warm-up, then the median of at least 5 calls.",
    ])  # fmt: skip


def onnx_verdict(row: dict) -> str:
    if "verdict" not in row:
        return ""
    low, high = row["onnx_over_pytorch_spread"]
    return f"{row['onnx_over_pytorch']:.2f}× ({low:.2f}–{high:.2f}): {row['verdict']}"


def render(results: dict[str, dict], raw: str) -> str:
    """The document; `raw` is where its raw results are, as Markdown."""
    parts = [
        "# Benchmarks",
        "Speed of the model's hot paths against this machine's own limit and against diffusers, "
        "and the targets they are held to. Written by `python -m bench`; do not edit by hand.",
        f"The raw results are in {raw}; `python -m bench` measures again and rewrites both, "
        "`python -m bench --merge FILE` adds another run's columns without measuring.",
        "## Summary\n\n" + summary(results),
        "## Machines\n\n" + machine_table(results),
        METHOD.rstrip(),
    ]
    for device in DEVICES:
        parts.append(device_section(device, results[device]) if device in results
                     else f"## {DEVICES[device]} details\n\nnot measured (`python -m bench --device {device}`)")
    if "onnx" in results:
        parts.append(onnx_section(results["onnx"]))
    return "\n\n".join(parts) + "\n"
