"""The MADM model on the tiny SD preset: real diffusers/transformers/peft classes, random weights, no downloads."""

from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")
pytest.importorskip("peft")

from madm_ros.errors import ConfigError, InputError, MadmError  # noqa: E402
from madm_train.models.head import DAFormerHead  # noqa: E402
from madm_train.models.madm_model import MadmModel  # noqa: E402
from madm_train.models.sd_backbone import Bottleneck, PromptConditioning, SDBackbone  # noqa: E402
from madm_train.models.tiny_sd import (  # noqa: E402
    TINY_BACKBONE_OPTIONS,
    build_tiny_model,
)

NUM_CLASSES = 11
TINY_OPTIONS = TINY_BACKBONE_OPTIONS


@pytest.fixture
def model(tiny_sd: Path) -> MadmModel:
    torch.manual_seed(0)
    return build_tiny_model(tiny_sd, NUM_CLASSES).eval()


def images(batch: int = 2, size: int = 64, seed: int = 1) -> torch.Tensor:
    return torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


def perturb_adapter(backbone: SDBackbone, name: str, seed: int) -> None:
    """Give an adapter's B matrices (zero at creation) random values so the adapter changes the output."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for key, p in backbone.unet.named_parameters():
            if f"lora_B.{name}." in key:
                p.copy_(torch.randn(p.shape, generator=generator) * 0.5)


# -- architecture ---------------------------------------------------------------------------------


def test_feature_taps_of_a_64x64_latent_sit_at_strides_32_16_8_as_in_sd(model: MadmModel) -> None:
    """Taps 5, 8, 11 of a 64×64 latent: SD-1.4 gives 1280×16², 640×32², 320×64² (spec §1.5).

    The tiny UNet has up-block widths (64, 64, 64, 32) in place of (1280, 1280, 640, 320), so the
    same taps are 64×16², 64×32², 32×64².
    """
    taps, output = model.backbone.run_unet(torch.randn(1, 4, 64, 64), torch.zeros(1, dtype=torch.long))
    assert {i: tuple(t.shape) for i, t in taps.items()} == {5: (1, 64, 16, 16), 8: (1, 64, 32, 32), 11: (1, 32, 64, 64)}
    assert tuple(output.shape) == (1, 4, 64, 64)


def test_forward_returns_projected_features_unet_output_latents_and_full_resolution_logits(model: MadmModel) -> None:
    logits, out = model(images(2, 128))
    assert {k: tuple(v.shape) for k, v in out.features.items()} == {
        "s0": (2, 16, 128, 128),
        "s3": (2, 32, 16, 16),
        "s4": (2, 32, 8, 8),
        "s5": (2, 32, 4, 4),
    }
    assert list(out.features) == list(model.head.in_channels)  # s0 first: it sets the head's output size
    assert tuple(out.unet_output.shape) == tuple(out.latents.shape) == (2, 4, 16, 16)
    assert tuple(logits.shape) == (2, NUM_CLASSES, 128, 128)
    assert float(out.decoded.min()) >= 0 and float(out.decoded.max()) <= 1


def test_backbone_resizes_inputs_to_input_size(tiny_sd: Path) -> None:
    backbone = SDBackbone.from_pretrained(tiny_sd, input_size=64, **TINY_OPTIONS)
    out = backbone(images(1, 96))
    assert tuple(out.latents.shape) == (1, 4, 8, 8)
    assert tuple(out.features["s0"].shape[-2:]) == (64, 64)


def test_prompt_and_projections_have_madm_sizes_for_sd_widths() -> None:
    prompt = PromptConditioning(torch.zeros(1, 77, 768), 1280)
    assert sum(p.numel() for p in prompt.parameters()) == 179_968  # spec §1.4: 3·77·768 + 2·1280
    projections = [Bottleneck(c, d, 128, 32) for c, d in ((3, 128), (320, 512), (640, 512), (1280, 512))]
    assert round(sum(p.numel() for m in projections for p in m.parameters()) / 1e6, 2) == 2.25  # spec §1.6


def test_daformer_head_has_madm_size_and_returns_logits_at_its_first_input_size() -> None:
    head = DAFormerHead({"s0": 128, "s3": 512, "s4": 512, "s5": 512}, NUM_CLASSES)
    assert sum(p.numel() for p in head.parameters()) == 3_874_059  # spec §1.6/§7: ≈ 3.87 M for K = 11
    small = DAFormerHead({"s0": 4, "s3": 8}, 3, embed_dim=8).eval()
    logits = small({"s0": torch.randn(1, 4, 32, 32), "s3": torch.randn(1, 8, 4, 4)})
    assert tuple(logits.shape) == (1, 3, 32, 32)


def test_time_offset_starts_at_exactly_zero_and_reaches_the_time_embedding(model: MadmModel) -> None:
    backbone = model.backbone
    assert torch.count_nonzero(backbone.prompt.time_embedding_offset()) == 0
    x = images(1)
    with torch.no_grad():
        before = backbone(x).unet_output
        backbone.prompt.time_gate.fill_(0.5)
        after = backbone(x).unet_output
    assert not torch.allclose(before, after)


def test_gates_and_prompt_initialise_as_the_spec_says(model: MadmModel) -> None:
    prompt = model.backbone.prompt
    tokens, width = prompt.empty_prompt.shape[1:]
    assert (tokens, width) == (77, 32)
    for gate in (prompt.prompt_gate.detach(), prompt.empty_gate.detach()):  # uniform [0, 1)
        assert tuple(gate.shape) == (1, 77, 32)
        assert float(gate.min()) >= 0 and float(gate.max()) < 1 and abs(float(gate.mean()) - 0.5) < 0.05
    assert abs(float(prompt.prompt.detach().std()) - 0.02) < 0.002  # truncated normal, std 0.02
    assert tuple(prompt.time_offset.shape) == (1, 1, 128) and float(prompt.time_offset.detach().std()) > 0
    assert torch.count_nonzero(prompt.time_gate) == 0
    assert set(model.backbone.prompt_parameters()) == {
        "prompt.prompt",
        "prompt.prompt_gate",
        "prompt.empty_gate",
        "prompt.time_offset",
        "prompt.time_gate",
    }


def test_empty_prompt_embedding_is_cached_and_the_text_encoder_dropped(tiny_sd: Path, model: MadmModel) -> None:
    from transformers import CLIPTextModel, CLIPTokenizer

    tokenizer = CLIPTokenizer.from_pretrained(tiny_sd / "tokenizer")
    encoder = CLIPTextModel.from_pretrained(tiny_sd / "text_encoder")
    ids = tokenizer("", padding="max_length", max_length=77, return_tensors="pt").input_ids
    with torch.no_grad():
        expected = encoder(ids).last_hidden_state
    assert torch.equal(model.backbone.prompt.empty_prompt, expected)
    assert not any(isinstance(m, CLIPTextModel) for m in model.modules())
    assert not any("text" in name for name, _ in model.named_modules())


# -- loading and saving -----------------------------------------------------------------------------


def backbone_outputs(backbone: SDBackbone, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
    with torch.no_grad():
        out = backbone.eval()(x)
    return (out.unet_output, out.latents, *out.features.values())


def copy_learned_parts(source: SDBackbone, target: SDBackbone) -> None:
    """The SD folder holds UNet/VAE/scheduler/empty prompt; prompt and projections belong to MadmModel.save."""
    target.prompt.load_state_dict(source.prompt.state_dict())
    target.projections.load_state_dict(source.projections.state_dict())


def test_saved_sd_folder_reloads_to_identical_outputs_without_the_text_encoder(model: MadmModel, tmp_path: Path) -> None:
    backbone = model.backbone
    with torch.no_grad():
        backbone.unet.conv_in.weight.add_(0.01)  # a "fine-tuned" UNet, as the later prior is
    saved = backbone.save_pretrained(tmp_path / "prior")
    assert sorted(p.name for p in saved.iterdir()) == ["empty_prompt.safetensors", "scheduler", "unet", "vae"]
    reloaded = SDBackbone.from_pretrained(saved, input_size=None, **TINY_OPTIONS)
    copy_learned_parts(backbone, reloaded)
    assert torch.equal(reloaded.prompt.empty_prompt, backbone.prompt.empty_prompt)
    for a, b in zip(backbone_outputs(backbone, images()), backbone_outputs(reloaded, images())):
        assert torch.equal(a, b)


def test_madm_model_save_load_round_trip_gives_identical_logits_with_lora_adapters(model: MadmModel, tmp_path: Path) -> None:
    model.backbone.add_lora("depth", rank=4, alpha=4)
    model.backbone.add_lora("events", rank=2, alpha=8)
    perturb_adapter(model.backbone, "depth", seed=3)
    perturb_adapter(model.backbone, "events", seed=4)
    model.backbone.set_adapter("depth")
    x = images()
    with torch.no_grad():
        expected, _ = model(x)
    model.save(tmp_path / "ckpt")
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["config.json", "model.safetensors"]
    loaded = MadmModel.load(tmp_path / "ckpt").eval()
    assert loaded.backbone.active_adapter == "depth"
    with torch.no_grad():
        got, _ = loaded(x)
        assert torch.equal(got, expected)
        loaded.backbone.set_adapter("events")
        model.backbone.set_adapter("events")
        assert torch.equal(loaded(x)[0], model(x)[0])


# -- training switches -------------------------------------------------------------------------------


def test_full_mode_trains_unet_projections_prompt_and_head_but_not_vae_or_unet_output_layers(model: MadmModel) -> None:
    trainable = model.trainable_parameters("full")
    every = dict(model.named_parameters())
    frozen = set(every) - set(trainable)
    never = ("backbone.vae.", "backbone.unet.conv_norm_out.", "backbone.unet.conv_out.")
    assert frozen == {n for n in every if n.startswith(never)}
    assert {n.split(".")[1] for n in trainable if n.startswith("backbone.")} == {"unet", "prompt", "projections"}
    assert any(n.startswith("head.") for n in trainable)
    assert all(p.requires_grad == (n in trainable) for n, p in every.items())


def test_lora_mode_trains_only_the_active_adapter_and_head_projections_prompt(model: MadmModel) -> None:
    with pytest.raises(ConfigError, match="add_lora"):
        model.trainable_parameters("lora")
    model.backbone.add_lora("thermal", rank=4, alpha=4)
    model.backbone.add_lora("depth", rank=4, alpha=4)
    model.backbone.set_adapter("thermal")
    trainable = model.trainable_parameters("lora")
    unet = {n for n in trainable if n.startswith("backbone.unet.")}
    assert unet and all((".lora_A.thermal." in n or ".lora_B.thermal." in n) for n in unet)
    # 4 projections (to_q/to_k/to_v/to_out.0) × 2 (A, B) per attention layer
    attention_layers = sum(1 for n, _ in model.backbone.unet.named_modules() if n.endswith(".attn1") or n.endswith(".attn2"))
    assert len(unet) == attention_layers * 4 * 2
    rest = {n.split(".")[0] if n.startswith("head.") else ".".join(n.split(".")[:2]) for n in trainable if n not in unet}
    assert rest == {"head", "backbone.prompt", "backbone.projections"}
    assert all(p.requires_grad == (n in trainable) for n, p in model.named_parameters())
    with pytest.raises(ConfigError, match="'full', 'lora'"):
        model.trainable_parameters("partial")  # type: ignore[arg-type]


def test_new_lora_adapter_starts_as_identity_and_two_adapters_switch_outputs(model: MadmModel) -> None:
    x = images()
    with torch.no_grad():
        base, _ = model(x)
        model.backbone.add_lora("depth", rank=4, alpha=4)
        assert torch.equal(model(x)[0], base)  # B = 0 at creation
        model.backbone.add_lora("events", rank=4, alpha=4)
        perturb_adapter(model.backbone, "depth", seed=5)
        perturb_adapter(model.backbone, "events", seed=6)
        model.backbone.set_adapter("depth")
        depth, _ = model(x)
        model.backbone.set_adapter("events")
        events, _ = model(x)
        model.backbone.set_adapter("depth")
        again, _ = model(x)
    assert not torch.allclose(depth, base) and not torch.allclose(events, depth)
    assert torch.equal(again, depth)
    with pytest.raises(ConfigError, match="no LoRA adapter 'rgb'"):
        model.backbone.set_adapter("rgb")
    with pytest.raises(ConfigError, match="exists already"):
        model.backbone.add_lora("depth", rank=4, alpha=4)


def loss_and_grads(model: MadmModel, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    model.zero_grad(set_to_none=True)
    torch.manual_seed(7)  # the head's Dropout2d draws the same mask in both runs
    logits, out = model(x)
    loss = logits.logsumexp(1).mean() + out.unet_output.abs().mean()
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_gradient_checkpointing_gives_the_same_loss_and_gradients(model: MadmModel) -> None:
    model.train()
    model.trainable_parameters("full")
    x = images()
    loss, grads = loss_and_grads(model, x)
    model.backbone.enable_gradient_checkpointing(True)
    assert model.backbone.unet.is_gradient_checkpointing
    loss_ckpt, grads_ckpt = loss_and_grads(model, x)
    model.backbone.enable_gradient_checkpointing(False)
    assert torch.allclose(loss, loss_ckpt, rtol=0, atol=1e-6)
    assert grads.keys() == grads_ckpt.keys() and any(n.startswith("backbone.unet.up_blocks") for n in grads)
    for name in grads:  # recomputation repeats the same float ops; only summation order may differ
        torch.testing.assert_close(grads_ckpt[name], grads[name], rtol=1e-4, atol=1e-6, msg=name)


def test_decoded_image_sends_no_gradient_into_the_unet(model: MadmModel) -> None:
    """Spec §4.4: the VAE decoder runs under no_grad, so s0 trains only its projection and the head."""
    model.trainable_parameters("full")
    _, out = model(images(1))
    out.features["s0"].sum().backward()
    assert all(p.grad is None for p in model.backbone.unet.parameters())
    assert all(p.grad is not None for p in model.backbone.projections["s0"].parameters())


def test_teacher_pass_with_ema_copies_through_functional_call_matches_a_model_holding_them(tiny_sd: Path) -> None:
    """MADM's teacher shares the live UNet but uses EMA prompt, projections and head (spec §2.1)."""
    torch.manual_seed(0)
    student = build_tiny_model(tiny_sd, NUM_CLASSES).eval()
    torch.manual_seed(1)
    teacher = build_tiny_model(tiny_sd, NUM_CLASSES).eval()
    ema = {
        name: tensor
        for name, tensor in teacher.state_dict().items()
        if name.startswith(("backbone.prompt.", "backbone.projections.", "head."))
    }
    x, t = images(), torch.full((2,), 50, dtype=torch.long)
    with torch.no_grad():
        got, _ = torch.func.functional_call(student, ema, (x, t))
        expected, _ = teacher(x, t)
        own, _ = student(x, t)
    assert torch.equal(got, expected) and not torch.allclose(own, expected)


