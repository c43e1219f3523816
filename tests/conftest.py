"""Shared fixtures: tiny configurations that build in a fraction of a second."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from multimodal import GenerativeMultimodalModel, ImageTextGenerator, ModelConfig  # noqa: E402

# A random-initialised BERT that uses the bundled vocabulary: real tokenizer, tiny network.
TINY_BERT = dict(
    vocab_size=30522,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=64,
    max_position_embeddings=64,
)


def tiny_config(**overrides) -> ModelConfig:
    values = dict(
        image_size=28,
        latent_channels=32,
        encoder_width=8,
        decoder_width=8,
        embed_dim=32,
        proj_hidden_dim=64,
        pool_channels=4,
        bert_config=TINY_BERT,
        max_text_length=16,
        caption_width=32,
        caption_layers=1,
        caption_heads=2,
        caption_dropout=0.0,
        max_caption_length=20,
        unet_width=32,
        unet_blocks=1,
        unet_heads=2,
        num_timesteps=100,
    )
    values.update(overrides)
    return ModelConfig(**values)


@pytest.fixture
def tiny_model() -> GenerativeMultimodalModel:
    torch.manual_seed(0)
    return GenerativeMultimodalModel(tiny_config())


class OneHotJudge:
    """A perfect model of a built-in set, as evaluation sees it: `_read` names what a picture
    shows and `_parse` what a caption says (one of `kinds`, whose canonical caption is
    `caption`); embeddings and latents are one-hot vectors over the kinds, captions are the
    canonical ones, and the caption log-likelihood is 0 where the caption says what the picture
    shows and -1 elsewhere."""

    device = torch.device("cpu")
    kinds: list

    def _one_hot(self, kinds: list) -> torch.Tensor:
        return F.one_hot(torch.tensor([self.kinds.index(kind) for kind in kinds]), len(self.kinds)).float()

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        return self._one_hot(self._read(images))

    def encode_text(self, texts: list[str]) -> torch.Tensor:
        return self._one_hot([self._parse(text) for text in texts])

    def image_encoder(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        latent = self.encode_image(images)
        return latent, latent

    def generate_text_from_latent(self, latents: torch.Tensor) -> list[str]:
        return [self.caption(self.kinds[int(index)]) for index in latents.argmax(1)]

    def caption_log_likelihood(self, latents: torch.Tensor, texts: list[str]) -> torch.Tensor:
        return (latents * self.encode_text(texts)).sum(1) - 1


def random_images(batch: int, size: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 3, size, size, generator=generator) * 2 - 1


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A tiny untrained checkpoint folder, written once per test module."""
    torch.manual_seed(0)
    directory = tmp_path_factory.mktemp("tiny") / "checkpoint"
    GenerativeMultimodalModel(tiny_config()).save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def generator(checkpoint) -> ImageTextGenerator:
    return ImageTextGenerator(checkpoint, device="cpu")


def run_recording(trainer, stop_at: int | None = None) -> list[dict]:
    """Run `trainer`, recording each step's metrics; with `stop_at`, stop after that step as a
    SIGTERM would (so a resumed run can be compared with an uninterrupted one)."""
    seen, original = [], trainer.train_step

    def step(batch):
        metrics = original(batch)
        seen.append(metrics)
        if stop_at is not None and trainer.step + 1 == stop_at:
            trainer.stop_signal = "SIGTERM"
        return metrics

    trainer.train_step = step
    trainer.run()
    return seen
