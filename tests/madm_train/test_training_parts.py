"""Self-training parts at toy size: DPLG, LPLR, EMA, ClassMix/jitter/blur, pseudo-label weights,
optimiser schedule and checkpoints. Stand-ins replace the model: a real ``DDPMScheduler`` with
Stable Diffusion's schedule, small ``nn.Module``s, and a pooling "encoder"."""

from __future__ import annotations

import math
import random

import pytest
import torch
from diffusers import DDPMScheduler
from torch import nn

from madm_ros.errors import ConfigError, InputError
from madm_ros.palettes import DSEC_11, FMB_9
from madm_train.config import task_defaults
from madm_train.data.mixing import blur_kernel_size, classmix_masks, color_jitter, gaussian_blur, mix, strong_augment
from madm_train.methods.madm.dplg import dplg_timestep, draw_k0, noisy_teacher_latent, shared_noise, teacher_noise
from madm_train.methods.madm.lplr import latent_target, lplr_loss, paint_labels
from madm_train.training.ema import EmaTeacher, ema_alpha
from madm_train.training.pseudo_labels import confidence_weight, mixed_pixel_weight, pseudo_labels, segmentation_loss
from madm_train.training.schedule import build_lr_scheduler, build_optimizer, lr_multiplier, parameter_groups


@pytest.fixture(scope="module")
def scheduler() -> DDPMScheduler:
    """Stable Diffusion v1.x's noise schedule (its scheduler/scheduler_config.json)."""
    return DDPMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")


class TinyNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.norm = nn.BatchNorm2d(4)
        self.group = nn.GroupNorm(2, 4)
        self.head = nn.Conv2d(4, 2, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.group(self.norm(self.conv(x))))


# ---------------------------------------------------------------------------------------------- DPLG


@pytest.mark.parametrize(("task", "expected"), [
    ("depth", {0: 60, 2500: 30, 5000: 0, 5001: 0, 9999: 0}),
    ("infrared", {0: 50, 4000: 25, 8000: 0, 8001: 0}),
    ("events", {0: 50, 4000: 25, 8000: 0, 8001: 0}),
])
def test_dplg_timestep_decays_linearly_to_zero_at_the_task_end_iteration(task: str, expected: dict[int, int]):
    dplg = task_defaults(task).method.dplg
    k0 = dplg.k0_choices[0]
    assert {i: dplg_timestep(i, k0=k0, end_iter=dplg.end_iter) for i in expected} == expected
    assert dplg_timestep(1, k0=61, end_iter=5000) == 60  # ⌊61·0.9998⌋


def test_dplg_timestep_rounds_like_the_reference_float_formula():
    assert dplg_timestep(2750, k0=60, end_iter=5000) == int(60 * (1 - 2750 / 5000)) == 26  # exact arithmetic gives 27


def test_k0_is_drawn_from_the_choices_only():
    rng = random.Random(0)
    assert {draw_k0((60, 61), rng) for _ in range(200)} == {60, 61}


def test_add_noise_matches_the_closed_form_forward_process(scheduler: DDPMScheduler):
    latents = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    noise = teacher_noise(latents, fixed=shared_noise(42))
    for k in (0, 25, 60):
        abar = float(scheduler.alphas_cumprod[k])
        expected = math.sqrt(abar) * latents + math.sqrt(1 - abar) * noise
        torch.testing.assert_close(noisy_teacher_latent(latents, k, scheduler, noise), expected)
    assert math.sqrt(float(scheduler.alphas_cumprod[60])) == pytest.approx(0.970, abs=5e-4)
    assert math.sqrt(1 - float(scheduler.alphas_cumprod[0])) == pytest.approx(0.0292, abs=5e-4)


def test_dplg_noise_changes_only_the_latent_it_is_given(scheduler: DDPMScheduler):
    student = torch.randn(1, 4, 8, 8)
    teacher = student.clone()
    before = teacher.clone()
    noisy = noisy_teacher_latent(teacher, 60, scheduler, teacher_noise(teacher, fixed=shared_noise(42)))
    assert torch.equal(teacher, before) and torch.equal(student, before)
    assert (noisy - teacher).abs().mean() > 0.05


