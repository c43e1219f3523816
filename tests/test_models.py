"""The model's parts: shapes, gradients, losses, checkpoints, and that it can learn."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from conftest import TINY_BERT, random_images, tiny_config
from multimodal import (
    CheckpointError,
    GenerativeMultimodalModel,
    ModelConfig,
    SamplingConfig,
    TrainConfig,
    model_preset,
    train_preset,
)
from multimodal.errors import ConfigError
from multimodal.losses import ContrastiveLoss
from multimodal.models import CaptionDecoder, ConditionalUNet2D, ImageDecoder, ImageEncoder, TextEncoder


# -- configuration ------------------------------------------------------------------------
def test_config_round_trips_through_json():
    config = model_preset("shapes", bert_config=TINY_BERT)
    assert ModelConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config


@pytest.mark.parametrize("size", [0, 100, 7, 57, 225])
def test_config_refuses_image_sizes_that_are_not_7_times_a_power_of_two(size):
    with pytest.raises(ValueError, match="7·2\\^k"):
        ModelConfig(image_size=size)


def test_config_refuses_unknown_fields_and_values():
    with pytest.raises(ValueError, match="unknown ModelConfig field 'colour'"):
        ModelConfig.from_dict({"colour": 1})
    with pytest.raises(ValueError, match="unknown ModelConfig field 'unet_widht' \\(did you mean unet_width\\?\\)"):
        model_preset("shapes", unet_widht=64)
    with pytest.raises(ConfigError, match="prediction_type must be one of epsilon, v, sample, got 'x'") as error:
        ModelConfig(prediction_type="x")
    assert error.value.field == "prediction_type"


def test_train_config_validates_itself_and_round_trips():
    config = train_preset("shapes", batch_size=8)
    assert TrainConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    with pytest.raises(ConfigError, match="batch_size must be at least 1, got 0"):
        TrainConfig(batch_size=0)
    with pytest.raises(ConfigError, match="ema_decay must be in \\[0, 1\\), got 1.0"):
        config.replace(ema_decay=1.0)
    with pytest.raises(ValueError, match="unknown TrainConfig field 'epoch' \\(did you mean epochs\\?\\)"):
        TrainConfig.from_dict({"epoch": 3})


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(num_inference_steps=0), "num_inference_steps must be at least 1, got 0"),
        (dict(guidance_scale=-1.0), "guidance_scale must be from 0 to 100, got -1"),
        (dict(guidance_scale=1000.0), "guidance_scale must be from 0 to 100, got 1000"),
        (dict(sampler="euler"), "sampler must be one of ddim, ddpm, dpm, got 'euler'"),
        (dict(sampler="dpm", eta=0.5), "eta is DDIM's noise; the dpm sampler does not use it"),
        (dict(guidance_rescale=1.5), "guidance_rescale must be in \\[0, 1\\]"),
        (dict(num_candidates=0), "num_candidates must be from 1 to 64, got 0"),
        (dict(num_candidates=10**6), "num_candidates must be from 1 to 64, got 1000000"),
    ],
)
def test_sampling_config_refuses_values_that_cannot_work(options, message):
    with pytest.raises(ConfigError, match=message):
        SamplingConfig(**options)


# -- shapes of every component ------------------------------------------------------------
@pytest.mark.parametrize("image_size", [224, 56])
def test_component_shapes(image_size):
    config = tiny_config(image_size=image_size, latent_channels=256, embed_dim=512, encoder_width=16, decoder_width=16)
    images = random_images(2, image_size)

    z, embedding = ImageEncoder(config)(images)
    assert z.shape == (2, 256, 7, 7)
    assert embedding.shape == (2, 512)
    torch.testing.assert_close(embedding.norm(dim=-1), torch.ones(2))

    decoder = ImageDecoder(config)
    decoded = decoder.decode_from_latent(z)
    assert decoded.shape == (2, 3, image_size, image_size)
    assert decoded.abs().max() <= 1
    assert decoder.get_latent_from_embedding(embedding).shape == (2, 256, 7, 7)

    text = TextEncoder(config)
    tokens = text.tokenize(["a red circle", "a large blue square at the top"])
    states, text_embedding = text(**tokens)
    assert states.shape == (2, tokens["input_ids"].shape[1], TINY_BERT["hidden_size"])
    torch.testing.assert_close(text_embedding.norm(dim=-1), torch.ones(2))

    tokenizer = text.tokenizer
    captioner = CaptionDecoder(config, len(tokenizer), tokenizer.cls_token_id, tokenizer.sep_token_id, 0,
                               tokenizer.unk_token_id)
    assert captioner.memory(z).shape == (2, 49, config.caption_width)
    assert captioner(z, **tokens).ndim == 0
    generated = captioner.generate(z, max_new_tokens=5)
    assert generated.shape[0] == 2 and generated.shape[1] <= 5

    unet = ConditionalUNet2D(256, config.unet_width, 1, 2, 512, TINY_BERT["hidden_size"])
    out = unet(z, torch.tensor([0, 999]), text_embedding, states, tokens["attention_mask"])
    assert out.shape == z.shape


def test_resnet_trunk_gives_the_same_latent_shape():
    config = tiny_config(image_size=224, latent_channels=256, image_encoder="resnet50")
    z, embedding = ImageEncoder(config).eval()(random_images(1, 224))
    assert z.shape == (1, 256, 7, 7)
    assert embedding.shape == (1, config.embed_dim)


def test_mean_pooled_head_ignores_where_things_are_and_the_flatten_does_not():
    torch.manual_seed(0)
    z = torch.randn(2, 32, 7, 7)
    moved = z.roll(3, dims=-1)  # everything shifted to the right
    mean = ImageEncoder(tiny_config(embedding_pooling="mean")).eval()
    torch.testing.assert_close(mean.embed(moved), mean.embed(z))
    flatten = ImageEncoder(tiny_config()).eval()
    assert not torch.allclose(flatten.embed(moved), flatten.embed(z), atol=1e-3)


def test_bundled_bert_loads_without_network():
    config = ModelConfig(image_size=28, freeze_bert=True)
    text = TextEncoder(config)
    assert text.bert.config.hidden_size == 384 and text.bert.config.num_hidden_layers == 6
    embedding = text(**text.tokenize(["a dog in the park"]))[1]
    assert embedding.shape == (1, 512)


# -- gradients ----------------------------------------------------------------------------
def _backward(model: GenerativeMultimodalModel, batch: int = 16) -> None:
    # Zero-initialised layers (residual blocks that start as the identity) pass no gradient
    # upstream before the first update; give them small values so every path is tested.
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad and not p.any():
                p.normal_(0, 0.01)
    captions = [f"a {c} shape number {i}" for i, c in enumerate(["red", "blue"] * (batch // 2))]
    tokens = model.text_encoder.tokenize(captions)
    model(random_images(batch, model.config.image_size), **tokens)["loss"].backward()


def test_every_trainable_part_gets_a_gradient_from_the_total_loss():
    torch.manual_seed(0)
    model = GenerativeMultimodalModel(tiny_config(cond_drop=0.5))  # some of the 16 texts are dropped
    _backward(model)
    without = [name for name, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert without == []


def test_frozen_bert_gets_no_gradient_and_the_rest_still_does():
    torch.manual_seed(0)
    model = GenerativeMultimodalModel(tiny_config(freeze_bert=True, cond_drop=0.5))
    _backward(model)
    for name, p in model.named_parameters():
        if name.startswith("text_encoder.bert."):
            assert p.grad is None and not p.requires_grad, name
        else:
            assert p.grad is not None, name
    assert not model.train().text_encoder.bert.training  # no dropout in a frozen BERT


def test_text_context_layers_learn_on_a_frozen_bert_and_read_each_text_alone():
    """The context layers over a frozen BERT get gradients, and a text's embedding does not depend
    on the longer texts padded beside it (the padding is masked)."""
    torch.manual_seed(0)
    model = GenerativeMultimodalModel(tiny_config(freeze_bert=True, text_context_layers=1, cond_drop=0.5))
    _backward(model)
    context = [p for name, p in model.named_parameters() if name.startswith("text_encoder.context.")]
    assert context and all(p.grad is not None and p.grad.abs().sum() > 0 for p in context)
    model.eval()
    with torch.no_grad():
        alone = model.encode_text(["a red circle"])
        padded = model.encode_text(["a red circle", "a large blue square at the top and a small green circle below it"])
    torch.testing.assert_close(padded[:1], alone, rtol=1e-4, atol=1e-5)


def test_the_caption_decoders_memory_positions_start_at_the_configured_scale():
    torch.manual_seed(0)
    default = GenerativeMultimodalModel(tiny_config()).caption_decoder.memory_position
    unit = GenerativeMultimodalModel(tiny_config(caption_position_std=1.0)).caption_decoder.memory_position
    assert 0.015 < default.std().item() < 0.025 and 0.8 < unit.std().item() < 1.2
    assert model_preset("scenes").caption_position_std == 1.0
    assert model_preset("shapes").caption_position_std == 0.02
    with pytest.raises(ConfigError, match="caption_position_std cannot be negative"):
        tiny_config(caption_position_std=-1)


def test_a_loss_weighted_zero_is_neither_computed_nor_reported():
    torch.manual_seed(0)
    model = GenerativeMultimodalModel(tiny_config(recon_weight=0, diffusion_weight=0))
    assert set(model.loss_weights()) == {"contrastive", "fast_path", "caption"}
    _backward(model)
    assert all(p.grad is None for p in model.image_decoder.layers.parameters())  # the decoder never ran
    assert all(p.grad is None for p in model.diffusion.parameters())
    with pytest.raises(ConfigError, match="recon_weight cannot be negative"):
        tiny_config(recon_weight=-1)


# -- the contrastive loss -----------------------------------------------------------------
def test_contrastive_loss_equals_a_reference_computation():
    torch.manual_seed(0)
    images = F.normalize(torch.randn(5, 8), dim=-1)
    texts = F.normalize(torch.randn(5, 8), dim=-1)
    out = ContrastiveLoss(init_logit_scale=1 / 0.07)(images, texts)

    scale = 1 / 0.07
    total = 0.0
    for i in range(5):  # image i against every text, and text i against every image
        row = [scale * float(images[i] @ texts[j]) for j in range(5)]
        column = [scale * float(images[j] @ texts[i]) for j in range(5)]
        total += -row[i] + math.log(sum(math.exp(v) for v in row))
        total += -column[i] + math.log(sum(math.exp(v) for v in column))
    assert out["loss"].item() == pytest.approx(total / 10, rel=1e-5)
    similarity = images @ texts.t()
    expected_i2t = (similarity.argmax(1) == torch.arange(5)).float().mean()
    assert out["i2t_accuracy"].item() == pytest.approx(expected_i2t.item())


def test_hard_negatives_are_extra_columns_of_their_own_image_only():
    torch.manual_seed(0)
    images = F.normalize(torch.randn(3, 8), dim=-1)
    texts = F.normalize(torch.randn(3, 8), dim=-1)
    negatives = F.normalize(torch.randn(3, 2, 8), dim=-1)
    valid = torch.tensor([[True, True], [True, False], [False, False]])
    out = ContrastiveLoss(init_logit_scale=10.0)(images, texts, negatives, valid)

    total = 0.0
    for i in range(3):  # image i against every text and its own valid negatives; text i as before
        row = [10 * float(images[i] @ texts[j]) for j in range(3)]
        row += [10 * float(images[i] @ negatives[i, k]) for k in range(2) if valid[i, k]]
        column = [10 * float(images[j] @ texts[i]) for j in range(3)]
        total += -row[i] + math.log(sum(math.exp(v) for v in row))
        total += -column[i] + math.log(sum(math.exp(v) for v in column))
    assert out["loss"].item() == pytest.approx(total / 6, rel=1e-5)
    # A negative closer to its image than the caption is counts as a miss.
    captions = F.normalize(images + 0.1 * torch.randn(3, 8), dim=-1)  # each image's best text
    caught = ContrastiveLoss(init_logit_scale=10.0)(images, captions, images[:, None].repeat(1, 2, 1), valid)
    assert caught["i2t_accuracy"].item() == pytest.approx(1 / 3)  # only image 2, whose negatives are not valid


def test_contrastive_loss_is_near_zero_for_aligned_separated_pairs():
    embeddings = torch.eye(6, 16)  # orthogonal unit vectors: each image matches only its text
    loss = ContrastiveLoss(init_logit_scale=100.0)
    out = loss(embeddings, embeddings.clone())
    assert out["loss"].item() < 1e-6
    assert out["i2t_accuracy"].item() == 1.0 and out["t2i_accuracy"].item() == 1.0


def test_logit_scale_is_clamped():
    loss = ContrastiveLoss(init_logit_scale=500.0, max_logit_scale=100.0)
    assert loss.logit_scale.item() == pytest.approx(100.0)


# -- the diffusion loss -------------------------------------------------------------------
@pytest.mark.parametrize("prediction_type", ["epsilon", "v", "sample"])
def test_diffusion_loss_with_known_noise_equals_the_hand_computation(prediction_type):
    torch.manual_seed(0)
    config = tiny_config(prediction_type=prediction_type, noise_schedule="linear", num_timesteps=1000)
    model = GenerativeMultimodalModel(config).eval()  # eval: the latent statistics stay put
    diffusion = model.diffusion
    diffusion.latent_mean = torch.randn(config.latent_channels)
    diffusion.latent_std = torch.rand(config.latent_channels) + 0.5

    z = torch.randn(2, config.latent_channels, 7, 7)
    noise = torch.randn_like(z)
    timesteps = torch.tensor([10, 700])
    tokens = model.text_encoder.tokenize(["a red circle", "a blue square"])
    states, embedding = model.text_encoder(**tokens)
    drop = torch.tensor([False, False])
    loss = diffusion.training_loss(z, embedding, states, tokens["attention_mask"], noise, timesteps, drop)

    # By hand: DDPM's linear betas, ᾱ_t, the noised latent and the target.
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
    alpha_bar = torch.cumprod(1 - betas, 0)[timesteps].float()[:, None, None, None]
    x0 = (z - diffusion.latent_mean[None, :, None, None]) / diffusion.latent_std[None, :, None, None]
    noisy = alpha_bar.sqrt() * x0 + (1 - alpha_bar).sqrt() * noise
    target = {
        "epsilon": noise,
        "v": alpha_bar.sqrt() * noise - (1 - alpha_bar).sqrt() * x0,
        "sample": x0,
    }[prediction_type]
    prediction = diffusion.unet(noisy, timesteps, embedding, states, tokens["attention_mask"])
    assert loss.item() == pytest.approx(((prediction - target) ** 2).mean().item(), rel=1e-4)


def test_compute_diffusion_loss_is_the_forward_diffusion_loss_and_trains_only_the_unet():
    torch.manual_seed(0)
    model = GenerativeMultimodalModel(tiny_config()).eval()
    images = random_images(4, 28)
    tokens = model.text_encoder.tokenize(["a red circle", "a blue square", "a green triangle", "a red square"])
    torch.manual_seed(1)  # the same timesteps and noise in both calls
    loss = model.compute_diffusion_loss(images, tokens["input_ids"], tokens["attention_mask"])
    torch.manual_seed(1)
    out = model(images, tokens["input_ids"], tokens["attention_mask"], loss_weights={"diffusion": 1.0, "fast_path": 1.0})
    assert loss.item() == pytest.approx(out["diffusion"].item(), rel=1e-6)
    loss.backward()
    trained = {name.split(".")[0] for name, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert trained == {"diffusion"}


def test_latent_statistics_follow_the_training_latents():
    model = GenerativeMultimodalModel(tiny_config(latent_stats_momentum=0.5)).train()
    z = torch.randn(64, model.config.latent_channels, 7, 7) * 3 + 2
    for _ in range(20):
        model.diffusion.update_latent_stats(z)
    torch.testing.assert_close(model.diffusion.latent_mean, z.mean(dim=(0, 2, 3)), atol=1e-3, rtol=0)
    torch.testing.assert_close(model.diffusion.latent_std, z.std(dim=(0, 2, 3)), atol=1e-3, rtol=0)


# -- checkpoints --------------------------------------------------------------------------
def test_save_then_load_gives_identical_outputs(tiny_model, tmp_path):
    tiny_model.eval()
    images = random_images(2, tiny_model.config.image_size)
    tokens = tiny_model.text_encoder.tokenize(["a small red circle", "a large blue square"])
    tiny_model.save_pretrained(tmp_path)
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in tmp_path.iterdir()}

    loaded = GenerativeMultimodalModel.from_pretrained(tmp_path)
    torch.manual_seed(1)
    expected = tiny_model(images, **tokens)
    torch.manual_seed(1)
    actual = loaded(images, **tokens)
    for key in expected:
        torch.testing.assert_close(actual[key], expected[key], rtol=0, atol=0)
    assert loaded.generate_text_from_image(images) == tiny_model.generate_text_from_image(images)


def test_a_checkpoint_keeps_its_caption_vocabulary_and_one_from_before_it_writes_every_word(tiny_model, tmp_path):
    lm = tiny_model.eval().caption_decoder.lm
    words = tiny_model.tokenizer(["a small red circle"])["input_ids"][0]
    lm.set_vocabulary(words)
    tiny_model.save_pretrained(tmp_path)
    loaded = GenerativeMultimodalModel.from_pretrained(tmp_path).caption_decoder.lm
    assert loaded.restricted and torch.equal(loaded.words, lm.words) and len(lm.words) == len(set(words)) + 2  # [PAD], [UNK]

    weights = load_file(tmp_path / "model.safetensors")
    del weights["caption_decoder.lm.writes"]  # as a checkpoint written before the vocabulary existed
    save_file(weights, tmp_path / "model.safetensors")
    older = GenerativeMultimodalModel.from_pretrained(tmp_path).caption_decoder.lm
    assert not older.restricted and len(older.words) == len(tiny_model.tokenizer)


def test_checkpoint_with_a_missing_or_extra_tensor_is_refused(tiny_model, tmp_path):
    tiny_model.save_pretrained(tmp_path)
    weights = load_file(tmp_path / "model.safetensors")

    del weights["image_decoder.layers.0.weight"]
    save_file(weights, tmp_path / "model.safetensors")
    with pytest.raises(CheckpointError, match="missing tensors: image_decoder.layers.0.weight"):
        GenerativeMultimodalModel.from_pretrained(tmp_path)

    weights["surprise.weight"] = torch.zeros(3)
    weights["image_decoder.layers.0.weight"] = tiny_model.state_dict()["image_decoder.layers.0.weight"]
    save_file(weights, tmp_path / "model.safetensors")
    with pytest.raises(CheckpointError, match="unexpected tensors: surprise.weight"):
        GenerativeMultimodalModel.from_pretrained(tmp_path)


def test_checkpoint_from_another_config_or_incomplete_is_refused(tiny_model, tmp_path):
    tiny_model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["unet_width"] = 64
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="does not match config.json"):
        GenerativeMultimodalModel.from_pretrained(tmp_path)

    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="model.safetensors is missing"):
        GenerativeMultimodalModel.from_pretrained(tmp_path)
    with pytest.raises(CheckpointError, match="does not exist"):
        GenerativeMultimodalModel.from_pretrained(tmp_path / "nowhere")


# -- it learns ----------------------------------------------------------------------------
def test_tiny_model_overfits_eight_pairs():
    """Contrastive accuracy reaches 100% and greedy captions reproduce the training captions
    (only those two losses train: the others would triple the test's time and test nothing here)."""
    torch.manual_seed(0)
    colours = ["red", "green", "blue", "yellow", "purple", "cyan", "white", "orange"]
    captions = [f"a {colour} picture" if i % 2 else f"the {colour} one" for i, colour in enumerate(colours)]
    rgb = torch.rand(8, 3) * 2 - 1
    images = rgb[:, :, None, None].expand(8, 3, 28, 28).contiguous()
    images[:, :, :14] *= -1  # top and bottom differ, so each image has some structure

    model = GenerativeMultimodalModel(tiny_config())
    tokens = model.text_encoder.tokenize(captions)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(250):
        out = model(images, **tokens, loss_weights={"contrastive": 1.0, "caption": 1.0})
        optimizer.zero_grad()
        out["loss"].backward()
        optimizer.step()

    model.eval()
    with torch.no_grad():
        out = model(images, **tokens)
    assert out["i2t_accuracy"].item() == 1.0 and out["t2i_accuracy"].item() == 1.0
    assert model.generate_text_from_image(images) == captions


def test_caption_decoding_with_and_without_the_cache_agrees(tiny_model):
    images = random_images(2, tiny_model.config.image_size)
    tiny_model.eval()
    assert tiny_model.generate_text_from_image(images, use_cache=False) == tiny_model.generate_text_from_image(images)


def test_caption_log_likelihood_is_each_captions_summed_token_log_probabilities(tiny_model):
    tiny_model.eval()
    captions = ["a red circle", "a large blue square at the top of the picture"]
    z = tiny_model.encode_latent(random_images(2, tiny_model.config.image_size))
    both = tiny_model.caption_log_likelihood(z, captions)
    for row, caption in enumerate(captions):
        tokens = tiny_model.text_encoder.tokenize([caption])
        mean_loss = tiny_model.caption_decoder(z[row : row + 1], **tokens)  # averaged over the tokens after [CLS]
        count = tokens["attention_mask"].sum() - 1
        torch.testing.assert_close(both[row], -mean_loss * count)  # padding of the shorter row adds nothing
    assert (both < 0).all()


def test_best_of_n_keeps_each_prompts_likeliest_candidate(tiny_model):
    tiny_model.eval()
    prompts, n = ["a red circle", "a blue square"], 3
    sampling = SamplingConfig(num_inference_steps=2)
    # Every candidate, drawn as best of N draws them: prompt i's are rows i·N … i·N+N-1 of one batch.
    every = tiny_model.generate_image_from_text(
        [p for p in prompts for _ in range(n)], sampling, torch.Generator().manual_seed(0)
    )
    likelihood = tiny_model.caption_log_likelihood(
        tiny_model.encode_latent(every), [p for p in prompts for _ in range(n)]
    ).view(2, n)
    assert likelihood.argmax(1).tolist() != [0, 0]  # else the test could not tell best from first
    best = tiny_model.generate_image_from_text(
        prompts, sampling.replace(num_candidates=n), torch.Generator().manual_seed(0)
    )
    for i in range(2):
        torch.testing.assert_close(best[i], every[i * n + int(likelihood[i].argmax())])
