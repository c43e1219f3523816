"""The denoiser: a UNet over the latent, at one or more resolution levels.

The latent's side is halved while it is even and the half at least 4 (`ModelConfig.unet_levels`):
a 7×7 latent is one level, too small to halve, so its "U" is made of skip connections between
the two halves rather than of resampling; a 14×14 latent has levels 14 and 7, a 28×28 one 28, 14
and 7, the 32×32 latent of a 256 px image at f=8 32, 16, 8 and 4 (a stride-2 convolution down,
nearest upsampling and a convolution up). Attention costs the square of the positions, so it
runs only at the levels `attention_resolutions` names (the design's two-stage model attends at
16 and 8). Each residual block is told the time step and the pooled text
embedding through FiLM; attention blocks let positions talk to each other and to the BERT
token states. A 1×1 convolution carries the input straight to the output, so 256 latent
channels never have to squeeze through a narrower trunk.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from multimodal.models.checkpointing import checkpointed
from multimodal.models.image_encoder import group_norm


class SinusoidalPositionEmbedding(nn.Module):
    """Diffusion time step t → the transformer's sinusoidal features (dim values)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, timesteps: torch.Tensor) -> torch.Tensor:
        half = self.dim // 2
        frequencies = torch.exp(-math.log(10000.0) * torch.arange(half, device=timesteps.device) / half)
        angles = timesteps.float()[:, None] * frequencies[None]
        return torch.cat([angles.sin(), angles.cos()], dim=-1)