def test_fixed_noise_is_shared_over_the_batch_and_fresh_noise_is_not():
    latents = torch.zeros(3, 4, 64, 64)
    fixed = teacher_noise(latents, fixed=shared_noise(42))
    assert torch.equal(fixed[0], fixed[2]) and torch.equal(fixed[0:1], shared_noise(42))
    assert teacher_noise(torch.zeros(1, 4, 16, 16), fixed=shared_noise(42)).shape == (1, 4, 16, 16)  # resized
    fresh = teacher_noise(latents, generator=torch.Generator().manual_seed(0))
    assert not torch.equal(fresh[0], fresh[1])
    with pytest.raises(ConfigError, match="exactly one of"):
        teacher_noise(latents)
    with pytest.raises(InputError, match="timestep k must lie in 0..999"):
        noisy_teacher_latent(latents, 1000, DDPMScheduler(), fixed)


# ---------------------------------------------------------------------------------------------- LPLR


def test_labels_are_painted_with_the_palette_and_ignore_is_black():
    labels = torch.tensor([[[0, 5, 255], [10, 8, 200]]], dtype=torch.uint8)
    painted = paint_labels(labels, DSEC_11)
    assert painted.shape == (1, 3, 2, 3) and painted.dtype == torch.float32
    rgb = (painted[0].permute(1, 2, 0) * 255).round().to(torch.uint8).tolist()
    assert rgb == [[[70, 130, 180], [128, 64, 128], [0, 0, 0]], [[250, 170, 30], [0, 0, 142], [0, 0, 0]]]
    nine = (paint_labels(torch.tensor([[[2, 8, 9]]]), FMB_9)[0, :, 0] * 255).round().T.tolist()
    assert nine == [[220, 20, 60], [250, 170, 30], [0, 0, 0]]  # 9 is no FMB-9 class


def test_latent_target_encodes_the_painted_labels_without_gradient():
    calls = []

    def encode(images: torch.Tensor) -> torch.Tensor:
        calls.append(images)
        return torch.nn.functional.avg_pool2d(images, 8)[:, [0, 1, 2, 0]] * torch.ones(1, requires_grad=True)

    target = latent_target(torch.full((2, 16, 16), 5, dtype=torch.long), encode, DSEC_11)
    assert target.shape == (2, 4, 2, 2) and not target.requires_grad
    torch.testing.assert_close(calls[0][0, :, 0, 0], torch.tensor([128, 64, 128]) / 255)


def test_lplr_loss_is_masked_l1_divided_by_the_total_element_count():
    output = torch.zeros(1, 4, 2, 2)
    target = torch.zeros(1, 4, 2, 2)
    target[0, :, 0, 0] = 1.0   # valid latent pixel, error 1 per channel
    target[0, :, 1, 1] = 3.0   # ignored latent pixel (its 8×8 block's top-left label is 255)
    labels = torch.zeros(1, 16, 16, dtype=torch.long)
    labels[0, 8:, 8:] = 255
    # Σ|o − z|·mask = 4 (four channels of pixel (0,0)); ÷ numel 16, not ÷ valid count 12.
    assert lplr_loss(output, target, labels).item() == pytest.approx(4 / 16)
    assert lplr_loss(output, target, labels, confidence=0.5, weight=20.0).item() == pytest.approx(4 / 16 * 0.5 * 20)
    with pytest.raises(InputError, match="differ"):
        lplr_loss(output, target[:, :3], labels)


def test_lplr_loss_sends_gradient_only_through_valid_pixels():
    output = torch.zeros(1, 4, 2, 2, requires_grad=True)
    labels = torch.full((1, 16, 16), 255, dtype=torch.long)
    labels[0, :8, :8] = 1
    lplr_loss(output, torch.ones(1, 4, 2, 2), labels).backward()
    assert output.grad[0, :, 0, 0].tolist() == [-1 / 16] * 4
    assert output.grad[0, :, 1, 1].abs().sum() == 0


# ---------------------------------------------------------------------------------------------- EMA


def test_ema_alpha_ramps_to_its_maximum():
    assert ema_alpha(0) == 0.0
    assert ema_alpha(1) == 0.5
    assert ema_alpha(10) == pytest.approx(10 / 11)
    assert ema_alpha(998) < 0.999 and ema_alpha(999) == pytest.approx(0.999, abs=1e-15)
    assert ema_alpha(100_000) == 0.999


