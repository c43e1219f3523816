"""Latent diffusion around the UNet: latent normalisation, the training loss, sampling.

The noising math and the samplers are diffusers' schedulers (DDPM, DDIM, DPM-Solver++);
this file only decides what goes in and out of them. The model does not know how it is
sampled: any of the three schedulers runs the same trained weights.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler
from torch import nn

from multimodal.config import SAMPLERS, ModelConfig
from multimodal.models.unet import ConditionalUNet2D

_BETA_SCHEDULES = {"linear": "linear", "cosine": "squaredcos_cap_v2"}
_PREDICTIONS = {"epsilon": "epsilon", "v": "v_prediction", "sample": "sample"}


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
    raise ValueError(f"unknown sampler {name!r}; choose from {', '.join(SAMPLERS)}")


def rescale_guidance(guided: torch.Tensor, conditional: torch.Tensor, factor: float) -> torch.Tensor:
    """Guidance rescale (Lin et al. 2023): pull the guided prediction's std back to the
    conditional one's, which keeps high guidance scales from over-saturating."""
    dims = list(range(1, guided.ndim))
    rescaled = guided * (conditional.std(dim=dims, keepdim=True) / guided.std(dim=dims, keepdim=True))
    return factor * rescaled + (1 - factor) * guided


class LatentDiffusionUNet(nn.Module):
    """Text-conditioned diffusion over the per-channel normalised image latent."""

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
        )
        # Per-channel statistics of the training latents, stored with the weights.
        self.register_buffer("latent_mean", torch.zeros(config.latent_channels))
        self.register_buffer("latent_std", torch.ones(config.latent_channels))
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
    def null_condition(self, batch: int, length: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The 'no text' condition: a learned embedding and a learned context token."""
        embedding = self.null_text_embedding.expand(batch, -1)
        context = self.null_context.expand(batch, length, -1)
        mask = torch.ones(batch, length, dtype=torch.long, device=context.device)
        return embedding, context, mask

    def drop_condition(
        self, text_embedding: torch.Tensor, context: torch.Tensor, context_mask: torch.Tensor, drop: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
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

    def training_loss(
        self,
        z: torch.Tensor,
        text_embedding: torch.Tensor,
        context: torch.Tensor,
        context_mask: torch.Tensor,
        noise: torch.Tensor | None = None,
        timesteps: torch.Tensor | None = None,
        drop: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """MSE of the UNet's prediction on a noised, normalised latent (z is not backpropagated)."""
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
        return F.mse_loss(prediction.float(), self.target(latents, noise, timesteps).float())

    # -- sampling -------------------------------------------------------------------------
    def guided_prediction(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        condition: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
        guidance_scale: float,
        guidance_rescale: float,
    ) -> torch.Tensor:
        """Classifier-free guidance; conditional and unconditional run in one batched forward.
        Scale 1 is the conditional prediction alone, scale 0 the unconditional alone."""
        text_embedding, context, context_mask = condition
        batch = x.shape[0]
        timesteps = t.expand(batch)
        if guidance_scale == 1.0:
            return self.unet(x, timesteps, text_embedding, context, context_mask)
        null = self.null_condition(batch, context.shape[1])
        if guidance_scale == 0.0:
            return self.unet(x, timesteps, *null)
        both = self.unet(
            torch.cat([x, x]),
            t.expand(2 * batch),
            torch.cat([text_embedding, null[0]]),
            torch.cat([context, null[1]]),
            torch.cat([context_mask, null[2]]),
        )
        conditional, unconditional = both.chunk(2)
        guided = unconditional + guidance_scale * (conditional - unconditional)
        if guidance_rescale > 0:
            guided = rescale_guidance(guided, conditional, guidance_rescale)
        return guided

    @torch.no_grad()
    def sample(
        self,
        text_embedding: torch.Tensor,
        context: torch.Tensor,
        context_mask: torch.Tensor,
        num_inference_steps: int = 50,
        guidance_scale: float = 3.0,
        sampler: str = "ddim",
        generator: torch.Generator | None = None,
        eta: float = 0.0,
        guidance_rescale: float = 0.0,
    ) -> torch.Tensor:
        """Denoise from pure noise to a latent z (denormalised, ready for the image decoder).
        The noise is drawn on `generator` (CPU), so a seed gives the same result everywhere."""
        scheduler = make_scheduler(sampler, self.config)
        device = text_embedding.device
        scheduler.set_timesteps(num_inference_steps, device=device)
        c, s = self.config.latent_channels, self.config.latent_size
        x = torch.randn((text_embedding.shape[0], c, s, s), generator=generator, dtype=torch.float32)
        x = x.to(device) * scheduler.init_noise_sigma
        step_options = {"eta": eta} if sampler == "ddim" else {}
        condition = (text_embedding, context, context_mask)
        for t in scheduler.timesteps:
            model_input = scheduler.scale_model_input(x, t)
            prediction = self.guided_prediction(model_input, t, condition, guidance_scale, guidance_rescale)
            x = scheduler.step(prediction.float(), t, x, generator=generator, **step_options).prev_sample
        return self.denormalize(x)
