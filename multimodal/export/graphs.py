"""The parts of the model that run at generation time, as modules with named tensor inputs
that `torch.onnx` turns into graphs, with example and real inputs to check them on
(`multimodal.export` writes and checks them)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from multimodal.models import GenerativeMultimodalModel

REAL_PROMPTS = ("a large red circle on the left", "a small blue square at the top", "a dog on a couch")


class Part(nn.Module):
    """A part of the model as a graph with named tensor inputs. The model is a submodule, so its
    weights become the graph's initialisers."""

    def __init__(self, model: GenerativeMultimodalModel) -> None:
        super().__init__()
        self.model = model
        self.eval()  # no dropout, in the graph and in the PyTorch outputs it is checked against


class TextEncoder(Part):
    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> tuple[Tensor, Tensor]:
        return self.model.text_encoder(input_ids, attention_mask)


class UNetStep(Part):
    """One guided denoising step: the text's condition and the one guidance steers away from as
    one batch, combined with `guidance_scale` (an input, so one graph serves every scale). The
    away condition is an input (a negative prompt's, as long as the text's); where `away_is_null`
    is true the graph puts the null condition in its place, as PyTorch does for no negative prompt."""

    def forward(self, latents: Tensor, timestep: Tensor, text_embedding: Tensor, token_states: Tensor,
                attention_mask: Tensor, away_text_embedding: Tensor, away_token_states: Tensor,
                away_attention_mask: Tensor, away_is_null: Tensor, guidance_scale: Tensor) -> Tensor:
        diffusion = self.model.diffusion
        away = diffusion.drop_condition(away_text_embedding, away_token_states, away_attention_mask, away_is_null)
        condition = diffusion.stacked_condition((text_embedding, token_states, attention_mask), away)
        return diffusion.guided_prediction(latents, timestep, condition, guidance_scale, 0.0)


class ImageDecoder(Part):
    def forward(self, latents: Tensor) -> Tensor:
        return self.model.image_decoder.decode_from_latent(latents)


class ImageEncoder(Part):
    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        return self.model.image_encoder(images)


class CaptionStep(Part):
    """The next token's logits from the whole caption so far (no key/value cache)."""

    def forward(self, latents: Tensor, input_ids: Tensor) -> Tensor:
        decoder = self.model.caption_decoder
        memory = decoder.memory(latents)
        hidden = decoder.lm.transformer(input_ids=input_ids, encoder_hidden_states=memory).last_hidden_state
        return decoder.lm.next_token_logits(hidden[:, -1])


@dataclass
class Graph:
    """One ONNX graph: the module, its named example inputs, its outputs, and which axes vary."""

    module: Part
    inputs: dict[str, Tensor]
    outputs: tuple[str, ...]
    dynamic_axes: dict[str, dict[int, str]]


def graphs(model: GenerativeMultimodalModel, dtype: torch.dtype, batch: int = 2, length: int = 7, tokens: int = 5) -> dict[str, Graph]:
    """The five graphs of `model`, with random example inputs of this batch, prompt length and
    caption length (the exported graphs take any of each)."""
    config = model.config
    c, s = config.latent_channels, config.latent_size
    hidden = model.text_encoder.hidden_size
    vocab = model.tokenizer.vocab_size
    generator = torch.Generator().manual_seed(0)

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(shape, generator=generator).to(dtype)

    def ids(*shape: int) -> torch.Tensor:
        return torch.randint(1000, vocab, shape, generator=generator)

    mask = torch.ones(batch, length, dtype=torch.long)
    mask[0, length - 2 :] = 0  # one padded prompt
    b, latent = {0: "batch"}, {"latents": {0: "batch"}}
    return {
        "text_encoder": Graph(
            TextEncoder(model), {"input_ids": ids(batch, length), "attention_mask": mask},
            ("token_states", "text_embedding"),
            {"input_ids": {0: "batch", 1: "length"}, "attention_mask": {0: "batch", 1: "length"},
             "token_states": {0: "batch", 1: "length"}, "text_embedding": b},
        ),
        "unet_step": Graph(
            UNetStep(model),
            {"latents": randn(batch, c, s, s), "timestep": torch.tensor([500]), "text_embedding": randn(batch, config.embed_dim),
             "token_states": randn(batch, length, hidden), "attention_mask": mask,
             "away_text_embedding": randn(batch, config.embed_dim), "away_token_states": randn(batch, length, hidden),
             "away_attention_mask": mask.flip(0), "away_is_null": torch.arange(batch) % 2 == 0,  # null and not
             "guidance_scale": torch.tensor([3.0], dtype=dtype)},
            ("prediction",),
            latent | {name: {0: "batch", 1: "length"} for name in
                      ("token_states", "attention_mask", "away_token_states", "away_attention_mask")}
            | {"text_embedding": b, "away_text_embedding": b, "away_is_null": b, "prediction": b},
        ),
        "image_decoder": Graph(ImageDecoder(model), {"latents": randn(batch, c, s, s)}, ("images",), latent | {"images": b}),
        "image_encoder": Graph(
            ImageEncoder(model), {"images": randn(batch, 3, config.image_size, config.image_size).clamp(-1, 1)},
            ("latents", "image_embedding"), {"images": b, "latents": b, "image_embedding": b},
        ),
        "caption_step": Graph(
            CaptionStep(model), {"latents": randn(batch, c, s, s), "input_ids": ids(batch, tokens)}, ("logits",),
            latent | {"input_ids": {0: "batch", 1: "tokens"}, "logits": b},
        ),
    }  # fmt: skip


def real_inputs(model: GenerativeMultimodalModel, dtype: torch.dtype) -> dict[str, dict[str, Tensor]]:
    """Inputs as generation makes them: real prompts, the latent the model draws for them, the
    picture it decodes, that picture's latent and a caption prefix; 3 items, not the examples' 2,
    and other lengths, so the check also shows the graphs take other shapes."""
    tokens = model.text_encoder.tokenize(list(REAL_PROMPTS))
    with torch.no_grad():
        states, embedding = model.text_encoder(tokens["input_ids"], tokens["attention_mask"])
        latents = model.image_decoder.get_latent_from_embedding(embedding)
        images = model.image_decoder.decode_from_latent(latents).clamp(-1, 1)
    away = [part.roll(1, 0) for part in (embedding, states, tokens["attention_mask"])]  # another prompt's, as a negative one
    noise = torch.randn(latents.shape, generator=torch.Generator().manual_seed(1))
    prefix = tokens["input_ids"][:, :4]
    return {
        "text_encoder": dict(tokens),
        "unet_step": {"latents": noise.to(dtype), "timestep": torch.tensor([model.config.num_timesteps - 1]), "text_embedding": embedding.to(dtype),
                      "token_states": states.to(dtype), "attention_mask": tokens["attention_mask"],
                      "away_text_embedding": away[0].to(dtype), "away_token_states": away[1].to(dtype),
                      "away_attention_mask": away[2], "away_is_null": torch.tensor([False, True, False]),
                      "guidance_scale": torch.tensor([3.0], dtype=dtype)},
        "image_decoder": {"latents": latents.to(dtype)},
        "image_encoder": {"images": images.to(dtype)},
        "caption_step": {"latents": latents.to(dtype), "input_ids": prefix},
    }  # fmt: skip