def test_the_teacher_copies_at_step_zero_then_tracks_the_student_slowly():
    torch.manual_seed(0)
    student = TinyNet()
    prompt = [nn.Parameter(torch.zeros(3))]
    ema = EmaTeacher({"net": student}, {"prompt": prompt, "named": {"gate": nn.Parameter(torch.ones(2))}})
    with torch.no_grad():
        student.conv.weight.add_(1.0)
        prompt[0].fill_(2.0)
    ema.update(0)
    torch.testing.assert_close(ema.modules["net"].conv.weight, student.conv.weight)
    assert ema.parameters["prompt"]["0"].tolist() == [2.0, 2.0, 2.0]
    assert sorted(ema.state_dict()) == ["named.gate", "net.conv.bias", "net.conv.weight", "net.group.bias",
                                        "net.group.weight", "net.head.weight", "net.norm.bias", "net.norm.num_batches_tracked",
                                        "net.norm.running_mean", "net.norm.running_var", "net.norm.weight", "prompt.0"]
    with torch.no_grad():
        prompt[0].fill_(4.0)
    assert ema.update(1) == 0.5
    assert ema.parameters["prompt"]["0"].tolist() == [3.0, 3.0, 3.0]
    ema.update(5000)
    assert ema.parameters["prompt"]["0"][0].item() == pytest.approx(3.0 * 0.999 + 4.0 * 0.001)
    assert not any(p.requires_grad for p in ema.modules["net"].parameters())


def test_the_swapped_teacher_runs_with_its_own_weights_and_buffers_and_swaps_back():
    torch.manual_seed(0)
    student = TinyNet().train()
    ema = EmaTeacher({"net": student})
    with torch.no_grad():
        student.conv.weight.mul_(-1)
    x = torch.rand(2, 3, 8, 8)
    expected = ema.modules["net"](x.clone())  # updates the copy's BN statistics
    ema.modules["net"].norm.running_mean.copy_(torch.zeros(4))  # undo so both passes start equal
    student_stats = student.norm.running_mean.clone()
    with torch.no_grad(), ema.swapped():
        got = student(x)
    torch.testing.assert_close(got, expected.detach())
    assert torch.equal(student.norm.running_mean, student_stats)  # the teacher pass did not touch the student's
    assert not torch.equal(ema.modules["net"].norm.running_mean, torch.zeros(4))
    assert not torch.equal(student.conv.weight, ema.modules["net"].conv.weight)


def test_ema_state_round_trips_and_a_foreign_state_is_refused():
    ema = EmaTeacher({"net": TinyNet()})
    other = EmaTeacher({"net": TinyNet()})
    other.load_state_dict(ema.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(ema.state_dict().values(), other.state_dict().values()))
    with pytest.raises(InputError, match="missing"):
        other.load_state_dict({})


# ---------------------------------------------------------------------------------------------- mixing


def test_classmix_takes_every_mixed_pixel_from_the_source_iff_its_label_does():
    g = torch.Generator().manual_seed(3)
    source_labels = torch.randint(0, 6, (2, 16, 16), generator=g, dtype=torch.long)
    source_labels[0, :2] = 255
    masks = classmix_masks(source_labels, g)
    source_img, target_img = torch.zeros(2, 3, 16, 16), torch.ones(2, 3, 16, 16)
    pseudo = torch.full((2, 16, 16), 100, dtype=torch.long)
    mixed_img, mixed_lbl = mix(masks, source_img, target_img), mix(masks, source_labels.to(torch.uint8), pseudo)
    from_source_img = (mixed_img == 0).all(dim=1)
    from_source_lbl = mixed_lbl != 100
    assert torch.equal(from_source_img, from_source_lbl) and torch.equal(from_source_img, masks)
    classes = torch.unique(source_labels)  # 7 incl. 255 → 4 chosen per image
    for b in range(2):
        chosen = {int(c) for c in classes if masks[b][source_labels[b] == c].all() and (source_labels[b] == c).any()}
        assert len(chosen) == 4 and torch.equal(masks[b], torch.isin(source_labels[b], torch.tensor(sorted(chosen))))


def test_classmix_chooses_among_the_whole_batchs_classes():
    labels = torch.zeros(2, 4, 4, dtype=torch.long)
    labels[1] = 1  # batch classes {0, 1}: one chosen per image, perhaps absent from that image
    seen = set()
    for seed in range(20):
        masks = classmix_masks(labels, torch.Generator().manual_seed(seed))
        seen.add((bool(masks[0].all()), bool(masks[1].all())))
        assert all(bool(m.all()) or not bool(m.any()) for m in masks)
    assert len(seen) > 1


def test_pixel_weights_are_one_on_source_pixels_and_q_on_target_pixels():
    mask = torch.tensor([[[True, False], [False, True]]])
    assert mixed_pixel_weight(mask, 0.25).tolist() == [[[1.0, 0.25], [0.25, 1.0]]]


def test_blur_kernel_size_follows_dacs():
    assert [blur_kernel_size(s) for s in (512, 100, 101, 128, 683)] == [51, 9, 11, 13, 69]


