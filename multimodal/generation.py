"""ImageTextGenerator: a trained checkpoint as a tool for people.

    prompts ─► GenerativeMultimodalModel.generate_image_from_text ─► PIL images (and image files)
    picture + prompt ─► the same, from the picture's noised latent ─► the picture redrawn (image_to_image)
    no prompt ─► GenerativeMultimodalModel.generate_unconditional ─► PIL images (generate_unconditional)
    images  ─► GenerativeMultimodalModel.generate_text_from_image ─► clean captions
    images, texts ─► encode_image / encode_text ─► unit vectors, cosine similarity

The model does the work; this file turns what a person has (strings, files, PIL images,
arrays, seeds) into what the model takes, checks arguments with messages a person can act
on, and turns the model's output back into images and readable text. Options take the names
people know from diffusers (`num_inference_steps`, `num_images_per_prompt`, `generator`) and
transformers (every `GenerationConfig` option).
"""

from __future__ import annotations

import math
import os
import warnings
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm
from transformers import GenerationConfig

from multimodal import presets
from multimodal.config import DEFAULT_MAX_NEW_TOKENS, InferenceConfig, SamplingConfig, preset_sampling, suggest
from multimodal.config.options import check_seed
from multimodal.config.sampling import DEFAULT_STRENGTH, IMAGE_BATCH, PROMPT_FIELDS, check_strength
from multimodal.data.transforms import ImageInput, as_rgb, image_transform, to_pil
from multimodal.device import autocast, autocast_dtype, fork_rng, pick_device, precision_warning
from multimodal.errors import InvalidInputError, OutsideTrainingDataWarning, PromptTruncatedWarning, SlowPrecisionWarning
from multimodal.files import check_writable
from multimodal.logs import quiet_transformers
from multimodal.models import GenerativeMultimodalModel
from multimodal.images import image_file_names, image_format, save_image
from multimodal.paths import adapter_base, resolve_checkpoint
from multimodal.provenance import trained_preset

CAPTION_BATCH = 32  # images captioned per forward pass
MAX_BEAMS = 64  # beyond these the decoder's batch outgrows memory before the first token
MAX_CAPTIONS = 64


@dataclass
class ImageOutput:
    """What calling an `ImageTextGenerator` returns, as a diffusers pipeline's output reads."""

    images: list[Image.Image]

# Options of GenerationConfig that are ours to set (or that would break the captions).
_FIXED_GENERATION_OPTIONS = {
    "bos_token_id", "eos_token_id", "pad_token_id", "decoder_start_token_id", "return_dict_in_generate",
    "output_scores", "output_logits", "output_attentions", "output_hidden_states", "transformers_version",
    "_from_model_config", "max_length",
}


def looks_like_shapes_picture(image: Image.Image) -> bool:
    """Whether a picture could come from a built-in set: at least half of it near black (the
    shapes take at most ~30% of the picture; photographs are rarely that dark)."""
    return float((np.asarray(image).max(axis=2) < 32).mean()) >= 0.5


def save_images(
    images: list[list[Image.Image]],
    prompts: Sequence[str],
    folder: str | os.PathLike,
    extension: str = ".png",
    overwrite: bool = False,
) -> list[Path]:
    """Write `images[i][j]` (sample j of prompt i) as `<prompt slug>_<j>.png` into `folder`.
    Every name is checked before the first file is written."""
    folder = Path(folder)
    names = image_file_names(prompts, max(len(samples) for samples in images), extension)
    paths = [folder / name for row, samples in zip(names, images) for name in row[: len(samples)]]
    image_format(paths[0])
    existing = [path for path in paths if path.exists()]
    if existing and not overwrite:
        raise InvalidInputError(f"{existing[0]} already exists; pass overwrite=True (--overwrite) to replace it")
    flat = [image for samples in images for image in samples]
    return [save_image(image, path, overwrite=True) for image, path in zip(flat, paths)]


def needs_captions(model: GenerativeMultimodalModel, what: str) -> None:
    """Refuse `what` where `model` is unconditional (trained on images alone): it never learned
    from captions, so its embedding heads, caption decoder and text condition are as they were
    initialised."""
    if model.config.unconditional:
        raise InvalidInputError(f"{what} needs a model trained on captions; this checkpoint is unconditional "
                                "(trained on images alone): draw without a prompt (generate_unconditional, "
                                "generate_t2i.py --unconditional)")


