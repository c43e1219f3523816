"""Latent diffusion around the UNet: latent normalisation, the training loss, sampling.

The noising math and the samplers are diffusers' schedulers (DDPM, DDIM, DPM-Solver++);
this file only decides what goes in and out of them. The model does not know how it is
sampled: any of the three schedulers runs the same trained weights, and a `SamplingConfig`
says which, with how many steps and how much guidance.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler
from torch import nn
from tqdm.auto import tqdm

from multimodal.config import ModelConfig, SamplingConfig
from multimodal.config.sampling import check_strength
from multimodal.errors import ConfigError
from multimodal.models.unet import ConditionalUNet2D, TextMemory

_BETA_SCHEDULES = {"linear": "linear", "cosine": "squaredcos_cap_v2"}
_PREDICTIONS = {"epsilon": "epsilon", "v": "v_prediction", "sample": "sample"}
DESIGN_DOWNSAMPLING = 32  # the seed design's encoder: 224 px → 7×7 (LatentDiffusionUNet's image side)

Condition = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # (pooled text embedding, token states, their mask)
# log p(prompt | z) of each row of a batch of (denormalised) clean latents z: what caption guidance climbs.
CaptionJudge = Callable[[torch.Tensor], torch.Tensor]


class DiffusionStep(NamedTuple):
    """One training step of the UNet: its loss, and what a loss on its predicted clean latent needs."""

    loss: torch.Tensor
    noisy: torch.Tensor  # the noised, normalised latent the UNet saw
    prediction: torch.Tensor
    timesteps: torch.Tensor
    dropped: torch.Tensor  # (B,) bool: the rows whose text was replaced by the null condition


def make_scheduler(name: str, config: ModelConfig):
    """A fresh diffusers scheduler for the model's noise schedule and prediction type."""
    common = dict(
        num_train_timesteps=config.num_timesteps,
        beta_schedule=_BETA_SCHEDULES[config.noise_schedule],
        prediction_type=_PREDICTIONS[config.prediction_type],
        timestep_spacing="trailing",  # the first sampling step starts from pure noise (t = T-1)
    )
    if name == "ddpm":
        return DDPMScheduler(**common, clip_sample=False)
    if name == "ddim":
        return DDIMScheduler(**common, clip_sample=False, set_alpha_to_one=True)
    if name == "dpm":
        return DPMSolverMultistepScheduler(**common, algorithm_type="dpmsolver++", solver_order=2)
    raise ValueError(f"unknown sampler {name!r}")  # SamplingConfig already refused it