# -- timesteps and noise ----------------------------------------------------------------------------------


def test_t0_uses_the_fixed_seed42_noise_and_is_deterministic(model: MadmModel) -> None:
    backbone = model.backbone
    expected = torch.randn((1, 4, 64, 64), generator=torch.Generator().manual_seed(42))
    assert torch.equal(backbone.shared_noise, expected)
    x = images()
    with torch.no_grad():
        first = backbone(x)
        second = backbone(x)
        explicit = backbone(x, torch.zeros(2, dtype=torch.long), backbone.shared_noise_like(first.latents))
        other = backbone(x, noise=torch.randn_like(first.latents))
    assert torch.equal(first.unet_output, second.unet_output)
    assert torch.equal(first.unet_output, explicit.unet_output)
    assert not torch.allclose(first.unet_output, other.unet_output)
    # at t = 0 the latent is perturbed only slightly: sqrt(ᾱ_0) = 0.99957, sqrt(1 − ᾱ_0) = 0.0292 (spec §1.3)
    alpha0 = backbone.scheduler.alphas_cumprod[0]
    assert abs(float(alpha0.sqrt()) - 0.99957) < 1e-5 and abs(float((1 - alpha0).sqrt()) - 0.0292) < 1e-4


def test_larger_timestep_changes_the_output(model: MadmModel) -> None:
    x = images()
    with torch.no_grad():
        t0 = model.backbone(x).unet_output
        t60 = model.backbone(x, torch.full((2,), 60, dtype=torch.long)).unet_output
    assert (t60 - t0).abs().mean() > 1e-3


