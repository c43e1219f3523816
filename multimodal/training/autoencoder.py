"""The autoencoder stage's losses beyond the model's own (L1 and the regulariser's term): a
perceptual distance and a PatchGAN adversarial loss, and the discriminator's own training.

As in taming-transformers, the adversarial loss is weighed by an adaptive factor
λ = ‖∇L_rec‖ / (‖∇L_adv‖ + 1e-4), the gradients taken at the image decoder's last layer and
λ clamped to [0, 1e4]: the adversarial gradient then never outweighs the reconstruction's by
more than the configured weight, whatever the scales of the two losses. Before
`discriminator_start` the discriminator neither trains nor counts (its losses are still
reported, so that every epoch's columns mean the same). Validation has no gradients: it weighs
the adversarial loss by the last training step's λ.
"""

from __future__ import annotations

from typing import Any

import torch

from multimodal.config import TrainConfig
from multimodal.models.discriminator import PatchDiscriminator, hinge_loss
from multimodal.models.perceptual import PerceptualDistance
from multimodal.training.distributed import Distributed

MAX_ADAPTIVE_WEIGHT = 1e4  # taming-transformers' clamp


def adaptive_weight(reconstruction: torch.Tensor, adversarial: torch.Tensor, last_layer: torch.Tensor) -> float:
    """λ = ‖∇L_rec‖ / (‖∇L_adv‖ + 1e-4) at `last_layer`, clamped to [0, 1e4]."""
    rec_grad = torch.autograd.grad(reconstruction, last_layer, retain_graph=True)[0]
    adv_grad = torch.autograd.grad(adversarial, last_layer, retain_graph=True)[0]
    return float((rec_grad.norm() / (adv_grad.norm() + 1e-4)).clamp(0.0, MAX_ADAPTIVE_WEIGHT))


class AutoencoderObjective:
    """The perceptual network and the discriminator with its optimiser (AdamW, betas 0.5 and
    0.9 as in taming-transformers); built for runs with an autoencoder stage."""

    def __init__(self, config: TrainConfig, device: torch.device, dist: Distributed) -> None:
        self.start = config.discriminator_start
        self.dist = dist
        self.perceptual = None
        if config.perceptual_weight > 0:
            from multimodal.models.pretrained import EfficientNetFeatures

            self.perceptual = PerceptualDistance(EfficientNetFeatures()).to(device)
        self.discriminator = None
        self.optimizer = None
        if config.adversarial_weight > 0:
            self.discriminator = PatchDiscriminator(config.discriminator_width).to(device)
            self.optimizer = torch.optim.AdamW(
                self.discriminator.parameters(), lr=config.autoencoder_learning_rate or config.learning_rate,
                betas=(0.5, 0.9), weight_decay=0.0,
            )
        self.last_weight = 0.0  # the adaptive weight of the last training step

    def losses(
        self,
        images: torch.Tensor,
        out: dict[str, torch.Tensor],
        weights: dict[str, float],
        step: int,
        last_layer: torch.Tensor | None,
    ) -> dict[str, torch.Tensor]:
        """The perceptual and adversarial losses of a batch whose model output `out` holds the
        reconstruction, the total with them ("loss"), and the discriminator's loss
        ("discriminator", with gradients for the discriminator alone once it trains).
        `last_layer`: the decoder's last weight, to compute λ (training); None in validation."""
        reconstructed = out["reconstructed"]
        terms: dict[str, torch.Tensor] = {}
        perceptual = 0.0
        if "perceptual" in weights:
            terms["perceptual"] = self.perceptual(reconstructed, images)
            perceptual = weights["perceptual"] * terms["perceptual"]
        total = out["loss"] + perceptual
        if "adversarial" in weights:
            started = step >= self.start
            train = torch.is_grad_enabled() and started
            self.discriminator.requires_grad_(False)  # the generator's loss moves the decoder only
            with torch.set_grad_enabled(train):
                terms["adversarial"] = -self.discriminator(reconstructed).float().mean()
            self.discriminator.requires_grad_(True)
            if train and last_layer is not None:
                reconstruction = weights["reconstruction"] * out["reconstruction"] + perceptual
                self.last_weight = adaptive_weight(reconstruction, terms["adversarial"], last_layer)
            factor = weights["adversarial"] * self.last_weight if started else 0.0
            total = total + factor * terms["adversarial"]
            terms["adaptive_weight"] = torch.tensor(self.last_weight if started else 0.0, device=images.device)
            with torch.set_grad_enabled(train):
                real, fake = self.discriminator(torch.cat([images, reconstructed.detach()])).float().chunk(2)
                terms["discriminator"] = hinge_loss(real, fake)
        return terms | {"loss": total}

    def step(self, learning_rate: float, step: int) -> None:
        """The discriminator's optimiser step on the gradients its loss left (averaged over the
        processes), once it has started."""
        if self.optimizer is None:
            return
        if step >= self.start:
            for parameter in self.discriminator.parameters():
                if parameter.grad is not None:
                    parameter.grad = self.dist.all_reduce(parameter.grad)
            for group in self.optimizer.param_groups:
                group["lr"] = learning_rate
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def state(self) -> dict[str, Any]:
        """What the trainer state records of it besides the discriminator's tensors."""
        return {"adaptive_weight": self.last_weight}

    def load_state(self, state: dict[str, Any]) -> None:
        self.last_weight = state.get("adaptive_weight", 0.0)
