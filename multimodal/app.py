"""The web demo: a trained checkpoint in three tabs of a Gradio page.

    text → image   prompt, steps, guidance, sampler, seed, number of images, the fast preview, best of N
    image → text   an uploaded or example picture; greedy, beams or sampling; several captions
    search         a query ranks the validation images; an uploaded picture ranks their captions

`ImageTextGenerator` does the work; this file turns the page's inputs into its arguments and
bad input into a message in the page (the server carries on). Every model call shares one
queue slot (`concurrency_id`), so requests wait their turn instead of fighting over the CPU.
Nothing leaves the machine: analytics are off and the page uses the system's fonts.
"""

from __future__ import annotations

import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # before gradio loads: no calls home

import logging  # noqa: E402
import math  # noqa: E402
import warnings  # noqa: E402
from contextlib import contextmanager  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any, Iterator  # noqa: E402

import gradio as gr  # noqa: E402
import pydantic  # noqa: E402
import torch  # noqa: E402
from gradio.exceptions import InvalidPathError  # noqa: E402
from gradio.utils import is_in_or_equal  # noqa: E402
from gradio_client.utils import is_http_url_like  # noqa: E402
from PIL import Image, ImageOps, UnidentifiedImageError  # noqa: E402

from multimodal.config import SAMPLERS, ServeConfig  # noqa: E402
from multimodal.config.options import SEED_LIMIT  # noqa: E402
from multimodal.data import CaptionDataset, open_split  # noqa: E402
from multimodal.data.transforms import load_rgb  # noqa: E402
from multimodal.errors import InvalidInputError, OutsideTrainingDataWarning, PromptTruncatedWarning  # noqa: E402
from multimodal.generation import ImageTextGenerator, needs_captions  # noqa: E402
from multimodal.paths import is_shard_spec  # noqa: E402
from multimodal.provenance import trained_data  # noqa: E402

# System fonts only: gradio's default theme would fetch its fonts, and a demo must work offline.
THEME = gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"],
                          font_mono=["ui-monospace", "Consolas", "monospace"])
MODEL = "model"  # the queue slot every model call shares
DECODINGS = ("greedy", "beams", "sampling")
MAX_PROMPT_CHARACTERS = 1000  # far past what the text encoder reads (its tokens are cut anyway)
NUM_EXAMPLES = 6
NUM_RESULTS = 12  # search results shown
MAX_CANDIDATES = 8  # most pictures drawn per image asked (best of N): each is a whole drawing
EMBED_BATCH = 64
MAX_SEED = SEED_LIMIT - 1  # the seeds every part takes (multimodal/config/options.py)
NOT_UPLOADED = "Upload the picture to this page first: the page reads no other file of the server."
NOT_FETCHED = "The page fetches nothing from the web: download the picture, then upload the file."
log = logging.getLogger(__name__)


def refuse(message: str) -> gr.Error:
    """A message for the visitor, shown in the page; the visitor's mistake is not the server's
    error, so it stays out of the server's log."""
    return gr.Error(message, print_exception=False)


def refuse_probe(message: str, what: str) -> gr.Error:
    """`refuse`, for what the page's own browser never sends (a server path, an address to
    fetch): someone is trying the server, so its log gets one line about it (no traceback)."""
    log.warning("multimodal.app: refused %s", what)
    return refuse(message)


def number_sent(payload: Any, label: str) -> float:
    """A number box's value as a visitor sent it, or a gr.Error naming the box: gradio's own
    checks let NaN through (it compares false with any bound) and fail with a traceback on
    infinity (where it rounds) or on text."""
    if isinstance(payload, bool) or not isinstance(payload, (int, float)) or not math.isfinite(payload):
        raise refuse(f"{label.split(' (')[0]} must be a finite number, got {payload!r}.")
    return payload


class Slider(gr.Slider):
    """gr.Slider that refuses, in the page, what is no number."""

    is_template = True  # drawn in the browser as a plain gr.Slider

    def preprocess(self, payload: Any) -> float:
        return super().preprocess(number_sent(payload, self.label))


class Number(gr.Number):
    """gr.Number that refuses, in the page, what is no number; empty stays empty (a random seed)."""

    is_template = True  # drawn in the browser as a plain gr.Number

    def preprocess(self, payload: Any) -> float | int | None:
        return None if payload is None else super().preprocess(number_sent(payload, self.label))


