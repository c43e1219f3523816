"""Training under torch.distributed on the CPU (gloo): 2 processes × B behave as 1 × 2B."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from safetensors.torch import load_file, save_file
from torch.nn.parallel import DistributedDataParallel

from conftest import REPO, TINY_FLAGS, free_port, random_images, tiny_config
from multimodal import GenerativeMultimodalModel
from multimodal.training.distributed import SLURM_MASTER_PORT, Launch, launch_from_env

BATCH = 4  # per process
CAPTIONS = [f"a {colour} shape" for colour in ["red", "green", "blue", "yellow", "black", "white", "pink", "brown"]]


def build_model() -> GenerativeMultimodalModel:
    # Frozen BERT and no caption dropout: nothing random in the encoders' losses.
    torch.manual_seed(0)
    return GenerativeMultimodalModel(tiny_config(freeze_bert=True, latent_stats_momentum=0.0)).train()


def losses_and_gradients(model: torch.nn.Module, images, captions) -> tuple[float, dict[str, torch.Tensor]]:
    """The total loss and every parameter's gradient; `model` may be wrapped in DDP."""
    module = model.module if isinstance(model, DistributedDataParallel) else model
    weights = {name: w for name, w in module.loss_weights().items() if name != "diffusion"}  # the "encoders" stage
    out = model(images, **module.text_encoder.tokenize(captions), loss_weights=weights)
    out["loss"].backward()
    grads = {name: p.grad.detach().clone() for name, p in module.named_parameters() if p.grad is not None}
    return out["loss"].item(), grads


def _worker(rank: int, world: int, port: int, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.set_num_threads(1)
    model = DistributedDataParallel(build_model(), find_unused_parameters=True)  # the "encoders" stage skips the UNet
    images = random_images(2 * BATCH, 28)[rank * BATCH : (rank + 1) * BATCH]
    loss, grads = losses_and_gradients(model, images, CAPTIONS[rank * BATCH : (rank + 1) * BATCH])
    losses = torch.tensor([loss])
    dist.all_reduce(losses)
    if rank == 0:
        save_file(grads | {"__loss__": losses / world}, str(Path(out_dir) / "ddp.safetensors"))
    dist.destroy_process_group()


def test_two_processes_of_batch_b_equal_one_process_of_batch_2b(tmp_path):
    mp.spawn(_worker, args=(2, free_port(), str(tmp_path)), nprocs=2, join=True)
    ddp = load_file(tmp_path / "ddp.safetensors")
    loss, grads = losses_and_gradients(build_model(), random_images(2 * BATCH, 28), CAPTIONS)

    assert ddp.pop("__loss__").item() == pytest.approx(loss, rel=1e-5)
    assert set(ddp) == set(grads)
    contrastive = [name for name in grads if name.startswith(("image_encoder.head", "text_encoder.projection"))]
    assert contrastive and "contrastive.log_logit_scale" in grads  # the global-batch loss is in the comparison
    for name, grad in grads.items():
        torch.testing.assert_close(ddp[name], grad, rtol=1e-3, atol=1e-5, msg=name)  # gradients are O(1)


def run_torchrun(*args: str) -> subprocess.CompletedProcess:
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               str(REPO / "train.py"), *args]
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600, env=env)


def test_torchrun_trains_writes_a_checkpoint_and_resumes(shapes_dir, tmp_path):
    # An autoencoder stage with its discriminator (trained outside DDP, its gradients averaged by
    # hand) first: 24 images / 4 per step = 6 steps, then the encoders stage.
    autoencoder = ["--autoencoder-epochs", "1", "--perceptual-weight", "0", "--discriminator-width", "8"]
    common = ["--preset", "shapes", "--data-dir", str(shapes_dir), "--output-dir", str(tmp_path),
              "--batch-size", "2", "--no-sample-every-epoch", *TINY_FLAGS, *autoencoder]
    first = run_torchrun(*common, "--max-steps", "2")
    assert first.returncode == 0, first.stderr[-3000:]
    assert "× 2 processes" in first.stdout and first.stdout.count("steps 0 → 2") == 1  # rank 0 alone prints
    state = json.loads((tmp_path / "latest" / "trainer_state.json").read_text())
    assert state["step"] == 2
    assert (tmp_path / "latest" / "training_discriminator.safetensors").is_file()

    resumed = run_torchrun(*common, "--max-steps", "8", "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "steps 2 → 8" in resumed.stdout and "(encoders)" in resumed.stdout
    assert json.loads((tmp_path / "latest" / "trainer_state.json").read_text())["step"] == 8
    GenerativeMultimodalModel.from_pretrained(tmp_path / "latest")


@pytest.mark.parametrize(
    "nodelist, host", [("node7", "node7"), ("gpu[07-09,12],cpu1", "gpu07"), ("node[1,3-5]-ib", "node1-ib")]
)
def test_srun_variables_give_rank_world_and_the_first_node_as_rendezvous(nodelist, host):
    env = {"SLURM_PROCID": "9", "SLURM_LOCALID": "1", "SLURM_NTASKS": "16", "SLURM_JOB_NODELIST": nodelist}
    assert launch_from_env(env) == Launch(9, 1, 16, f"tcp://{host}:{SLURM_MASTER_PORT}")
    assert launch_from_env(env | {"MASTER_PORT": "1234"}).rendezvous == f"tcp://{host}:1234"
    torchrun = {"RANK": "3", "LOCAL_RANK": "0", "WORLD_SIZE": "4"}
    assert launch_from_env(env | torchrun) == Launch(3, 0, 4)  # torchrun inside an allocation wins
    assert launch_from_env({}) == Launch()


def test_two_srun_tasks_train_together(shapes_dir, tmp_path):
    common = [sys.executable, str(REPO / "train.py"), "--preset", "shapes", "--data-dir", str(shapes_dir),
              "--output-dir", str(tmp_path / "run"), "--batch-size", "2", "--no-sample-every-epoch",
              *TINY_FLAGS, "--max-steps", "1"]
    slurm = {"OMP_NUM_THREADS": "1", "SLURM_NTASKS": "2", "SLURM_JOB_NODELIST": "localhost",
             "MASTER_PORT": str(free_port())}
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")} | slurm
    tasks = [subprocess.Popen(common, cwd=REPO, env=env | {"SLURM_PROCID": str(rank), "SLURM_LOCALID": str(rank)},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for rank in (0, 1)]
    outputs = [task.communicate(timeout=300) for task in tasks]
    assert [task.returncode for task in tasks] == [0, 0], outputs[0][1][-2000:] + outputs[1][1][-2000:]
    assert "× 2 processes" in outputs[0][0] and "steps 0 → 1" not in outputs[1][0]  # rank 0 alone prints
    assert json.loads((tmp_path / "run" / "latest" / "trainer_state.json").read_text())["step"] == 1
