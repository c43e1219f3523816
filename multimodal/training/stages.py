"""Training stages: which stretch of steps trains what.

A run is one stage ("joint": every part at once) or, with `diffusion_epochs`, two: "encoders"
(every part but the diffusion UNet) and then "diffusion" (the two ways from text to the
latent, the UNet and the fast path, on the frozen encoders, starting from the EMA weights
that generation will use). A `Stage` is the one
owner of everything that differs between them: its losses and their weights (the same in
training and validation, so the two curves compare), the parameters that learn, its
learning-rate cycle, what DDP must be told, and its name in the progress bar and metrics.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from torch import nn

from multimodal.config import TrainConfig


# The parameters of the two ways from a text to the latent: the diffusion UNet and the fast path.
TEXT_TO_LATENT = ("diffusion.", "image_decoder.embedding_to_latent.")


@dataclass(frozen=True)
class Stage:
    name: str
    first_step: int
    end_step: int  # exclusive
    loss_weights: dict[str, float] = field(hash=False)
    trains: tuple[str, ...] | None  # parameter-name prefixes that learn; None: all that can
    warmup_steps: int
    peak_learning_rate: float
    start_from_ema: bool = False  # begin by copying the EMA weights into the trained model
    find_unused_parameters: bool = False  # for DDP: some learning parameters get no gradient

    @property
    def steps(self) -> int:
        return self.end_step - self.first_step

    def learning_rate(self, step: int) -> float:
        """Linear warm-up to the stage's peak, then cosine decay to zero at the stage's end."""
        return learning_rate(step - self.first_step, self.steps, self.warmup_steps, self.peak_learning_rate)

    def is_trained(self, parameter_name: str) -> bool:
        return self.trains is None or parameter_name.startswith(self.trains)

    def apply(self, model: nn.Module, trainable: set[str]) -> None:
        """Let exactly this stage's parameters learn, among `trainable` (those that ever may:
        a frozen BERT never does)."""
        for name, parameter in model.named_parameters():
            parameter.requires_grad_(name in trainable and self.is_trained(name))


def learning_rate(step: int, total_steps: int, warmup_steps: int, peak: float) -> float:
    """Linear warm-up to `peak`, then cosine decay to zero at `total_steps`."""
    if step < warmup_steps:
        return peak * (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return peak * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def plan_stages(config: TrainConfig, steps_per_epoch: int, loss_weights: dict[str, float]) -> list[Stage]:
    """The stages of a run, in order, cut at `max_steps` (a stage past it is left out).
    `loss_weights` are the model's weights of its losses in joint training."""
    first_epochs = config.epochs * steps_per_epoch
    total = first_epochs + config.diffusion_epochs * steps_per_epoch
    if config.max_steps:
        total = min(total, config.max_steps)
    first_end = min(first_epochs, total)
    warmup = min(round(config.warmup_epochs * steps_per_epoch), first_end)
    lr = config.learning_rate
    if config.diffusion_epochs == 0:
        return [Stage("joint", 0, first_end, dict(loss_weights), None, warmup, lr)]
    encoders = {name: weight for name, weight in loss_weights.items() if name != "diffusion"}
    # The UNet learns nothing in the first stage, so DDP must not wait for its gradients.
    stages = [Stage("encoders", 0, first_end, encoders, None, warmup, lr, find_unused_parameters=True)]
    if total > first_end:
        length = total - first_end
        warmup, lr = max(1, length // 20), config.diffusion_learning_rate or lr
        weights = {"diffusion": 1.0} | {name: w for name, w in loss_weights.items() if name == "fast_path"}
        stages.append(Stage("diffusion", first_end, total, weights, TEXT_TO_LATENT, warmup, lr, True))
    return stages