# -- errors --------------------------------------------------------------------------------------------------


def test_missing_weights_path_is_an_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope.*not found.*nothing is downloaded"):
        SDBackbone.from_pretrained(tmp_path / "nope")


def test_incomplete_folder_lists_what_is_missing(tiny_sd: Path, tmp_path: Path) -> None:
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(tiny_sd, broken)
    shutil.rmtree(broken / "vae")
    (broken / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(ConfigError, match=r"incomplete, missing: unet/diffusion_pytorch_model.safetensors, vae/config.json"):
        SDBackbone.from_pretrained(broken)


def test_wrong_tap_index_is_an_error_naming_the_value(tiny_sd: Path) -> None:
    with pytest.raises(ConfigError, match=r"tap_indices \[5, 8, 12\] must be .* 0…11"):
        SDBackbone.from_pretrained(tiny_sd, tap_indices=(5, 8, 12))
    with pytest.raises(ConfigError, match=r"two sub-layers of one up-block"):
        SDBackbone.from_pretrained(tiny_sd, tap_indices=(4, 5, 11))


def test_bad_inputs_are_errors_saying_what_was_expected(model: MadmModel) -> None:
    with pytest.raises(InputError, match=r"B×3×H×W"):
        model(torch.rand(1, 1, 64, 64))
    with pytest.raises(InputError, match=r"96×64 is not a multiple of 64"):
        model(torch.rand(1, 3, 96, 64))
    with pytest.raises(InputError, match=r"lie in \[0, 1000\)"):
        model(images(1), torch.tensor([1000]))
    with pytest.raises(MadmError, match=r"head inputs"):
        model.head({"s0": torch.rand(1, 16, 8, 8)})


def test_loading_a_folder_that_is_not_a_saved_model_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"not a saved model of format madm-model/1: config.json, model.safetensors missing"):
        MadmModel.load(tmp_path)