def test_gaussian_blur_keeps_constants_and_smooths_an_impulse():
    flat = torch.full((1, 3, 16, 16), 0.3)
    torch.testing.assert_close(gaussian_blur(flat, 1.0, (5, 5)), flat)
    impulse = torch.zeros(1, 1, 9, 9)
    impulse[0, 0, 4, 4] = 1
    out = gaussian_blur(impulse, 1.0, (5, 5))
    assert out.sum().item() == pytest.approx(1.0) and out[0, 0, 4, 4] < 0.2 and torch.equal(out, out.flip(-1))


def test_color_jitter_stays_in_range_is_reproducible_and_keeps_grey_grey_without_saturation():
    image = torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    a = color_jitter(image, torch.Generator().manual_seed(5))
    b = color_jitter(image, torch.Generator().manual_seed(5))
    assert torch.equal(a, b) and a.min() >= 0 and a.max() <= 1 and not torch.equal(a, image)
    grey = torch.full((1, 3, 4, 4), 0.5)
    out = color_jitter(grey, torch.Generator().manual_seed(1))
    assert torch.allclose(out[:, 0], out[:, 1]) and torch.allclose(out[:, 1], out[:, 2])


def test_strong_augment_applies_nothing_with_zero_probabilities_and_draws_only_from_its_generator():
    images = torch.rand(2, 3, 20, 20)
    assert torch.equal(strong_augment(images, torch.Generator(), jitter_probability=0, blur_probability=0), images)
    torch.manual_seed(0)
    before = torch.rand(1)
    torch.manual_seed(0)
    out = strong_augment(images, torch.Generator().manual_seed(2), jitter_probability=1, blur_probability=1)
    assert torch.equal(torch.rand(1), before)  # global RNG untouched
    assert out.shape == images.shape and not torch.equal(out, images)


# ---------------------------------------------------------------------------------------------- pseudo-labels


def test_q_is_the_fraction_of_confident_teacher_pixels_in_the_batch():
    logits = torch.zeros(2, 3, 1, 2)
    logits[0, 0, 0, 0] = 10.0  # p = e^10/(e^10+2) = 0.99991 ≥ 0.968
    logits[0, 1, 0, 1] = 3.0   # p = 0.909 < 0.968
    logits[1, 2, 0, 0] = math.log(0.968 / 0.032 * 2)  # p = exactly 0.968 (counts: ≥)
    labels, confidence = pseudo_labels(logits)
    assert labels.tolist() == [[[0, 1]], [[2, 0]]]
    assert confidence[1, 0, 0].item() == pytest.approx(0.968, abs=1e-6)
    assert confidence_weight(confidence, 0.9679) == 2 / 4
    assert confidence_weight(confidence, 0.99995) == 0.0


def test_pseudo_labels_are_upsampled_to_the_label_size():
    labels, confidence = pseudo_labels(torch.randn(1, 4, 4, 4), (16, 16))
    assert labels.shape == confidence.shape == (1, 16, 16)


def test_segmentation_loss_averages_over_all_pixels_including_ignored_ones():
    logits = torch.zeros(1, 2, 1, 2)
    labels = torch.tensor([[[0, 255]]])
    assert segmentation_loss(logits, labels).item() == pytest.approx(math.log(2) / 2)
    assert segmentation_loss(logits, torch.tensor([[[0, 1]]]), torch.tensor([[[1.0, 0.5]]])).item() == pytest.approx(
        math.log(2) * 1.5 / 2)


# ---------------------------------------------------------------------------------------------- schedule


def test_lr_multiplier_matches_the_reference_schedule_at_ten_thousand_iterations():
    got = {i: lr_multiplier(i, 10_000) for i in (0, 27, 28, 8888, 8889, 9629, 9630, 9999)}
    w = 500 / 184_375
    assert got[0] == pytest.approx(0.067)
    assert got[27] == pytest.approx(0.067 + 0.933 * (27 / 10_000) / w)  # still warming up (≈ 0.9959)
    assert {i: got[i] for i in (28, 8888, 8889, 9629, 9630, 9999)} == {
        28: 1.0, 8888: 1.0, 8889: 0.1, 9629: 0.1, 9630: 0.01, 9999: 0.01}


def test_lr_multiplier_scales_with_max_iter():
    assert lr_multiplier(888, 1000) == 1.0 and lr_multiplier(889, 1000) == 0.1 and lr_multiplier(963, 1000) == 0.01


