"""visualize.py: on a tiny trained run it writes every PNG and prints their paths; a folder that
is not a run is refused in one line, exit code 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from conftest import REPO, tiny_config
from multimodal.config import TrainConfig
from multimodal.data import generate_shapes_dataset
from multimodal.training import Trainer

sys.path.insert(0, str(REPO))
import visualize  # noqa: E402

PNGS = ["loss_curves.png", "reconstructions.png", "latent_statistics.png", "denoising_trajectory.png"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A tiny run of both stages, so the curves have two panels."""
    root = tmp_path_factory.mktemp("visualize")
    data = generate_shapes_dataset(root / "shapes", num_train=16, num_val=8, image_size=28, progress=False)
    config = TrainConfig(preset="shapes", data_dir=str(data), output_dir=str(root / "run"), epochs=1,
                         diffusion_epochs=1, batch_size=8, num_workers=0, sample_every_epoch=False)
    Trainer(tiny_config(freeze_bert=True), config).run()
    return root / "run"


def test_writes_every_png_and_prints_their_paths(run_dir, tmp_path, capsys) -> None:
    output = tmp_path / "pictures"
    code = visualize.main([str(run_dir), "--output-dir", str(output), "--steps", "4", "--trajectory-frames", "3",
                           "--num-images", "4", "--prompt", "a large red circle on the left"])
    assert code == 0
    printed = capsys.readouterr().out.split()
    expected = [output / name for name in PNGS] + [output / "embedding_map_pca.png"]
    assert sorted(printed) == sorted(str(path) for path in expected)
    for path in expected:
        with Image.open(path) as picture:
            assert picture.format == "PNG" and picture.width > 100
    assert not list(output.glob(".*"))  # no partial file left behind


def test_codebook_columns_are_drawn_and_tsne_is_a_flag(run_dir, tmp_path, capsys) -> None:
    copy = tmp_path / "run"
    subprocess.run(["cp", "-r", str(run_dir), str(copy)], check=True)
    metrics = pd.read_csv(copy / "metrics.csv")
    metrics["train_codebook_usage"], metrics["val_codebook_perplexity"] = [0.5, 0.6], [100.0, 120.0]
    metrics.to_csv(copy / "metrics.csv", index=False)
    assert visualize.main([str(copy), "--steps", "2", "--embedding-map", "tsne", "--map-images", "8"]) == 0
    printed = capsys.readouterr().out.split()
    assert str(copy / "visualize" / "codebook.png") in printed
    assert str(copy / "visualize" / "embedding_map_tsne.png") in printed


@pytest.mark.parametrize("problem", ["missing", "checkpoint only", "no checkpoint"])
def test_a_folder_that_is_not_a_run_exits_2_with_one_line(run_dir, tmp_path, problem) -> None:
    folder = {"missing": tmp_path / "nowhere", "checkpoint only": run_dir / "best", "no checkpoint": tmp_path}[problem]
    if problem == "no checkpoint":
        (tmp_path / "metrics.csv").write_text("epoch,step,stage\n")
    result = subprocess.run([sys.executable, str(REPO / "visualize.py"), str(folder)], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("visualize.py: error: RUN_DIR") and str(folder) in lines[0]
