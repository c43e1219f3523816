"""GenerativeMultimodalModel: the five parts joined into one model with one total loss.

    image ─► ImageEncoder ─► z (256×7×7) ─► e_img ─┐
    text  ─► TextEncoder  ─► h (tokens)  ─► e_txt ─┴► contrastive
    z ─► ImageDecoder ─► image'                          reconstruction
    the regulariser of z (KL or VQ, when there is one)    latent
    e_txt ─► ImageDecoder.get_latent_from_embedding ─► z  fast_path
    z ─► CaptionDecoder ─► caption tokens                 caption (and log p(caption | image), a judge)
    norm(stop_grad(z)) ─► LatentDiffusion(e_txt, h)      diffusion
    the UNet's predicted clean z ─► CaptionDecoder        consistency (−log p(caption | what it would draw))
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import save_model
from torch import nn

from multimodal import hub
from multimodal.captions import clean_caption
from multimodal.config import ModelConfig, SamplingConfig
from multimodal.config.sampling import DEFAULT_STRENGTH
from multimodal.errors import CheckpointError
from multimodal.losses import ContrastiveLoss
from multimodal.model_card import write_model_card
from multimodal.models.caption_decoder import CaptionDecoder
from multimodal.models.diffusion import CaptionJudge, Condition, DiffusionStep, LatentDiffusion
from multimodal.models.image_decoder import ImageDecoder
from multimodal.models.image_encoder import ImageEncoder
from multimodal.models.text_encoder import TextEncoder
from multimodal.models.weights import load_safetensors
from multimodal.paths import CONFIG_NAME, WEIGHTS_NAME

LOSSES = ("contrastive", "reconstruction", "latent", "fast_path", "caption", "diffusion", "consistency")
# The losses of the ways from text to the latent: with only these asked, the encoders run without gradients.
TEXT_TO_LATENT_LOSSES = ("diffusion", "fast_path", "consistency")
# The losses of the autoencoder alone: they need neither the text nor the embeddings.
AUTOENCODER_LOSSES = ("reconstruction", "latent")
# Tensors newer than some checkpoints: one without them loads with the module's own values (a
# checkpoint from before the caption vocabulary writes every word).
ADDED_TENSORS = ("caption_decoder.lm.writes",)


def read_model_config(path: Path) -> ModelConfig:
    """The model a checkpoint's config.json describes, checked as every ModelConfig is: a file
    that is not one is a CheckpointError naming it and, where one is wrong, the field."""
    try:
        values = json.loads(path.read_text())
        if not isinstance(values, dict):
            raise ValueError(f"expected a JSON object, got {type(values).__name__}")
        bert_config = values.get("bert_config")
        if bert_config is None:
            raise ValueError("bert_config is missing (a checkpoint records BERT's architecture)")
        if isinstance(bert_config, dict):
            values["bert_config"] = {k: v for k, v in bert_config.items() if k != "transformers_version"}
        return ModelConfig.from_dict(values)
    except (ValueError, TypeError) as error:
        raise CheckpointError(f"{path} is not a valid model config: {error}") from None


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
            unk_id=self.tokenizer.unk_token_id,
        )
        self.diffusion = LatentDiffusion(config, context_dim=self.text_encoder.hidden_size)
        self.contrastive = ContrastiveLoss(config.init_logit_scale, config.max_logit_scale)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def latent_diffusion(self) -> LatentDiffusion:
        """`diffusion` under the architecture document's name (the same module, not a copy)."""
        return self.diffusion

    # -- training -------------------------------------------------------------------------
    def set_gradient_checkpointing(self, on: bool) -> None:
        """Trade compute for memory in training: the image encoder's and decoder's stages, BERT's and
        the caption decoder's layers and the UNet's blocks keep only their inputs for the backward
        pass and run again there (models/checkpointing.py). The gradients are the same; nothing of
        it is saved."""
        for part in (self.image_encoder, self.image_decoder, self.text_encoder, self.caption_decoder,
                     self.diffusion.unet):
            part.set_gradient_checkpointing(on)

    def loss_weights(self) -> dict[str, float]:
        """Each loss's weight in the total, from the config: what joint training optimises. A
        loss weighted 0 is left out, so it is neither computed (a 224 px decoder is most of a
        step's time) nor reported."""
        c = self.config
        weights = {
            "contrastive": c.contrastive_weight,
            "reconstruction": c.recon_weight,
            "fast_path": c.fast_path_weight,
            "caption": c.caption_weight,
            "diffusion": c.diffusion_weight,
        }
        if c.latent_regularizer != "none":
            weights["latent"] = c.kl_weight if c.latent_regularizer == "kl" else c.codebook_weight
        return {name: weight for name, weight in weights.items() if weight > 0}

    def forward(
        self,
        images: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        text_states: torch.Tensor | None = None,
        loss_weights: Mapping[str, float] | None = None,
        latents: torch.Tensor | None = None,
        trunk_features: torch.Tensor | None = None,
        negative_input_ids: torch.Tensor | None = None,
        negative_attention_mask: torch.Tensor | None = None,
        negative_text_states: torch.Tensor | None = None,
        negative_valid: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """The weighted total ("loss") and each loss for a batch of matching (image, caption)
        pairs, the contrastive accuracies, the (detached) embeddings for retrieval, the
        regulariser's codebook statistics (VQ) and, with the reconstruction loss, the decoded
        images ("reconstructed", with their gradients, for the autoencoder stage's other losses).

        `loss_weights` names the losses to compute and their weights (default: every loss, with
        the config's weights); a training stage trains a subset. When only the losses of the
        ways from text to latent (diffusion, fast path) are asked, the encoders run without
        gradients. `text_states` are BERT's token states when the
        caller has them cached (frozen BERT); otherwise BERT runs on `input_ids`. Likewise
        `latents` are the image encoder's z when the caller has them cached (frozen encoder), and
        `trunk_features` a frozen pretrained trunk's output (`ImageEncoder.trunk_features`).
        Asked for the autoencoder's losses alone, the model reads no text and makes no embeddings.
        `negative_input_ids` / `negative_attention_mask` (B·K rows, K per caption, in caption
        order; `negative_text_states` when cached) are hard negative captions the contrastive loss
        ranks below each image's own where `negative_valid` (B, K) says (`ContrastiveLoss`).
        """
        weights = dict(self.loss_weights() if loss_weights is None else loss_weights)
        unknown = set(weights) - set(LOSSES)
        if unknown:
            raise ValueError(f"unknown losses {sorted(unknown)}; the model computes {', '.join(LOSSES)}")
        if "latent" in weights and latents is not None:
            raise ValueError("the latent loss needs the images encoded, not cached latents")
        autoencoder_only = set(weights) <= set(AUTOENCODER_LOSSES)
        with torch.set_grad_enabled(torch.is_grad_enabled() and not set(weights) <= set(TEXT_TO_LATENT_LOSSES)):
            z, terms = self.image_encoder.latent(images, trunk_features) if latents is None else (latents, {})
            if not autoencoder_only:
                image_embedding = self.image_encoder.embed(z)
                if text_states is None:
                    text_states = self.text_encoder.token_states(input_ids, attention_mask)
                text_embedding = self.text_encoder.project(text_states, attention_mask)
        self._track_latent_stats(z)

        out: dict[str, torch.Tensor] = {name: value for name, value in terms.items() if name != "latent"}
        if "latent" in weights:
            out["latent"] = terms["latent"]
        if "contrastive" in weights:
            negatives = None
            if negative_input_ids is not None:
                if negative_text_states is None:
                    negative_text_states = self.text_encoder.token_states(negative_input_ids, negative_attention_mask)
                negatives = self.text_encoder.project(negative_text_states, negative_attention_mask)
                negatives = negatives.view(len(text_embedding), -1, negatives.shape[-1])
            contrastive = self.contrastive(image_embedding, text_embedding, negatives, negative_valid)
            out["contrastive"] = contrastive["loss"]
            out["i2t_accuracy"] = contrastive["i2t_accuracy"]
            out["t2i_accuracy"] = contrastive["t2i_accuracy"]
        if "reconstruction" in weights:
            out["reconstructed"] = self.image_decoder.decode_from_latent(z)
            out["reconstruction"] = F.l1_loss(out["reconstructed"].float(), images.float())
        if "fast_path" in weights:
            out["fast_path"] = self.fast_path_loss(z, text_embedding)
        if "caption" in weights:
            out["caption"] = self.caption_decoder(z, input_ids, attention_mask)
        if "diffusion" in weights or "consistency" in weights:
            step = self.diffusion.training_step(z.detach(), text_embedding.detach(), text_states.detach(), attention_mask)
            out["diffusion"] = step.loss
            if "consistency" in weights:
                out["consistency"] = self.consistency_loss(step, input_ids, attention_mask)
        out["loss"] = sum(weights[name] * out[name] for name in weights)
        if not autoencoder_only:
            out["image_embedding"] = image_embedding.detach()
            out["text_embedding"] = text_embedding.detach()
        return out

    def fast_path_loss(self, z: torch.Tensor, text_embedding: torch.Tensor) -> torch.Tensor:
        """MSE, in the normalised latent space, between the latent the fast path predicts from the
        text embedding and the image's own. Neither the embedding nor the target is moved by it."""
        predicted = self.image_decoder.get_latent_from_embedding(text_embedding.detach())
        return F.mse_loss(self.diffusion.normalize(predicted).float(), self.diffusion.normalize(z.detach()).float())

    def consistency_loss(self, step: DiffusionStep, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """−log p(caption | x̂0) per caption token under the caption decoder, where x̂0 is the clean
        latent the UNet's prediction implies: does what the UNet would draw say what the caption
        says? Weighted by ᾱ_t, so low-noise steps (where x̂0 is a picture, not a blur) count most,
        over the rows that saw their caption. The decoder judges and does not learn: it runs in
        eval mode, and the stage that asks this loss does not train it."""
        clean = self.diffusion.denormalize(self.diffusion.predicted_clean(step.noisy, step.prediction, step.timesteps))
        was_training = self.caption_decoder.training
        self.caption_decoder.eval()
        try:
            log_p = self.caption_decoder.log_likelihood(clean, input_ids, attention_mask)
        finally:
            self.caption_decoder.train(was_training)
        weight = self.diffusion.signal_level(step.timesteps) * ~step.dropped
        per_token = log_p / self.caption_tokens(attention_mask)
        return -(weight * per_token).sum() / weight.sum().clamp(min=1e-8)

    def caption_tokens(self, attention_mask: torch.Tensor) -> torch.Tensor:
        """How many tokens of each caption the decoder predicts (after [CLS], within its length)."""
        return attention_mask[:, 1 : self.caption_decoder.max_length].sum(dim=1).clamp(min=1)

    def _track_latent_stats(self, z: torch.Tensor) -> None:
        """In training, move the latent statistics toward this batch's latents."""
        if self.training and self.diffusion.track_latent_stats:
            self.diffusion.update_latent_stats(z.detach())

    def compute_diffusion_loss(
        self,
        image_features: torch.Tensor,
        text_features: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        text_states: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The diffusion loss alone for a batch of (image, text) pairs, the encoders run without
        gradients: to measure the UNet on data of one's own, or to train it alone. (The trainer's
        diffusion stage asks `forward` for this loss and the fast path's together.)

        `image_features`: images (B, 3, image_size, image_size) in [-1, 1], or their latents z
        (B, latent_channels, latent_size, latent_size) when the caller has them. `text_features`:
        token ids (B, L), with their `attention_mask` (default: every token but padding) and BERT's
        `text_states` when cached; or pooled text embeddings (B, embed_dim), read as
        `embedding_condition` says."""
        images, latents = self._images_or_latents(image_features)
        if not text_features.is_floating_point():
            if attention_mask is None:
                attention_mask = (text_features != self.tokenizer.pad_token_id).long()
            return self(images, text_features, attention_mask, text_states, loss_weights={"diffusion": 1.0},
                        latents=latents)["diffusion"]
        if attention_mask is not None or text_states is not None:
            raise ValueError("text embeddings have no tokens: attention_mask and text_states go with token ids")
        with torch.no_grad():
            z = self.image_encoder.encode(images) if latents is None else latents
        self._track_latent_stats(z)
        return self.diffusion.training_step(z, *self.embedding_condition(text_features.detach())).loss

    def _images_or_latents(self, features: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """(images, None) or (None, latents), told apart by their shape."""
        c = self.config
        if features.dim() == 4 and features.shape[1:] == (3, c.image_size, c.image_size):
            return features, None
        if features.dim() == 4 and features.shape[1:] == (c.latent_channels, c.latent_size, c.latent_size):
            return None, features
        raise ValueError(
            f"expected images (B, 3, {c.image_size}, {c.image_size}) or latents (B, {c.latent_channels}, "
            f"{c.latent_size}, {c.latent_size}), got shape {tuple(features.shape)}"
        )

    # -- encoding -------------------------------------------------------------------------
    def text_condition(self, texts: list[str]) -> Condition:
        """(e_txt, token states, attention mask) for a list of prompts."""
        tokens = {k: v.to(self.device) for k, v in self.text_encoder.tokenize(texts).items()}
        states, embedding = self.text_encoder(**tokens)
        return embedding, states, tokens["attention_mask"]

    def embedding_condition(self, embeddings: torch.Tensor) -> Condition:
        """The condition of pooled embeddings (B, embed_dim) given without their text. The UNet
        reads a prompt twice: its pooled embedding through FiLM, and BERT's token states through
        cross-attention. An embedding has no token states, so cross-attention sees the learned
        null token, as for dropped text, and only FiLM carries the embedding: the UNet trained on
        a prompt's both parts, so it follows an embedding alone less closely than the prompt itself.
        The fast path (`use_diffusion=False`) is the way trained for embeddings."""
        self._check_embeddings(embeddings)
        _, context, mask = self.diffusion.null_condition(len(embeddings), 1)
        return embeddings.to(self.device, context.dtype), context, mask

    def _check_embeddings(self, embeddings: torch.Tensor) -> None:
        """Pooled embeddings in place of texts or images must be (B, embed_dim)."""
        if embeddings.dim() != 2 or embeddings.shape[1] != self.config.embed_dim:
            raise ValueError(f"expected embeddings (B, {self.config.embed_dim}), got shape {tuple(embeddings.shape)}")

    @torch.no_grad()
    def encode_text(self, texts: list[str]) -> torch.Tensor:
        """Unit-norm text embeddings (B, embed_dim)."""
        return self.text_condition(texts)[0]

    @torch.no_grad()
    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """Unit-norm image embeddings (B, embed_dim) for images in [-1, 1]."""
        return self.image_encoder(images.to(self.device))[1]

    @torch.no_grad()
    def encode_latent(self, images: torch.Tensor) -> torch.Tensor:
        """The spatial latent z (B, C, 7, 7) of images in [-1, 1]: what the decoders read."""
        return self.image_encoder.encode(images.to(self.device))

    @torch.no_grad()
    def caption_log_likelihood(self, latents: torch.Tensor, texts: list[str]) -> torch.Tensor:
        """log p(texts[i] | image i) under the caption decoder (B,), for image latents z
        (`encode_latent`): how well a caption describes an image, as the model's own judge
        (higher: better). Generation's best of N and evaluation's reranking ask it."""
        if len(latents) != len(texts):
            raise ValueError(f"{len(latents)} latents but {len(texts)} texts: one text per image")
        tokens = {k: v.to(self.device) for k, v in self.text_encoder.tokenize(texts).items()}
        return self.caption_decoder.log_likelihood(latents.to(self.device), tokens["input_ids"], tokens["attention_mask"])

    def caption_judge(self, texts: list[str]) -> CaptionJudge:
        """log p(texts[i] | z_i) per caption token, as a function of latents z (one per text) that
        keeps the gradient: what caption guidance climbs."""
        tokens = {k: v.to(self.device) for k, v in self.text_encoder.tokenize(texts).items()}
        count = self.caption_tokens(tokens["attention_mask"])
        return lambda z: self.caption_decoder.log_likelihood(z, tokens["input_ids"], tokens["attention_mask"]) / count

    # -- generation -----------------------------------------------------------------------
    @torch.no_grad()
    def generate_image_from_text(
        self,
        texts: list[str] | torch.Tensor,
        sampling: SamplingConfig | None = None,
        generator: torch.Generator | None = None,
        progress: bool = False,
        use_diffusion: bool = True,
        negative_prompts: list[str] | None = None,
        init_images: torch.Tensor | None = None,
        strength: float | None = None,
        **sampling_options: Any,
    ) -> torch.Tensor:
        """Images (B, 3, H, W) in [-1, 1], one per text, drawn as `sampling` says (default:
        `SamplingConfig()`) with `sampling_options` (its field names: num_inference_steps=50, …)
        on top; the starting noise comes from `generator` (a CPU generator; None: torch's global
        one). With `use_diffusion=False`, the fast preview: the latent comes straight from the text
        embedding, no noise is drawn and `sampling` is not read. With `num_candidates` N > 1 (and
        diffusion), N pictures are drawn per text (text i's are rows i·N … i·N+N-1 of one batch)
        and the one whose caption likelihood of the text is highest is kept (DALL·E's reranking,
        judged by our own caption decoder). With `caption_guidance` > 0, the same decoder steers
        each picture toward its text as it is drawn. `progress`: a bar over the steps.
        `negative_prompts` (one per text; "" for none): what guidance steers away from instead of
        the null condition, as diffusers' negative prompts do.

        `texts` may be text embeddings (B, embed_dim) instead of strings: the fast preview decodes
        `image_decoder.get_latent_from_embedding` of them, diffusion reads them as
        `embedding_condition` says; with no words, nothing judges (best of N, caption guidance)
        or steers away (negative prompts). `init_images` (B, 3, H, W) in [-1, 1], one per text:
        image-to-image (SDEdit), each picture's latent noised to the step `strength`·T
        (default `DEFAULT_STRENGTH`) and denoised toward its text (`LatentDiffusion.sample`)."""
        sampling = (sampling or SamplingConfig()).replace(**sampling_options)
        if init_images is None and strength is not None:
            raise ValueError("strength says how much of init_images to redraw; give init_images too")
        if init_images is not None and not use_diffusion:
            raise ValueError("image-to-image denoises by diffusion; use_diffusion=False does not sample")
        if isinstance(texts, torch.Tensor):
            judged = [name for name, used in (("num_candidates", sampling.num_candidates > 1),
                                              ("caption_guidance", sampling.caption_guidance > 0),
                                              ("negative_prompts", any(negative_prompts or ()))) if used]
            if judged and use_diffusion:
                raise ValueError(f"{', '.join(judged)} judge or steer by a prompt's words; embeddings have none")
            n, drawn, condition, negative = 1, None, self.embedding_condition(texts), None
        else:
            n = sampling.num_candidates if use_diffusion else 1  # the preview draws no noise: one picture
            drawn = [text for text in texts for _ in range(n)]
            condition, negative = self._prompt_conditions(drawn, negative_prompts, n, use_diffusion)
        if not use_diffusion:
            latents = self.image_decoder.get_latent_from_embedding(condition[0])
            return self.image_decoder.decode_from_latent(latents).clamp(-1, 1)
        init = None
        if init_images is not None:
            if len(init_images) != len(texts):
                raise ValueError(f"{len(init_images)} init images for {len(texts)} texts: one each")
            init = self.encode_latent(init_images).repeat_interleave(n, dim=0)
        judge = self.caption_judge(drawn) if drawn is not None and sampling.caption_guidance > 0 else None
        z = self.diffusion.sample(condition, sampling, generator, progress, negative=negative, judge=judge, init=init,
                                  strength=DEFAULT_STRENGTH if strength is None else strength)
        images = self.image_decoder.decode_from_latent(z).clamp(-1, 1)
        if n == 1:
            return images
        likelihood = self.caption_log_likelihood(self.encode_latent(images), drawn).view(len(texts), n)
        best = likelihood.argmax(dim=1) + torch.arange(len(texts), device=likelihood.device) * n
        return images[best]

    def _prompt_conditions(self, drawn: list[str], negative_prompts: list[str] | None, n: int,
                           use_diffusion: bool) -> tuple[Condition, Condition | None]:
        """The condition of each text drawn, and of its negative prompt (None without any), in one
        pass of the text encoder; each of the `len(drawn) / n` negative prompts stands for n rows."""
        if negative_prompts is None or not any(negative_prompts) or not use_diffusion:
            return self.text_condition(drawn), None
        if len(negative_prompts) * n != len(drawn):
            raise ValueError(f"{len(negative_prompts)} negative prompts for {len(drawn) // n} prompts")
        negatives = [text for text in negative_prompts for _ in range(n)]
        condition, negative = zip(*(part.chunk(2) for part in self.text_condition(drawn + negatives)))
        return condition, self._null_where_empty(negative, negatives)

    @torch.no_grad()
    def generate_unconditional(
        self,
        num_images: int,
        sampling: SamplingConfig | None = None,
        generator: torch.Generator | None = None,
        progress: bool = False,
        **sampling_options: Any,
    ) -> torch.Tensor:
        """Images (num_images, 3, H, W) in [-1, 1] drawn from the null condition, what the UNet
        learned for dropped text: pictures like the training set's, of no prompt. Of `sampling`
        only the sampler, its steps and eta are read: guidance would steer toward the very
        condition it steers from, and the caption decoder has no prompt to judge by. The noise
        comes from `generator` as in `generate_image_from_text`."""
        if num_images < 1:
            raise ValueError(f"num_images must be at least 1, got {num_images}")
        sampling = (sampling or SamplingConfig()).replace(**sampling_options).replace(guidance_scale=1.0)
        z = self.diffusion.sample(self.diffusion.null_condition(num_images, 1), sampling, generator, progress)
        return self.image_decoder.decode_from_latent(z).clamp(-1, 1)

    def _null_where_empty(self, condition: Condition, texts: list[str]) -> Condition:
        """`condition` with the rows whose text is empty replaced by the null condition."""
        empty = torch.tensor([not text.strip() for text in texts], device=condition[0].device)
        return self.diffusion.drop_condition(*condition, empty)

    @torch.no_grad()
    def generate_text_from_image(self, images: torch.Tensor, max_new_tokens: int = 30, **decoding) -> list[str]:
        """Captions for images (B, 3, H, W) in [-1, 1], or for image embeddings (B, embed_dim);
        `decoding` takes transformers' GenerationConfig names (num_beams, do_sample, temperature,
        top_k, top_p, repetition_penalty, num_return_sequences). With several return sequences, an
        image's captions are adjacent. Captions come back as plain text: no special tokens, no '##'
        pieces, normal spacing.

        The caption decoder reads the spatial latent z, which a pooled embedding no longer holds
        (`docs/DESIGN.md`: why the two are apart), so an embedding goes to a latent first by the
        fast path, `image_decoder.get_latent_from_embedding` (trained on text embeddings, which
        share the embeddings' space): its caption is that of the picture the fast path draws from
        it, coarser than an image's own."""
        if images.dim() == 2:
            self._check_embeddings(images)
            latents = self.image_decoder.get_latent_from_embedding(images.to(self.device))
        elif images.dim() == 4:
            latents = self.encode_latent(images)
        else:
            raise ValueError(f"expected images (B, 3, H, W) or embeddings (B, {self.config.embed_dim}), "
                             f"got shape {tuple(images.shape)}")
        return self.generate_text_from_latent(latents, max_new_tokens, **decoding)

    @torch.no_grad()
    def generate_text_from_latent(self, latents: torch.Tensor, max_new_tokens: int = 30, **decoding) -> list[str]:
        """`generate_text_from_image` for image latents z (`encode_latent`), when the caller has them."""
        ids = self.caption_decoder.generate(latents.to(self.device), max_new_tokens=max_new_tokens, **decoding)
        return [clean_caption(text) for text in self.tokenizer.batch_decode(ids, skip_special_tokens=True)]

    # -- checkpoints ----------------------------------------------------------------------
    def push_to_hub(self, repo_id: str, *, private: bool | None = None, token: str | None = None,
                    revision: str | None = None, commit_message: str = "Upload checkpoint") -> str:
        """Save this model and commit it to the Hub repo `repo_id` (created if missing); the
        commit's URL. `from_pretrained(repo_id)` loads it back."""
        import tempfile

        with tempfile.TemporaryDirectory() as folder:
            self.save_pretrained(folder)
            return hub.upload(folder, repo_id, revision=revision, private=private, token=token,
                              commit_message=commit_message)

    def save_pretrained(self, directory: str | Path) -> None:
        """Write config.json, model.safetensors, the tokenizer files and a model card (README.md)
        into `directory`. The config records BERT's architecture, so loading never needs the
        original weights."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        config = self.config.to_dict()
        config["bert_config"] = self.text_encoder.bert.config.to_diff_dict()
        config["text_encoder"] = self.config.text_encoder
        (directory / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n")
        save_model(self, str(directory / WEIGHTS_NAME))
        self.tokenizer.save_pretrained(str(directory))
        write_model_card(directory)

    @classmethod
    def from_pretrained(cls, directory: str | Path, device: str | torch.device = "cpu",
                        revision: str | None = None) -> "GenerativeMultimodalModel":
        """Load a `save_pretrained` folder, or a Hub repo's ("user/name", at `revision`; see
        `multimodal.hub`). Only JSON and safetensors are read: nothing is unpickled."""
        if hub.is_repo_id(directory):
            directory = hub.download(str(directory), revision)
        directory = Path(directory)
        if not directory.is_dir():
            if directory.exists():
                raise CheckpointError(f"checkpoint {directory} is a file; give the folder that holds {CONFIG_NAME}")
            raise CheckpointError(f"checkpoint folder {directory} does not exist")
        for name in (CONFIG_NAME, WEIGHTS_NAME, "tokenizer_config.json"):
            if not (directory / name).is_file():
                problem = "is not a file" if (directory / name).exists() else "is missing"
                raise CheckpointError(f"checkpoint folder {directory} is incomplete: {name} {problem}")
        if not any((directory / name).is_file() for name in ("tokenizer.json", "vocab.txt")):
            raise CheckpointError(f"checkpoint folder {directory} is incomplete: tokenizer.json (or vocab.txt) is missing")
        config = read_model_config(directory / CONFIG_NAME)
        try:
            model = cls(config, tokenizer_path=directory)
        except CheckpointError:  # the tokenizer's files, which name themselves
            raise
        except (ValueError, TypeError, RuntimeError, OSError, ArithmeticError) as error:
            raise CheckpointError(f"{directory / CONFIG_NAME} describes a model that cannot be built: {error}") from None
        load_safetensors(model, directory / WEIGHTS_NAME, device, may_lack=ADDED_TENSORS)
        return model.to(device).eval()