def test_poly_schedule_is_mmcvs_poly_with_linear_warmup_as_diff_configures_it():
    diff = {"warmup_factor": 1e-6, "warmup_fraction": 1_500 / 40_000, "schedule": "poly", "poly_power": 1.0}
    got = {i: lr_multiplier(i, 40_000, **diff) for i in (0, 750, 1499, 1500, 20_000, 39_999)}
    # mmcv: regular = (1 - i/max)^power; warm-up (linear): regular * (1 - (1 - i/W)(1 - ratio))
    expected = {i: (1 - i / 40_000) * (1 - (1 - i / 1500) * (1 - 1e-6) if i < 1500 else 1.0) for i in got}
    assert got == pytest.approx(expected, rel=1e-12)
    assert got[0] == pytest.approx(1e-6) and got[20_000] == pytest.approx(0.5)
    assert lr_multiplier(500, 1000, schedule="poly", poly_power=2.0, warmup_fraction=0.0) == pytest.approx(0.25)
    with pytest.raises(ConfigError, match="schedule must be step or poly"):
        lr_multiplier(0, 10, schedule="cosine")


def test_a_head_lr_multiplier_puts_the_head_into_two_more_groups_at_the_multiplied_rate():
    net = TinyNet()
    net.head.bias = nn.Parameter(torch.zeros(2))
    groups = parameter_groups([net], lr=6e-5, weight_decay=0.01, head_lr_multiplier=10.0)
    names = {id(p): n for n, p in net.named_parameters()}
    by_group = {g["name"]: (sorted(names[id(p)] for p in g["params"]), g["lr"], g["weight_decay"]) for g in groups}
    assert by_group == {
        "decay": (["conv.weight"], 6e-5, 0.01),
        "no_decay": (["conv.bias", "group.bias", "group.weight", "norm.bias", "norm.weight"], 6e-5, 0.0),
        "head_decay": (["head.weight"], pytest.approx(6e-4), 0.01),
        "head_no_decay": (["head.bias"], pytest.approx(6e-4), 0.0),
    }
    assert [g["name"] for g in parameter_groups([net], lr=6e-5, weight_decay=0.01)] == ["decay", "no_decay"]


def test_diffs_task_defaults_carry_its_optimiser_and_the_scheduler_keeps_the_head_ten_times_faster():
    optim = task_defaults("rgb", "diff").optim
    assert (optim.lr, optim.head_lr_multiplier, optim.weight_decay, optim.grad_clip_norm, optim.max_iter) == (
        6e-5, 10.0, 0.01, 5.0, 40_000)
    assert (optim.schedule, optim.warmup_factor, optim.warmup_fraction * optim.max_iter) == ("poly", 1e-6, 1500)
    assert task_defaults("rgb", "madm").optim == task_defaults("depth").optim  # MADM's for the other methods
    net = TinyNet()
    optimizer = build_optimizer(parameter_groups([net], lr=optim.lr, weight_decay=optim.weight_decay,
                                                 head_lr_multiplier=optim.head_lr_multiplier), optim)
    lr_scheduler = build_lr_scheduler(optimizer, optim)
    for _ in range(3000):
        optimizer.step()
        lr_scheduler.step()
    rates = {g["name"]: g["lr"] for g in optimizer.param_groups}
    assert rates["decay"] == pytest.approx(6e-5 * (1 - 3000 / 40_000))
    assert rates["head_decay"] == pytest.approx(10 * rates["decay"])


def test_norm_layers_and_biases_get_no_weight_decay():
    net = TinyNet()
    extra = nn.Parameter(torch.zeros(5))
    frozen = nn.Linear(2, 2).requires_grad_(False)
    groups = parameter_groups([net, net, frozen], lr=5e-6, weight_decay=0.05, extra_parameters=[extra])
    names = {id(p): n for n, p in net.named_parameters()}
    by_group = {g["name"]: sorted(names.get(id(p), "extra") for p in g["params"]) for g in groups}
    assert by_group == {"decay": ["conv.weight", "extra", "head.weight"],
                        "no_decay": ["conv.bias", "group.bias", "group.weight", "norm.bias", "norm.weight"]}
    assert [g["weight_decay"] for g in groups] == [0.05, 0.0]


def test_scheduler_sets_the_learning_rate_per_iteration():
    optim = task_defaults("depth").optim
    net = TinyNet()
    optimizer = build_optimizer(parameter_groups([net], lr=optim.lr, weight_decay=optim.weight_decay), optim)
    lr_scheduler = build_lr_scheduler(optimizer, optim)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(5e-6 * 0.067)
    net(torch.rand(2, 3, 4, 4)).sum().backward()
    optimizer.step()
    lr_scheduler.step()
    assert optimizer.param_groups[1]["lr"] == pytest.approx(5e-6 * lr_multiplier(1, 10_000))