def test_the_saved_model_table_reads_each_format_tag_and_refuses_others(tiny_sd: Path, tmp_path: Path) -> None:
    from madm_ros.errors import ConfigError
    from madm_train.methods.diff.model import DIFF_FORMAT
    from madm_train.methods.iccld.model import ICCLD_FORMAT
    from madm_train.models.madm_model import CHECKPOINT_FORMAT
    from madm_train.models.saved import SAVED_FORMATS, load_saved
    from madm_train.models.student import STUDENT_FORMAT

    assert set(SAVED_FORMATS) == {CHECKPOINT_FORMAT, DIFF_FORMAT, ICCLD_FORMAT, STUDENT_FORMAT}
    build_tiny_model(tiny_sd, NUM_CLASSES).save(tmp_path / "teacher")
    loaded = load_saved(tmp_path / "teacher")
    assert loaded.format == CHECKPOINT_FORMAT and loaded.logits(torch.rand(1, 3, 64, 64)).shape == (1, NUM_CLASSES, 64, 64)
    assert loaded.size_multiple == 64  # the network alone refuses 96×128; the loaded logits slide windows for it
    with pytest.raises(InputError, match="not a multiple of 64"):
        loaded.network.logits(torch.rand(1, 3, 96, 128))
    assert loaded.logits(torch.rand(1, 3, 96, 128)).shape == (1, NUM_CLASSES, 96, 128)
    config = tmp_path / "teacher" / "config.json"
    config.write_text(config.read_text().replace(CHECKPOINT_FORMAT, "madm-model/9"))
    known = "madm-model/1, madm-diff/1, madm-iccld/1, madm-student/1"
    with pytest.raises(ConfigError, match=rf"format 'madm-model/9'; this version reads {known}"):
        load_saved(tmp_path / "teacher")
    with pytest.raises(ConfigError, match="is not a saved model folder"):
        load_saved(tmp_path / "nothing")


