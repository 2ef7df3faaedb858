"""DIFF (iccld_diff_spec.md B): trajectory, up-path taps at real SD size, fusion sizes, the two branches, the method
in both modes through the trainer, saving, distillation of a DIFF teacher.

Real-size checks build the SD-1.x/2.x UNets from the bundled configs on the meta device (shapes and
parameter counts, no weights); the forward checks use the tiny preset (the real diffusers classes).
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
from madm_train.methods.diff.method import consistency_loss  # noqa: E402
from madm_train.methods.diff.model import DiffModel  # noqa: E402
from madm_train.methods.diff.network import SIZES  # noqa: E402
from madm_train.methods.diff.trajectory import PRESETS, Trajectory, ddim_forward_step, eta_at, v_to_epsilon  # noqa: E402
from madm_train.models.stable_diffusion import load_stable_diffusion  # noqa: E402
from madm_train.training.trainer import train  # noqa: E402
from tests.madm_train.tiny_runs import distil_and_export, log_lines, tiny_overrides, weights  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
YAML = REPO / "config/train/synthetic_event_diff_tiny.yaml"
NUM_CLASSES = 11


def tiny_model(tiny_sd: Path, **options) -> DiffModel:
    """A tiny DIFF network with two random class-prompt embeddings (classes 1 and 3)."""
    sd = load_stable_diffusion(tiny_sd)
    torch.manual_seed(0)
    prompts = torch.randn(2, *sd.empty_prompt.shape[1:])
    return DiffModel(sd.unet, sd.vae, sd.scheduler, sd.empty_prompt, NUM_CLASSES, class_prompts=prompts,
                     prompt_classes=(1, 3), **{"steps": "5", **SIZES["tiny"], **options})


# -- trajectory ------------------------------------------------------------------------------------


def test_the_released_trajectory_runs_the_unet_at_its_37_steps_and_keeps_nine():
    released = PRESETS["37"]
    assert len(released.steps) == 37 and released.steps[:24] == tuple(range(24))
    assert released.steps[24:] == (26, 30, 34, 40, 45, 52, 60, 69, 80, 91, 105, 121, 139)
    assert released.next_steps[-1] == 160 and released.next_steps[:-1] == released.steps[1:]
    assert [released.steps[i] for i in released.saved] == [91, 52, 30, 22, 18, 14, 11, 7, 3]  # concatenation order
    assert released.run_until == 34  # t = 105, 121, 139 change nothing that is kept
    assert sum(eta_at(t, 1.0, (10, 250)) for t in released.steps) == 26  # noise injected at 10 < t < 250
    five = PRESETS["5"]
    assert (five.steps, five.next_steps, [five.steps[i] for i in five.saved]) == (
        (0, 1, 20, 40, 60), (1, 20, 40, 60, 80), [60, 40, 20, 1, 0])
    with pytest.raises(ConfigError, match="must move forward in noise"):
        Trajectory((5,), (5,), (0,))
    with pytest.raises(ConfigError, match="preset must be one of 37, 5, 1"):
        Trajectory.preset("9")


def test_a_trajectory_step_is_the_ddim_formula_in_the_noising_direction():
    torch.manual_seed(0)
    x, eps, z = torch.randn(3, 1, 4, 8, 8)
    a, b, eta = 0.98, 0.9, 1.0
    x0 = (x - math.sqrt(1 - a) * eps) / math.sqrt(a)
    sigma = eta * math.sqrt((1 - b / a) * (1 - b) / (1 - a))
    # moving towards noise, σ² exceeds 1 − ᾱ_{t′}: the released clamp leaves no ε term (c = √1e-10)
    assert sigma**2 > 1 - b
    expected = math.sqrt(b) * x0 + sigma * z + math.sqrt(1e-10) * eps
    assert torch.allclose(ddim_forward_step(x, eps, a, b, eta, z), expected, atol=1e-6)
    # η = 0 is deterministic: the same x̂₀ re-noised with the same ε to the new level
    assert torch.allclose(ddim_forward_step(x, eps, a, b, 0.0, None), math.sqrt(b) * x0 + math.sqrt(1 - b) * eps, atol=1e-6)
    with pytest.raises(ConfigError, match="needs noise"):
        ddim_forward_step(x, eps, a, b, 1.0, None)


def record_unet_calls(model: DiffModel) -> list[tuple[torch.Tensor, int, torch.Tensor]]:
    """(latent input, timestep, prediction) of every UNet call, through hooks on the real UNet."""
    calls: list[tuple[torch.Tensor, int, torch.Tensor]] = []

    def hook(module, args, kwargs, output):
        sample, timestep = args[0], args[1]
        calls.append((sample.detach().clone(), int(timestep[0]), output.sample.detach().clone()))

    model.unet.register_forward_hook(hook, with_kwargs=True)
    return calls


@pytest.mark.parametrize("deterministic", [True, False])
def test_the_latents_along_the_released_trajectory_equal_hand_computed_steps(tiny_sd: Path, deterministic: bool):
    model = tiny_model(tiny_sd, steps="37", deterministic="always" if deterministic else "never")
    calls = record_unet_calls(model)
    alphas = model.scheduler.alphas_cumprod.double()
    with torch.no_grad():
        model.features(torch.rand(1, 3, 64, 64), None, torch.Generator().manual_seed(0))
    released = PRESETS["37"]
    assert [t for _, t, _ in calls] == list(released.steps[:34])  # the noise level of every UNet call
    noise = []
    for k in range(len(calls) - 1):
        x, t, eps = calls[k]
        t_next = released.next_steps[k]
        a, b = float(alphas[t]), float(alphas[t_next])
        x0 = (x.double() - math.sqrt(1 - a) * eps.double()) / math.sqrt(a)
        sigma = (0.0 if deterministic else eta_at(t, 1.0, (10, 250))) * math.sqrt((1 - b / a) * (1 - b) / (1 - a))
        mean = math.sqrt(b) * x0 + math.sqrt(max(1 - b - sigma**2, 1e-10)) * eps.double()
        residual = calls[k + 1][0].double() - mean
        if sigma == 0:
            assert residual.abs().max().item() < 1e-4, (k, t)
        else:
            noise.append(residual / sigma)
    if deterministic:
        assert noise == []
    else:  # fresh N(0, 1) noise scaled by σ exactly where 10 < t < 250 (22 of the 33 checked steps)
        z = torch.cat([n.flatten() for n in noise])
        assert len(noise) == 22 and abs(z.mean().item()) < 0.1 and abs(z.std().item() - 1) < 0.1


def test_v_to_epsilon_inverts_the_v_parameterisation():
    from diffusers import DDPMScheduler

    scheduler = DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                              prediction_type="v_prediction")
    torch.manual_seed(0)
    x0, eps = torch.randn(2, 1, 4, 8, 8)
    t = torch.tensor([300])
    x_t = scheduler.add_noise(x0, eps, t)
    v = scheduler.get_velocity(x0, eps, t)
    assert torch.allclose(v_to_epsilon(v, x_t, float(scheduler.alphas_cumprod[300])), eps, atol=1e-5)


# -- taps, fusion, head at real SD size (meta device) ----------------------------------------------


def meta_diff(version: str) -> DiffModel:
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel

    from madm_train.models.stable_diffusion import bundled_config_dir

    folder = bundled_config_dir(version)
    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(folder / "unet"))
        vae = AutoencoderKL.from_config(AutoencoderKL.load_config(folder / "vae"))
        width = unet.config.cross_attention_dim
        model = DiffModel(unet, vae, DDPMScheduler.from_pretrained(folder / "scheduler"), torch.zeros(1, 77, width), 19,
                          steps="37")
    return model


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_the_taps_are_every_up_path_resnet_and_first_transformer_block_as_released(version: str):
    model = meta_diff(version)
    layers = model.taps.layers
    resnets = [(layer.block, layer.stride, layer.channels) for layer in layers if layer.kind == "resnet"]
    attentions = [(layer.block, layer.stride, layer.channels) for layer in layers if layer.kind == "attention"]
    assert resnets == [(0, 64, 1280)] * 3 + [(1, 32, 1280)] * 3 + [(2, 16, 640)] * 3 + [(3, 8, 320)] * 3
    assert attentions == [(1, 32, 1280)] * 3 + [(2, 16, 640)] * 3 + [(3, 8, 320)] * 3  # up-block 0 has none
    # channels per saved step × 9 steps at the fused strides (the spec's table): 69,120 / 34,560 / 17,280
    per_stride = {s: 9 * sum(layer.channels for layer in layers if layer.stride == s) for s in (8, 16, 32)}
    assert per_stride == {8: 17_280, 16: 34_560, 32: 69_120}


def test_released_fusion_and_head_have_the_specs_parameter_counts_at_sd_size():
    model = meta_diff("v2")

    def millions(module: torch.nn.Module) -> float:
        return sum(p.numel() for p in module.parameters()) / 1e6

    blocks = {s: millions(model.aggregation.blocks[str(s)]) for s in (32, 16, 8)}
    assert blocks == {32: pytest.approx(180.4, abs=0.1), 16: pytest.approx(45.1, abs=0.1), 8: pytest.approx(11.3, abs=0.1)}
    assert millions(model.finecoder) == pytest.approx(68.8, abs=0.1)
    assert millions(model.head) == pytest.approx(4.4, abs=0.3)
    assert millions(model.unet) == pytest.approx(865.9, abs=0.1)
    trainable = {name.split(".")[0] for name, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"aggregation", "finecoder", "head"}  # UNet and VAE frozen


# -- the two branches (tiny preset) ----------------------------------------------------------------


def test_the_conditional_branch_equals_the_unconditional_one_when_no_prompted_class_is_present(tiny_sd: Path):
    model = tiny_model(tiny_sd)
    images = torch.rand(2, 3, 64, 128)
    labels = torch.zeros(2, 64, 128, dtype=torch.long)  # class 0 has no prompt

    def run(labels_or_none: torch.Tensor | None) -> torch.Tensor:
        torch.manual_seed(5)  # the head's dropout
        return model(images, labels_or_none, torch.Generator().manual_seed(0))

    unconditional = run(None)
    assert torch.equal(run(labels), unconditional)
    labels[:, :16, :16] = 3
    conditional = run(labels)
    assert conditional.shape == unconditional.shape == (2, NUM_CLASSES, 16, 32)
    assert not torch.allclose(conditional, unconditional)


def test_with_guidance_zero_the_class_passes_change_only_the_attention_taps(tiny_sd: Path):
    model = tiny_model(tiny_sd, guidance=0.0, deterministic="always")
    images = torch.rand(1, 3, 64, 64)
    labels = torch.full((1, 64, 64), 1)
    plain = model.features(images)
    conditioned = model.features(images, labels)
    for step_plain, step_conditioned in zip(plain, conditioned):
        for layer in model.taps.layers:
            same = torch.allclose(step_plain[layer.name], step_conditioned[layer.name], atol=1e-5)
            # ResNet taps come from the empty-prompt copy on the same latents (the guided update is the
            # unconditional one); attention taps add the class pass on top of the doubled empty pass
            assert same == (layer.kind == "resnet"), layer.name


def test_evaluation_is_deterministic_and_training_draws_its_noise_from_the_generator(tiny_sd: Path):
    model = tiny_model(tiny_sd)  # deterministic="eval"
    images = torch.rand(1, 3, 64, 64)
    model.eval()
    with torch.no_grad():
        assert torch.equal(model.logits(images), model.logits(images))
    model.train()
    with torch.no_grad():
        torch.manual_seed(1)
        a = model(images, None, torch.Generator().manual_seed(0))
        torch.manual_seed(1)
        b = model(images, None, torch.Generator().manual_seed(0))
        torch.manual_seed(1)
        c = model(images, None, torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and not torch.allclose(a, c)


def test_a_resizing_network_still_gives_stride_four_logits_of_the_input(tiny_sd: Path):
    model = tiny_model(tiny_sd, input_size=64).eval()
    with torch.no_grad():
        assert model.logits(torch.rand(1, 3, 90, 130)).shape == (1, NUM_CLASSES, 23, 33)
    with pytest.raises(Exception, match="not a multiple of 64"):
        tiny_model(tiny_sd).logits(torch.rand(1, 3, 90, 130))


def test_consistency_is_mse_or_a_kl_towards_the_detached_conditional_branch():
    torch.manual_seed(0)
    conditional = torch.randn(2, 5, 4, 4, requires_grad=True)
    unconditional = torch.randn(2, 5, 4, 4, requires_grad=True)
    mse = consistency_loss(conditional, unconditional, "mse", 1.0)
    assert mse.item() == pytest.approx(((conditional - unconditional) ** 2).mean().item())
    mse.backward()
    assert conditional.grad is not None and unconditional.grad is not None  # no stop-gradient, as released
    conditional.grad = unconditional.grad = None
    kl = consistency_loss(conditional, unconditional, "kl", 2.0)
    kl.backward()
    assert conditional.grad is None and unconditional.grad is not None and kl.item() > 0
    assert consistency_loss(conditional, conditional, "kl", 2.0).item() == pytest.approx(0.0, abs=1e-7)


def test_a_saved_diff_model_loads_through_the_saved_format_table_with_equal_logits(tiny_sd: Path, tmp_path: Path):
    from madm_train.models.saved import load_saved

    model = tiny_model(tiny_sd, aggregation="shared").eval()
    model.add_lora("events", 2, 2.0)
    model.save(tmp_path / "model")
    loaded = load_saved(tmp_path / "model")
    images = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert loaded.format == "madm-diff/1" and loaded.logits_stride == 4
        assert torch.equal(loaded.logits(images), model.logits(images))
    assert loaded.network.prompt_classes == (1, 3) and torch.equal(loaded.network.class_prompts, model.class_prompts)


# -- the method through the trainer -----------------------------------------------------------------


def diff_config(folder: Path, out_dir: Path, *extra: str):
    return load_config(YAML, [*tiny_overrides(folder, out_dir), "method.model.steps=1", *extra])


@pytest.fixture(scope="module")
def adapted(synth_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train(diff_config(synth_folder, tmp_path_factory.mktemp("diff") / "adapted", "method.ipkl.prompts=all"),
                 progress=False)


def test_adaptation_trains_fusion_and_head_on_both_branches_and_the_mixed_target(adapted: Path):
    logged = log_lines(adapted)
    assert [line["iteration"] for line in logged] == [1, 2, 3, 4]
    for key in ("loss_source_ce", "loss_conditional_ce", "loss_consistency", "loss_mixed_ce", "pseudo_label_weight"):
        assert all(math.isfinite(line[key]) for line in logged), key
    assert any(line["loss_consistency"] > 0 for line in logged)
    first = logged[0]
    assert first["loss"] == pytest.approx(first["loss_source_ce"] + first["loss_conditional_ce"]
                                          + first["loss_consistency"] + first["loss_mixed_ce"], rel=1e-5)
    # the tiny SD the run built is the frozen backbone: its UNet weights are in the model unchanged
    from diffusers import UNet2DConditionModel

    unet = UNet2DConditionModel.from_pretrained(adapted / "tiny_sd" / "unet").state_dict()
    saved = weights(adapted)
    assert all(torch.equal(saved[f"unet.{k}"], v) for k, v in unet.items())
    prompts = json.loads((adapted / "config.json").read_text())["method"]["ipkl"]
    assert prompts["prompts"] == "all" and (adapted / "prompt_embeddings.safetensors").is_file()
    assert json.loads((adapted / "model" / "config.json").read_text())["prompt_classes"] == list(range(NUM_CLASSES))


def test_generalisation_needs_no_target_and_ipkl_off_runs_the_unconditional_branch_alone(synth_folder, tmp_path):
    run_dir = train(diff_config(synth_folder, tmp_path / "g", "method.mode=generalisation", "method.ipkl.enabled=false",
                                "run.checkpoint_every=0"), progress=False)  # fmt: skip
    logged = log_lines(run_dir)
    assert all(set(line) >= {"loss_source_ce"} and "loss_mixed_ce" not in line and "loss_conditional_ce" not in line
               for line in logged)
    assert all(line["loss"] == pytest.approx(line["loss_source_ce"]) for line in logged)
    assert json.loads((run_dir / "model" / "config.json").read_text())["prompt_classes"] == []


def test_resuming_a_diff_run_continues_from_its_checkpoint(synth_folder, tmp_path, adapted):
    import shutil

    run_dir = tmp_path / "resumed"
    shutil.copytree(adapted, run_dir)
    shutil.rmtree(run_dir / "checkpoints" / "checkpoint-4")
    resumed = train(diff_config(synth_folder, run_dir, "method.ipkl.prompts=all", "run.resume=checkpoint-2"),
                    progress=False)
    assert [line["iteration"] for line in log_lines(resumed)] == [1, 2, 3, 4]
    original, again = weights(adapted), weights(resumed)
    assert original.keys() == again.keys()
    # the same draws: bit-identical where this platform's kernels are run-to-run deterministic
    assert max((original[k].float() - again[k].float()).abs().max().item() for k in original) < 1e-4


def test_bad_diff_settings_are_refused_before_anything_loads(synth_folder, tmp_path, adapted):
    from madm_ros.palettes import get_label_set
    from madm_train.methods.base import BuildContext

    with pytest.raises(ConfigError, match="must be multiples of 64"):
        diff_config(synth_folder, tmp_path / "b", "data.crop_hw=[48, 48]")
    with pytest.raises(ConfigError, match="method.ema.include_unet"):
        diff_config(synth_folder, tmp_path / "c", "method.ema.include_unet=true")
    with pytest.raises(ConfigError, match="method.model.pretrained is empty: DIFF needs a local Stable Diffusion"):
        train(diff_config(synth_folder, tmp_path / "a", "method.model.preset=sd"), progress=False)
    with pytest.raises(ConfigError, match=r"prompt_texts names \['tree'\], which are not classes of dsec11"):
        train(diff_config(synth_folder, tmp_path / "d", "method.ipkl.prompt_texts={tree: a tree}"), progress=False)
    config = diff_config(synth_folder, tmp_path / "e", f"method.model.init_weights={adapted / 'model'}")
    with pytest.raises(ConfigError, match="predicts 11 classes, data.label_set dsec11 has 19"):
        config.method.build(BuildContext(config, get_label_set("cityscapes19"), tmp_path / "e"))
    config = diff_config(synth_folder, tmp_path / "f", f"method.model.init_weights={adapted / 'model'}",
                         "method.ipkl.enabled=false")
    assert config.method.build(BuildContext(config, get_label_set("dsec11"), tmp_path / "f")).network.prompt_classes


def test_a_prompt_override_reaches_the_embeddings_and_adds_its_class(synth_folder, tmp_path):
    from madm_ros.palettes import get_label_set
    from madm_train.methods.base import BuildContext
    from madm_train.methods.diff.prompts import DIFF_CITYSCAPES_PROMPTS, PromptEmbeddings

    config = diff_config(synth_folder, tmp_path, "method.ipkl.prompt_texts={road: a road}")
    network = config.method.build(BuildContext(config, get_label_set("dsec11"), tmp_path)).network
    cached = PromptEmbeddings.load(tmp_path / "prompt_embeddings.safetensors")
    names = get_label_set("dsec11").class_names
    assert cached.prompts[names.index("road")] == "a road"
    assert cached.prompts[names.index("sidewalk")] == DIFF_CITYSCAPES_PROMPTS["sidewalk"]  # the released set stays
    assert network.prompt_classes == cached.class_ids and torch.equal(network.class_prompts, cached.embeddings)


def test_a_diff_teacher_distils_into_a_student(synth_folder, tmp_path, adapted):
    summary = distil_and_export(adapted / "model", YAML, synth_folder, tmp_path)  # deploys as any student
    assert summary["frames"] == 10 and summary["final"]["teacher_kl"] < summary["initial"]["teacher_kl"]
    folders = list((tmp_path / "distil" / "teacher_cache").iterdir())
    assert [json.loads((p / "teacher.json").read_text())["stride"] for p in folders] == [4]  # stride-4 logits
    assert json.loads((tmp_path / "distil" / "student" / "config.json").read_text())["label_set"] == "dsec11"


def test_lora_finetuning_trains_adapters_through_the_saved_steps_and_leaves_the_unet_base(synth_folder, tmp_path):
    run_dir = train(diff_config(synth_folder, tmp_path / "lora", "method.model.finetune=lora", "method.model.lora_rank=2",
                                "run.checkpoint_every=0", "optim.max_iter=2"), progress=False)  # fmt: skip
    saved = weights(run_dir)
    from diffusers import UNet2DConditionModel

    base = UNet2DConditionModel.from_pretrained(run_dir / "tiny_sd" / "unet").state_dict()
    adapters = {k: v for k, v in saved.items() if "lora_" in k}
    assert adapters and all("events" in k for k in adapters)  # one adapter, named after the task
    assert any(v.abs().sum() > 0 for k, v in adapters.items() if "lora_B" in k)  # B starts at 0: it was trained
    unet = {k.removeprefix("unet."): v for k, v in saved.items() if k.startswith("unet.") and "lora_" not in k}

    def wrapped(key: str) -> str:  # peft keeps an adapted layer's own weights under .base_layer
        module, _, leaf = key.rpartition(".")
        return f"{module}.base_layer.{leaf}" if f"{module}.base_layer.{leaf}" in unet else key

    assert all(torch.equal(unet[wrapped(k)], v) for k, v in base.items())
