"""Export a checkpoint to ONNX, for running without PyTorch.

    python -m multimodal.export CHECKPOINT OUT_DIR [--overwrite] [--precision fp32|fp16]

writes into OUT_DIR one ONNX graph per part that runs at generation time, and `export.json`
with what a runner needs besides (the sampler's noise schedule, the latent statistics, the
tokenizer settings and the defaults); the tokenizer files are copied beside them.

    text_encoder.onnx   input_ids, attention_mask → token_states, text_embedding
    unet_step.onnx      latents, timestep, text_embedding, token_states, attention_mask,
                        the same three of what guidance steers away from (away_*: a negative
                        prompt's condition), away_is_null (per row: the null condition instead),
                        guidance_scale → the guided prediction (conditional and away run as
                        one batch inside the graph)
    image_decoder.onnx  latents (de-normalised) → images in [-1, 1]
    image_encoder.onnx  images in [-1, 1] → latents, image_embedding
    caption_step.onnx   latents, input_ids (the caption so far) → logits of the next token

The caption step takes the whole caption so far rather than key/value inputs: a caption is at
most `max_caption_length` tokens, so recomputing it costs little (docs/BENCHMARKS.md measures
the runner's captions); a step with cache inputs is not exported yet. Graphs are written by `torch.onnx` (its TorchScript
exporter: the dynamo exporter writes opset 18 and cannot convert these graphs down to 17)
and checked with ONNX Runtime on random and on real inputs before anything is kept: every
output must equal PyTorch's within 1e-3. `multimodal.onnx_run` is the runner.

    __init__.py   the export: graphs written, checked with ONNX Runtime, export.json
    graphs.py     the parts of the model as modules for torch.onnx, with inputs to check them on
    __main__.py   the command line, python -m multimodal.export
"""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path
from typing import Any

from multimodal.config import DEFAULT_MAX_NEW_TOKENS, SamplingConfig
from multimodal.errors import InvalidInputError
from multimodal.files import folder_written_in_place
from multimodal.paths import EXPORT_NAME

OPSET = 17
# export.json's "format": 1 (no field) had the null condition built into unet_step; 2 takes the
# condition guidance steers away from as inputs (negative prompts). The runner reads both.
FORMAT = 2
TOLERANCE = 1e-3  # largest difference from PyTorch an exported output may have (fp32)
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")


def largest_difference(session: Any, graph: Any, inputs: dict[str, Any]) -> float:
    """The largest absolute difference between ONNX Runtime's outputs and PyTorch's."""
    import numpy as np
    import torch

    with torch.no_grad():
        expected = graph.module(**inputs)
    expected = expected if isinstance(expected, tuple) else (expected,)
    got = session.run(list(graph.outputs), {name: value.numpy() for name, value in inputs.items()})
    worst = 0.0
    for g, e in zip(got, expected):
        g, e = g.astype(np.float64), e.double().numpy()
        differ = g != e  # equal values differ by 0, the -inf of words a caption decoder does not write included
        worst = max(worst, float(np.abs(g[differ] - e[differ]).max(initial=0.0)))
    return worst


def export_graph(graph: Any, path: Path) -> None:
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's notes on Python values it keeps as constants
        torch.onnx.export(
            graph.module, tuple(graph.inputs.values()), str(path), input_names=list(graph.inputs),
            output_names=list(graph.outputs), dynamic_axes=graph.dynamic_axes, opset_version=OPSET, dynamo=False,
        )  # fmt: skip


def open_session(path: Path, precision: str) -> Any:
    """An ONNX Runtime session on the CPU; a graph it cannot run is a clear error."""
    import onnxruntime

    try:
        return onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as error:  # onnxruntime raises its own exception types
        reason = str(error).strip().splitlines()[0].split(" failed:")[-1]  # without ORT's "[...] Load model from ..."
        raise InvalidInputError(
            f"--precision {precision}: ONNX Runtime cannot run the exported {path.stem} on the CPU ({reason}); "
            "export in fp32"
        ) from None


def describe(model: Any, precision: str, checkpoint: Path, differences: dict[str, dict[str, float]]) -> dict:
    """export.json: what a runner needs besides the graphs."""
    from multimodal.models.diffusion import make_scheduler

    config = model.config
    scheduler = make_scheduler("ddim", config)
    sampling = SamplingConfig()
    decoder = model.caption_decoder
    return {
        "format": FORMAT,
        "checkpoint": str(checkpoint.resolve()),
        "precision": precision,
        "opset": OPSET,
        "graphs": {name: f"{name}.onnx" for name in differences},
        "largest_difference_from_pytorch": differences,
        "image_size": config.image_size,
        "latent_shape": [config.latent_channels, config.latent_size, config.latent_size],
        # The UNet works on latents normalised per channel; the decoder takes them de-normalised.
        "latent_mean": model.diffusion.latent_mean.tolist(),
        "latent_std": model.diffusion.latent_std.tolist(),
        "sampler": {
            "name": "ddim",
            "num_train_timesteps": config.num_timesteps,
            "beta_schedule": scheduler.config.beta_schedule,
            "betas": scheduler.betas.tolist(),
            "alphas_cumprod": scheduler.alphas_cumprod.tolist(),
            "final_alphas_cumprod": float(scheduler.final_alpha_cumprod),
            "timestep_spacing": scheduler.config.timestep_spacing,
            "prediction_type": config.prediction_type,
            "num_inference_steps": sampling.num_inference_steps,
            "guidance_scale": sampling.guidance_scale,
        },
        "text": {"tokenizer": "tokenizer.json", "max_length": config.max_text_length,
                 "pad_id": model.tokenizer.pad_token_id},
        "caption": {"bos_id": decoder.bos_id, "eos_id": decoder.eos_id, "pad_id": decoder.pad_id,
                    "max_length": decoder.max_length, "max_new_tokens": DEFAULT_MAX_NEW_TOKENS},
    }  # fmt: skip


def export(checkpoint: Path, out_dir: Path, precision: str = "fp32") -> dict:
    """Write the export of `checkpoint` into `out_dir` (replacing what is there) and return
    export.json's content. Nothing is kept unless every graph matches PyTorch."""
    import torch

    from multimodal.models import GenerativeMultimodalModel
    from multimodal.export.graphs import graphs, real_inputs

    dtype = {"fp32": torch.float32, "fp16": torch.float16}[precision]
    model = GenerativeMultimodalModel.from_pretrained(checkpoint).to(dtype).eval()
    tolerance = TOLERANCE if precision == "fp32" else 1e-2
    examples, real = graphs(model, dtype), real_inputs(model, dtype)
    differences: dict[str, dict[str, float]] = {}
    with folder_written_in_place(out_dir) as folder:
        for name, graph in examples.items():
            path = folder / f"{name}.onnx"
            export_graph(graph, path)
            session = open_session(path, precision)
            differences[name] = {
                "random": largest_difference(session, graph, graph.inputs),
                "real": largest_difference(session, graph, real[name]),
            }
            worst = max(differences[name].values())
            if not worst <= tolerance:
                raise InvalidInputError(
                    f"the exported {name} differs from PyTorch by {worst:.2g} (more than {tolerance:g}); nothing written"
                )
        for file in TOKENIZER_FILES:
            if (checkpoint / file).is_file():
                shutil.copy2(checkpoint / file, folder / file)
        description = describe(model, precision, checkpoint, differences)
        (folder / EXPORT_NAME).write_text(json.dumps(description, indent=1) + "\n")
    return description
