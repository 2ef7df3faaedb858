"""MADM self-training: ``adapt(config) -> run folder``, the recipe of madm_spec.md §2–§4 top to bottom.

One iteration (batch = B source + B target images):

1. EMA update of the teacher (from iteration 1 on);
2. source forward at t = 0: cross-entropy on the labels + LPLR L1 of the UNet output to the VAE
   latent of the palette-painted labels (weight λ_s);
3. teacher pass on the clean target image with the EMA head, projections and prompt (the UNet
   is shared) at the DPLG timestep k = ⌊k₀(1 − i/E)⌋: pseudo-labels and their weight q;
4. ClassMix of source and target, colour jitter and blur; mixed forward: cross-entropy on the
   mixed label (source pixels weight 1, target pixels q) + LPLR on the mixed label (λ_t·q);
5. backward, gradient-norm clip, AdamW step, learning-rate schedule.

The run folder receives the resolved config, ``log.jsonl`` and ``tensorboard/`` (scalars, and
image grids at every evaluation: target, pseudo-label, mixed image and label, prediction, decoded
palette image), periodic evaluations
(``eval-<step>/``), numbered checkpoints from which ``run.resume`` continues bit for bit, the final
``model/`` (``MadmModel.save``) and ``metrics.json`` of the target evaluation split.
"""

from __future__ import annotations

import json
import random
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from madm_ros.atomic_io import atomic_write_bytes
from madm_ros.errors import ConfigError
from madm_ros.palettes import LabelSet, get_label_set
from madm_ros.preprocessing import InputSpec
from madm_train.config import AdaptConfig, check_data_paths, save_config
from madm_train.data.augment import TrainAugmentation
from madm_train.training.distributed import (
    Distributed,
    average_gradients,
    broadcast_weights,
    check_replicas_equal,
    init_distributed,
)

__all__ = ["Batch", "adapt", "build_datasets", "build_model"]

CHECKPOINTS = "checkpoints"
TEST_FRACTION = 0.2  # folder data sets used as source and target at once: sequences held out for testing


@dataclass
class Batch:
    """Network tensors of one side of an iteration: images B×3×H×W, labels B×H×W (long) or None."""

    images: Any
    labels: Any | None


def _split_folder_frames(root: Path) -> tuple[list[str], list[str], list[str]]:
    """Source, target and test frames of one folder holding both modalities (by whole sequences).

    The last ``TEST_FRACTION`` of sequences are the test split; the others alternate between source
    and target, so the model never sees the same scene as labelled RGB and as target input.
    """
    from madm_ros.folder_layout import FolderMeta, parse_frame_name

    frames = FolderMeta.read(root).frames
    sequences = sorted({parse_frame_name(f)[0] for f in frames})
    if len(sequences) < 3:
        raise ConfigError(f"{root} has {len(sequences)} sequence(s); a folder used as source and target needs ≥ 3 "
                          "(source, target and test scenes); generate more frames or give separate folders")
    n_test = max(1, round(len(sequences) * TEST_FRACTION))
    test, rest = set(sequences[-n_test:]), sequences[:-n_test]
    source, target = set(rest[0::2]), set(rest[1::2])
    pick = lambda chosen: [f for f in frames if parse_frame_name(f)[0] in chosen]  # noqa: E731
    return pick(source), pick(target), pick(test)


