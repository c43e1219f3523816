"""ImageTextGenerator: a trained checkpoint as a tool for people.

    prompts ─► GenerativeMultimodalModel.generate_image_from_text ─► PIL images (and PNG files)
    images  ─► GenerativeMultimodalModel.generate_text_from_image ─► clean captions
    images, texts ─► encode_image / encode_text ─► unit vectors, cosine similarity

The model does the work; this file turns what a person has (strings, files, PIL images,
arrays) into what the model takes, checks arguments with messages a person can act on, and
turns the model's output back into images and readable text.
"""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path
from typing import Any, Sequence, Union

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from multimodal.config import DEFAULT_GUIDANCE_SCALE, DEFAULT_MAX_NEW_TOKENS, DEFAULT_SAMPLER, DEFAULT_STEPS, SAMPLERS
from multimodal.data.transforms import image_transform, load_rgb, to_pil
from multimodal.device import pick_device
from multimodal.models import GenerativeMultimodalModel
from multimodal.models.text_encoder import quiet_transformers

ImageInput = Union[str, os.PathLike, Image.Image, np.ndarray]


class InvalidInputError(ValueError):
    """An argument or input file the generator cannot use; the message says why."""


class PromptTruncatedWarning(UserWarning):
    """A prompt longer than the text encoder takes: only its beginning is used."""


def resolve_checkpoint(checkpoint_dir: str | os.PathLike) -> Path:
    """A checkpoint folder as given, or inside a training run folder its `best/`, else `latest/`."""
    directory = Path(checkpoint_dir)
    if not (directory / "config.json").is_file():
        for name in ("best", "latest"):
            if (directory / name).is_dir():
                return directory / name
    return directory


def slugify(text: str, max_length: int = 60) -> str:
    """A file-name-safe form of a prompt: 'A red circle!' → 'a-red-circle' (Unicode letters stay)."""
    slug = re.sub(r"[^\w]+", "-", text.lower()).strip("-_")
    return slug[:max_length].rstrip("-_") or "prompt"


