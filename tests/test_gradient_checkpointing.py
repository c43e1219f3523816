"""--gradient-checkpointing: every checkpointed part runs again in the backward pass, and the
losses, gradients, batch-norm statistics and a short run's metrics are those of the model
without it; nothing of it reaches the saved checkpoint."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from safetensors import safe_open

from conftest import tiny_config, tiny_trainer, run_recording
from multimodal import GenerativeMultimodalModel
from multimodal.models.image_encoder import ImageEncoder
from multimodal.paths import CONFIG_NAME, WEIGHTS_NAME


def forward_backward(model: torch.nn.Module, batch: tuple, seed: int) -> tuple[dict[str, float], dict[str, torch.Tensor]]:
    """The losses of one training forward pass (dropout on, the same draws for the same seed) and
    the gradients its total gives."""
    torch.manual_seed(seed)
    model.train().zero_grad(set_to_none=True)
    out = model(*batch)
    out["loss"].backward()
    losses = {name: value.item() for name, value in out.items() if value.ndim == 0}
    return losses, {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


def count_calls(modules: dict[str, torch.nn.Module]) -> dict[str, int]:
    """How often each module runs, from now on (forward hooks)."""
    calls = dict.fromkeys(modules, 0)
    for name, module in modules.items():
        module.register_forward_hook(lambda *_, name=name: calls.__setitem__(name, calls[name] + 1))
    return calls


def test_the_checkpointed_model_recomputes_every_part_and_has_the_same_losses_and_gradients():
    torch.manual_seed(0)
    plain = GenerativeMultimodalModel(tiny_config(caption_dropout=0.1))  # BERT trains; its dropout and the decoder's on
    checked = copy.deepcopy(plain)
    checked.set_gradient_checkpointing(True)
    tokens = plain.text_encoder.tokenize(["a red circle on the left", "a small blue square", "a green triangle"])
    images = torch.rand(3, 3, 28, 28) * 2 - 1
    batch = (images, tokens["input_ids"], tokens["attention_mask"])

    def inner_parts(model: GenerativeMultimodalModel) -> dict[str, torch.nn.Module]:
        # Modules inside each checkpointed block (transformers keeps a layer's own hooks outside it).
        return {"image encoder": model.image_encoder.backbone.layers[0],
                "BERT": model.text_encoder.bert.encoder.layer[0].attention,
                "caption decoder": model.caption_decoder.lm.transformer.h[0].attn,
                "UNet": model.diffusion.unet.down[0],
                "image decoder": model.image_decoder.layers[0]}

    plain_calls, checked_calls = count_calls(inner_parts(plain)), count_calls(inner_parts(checked))
    expected_losses, expected_grads = forward_backward(plain, batch, seed=1)
    losses, grads = forward_backward(checked, batch, seed=1)
    assert plain_calls == dict.fromkeys(plain_calls, 1)
    assert checked_calls == dict.fromkeys(checked_calls, 2), "each part runs again in the backward pass"

    assert losses.keys() == expected_losses.keys() and {"contrastive", "reconstruction", "caption", "diffusion"} <= set(losses)
    for name, value in expected_losses.items():
        assert losses[name] == pytest.approx(value, rel=1e-6, abs=1e-7), name
    assert grads.keys() == expected_grads.keys()
    assert any(name.startswith("text_encoder.bert.") for name in grads)
    for name, grad in expected_grads.items():  # the same sums, added up in another order: float rounding
        torch.testing.assert_close(grads[name], grad, rtol=1e-5, atol=1e-6, msg=name)
    assert checked.state_dict().keys() == plain.state_dict().keys()

    before = dict(checked_calls)
    with torch.no_grad():  # validation: nothing recorded, so nothing is checkpointed nor run twice
        checked(*batch)
    assert checked_calls == {name: count + 1 for name, count in before.items()}


@pytest.mark.parametrize("trunk", ["resnet50", "efficientnet_lite0"])
def test_a_trainable_batch_norm_trunk_counts_each_batch_once(trunk):
    """Batch norm's running statistics are buffers saved with the weights: the recomputation must
    not update them a second time."""
    size = 224 if trunk == "efficientnet_lite0" else 28  # EfficientNet-Lite0: 32 × the 7×7 latent
    config = tiny_config(image_encoder=trunk, image_size=size, embedding_pooling="mean")
    torch.manual_seed(0)
    plain = ImageEncoder(config).train()
    checked = copy.deepcopy(plain)
    checked.set_gradient_checkpointing(True)
    images = torch.rand(2, 3, size, size) * 2 - 1
    for encoder in (plain, checked):
        z, embedding = encoder(images)
        (z.square().mean() + embedding.sum()).backward()
    for (name, expected), actual in zip(plain.state_dict().items(), checked.state_dict().values()):
        torch.testing.assert_close(actual, expected, rtol=0, atol=0, msg=name)  # running mean, variance, count
    for (name, p), q in zip(plain.named_parameters(), checked.parameters()):
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-4, atol=1e-6, msg=name)


def test_a_run_with_the_flag_trains_as_one_without_and_saves_the_same_checkpoint(shapes_dir, tmp_path):
    def run(name: str, **flag) -> list[dict]:
        torch.manual_seed(0)
        trainer = tiny_trainer(shapes_dir, tmp_path / name, epochs=1, max_steps=2, precision="fp32", **flag)
        assert trainer.model.diffusion.unet.gradient_checkpointing == bool(flag)
        return run_recording(trainer)

    expected, actual = run("plain"), run("checked", gradient_checkpointing=True)
    assert len(actual) == len(expected) == 2
    for step, (want, got) in enumerate(zip(expected, actual)):
        assert got.keys() == want.keys()
        for name in want:
            assert got[name] == pytest.approx(want[name], rel=1e-5, abs=1e-7), (step, name)
    plain, checked = tmp_path / "plain" / "latest", tmp_path / "checked" / "latest"
    assert json.loads((checked / CONFIG_NAME).read_text()) == json.loads((plain / CONFIG_NAME).read_text())
    with safe_open(plain / WEIGHTS_NAME, "pt") as want, safe_open(checked / WEIGHTS_NAME, "pt") as got:
        assert set(got.keys()) == set(want.keys())
        for key in want.keys():
            torch.testing.assert_close(got.get_tensor(key), want.get_tensor(key), rtol=1e-4, atol=1e-6, msg=key)
    state = json.loads((checked / "trainer_state.json").read_text())
    assert state["train_config"]["gradient_checkpointing"] is True  # a training setting, recorded for replay


def test_a_run_with_the_flag_trains_in_bf16_autocast(shapes_dir, tmp_path):
    # bf16 is the GPUs' default and the CPU's where it has bf16 units: the recomputation must
    # run under the forward's autocast, or torch refuses the backward pass.
    trainer = tiny_trainer(shapes_dir, tmp_path / "bf16", epochs=1, max_steps=2, precision="bf16",
                           gradient_checkpointing=True)
    steps = run_recording(trainer)
    assert len(steps) == 2 and all(torch.isfinite(torch.tensor(step["loss"])) for step in steps)