@pytest.mark.parametrize(("height", "width", "stride", "windows"), [
    ((96, 128, 1, [(64, 128)] * 2)), ((48, 80, 4, [(64, 64)] * 2)), ((64, 128, 4, [(64, 128)])), ((20, 30, 1, [(64, 64)])),
    ((200, 130, 4, [(192, 128)] * 2 * 2)),
])
def test_windowed_logits_give_the_logits_of_the_frame_itself_at_any_size(height: int, width: int, stride: int,
                                                                         windows: list[tuple[int, int]]) -> None:
    from madm_train.models.saved import windowed_logits

    conv = torch.nn.Conv2d(3, 5, 1)  # pixel-local, so the kept logits must equal the unwindowed ones exactly
    calls: list[tuple[int, ...]] = []

    def strict_logits(x: torch.Tensor) -> torch.Tensor:
        calls.append(tuple(x.shape[-2:]))
        if x.shape[-2] % 64 or x.shape[-1] % 64:
            raise InputError("not a multiple of 64")
        return torch.nn.functional.avg_pool2d(conv(x), stride)

    frame = torch.rand(2, 3, height, width, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        out = windowed_logits(strict_logits, 64, stride)(frame)
        expected = torch.nn.functional.avg_pool2d(conv(frame), stride, ceil_mode=True)
    assert out.shape == (2, 5, -(-height // stride), -(-width // stride))
    assert calls == windows  # windows of the largest multiple of 64 that fits, each at a size the network takes
    if height % stride == 0 and width % stride == 0:  # whole cells: nothing of the padding mixed in
        torch.testing.assert_close(out, expected)