class ResBlockWithCondition(nn.Module):
    """Two 3×3 convs; between them the condition scales and shifts the features (FiLM)."""

    def __init__(self, in_channels: int, out_channels: int, cond_dim: int) -> None:
        super().__init__()
        self.norm1 = group_norm(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.film = nn.Linear(cond_dim, 2 * out_channels)
        self.norm2 = group_norm(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)  # each block starts as the identity
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.film(F.silu(cond))[:, :, None, None].chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        h = self.conv2(F.silu(h))
        return self.skip(x) + h


CrossMemory = tuple[torch.Tensor, ...]  # an attention block's (keys, values, mask) of the text tokens; () for none


class TextMemory(NamedTuple):
    """What the UNet makes of a condition before any step, the same at every step of a sampling
    loop, which computes it once (`ConditionalUNet2D.remember`): the pooled text's share of the
    FiLM condition, and each block's cross-attention keys and values (down blocks, mid, up)."""

    text: torch.Tensor
    cross: tuple[CrossMemory, ...]


class AttentionBlock(nn.Module):
    """Self-attention over the positions (49 at 7×7), then cross-attention to the text tokens."""

    def __init__(self, channels: int, context_dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.norm = group_norm(channels)
        self.qkv = nn.Linear(channels, 3 * channels)
        self.self_out = nn.Linear(channels, channels)
        self.cross_norm = nn.LayerNorm(channels)
        self.cross_q = nn.Linear(channels, channels)
        self.cross_kv = nn.Linear(context_dim, 2 * channels)
        self.cross_out = nn.Linear(channels, channels)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        return x.view(b, n, self.heads, c // self.heads).transpose(1, 2)

    def _merge(self, x: torch.Tensor) -> torch.Tensor:
        b, h, n, d = x.shape
        return x.transpose(1, 2).reshape(b, n, h * d)

    def memory(self, context: torch.Tensor, context_mask: torch.Tensor) -> CrossMemory:
        """The cross-attention's keys and values of the text tokens, and where a token is real."""
        k, v = self.cross_kv(context).chunk(2, dim=-1)
        return self._split(k), self._split(v), context_mask[:, None, None, :].bool()  # mask (B, 1, 1, L)

    def forward(self, x: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, c, height, width = x.shape
        tokens = self.norm(x).flatten(2).transpose(1, 2)  # (B, HW, C)
        q, k, v = self.qkv(tokens).chunk(3, dim=-1)
        attended = F.scaled_dot_product_attention(self._split(q), self._split(k), self._split(v))
        tokens = x.flatten(2).transpose(1, 2) + self.self_out(self._merge(attended))

        q = self._split(self.cross_q(self.cross_norm(tokens)))
        attended = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask)
        tokens = tokens + self.cross_out(self._merge(attended))
        return tokens.transpose(1, 2).reshape(b, c, height, width)


class NoAttention(nn.Module):
    """A level without attention: the features pass unchanged."""

    def memory(self, context: torch.Tensor, context_mask: torch.Tensor) -> CrossMemory:
        return ()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


class Upsample(nn.Module):
    """Double the side (nearest), then a 3×3 convolution."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class ConditionalUNet2D(nn.Module):
    """(noisy latent, t, pooled text, text tokens) → the prediction, same shape as the latent.
    `attention_levels`: one flag per resolution level, highest first, whether it attends (the
    lowest level's flag is also the middle block's). Its length is the number of levels."""

    gradient_checkpointing = False  # a training setting: each block and its attention checkpointed

    def __init__(
        self,
        latent_channels: int,
        width: int,
        num_blocks: int,
        heads: int,
        text_embed_dim: int,
        context_dim: int,
        attention_levels: tuple[bool, ...] = (True,),
    ) -> None:
        super().__init__()
        self.num_blocks = num_blocks
        cond_dim = 4 * width
        self.time_embedding = nn.Sequential(
            SinusoidalPositionEmbedding(width), nn.Linear(width, cond_dim), nn.SiLU(), nn.Linear(cond_dim, cond_dim)
        )
        self.text_embedding = nn.Linear(text_embed_dim, cond_dim)
        self.conv_in = nn.Conv2d(latent_channels, width, 3, padding=1)
        def attention(attends: bool) -> nn.Module:
            return AttentionBlock(width, context_dim, heads) if attends else NoAttention()

        # Blocks of every level in one list each, highest level first (a one-level UNet's names
        # are those of the UNet before it had levels, so its checkpoints still load).
        down_flags = [attends for attends in attention_levels for _ in range(num_blocks)]
        self.down = nn.ModuleList(ResBlockWithCondition(width, width, cond_dim) for _ in down_flags)
        self.down_attention = nn.ModuleList(attention(attends) for attends in down_flags)
        self.downsample = nn.ModuleList(
            nn.Conv2d(width, width, 3, stride=2, padding=1) for _ in attention_levels[1:]
        )
        self.mid = ResBlockWithCondition(width, width, cond_dim)
        self.mid_attention = attention(attention_levels[-1])
        self.up = nn.ModuleList(ResBlockWithCondition(2 * width, width, cond_dim) for _ in down_flags)
        self.up_attention = nn.ModuleList(attention(attends) for attends in down_flags[::-1])
        self.upsample = nn.ModuleList(Upsample(width) for _ in attention_levels[1:])
        self.norm_out = group_norm(width)
        self.conv_out = nn.Conv2d(width, latent_channels, 3, padding=1)
        self.input_to_output = nn.Conv2d(latent_channels, latent_channels, 1)

    def set_gradient_checkpointing(self, on: bool) -> None:
        """Keep only each residual block's inputs for the backward pass (models/checkpointing.py)."""
        self.gradient_checkpointing = on

    def _block(self, block: nn.Module, attention: nn.Module, h: torch.Tensor, cond: torch.Tensor,
               memory: CrossMemory) -> torch.Tensor:
        """A residual block, then its attention (or none)."""

        def run(h: torch.Tensor, cond: torch.Tensor, *memory: torch.Tensor) -> torch.Tensor:
            return attention(block(h, cond), *memory)

        return checkpointed(run, h, cond, *memory, enabled=self.gradient_checkpointing)

    def remember(self, text_embedding: torch.Tensor, context: torch.Tensor, context_mask: torch.Tensor) -> TextMemory:
        """The condition's share of every step (`TextMemory`): a sampling loop computes it once."""
        attentions = [*self.down_attention, self.mid_attention, *self.up_attention]
        return TextMemory(self.text_embedding(text_embedding),
                          tuple(attention.memory(context, context_mask) for attention in attentions))

    def forward(
        self,
        x: torch.Tensor,
        timesteps: torch.Tensor,
        text_embedding: torch.Tensor | None = None,
        context: torch.Tensor | None = None,
        context_mask: torch.Tensor | None = None,
        *,
        memory: TextMemory | None = None,
    ) -> torch.Tensor:
        """`memory`: the condition as `remember` made it, in place of the three (a sampling loop
        remembers once for all its steps): the same arithmetic, the same result."""
        if memory is None:
            memory = self.remember(text_embedding, context, context_mask)
        cond = self.time_embedding(timesteps) + memory.text
        cross = iter(memory.cross)
        h = self.conv_in(x)
        skips = []
        for i, (block, attention) in enumerate(zip(self.down, self.down_attention)):
            if i and i % self.num_blocks == 0:  # the first block of a lower level
                h = self.downsample[i // self.num_blocks - 1](h)
            h = self._block(block, attention, h, cond, next(cross))
            skips.append(h)
        h = self._block(self.mid, self.mid_attention, h, cond, next(cross))
        for i, (block, attention) in enumerate(zip(self.up, self.up_attention)):
            if i and i % self.num_blocks == 0:  # the first block of a higher level
                h = self.upsample[i // self.num_blocks - 1](h)
            h = self._block(block, attention, torch.cat([h, skips.pop()], dim=1), cond, next(cross))
        return self.conv_out(F.silu(self.norm_out(h))) + self.input_to_output(x)
