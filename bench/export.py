"""`python -m bench.export`: the ONNX export run by ONNX Runtime against PyTorch, on the CPU.

    python -m bench.export                          # the checkpoint the CLIs find (make demo's)
    python -m bench.export --checkpoint DIR --output docs/BENCHMARKS.md

Exports a trained checkpoint, then times text → image (DDIM, 50 steps, guidance 3) and a
greedy caption both ways, each from the same inputs; the results join docs/BENCHMARKS.md
as a section of their own (the other columns are kept as they are).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from multimodal import cli

cli.set_thread_policy(None)  # before torch loads: OpenMP threads that sleep while waiting, as the CLIs run them

import onnxruntime  # noqa: E402
import torch  # noqa: E402

from bench.report import read_results, write_document  # noqa: E402
from bench.timing import Timer, describe_machine  # noqa: E402
from multimodal import GenerativeMultimodalModel, SamplingConfig  # noqa: E402
from multimodal.data.transforms import image_transform, to_pil  # noqa: E402
from multimodal.export import export  # noqa: E402
from multimodal.onnx_run import OnnxGenerator  # noqa: E402
from multimodal.paths import resolve_checkpoint  # noqa: E402

PROMPT = "a large red circle on the left"
BATCHES = (1,)


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
        rows = []
        for batch in BATCHES:
            prompts = [PROMPT] * batch
            pytorch = timer(lambda: model.generate_image_from_text(prompts, sampling, torch.Generator().manual_seed(0)))
            runtime = timer(lambda: onnx.draw(prompts, sampling, seed=0))
            rows.append({"what": f"text → image, batch {batch}, DDIM {sampling.num_inference_steps} steps, guidance "
                                 f"{sampling.guidance_scale:g}: ms per image",
                         "pytorch": pytorch * 1e3 / batch, "onnxruntime": runtime * 1e3 / batch})
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
            "onnxruntime": onnxruntime.__version__,
            "rows": rows, "load_average": load, "timings_redone": timer.redone, "timings_still_busy": timer.still_busy}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.export", description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", help="a trained checkpoint (default: the one the CLIs find)")
    parser.add_argument("--output", type=Path, default=Path("docs/BENCHMARKS.md"), help="the markdown document")
    args = parser.parse_args(argv)
    results = read_results(args.output)
    results["onnx"] = measure(resolve_checkpoint(args.checkpoint))
    for row in results["onnx"]["rows"]:
        print(f"{row['what']}: PyTorch {row['pytorch']:.1f}, ONNX Runtime {row['onnxruntime']:.1f}", flush=True)
    write_document(args.output, results)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