def build_datasets(config: AdaptConfig, info: Distributed | None = None) -> tuple[Any, Any, Any]:
    """Source (labelled RGB), target (unlabelled modality) and target test data sets of ``config``.

    Each process of a multi-process run augments with its own seed (``run.seed + rank``).
    """
    from madm_train.data import datasets

    info = info or Distributed()
    d = config.data
    if info.is_main and d.synthetic_frames and not (Path(d.source_root) / "meta.json").exists():
        from madm_ros.synthetic import SynthConfig, generate

        height, width = d.source_resize_hw
        print(f"adapt: generating {d.synthetic_frames} synthetic frames of {height}x{width} in {d.source_root} "
              "(once; later runs reuse them)", file=sys.stderr)
        generate(SynthConfig(frames=d.synthetic_frames, height=height, width=width, seed=config.run.seed),
                 d.source_root, workers=2, progress=True)
    if info.is_main and d.target_bag:  # the bag's frames, into the cache that data.target_root points at
        from madm_train.data.bag_target import prepare_bag_target

        prepare_bag_target(config)
    _barrier(info)
    check_data_paths(config)
    spec_source = InputSpec("rgb", height=d.crop_hw[0], width=d.crop_hw[1])
    spec_target = InputSpec(d.modality, height=d.crop_hw[0], width=d.crop_hw[1])
    source_aug = TrainAugmentation(d.source_resize_hw, d.crop_hw, d.flip_probability)
    target_aug = TrainAugmentation(d.target_resize_hw, d.crop_hw, d.flip_probability)
    seed = config.run.seed + info.rank
    shared_folder = d.source_kind == "folder" and d.target_kind == "folder" and \
        Path(d.source_root).resolve() == Path(d.target_root).resolve()
    source_frames = target_frames = test_frames = None
    if shared_folder:
        source_frames, target_frames, test_frames = _split_folder_frames(Path(d.source_root))

    if d.source_kind == "cityscapes":
        source = datasets.CityscapesDataset(d.source_root, d.source_split, spec_source, label_set=d.label_set,
                                            augmentation=source_aug, seed=seed)
    else:
        source = datasets.FolderDataset(d.source_root, spec_source, frames=source_frames, augmentation=source_aug,
                                        seed=seed)

    def target_set(split: str, augmentation: TrainAugmentation | None, frames: list[str] | None, offset: int,
                   root: str) -> Any:
        kind = d.target_kind
        if kind == "deliver_depth":
            return datasets.DeliverDepthDataset(root, split, spec_target, augmentation=augmentation, seed=seed + offset)
        if kind == "fmb_infrared":
            return datasets.FmbInfraredDataset(root, split, spec_target, augmentation=augmentation, seed=seed + offset)
        if kind == "dsec_edges":
            return datasets.DsecEdgeDataset(root, split, spec_target, augmentation=augmentation, seed=seed + offset)
        if kind == "dsec_events":
            return datasets.DsecEventsDataset(root, split, spec_target, augmentation=augmentation, seed=seed + offset)
        return datasets.FolderDataset(root, spec_target, frames=frames, augmentation=augmentation, seed=seed + offset)

    target = target_set(d.target_split, target_aug, target_frames, 1, d.target_root)
    test = target_set(d.test_split, None, test_frames, 2, d.test_root or d.target_root)
    if source.label_set is None or source.label_set.name != d.label_set:
        raise ConfigError(f"the source data at {d.source_root} is not labelled in {d.label_set}")
    return source, target, test


def _barrier(info: Distributed) -> None:
    if info.enabled:
        import torch.distributed as dist

        dist.barrier()


def build_model(config: AdaptConfig, num_classes: int, run_dir: Path, info: Distributed | None = None) -> Any:
    """The MADM model of ``config.model``.

    ``init_weights`` loads a whole saved model; otherwise the backbone comes from ``pretrained``
    (``tiny`` without it: a random tiny SD written into the run folder) and the head is random.
    """
    from madm_train.models.head import DAFormerHead
    from madm_train.models.madm_model import MadmModel
    from madm_train.models.sd_backbone import SDBackbone
    from madm_train.models.tiny_sd import build_tiny_model, build_tiny_sd

    m = config.model
    if m.init_weights:
        model = MadmModel.load(m.init_weights)
        if model.head.num_classes != num_classes:
            raise ConfigError(f"model.init_weights {m.init_weights} predicts {model.head.num_classes} classes, "
                              f"data.label_set {config.data.label_set} has {num_classes}")
    elif m.preset == "tiny":
        folder = Path(m.pretrained) if m.pretrained else run_dir / "tiny_sd"
        if not m.pretrained and (info is None or info.is_main) and not (folder / "unet" / "config.json").exists():
            build_tiny_sd(folder, seed=config.run.seed)
        _barrier(info or Distributed())
        model = build_tiny_model(folder, num_classes)
    else:
        if not m.pretrained:
            raise ConfigError("model.pretrained is empty: the sd preset needs a local Stable Diffusion v1.x diffusers "
                              "folder or .safetensors/.ckpt file (--set model.pretrained=PATH); nothing is downloaded")
        backbone = SDBackbone.from_pretrained(m.pretrained)
        model = MadmModel(backbone, DAFormerHead(backbone.feature_channels, num_classes))
    if m.finetune == "lora":
        model.backbone.add_lora(config.task, m.lora_rank, m.lora_alpha)
    return model