class LatentDiffusion(nn.Module):
    """Text-conditioned diffusion over the per-channel normalised image latent: the UNet (`.unet`)
    with its noise schedule, latent statistics, learned "no text" condition and sampling loop."""

    def __init__(self, config: ModelConfig, context_dim: int) -> None:
        super().__init__()
        self.config = config
        self.unet = ConditionalUNet2D(
            latent_channels=config.latent_channels,
            width=config.unet_width,
            num_blocks=config.unet_blocks,
            heads=config.unet_heads,
            text_embed_dim=config.embed_dim,
            context_dim=context_dim,
            attention_levels=tuple(side in config.attention_resolutions_list for side in config.unet_levels),
        )
        # Per-channel statistics of the training latents, stored with the weights.
        self.register_buffer("latent_mean", torch.zeros(config.latent_channels))
        self.register_buffer("latent_std", torch.ones(config.latent_channels))
        # Off while an adapter fine-tunes: the statistics belong to the base, which stays as it was.
        self.track_latent_stats = True
        # What the UNet sees when the text is dropped (classifier-free guidance).
        self.null_text_embedding = nn.Parameter(torch.zeros(config.embed_dim))
        self.null_context = nn.Parameter(torch.randn(context_dim) * 0.02)
        self.noise_scheduler = make_scheduler("ddpm", config)

    # -- latent normalisation -------------------------------------------------------------
    def _stats(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.latent_mean[None, :, None, None], self.latent_std[None, :, None, None]

    def normalize(self, z: torch.Tensor) -> torch.Tensor:
        mean, std = self._stats()
        return (z - mean) / std

    def denormalize(self, z: torch.Tensor) -> torch.Tensor:
        mean, std = self._stats()
        return z * std + mean

    @torch.no_grad()
    def update_latent_stats(self, z: torch.Tensor) -> None:
        """Move the stored statistics towards this batch's (a running average, as BatchNorm)."""
        momentum = self.config.latent_stats_momentum
        # New tensors rather than in-place updates: this batch's loss still holds the old ones.
        self.latent_mean = self.latent_mean.lerp(z.mean(dim=(0, 2, 3)).float(), momentum)
        self.latent_std = self.latent_std.lerp(z.std(dim=(0, 2, 3)).float().clamp(min=1e-4), momentum)

    # -- conditioning ---------------------------------------------------------------------
    def null_condition(self, batch: int, length: int) -> Condition:
        """The 'no text' condition: a learned embedding and a learned context token."""
        embedding = self.null_text_embedding.expand(batch, -1)
        context = self.null_context.expand(batch, length, -1)
        mask = torch.ones(batch, length, dtype=torch.long, device=context.device)
        return embedding, context, mask

    def drop_condition(
        self, text_embedding: torch.Tensor, context: torch.Tensor, context_mask: torch.Tensor, drop: torch.Tensor
    ) -> Condition:
        """Replace the text of the samples where `drop` is True by the null condition."""
        null_embedding, null_context, null_mask = self.null_condition(*context.shape[:2])
        text_embedding = torch.where(drop[:, None], null_embedding.to(text_embedding.dtype), text_embedding)
        context = torch.where(drop[:, None, None], null_context.to(context.dtype), context)
        context_mask = torch.where(drop[:, None], null_mask, context_mask)
        return text_embedding, context, context_mask

    # -- training -------------------------------------------------------------------------
    def target(self, latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """What the UNet learns to predict: the noise, the velocity v, or the clean latent."""
        if self.config.prediction_type == "epsilon":
            return noise
        if self.config.prediction_type == "v":
            return self.noise_scheduler.get_velocity(latents, noise, timesteps)
        return latents

    def training_step(
        self,
        z: torch.Tensor,
        text_embedding: torch.Tensor,
        context: torch.Tensor,
        context_mask: torch.Tensor,
        noise: torch.Tensor | None = None,
        timesteps: torch.Tensor | None = None,
        drop: torch.Tensor | None = None,
    ) -> DiffusionStep:
        """MSE of the UNet's prediction on a noised, normalised latent (z is not backpropagated),
        with the noised latent and the prediction for a loss on what the UNet would draw."""
        latents = self.normalize(z.detach())
        batch = latents.shape[0]
        if noise is None:
            noise = torch.randn_like(latents)
        if timesteps is None:
            timesteps = torch.randint(0, self.config.num_timesteps, (batch,), device=latents.device)
        if drop is None:
            drop = torch.rand(batch, device=latents.device) < self.config.cond_drop
        text_embedding, context, context_mask = self.drop_condition(text_embedding, context, context_mask, drop)
        noisy = self.noise_scheduler.add_noise(latents, noise, timesteps)
        prediction = self.unet(noisy, timesteps, text_embedding, context, context_mask)
        loss = F.mse_loss(prediction.float(), self.target(latents, noise, timesteps).float())
        return DiffusionStep(loss, noisy, prediction, timesteps, drop)

    def training_loss(self, *args, **kwargs) -> torch.Tensor:
        """`training_step`'s loss alone."""
        return self.training_step(*args, **kwargs).loss

    def signal_level(self, timesteps: torch.Tensor) -> torch.Tensor:
        """ᾱ_t (B,): the share of the clean latent's variance left at each timestep, 1 → 0 as noise grows."""
        return self.noise_scheduler.alphas_cumprod.to(timesteps.device)[timesteps]

    def predicted_clean(self, noisy: torch.Tensor, prediction: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """x̂0: the clean (normalised) latent that the UNet's prediction for `noisy` at `timesteps`
        implies, by the formula the schedulers' steps use (their `pred_original_sample`)."""
        alpha = self.signal_level(timesteps.expand(noisy.shape[0])).view(-1, 1, 1, 1).to(prediction.dtype)
        if self.config.prediction_type == "epsilon":
            return (noisy - (1 - alpha).sqrt() * prediction) / alpha.sqrt()
        if self.config.prediction_type == "v":
            return alpha.sqrt() * noisy - (1 - alpha).sqrt() * prediction
        return prediction

    # -- sampling -------------------------------------------------------------------------
    def guidance_condition(self, condition: Condition, guidance_scale: float,
                           negative: Condition | None = None) -> Condition:
        """What the UNet sees at every sampling step: the text alone (scale 1), what guidance
        steers away from alone (scale 0), or both stacked into one batch for classifier-free
        guidance. Guidance steers away from the null condition, or from `negative` (a negative
        prompt's condition, as long as the text's) when given."""
        if guidance_scale == 1.0:
            return condition
        away = negative if negative is not None else self.null_condition(*condition[1].shape[:2])
        if guidance_scale == 0.0:
            return away
        return self.stacked_condition(condition, away)

    def stacked_condition(self, condition: Condition, away: Condition | None = None) -> Condition:
        """The text's condition and the one guidance steers away from (default: the null
        condition) as one batch, text first: what a guided step runs the UNet on."""
        text_embedding, context, context_mask = condition
        away_embedding, away_context, away_mask = away or self.null_condition(*context.shape[:2])
        return (
            torch.cat([text_embedding, away_embedding.to(text_embedding.dtype)]),
            torch.cat([context, away_context.to(context.dtype)]),
            torch.cat([context_mask, away_mask]),
        )

    def guided_prediction(
        self, x: torch.Tensor, t: torch.Tensor, condition: Condition, guidance_scale: float, guidance_rescale: float
    ) -> torch.Tensor:
        """The UNet's prediction for `x` at step `t` under `guidance_condition(...)`'s condition:
        with guidance, conditional and unconditional run as one batch and are combined."""
        return self._guided_prediction(x, t, self.unet.remember(*condition), guidance_scale, guidance_rescale)

    def _guided_prediction(
        self, x: torch.Tensor, t: torch.Tensor, memory: TextMemory, guidance_scale: float, guidance_rescale: float
    ) -> torch.Tensor:
        """`guided_prediction` with the condition remembered (`ConditionalUNet2D.remember`), as a
        sampling loop does once for all its steps."""
        batch = memory.text.shape[0]
        guided = batch != x.shape[0]
        model_input = torch.cat([x, x]) if guided else x
        prediction = self.unet(model_input, t.expand(batch), memory=memory)
        if not guided:
            return prediction
        conditional, unconditional = prediction.chunk(2)
        prediction = unconditional + guidance_scale * (conditional - unconditional)
        if guidance_rescale > 0:
            from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion import rescale_noise_cfg

            prediction = rescale_noise_cfg(prediction, conditional, guidance_rescale)
        return prediction

    @torch.no_grad()
    def sample(
        self,
        condition: Condition,
        sampling: SamplingConfig,
        generator: torch.Generator | None = None,
        progress: bool = False,
        on_step: Callable[[torch.Tensor], None] | None = None,
        negative: Condition | None = None,
        judge: CaptionJudge | None = None,
        init: torch.Tensor | None = None,
        strength: float = 1.0,
    ) -> torch.Tensor:
        """Denoise from pure noise to a latent z (denormalised, ready for the image decoder), one
        per row of `condition`. The noise is drawn on `generator` (a CPU generator), so a seed
        gives the same result on every device. `progress`: a bar over the steps; `on_step` gets
        the (denormalised) latent after each step, to watch the trajectory; `negative`: the
        condition guidance steers away from instead of the null one (`guidance_condition`).
        `judge` with `sampling.caption_guidance` > 0: caption guidance (`_toward_caption`).

        `init` (denormalised latents, one per row): image-to-image (SDEdit). As diffusers' img2img
        pipeline does (`get_timesteps`), of the S steps only the last int(S·strength) run, from
        `init` normalised and noised to the first of them by the scheduler's own `add_noise`.
        Strength 1 starts from the pure noise text→image starts from (diffusers' inpainting
        pipeline: `is_strength_max`), drawn first in both, so the two give the same latent;
        strength 0 runs no step and returns `init` itself."""
        if sampling.num_inference_steps > self.config.num_timesteps:
            raise ConfigError(
                "num_inference_steps",
                f"must be at most the model's {self.config.num_timesteps} training timesteps, "
                f"got {sampling.num_inference_steps}",
            )
        scheduler = make_scheduler(sampling.sampler, self.config)
        device = condition[0].device
        scheduler.set_timesteps(sampling.num_inference_steps, device=device)
        c, s = self.config.latent_channels, self.config.latent_size
        noise = torch.randn((condition[0].shape[0], c, s, s), generator=generator, dtype=torch.float32).to(device)
        timesteps = scheduler.timesteps
        x = noise * scheduler.init_noise_sigma
        if init is not None and check_strength(strength) < 1:
            start = (sampling.num_inference_steps - int(sampling.num_inference_steps * strength)) * scheduler.order
            timesteps = timesteps[start:]
            if len(timesteps) == 0:
                return init
            if hasattr(scheduler, "set_begin_index"):  # multistep solvers count their steps from here
                scheduler.set_begin_index(start)
            x = scheduler.add_noise(self.normalize(init.float()), noise, timesteps[:1].expand(len(noise)))
        step_options = {"eta": sampling.eta} if "eta" in inspect.signature(scheduler.step).parameters else {}
        memory = self.unet.remember(*self.guidance_condition(condition, sampling.guidance_scale, negative))
        guided_steps = sampling.caption_guidance_steps or sampling.num_inference_steps
        for index, t in enumerate(tqdm(timesteps, desc=f"{sampling.sampler} sampling", unit="step",
                                       disable=not progress)):
            if judge is not None and sampling.caption_guidance > 0 and index < guided_steps:
                x = self._toward_caption(x, t, scheduler, memory, sampling, judge)
            model_input = scheduler.scale_model_input(x, t)
            prediction = self._guided_prediction(
                model_input, t, memory, sampling.guidance_scale, sampling.guidance_rescale
            )
            x = scheduler.step(prediction.float(), t, x, generator=generator, **step_options).prev_sample
            if on_step is not None:
                on_step(self.denormalize(x))
        return self.denormalize(x)

    def _toward_caption(self, x: torch.Tensor, t: torch.Tensor, scheduler, memory: TextMemory,
                        sampling: SamplingConfig, judge: CaptionJudge) -> torch.Tensor:
        """Caption guidance, in the manner of classifier guidance with the caption decoder as the
        classifier: x moved by `caption_guidance` along the gradient of log p(prompt | x̂0(x)),
        where x̂0 is the clean latent the UNet predicts from x (its weights are not changed)."""
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            model_input = scheduler.scale_model_input(x, t)
            prediction = self._guided_prediction(
                model_input, t, memory, sampling.guidance_scale, sampling.guidance_rescale
            )
            clean = self.denormalize(self.predicted_clean(model_input, prediction.float(), t))
            (gradient,) = torch.autograd.grad(judge(clean).sum(), x)
        return (x + sampling.caption_guidance * gradient).detach()


class LatentDiffusionUNet(LatentDiffusion):
    """`LatentDiffusion` under the name the seed design gave this part, also built from its
    keywords: `LatentDiffusionUNet(latent_channels=256, latent_size=7, condition_dim=512,
    num_timesteps=1000)`. Those make the ModelConfig it is built from (condition_dim is the pooled
    text embedding's size, `embed_dim`; `context_dim`, the width of the token states its
    cross-attention reads, defaults to it), with any other ModelConfig field by name and the
    rest the defaults; the image side is the one the design's f=32 encoder (or the
    downsampling_factor given) gives that latent.
    `LatentDiffusionUNet(config, context_dim)` is `LatentDiffusion(config, context_dim)`."""

    def __init__(
        self,
        config: ModelConfig | None = None,
        context_dim: int | None = None,
        *,
        latent_channels: int | None = None,
        latent_size: int | None = None,
        condition_dim: int | None = None,
        num_timesteps: int | None = None,
        **fields: Any,
    ) -> None:
        named = {"latent_channels": latent_channels, "latent_size": latent_size, "embed_dim": condition_dim,
                 "num_timesteps": num_timesteps}
        fields = {name: value for name, value in named.items() if value is not None} | fields
        if config is not None and fields:
            raise TypeError(f"give a ModelConfig or its fields by name, not both (got {', '.join(fields)})")
        if config is None:
            if "latent_size" in fields and "image_size" not in fields:
                factor = fields.get("downsampling_factor") or DESIGN_DOWNSAMPLING
                fields = {"image_size": factor * fields["latent_size"]} | fields
            config = ModelConfig.from_dict(fields)
        super().__init__(config, config.embed_dim if context_dim is None else context_dim)