class Textbox(gr.Textbox):
    """gr.Textbox that refuses, in the page, what is no text: gradio passes null on (the handler
    then fails) and turns a list or a number into its Python spelling."""

    is_template = True  # drawn in the browser as a plain gr.Textbox

    def preprocess(self, payload: Any) -> str:
        if not isinstance(payload, str):
            raise refuse(f"{self.label.split(' (')[0]} must be text, got {str(payload)[:40]}.")
        return payload


def uploaded(path: str, upload_folder: str) -> str:
    """`path` if it names a file uploaded to the page, else a gr.Error: an address gradio would
    download, or any other file of the server (gradio checks only the entries marked as files)."""
    if is_http_url_like(path):
        raise refuse_probe(NOT_FETCHED, f"an address sent as a picture: {path[:200]}")
    if not is_in_or_equal(path, upload_folder):
        raise refuse_probe(NOT_UPLOADED, f"a path sent as a picture: {path[:200]}")
    return path


class UploadedImage(gr.Image):
    """gr.Image whose upload reaches the handler as the file gradio stored, unopened: a file that
    is not a picture then gets our message instead of PIL's error from inside gradio. Only
    uploads: a visitor's path or address is refused before gradio would copy or fetch it."""

    is_template = True  # drawn in the browser as a plain gr.Image

    async def async_move_resource_to_block_cache(self, url_or_file_path: str | Path | None) -> str | None:
        if url_or_file_path is not None:
            uploaded(str(url_or_file_path), self.GRADIO_CACHE)
        return await super().async_move_resource_to_block_cache(url_or_file_path)

    def preprocess(self, payload: Any) -> str | None:
        return None if payload is None or payload.path is None else uploaded(payload.path, self.GRADIO_CACHE)


