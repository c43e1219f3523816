"""Generation from an ONNX export with ONNX Runtime, numpy and `tokenizers` alone: no torch.

    python -m multimodal.onnx_run EXPORT_DIR "a large red circle on the left" --output circle.png
    python -m multimodal.onnx_run EXPORT_DIR --caption photo.jpg other.png

The reference for running an export (`python -m multimodal.export`) anywhere: text → image
with DDIM (eta 0) and classifier-free guidance (away from the null condition, or from a negative
prompt's), its noise schedule read from export.json; image
→ text by greedy decoding. It reads and writes pictures, tokenizes and cleans captions with
the same torch-free code as the PyTorch path, so both give the same output for the same
starting noise (numpy draws that noise here, so a seed gives another picture than PyTorch's).
`__main__.py` is the command line.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import onnxruntime
from onnxruntime.capi.onnxruntime_pybind11_state import Fail, InvalidGraph, InvalidProtobuf, NoSuchFile
from tokenizers import Tokenizer

from multimodal.captions import clean_caption
from multimodal.config import SamplingConfig
from multimodal.errors import InvalidInputError
from multimodal.export import FORMAT
from multimodal.images import ImageInput, as_rgb, resize_and_crop
from multimodal.paths import EXPORT_NAME

ONNX_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(int64)": np.int64,
              "tensor(bool)": np.bool_}
NEGATIVE_PROMPTS_FORMAT = 2  # the first export format whose unet_step takes the away condition


def export_again(directory: Path, why: str) -> InvalidInputError:
    """The one message for an export this runner cannot use as it is: only a new export mends it."""
    return InvalidInputError(f"{directory} {why}; export again with python -m multimodal.export")


def damaged(path: Path) -> InvalidInputError:
    """The one message for an export file that is there but cannot be read: only a new export mends it."""
    return InvalidInputError(f"{path} is damaged or cut short; export again with python -m multimodal.export")


class OnnxGenerator:
    """Text → image and image → text from an export folder."""

    def __init__(self, export_dir: str | os.PathLike) -> None:
        self.directory = Path(export_dir)
        spec_path = self.directory / EXPORT_NAME
        try:
            text = spec_path.read_bytes()
        except OSError:
            raise InvalidInputError(
                f"{self.directory} is not an ONNX export (no {EXPORT_NAME}); write one with python -m multimodal.export"
            ) from None
        try:  # not UTF-8, not JSON, or not an export's fields
            self.spec = json.loads(text)
            self.sampler = self.spec["sampler"]
            self.alphas_cumprod = np.asarray(self.sampler["alphas_cumprod"], dtype=np.float64)
            self.format = self.spec.get("format", 1)  # exports before negative prompts have no field
        except (ValueError, KeyError, TypeError):
            raise damaged(spec_path) from None
        if self.format not in range(1, FORMAT + 1):
            raise export_again(self.directory, f"has export format {self.format!r}; this runner reads 1 to {FORMAT}")
        self.tokenizer = Tokenizer.from_file(str(self.directory / self.spec["text"]["tokenizer"]))
        self.tokenizer.enable_truncation(self.spec["text"]["max_length"])
        self.tokenizer.enable_padding(pad_id=self.spec["text"]["pad_id"])  # to the longest prompt
        self.sessions: dict[str, onnxruntime.InferenceSession] = {}

    def session_options(self) -> onnxruntime.SessionOptions:
        """How every graph runs. Threads that sleep while they wait, as the PyTorch CLIs' OpenMP
        threads do: spinning ones stall against any other busy process on a small machine."""
        options = onnxruntime.SessionOptions()
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        return options

    def run(self, graph: str, **inputs: np.ndarray) -> list[np.ndarray]:
        """One graph's outputs (as float32) for named inputs, cast to the types the graph takes;
        each graph is loaded on first use."""
        if graph not in self.sessions:
            path = self.directory / self.spec["graphs"][graph]
            try:
                self.sessions[graph] = onnxruntime.InferenceSession(
                    str(path), self.session_options(), providers=["CPUExecutionProvider"]
                )
            except NoSuchFile:
                raise InvalidInputError(f"{path} is missing; export again with python -m multimodal.export") from None
            except (InvalidProtobuf, InvalidGraph, Fail):
                raise damaged(path) from None
        session = self.sessions[graph]
        feed = {item.name: np.asarray(inputs[item.name], dtype=ONNX_TYPES[item.type]) for item in session.get_inputs()}
        return [output.astype(np.float32) if output.dtype == np.float16 else output for output in session.run(None, feed)]

    # -- text → image ---------------------------------------------------------------------
    def timesteps(self, steps: int) -> np.ndarray:
        """The steps DDIM visits with trailing spacing: the first starts from pure noise (t = T-1)."""
        total = self.sampler["num_train_timesteps"]
        return np.round(np.arange(total, 0, -total / steps)).astype(np.int64) - 1

    def ddim_step(self, prediction: np.ndarray, t: int, x: np.ndarray, steps: int) -> np.ndarray:
        """x at the previous step from the UNet's prediction at step t (DDIM, eta 0)."""
        previous = t - self.sampler["num_train_timesteps"] // steps
        alpha = self.alphas_cumprod[t]
        alpha_previous = self.alphas_cumprod[previous] if previous >= 0 else self.sampler["final_alphas_cumprod"]
        kind = self.sampler["prediction_type"]
        if kind == "epsilon":
            noise, clean = prediction, (x - np.sqrt(1 - alpha) * prediction) / np.sqrt(alpha)
        elif kind == "sample":
            clean, noise = prediction, (x - np.sqrt(alpha) * prediction) / np.sqrt(1 - alpha)
        else:  # v
            clean = np.sqrt(alpha) * x - np.sqrt(1 - alpha) * prediction
            noise = np.sqrt(alpha) * prediction + np.sqrt(1 - alpha) * x
        return (np.sqrt(alpha_previous) * clean + np.sqrt(1 - alpha_previous) * noise).astype(np.float32)

    def text_conditions(self, prompts: Sequence[str], negative_prompts: Sequence[str]) -> dict[str, np.ndarray]:
        """unet_step's condition inputs: the prompts' and what guidance steers away from, the
        negative prompts' (encoded in one batch with the prompts, as PyTorch does) or, where one
        is empty, the null condition (`away_is_null`)."""
        steered = any(text.strip() for text in negative_prompts)
        if steered and self.format < NEGATIVE_PROMPTS_FORMAT:
            raise export_again(self.directory, "was exported before negative prompts (its unet_step steers away from "
                               "no text only)")  # fmt: skip
        encoding = self.tokenizer.encode_batch(list(prompts) + (list(negative_prompts) if steered else []))
        input_ids = np.array([item.ids for item in encoding], dtype=np.int64)
        attention_mask = np.array([item.attention_mask for item in encoding], dtype=np.int64)
        token_states, text_embedding = self.run("text_encoder", input_ids=input_ids, attention_mask=attention_mask)
        n = len(prompts)
        both = {"text_embedding": text_embedding, "token_states": token_states, "attention_mask": attention_mask}
        return {**{name: value[:n] for name, value in both.items()},
                **{f"away_{name}": value[n:] if steered else value for name, value in both.items()},
                "away_is_null": np.array([not text.strip() for text in negative_prompts])}

    def draw(
        self, prompts: Sequence[str], sampling: SamplingConfig | None = None, seed: int | None = None,
        noise: np.ndarray | None = None, negative_prompts: Sequence[str] | None = None,
    ) -> list[np.ndarray]:
        """One picture (H×W×3 uint8) per prompt, denoised from `noise` (B, C, S, S), or from
        standard normal noise drawn by numpy with `seed`. `negative_prompts` (one per prompt; ""
        for none): what guidance steers away from instead of the null condition."""
        sampling = sampling or SamplingConfig()
        negative_prompts = [""] * len(prompts) if negative_prompts is None else list(negative_prompts)
        if len(negative_prompts) != len(prompts):
            raise InvalidInputError(f"{len(negative_prompts)} negative prompts for {len(prompts)} prompts")
        conditions = self.text_conditions(prompts, negative_prompts)
        if noise is None:
            noise = np.random.default_rng(seed).standard_normal((len(prompts), *self.spec["latent_shape"]))
        x = np.asarray(noise, dtype=np.float32)
        steps = sampling.num_inference_steps
        guidance = np.array([sampling.guidance_scale], dtype=np.float32)
        for t in self.timesteps(steps):
            (prediction,) = self.run("unet_step", latents=x, timestep=np.array([t]), guidance_scale=guidance, **conditions)
            x = self.ddim_step(prediction, int(t), x, steps)
        shape = (1, -1, 1, 1)
        latents = x * np.reshape(self.spec["latent_std"], shape) + np.reshape(self.spec["latent_mean"], shape)
        (images,) = self.run("image_decoder", latents=latents.astype(np.float32))
        pixels = np.round((np.clip(images, -1, 1) + 1) * 127.5).astype(np.uint8)
        return list(pixels.transpose(0, 2, 3, 1))

    # -- image → text ---------------------------------------------------------------------
    def pixels(self, images: Sequence[ImageInput]) -> np.ndarray:
        """(B, 3, S, S) in [-1, 1], by the same steps as the PyTorch path's image_transform."""
        size = self.spec["image_size"]
        crop = resize_and_crop(size)
        arrays = [np.asarray(crop(as_rgb(image, min_size=size)), dtype=np.float32) for image in images]
        return ((np.stack(arrays).transpose(0, 3, 1, 2) / 255 - 0.5) / 0.5).astype(np.float32)

    def caption(self, images: Sequence[ImageInput], max_new_tokens: int | None = None) -> list[str]:
        """One greedy caption per image."""
        settings = self.spec["caption"]
        latents, _ = self.run("image_encoder", images=self.pixels(images))
        limit = min(max_new_tokens or settings["max_new_tokens"], settings["max_length"] - 1)
        ids = np.full((len(latents), 1), settings["bos_id"], dtype=np.int64)
        finished = np.zeros(len(latents), dtype=bool)
        for _ in range(limit):
            (logits,) = self.run("caption_step", latents=latents, input_ids=ids)
            next_ids = np.where(finished, settings["pad_id"], logits.argmax(-1))
            ids = np.concatenate([ids, next_ids[:, None]], axis=1)
            finished |= next_ids == settings["eos_id"]
            if finished.all():
                break
        texts = self.tokenizer.decode_batch([row[1:].tolist() for row in ids], skip_special_tokens=True)
        return [clean_caption(text) for text in texts]
