"""The pretrained EfficientNet-Lite0: its weights load, classify real photographs sensibly, and a
file that does not fit is refused with its name."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from skimage import data as skimage_data

from conftest import tiny_config
from multimodal import GenerativeMultimodalModel, ModelConfig
from multimodal.config import TrainConfig
from multimodal.data import generate_shapes_dataset
from multimodal.data.transforms import image_transform
from multimodal.errors import CheckpointError, ConfigError
from multimodal.models import ImageEncoder
from multimodal.models.pretrained import EfficientNetFeatures, efficientnet_lite0, weights_path
from multimodal.training import Trainer

CATS = {281, 282, 283, 284, 285}  # tabby, tiger cat, Persian, Siamese, Egyptian cat
COFFEE = {967, 968, 504}  # espresso, cup, coffee mug


@pytest.fixture(scope="module")
def network() -> torch.nn.Module:
    return efficientnet_lite0().eval()


def test_weights_file_holds_296_tensors() -> None:
    assert len(torch.load(weights_path(), weights_only=True)) == 296


def test_imagenet_head_names_real_photographs(network) -> None:
    """Our [-1, 1] pixels are the TF-Lite normalisation (mean 0.5, std 0.5) the weights expect."""
    transform = image_transform(224)
    photos = [Image.fromarray(skimage_data.chelsea()), Image.fromarray(skimage_data.coffee())]
    with torch.no_grad():
        probabilities = network(torch.stack([transform(photo) for photo in photos])).softmax(-1)
    cat, coffee = probabilities.topk(3).indices.tolist()
    assert cat[0] in CATS and set(cat) <= CATS  # tiger cat, Egyptian cat, tabby
    assert coffee[0] == 967  # espresso
    assert probabilities[0, sorted(CATS)].sum() > 0.8
    assert probabilities[1, 967] > 0.8


def test_weights_that_do_not_fit_are_refused(tmp_path) -> None:
    weights = torch.load(weights_path(), weights_only=True)
    first = next(iter(weights))
    weights[first] = torch.zeros(8, 3, 3, 3)
    path = tmp_path / "wrong.pth"
    torch.save(weights, path)
    with pytest.raises(CheckpointError, match=f"{path}.*{first}.*shape"):
        efficientnet_lite0(weights=path)
    del weights[first]
    torch.save(weights, path)
    with pytest.raises(CheckpointError, match=f"{path}: expected 296 .*found 295"):
        efficientnet_lite0(weights=path)


def test_features_at_every_depth(network) -> None:
    features = EfficientNetFeatures().eval()
    images = torch.rand(2, 3, 224, 224) * 2 - 1
    with torch.no_grad():
        maps = features(images)
        expected = network.forward_features(images)
    assert [m.shape[1] for m in maps] == features.channels == [16, 24, 40, 112, 320, 1280]
    assert [m.shape[-1] for m in maps] == [112, 56, 28, 14, 7, 7]
    torch.testing.assert_close(maps[-1], expected)  # the classifier's own features, from the same weights


def efficientnet_config(**overrides) -> ModelConfig:
    return tiny_config(image_size=224, image_encoder="efficientnet_lite0", freeze_bert=True, **overrides)


def test_efficientnet_encoder_starts_from_imagenet_and_gives_the_latent(network) -> None:
    encoder = ImageEncoder(efficientnet_config()).eval()
    trunk = encoder.backbone.trunk
    torch.testing.assert_close(trunk.head[0].weight, network.conv_head.weight)
    images = torch.rand(2, 3, 224, 224) * 2 - 1
    z, embedding = encoder(images)
    assert z.shape == (2, 32, 7, 7) and embedding.shape == (2, 32)
    torch.testing.assert_close(encoder.encode(images, encoder.trunk_features(images)), z)  # what a cache serves


def test_efficientnet_config_checks() -> None:
    with pytest.raises(ConfigError, match="image_size must be 32 × latent_size \\(224\\)"):
        tiny_config(image_size=112, image_encoder="efficientnet_lite0")
    assert not ImageEncoder(tiny_config(freeze_image_trunk=True)).frozen_trunk  # simple_cnn: nothing to freeze
    legacy = {**tiny_config().to_dict(), "image_size": 224, "latent_channels": 256}
    del legacy["image_encoder"]
    assert ModelConfig.from_dict({**legacy, "use_simple_cnn": False}).image_encoder == "resnet50"
    assert ModelConfig.from_dict({**legacy, "use_simple_cnn": True}).image_encoder == "simple_cnn"


@pytest.fixture(scope="module")
def photos_dir(tmp_path_factory) -> Path:
    return generate_shapes_dataset(tmp_path_factory.mktemp("shapes224"), num_train=4, num_val=2, image_size=224,
                                   progress=False)


def train_one_step(photos_dir: Path, output_dir: Path, freeze: bool) -> tuple[Trainer, dict, dict]:
    train_config = TrainConfig(preset="shapes", data_dir=str(photos_dir), output_dir=str(output_dir), epochs=1,
                               max_steps=1, batch_size=2, num_workers=0, sample_every_epoch=False, cache_images=True)
    trainer = Trainer(efficientnet_config(freeze_image_trunk=freeze), train_config)
    backbone = trainer.model.image_encoder.backbone
    before = {name: value.clone() for name, value in backbone.state_dict().items()}
    trainer.run()
    return trainer, before, backbone.state_dict()


def test_frozen_trunk_learns_nothing_and_keeps_its_batchnorm(photos_dir, tmp_path) -> None:
    trainer, before, after = train_one_step(photos_dir, tmp_path / "frozen", freeze=True)
    trunk = trainer.model.image_encoder.backbone.trunk
    assert len(trainer.trunk_cache.store) == 2  # the step's two images: their features computed once
    optimised = {id(p) for group in trainer.optimizer.param_groups for p in group["params"]}
    assert not any(id(p) in optimised or p.requires_grad for p in trunk.parameters())
    trainer.model.train()
    assert not trunk.training and trainer.model.image_encoder.backbone.to_latent.training
    for name in before:  # weights and BatchNorm running statistics alike
        if name.startswith("trunk."):
            torch.testing.assert_close(after[name], before[name], msg=name)
    assert not torch.equal(after["to_latent.weight"], before["to_latent.weight"])


def test_fine_tuned_trunk_learns_and_is_saved(photos_dir, tmp_path) -> None:
    trainer, before, after = train_one_step(photos_dir, tmp_path / "tuned", freeze=False)
    assert trainer.trunk_cache is None  # a trunk that learns is never cached
    assert not torch.equal(after["trunk.head.0.weight"], before["trunk.head.0.weight"])
    saved = GenerativeMultimodalModel.from_pretrained(tmp_path / "tuned" / "latest")
    raw = load_file(tmp_path / "tuned" / "latest" / "training_weights.safetensors")
    key = "image_encoder.backbone.trunk.head.0.weight"
    torch.testing.assert_close(raw[key], after["trunk.head.0.weight"])
    assert not torch.equal(saved.state_dict()[key], before["trunk.head.0.weight"])  # the EMA moved too
