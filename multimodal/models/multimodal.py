"""GenerativeMultimodalModel: the five parts joined into one model with one total loss.

    image ─► ImageEncoder ─► z (256×7×7) ─► e_img ─┐
    text  ─► TextEncoder  ─► h (tokens)  ─► e_txt ─┴► contrastive loss
    z ─► ImageDecoder ─► image'                          reconstruction
    e_txt ─► ImageDecoder.get_latent_from_embedding ─► z  (fast path, part of reconstruction)
    z ─► CaptionDecoder ─► caption tokens                 captioning
    norm(stop_grad(z)) ─► LatentDiffusionUNet(e_txt, h)   diffusion
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_model, save_model
from torch import nn

from multimodal.config import ModelConfig
from multimodal.losses import ContrastiveLoss
from multimodal.models.caption_decoder import CaptionDecoder, clean_caption
from multimodal.models.diffusion import LatentDiffusionUNet
from multimodal.models.image_decoder import ImageDecoder
from multimodal.models.image_encoder import ImageEncoder
from multimodal.models.text_encoder import TextEncoder

STAGES = ("joint", "encoders", "diffusion")
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


class CheckpointError(ValueError):
    """A checkpoint folder that cannot be loaded; the message says what is wrong."""


class GenerativeMultimodalModel(nn.Module):
    def __init__(self, config: ModelConfig, tokenizer_path: str | Path | None = None) -> None:
        super().__init__()
        self.config = config
        self.text_encoder = TextEncoder(config, tokenizer_path)
        self.tokenizer = self.text_encoder.tokenizer
        self.image_encoder = ImageEncoder(config)
        self.image_decoder = ImageDecoder(config)
        self.caption_decoder = CaptionDecoder(
            config,
            vocab_size=len(self.tokenizer),
            bos_id=self.tokenizer.cls_token_id,
            eos_id=self.tokenizer.sep_token_id,
            pad_id=self.tokenizer.pad_token_id,
        )
        self.diffusion = LatentDiffusionUNet(config, context_dim=self.text_encoder.hidden_size)
        self.contrastive = ContrastiveLoss(config.init_logit_scale, config.max_logit_scale)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    # -- training -------------------------------------------------------------------------
    def forward(
        self,
        images: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        text_states: torch.Tensor | None = None,
        stage: str = "joint",
    ) -> dict[str, torch.Tensor]:
        """Losses and metrics for a batch of matching (image, caption) pairs, and the (detached)
        embeddings for retrieval.

        `text_states` are BERT's token states when the caller has them cached (frozen BERT);
        otherwise BERT runs on `input_ids`. `stage` says which losses to train, for training
        that gives diffusion a stage of its own: "joint" (all), "encoders" (all but diffusion,
        reported as 0) or "diffusion" (diffusion alone on the frozen encoders' outputs).
        """
        if stage not in STAGES:
            raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")
        with torch.set_grad_enabled(torch.is_grad_enabled() and stage != "diffusion"):
            z, image_embedding = self.image_encoder(images)
            if text_states is None:
                text_states = self.text_encoder.token_states(input_ids, attention_mask)
            text_embedding = self.text_encoder.project(text_states, attention_mask)
        if self.training:
            self.diffusion.update_latent_stats(z.detach())
        zero = torch.zeros((), device=z.device)
        diffusion = zero
        if stage != "encoders":
            diffusion = self.diffusion.training_loss(
                z.detach(), text_embedding.detach(), text_states.detach(), attention_mask
            )
        if stage == "diffusion":
            return {"loss": diffusion, "diffusion": diffusion}

        c = self.config
        contrastive = self.contrastive(image_embedding, text_embedding)
        reconstruction = self.reconstruction_loss(images, z, text_embedding)
        caption = self.caption_decoder(z, input_ids, attention_mask)
        total = (
            c.contrastive_weight * contrastive["loss"]
            + c.recon_weight * reconstruction
            + c.caption_weight * caption
            + c.diffusion_weight * diffusion
        )
        return {
            "loss": total,
            "contrastive": contrastive["loss"],
            "reconstruction": reconstruction,
            "caption": caption,
            "diffusion": diffusion,
            "i2t_accuracy": contrastive["i2t_accuracy"],
            "t2i_accuracy": contrastive["t2i_accuracy"],
            "image_embedding": image_embedding.detach(),
            "text_embedding": text_embedding.detach(),
        }

    def reconstruction_loss(self, images: torch.Tensor, z: torch.Tensor, text_embedding: torch.Tensor) -> torch.Tensor:
        """Pixels from z (L1), plus the fast path: the normalised latent from the text embedding
        (MSE). Neither target is moved by the fast path's gradient."""
        pixels = F.l1_loss(self.image_decoder.decode_from_latent(z).float(), images.float())
        predicted = self.image_decoder.get_latent_from_embedding(text_embedding.detach())
        latent = F.mse_loss(self.diffusion.normalize(predicted).float(), self.diffusion.normalize(z.detach()).float())
        return pixels + latent

    def compute_diffusion_loss(
        self,
        images: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        text_states: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The diffusion loss alone, the encoders frozen (the "diffusion" stage of `forward`)."""
        return self(images, input_ids, attention_mask, text_states, stage="diffusion")["loss"]

    # -- encoding -------------------------------------------------------------------------
    def text_condition(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(e_txt, token states, attention mask) for a list of prompts."""
        tokens = {k: v.to(self.device) for k, v in self.text_encoder.tokenize(texts).items()}
        states, embedding = self.text_encoder(**tokens)
        return embedding, states, tokens["attention_mask"]

    @torch.no_grad()
    def encode_text(self, texts: list[str]) -> torch.Tensor:
        """Unit-norm text embeddings (B, embed_dim)."""
        return self.text_condition(texts)[0]

    @torch.no_grad()
    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """Unit-norm image embeddings (B, embed_dim) for images in [-1, 1]."""
        return self.image_encoder(images.to(self.device))[1]

    # -- generation -----------------------------------------------------------------------
    @torch.no_grad()
    def generate_image_from_text(
        self,
        texts: list[str],
        num_inference_steps: int = 50,
        guidance_scale: float = 3.0,
        sampler: str = "ddim",
        seed: int | None = None,
        use_diffusion: bool = True,
        eta: float = 0.0,
        guidance_rescale: float = 0.0,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Images (B, 3, H, W) in [-1, 1], one per text. `use_diffusion=False` is the fast
        preview: the latent comes straight from the text embedding."""
        embedding, states, mask = self.text_condition(texts)
        if not use_diffusion:
            z = self.image_decoder.get_latent_from_embedding(embedding)
        else:
            if generator is None:
                generator = torch.Generator()
                generator.manual_seed(seed) if seed is not None else generator.seed()
            z = self.diffusion.sample(
                embedding,
                states,
                mask,
                num_inference_steps=num_inference_steps,
                guidance_scale=guidance_scale,
                sampler=sampler,
                generator=generator,
                eta=eta,
                guidance_rescale=guidance_rescale,
            )
        return self.image_decoder.decode_from_latent(z).clamp(-1, 1)

    @torch.no_grad()
    def generate_text_from_image(self, images: torch.Tensor, max_new_tokens: int = 30, **decoding) -> list[str]:
        """Captions for images in [-1, 1]; `decoding` takes transformers' GenerationConfig names
        (num_beams, do_sample, temperature, top_k, top_p, repetition_penalty,
        num_return_sequences). With several return sequences, an image's captions are adjacent.
        Captions come back as plain text: no special tokens, no '##' pieces, normal spacing."""
        z = self.image_encoder.encode(images.to(self.device))
        ids = self.caption_decoder.generate(z, max_new_tokens=max_new_tokens, **decoding)
        return [clean_caption(text) for text in self.tokenizer.batch_decode(ids, skip_special_tokens=True)]

    # -- checkpoints ----------------------------------------------------------------------
    def save_pretrained(self, directory: str | Path) -> None:
        """Write config.json, model.safetensors and the tokenizer files into `directory`.
        The config records BERT's architecture, so loading never needs the original weights."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        config = self.config.to_dict()
        config["bert_config"] = self.text_encoder.bert.config.to_diff_dict()
        config["text_encoder"] = self.config.text_encoder
        (directory / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n")
        save_model(self, str(directory / WEIGHTS_NAME))
        self.tokenizer.save_pretrained(str(directory))

    @classmethod
    def from_pretrained(cls, directory: str | Path, device: str | torch.device = "cpu") -> "GenerativeMultimodalModel":
        """Load a `save_pretrained` folder. Only JSON and safetensors are read: nothing is unpickled."""
        directory = Path(directory)
        if not directory.is_dir():
            raise CheckpointError(f"checkpoint folder {directory} does not exist")
        for name in (CONFIG_NAME, WEIGHTS_NAME, "tokenizer_config.json"):
            if not (directory / name).is_file():
                raise CheckpointError(f"checkpoint folder {directory} is incomplete: {name} is missing")
        if not any((directory / name).is_file() for name in ("tokenizer.json", "vocab.txt")):
            raise CheckpointError(f"checkpoint folder {directory} is incomplete: tokenizer.json (or vocab.txt) is missing")
        try:
            values = json.loads((directory / CONFIG_NAME).read_text())
            if not isinstance(values, dict):
                raise ValueError(f"expected a JSON object, got {type(values).__name__}")
            bert_config = values.get("bert_config")
            if not isinstance(bert_config, dict):
                raise ValueError("bert_config is missing (a checkpoint records BERT's architecture)")
            values["bert_config"] = {k: v for k, v in bert_config.items() if k != "transformers_version"}
            config = ModelConfig.from_dict(values)
        except (ValueError, TypeError) as error:
            raise CheckpointError(f"{directory / CONFIG_NAME} is not a valid model config: {error}") from None
        try:
            model = cls(config, tokenizer_path=directory)
        except (ValueError, TypeError, RuntimeError, OSError) as error:
            raise CheckpointError(f"{directory / CONFIG_NAME} describes a model that cannot be built: {error}") from None
        try:
            missing, unexpected = load_model(model, str(directory / WEIGHTS_NAME), strict=False, device=str(device))
        except RuntimeError as error:  # shapes that do not match this config
            first_line = str(error).strip().splitlines()
            detail = next((line.strip() for line in first_line if "size mismatch" in line), first_line[0] if first_line else "")
            raise CheckpointError(f"{directory / WEIGHTS_NAME} does not match {CONFIG_NAME}: {detail}") from None
        except Exception as error:  # safetensors' own header errors
            raise CheckpointError(f"{directory / WEIGHTS_NAME} cannot be read: {error}") from None
        if missing or unexpected:
            parts = []
            if missing:
                parts.append(f"missing tensors: {', '.join(sorted(missing)[:5])}" + (" …" if len(missing) > 5 else ""))
            if unexpected:
                parts.append(
                    f"unexpected tensors: {', '.join(sorted(unexpected)[:5])}" + (" …" if len(unexpected) > 5 else "")
                )
            raise CheckpointError(f"{directory / WEIGHTS_NAME} does not fit the model: {'; '.join(parts)}")
        return model.to(device).eval()
