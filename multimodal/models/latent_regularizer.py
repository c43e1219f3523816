"""The latent's regulariser: what turns the image encoder's features into the latent z.

    none  z is the features.
    kl    the features give a diagonal Gaussian's mean and log-variance (diffusers'
          DiagonalGaussianDistribution); training samples z with the reparameterisation trick
          and pays its KL divergence to N(0, 1), inference takes the mean.
    vq    z is the nearest of `codebook_size` learned codes (diffusers' VectorQuantizer:
          commitment cost, straight-through gradients). Codes that no training batch chose for
          `vq_reseed_steps` steps are re-seeded from encoder outputs, so the codebook does not
          collapse onto the few entries that happened to start near the features.

Each returns z and its terms, in training and evaluation alike (so validation reports what
training does): "latent" (the loss the autoencoder stage weighs) and, for VQ, the batch's
codebook usage (the fraction of codes chosen) and perplexity (exp of the codes' entropy).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution, VectorQuantizer
from torch import nn

from multimodal.config import ModelConfig

Terms = dict[str, torch.Tensor]


class NoRegularizer(nn.Module):
    """z is the features: no parameters, no loss (the model as it was before regularisers)."""

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, Terms]:
        return features, {}


class GaussianLatent(nn.Module):
    """A 1×1 convolution makes each latent value a mean and a log-variance."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.moments = nn.Conv2d(config.latent_channels, 2 * config.latent_channels, 1)
        # Latent diffusion sums its losses over a picture; ours are means, so the KL sum is
        # divided by the pixel values of an image to keep latent diffusion's balance at 1e-6.
        self.pixel_values = 3 * config.image_size**2

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, Terms]:
        posterior = DiagonalGaussianDistribution(self.moments(features).float())
        kl = posterior.kl().mean() / self.pixel_values  # summed over the latent, averaged over the batch
        return (posterior.sample() if self.training else posterior.mode()), {"latent": kl}


class CodebookLatent(nn.Module):
    """Vector quantisation with re-seeding of unused codes and codebook statistics."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.quantizer = VectorQuantizer(
            config.codebook_size, config.latent_channels, beta=config.vq_commitment, legacy=False
        )
        self.reseed_steps = config.vq_reseed_steps
        # Training steps since each code was last chosen (a buffer: it is saved and resumed).
        self.register_buffer("steps_unused", torch.zeros(config.codebook_size, dtype=torch.long))

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, Terms]:
        with torch.autocast(features.device.type, enabled=False):  # nearest codes in fp32
            features = features.float()
            z, loss, (_, _, codes) = self.quantizer(features)
        codes = codes.flatten()
        counts = torch.bincount(codes, minlength=self.steps_unused.numel())
        probabilities = counts.float() / codes.numel()
        entropy = -(probabilities * probabilities.clamp(min=1e-10).log()).sum()
        terms = {
            "latent": loss,
            "codebook_usage": (counts > 0).float().mean(),
            "codebook_perplexity": entropy.exp(),
        }
        if self.training and self.quantizer.embedding.weight.requires_grad:  # a frozen codebook stays as it is
            self.reseed(features.detach().permute(0, 2, 3, 1).reshape(codes.numel(), -1), counts)
        return z, terms

    @torch.no_grad()
    def reseed(self, outputs: torch.Tensor, counts: torch.Tensor) -> None:
        """Count the steps each code went unchosen (over every process) and move the codes that
        reached `reseed_steps` onto randomly chosen encoder outputs of this batch (rank 0's)."""
        distributed = dist.is_available() and dist.is_initialized()
        if distributed:
            dist.all_reduce(counts)
        self.steps_unused = torch.where(counts > 0, 0, self.steps_unused + 1)
        dead = (self.steps_unused >= self.reseed_steps).nonzero().flatten()
        if dead.numel() == 0:
            return
        picks = torch.randint(0, outputs.shape[0], (dead.numel(),), device=outputs.device)
        new_codes = outputs[picks].to(self.quantizer.embedding.weight.dtype)
        if distributed:
            dist.broadcast(new_codes, src=0)
        self.quantizer.embedding.weight.data[dead] = new_codes
        self.steps_unused[dead] = 0


def latent_regularizer(config: ModelConfig) -> nn.Module:
    """The regulariser `config.latent_regularizer` names."""
    if config.latent_regularizer == "kl":
        return GaussianLatent(config)
    if config.latent_regularizer == "vq":
        return CodebookLatent(config)
    return NoRegularizer()
