"""How generation draws and computes: text→image sampling, and the precision of every call."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from multimodal import presets
from multimodal.config.options import Config, option, require

SAMPLERS = ("ddim", "ddpm", "dpm")
SAMPLERS_WITH_ETA = ("ddim",)  # the samplers whose step takes DDIM's eta
PRECISIONS = ("auto", "fp32", "bf16", "fp16")  # what generation and evaluation may compute in
# Bounds of what a person may ask: beyond them a picture only saturates (guidance) or the work
# outgrows any machine before it starts (candidates are drawn IMAGE_BATCH images at a time, each
# with all its candidates).
MAX_GUIDANCE_SCALE = 100.0
MAX_CANDIDATES = 64
MAX_CAPTION_GUIDANCE = 1000.0
DEFAULT_MAX_NEW_TOKENS = 30  # the longest caption generation writes by default, in tokens
# Images drawn per sampling call (each with its best-of-N candidates), so that memory holds one
# batch however many are asked. A multiple of 16: torch's CPU generator draws normal noise in
# blocks of 16 numbers, so batches in turn draw exactly the starting noise one batch of all would.
IMAGE_BATCH = 16
# The fields that steer a picture toward its prompt: without a prompt (unconditional generation)
# they have nothing to steer toward.
PROMPT_FIELDS = ("guidance_scale", "guidance_rescale", "num_candidates", "caption_guidance", "caption_guidance_steps")
# Image-to-image (SDEdit): how much of the denoising schedule redraws the input picture. An
# argument beside the SamplingConfig, not a field of it, as diffusers' img2img pipeline takes it:
# it means nothing without an input picture, and a SamplingConfig is how every drawing samples.
DEFAULT_STRENGTH = 0.6


@dataclass
class SamplingConfig(Config):
    """How text→image diffusion draws a picture, as one value (what transformers'
    GenerationConfig is for captions). The command lines, `ImageTextGenerator` and the model
    pass it along whole; the fast preview, which does not sample, is the caller's choice
    (`use_diffusion=False`), not a way of sampling."""

    num_inference_steps: int = option(
        50, "denoising steps: 10-20 for a preview, 30-50 usually, up to 100 for the best", flag="--steps"
    )
    guidance_scale: float = option(
        3.0, "how closely to follow the prompt: 1 the conditional prediction alone, 0 ignores the prompt"
    )
    sampler: str = option("ddim", "the diffusion sampler (diffusers' scheduler)", choices=SAMPLERS)
    eta: float = option(0.0, "DDIM's noise: 0 deterministic, 1 like DDPM (ddim only)")
    guidance_rescale: float = option(
        0.0, "in [0, 1]: pull a guided prediction's spread back to the conditional one's (tames high guidance)"
    )
    num_candidates: int = option(
        1, "draw N pictures per image asked and keep the one the caption decoder finds likeliest to be "
        "described by the prompt (best of N, as DALL·E reranked its samples): N times the work, for many more "
        "pictures right where the model binds words to objects unreliably; the fast preview draws one. The "
        "default depends on the preset the checkpoint was trained with",
        flag="--candidates",
    )
    caption_guidance: float = option(
        0.0, "caption guidance: at each step, move the picture being drawn along the gradient of how likely the "
        "caption decoder finds the prompt for what the UNet predicts (the model's own decoder as classifier "
        "guidance's classifier); each guided step adds a backward pass through the UNet and the caption decoder; 0: off",
    )
    caption_guidance_steps: int | None = option(
        None, "guide only the first N denoising steps, where the layout is decided (default: every step)",
    )

    def validate(self) -> None:
        require(self.num_inference_steps >= 1, "num_inference_steps", f"must be at least 1, got {self.num_inference_steps}")
        require(0 <= self.guidance_scale <= MAX_GUIDANCE_SCALE, "guidance_scale",
                f"must be from 0 to {MAX_GUIDANCE_SCALE:g}, got {self.guidance_scale:g}")
        require(self.eta >= 0, "eta", f"must be 0 or more, got {self.eta}")
        require(
            self.eta == 0 or self.sampler in SAMPLERS_WITH_ETA,
            "eta",
            f"is DDIM's noise; the {self.sampler} sampler does not use it (use --sampler ddim or leave eta at 0)",
        )
        require(
            0 <= self.guidance_rescale <= 1, "guidance_rescale", f"must be in [0, 1], got {self.guidance_rescale}"
        )
        require(1 <= self.num_candidates <= MAX_CANDIDATES, "num_candidates",
                f"must be from 1 to {MAX_CANDIDATES}, got {self.num_candidates}")
        require(0 <= self.caption_guidance <= MAX_CAPTION_GUIDANCE, "caption_guidance",
                f"must be from 0 to {MAX_CAPTION_GUIDANCE:g}, got {self.caption_guidance:g}")
        require(self.caption_guidance_steps is None or self.caption_guidance_steps >= 1, "caption_guidance_steps",
                f"must be at least 1, got {self.caption_guidance_steps}")

    def describe(self) -> str:
        """How diffusion draws, in words: what evaluate.py prints and model cards say."""
        best_of = f", the best of {self.num_candidates} by the caption decoder" if self.num_candidates > 1 else ""
        caption = f", caption guidance {self.caption_guidance:g}" if self.caption_guidance > 0 else ""
        if caption and self.caption_guidance_steps:
            caption += f" over the first {self.caption_guidance_steps} steps"
        return f"{self.sampler}, {self.num_inference_steps} steps, guidance {self.guidance_scale:g}{caption}{best_of}"


@dataclass
class InferenceConfig(Config):
    """How generation and evaluation compute, whatever they draw or write: `ImageTextGenerator`
    takes its fields as arguments and the command lines build their flags from them."""

    precision: str = option(
        "auto", "autocast precision; auto: bf16 on CUDA, fp32 on the CPU (where the same seed gives the same "
        "pixels); bf16 on a CPU without bf16 units is emulated and slow", group="model and device",
        choices=PRECISIONS,
    )


def check_strength(strength: float) -> float:
    """An image-to-image strength, checked: the share of the schedule that redraws the input, 0
    (the input's reconstruction) to 1 (pure noise: text→image)."""
    require(isinstance(strength, (int, float)) and not isinstance(strength, bool) and 0 <= strength <= 1,
            "strength", f"must be in [0, 1], got {strength}")
    return float(strength)


def preset_sampling(preset: str | None) -> SamplingConfig:
    """How a checkpoint trained with `preset` draws unless told otherwise: the preset's
    sampling defaults (None, or a preset without its own: `SamplingConfig()`). Callers' options
    go on top through `ImageTextGenerator.sampling_config`."""
    found = presets.find(preset)
    return SamplingConfig(**(found.sampling if found else {}))


def sampling_presets() -> dict[str, dict[str, Any]]:
    """Each preset's sampling defaults (SamplingConfig fields), as `--help` lists them."""
    return {name: preset_sampling(name).to_dict() for name in presets.names()}