def _stack(samples: list[Any], device: Any) -> Batch:
    import torch

    images = torch.from_numpy(np.stack([s.image for s in samples])).to(device)
    labels = None
    if all(s.label is not None for s in samples):
        labels = torch.from_numpy(np.stack([s.label for s in samples]).astype(np.int64)).to(device)
    return Batch(images, labels)


class _Recipe:
    """The state of one run and its iteration; built once by :func:`adapt`."""

    def __init__(self, config: AdaptConfig, run_dir: Path, info: Distributed | None = None) -> None:
        import torch

        from madm_train.data.rare_class import RareClassSampler, rare_class_stats
        from madm_train.training.ema import EmaTeacher
        from madm_train.training.schedule import build_lr_scheduler, build_optimizer, parameter_groups

        self.config, self.run_dir, self.info = config, run_dir, info or Distributed()
        if config.run.device.startswith("cuda") and not torch.cuda.is_available():
            raise ConfigError(f"run.device is {config.run.device!r} but no CUDA device is available; "
                              "use --set run.device=cpu run.amp=false")
        self.device = torch.device(f"cuda:{self.info.local_rank}" if self.info.enabled and config.run.device.startswith("cuda")
                                   else config.run.device)
        self.label_set: LabelSet = get_label_set(config.data.label_set)
        self.source, self.target, self.test = build_datasets(config, self.info)
        self.model = build_model(config, self.label_set.num_classes, run_dir, self.info).to(self.device).train()
        broadcast_weights(self.model, self.info)
        self.model.trainable_parameters(config.model.finetune)
        self.model.backbone.enable_gradient_checkpointing(config.model.gradient_checkpointing)
        amp_dtype = torch.float16 if config.run.amp_dtype == "float16" else torch.bfloat16
        self.autocast = lambda: torch.autocast(self.device.type, dtype=amp_dtype, enabled=config.run.amp)
        # fp16 needs loss scaling against gradient underflow; bf16 has float32's range and does not
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=config.run.amp and amp_dtype == torch.float16)
        groups = parameter_groups([self.model], lr=config.optim.lr, weight_decay=config.optim.weight_decay)
        self.optimizer = build_optimizer(groups, config.optim)
        self.lr_scheduler = build_lr_scheduler(self.optimizer, config.optim)
        backbone = self.model.backbone
        modules = {"head": self.model.head, "projections": backbone.projections, "prompt": backbone.prompt}
        if config.ema.include_unet:
            modules["unet"] = backbone.unet
        self.ema = EmaTeacher(modules, alpha_max=config.ema.alpha)
        self.seed_generators(config.run.seed + self.info.rank)
        self.sampler = None
        if config.data.rare_class_sampling:
            labels = (self.source.label_reader(r.label_path) for r in self.source.records)
            stats = rare_class_stats(labels, self.label_set.num_classes, min_pixels=config.data.rare_class_min_pixels)
            self.sampler = RareClassSampler(stats, temperature=config.data.rare_class_temperature,
                                            seed=config.run.seed + self.info.rank)

    def seed_generators(self, seed: int) -> None:
        """(Re)seed this process's explicit generators (mixing, k₀, batch indices)."""
        import torch

        self.mixing_generator = torch.Generator().manual_seed(seed)
        self.k0_rng = random.Random(seed)
        self.index_rng = np.random.default_rng(seed)

    def generators(self) -> dict[str, Any]:
        """Every explicit generator of the run, by name (saved in checkpoints for bit-exact resume)."""
        named = {"mixing": self.mixing_generator, "k0": self.k0_rng, "index": self.index_rng,
                 "source_aug": self.source._generator(), "target_aug": self.target._generator()}
        if self.sampler is not None:
            named["rare_class"] = self.sampler.rng
        return named

    def source_batch(self) -> Batch:
        d, samples = self.config.data, []
        for _ in range(d.batch_size):
            if self.sampler is None:
                samples.append(self.source.load(int(self.index_rng.integers(len(self.source)))))
            else:
                index, c = self.sampler.sample()
                min_pixels = int(d.rare_class_min_pixels * d.rare_class_min_crop_ratio)
                samples.append(self.source.load(index, required_class=c, min_class_pixels=min_pixels))
        return _stack(samples, self.device)

    def target_batch(self) -> Batch:
        indices = self.index_rng.integers(len(self.target), size=self.config.data.batch_size)
        return _stack([self.target.load(int(i)) for i in indices], self.device)

    def step(self, iteration: int, *, visuals: dict[str, Any] | None = None) -> dict[str, float]:
        """One MADM iteration; returns the scalars to log.

        If ``visuals`` is given it is filled with first-image panels (target input, pseudo-label,
        mixed image and label, student prediction, decoded palette image) for TensorBoard.
        """
        import torch

        from madm_train.data.mixing import classmix_masks, mix, strong_augment
        from madm_train.methods.madm.dplg import dplg_timestep, draw_k0, teacher_noise
        from madm_train.methods.madm.lplr import latent_target, lplr_loss
        from madm_train.training.pseudo_labels import confidence_weight, mixed_pixel_weight, pseudo_labels, segmentation_loss

        c = self.config
        model, backbone = self.model, self.model.backbone
        source = self.source_batch()
        assert source.labels is not None
        lplr_colour = c.lplr.unlabelled_color

        # 2. source forward
        with self.autocast():
            logits_s, out_s = model(source.images)
        loss_source = segmentation_loss(logits_s, source.labels)
        loss = loss_source
        scalars = {"loss_source_ce": loss_source.item()}
        if c.method == "source_only":
            return self._update(loss, scalars)
        if c.lplr.source_weight > 0:
            z_s = latent_target(source.labels, backbone.encode, self.label_set, unlabelled_color=lplr_colour)
            reg_s = lplr_loss(out_s.unet_output, z_s, source.labels, weight=c.lplr.source_weight)
            loss = loss + reg_s
            scalars["loss_source_lplr"] = reg_s.item()

        # 1. and 3. EMA update; teacher on the clean target, DPLG-noised early in training
        alpha = self.ema.update(iteration) if iteration > 0 else 0.0
        target = self.target_batch()
        k = 0
        if c.dplg.enabled:
            k = dplg_timestep(iteration, k0=draw_k0(c.dplg.k0_choices, self.k0_rng), end_iter=c.dplg.end_iter)
        timesteps = torch.full((target.images.shape[0],), k, dtype=torch.long, device=self.device)
        noise = None  # the backbone's shared seed-42 noise, as the student uses
        if not c.dplg.fixed_noise:
            latents = backbone.encode(target.images)
            noise = teacher_noise(latents, generator=self.mixing_generator)
        with torch.no_grad(), self.ema.swapped(), self.autocast():
            logits_t, _ = model(target.images, timesteps, noise)
        pseudo, confidence = pseudo_labels(logits_t, tuple(target.images.shape[-2:]))
        q = confidence_weight(confidence, c.pseudo_labels.threshold)

        # 4. ClassMix + jitter/blur, mixed forward
        if c.mixing.classmix:
            masks = classmix_masks(source.labels, self.mixing_generator)
        else:
            masks = torch.zeros_like(source.labels, dtype=torch.bool)
        mixed_images = strong_augment(
            mix(masks, source.images, target.images), self.mixing_generator,
            jitter_probability=c.mixing.jitter_probability, jitter_strength=c.mixing.jitter_strength,
            blur_probability=c.mixing.blur_probability, blur_sigma=c.mixing.blur_sigma,
            blur_kernel_fraction=c.mixing.blur_kernel_fraction)
        mixed_labels = mix(masks, source.labels, pseudo)
        with self.autocast():
            logits_m, out_m = model(mixed_images)
        loss_mixed = segmentation_loss(logits_m, mixed_labels, mixed_pixel_weight(masks, q))
        loss = loss + loss_mixed
        scalars.update(loss_mixed_ce=loss_mixed.item(), pseudo_label_weight=q, dplg_timestep=float(k), ema_alpha=alpha)
        if c.lplr.target_weight > 0:
            z_m = latent_target(mixed_labels, backbone.encode, self.label_set, unlabelled_color=lplr_colour)
            reg_m = lplr_loss(out_m.unet_output, z_m, mixed_labels, confidence=q, weight=c.lplr.target_weight)
            loss = loss + reg_m
            scalars["loss_mixed_lplr"] = reg_m.item()

        if visuals is not None:
            visuals.update(target=target.images[0], pseudo_label=pseudo[0], mixed=mixed_images[0],
                           mixed_label=mixed_labels[0], prediction=logits_m[0].argmax(0), palette=out_m.decoded[0])

        return self._update(loss, scalars)

    def _update(self, loss: Any, scalars: dict[str, float]) -> dict[str, float]:
        """Step 5: backward, gradient all-reduce and clip, optimiser and schedule step; adds loss, lr, grad_norm."""
        from madm_train.training.schedule import clip_gradients

        c = self.config
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        average_gradients([p for g in self.optimizer.param_groups for p in g["params"]], self.info)
        self.scaler.unscale_(self.optimizer)  # the clip norm refers to true gradients
        scalars["grad_norm"] = clip_gradients([p for g in self.optimizer.param_groups for p in g["params"]],
                                              c.optim.grad_clip_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.lr_scheduler.step()
        scalars.update(loss=loss.item(), lr=self.optimizer.param_groups[0]["lr"])
        return scalars

    def evaluate(self, out_dir: Path) -> dict[str, Any]:
        """The student at t = 0 on the target test split (MADM evaluates the student)."""
        import torch

        from madm_train.training.evaluate import evaluate

        if not self.test.label_paths():  # e.g. a bag without a label topic: nothing to score against
            return {"miou": None, "images": 0, "note": "the target evaluation split has no labels: not evaluated"}
        self.model.eval()
        try:
            return evaluate(lambda x: self.model(x.to(self.device))[0], self.test, self.label_set, out_dir,
                            batch_size=self.config.data.batch_size)
        finally:
            torch.set_grad_enabled(True)
            self.model.train()


def _image_grid(visuals: dict[str, Any], label_set: LabelSet) -> np.ndarray:
    """The panels of :meth:`_Recipe.step` side by side as one H×6W×3 uint8 image (labels coloured)."""
    import torch.nn.functional as F

    from madm_ros.palettes import colorize

    size = visuals["target"].shape[-2:]

    def image(t: Any) -> np.ndarray:
        t = F.interpolate(t[None].float(), size=size, mode="bilinear", align_corners=False)[0]
        return np.rint(t.detach().clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255).astype(np.uint8)

    def label(t: Any) -> np.ndarray:
        return colorize(t.detach().cpu().numpy().astype(np.uint8), label_set)

    return np.concatenate([image(visuals["target"]), label(visuals["pseudo_label"]), image(visuals["mixed"]),
                           label(visuals["mixed_label"]), label(visuals["prediction"]), image(visuals["palette"])], axis=1)


def adapt(config: AdaptConfig, *, progress: bool = True) -> Path:
    """Run MADM self-training as configured; returns the run folder (see the module docstring)."""
    import torch
    from tqdm import tqdm

    from madm_train.training.checkpoints import load_checkpoint, resolve_resume, save_checkpoint

    info = init_distributed("cuda" if config.run.device.startswith("cuda") else "cpu")
    run_dir = Path(config.run.out_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    random.seed(config.run.seed)
    np.random.seed(config.run.seed)
    torch.manual_seed(config.run.seed)  # identical initial weights in every process
    if info.is_main:
        save_config(config, run_dir)
    recipe = _Recipe(config, run_dir, info)
    start = 0
    checkpoint = resolve_resume(run_dir / CHECKPOINTS, config.run.resume)
    if checkpoint is not None:
        start = load_checkpoint(checkpoint, model=recipe.model, optimizer=recipe.optimizer,
                                lr_scheduler=recipe.lr_scheduler, ema=recipe.ema, grad_scaler=recipe.scaler,
                                generators=recipe.generators()).step
        if info.enabled:  # the checkpoint holds rank 0's generators; every process needs its own stream
            recipe.seed_generators(hash((config.run.seed, info.rank, start)) % 2**31)
    if not info.is_main:
        return _follow(recipe, start)
    from torch.utils.tensorboard import SummaryWriter

    log = (run_dir / "log.jsonl").open("a", encoding="utf-8")
    board = SummaryWriter(str(run_dir / "tensorboard"))
    max_iter, run = config.optim.max_iter, config.run
    image_every = run.eval_every or max_iter
    bar = tqdm(range(start, max_iter), initial=start, total=max_iter, desc="adapt", unit="it", disable=not progress)
    try:
        for iteration in bar:
            done = iteration + 1
            visuals: dict[str, Any] | None = {} if (done % image_every == 0 or done == max_iter) else None
            scalars = recipe.step(iteration, visuals=visuals)
            if done % run.log_every == 0 or done == max_iter:
                log.write(json.dumps({"iteration": done, **scalars}) + "\n")
                log.flush()
                for key, value in scalars.items():
                    board.add_scalar(f"train/{key}", value, done)
                bar.set_postfix(loss=f"{scalars['loss']:.3f}", q=f"{scalars.get('pseudo_label_weight', 0.0):.2f}")
            if visuals:
                grid = _image_grid(visuals, recipe.label_set)
                board.add_image("train/target|pseudo|mixed|mixed_label|prediction|palette", grid, done, dataformats="HWC")
            if run.eval_every and done % run.eval_every == 0 and done != max_iter:
                metrics = recipe.evaluate(run_dir / f"eval-{done}")
                log.write(json.dumps({"iteration": done, "eval_miou": metrics["miou"]}) + "\n")
                if metrics["miou"] is not None:
                    board.add_scalar("eval/miou", metrics["miou"], done)
            if (run.checkpoint_every and done % run.checkpoint_every == 0) or done == max_iter:
                save_checkpoint(run_dir / CHECKPOINTS, done, model=recipe.model, optimizer=recipe.optimizer,
                                lr_scheduler=recipe.lr_scheduler, ema=recipe.ema, grad_scaler=recipe.scaler,
                                config=config.to_dict(),
                                generators=recipe.generators(), total_limit=run.checkpoints_total_limit)
    finally:
        log.close()
    check_replicas_equal(recipe.model.parameters(), info)
    metrics = recipe.evaluate(run_dir / "eval-final")
    if metrics["miou"] is not None:
        board.add_scalar("eval/miou", metrics["miou"], max_iter)
    board.close()
    recipe.model.save(run_dir / "model")
    atomic_write_bytes(run_dir / "metrics.json", (json.dumps(metrics, indent=1) + "\n").encode())
    _barrier(info)
    return run_dir


def _follow(recipe: _Recipe, start: int) -> Path:
    """The loop of a process other than rank 0: train in step with it, write nothing."""
    for iteration in range(start, recipe.config.optim.max_iter):
        recipe.step(iteration)
    check_replicas_equal(recipe.model.parameters(), recipe.info)
    _barrier(recipe.info)  # rank 0 evaluates and saves meanwhile
    return recipe.run_dir
