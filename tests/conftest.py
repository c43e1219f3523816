"""Shared fixtures and helpers: tiny configurations that build in a fraction of a second, a tiny
shapes set and trainer, and train.py run as a command with the tiny model's flags."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import contextlib  # noqa: E402
import io  # noqa: E402
import runpy  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Callable  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from multimodal import GenerativeMultimodalModel, ImageTextGenerator, ModelConfig  # noqa: E402
from multimodal.captions import token_ids  # noqa: E402
from multimodal.config import TrainConfig  # noqa: E402
from multimodal.data import all_combinations, canonical_caption, generate_shapes_dataset  # noqa: E402
from multimodal.training import Trainer  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
COCO_MINI = REPO.parent / "shared" / "coco-mini"
# train.py's flags for the model of tiny_config() (with a frozen BERT), for runs as a command.
TINY_FLAGS = (
    "--image-size 28 --latent-channels 32 --encoder-width 8 --decoder-width 8 --embed-dim 32 "
    "--proj-hidden-dim 64 --pool-channels 4 --caption-width 32 --caption-layers 1 --caption-heads 2 "
    "--unet-width 32 --unet-blocks 1 --unet-heads 2 --num-timesteps 100 --freeze-bert --num-workers 0 "
    "--image-encoder simple_cnn"
).split()

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


@pytest.fixture(scope="module")
def shapes_dir(tmp_path_factory) -> Path:
    return generate_shapes_dataset(tmp_path_factory.mktemp("shapes"), num_train=24, num_val=8, image_size=28, progress=False)


def tiny_trainer(shapes_dir: Path, output_dir: Path, resume: bool = False, **overrides) -> Trainer:
    values = dict(
        preset="shapes", data_dir=str(shapes_dir), output_dir=str(output_dir), epochs=2, batch_size=8,
        learning_rate=1e-3, warmup_epochs=1, num_workers=0, sample_every_epoch=False,
    )
    return Trainer(tiny_config(freeze_bert=True), TrainConfig(**(values | overrides)), resume=resume)


def run_train(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO / "train.py"), *args], cwd=cwd, capture_output=True, text=True, timeout=600
    )


def script_main(name: str) -> Callable[[list[str]], int | None]:
    """A script's main(argv), to run in this process (no interpreter start-up)."""
    return runpy.run_path(str(REPO / name))["main"]


def run_in_process(main: Callable[[list[str]], int | None], *args: str, cwd: Path) -> subprocess.CompletedProcess:
    """`main(args)` run from `cwd` as its command line would be: the exit code, stdout and stderr
    that run_train gives, without the seconds a new interpreter spends importing torch and
    transformers. The environment, torch's threads and the working folder are put back after.
    Not for what needs a fresh process: signals, what loads before torch, warnings shown once."""
    stdout, stderr = io.StringIO(), io.StringIO()
    environ, threads, before = dict(os.environ), torch.get_num_threads(), Path.cwd()
    try:
        os.chdir(cwd)
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            try:
                code = main(list(args))
            except SystemExit as exit:  # argparse's errors, and scripts that exit with a message
                code = exit.code
                if isinstance(code, str):
                    print(code, file=sys.stderr)
                    code = 1
    finally:
        os.chdir(before)
        os.environ.clear()
        os.environ.update(environ)
        torch.set_num_threads(threads)
    return subprocess.CompletedProcess(list(args), code or 0, stdout.getvalue(), stderr.getvalue())


def train_in_process(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    """`run_train` in this process (`run_in_process`), for checks that need no fresh interpreter."""
    return run_in_process(script_main("train.py"), *args, cwd=cwd)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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
    """A tiny untrained checkpoint folder, written once per test module. Its caption decoder
    writes the words of the shapes set's captions, as one that train.py writes would."""
    torch.manual_seed(0)
    directory = tmp_path_factory.mktemp("tiny") / "checkpoint"
    model = GenerativeMultimodalModel(tiny_config())
    model.caption_decoder.lm.set_vocabulary(token_ids(model.tokenizer, map(canonical_caption, all_combinations())))
    model.save_pretrained(directory)
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
