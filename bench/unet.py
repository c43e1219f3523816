"""The denoiser at the 256×7×7 latent: ours against diffusers' UNet2DConditionModel.

Both get the same input: a noisy latent, a time step per sample, the pooled 512-d text
embedding (ours: FiLM; diffusers: its "projection" class embedding, added to the time
embedding the same way) and 16 BERT token states of width 384 to cross-attend to.
diffusers cannot halve 7×7 usefully, so its UNet is one resolution level (one down and one
up block, no resampling) at our width; of its depths (1 or 2 layers per block, with or without
the mid block), the one whose FLOPs are nearest ours is compared.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from diffusers import UNet2DConditionModel
from torch import nn

from bench.timing import Timer, count_flops, precision_name
from multimodal.config import ModelConfig, model_preset
from multimodal.device import autocast
from multimodal.models.unet import ConditionalUNet2D

CONTEXT_DIM = 384  # hidden size of the bundled MiniLM BERT
CONTEXT_LENGTH = 16  # tokens of a typical caption
DIFFUSERS_DEPTHS = [(layers, mid) for layers in (1, 2) for mid in (True, False)]  # (layers_per_block, mid block)


@dataclass
class UNetInputs:
    latent: torch.Tensor
    timesteps: torch.Tensor
    text_embedding: torch.Tensor
    context: torch.Tensor
    context_mask: torch.Tensor

    @classmethod
    def random(cls, config: ModelConfig, batch: int, device: torch.device) -> "UNetInputs":
        c, s = config.latent_channels, config.latent_size
        return cls(
            torch.randn(batch, c, s, s, device=device),
            torch.randint(0, config.num_timesteps, (batch,), device=device),
            torch.randn(batch, config.embed_dim, device=device),
            torch.randn(batch, CONTEXT_LENGTH, CONTEXT_DIM, device=device),
            torch.ones(batch, CONTEXT_LENGTH, dtype=torch.long, device=device),
        )


def our_unet(config: ModelConfig) -> ConditionalUNet2D:
    return ConditionalUNet2D(
        latent_channels=config.latent_channels,
        width=config.unet_width,
        num_blocks=config.unet_blocks,
        heads=config.unet_heads,
        text_embed_dim=config.embed_dim,
        context_dim=CONTEXT_DIM,
    )


def diffusers_unet(config: ModelConfig, layers_per_block: int, mid_block: bool) -> UNet2DConditionModel:
    """One resolution level at our width, cross-attention to the BERT states, the pooled text
    embedding added to the time embedding. (`attention_head_dim` is diffusers' name for the
    number of heads in this class.)"""
    return UNet2DConditionModel(
        sample_size=config.latent_size,
        in_channels=config.latent_channels,
        out_channels=config.latent_channels,
        down_block_types=("CrossAttnDownBlock2D",),
        up_block_types=("CrossAttnUpBlock2D",),
        block_out_channels=(config.unet_width,),
        layers_per_block=layers_per_block,
        mid_block_type="UNetMidBlock2DCrossAttn" if mid_block else None,
        attention_head_dim=config.unet_heads,
        cross_attention_dim=CONTEXT_DIM,
        class_embed_type="projection",
        projection_class_embeddings_input_dim=config.embed_dim,
    )


def caller(unet: nn.Module) -> Callable[[UNetInputs], torch.Tensor]:
    """How each UNet is called on the same inputs."""
    if isinstance(unet, UNet2DConditionModel):
        return lambda x: unet(
            x.latent, x.timesteps, encoder_hidden_states=x.context, class_labels=x.text_embedding,
            encoder_attention_mask=x.context_mask,
        ).sample
    return lambda x: unet(x.latent, x.timesteps, x.text_embedding, x.context, x.context_mask)


def passes(unet: nn.Module, inputs: UNetInputs, dtype: torch.dtype | None) -> dict[str, Callable[[], None]]:
    """The two things measured: a forward without autograd (a sampling step) and a training
    forward+backward (mean-square of the output as the loss), in the trainer's autocast."""
    call = caller(unet)
    device = inputs.latent.device

    def forward() -> None:
        with torch.no_grad(), autocast(device, dtype):
            call(inputs)

    def forward_backward() -> None:
        unet.zero_grad(set_to_none=True)
        with autocast(device, dtype):
            out = call(inputs)
        out.float().square().mean().backward()

    return {"forward": forward, "forward+backward": forward_backward}


def num_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def comparable_diffusers_unet(config: ModelConfig, device: torch.device, target_flops: int) -> tuple[nn.Module, str]:
    """The diffusers UNet whose batch-1 forward FLOPs are nearest `target_flops`, and its name."""
    one = UNetInputs.random(config, 1, device)
    best = None
    for layers, mid in DIFFUSERS_DEPTHS:
        unet = diffusers_unet(config, layers, mid).to(device)
        flops = count_flops(passes(unet, one, None)["forward"])
        if best is None or abs(flops - target_flops) < abs(best[2] - target_flops):
            best = (unet, f"diffusers (layers_per_block={layers}{'' if mid else ', no mid block'})", flops)
    return best[0], best[1]


def bench_unets(
    preset: str, device: torch.device, dtypes: list[torch.dtype | None], batches: list[int], timer: Timer
) -> list[dict]:
    """Rows of (unet, batch, pass, precision) → ms and GFLOP, for ours and the diffusers one."""
    config = model_preset(preset)
    torch.manual_seed(0)
    ours = our_unet(config).to(device)
    one = UNetInputs.random(config, 1, device)
    ours_flops = count_flops(passes(ours, one, None)["forward"])
    theirs, theirs_name = comparable_diffusers_unet(config, device, ours_flops)
    rows = []
    for name, unet in (("ours", ours), (theirs_name, theirs)):
        flops = {kind: count_flops(fn) for kind, fn in passes(unet, one, None).items()}  # exact, and linear in the batch
        for batch in batches:
            inputs = UNetInputs.random(config, batch, device)
            for dtype in dtypes:
                for kind, fn in passes(unet, inputs, dtype).items():
                    rows.append(
                        {
                            "preset": preset,
                            "width": config.unet_width,
                            "blocks": config.unet_blocks,
                            "unet": name,
                            "params_m": num_params(unet) / 1e6,
                            "batch": batch,
                            "pass": kind,
                            "precision": precision_name(dtype),
                            "gflop": flops[kind] * batch / 1e9,
                            "ms": timer(fn) * 1e3,
                        }
                    )
        unet.zero_grad(set_to_none=True)
    return rows