def save_images(images: list[list[Image.Image]], prompts: Sequence[str], folder: str | os.PathLike) -> list[Path]:
    """Write `images[i][j]` (sample j of prompt i) as `<prompt slug>_<j>.png` into `folder`;
    prompts with the same slug get a numbered suffix so no file overwrites another."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths, used = [], set()
    for prompt, samples in zip(prompts, images):
        slug, n = slugify(prompt), 2
        while slug in used:
            slug, n = f"{slugify(prompt)}-{n}", n + 1
        used.add(slug)
        for j, image in enumerate(samples):
            path = folder / f"{slug}_{j}.png"
            image.save(path, format="PNG")
            paths.append(path)
    return paths


def check_prompts(prompts: Sequence[str]) -> list[str]:
    """The prompts as a list of strings; an empty one is an error (it would draw noise)."""
    if isinstance(prompts, str):
        prompts = [prompts]
    prompts = list(prompts)
    if not prompts:
        raise InvalidInputError("no prompt given")
    for prompt in prompts:
        if not isinstance(prompt, str) or not prompt.strip():
            raise InvalidInputError(f"a prompt must be non-empty text, got {prompt!r}")
    return prompts


def decoding_options(
    num_captions: int,
    temperature: float | None,
    top_k: int | None,
    top_p: float | None,
    repetition_penalty: float | None,
    num_beams: int,
) -> dict[str, Any]:
    """transformers `generate()` options for these choices, and only those that apply: an
    option that does not apply to the chosen strategy makes transformers warn.

    Sampling when temperature, top_k or top_p is given, or several captions are wanted
    without beams (greedy would repeat one caption); greedy or beam search otherwise.
    """
    if num_captions < 1:
        raise InvalidInputError(f"num_captions_per_image must be at least 1, got {num_captions}")
    if num_beams < 1:
        raise InvalidInputError(f"num_beams must be at least 1, got {num_beams}")
    if num_beams > 1 and num_captions > num_beams:
        raise InvalidInputError(f"beam search returns at most num_beams={num_beams} captions, not {num_captions}")
    if temperature is not None and temperature <= 0:
        raise InvalidInputError(f"temperature must be above 0, got {temperature}")
    if top_k is not None and top_k < 1:
        raise InvalidInputError(f"top_k must be at least 1, got {top_k}")
    if top_p is not None and not 0 < top_p <= 1:
        raise InvalidInputError(f"top_p must be in (0, 1], got {top_p}")
    if repetition_penalty is not None and repetition_penalty <= 0:
        raise InvalidInputError(f"repetition_penalty must be above 0, got {repetition_penalty}")

    sample = any(value is not None for value in (temperature, top_k, top_p)) or (num_captions > 1 and num_beams == 1)
    options: dict[str, Any] = {"do_sample": True} if sample else {}
    if num_beams > 1:
        options["num_beams"] = num_beams
    if num_captions > 1:
        options["num_return_sequences"] = num_captions
    given = dict(temperature=temperature, top_k=top_k, top_p=top_p, repetition_penalty=repetition_penalty)
    options.update({name: value for name, value in given.items() if value is not None})
    return options


class ImageTextGenerator:
    """Text → image, image → text and retrieval from one trained checkpoint.

    `checkpoint_dir` is a `save_pretrained` folder or a training run folder (its `best/`,
    else `latest/`, is used). The trainer writes the EMA weights as the checkpoint's
    `model.safetensors`, so when training kept an EMA, generation uses it.
    """

    def __init__(self, checkpoint_dir: str | os.PathLike, device: str | torch.device = "auto") -> None:
        self.device = pick_device(device)
        self.checkpoint_dir = resolve_checkpoint(checkpoint_dir)
        self.model = GenerativeMultimodalModel.from_pretrained(self.checkpoint_dir, device=self.device)
        self.transform = image_transform(self.model.config.image_size)

    # -- text → image ---------------------------------------------------------------------
    def generate_from_text(
        self,
        prompts: Sequence[str],
        num_samples_per_prompt: int = 1,
        use_diffusion: bool = True,
        num_inference_steps: int = DEFAULT_STEPS,
        guidance_scale: float = DEFAULT_GUIDANCE_SCALE,
        seed: int | None = None,
        sampler: str = DEFAULT_SAMPLER,
        eta: float = 0.0,
        guidance_rescale: float = 0.0,
    ) -> list[list[Image.Image]]:
        """`images[i][j]` is sample j of prompt i. All prompts × samples are one batched
        sampling call whose noise comes from one generator seeded with `seed`, so the same
        prompts, options and seed give the same pixels (bit for bit on the CPU).

        guidance_scale: 1 is the conditional prediction alone, 0 the unconditional, above 1
        follows the text more closely. `use_diffusion=False` is the fast preview straight
        from the text embedding (its samples are identical). `eta` is DDIM's noise (0:
        deterministic); `guidance_rescale` in [0, 1] tames over-saturation at high guidance.
        """
        prompts = check_prompts(prompts)
        if num_samples_per_prompt < 1:
            raise InvalidInputError(f"num_samples_per_prompt must be at least 1, got {num_samples_per_prompt}")
        if use_diffusion:
            self._check_sampling(num_inference_steps, guidance_scale, sampler, eta, guidance_rescale)
        self._warn_if_truncated(prompts)
        texts = [prompt for prompt in prompts for _ in range(num_samples_per_prompt)]
        pixels = self.model.generate_image_from_text(
            texts,
            num_inference_steps=num_inference_steps,
            guidance_scale=guidance_scale,
            sampler=sampler,
            seed=seed,
            use_diffusion=use_diffusion,
            eta=eta,
            guidance_rescale=guidance_rescale,
        )
        images = [to_pil(image) for image in pixels]
        n = num_samples_per_prompt
        return [images[i * n : (i + 1) * n] for i in range(len(prompts))]

    def text_to_image(
        self,
        text: str,
        num_inference_steps: int = DEFAULT_STEPS,
        guidance_scale: float = DEFAULT_GUIDANCE_SCALE,
        seed: int | None = None,
        sampler: str = DEFAULT_SAMPLER,
        save_path: str | os.PathLike | None = None,
        **options: Any,
    ) -> Image.Image:
        """One image for one prompt, written as PNG to `save_path` when given; `options` are
        the other arguments of `generate_from_text` (use_diffusion, eta, guidance_rescale)."""
        image = self.generate_from_text(
            [text],
            num_inference_steps=num_inference_steps,
            guidance_scale=guidance_scale,
            seed=seed,
            sampler=sampler,
            **options,
        )[0][0]
        if save_path is not None:
            Path(save_path).parent.mkdir(parents=True, exist_ok=True)
            image.save(save_path, format="PNG")
        return image

    def batch_text_to_image(
        self, texts: Sequence[str], save_dir: str | os.PathLike | None = None, **options: Any
    ) -> list[Image.Image]:
        """One image per prompt, in one batch; with `save_dir`, also written as PNG files."""
        prompts = check_prompts(texts)
        images = self.generate_from_text(prompts, **options)
        if save_dir is not None:
            save_images(images, prompts, save_dir)
        return [samples[0] for samples in images]

    # -- image → text ---------------------------------------------------------------------
    def generate_from_image(
        self,
        image_paths: Sequence[ImageInput],
        num_captions_per_image: int = 1,
        temperature: float | None = None,
        top_k: int | None = None,
        top_p: float | None = None,
        repetition_penalty: float | None = None,
        num_beams: int = 1,
        max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
        seed: int | None = None,
    ) -> list[list[str]]:
        """`captions[i]` are the captions of image i (paths, PIL images or arrays may be mixed).

        Greedy by default; `num_beams` > 1 is beam search; temperature / top_k / top_p (or
        several captions without beams) sample, reproducibly when `seed` is given.
        """
        options = decoding_options(num_captions_per_image, temperature, top_k, top_p, repetition_penalty, num_beams)
        if max_new_tokens < 1:
            raise InvalidInputError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
        pixels = self._pixels(image_paths)
        cuda = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=cuda):  # the caller's random state stays as it was
            if seed is not None:
                torch.manual_seed(seed)
            captions = self.model.generate_text_from_image(pixels, max_new_tokens=max_new_tokens, **options)
        n = num_captions_per_image
        return [captions[i * n : (i + 1) * n] for i in range(len(pixels))]

    def image_to_text(self, image: ImageInput, **options: Any) -> str:
        """One caption for one image; `options` are those of `generate_from_image`."""
        return self.generate_from_image([image], **options)[0][0]

    def batch_image_to_text(self, images: Sequence[ImageInput], **options: Any) -> list[str]:
        """One caption per image, in one batch."""
        return [captions[0] for captions in self.generate_from_image(images, **options)]

    # -- retrieval ------------------------------------------------------------------------
    def embed_images(self, images: Sequence[ImageInput]) -> torch.Tensor:
        """Unit-length image embeddings (n_images, embed_dim), on the CPU."""
        return self.model.encode_image(self._pixels(images)).float().cpu()

    def embed_texts(self, texts: Sequence[str]) -> torch.Tensor:
        """Unit-length text embeddings (n_texts, embed_dim), on the CPU."""
        texts = check_prompts(texts)
        self._warn_if_truncated(texts)
        return self.model.encode_text(texts).float().cpu()

    def similarity(self, images: Sequence[ImageInput], texts: Sequence[str]) -> torch.Tensor:
        """Cosine similarity of every image with every text: (n_images, n_texts), in [-1, 1]."""
        return self.embed_images(images) @ self.embed_texts(texts).T

    # -- helpers --------------------------------------------------------------------------
    def _check_sampling(
        self, steps: int, guidance_scale: float, sampler: str, eta: float, guidance_rescale: float
    ) -> None:
        if not 1 <= steps <= self.model.config.num_timesteps:
            raise InvalidInputError(
                f"num_inference_steps must be between 1 and {self.model.config.num_timesteps}, got {steps}"
            )
        if guidance_scale < 0:
            raise InvalidInputError(f"guidance_scale must be 0 or more, got {guidance_scale}")
        if sampler not in SAMPLERS:
            raise InvalidInputError(f"unknown sampler {sampler!r}; choose from {', '.join(SAMPLERS)}")
        if eta < 0:
            raise InvalidInputError(f"eta must be 0 or more, got {eta}")
        if not 0 <= guidance_rescale <= 1:
            raise InvalidInputError(f"guidance_rescale must be in [0, 1], got {guidance_rescale}")

    def _warn_if_truncated(self, prompts: list[str]) -> None:
        """The tokenizer cuts long prompts silently; say so, since the end of the prompt is lost."""
        limit = self.model.text_encoder.max_length
        with quiet_transformers():  # it would log about BERT's own 512-token limit
            lengths = [len(ids) for ids in self.model.tokenizer(prompts)["input_ids"]]
        for prompt, length in zip(prompts, lengths):
            if length > limit:
                shown = prompt if len(prompt) <= 40 else prompt[:40] + "…"
                warnings.warn(
                    f"prompt {shown!r} is {length} tokens long; only the first {limit} are used",
                    PromptTruncatedWarning,
                    stacklevel=3,
                )

    def _pixels(self, images: Sequence[ImageInput]) -> torch.Tensor:
        """A batch (B, 3, S, S) in [-1, 1]; every image is read and checked before any work starts."""
        if isinstance(images, (str, os.PathLike, Image.Image, np.ndarray)):
            images = [images]
        if len(images) == 0:
            raise InvalidInputError("no image given")
        size = self.model.config.image_size
        pixels = []
        for image in images:
            rgb = as_rgb(image, min_size=size)
            if 0 in rgb.size:
                raise InvalidInputError(f"an image must be at least 1×1 pixels, got {rgb.width}×{rgb.height}")
            pixels.append(self.transform(rgb))
        return torch.stack(pixels).to(self.device)


def as_rgb(image: ImageInput, min_size: int | None = None) -> Image.Image:
    """8-bit RGB from a path, a PIL image (any mode) or an array (H×W or H×W×C; floats in [0, 1]).
    `min_size`: the side the image is resized to next; a much larger JPEG file is decoded at
    a reduced scale (see `load_rgb`)."""
    if isinstance(image, np.ndarray):
        array = image[:, :, 0] if image.ndim == 3 and image.shape[2] == 1 else image
        if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (3, 4)):
            raise InvalidInputError(f"an image array must be H×W or H×W×(1|3|4), got shape {image.shape}")
        scaled = array.clip(0, 1) * 255 if array.dtype.kind == "f" else array.clip(0, 255)
        return load_rgb(Image.fromarray(np.round(scaled).astype(np.uint8)))
    if isinstance(image, Image.Image):
        return load_rgb(image)
    path = Path(image)
    if not path.is_file():
        raise FileNotFoundError(f"no such image file: {path}")
    try:
        return load_rgb(path, min_size=min_size)
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError) as error:
        raise InvalidInputError(f"{path} is not an image that can be read ({error})") from None
