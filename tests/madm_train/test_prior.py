"""The tiny preset's diffusion prior: trained autoencoder and denoiser, saved as a diffusers folder, loaded as SD is."""

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from madm_ros.errors import ConfigError, InputError  # noqa: E402
from madm_train.training.prior import PRIOR_FILE, PriorConfig, load_prior_frames, pretrain_prior  # noqa: E402


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    from madm_ros.synthetic import SynthConfig, generate

    folder = tmp_path_factory.mktemp("prior_scenes")
    generate(SynthConfig(frames=6, height=64, width=128, seed=5, frames_per_sequence=3), folder)
    return folder


@pytest.fixture(scope="module")
def prior(scenes, tmp_path_factory):
    config = PriorConfig(crop=64, vae_steps=40, unet_steps=40, batch_size=4, seed=0)
    return pretrain_prior(scenes, tmp_path_factory.mktemp("prior") / "tiny_prior", config, progress=False)


def test_frames_cover_every_modality_and_the_painted_labels(scenes):
    frames, counts = load_prior_frames(scenes)
    assert counts == {"rgb": 6, "depth": 6, "thermal": 6, "events": 6, "painted_labels": 6}
    assert frames.shape == (30, 3, 64, 128) and frames.dtype == np.uint8
    from madm_ros.palettes import get_label_set

    colours = {tuple(c) for c in get_label_set("dsec11").colors} | {(0, 0, 0)}
    painted = frames[-6:].transpose(0, 2, 3, 1).reshape(-1, 3)
    assert {tuple(int(v) for v in c) for c in np.unique(painted, axis=0)} <= colours  # only palette colours


@pytest.mark.slow
def test_the_prior_is_a_diffusers_folder_that_the_tiny_model_loads(prior):
    from madm_train.models.tiny_sd import build_tiny_model

    record = json.loads((prior / PRIOR_FILE).read_text())
    assert record["settings"]["vae_steps"] == 40 and set(record["final_loss"]) == {"autoencoder", "denoiser"}
    for part in ("unet", "vae", "scheduler", "text_encoder", "tokenizer"):
        assert (prior / part).is_dir()
    model = build_tiny_model(prior, 11)  # the same SDBackbone.from_pretrained path as a real SD folder
    assert model.backbone.vae.config.scaling_factor == pytest.approx(record["scaling_factor"])
    with torch.no_grad():
        logits, _ = model(torch.rand(1, 3, 64, 64))
    assert logits.shape == (1, 11, 64, 64)


def _reconstruction_error(vae, images):
    with torch.no_grad():
        x = images * 2 - 1
        return torch.nn.functional.l1_loss(vae.decode(vae.encode(x).latent_dist.mean).sample, x).item()


def _denoising_error(unet, vae, scheduler, empty, images):
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        latents = vae.encode(images * 2 - 1).latent_dist.mean * vae.config.scaling_factor
        noise = torch.randn(latents.shape, generator=generator)
        t = torch.randint(0, 1000, (latents.shape[0],), generator=generator)
        predicted = unet(scheduler.add_noise(latents, noise, t), t, encoder_hidden_states=empty.expand(len(t), -1, -1))
        return torch.nn.functional.mse_loss(predicted.sample, noise).item()


@pytest.mark.slow
def test_pretraining_improves_reconstruction_and_denoising_over_the_random_start(prior, scenes, tmp_path):
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    from madm_train.models.stable_diffusion import empty_prompt_embedding
    from madm_train.models.tiny_sd import build_tiny_sd

    random_sd = build_tiny_sd(tmp_path / "random", seed=0)  # the weights pretraining started from
    frames, _ = load_prior_frames(scenes)
    images = torch.from_numpy(frames[::3, :, :, :64].astype(np.float32) / 255)

    def load(folder):
        vae = AutoencoderKL.from_pretrained(folder / "vae")
        unet = UNet2DConditionModel.from_pretrained(folder / "unet")
        return vae.eval(), unet.eval()

    (vae0, unet0), (vae1, unet1) = load(random_sd), load(prior)
    assert _reconstruction_error(vae1, images) < 0.9 * _reconstruction_error(vae0, images)
    scheduler = DDPMScheduler.from_pretrained(prior / "scheduler")
    empty = empty_prompt_embedding(CLIPTextModel.from_pretrained(prior / "text_encoder"),
                                   CLIPTokenizer.from_pretrained(prior / "tokenizer"))
    # both denoisers on the trained VAE's latents: the pretrained one predicts the noise better
    assert _denoising_error(unet1, vae1, scheduler, empty, images) < _denoising_error(unet0, vae1, scheduler, empty, images)


def test_bad_settings_and_empty_folders_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="multiple of 8"):
        PriorConfig(crop=60)
    with pytest.raises(ConfigError, match="vae_steps"):
        PriorConfig(vae_steps=0)
    with pytest.raises(InputError, match="meta.json"):
        load_prior_frames(tmp_path)
