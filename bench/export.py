"""`python -m bench.export`: the ONNX export run by ONNX Runtime against PyTorch, on the CPU.

    python -m bench.export                          # the checkpoint the CLIs find (make demo's)
    python -m bench.export --checkpoint DIR --output docs/BENCHMARKS.md

Exports a trained checkpoint, then times text → image (DDIM, 50 steps, guidance 3) and a
greedy caption both ways, each from the same inputs; the results join docs/BENCHMARKS.md
as a section of their own (the other columns are kept as they are). Text → image is timed
twice: as the machine is, and with one busy process beside it (a `while True: pass` this
benchmark starts and kills), each as PAIRS series of PyTorch then ONNX Runtime in turn, so
both sides of a pair see the same load; the target (issue 39) is ONNX Runtime / PyTorch
≤ 1.0× in both, judged on the median of the pairs' ratios.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

from multimodal import cli

cli.set_thread_policy(None)  # before torch loads: the CLIs' threads (one per two cores, sleeping while they wait)

import onnxruntime  # noqa: E402
import torch  # noqa: E402

from bench.report import at_most, read_results, write_document  # noqa: E402
from bench.timing import Timer, describe_machine  # noqa: E402
from multimodal import GenerativeMultimodalModel, SamplingConfig  # noqa: E402
from multimodal.data.transforms import image_transform, to_pil  # noqa: E402
from multimodal.export import export  # noqa: E402
from multimodal.onnx_run import OnnxGenerator  # noqa: E402
from multimodal.paths import resolve_checkpoint  # noqa: E402

PROMPT = "a large red circle on the left"
BATCHES = (1,)
PAIRS = 3  # series of PyTorch then ONNX Runtime per condition
TARGET = 1.0  # ONNX Runtime's time / PyTorch's, at most, in each condition
BUSY = "while True: pass"


@contextmanager
def busy_process() -> Iterator[int]:
    """Another process keeping one core busy while the block runs (its pid); killed after."""
    process = subprocess.Popen([sys.executable, "-c", BUSY])
    try:
        time.sleep(0.5)  # started and spinning before the first timing
        yield process.pid
    finally:
        process.kill()
        process.wait()


def paired(timer: Timer, pytorch: Callable[[], Any], runtime: Callable[[], Any]) -> dict:
    """Both sides timed PAIRS times in turn: the medians, and ONNX Runtime / PyTorch per pair
    (median, smallest, largest) with the verdict on the median."""
    times = [(timer(pytorch), timer(runtime)) for _ in range(PAIRS)]
    ratios = sorted(runtime_s / pytorch_s for pytorch_s, runtime_s in times)
    ratio = statistics.median(ratios)
    return {"pytorch": statistics.median(p for p, _ in times) * 1e3, "onnxruntime": statistics.median(r for _, r in times) * 1e3,
            "pairs_ms_per_call": [[p * 1e3, r * 1e3] for p, r in times], "onnx_over_pytorch": ratio,
            "onnx_over_pytorch_spread": [ratios[0], ratios[-1]], "verdict": at_most(ratio, TARGET)}  # fmt: skip


def measure(checkpoint: Path) -> dict:
    timer = Timer(torch.device("cpu"), min_repeats=5, attempts=2)  # a shared machine seldom goes quiet for long
    load = [os.getloadavg()[0]]
    model = GenerativeMultimodalModel.from_pretrained(checkpoint)
    sampling = SamplingConfig()
    with tempfile.TemporaryDirectory() as scratch:
        start = time.perf_counter()
        export(checkpoint, Path(scratch) / "onnx")
        export_s = time.perf_counter() - start
        onnx = OnnxGenerator(Path(scratch) / "onnx")
        # The busy process uses a core of its own: only the others' use beyond it means "measure again".
        busy_timer = Timer(torch.device("cpu"), min_repeats=5, attempts=2, others_limit=1 + timer.others_limit)
        rows = []
        for batch in BATCHES:
            prompts = [PROMPT] * batch

            def pytorch() -> Any:
                return model.generate_image_from_text(prompts, sampling, torch.Generator().manual_seed(0))

            def runtime() -> Any:
                return onnx.draw(prompts, sampling, seed=0)

            what = (f"text → image, batch {batch}, DDIM {sampling.num_inference_steps} steps, guidance "
                    f"{sampling.guidance_scale:g}")
            rows.append({"what": f"{what}, quiet: ms per image", "condition": "quiet", **paired(timer, pytorch, runtime)})
            with busy_process():
                busy_load = os.getloadavg()[0]
                rows.append({"what": f"{what}, one busy process beside: ms per image", "condition": "busy",
                             **paired(busy_timer, pytorch, runtime)})
            for row in rows[-2:]:
                row["pytorch"], row["onnxruntime"] = row["pytorch"] / batch, row["onnxruntime"] / batch
        picture = to_pil(model.generate_image_from_text([PROMPT], sampling, torch.Generator().manual_seed(0))[0])
        pixels = image_transform(model.config.image_size)(picture)[None]
        caption = model.generate_text_from_image(pixels)[0]
        rows.append({"what": f"greedy caption of one picture ({len(model.tokenizer.tokenize(caption)) + 1} tokens "
                             "with [SEP]): ms per caption",
                     "pytorch": timer(lambda: model.generate_text_from_image(pixels)) * 1e3,
                     "onnxruntime": timer(lambda: onnx.caption([picture])) * 1e3,
                     "same_output": onnx.caption([picture]) == [caption]})
    load.append(os.getloadavg()[0])
    return {"machine": describe_machine(torch.device("cpu")), "checkpoint": str(checkpoint), "export_s": export_s,
            "onnxruntime": onnxruntime.__version__, "busy_process": f"{sys.executable} -c {BUSY!r}",
            "target": f"ONNX Runtime / PyTorch ≤ {TARGET:g}×, quiet and with one busy process beside",
            "rows": rows, "load_average": load, "load_average_busy_started": busy_load,
            "timings_redone": timer.redone + busy_timer.redone,
            "timings_still_busy": timer.still_busy + busy_timer.still_busy}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.export", description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", help="a trained checkpoint (default: the one the CLIs find)")
    parser.add_argument("--output", type=Path, default=Path("docs/BENCHMARKS.md"), help="the markdown document")
    args = parser.parse_args(argv)
    results = read_results(args.output)
    results["onnx"] = measure(resolve_checkpoint(args.checkpoint))
    for row in results["onnx"]["rows"]:
        line = f"{row['what']}: PyTorch {row['pytorch']:.1f}, ONNX Runtime {row['onnxruntime']:.1f}"
        if "verdict" in row:
            low, high = row["onnx_over_pytorch_spread"]
            line += (f"; ONNX Runtime / PyTorch {row['onnx_over_pytorch']:.2f}× (pairs {low:.2f}–{high:.2f}), "
                     f"target ≤ {TARGET:g}×: {row['verdict']}")
        print(line, flush=True)
    write_document(args.output, results)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
