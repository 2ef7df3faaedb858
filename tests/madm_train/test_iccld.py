"""ICCLD (iccld_diff_spec.md A): shapes through E, ε_θ and D at SD size, the inter-coder connections, T-step
sampling, the one-step estimate, the adversarial alternation on a toy gap, both stages through the trainer,
stage-2 resume, saving, and distillation and export of an ICCLD teacher.

SD-size shapes are built from the bundled configs on the meta device (no weights); everything that
runs uses the tiny preset (the real diffusers classes, random weights).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

from madm_ros.errors import ConfigError  # noqa: E402
from madm_train.config import load_config  # noqa: E402
from madm_train.methods.iccld.discriminator import LatentDiscriminator, adversarial_terms  # noqa: E402
from madm_train.methods.iccld.method import IccldMethod  # noqa: E402
from madm_train.methods.iccld.model import IccldModel  # noqa: E402
from madm_train.models.stable_diffusion import load_stable_diffusion  # noqa: E402
from madm_train.training.trainer import train  # noqa: E402
from tests.madm_train.tiny_runs import distil_and_export, log_lines, tiny_overrides, weights  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
YAML = REPO / "config/train/synthetic_event_iccld_tiny.yaml"
NUM_CLASSES = 11


def tiny_model(tiny_sd: Path, *, inter_coder: str = "add", denoiser: bool = True, **options) -> IccldModel:
    sd = load_stable_diffusion(tiny_sd)
    model = IccldModel(sd.vae, NUM_CLASSES, inter_coder=inter_coder, **options)
    if denoiser:
        model.attach_denoiser(sd.unet, sd.scheduler, sd.empty_prompt)
    return model


# -- shapes at Stable Diffusion size ------------------------------------------------------------------


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_e_eps_and_d_have_the_specs_shapes_at_sd_size(version: str):
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel

    from madm_train.models.stable_diffusion import bundled_config_dir

    configs = bundled_config_dir(version)
    with torch.device("meta"):
        vae = AutoencoderKL.from_config(AutoencoderKL.load_config(configs / "vae"))
        unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(configs / "unet"))
        model = IccldModel(vae, 19)
        context = torch.zeros(1, 77, unet.config.cross_attention_dim)
        model.attach_denoiser(unet, DDPMScheduler.from_config(DDPMScheduler.load_config(configs / "scheduler")), context)
        images = torch.zeros(1, 3, 512, 512)
        latents, features = model.encoder(images)
        assert tuple(latents.shape) == (1, 4, 64, 64)
        assert [tuple(f.shape[1:]) for f in features] == [(128, 512, 512), (256, 256, 256), (512, 128, 128), (512, 64, 64)]
        assert model.denoiser.unet.conv_in.in_channels == 8 and model.denoiser.unet.config.in_channels == 8
        prediction = model.denoiser(latents, latents, torch.zeros(1, dtype=torch.long))
        assert tuple(prediction.shape) == (1, 4, 64, 64)
        assert tuple(model.decoder(latents, features).shape) == (1, 19, 512, 512)  # logits at image resolution
    skips = [(s.in_channels, s.out_channels) for s in model.decoder.skips]
    assert skips == [(512, 512), (512, 512), (256, 512), (128, 256)]  # E's stride-8…1 stages into D's up blocks
    counts = {name: sum(p.numel() for p in part.parameters()) for name, part in
              (("E", model.encoder), ("D", model.decoder), ("eps", model.denoiser))}
    projections = sum(p.numel() for p in model.decoder.skips.parameters())
    assert projections == 512 * 513 + 512 * 513 + 256 * 512 + 512 + 128 * 256 + 256
    assert 34e6 < counts["E"] < 35e6 and 49e6 < counts["D"] - projections < 50e6  # SD's VAE halves (34.2 M, 49.5 M)
    unet_size = {"v1": 859_520_964, "v2": 865_910_724}[version]  # SD's UNets
    assert counts["eps"] == unet_size + 4 * 320 * 3 * 3  # conv_in takes 4 more channels


# -- E, D and the inter-coder connections -------------------------------------------------------------


def test_the_inter_coder_connections_carry_gradient_and_the_ablation_has_none(tiny_sd: Path):
    connected, ablated = tiny_model(tiny_sd, denoiser=False), tiny_model(tiny_sd, inter_coder="none", denoiser=False)
    assert ablated.decoder.skips is None
    images = torch.rand(1, 3, 64, 64)
    latents, features = connected.encoder(images)
    features = [f.detach().requires_grad_() for f in features]
    connected.decoder(latents.detach(), features).square().mean().backward()
    # zero-initialised: the projections learn from the first step, and E's features then reach the logits
    assert all(skip.weight.grad.abs().sum() > 0 for skip in connected.decoder.skips)
    with torch.no_grad():
        for skip in connected.decoder.skips:
            skip.weight.normal_()
    connected.decoder(latents.detach(), features).square().mean().backward()
    assert all(f.grad is not None and f.grad.abs().sum() > 0 for f in features)
    features = [f.detach().requires_grad_() for f in features]
    ablated.decoder(latents.detach(), features).square().mean().backward()
    assert all(f.grad is None for f in features)  # D sees the latent only
    assert not any("skips" in name for name in ablated.state_dict())


def test_e_is_the_vae_encoder_mean_and_d_starts_from_the_vae_decoder(tiny_sd: Path):
    sd = load_stable_diffusion(tiny_sd)
    model = tiny_model(tiny_sd, denoiser=False)
    images = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        latents, _ = model.encoder(images)
        expected = sd.vae.encode(images * 2 - 1).latent_dist.mean * sd.vae.config.scaling_factor
    assert torch.allclose(latents, expected, atol=1e-6)
    assert torch.equal(model.decoder.up_blocks[0].resnets[0].conv1.weight, sd.vae.decoder.up_blocks[0].resnets[0].conv1.weight)
    with torch.no_grad():
        logits = model.logits(torch.rand(1, 3, 50, 70))  # sides off the 64 grid: run at 64×128, logits back
    assert tuple(logits.shape) == (1, NUM_CLASSES, 50, 70)


# -- ε_θ: sampling and the one-step estimate ----------------------------------------------------------


def test_t_step_sampling_repeats_for_a_seed_and_averages_several(tiny_sd: Path):
    model = tiny_model(tiny_sd, sampling_steps=4).eval()
    with torch.no_grad():
        condition, _ = model.encoder(torch.rand(1, 3, 64, 64))
        first, again, other = model.sample(condition, 0), model.sample(condition, 0), model.sample(condition, 1)
    assert torch.equal(first, again) and not torch.allclose(first, other)
    calls = []
    model.denoiser.register_forward_hook(lambda *args: calls.append(1))
    images = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        one = model(images)
        assert len(calls) == 4  # T denoising steps
        model.set_sampling(4, 0, 2)
        two = model(images)
        assert len(calls) == 12
        latents, features = model.encoder(images)
        draws = [model.decoder(model.sample(latents, seed), features) for seed in (0, 1)]
    assert torch.allclose(one, draws[0], atol=1e-6)
    assert torch.allclose(two, (draws[0] + draws[1]) / 2, atol=1e-6)


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_a_perfect_prediction_gives_back_z0_in_one_step(tiny_sd: Path, prediction_type: str):
    from diffusers import DDPMScheduler

    model = tiny_model(tiny_sd)
    model.denoiser.scheduler = DDPMScheduler.from_config(model.denoiser.scheduler.config, prediction_type=prediction_type)
    images = torch.rand(2, 3, 64, 64)
    timesteps = torch.tensor([10, 900])
    with torch.no_grad():
        latents, features = model.encoder(images)
        step = model.one_step(latents, features, timesteps, torch.Generator().manual_seed(0))
        noise = torch.randn(latents.shape, generator=torch.Generator().manual_seed(0))
        alpha = model.denoiser.scheduler.alphas_cumprod[timesteps].view(-1, 1, 1, 1)
        expected = noise if prediction_type == "epsilon" else alpha.sqrt() * noise - (1 - alpha).sqrt() * latents
        assert torch.allclose(step.target, expected, atol=1e-5)
        model.denoiser.forward = lambda noisy, condition, t: expected  # the UNet an ideal training would give
        perfect = model.one_step(latents, features, timesteps, torch.Generator().manual_seed(0))
    assert torch.allclose(perfect.latent, latents, atol=1e-4)
    assert torch.allclose(perfect.logits, model.decoder(latents, features), atol=1e-4)


# -- the adversarial alternation ----------------------------------------------------------------------


def toy_game(kind: str):
    """Source latents ~ N(+2, 1), target ~ N(−2, 1) + a learnt shift; the discriminator with its own Adam."""
    torch.manual_seed(0)
    discriminator = LatentDiscriminator(4, width=8)
    optimizer = torch.optim.Adam(discriminator.parameters(), lr=1e-3, betas=(0.9, 0.99))
    shift = torch.zeros((), requires_grad=True)

    def update(loss: torch.Tensor) -> float:
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return loss.item()

    def draw() -> tuple[torch.Tensor, torch.Tensor]:
        return torch.randn(8, 4, 8, 8) + 2, torch.randn(8, 4, 8, 8) - 2 + shift

    return discriminator, update, shift, draw


def test_one_alternation_moves_each_side_with_its_sign():
    discriminator, update, shift, draw = toy_game("bce")
    source, target = draw()
    before = discriminator(torch.cat([source, target])).detach()
    terms = adversarial_terms(discriminator, discriminator, update, source, target, "bce")
    after = discriminator(torch.cat([source, target])).detach()
    assert after[:8].mean() > before[:8].mean() and after[8:].mean() < before[8:].mean()  # D: source up, target down
    for p in discriminator.parameters():
        p.grad = None
    terms.generator_loss.backward()
    assert all(p.grad is None for p in discriminator.parameters())  # the generator's term trains no discriminator
    assert shift.grad < 0  # descending it moves the target towards the source (+)


@pytest.mark.parametrize("kind", ["bce", "lsgan"])
def test_alternating_updates_close_a_known_distribution_gap(kind: str):
    discriminator, update, shift, draw = toy_game(kind)
    generator_optimizer = torch.optim.Adam([shift], lr=0.05)
    gaps = []
    for _ in range(300):
        source, target = draw()
        terms = adversarial_terms(discriminator, discriminator, update, source, target, kind)
        generator_optimizer.zero_grad()
        terms.generator_loss.backward()
        generator_optimizer.step()
        gaps.append(abs(4.0 - shift.item()))
    # GAN training oscillates around the equilibrium: the mean gap of the second half, not the last value
    assert sum(gaps[150:]) / 150 < 1.5, (kind, gaps[-1])  # from 4 at the start


# -- both stages through the trainer ------------------------------------------------------------------


def iccld_config(folder: Path, out_dir: Path, *extra: str):
    return load_config(YAML, [*tiny_overrides(folder, out_dir), "method.model.sampling_steps=3", *extra])


@pytest.fixture(scope="module")
def stage_one(synth_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train(iccld_config(synth_folder, tmp_path_factory.mktemp("iccld") / "one"), progress=False)


@pytest.fixture(scope="module")
def stage_two(synth_folder: Path, stage_one: Path) -> Path:
    return train(iccld_config(synth_folder, stage_one.parent / "two", "method.stage=2",
                              f"method.model.init_weights={stage_one / 'model'}", "method.adversarial.warmup_iters=2"),
                 progress=False)


def test_stage_one_self_trains_e_and_d_and_keeps_their_ema_average(stage_one: Path):
    logged = log_lines(stage_one)
    assert [line["iteration"] for line in logged] == [1, 2, 3, 4]
    assert all(math.isfinite(line["loss_mixed_ce"]) and 0 <= line["pseudo_label_weight"] <= 1 for line in logged)
    assert all(line["loss"] == pytest.approx(line["loss_source_ce"] + line["loss_mixed_ce"], rel=1e-5) for line in logged)
    saved, config = weights(stage_one), json.loads((stage_one / "model" / "config.json").read_text())
    assert config["format"] == "madm-iccld/1" and config["unet"] is None and not any(k.startswith("denoiser") for k in saved)
    # the caption reading keeps the EMA average: the saved weights are checkpoint-4's teacher, not its trained network
    from safetensors.torch import load_file

    ema = load_file(str(stage_one / "checkpoints" / "checkpoint-4" / "ema.safetensors"))
    assert all(torch.equal(saved[name], tensor) for name, tensor in ema.items())
    trained = load_file(str(stage_one / "checkpoints" / "checkpoint-4" / "model.safetensors"))
    assert any(not torch.equal(trained[name], tensor) for name, tensor in ema.items())


def test_the_usual_reading_keeps_the_trained_network(synth_folder, tmp_path):
    run_dir = train(iccld_config(synth_folder, tmp_path / "usual", "method.reading=usual", "run.checkpoint_every=0",
                                 "optim.max_iter=2"), progress=False)  # fmt: skip
    from safetensors.torch import load_file

    trained = load_file(str(run_dir / "checkpoints" / "checkpoint-2" / "model.safetensors"))
    assert all(torch.equal(trained[name], tensor) for name, tensor in weights(run_dir).items())


def test_stage_two_trains_eps_alone_against_its_discriminator(stage_one: Path, stage_two: Path):
    logged = log_lines(stage_two)
    assert [line["adversarial_weight"] for line in logged] == [0.0, 0.5e-3, 1e-3, 1e-3]  # linear warm-up over 2
    for key in ("loss_diffusion", "loss_source_ce", "loss_target_ce", "loss_discriminator", "loss_adversarial"):
        assert all(math.isfinite(line[key]) for line in logged), key
    line = logged[-1]
    assert line["loss"] == pytest.approx(line["loss_diffusion"] + line["loss_source_ce"] + line["loss_target_ce"]
                                         + 1e-3 * line["loss_adversarial"], rel=1e-5)
    before, after = weights(stage_one), weights(stage_two)
    assert all(torch.equal(after[k], v) for k, v in before.items())  # E and D frozen
    unet = {k: v for k, v in after.items() if k.startswith("denoiser.unet.")}
    assert unet["denoiser.unet.conv_in.weight"].shape[1] == 8
    from diffusers import UNet2DConditionModel

    initial = UNet2DConditionModel.from_pretrained(stage_two / "tiny_sd" / "unet").state_dict()
    assert any(not torch.equal(unet[f"denoiser.unet.{k}"], v) for k, v in initial.items() if k != "conv_in.weight")
    from safetensors.torch import load_file

    checkpoint = stage_two / "checkpoints"
    first, last = (load_file(str(checkpoint / f"checkpoint-{n}" / "model_1.safetensors")) for n in (2, 4))
    assert first.keys() == dict(LatentDiscriminator(4, 64).named_parameters()).keys()
    assert any(not torch.equal(first[k], last[k]) for k in first)  # the discriminator trains with its own Adam
    assert (checkpoint / "checkpoint-4" / "optimizer_1.bin").is_file()


def test_stage_two_resumes_bit_identically(synth_folder, stage_one: Path, stage_two: Path, tmp_path, monkeypatch):
    real_step = IccldMethod.step

    def killed(self, context, source, target):
        if context.iteration == 2:
            raise KeyboardInterrupt  # after checkpoint-2 was written
        return real_step(self, context, source, target)

    options = ("method.stage=2", f"method.model.init_weights={stage_one / 'model'}", "method.adversarial.warmup_iters=2")
    monkeypatch.setattr(IccldMethod, "step", killed)
    with pytest.raises(KeyboardInterrupt):
        train(iccld_config(synth_folder, tmp_path / "b", *options), progress=False)
    monkeypatch.setattr(IccldMethod, "step", real_step)
    resumed = train(iccld_config(synth_folder, tmp_path / "b", *options, "run.resume=latest"), progress=False)
    draws = ("adversarial_weight", "lr", "loss_diffusion")
    assert [{k: line[k] for k in draws} for line in log_lines(resumed)] == \
        [{k: line[k] for k in draws} for line in log_lines(stage_two)]
    from safetensors.torch import load_file

    for name in ("model.safetensors", "model_1.safetensors", "ema.safetensors"):  # ε_θ, the discriminator, the EMA
        expected = load_file(str(stage_two / "checkpoints" / "checkpoint-4" / name))
        got = load_file(str(resumed / "checkpoints" / "checkpoint-4" / name))
        assert expected.keys() == got.keys()
        different = [k for k in expected if not torch.equal(expected[k], got[k])]
        assert not different, f"{name}: {len(different)} tensors differ after the resume (first: {different[:3]})"


def test_a_saved_stage_two_model_samples_the_same_masks_after_loading(stage_two: Path):
    from madm_train.models.saved import load_saved

    loaded = load_saved(stage_two / "model")
    assert loaded.format == "madm-iccld/1" and loaded.logits_stride == 1
    assert loaded.network.sampling_steps == 3 and loaded.network.denoiser is not None
    images = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        first, again = loaded.logits(images), loaded.logits(images)
    assert torch.equal(first, again)
    metrics = json.loads((stage_two / "metrics.json").read_text())
    assert 0 <= metrics["miou"] <= 1 and metrics["images"] > 0


def test_the_no_inter_coder_ablation_trains_through_both_stages(synth_folder, tmp_path):
    one = train(iccld_config(synth_folder, tmp_path / "one", "method.model.inter_coder=none", "run.checkpoint_every=0",
                             "optim.max_iter=2"), progress=False)  # fmt: skip
    assert not any("skips" in k for k in weights(one))
    two = train(iccld_config(synth_folder, tmp_path / "two", "method.model.inter_coder=none", "method.stage=2",
                             f"method.model.init_weights={one / 'model'}", "run.checkpoint_every=0", "optim.max_iter=2"),
                progress=False)
    assert json.loads((two / "model" / "config.json").read_text())["inter_coder"] == "none"


def test_bad_iccld_settings_are_refused_before_training(synth_folder, tmp_path, stage_one, stage_two):
    from madm_ros.palettes import get_label_set
    from madm_train.methods.base import BuildContext

    with pytest.raises(ConfigError, match="method.stage=2 trains ε_θ on stage 1's encoder and decoder"):
        iccld_config(synth_folder, tmp_path / "a", "method.stage=2")
    with pytest.raises(ConfigError, match="must be multiples of 64"):
        iccld_config(synth_folder, tmp_path / "b", "data.crop_hw=[48, 48]")
    with pytest.raises(ConfigError, match="method.model.pretrained is empty: ICCLD needs a local Stable Diffusion"):
        train(iccld_config(synth_folder, tmp_path / "c", "method.model.preset=sd"), progress=False)
    for options, message in [
        (("method.model.inter_coder=none",), "was trained with inter_coder=add"),
        (("method.stage=1",), "is a stage-2 model"),
    ]:
        source = stage_two if "stage=1" in options[0] else stage_one
        config = iccld_config(synth_folder, tmp_path / "d", f"method.model.init_weights={source / 'model'}", *options)
        with pytest.raises(ConfigError, match=message):
            config.method.build(BuildContext(config, get_label_set("dsec11"), tmp_path / "d"))
    config = iccld_config(synth_folder, tmp_path / "e", f"method.model.init_weights={stage_one / 'model'}")
    with pytest.raises(ConfigError, match="predicts 11 classes, data.label_set dsec11 has 19"):
        config.method.build(BuildContext(config, get_label_set("cityscapes19"), tmp_path / "e"))


def test_an_iccld_teacher_distils_into_a_student_that_exports(synth_folder, tmp_path, stage_two):
    summary = distil_and_export(stage_two / "model", YAML, synth_folder, tmp_path)
    assert summary["frames"] > 0 and summary["final"]["teacher_kl"] < summary["initial"]["teacher_kl"]
    assert json.loads((tmp_path / "distil" / "student" / "config.json").read_text())["label_set"] == "dsec11"