def check_prompts(prompts: Sequence[str] | str) -> list[str]:
    """The prompts as a list of strings; an empty one is an error (it would draw noise)."""
    if isinstance(prompts, str):
        prompts = [prompts]
    prompts = list(prompts)
    if not prompts:
        raise InvalidInputError("no prompt given")
    for prompt in prompts:
        if not isinstance(prompt, str):
            raise InvalidInputError(f"a prompt must be text, got {type(prompt).__name__} {prompt!r}")
        if not prompt.strip():
            raise InvalidInputError(f"a prompt must not be empty, got {prompt!r}")
    return prompts


def negative_prompts(negative_prompt: Sequence[str] | str | None, num_prompts: int) -> list[str]:
    """One negative prompt per prompt ("" for none) from what a caller gave: none, one for all,
    or a list as long as the prompts."""
    if negative_prompt is None:
        return [""] * num_prompts
    given = [negative_prompt] if isinstance(negative_prompt, str) else list(negative_prompt)
    if not all(isinstance(text, str) for text in given):
        raise InvalidInputError("negative_prompt must be a text or a list of texts")
    if len(given) == 1:
        return given * num_prompts
    if len(given) != num_prompts:
        raise InvalidInputError(f"{len(given)} negative prompts for {num_prompts} prompts: give one, or one each")
    return given


def renamed(name: str, value: Any, alias: str, alias_value: Any, default: Any = None) -> Any:
    """The argument `name`, or its value given under `alias`, the design documents' name for it
    (`value` left at its `default`); both given is an error."""
    if alias_value is None:
        return value
    if value != default:
        raise InvalidInputError(f"{alias} is another name for {name}: give one of them")
    return alias_value


def decoding_options(num_captions: int, options: dict[str, Any]) -> dict[str, Any]:
    """transformers `generate()` options for these choices. `options` are GenerationConfig
    names; the ones for sampling (temperature, top_k, top_p) turn sampling on, and so do several
    captions without beams (greedy would repeat one caption), unless `do_sample` says otherwise."""
    known = sorted(set(GenerationConfig().to_dict()) - _FIXED_GENERATION_OPTIONS)
    for name in options:
        if name not in known:
            hint = " (it is set from the checkpoint)" if name in _FIXED_GENERATION_OPTIONS else suggest(name, known)
            raise InvalidInputError(f"unknown caption option {name!r}{hint}; any GenerationConfig option works")
    options = {name: value for name, value in options.items() if value is not None}
    returned = options.pop("num_return_sequences", num_captions)
    if returned != num_captions and num_captions != 1:
        raise InvalidInputError(f"num_return_sequences={returned} and num_captions_per_image={num_captions} disagree")
    num_captions = returned
    num_beams = options.get("num_beams", 1)
    for name, ok, wanted in (
        ("num_captions_per_image", 1 <= num_captions <= MAX_CAPTIONS, f"from 1 to {MAX_CAPTIONS}"),
        ("num_beams", 1 <= num_beams <= MAX_BEAMS, f"from 1 to {MAX_BEAMS}"),
        # inf passes `> 0`, then samples random words: a temperature or penalty must be finite.
        ("temperature", 0 < options.get("temperature", 1.0) < math.inf, "a finite number above 0"),
        ("top_k", options.get("top_k", 1) >= 1, "at least 1"),
        ("top_p", 0 < options.get("top_p", 1.0) <= 1, "in (0, 1]"),
        ("repetition_penalty", 0 < options.get("repetition_penalty", 1.0) < math.inf, "a finite number above 0"),
        ("max_new_tokens", options.get("max_new_tokens", 1) >= 1, "at least 1"),
    ):
        if not ok:
            value = num_captions if name == "num_captions_per_image" else options[name]
            raise InvalidInputError(f"{name} must be {wanted}, got {value}")
    if num_beams > 1 and num_captions > num_beams:
        raise InvalidInputError(f"beam search returns at most num_beams={num_beams} captions, not {num_captions}")
    sampling_asked = any(name in options for name in ("temperature", "top_k", "top_p"))
    if "do_sample" not in options and (sampling_asked or (num_captions > 1 and num_beams == 1)):
        options["do_sample"] = True
    if num_captions > 1:
        options["num_return_sequences"] = num_captions
    return options


