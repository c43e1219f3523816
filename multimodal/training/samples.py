"""The sample sheet of a run: images generated from captions, and captions generated for images
(after every epoch of training, and by evaluate.py at the end). `multimodal.plots` lays it out."""

from __future__ import annotations

from pathlib import Path

import torch

from multimodal.config import SamplingConfig
from multimodal.data.transforms import to_pil
from multimodal.models import GenerativeMultimodalModel
from multimodal.plots import sample_sheet

# Sample sheets during training: a quick look, 20 DDIM steps.
PREVIEW = SamplingConfig(num_inference_steps=20)


@torch.no_grad()
def write_sample_sheet(
    model: GenerativeMultimodalModel,
    prompts: list[str],
    images: torch.Tensor,
    path: Path,
    sampling: SamplingConfig = PREVIEW,
    seed: int = 0,
) -> list[str]:
    """Top row: images generated for `prompts` (noise from `seed`). Bottom row: `images` with
    their generated captions. Returns those captions. An unconditional model draws from no
    prompt, and its caption decoder never learned: its rows say so, untitled."""
    model.eval()
    generator = torch.Generator().manual_seed(seed)
    drawn_for, rows = prompts, ("text → image", "image → text")
    if model.config.unconditional:
        generated = model.generate_unconditional(len(prompts), sampling, generator)
        captions, drawn_for, rows = [""] * len(images), [""] * len(prompts), ("no prompt", "validation images")
    else:
        generated = model.generate_image_from_text(prompts, sampling, generator)
        captions = model.generate_text_from_image(images)
    drawn = [to_pil(picture.cpu()) for picture in generated]
    shown = [to_pil(picture.cpu()) for picture in images]
    sample_sheet(drawn, drawn_for, shown, captions, path, rows)
    return captions