class Page(gr.Blocks):
    """gr.Blocks whose reading of a request answers what gradio refuses in it (a value out of
    bounds, a file the visitor names instead of uploading, a file entry that is none) with a
    message, as the handlers answer bad input, and no traceback in the log."""

    def validate_inputs(self, block_fn: Any, inputs: list[Any]) -> None:
        """A call with too few or too many values (gradio would fail with a traceback, or ignore extras)."""
        if len(inputs) != len(block_fn.inputs):
            names = ", ".join(str(getattr(block, "label", None) or block).split(" (")[0] for block in block_fn.inputs)
            raise refuse(f"{block_fn.name} takes {len(block_fn.inputs)} values ({names}), got {len(inputs)}.")

    async def preprocess_data(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return await super().preprocess_data(*args, **kwargs)
        except gr.Error as error:  # gradio's own (a bound, a choice) would print a traceback
            raise (refuse(error.message) if error.print_exception else error) from None
        except InvalidPathError as error:
            raise refuse_probe(NOT_UPLOADED, str(error)) from None
        except pydantic.ValidationError as error:  # only file entries have a model to check against
            raise refuse_probe(NOT_UPLOADED, f"a picture that is no file entry: {error.errors()[0]['msg']}") from None


def read_upload(path: str | None, max_megapixels: float) -> Image.Image:
    """The visitor's picture as RGB; a missing, unreadable, cut-short or too large file is a
    gr.Error that says so (without the server's file names)."""
    if not path:
        raise refuse("Upload a picture (or pick an example) first.")
    try:
        with Image.open(path) as image:
            size = image.size
            if size[0] * size[1] <= max_megapixels * 1e6:
                image.load()
                return load_rgb(ImageOps.exif_transpose(image))
    except Image.DecompressionBombError:
        size = None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        raise refuse("That file is not a picture that can be read, or it is cut short: upload a PNG, JPEG or "
                     "WebP image.") from None
    shown = f"{size[0]}×{size[1]} pixels ({size[0] * size[1] / 1e6:.0f} megapixels)" if size else "too large"
    raise refuse(f"That picture is {shown}; the limit is {max_megapixels:g} megapixels.")


@contextmanager
def page_messages() -> Iterator[None]:
    """Bad input → a gr.Error, shown in the page; our warnings (a prompt cut short, a picture
    unlike the training data) → gr.Warning."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("ignore")
        warnings.simplefilter("always", PromptTruncatedWarning)
        warnings.simplefilter("always", OutsideTrainingDataWarning)
        try:
            yield
        except InvalidInputError as error:
            raise refuse(str(error)) from None
    for warning in caught:
        gr.Warning(str(warning.message))


def seed_of(value: float | None) -> int | None:
    """A seed box's value (gradio keeps it whole, from 0 to MAX_SEED): empty means a fresh random seed."""
    return None if value is None else int(value)


@dataclass
class ValidationSet:
    """The checkpoint's validation images with their embeddings, and its distinct captions with
    theirs: what the search ranks and where the examples come from."""

    paths: list[str]
    captions: list[list[str]]  # each image's captions
    image_embeddings: torch.Tensor
    texts: list[str]  # distinct captions
    text_embeddings: torch.Tensor

    @classmethod
    def embed(cls, generator: ImageTextGenerator, dataset: CaptionDataset, limit: int) -> "ValidationSet":
        paths, captions = dataset.paths[:limit], list(dataset.references.values())[:limit]
        texts = list(dict.fromkeys(caption for image in captions for caption in image))
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            images = torch.cat([generator.embed_images(paths[i : i + EMBED_BATCH])
                                for i in range(0, len(paths), EMBED_BATCH)])
            words = torch.cat([generator.embed_texts(texts[i : i + EMBED_BATCH])
                               for i in range(0, len(texts), EMBED_BATCH)])
        return cls(paths, captions, images, texts, words)

    def spread(self, items: list, count: int = NUM_EXAMPLES) -> list:
        """Up to `count` items from all over `items` (neighbours are alike): a stride of 77 walks
        through the shapes set's sizes, colours, shapes and positions alike."""
        return list(dict.fromkeys(items[(i * 77) % len(items)] for i in range(min(count, len(items)))))


class Demo:
    """The page's handlers around one generator. Each checks its input and answers a mistake
    with a message in the page; the next request works as if nothing happened. (The page's boxes
    keep numbers finite and within their bounds, gradio keeps choices among the choices.)"""

    def __init__(self, generator: ImageTextGenerator, config: ServeConfig, validation: ValidationSet | None,
                 seed: int = 0, no_search: str = "") -> None:
        self.generator = generator
        self.config = config
        self.validation = validation
        self.seed = seed
        self.no_search = no_search  # why the search tab has nothing to rank, when it has not

    @classmethod
    def load(cls, checkpoint: str | os.PathLike, config: ServeConfig, device: str = "auto",
             seed: int | None = None) -> "Demo":
        """The checkpoint, and the validation split of its data set (--data-dir, else the one it
        was trained on) when that is on this machine."""
        generator = ImageTextGenerator(checkpoint, device=device)
        needs_captions(generator.model, "the web demo")  # every tab reads or writes text
        # Read as training read it (layout, columns, validation fraction), unless --data-dir says otherwise.
        data_dir, options = (Path(config.data_dir), {}) if config.data_dir else trained_data(generator.checkpoint_dir)
        if is_shard_spec(data_dir):
            reason = f"No search and no examples: {data_dir} streams WebDataset shards (convert it to an image folder)."
            return cls(generator, config, None, seed or 0, reason)
        if not data_dir.is_dir():
            reason = f"No search and no examples: the data set {data_dir} is not on this machine (pass --data-dir)."
            return cls(generator, config, None, seed or 0, reason)
        dataset = open_split(data_dir, "val", generator.model.config.image_size, **options)
        return cls(generator, config, ValidationSet.embed(generator, dataset, config.search_images), seed or 0)

    # -- the handlers ---------------------------------------------------------------------
    def text_to_image(self, prompt: str, steps: float, guidance: float, sampler: str, seed: float | None,
                      count: float, preview: bool, candidates: float = 1, negative: str = "") -> list[Image.Image]:
        """The pictures for a prompt; like steps and guidance, the candidates and the negative
        prompt only count with diffusion."""
        if len(prompt or "") > MAX_PROMPT_CHARACTERS or len(negative or "") > MAX_PROMPT_CHARACTERS:
            raise refuse(f"A prompt of at most {MAX_PROMPT_CHARACTERS} characters, please.")
        with page_messages():
            # The sliders on top of the checkpoint's own defaults (its preset's), as the command lines do.
            return self.generator.generate_from_text(
                prompt, num_images_per_prompt=int(count), seed=seed_of(seed), use_diffusion=not preview,
                num_inference_steps=int(steps), guidance_scale=float(guidance), sampler=sampler,
                num_candidates=1 if preview else int(candidates), negative_prompt=negative or None,
            )[0]

    def image_to_text(self, image: str | None, decoding: str, count: float, beams: float, temperature: float,
                      top_p: float, seed: float | None) -> str:
        picture = read_upload(image, self.config.max_megapixels)
        options: dict[str, Any] = {
            "greedy": {}, "beams": {"num_beams": int(beams)},
            "sampling": {"do_sample": True, "temperature": temperature, "top_p": top_p, "seed": seed_of(seed)},
        }.get(decoding, None)
        if options is None:
            raise refuse(f"Choose a decoding: {', '.join(DECODINGS)}.")
        if decoding == "greedy" and count > 1:
            raise refuse("Greedy decoding writes one caption: choose beams or sampling for several.")
        with page_messages():
            captions = self.generator.generate_from_image(picture, num_captions_per_image=int(count), **options)[0]
        return "\n".join(captions)

    def search_images(self, query: str) -> list[tuple[Image.Image, str]]:
        """The validation images most like the query, with their similarity and first caption."""
        validation = self._validation()
        if len(query or "") > MAX_PROMPT_CHARACTERS:
            raise refuse(f"A query of at most {MAX_PROMPT_CHARACTERS} characters, please.")
        with page_messages():
            scores = (self.generator.embed_texts([query]) @ validation.image_embeddings.T)[0]
        best = scores.topk(min(NUM_RESULTS, len(scores)))
        results = []
        for score, index in zip(best.values.tolist(), best.indices.tolist()):
            picture = load_rgb(validation.paths[index])
            picture.thumbnail((256, 256))
            results.append((picture, f"{score:.3f} · {validation.captions[index][0]}"))
        return results

    def search_captions(self, image: str | None) -> list[list[Any]]:
        """The validation captions most like the uploaded picture, with their similarity."""
        validation = self._validation()
        picture = read_upload(image, self.config.max_megapixels)
        with page_messages():
            scores = (self.generator.embed_images([picture]) @ validation.text_embeddings.T)[0]
        best = scores.topk(min(NUM_RESULTS, len(scores)))
        return [[validation.texts[i], round(s, 3)] for s, i in zip(best.values.tolist(), best.indices.tolist())]

    def _validation(self) -> ValidationSet:
        if self.validation is None:
            raise refuse(self.no_search)
        return self.validation


def build_page(demo: Demo) -> gr.Blocks:
    """The three tabs, wired to `demo`'s handlers, with a queue."""
    defaults, config, validation = demo.generator.sampling, demo.config, demo.validation
    prompts = validation.spread(validation.texts) if validation else []
    pictures = validation.spread(validation.paths) if validation else []
    run = dict(concurrency_id=MODEL, concurrency_limit=config.concurrency_limit)
    trained_on = demo.generator.trained_on
    # Visitors' uploads and the pictures made for them are deleted after an hour, checked hourly.
    with Page(title="multimodal", analytics_enabled=False, delete_cache=(3600, 3600)) as page:
        gr.Markdown(f"## multimodal · `{demo.generator.checkpoint_dir}`"
                    + (f" · trained on the {trained_on} set" if trained_on else ""))
        if demo.no_search:
            gr.Markdown(demo.no_search)
        with gr.Tab("Text → image", id="text-to-image"):
            with gr.Row():
                with gr.Column():
                    prompt = Textbox(label="Prompt", max_lines=2, elem_id="t2i-prompt",
                                        max_length=MAX_PROMPT_CHARACTERS)
                    negative = Textbox("", label="Negative prompt (what guidance steers away from)", max_lines=1,
                                          elem_id="t2i-negative", max_length=MAX_PROMPT_CHARACTERS)
                    with gr.Row():
                        steps = Slider(1, 100, value=defaults.num_inference_steps, step=1, label="Steps")
                        guidance = Slider(0, 10, value=defaults.guidance_scale, step=0.5, label="Guidance")
                    with gr.Row():
                        sampler = gr.Dropdown(list(SAMPLERS), value=defaults.sampler, label="Sampler")
                        seed = Number(demo.seed, precision=0, label="Seed (empty: random)", minimum=0, maximum=MAX_SEED)
                        count = Slider(1, config.max_images, value=1, step=1, label="Images")
                        candidates = Slider(1, MAX_CANDIDATES, value=defaults.num_candidates, step=1,
                                            label="Best of (pictures drawn per image, the likeliest kept)")
                    preview = gr.Checkbox(False, label="Fast preview (no diffusion)", elem_id="t2i-preview")
                    draw = gr.Button("Generate", variant="primary", elem_id="t2i-run")
                    if prompts:
                        gr.Examples([[p] for p in prompts], inputs=[prompt], label="Examples from the data set")
                images = gr.Gallery(label="Images", format="png", columns=4, elem_id="t2i-images")
            inputs = [prompt, steps, guidance, sampler, seed, count, preview, candidates, negative]
            gr.on([draw.click, prompt.submit], demo.text_to_image, inputs, images, api_name="text_to_image", **run)
        with gr.Tab("Image → text", id="image-to-text"):
            with gr.Row():
                with gr.Column():
                    upload = UploadedImage(type="filepath", label="Picture", sources=["upload"], elem_id="i2t-image",
                                           height=256)
                    decoding = gr.Radio(list(DECODINGS), value="greedy", label="Decoding")
                    with gr.Row():
                        captions_count = Slider(1, config.max_captions, value=1, step=1, label="Captions")
                        beams = Slider(2, 8, value=3, step=1, label="Beams (for beams)")
                    with gr.Row():
                        temperature = Slider(0.1, 2.0, value=0.8, step=0.1, label="Temperature (for sampling)")
                        top_p = Slider(0.1, 1.0, value=0.9, step=0.05, label="Top-p (for sampling)")
                        caption_seed = Number(demo.seed, precision=0, label="Seed (for sampling)", minimum=0,
                                              maximum=MAX_SEED)
                    describe = gr.Button("Describe", variant="primary", elem_id="i2t-run")
                    if trained_on == "shapes":
                        gr.Markdown("This checkpoint knows only the shapes set: it describes any picture as a shape.")
                    if pictures:
                        gr.Examples([[p] for p in pictures], inputs=[upload], label="Validation images")
                captions = gr.Textbox(label="Captions", lines=4, elem_id="i2t-captions")
            describe.click(demo.image_to_text, [upload, decoding, captions_count, beams, temperature, top_p,
                                                caption_seed], captions, api_name="image_to_text", **run)
        with gr.Tab("Search", id="search"):
            with gr.Row():
                with gr.Column():
                    query = Textbox(label="Find validation images like this text", elem_id="search-query",
                                       max_length=MAX_PROMPT_CHARACTERS)
                    find = gr.Button("Search images", variant="primary", elem_id="search-run")
                    found = gr.Gallery(label="Most similar validation images", columns=4, elem_id="search-images")
                with gr.Column():
                    probe = UploadedImage(type="filepath", label="…or captions like this picture", sources=["upload"],
                                          elem_id="search-image", height=256)
                    rank = gr.Button("Search captions", elem_id="search-captions-run")
                    ranked = gr.Dataframe(headers=["caption", "similarity"], elem_id="search-captions")
                    if pictures:
                        gr.Examples([[p] for p in pictures], inputs=[probe], label="Validation images")
            gr.on([find.click, query.submit], demo.search_images, query, found, api_name="search_images", **run)
            rank.click(demo.search_captions, probe, ranked, api_name="search_captions", **run)
    page.queue(max_size=config.queue_size)
    return page


def launch(page: gr.Blocks, config: ServeConfig, block: bool = True) -> str:
    """Serve the page on config.host:port (never a share link); returns its address when not
    `block`ing (tests), else serves until Ctrl-C."""
    _, url, _ = page.launch(
        server_name=config.host, server_port=config.port, share=False, max_file_size=int(config.max_upload_mb * 1e6),
        theme=THEME, ssr_mode=False, pwa=False, mcp_server=False, prevent_thread_lock=not block, quiet=not block,
        footer_links=[],
    )
    return url