class ImageTextGenerator:
    """Text → image, image → text and retrieval from one trained checkpoint.

    `checkpoint_dir` is a `save_pretrained` folder or a training run folder (its `best/`,
    else `latest/`, is used), or a Hub repo id ("user/name", at `revision`); None looks in
    `checkpoints/`, then `checkpoints/demo/`. The
    trainer writes the EMA weights as the checkpoint's `model.safetensors`, so generation uses
    them. `sampling` sets the text→image defaults (default: those of the preset the checkpoint
    was trained with, multimodal/presets.py: best of 8 for scenes, else `SamplingConfig()`);
    `progress` shows progress bars for long work.
    `adapter` is a LoRA adapter folder (what `train.py --lora-rank` writes) applied on top; with
    no checkpoint named, its base is the one the adapter points to.
    `precision` is the autocast precision of every computation (auto: bf16 on CUDA, fp32 on the
    CPU; see `InferenceConfig`).
    """

    def __init__(
        self,
        checkpoint_dir: str | os.PathLike | None = None,
        device: str | torch.device = "auto",
        sampling: SamplingConfig | None = None,
        progress: bool = False,
        adapter: str | os.PathLike | None = None,
        precision: str = "auto",
        revision: str | None = None,
    ) -> None:
        self.precision = InferenceConfig(precision=precision).precision
        self.device = pick_device(device)
        if checkpoint_dir is None and adapter is not None:
            checkpoint_dir = adapter_base(adapter)
        self.dtype = autocast_dtype(self.precision, self.device, training=False)
        slow = precision_warning(self.precision, self.device)
        if slow:
            warnings.warn(slow, SlowPrecisionWarning, stacklevel=2)
        self.checkpoint_dir = resolve_checkpoint(checkpoint_dir, revision)
        self.model = GenerativeMultimodalModel.from_pretrained(self.checkpoint_dir, device=self.device)
        if adapter is not None:
            from multimodal.adapters import load_adapter  # peft loads only for an adapter

            load_adapter(self.model, adapter, self.checkpoint_dir)
        self.transform = image_transform(self.model.config.image_size)
        self.progress = progress
        self.trained_on = trained_preset(self.checkpoint_dir)  # "shapes", "coco", or None when unrecorded
        self.sampling = sampling or preset_sampling(self.trained_on)
        self._said_outside = False

    # -- text → image ---------------------------------------------------------------------
    def sampling_config(self, sampling: SamplingConfig | None = None, **options: Any) -> SamplingConfig:
        """How this generator draws: `sampling` (default: the generator's own, which is the
        checkpoint's preset's unless it was given one) with `options` (SamplingConfig field
        names) on top. The one place sampling options meet: generation, evaluate.py, the page
        and the command lines all ask it; a misspelt name gets a suggestion."""
        names = SamplingConfig.field_names()
        for name in options:
            if name not in names:
                raise InvalidInputError(
                    f"unknown option {name!r}{suggest(name, names)}; text→image takes {', '.join(names)}, "
                    "num_images_per_prompt, seed, generator, negative_prompt, use_diffusion, init_image and strength"
                )
        return (sampling or self.sampling).replace(**options)

    def generate_from_text(
        self,
        prompts: Sequence[str] | str,
        num_images_per_prompt: int = 1,
        seed: int | None = None,
        generator: torch.Generator | None = None,
        sampling: SamplingConfig | None = None,
        use_diffusion: bool = True,
        negative_prompt: Sequence[str] | str | None = None,
        init_image: ImageInput | None = None,
        strength: float | None = None,
        num_samples_per_prompt: int | None = None,
        **options: Any,
    ) -> list[list[Image.Image]]:
        """`images[i][j]` is image j of prompt i, drawn as `self.sampling_config(sampling,
        **options)` says (options: num_inference_steps, guidance_scale, sampler, eta,
        guidance_rescale, num_candidates: best of N by the caption decoder, caption_guidance and
        caption_guidance_steps: the caption decoder's guidance while drawing); `iter_from_text`
        says how they are drawn. `use_diffusion=False` is the fast preview instead: the latent
        decoded straight from the text embedding, no noise drawn, the same picture every time.
        `negative_prompt` (one for all prompts, or one each): what guidance steers away from
        instead of no text, as in diffusers. `init_image`: image-to-image, that picture redrawn
        toward each prompt (`image_to_image`). `num_samples_per_prompt` is the design documents'
        name for `num_images_per_prompt`.
        """
        prompts = check_prompts(prompts)
        num_images_per_prompt = renamed("num_images_per_prompt", num_images_per_prompt,
                                        "num_samples_per_prompt", num_samples_per_prompt, default=1)
        images = list(self.iter_from_text(prompts, num_images_per_prompt, seed, generator, sampling, use_diffusion,
                                          negative_prompt, init_image, strength, **options))
        n = num_images_per_prompt
        return [images[i * n : (i + 1) * n] for i in range(len(prompts))]

    def iter_from_text(
        self,
        prompts: Sequence[str] | str,
        num_images_per_prompt: int = 1,
        seed: int | None = None,
        generator: torch.Generator | None = None,
        sampling: SamplingConfig | None = None,
        use_diffusion: bool = True,
        negative_prompt: Sequence[str] | str | None = None,
        init_image: ImageInput | None = None,
        strength: float | None = None,
        **options: Any,
    ) -> Iterator[Image.Image]:
        """The images of `generate_from_text` one by one, image j of prompt i as the (i·n + j)-th,
        for a caller that writes each as it comes (memory then holds one batch, however many are
        asked). Arguments are checked at once, before anything is drawn.

        They are drawn `IMAGE_BATCH` at a time, every batch's noise in turn from `generator`, or
        from a new one seeded with `seed`: the same prompts, options and seed give the same pixels
        (bit for bit on the CPU), and with ddim (eta 0) or dpm, which draw noise only at the start,
        the pixels one batch of all would give. ddpm and ddim with eta above 0 draw noise at every
        step, so for more than `IMAGE_BATCH` images theirs depend on the batches, as they do on the
        number of images asked.

        With `init_image` (a path, PIL image or array), every image is that picture redrawn
        toward its prompt, `strength` (default `DEFAULT_STRENGTH`) of the way (`image_to_image`).
        """
        needs_captions(self.model, "drawing for a prompt")
        prompts = check_prompts(prompts)
        sampling = self.sampling_config(sampling, **options)
        if num_images_per_prompt < 1:
            raise InvalidInputError(f"num_images_per_prompt must be at least 1, got {num_images_per_prompt}")
        generator = self._generator(seed, generator)
        init = None
        if init_image is None and strength is not None:
            raise InvalidInputError("strength says how much of init_image to redraw; give init_image too")
        if init_image is not None:
            if not use_diffusion:
                raise InvalidInputError("image-to-image redraws by diffusion; use_diffusion=False does not sample")
            strength = check_strength(DEFAULT_STRENGTH if strength is None else strength)
            init = self._pixels(init_image)
            if len(init) != 1:
                raise InvalidInputError(f"init_image is one picture, got {len(init)}")
        negatives = negative_prompts(negative_prompt, len(prompts))
        self._warn_if_truncated(prompts + [text for text in negatives if text])
        texts = [prompt for prompt in prompts for _ in range(num_images_per_prompt)]
        negatives = [text for text in negatives for _ in range(num_images_per_prompt)]

        def draw(start: int, stop: int, progress: bool) -> torch.Tensor:
            return self.model.generate_image_from_text(
                texts[start:stop], sampling, generator, progress=progress, use_diffusion=use_diffusion,
                negative_prompts=negatives[start:stop], strength=strength,
                init_images=None if init is None else init.expand(stop - start, -1, -1, -1),
            )

        return self._in_batches(len(texts), draw)

    def generate_unconditional(
        self,
        num_images: int = 1,
        seed: int | None = None,
        generator: torch.Generator | None = None,
        sampling: SamplingConfig | None = None,
        **options: Any,
    ) -> list[Image.Image]:
        """`num_images` pictures of no prompt, drawn from the null condition (what the model
        learned for dropped text): what the training set looks like. `options` are the sampler's
        (num_inference_steps, sampler, eta); guidance and the caption decoder's options steer
        toward a prompt and are refused. The same seed gives the same pictures, each its own
        noise; they are drawn as `iter_from_text`'s are, `IMAGE_BATCH` at a time."""
        return list(self.iter_unconditional(num_images, seed, generator, sampling, **options))

    def iter_unconditional(
        self,
        num_images: int = 1,
        seed: int | None = None,
        generator: torch.Generator | None = None,
        sampling: SamplingConfig | None = None,
        **options: Any,
    ) -> Iterator[Image.Image]:
        """The pictures of `generate_unconditional` one by one (arguments checked at once)."""
        steering = [name for name in options if name in PROMPT_FIELDS]
        if steering:
            raise InvalidInputError(f"{', '.join(steering)} steer toward a prompt; unconditional generation has none")
        sampling = self.sampling_config(sampling, **options)
        if num_images < 1:
            raise InvalidInputError(f"num_images must be at least 1, got {num_images}")
        generator = self._generator(seed, generator)
        return self._in_batches(
            num_images, lambda start, stop, progress: self.model.generate_unconditional(stop - start, sampling,
                                                                                         generator, progress))

    def _generator(self, seed: int | None, generator: torch.Generator | None) -> torch.Generator:
        """The caller's generator, or a new one seeded with `seed` (None: a random seed)."""
        if seed is not None and generator is not None:
            raise InvalidInputError("give seed or generator, not both")
        if generator is None:
            generator = torch.Generator()
            generator.manual_seed(check_seed(seed)) if seed is not None else generator.seed()
        return generator

    def _in_batches(self, count: int, draw: Callable[[int, int, bool], torch.Tensor]) -> Iterator[Image.Image]:
        """`count` pictures, `IMAGE_BATCH` at a time: `draw(start, stop, progress)` draws pictures
        start … stop-1 (a generator: it runs only when read)."""
        batches = range(0, count, IMAGE_BATCH)
        several = len(batches) > 1  # one bar over the batches, else the sampler's over its steps
        for start in tqdm(batches, desc="images", unit="batch", disable=not self.progress or not several):
            with self.computing():
                pixels = draw(start, min(start + IMAGE_BATCH, count), self.progress and not several)
            yield from (to_pil(image) for image in pixels)

    def __call__(
        self,
        prompt: Sequence[str] | str,
        negative_prompt: Sequence[str] | str | None = None,
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        num_images_per_prompt: int = 1,
        generator: torch.Generator | None = None,
        **options: Any,
    ) -> "ImageOutput":
        """Pictures for `prompt` the way a diffusers pipeline is called: `.images` is a flat
        list, prompt-major (prompt i's pictures are i·n … i·n+n-1). Unset steps and guidance are
        the checkpoint's own; other options are those of `generate_from_text`."""
        given = {name: value for name, value in (("num_inference_steps", num_inference_steps),
                                                  ("guidance_scale", guidance_scale)) if value is not None}
        images = self.generate_from_text(prompt, num_images_per_prompt, generator=generator,
                                         negative_prompt=negative_prompt, **given, **options)
        return ImageOutput([image for per_prompt in images for image in per_prompt])

    def text_to_image(
        self,
        text: str,
        seed: int | None = None,
        save_path: str | os.PathLike | None = None,
        overwrite: bool = False,
        **options: Any,
    ) -> Image.Image:
        """One image for one prompt, written to `save_path` when given (the extension picks png,
        jpg or webp; an existing file only with `overwrite`); `options` are those of
        `generate_from_text` (num_inference_steps, guidance_scale, sampler, generator, …)."""
        if not isinstance(text, str):
            raise InvalidInputError("text_to_image draws one prompt; for several, use generate_from_text")
        if save_path is not None:  # a bad extension or an unwritable place is refused before the work, not after
            image_format(save_path)
            check_writable(save_path)
        image = self.generate_from_text([text], seed=seed, **options)[0][0]
        if save_path is not None:
            save_image(image, save_path, overwrite)
        return image

    def image_to_image(
        self,
        image: ImageInput,
        prompt: str,
        strength: float = DEFAULT_STRENGTH,
        seed: int | None = None,
        save_path: str | os.PathLike | None = None,
        overwrite: bool = False,
        **options: Any,
    ) -> Image.Image:
        """`image` redrawn toward `prompt` (SDEdit): its latent noised to the step strength·T of
        the schedule, then denoised with the prompt over the last int(steps·strength) steps, as
        diffusers' img2img pipeline does. `strength` in [0, 1]: 0 gives the picture back as the
        autoencoder reconstructs it, 1 ignores it (plain text→image, the same pixels for the same
        seed). `save_path` and `options` as in `text_to_image`."""
        return self.text_to_image(prompt, seed, save_path, overwrite, init_image=image, strength=strength, **options)

    def batch_text_to_image(
        self, texts: Sequence[str], save_dir: str | os.PathLike | None = None, **options: Any
    ) -> list[Image.Image]:
        """One image per prompt, in one batch; with `save_dir`, also written as PNG files."""
        prompts = check_prompts(texts)
        if save_dir is not None:  # one name stands for all: they share the folder
            check_writable(Path(save_dir) / image_file_names(prompts, 1)[0][0])
        images = self.generate_from_text(prompts, **options)
        if save_dir is not None:
            save_images(images, prompts, save_dir)
        return [samples[0] for samples in images]

    # -- image → text ---------------------------------------------------------------------
    def generate_from_image(
        self,
        images: Sequence[ImageInput] | ImageInput | None = None,
        num_captions_per_image: int = 1,
        seed: int | None = None,
        max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
        *,
        image_paths: Sequence[ImageInput] | ImageInput | None = None,
        **generation_options: Any,
    ) -> list[list[str]]:
        """`captions[i]` are the captions of image i (paths, PIL images or arrays may be mixed;
        `image_paths` is the design documents' name for `images`).

        Greedy by default; `generation_options` are transformers' GenerationConfig options:
        `num_beams` > 1 is beam search; temperature / top_k / top_p (or several captions without
        beams) sample, reproducibly when `seed` is given; repetition_penalty,
        no_repeat_ngram_size, … pass through as they are.
        """
        images = renamed("images", images, "image_paths", image_paths)
        needs_captions(self.model, "captioning")
        options = decoding_options(num_captions_per_image, generation_options | {"max_new_tokens": max_new_tokens})
        check_seed(seed)
        num_captions = options.get("num_return_sequences", 1)
        pixels = self._pixels(images)
        captions: list[str] = []
        batches = range(0, len(pixels), CAPTION_BATCH)
        with fork_rng(self.device, seed), self.computing():  # the caller's random state stays as it was
            for start in tqdm(batches, desc="captions", unit="batch", disable=not self.progress or len(batches) < 2):
                captions += self.model.generate_text_from_image(pixels[start : start + CAPTION_BATCH], **options)
        return [captions[i * num_captions : (i + 1) * num_captions] for i in range(len(pixels))]

    def image_to_text(self, image: ImageInput, **options: Any) -> str:
        """One caption for one image; `options` are those of `generate_from_image`."""
        return self.generate_from_image([image], **options)[0][0]

    def batch_image_to_text(self, images: Sequence[ImageInput], **options: Any) -> list[str]:
        """One caption per image, in one call."""
        return [captions[0] for captions in self.generate_from_image(images, **options)]

    # -- retrieval ------------------------------------------------------------------------
    def embed_images(self, images: Sequence[ImageInput]) -> torch.Tensor:
        """Unit-length image embeddings (n_images, embed_dim), on the CPU."""
        needs_captions(self.model, "an image embedding")
        pixels = self._pixels(images)
        with self.computing():
            return self.model.encode_image(pixels).float().cpu()

    def embed_texts(self, texts: Sequence[str]) -> torch.Tensor:
        """Unit-length text embeddings (n_texts, embed_dim), on the CPU."""
        needs_captions(self.model, "a text embedding")
        texts = check_prompts(texts)
        self._warn_if_truncated(texts)
        with self.computing():
            return self.model.encode_text(texts).float().cpu()

    def similarity(self, images: Sequence[ImageInput], texts: Sequence[str]) -> torch.Tensor:
        """Cosine similarity of every image with every text: (n_images, n_texts), in [-1, 1]."""
        return self.embed_images(images) @ self.embed_texts(texts).T

    # -- helpers --------------------------------------------------------------------------
    def computing(self) -> AbstractContextManager:
        """Where the model runs in this generator's precision (evaluate.py measures inside it)."""
        return autocast(self.device, self.dtype)

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

    def _pixels(self, images: Sequence[ImageInput] | ImageInput) -> torch.Tensor:
        """A batch (B, 3, S, S) in [-1, 1]; every image is read and checked before any work starts."""
        if isinstance(images, (str, os.PathLike, Image.Image, np.ndarray)):
            images = [images]
        if images is None or len(images) == 0:
            raise InvalidInputError("no image given")
        size = self.model.config.image_size
        pixels = []
        for image in images:
            rgb = as_rgb(image, min_size=size)
            if 0 in rgb.size:
                raise InvalidInputError(f"an image must be at least 1×1 pixels, got {rgb.width}×{rgb.height}")
            self._say_if_outside_training_data(rgb)
            pixels.append(self.transform(rgb))
        return torch.stack(pixels).to(self.device)

    def _say_if_outside_training_data(self, image: Image.Image) -> None:
        """Once per generator: a checkpoint of a built-in set given a picture unlike them."""
        preset = presets.find(self.trained_on)
        if preset is None or preset.builtin is None or self._said_outside or looks_like_shapes_picture(image):
            return
        self._said_outside = True
        warnings.warn(
            f"{self.checkpoint_dir} was trained on the built-in {self.trained_on} set only "
            f"({preset.builtin.contents}): it describes every picture as such",
            OutsideTrainingDataWarning,
            stacklevel=4,
        )
