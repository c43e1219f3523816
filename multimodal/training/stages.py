"""Training stages: which stretch of steps trains what.

A run is one stage ("joint": every part at once) or, with `diffusion_epochs`, two: "encoders"
(every part but the diffusion UNet) and then "diffusion" (the two ways from text to the
latent, the UNet and the fast path, on the frozen encoders, starting from the EMA weights
that generation will use). With `autoencoder_epochs`, an "autoencoder" stage comes first: the
image encoder's latent path, its regulariser and the image decoder learn to reconstruct (L1,
the regulariser's term, perceptual and adversarial losses), and every later stage keeps them
frozen, so the latent the diffusion model learns is the autoencoder's; `autoencoder_frozen` keeps
a trained --init-from model's autoencoder so in every stage, and with `epochs` 0 the run goes
from the autoencoder stage, or from the trained model, straight to the diffusion stage. Parts
that only a loss weighted 0 would train (all that learn from captions, for an unconditional
model) are frozen in every stage (`idle_parts`). A `Stage` is the one
owner of everything that differs between them: its losses and their weights (the same in
training and validation, so the two curves compare), the parameters that learn, its
learning-rate cycle, what DDP must be told, and its name in the progress bar and metrics.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from torch import nn

from multimodal.config import TrainConfig
from multimodal.errors import ConfigError
from multimodal.models.image_encoder import LATENT_PATH


# The parameters of the two ways from a text to the latent: the diffusion UNet and the fast path.
TEXT_TO_LATENT = ("diffusion.", "image_decoder.embedding_to_latent.")
# The parameters of the autoencoder: the latent path of the image encoder and the pixel decoder.
AUTOENCODER = (*LATENT_PATH, "image_decoder.layers.")
# The parameters only one loss trains (the diffusion and fast-path losses read the text detached).
TRAINED_ONLY_BY = {
    "contrastive": ("text_encoder.", "image_encoder.head.", "contrastive."),
    "caption": ("caption_decoder.",),
    "fast_path": ("image_decoder.embedding_to_latent.",),
}


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
    frozen: tuple[str, ...] = ()  # parameter-name prefixes that never learn in it (a trained autoencoder)

    @property
    def steps(self) -> int:
        return self.end_step - self.first_step

    def learning_rate(self, step: int) -> float:
        """Linear warm-up to the stage's peak, then cosine decay to zero at the stage's end."""
        return learning_rate(step - self.first_step, self.steps, self.warmup_steps, self.peak_learning_rate)

    def is_trained(self, parameter_name: str) -> bool:
        chosen = self.trains is None or parameter_name.startswith(self.trains)
        return chosen and not parameter_name.startswith(self.frozen)

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


def idle_parts(loss_weights: dict[str, float]) -> tuple[str, ...]:
    """The parameter-name prefixes no loss of `loss_weights` trains (those only a loss weighted 0
    would): they stay as they are, and DDP waits for no gradient of theirs. An unconditional
    model's (images-only data) are every part that learns from captions."""
    return tuple(prefix for loss, prefixes in TRAINED_ONLY_BY.items() if loss not in loss_weights for prefix in prefixes)


def plan_stages(config: TrainConfig, steps_per_epoch: int, loss_weights: dict[str, float]) -> list[Stage]:
    """The stages of a run, in order, cut at `max_steps` (a stage past it is left out).
    `loss_weights` are the model's weights of its losses in joint training. A stage of 0 epochs
    is left out: `--epochs 0` goes from the autoencoder stage, or from a trained --init-from
    model, straight to the diffusion stage."""
    ends = [config.autoencoder_epochs, config.epochs, config.diffusion_epochs]
    ends = [sum(ends[: i + 1]) * steps_per_epoch for i in range(3)]
    total = min(ends[2], config.max_steps or ends[2])
    autoencoder_end, first_end = (min(end, total) for end in ends[:2])
    idle = idle_parts(loss_weights)
    stages = []
    if autoencoder_end > 0:
        weights = {"reconstruction": 1.0} | {name: w for name, w in loss_weights.items() if name == "latent"}
        weights |= {name: w for name, w in (("perceptual", config.perceptual_weight),
                                            ("adversarial", config.adversarial_weight)) if w > 0}
        warmup, lr = max(1, autoencoder_end // 20), config.autoencoder_learning_rate or config.learning_rate
        stages.append(Stage("autoencoder", 0, autoencoder_end, weights, AUTOENCODER, warmup, lr))
    # After an autoencoder stage, or on a frozen one, its parts stay as they are, and their losses stay constant.
    fixed_autoencoder = bool(stages) or config.autoencoder_frozen
    frozen = (AUTOENCODER if fixed_autoencoder else ()) + idle
    if fixed_autoencoder:
        loss_weights = {name: w for name, w in loss_weights.items() if name not in ("reconstruction", "latent")}
    lr = config.learning_rate
    if first_end > autoencoder_end:
        first = {name: weight for name, weight in loss_weights.items() if config.diffusion_epochs == 0 or name != "diffusion"}
        if not first:
            raise ConfigError("epochs", "would train nothing in the first stage: the autoencoder is frozen and this "
                              "model learns from no caption; give --epochs 0")
        warmup = min(round(config.warmup_epochs * steps_per_epoch), first_end - autoencoder_end)
        if config.diffusion_epochs == 0:
            return [*stages, Stage("joint", autoencoder_end, first_end, first, None, warmup, lr, frozen=frozen)]
        # The UNet learns nothing in the first stage, so DDP must not wait for its gradients.
        stages.append(Stage("encoders", autoencoder_end, first_end, first, None, warmup, lr,
                            find_unused_parameters=True, frozen=frozen))
    if total > first_end:
        length = total - first_end
        warmup, lr = max(1, length // 20), config.diffusion_learning_rate or lr
        weights = {"diffusion": 1.0} | {name: w for name, w in loss_weights.items() if name == "fast_path"}
        if config.consistency_weight > 0:
            if "caption" not in loss_weights:
                raise ConfigError("consistency_weight", "needs a trained caption decoder to judge the UNet's "
                                  "pictures, and this model's caption weight is 0")
            weights["consistency"] = config.consistency_weight
        stages.append(Stage("diffusion", first_end, total, weights, TEXT_TO_LATENT, warmup, lr, True, frozen=idle))
    return stages
