"""Configuration of ``madm_train adapt``: one YAML per task → one frozen :class:`AdaptConfig`.

How a value gets into force, in exactly this order (nothing else reads configuration):

1. The YAML's ``task`` (``depth``, ``infrared`` or ``events``; a ``--set task=…`` wins) selects
   the released MADM values for that task (:func:`task_defaults`, madm_spec.md §2–§4).
2. Every other key of the YAML replaces the value of the field of the same name.
3. ``--set section.key=value`` overrides replace single fields; values are read as YAML scalars
   (``--set optim.lr=1e-5``, ``--set data.crop_hw=[256,256]``, ``--set run.resume=latest``).

Every key must name a field (a misspelt key is an error that lists the allowed ones), every value
must have the field's type, and impossible combinations are refused before anything is built.
The resolved configuration is saved with every run (:func:`save_config`) and every checkpoint, so
``config.yaml`` in a run folder reproduces the run on its own.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import re
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from madm_ros.atomic_io import atomic_write_bytes
from madm_ros.errors import ConfigError

__all__ = [
    "TASKS",
    "AdaptConfig",
    "DataConfig",
    "DplgConfig",
    "EmaConfig",
    "LplrConfig",
    "MixingConfig",
    "ModelConfig",
    "OptimConfig",
    "PseudoLabelConfig",
    "RunConfig",
    "check_data_paths",
    "config_from_dict",
    "load_config",
    "save_config",
    "task_defaults",
]

Task = Literal["depth", "infrared", "events"]
TASKS: tuple[str, ...] = typing.get_args(Task)

# ODISE's detectron2 schedule, which MADM rescales to its own length (madm_spec.md §2.5): 500
# warm-up iterations and drops at 163,889 and 177,546 of 184,375.
_ODISE_ITERS = 184_375
_ODISE_WARMUP = 500
_ODISE_MILESTONES = (163_889, 177_546)


@dataclass(frozen=True)
class DataConfig:
    """Source and target data (madm_spec.md §2.4, §2.6, §5).

    Attributes:
        source_kind: ``cityscapes`` (labelled RGB) or ``folder`` (the generic folder layout, e.g.
            synthetic scenes, read as modality ``rgb``).
        source_root: Root of the source data set.
        source_split: Source split that is trained on.
        target_kind: ``deliver_depth``, ``fmb_infrared``, ``dsec_edges`` (MADM's pre-rendered DSEC
            edge PNGs), ``dsec_events`` (edge frames rendered from DSEC ``events.h5``) or ``folder``.
        target_root: Root of the target data set.
        target_split: Unlabelled target split that is adapted to.
        test_split: Labelled target split that is evaluated on.
        test_root: Root of the labelled evaluation data when it is not ``target_root`` (e.g. your
            own unlabelled folder to adapt to, plus a few hand-labelled frames in another folder);
            empty: ``target_root``.
        modality: Target modality (``depth``, ``thermal`` or ``events``).
        label_set: Class set of labels and logits (``dsec11``: 11 classes, ``fmb9``: 9).
        source_resize_hw: Every source image is resized to this (height, width) before cropping.
        target_resize_hw: The same for target images.
        crop_hw: Random training crop = network input size; must fit in both resize sizes.
        flip_probability: Chance of a horizontal flip (source and target independently).
        batch_size: Source images and target images per step (one of each in the reference, per GPU).
        rare_class_sampling: Rare-class sampling of source examples (DAFormer's RCS).
        rare_class_temperature: RCS temperature T in P(c) = softmax((1 − f_c)/T).
        rare_class_min_pixels: An example counts for a class when it holds this many of its pixels.
        rare_class_min_crop_ratio: A crop is redrawn (up to 10 times) until it holds this fraction
            of ``rare_class_min_pixels`` of the sampled class.
        synthetic_frames: With ``source_kind`` and ``target_kind`` both ``folder`` on one root (or a
            ``folder`` source and a ``target_bag``), the number of synthetic frames ``adapt``
            generates there (at ``source_resize_hw``, seed ``run.seed``) when the folder holds no
            data set yet; 0 never generates.
        target_bag: A rosbag2 (folder or file) to adapt to: the frames of ``target_topic`` are
            extracted into ``target_bag_cache`` by ``madm_train.data.bag_target`` (through the nodes'
            own decoding and, for events, the event node's ``EventFrameStream``) and read as a
            folder; ``target_kind`` and ``target_root`` are then set to that cache, and ``test_root``
            to its labelled frames (with ``target_label_topic``), else it is kept (a labelled folder
            of your own) or, when empty, set to the unlabelled frames: no target evaluation.
            Empty: no bag (``--target-bag``).
        target_topic: The bag's depth or thermal ``sensor_msgs/Image`` topic, or its event topic
            (any ``message_type`` of the event node; the type is taken from the bag) (``--target-topic``).
        target_label_topic: Optional ``sensor_msgs/Image`` topic of the bag with ``mono8`` class
            ids of ``label_set`` (255 = ignore); each label goes to the frame nearest its header
            stamp, and those frames are the evaluation split, held out of the frames adapted to
            unless every frame is labelled. Empty: no target evaluation (``--target-label-topic``).
        target_label_tolerance_ms: Largest |label stamp − frame stamp| of a label match; null: as
            ``madm_ros.bag_eval`` (1 ms for images, half the accumulation window for events).
        target_bag_every: Keep every n-th unlabelled frame of the bag (near-duplicates of a fast camera).
        target_bag_cache: Folder of the extracted frames (``target/``, ``test/``); reused while the
            bag and settings are unchanged. Empty: ``<run.out_dir>/bag_target``.
        target_events_params: Event node parameter file (``config/events.yaml`` form) whose
            accumulation parameters make the bag's edge frames; empty: the node's defaults. Use
            the file the node will run with, so training and deployment see the same frames.
    """

    source_kind: Literal["cityscapes", "folder"] = "cityscapes"
    source_root: str = "/data/cityscapes"
    source_split: str = "train"
    target_kind: Literal["deliver_depth", "fmb_infrared", "dsec_edges", "dsec_events", "folder"] = "deliver_depth"
    target_root: str = "/data/DELIVER"
    target_split: str = "train"
    test_split: str = "test"
    test_root: str = ""
    modality: Literal["depth", "thermal", "events"] = "depth"
    label_set: Literal["dsec11", "fmb9"] = "dsec11"
    source_resize_hw: tuple[int, int] = (512, 1024)
    target_resize_hw: tuple[int, int] = (712, 712)
    crop_hw: tuple[int, int] = (512, 512)
    flip_probability: float = 0.5
    batch_size: int = 1
    rare_class_sampling: bool = True
    rare_class_temperature: float = 0.01
    rare_class_min_pixels: int = 3000
    rare_class_min_crop_ratio: float = 0.5
    synthetic_frames: int = 0
    target_bag: str = ""
    target_topic: str = ""
    target_label_topic: str = ""
    target_label_tolerance_ms: float | None = None
    target_bag_every: int = 1
    target_bag_cache: str = ""
    target_events_params: str = ""

    def __post_init__(self) -> None:
        for name in ("source_resize_hw", "target_resize_hw", "crop_hw"):
            _positive_size(f"data.{name}", getattr(self, name))
        for name in ("source_resize_hw", "target_resize_hw"):
            resize = getattr(self, name)
            if self.crop_hw[0] > resize[0] or self.crop_hw[1] > resize[1]:
                raise ConfigError(f"data.crop_hw {list(self.crop_hw)} is larger than data.{name} {list(resize)}; "
                                  "the crop must fit inside the resized image")
        _in_range("data.flip_probability", self.flip_probability, 0.0, 1.0)
        _at_least("data.batch_size", self.batch_size, 1)
        _at_least("data.synthetic_frames", self.synthetic_frames, 0)
        if self.synthetic_frames and not (self.source_kind == "folder" and (self.target_bag or (
                self.target_kind == "folder" and self.source_root == self.target_root))):
            raise ConfigError("data.synthetic_frames needs source_kind and target_kind 'folder' on one root "
                              "(the generated folder holds every modality), or a folder source and data.target_bag")
        self._check_bag()
        if not self.rare_class_temperature > 0:
            raise ConfigError(f"data.rare_class_temperature must be > 0, got {self.rare_class_temperature}")
        _at_least("data.rare_class_min_pixels", self.rare_class_min_pixels, 0)
        _in_range("data.rare_class_min_crop_ratio", self.rare_class_min_crop_ratio, 0.0, 1.0)

    def _check_bag(self) -> None:
        if self.target_bag and not self.target_topic:
            raise ConfigError("data.target_bag needs data.target_topic (--target-topic): the bag's depth, thermal or "
                              "event topic")
        if not self.target_bag:
            given = [k for k in ("target_topic", "target_label_topic", "target_events_params") if getattr(self, k)]
            if given:
                raise ConfigError(f"data.{given[0]} needs data.target_bag (--target-bag): the bag it is read from")
        if self.target_label_topic and self.target_label_topic == self.target_topic:
            raise ConfigError(f"data.target_label_topic must differ from data.target_topic {self.target_topic!r}")
        if self.target_label_tolerance_ms is not None and not self.target_label_tolerance_ms >= 0:
            raise ConfigError(f"data.target_label_tolerance_ms must be ≥ 0, got {self.target_label_tolerance_ms}")
        _at_least("data.target_bag_every", self.target_bag_every, 1)
        if self.target_events_params and self.modality != "events":
            raise ConfigError(f"data.target_events_params is for event topics; data.modality is {self.modality}")


@dataclass(frozen=True)
class ModelConfig:
    """Which diffusion model and what of it is trained (madm_spec.md §1, §8).

    Attributes:
        pretrained: Local Stable Diffusion v1.x (diffusers folder or single checkpoint file);
            never downloaded. Required by the ``sd`` preset. With the ``tiny`` preset: a tiny SD
            folder such as the prior ``python -m madm_train pretrain-prior`` writes, or empty for
            random tiny weights.
        preset: ``sd`` (Stable Diffusion v1.x sizes) or ``tiny`` (same classes at toy size, CPU).
        init_weights: A saved model folder (a run's ``model/``) whose weights initialise the whole
            network, e.g. a source-only run to adapt from; it must match the preset and classes.
            Empty: ``pretrained`` for the backbone and a random head (the reference).
        finetune: ``full`` (the released configs: the whole UNet is trained) or ``lora`` (peft
            LoRA on to_q/to_k/to_v/to_out.0, UNet frozen otherwise; fits one 24 GB GPU).
        lora_rank: LoRA rank r (``finetune: lora`` only).
        lora_alpha: LoRA alpha (``finetune: lora`` only).
        noise_seed: Seed of the one shared N(0, I) latent noise tensor (42 in the reference).
        gradient_checkpointing: Recompute UNet activations in the backward pass (less memory,
            about a third more compute); off in the reference.
    """

    pretrained: str = ""
    preset: Literal["sd", "tiny"] = "sd"
    init_weights: str = ""
    finetune: Literal["full", "lora"] = "full"
    lora_rank: int = 8
    lora_alpha: float = 8.0
    noise_seed: int = 42
    gradient_checkpointing: bool = False

    def __post_init__(self) -> None:
        if self.finetune == "lora" and self.lora_rank <= 0:
            raise ConfigError(f"model.lora_rank must be ≥ 1 with model.finetune=lora, got {self.lora_rank}")
        if self.finetune == "lora" and not self.lora_alpha > 0:
            raise ConfigError(f"model.lora_alpha must be > 0 with model.finetune=lora, got {self.lora_alpha}")


@dataclass(frozen=True)
class DplgConfig:
    """Diffusion-based pseudo-label generation (madm_spec.md §3).

    Attributes:
        enabled: Noise the teacher's latent early in training.
        k0_choices: k₀ is drawn uniformly from these per iteration ({60, 61} depth, {50, 51} else).
        end_iter: E: the teacher timestep is ⌊k₀(1 − i/E)⌋ for i ≤ E and 0 afterwards.
        fixed_noise: Use the one shared noise tensor (``model.noise_seed``) as the reference does;
            ``false`` draws fresh noise every iteration (an explicit departure, untested in the paper).
    """

    enabled: bool = True
    k0_choices: tuple[int, ...] = (60, 61)
    end_iter: int = 5000
    fixed_noise: bool = True

    def __post_init__(self) -> None:
        if not self.k0_choices:
            raise ConfigError("dplg.k0_choices must name at least one timestep")
        for k0 in self.k0_choices:
            if not 0 <= k0 <= 999:
                raise ConfigError(f"dplg.k0_choices must lie in 0..999 (the 1000 DDPM timesteps), got {list(self.k0_choices)}")
        _at_least("dplg.end_iter", self.end_iter, 1)


@dataclass(frozen=True)
class LplrConfig:
    """Label palette and latent regression (madm_spec.md §4).

    Attributes:
        source_weight: λ_s of the L1 latent regression on source labels (0 switches it off).
        target_weight: λ_t on the mixed labels (0 switches it off; the event task uses source only).
        unlabelled_color: RGB that ignore (255) pixels are painted with before encoding (black in
            the reference, where the palette is zero-padded); they are masked out of the loss anyway.
    """

    source_weight: float = 1.0
    target_weight: float = 1.0
    unlabelled_color: tuple[int, int, int] = (0, 0, 0)

    def __post_init__(self) -> None:
        _at_least("lplr.source_weight", self.source_weight, 0.0)
        _at_least("lplr.target_weight", self.target_weight, 0.0)
        if any(not 0 <= c <= 255 for c in self.unlabelled_color):
            raise ConfigError(f"lplr.unlabelled_color must be three values in 0..255, got {list(self.unlabelled_color)}")


@dataclass(frozen=True)
class OptimConfig:
    """AdamW and the learning-rate multiplier (madm_spec.md §2.5; see ``madm_train.training.schedule``).

    Attributes:
        lr: Learning rate of every trained parameter.
        weight_decay: AdamW weight decay (0 on norm layers and biases).
        betas: AdamW β₁, β₂.
        eps: AdamW ε.
        grad_clip_norm: Global L2 gradient norm is clipped to this (after AMP unscaling).
        max_iter: Training iterations.
        warmup_factor: The multiplier starts at this factor and rises linearly to 1.
        warmup_fraction: Warm-up length as a fraction of ``max_iter`` (500/184375 ≈ 27 of 10,000).
        milestone_fractions: Step drops, as fractions of detectron2's ``num_updates = 2·max_iter − 1``
            evaluated at ``iter/max_iter`` (→ iterations 8889 and 9630 of 10,000).
        step_factors: Multiplier after each milestone.
    """

    lr: float = 5e-6
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    grad_clip_norm: float = 0.01
    max_iter: int = 10_000
    warmup_factor: float = 0.067
    warmup_fraction: float = _ODISE_WARMUP / _ODISE_ITERS
    milestone_fractions: tuple[float, ...] = tuple(m / _ODISE_ITERS for m in _ODISE_MILESTONES)
    step_factors: tuple[float, ...] = (0.1, 0.01)

    def __post_init__(self) -> None:
        if not self.lr > 0:
            raise ConfigError(f"optim.lr must be > 0, got {self.lr}")
        _at_least("optim.weight_decay", self.weight_decay, 0.0)
        if not all(0 <= b < 1 for b in self.betas):
            raise ConfigError(f"optim.betas must lie in [0, 1), got {list(self.betas)}")
        if not self.eps > 0:
            raise ConfigError(f"optim.eps must be > 0, got {self.eps}")
        if not self.grad_clip_norm > 0:
            raise ConfigError(f"optim.grad_clip_norm must be > 0, got {self.grad_clip_norm}")
        _at_least("optim.max_iter", self.max_iter, 1)
        _in_range("optim.warmup_factor", self.warmup_factor, 0.0, 1.0)
        _in_range("optim.warmup_fraction", self.warmup_fraction, 0.0, 1.0)
        if len(self.milestone_fractions) != len(self.step_factors):
            raise ConfigError(f"optim.milestone_fractions ({len(self.milestone_fractions)} values) and "
                              f"optim.step_factors ({len(self.step_factors)} values) must have the same length")
        if any(not 0 < f < 1 for f in self.milestone_fractions) or list(self.milestone_fractions) != sorted(
                self.milestone_fractions):
            raise ConfigError(f"optim.milestone_fractions must increase within (0, 1), got {list(self.milestone_fractions)}")


@dataclass(frozen=True)
class EmaConfig:
    """EMA teacher (madm_spec.md §2.1).

    Attributes:
        alpha: Final EMA factor; the ramp is min(1 − 1/(i+1), alpha).
        include_unet: Also average the UNet (the reference shares the live UNet with the teacher).
    """

    alpha: float = 0.999
    include_unet: bool = False

    def __post_init__(self) -> None:
        if not 0 <= self.alpha < 1:
            raise ConfigError(f"ema.alpha must lie in [0, 1), got {self.alpha}")


@dataclass(frozen=True)
class PseudoLabelConfig:
    """Teacher pseudo-labels (madm_spec.md §2.2).

    Attributes:
        threshold: q = fraction of teacher pixels whose softmax maximum is ≥ this.
    """

    threshold: float = 0.968

    def __post_init__(self) -> None:
        _in_range("pseudo_labels.threshold", self.threshold, 0.0, 1.0)


@dataclass(frozen=True)
class MixingConfig:
    """ClassMix and photometric augmentation of the mixed image (madm_spec.md §2.3).

    Attributes:
        classmix: Paste half of the source classes onto the target image (off: target only).
        jitter_probability: Chance per batch of colour jitter.
        jitter_strength: Brightness, contrast, saturation and hue strength of the jitter.
        blur_probability: Chance per batch of Gaussian blur.
        blur_sigma: σ of the blur is drawn uniformly from this (low, high) range.
        blur_kernel_fraction: Kernel side ≈ this fraction of the image side, made odd.
    """

    classmix: bool = True
    jitter_probability: float = 0.8
    jitter_strength: float = 0.2
    blur_probability: float = 0.5
    blur_sigma: tuple[float, float] = (0.15, 1.15)
    blur_kernel_fraction: float = 0.1

    def __post_init__(self) -> None:
        _in_range("mixing.jitter_probability", self.jitter_probability, 0.0, 1.0)
        _in_range("mixing.jitter_strength", self.jitter_strength, 0.0, 0.5)
        _in_range("mixing.blur_probability", self.blur_probability, 0.0, 1.0)
        if not 0 < self.blur_sigma[0] <= self.blur_sigma[1]:
            raise ConfigError(f"mixing.blur_sigma must be (low, high) with 0 < low ≤ high, got {list(self.blur_sigma)}")
        _in_range("mixing.blur_kernel_fraction", self.blur_kernel_fraction, 0.0, 1.0)


@dataclass(frozen=True)
class RunConfig:
    """Where and how a run executes.

    Attributes:
        out_dir: Run folder: resolved config, logs, ``checkpoints/checkpoint-<step>``.
        seed: Seed of every random generator of the run.
        device: Torch device, e.g. ``cuda``, ``cuda:1`` or ``cpu``.
        amp: Mixed precision autocast of the forward passes (the reference trains with fp16 AMP).
        amp_dtype: ``float16`` (CUDA only; with loss scaling, as the reference) or ``bfloat16``
            (CUDA or CPU; no loss scaling needed).
        log_every: Iterations between log lines.
        eval_every: Iterations between evaluations on the target test split (0: only at the end).
        checkpoint_every: Iterations between checkpoints (0: only at the end).
        checkpoints_total_limit: Newest checkpoints kept (the reference keeps only the last).
        resume: ``latest`` (newest checkpoint in ``out_dir``, or a fresh start if there is none),
            a checkpoint name such as ``checkpoint-3000`` or a path; empty: start fresh.
    """

    out_dir: str = "runs/adapt"
    seed: int = 42
    device: str = "cuda"
    amp: bool = True
    amp_dtype: Literal["float16", "bfloat16"] = "float16"
    log_every: int = 50
    eval_every: int = 1000
    checkpoint_every: int = 1000
    checkpoints_total_limit: int = 1
    resume: str | None = None

    def __post_init__(self) -> None:
        _at_least("run.seed", self.seed, 0)
        _at_least("run.log_every", self.log_every, 1)
        _at_least("run.eval_every", self.eval_every, 0)
        _at_least("run.checkpoint_every", self.checkpoint_every, 0)
        _at_least("run.checkpoints_total_limit", self.checkpoints_total_limit, 1)


@dataclass(frozen=True)
class AdaptConfig:
    """Everything ``madm_train adapt`` needs; see the section classes for each field.

    Attributes:
        task: ``depth``, ``infrared`` or ``events``: selects the released per-task defaults.
        method: ``madm`` (the recipe) or ``source_only``: the source cross-entropy alone — no
            teacher, mixing, pseudo-labels or LPLR — the baseline adaptation is measured against.
    """

    task: Task = "depth"
    method: Literal["madm", "source_only"] = "madm"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    dplg: DplgConfig = field(default_factory=DplgConfig)
    lplr: LplrConfig = field(default_factory=LplrConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    ema: EmaConfig = field(default_factory=EmaConfig)
    pseudo_labels: PseudoLabelConfig = field(default_factory=PseudoLabelConfig)
    mixing: MixingConfig = field(default_factory=MixingConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ConfigError(f"task must be one of {', '.join(TASKS)}, got {self.task!r}")
        if self.method not in ("madm", "source_only"):
            raise ConfigError(f"method must be madm or source_only, got {self.method!r}")
        if self.model.finetune == "lora" and self.ema.include_unet:
            raise ConfigError("ema.include_unet=true averages UNet weights, but model.finetune=lora trains only the "
                              "adapters: set ema.include_unet=false")
        if self.run.amp and self.run.device == "cpu" and self.run.amp_dtype == "float16":
            raise ConfigError("run.amp with float16 needs a CUDA device; on the CPU use --set run.amp_dtype=bfloat16 "
                              "or run.amp=false")
        if self.data.target_bag:  # the bag's frames are read from its cache folder (madm_train.data.bag_target)
            cache = Path(self.data.target_bag_cache or Path(self.run.out_dir) / "bag_target")
            # the labelled frames of the bag; without a label topic a test_root of your own, else none
            test = cache / "test" if self.data.target_label_topic else Path(self.data.test_root or cache / "target")
            object.__setattr__(self, "data", dataclasses.replace(
                self.data, target_kind="folder", target_bag_cache=str(cache), target_root=str(cache / "target"),
                test_root=str(test)))

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (tuples as lists): what ``config.yaml``/``config.json`` hold."""
        return _plain(dataclasses.asdict(self))


def task_defaults(task: str) -> AdaptConfig:
    """The released MADM settings of ``task`` (madm_spec.md §2.5, §2.6, §3, §4.3, §5)."""
    if task == "depth":
        return AdaptConfig(task="depth", run=RunConfig(out_dir="runs/depth"))
    if task == "infrared":
        return AdaptConfig(
            task="infrared",
            data=DataConfig(target_kind="fmb_infrared", target_root="/data/FMB", modality="thermal", label_set="fmb9",
                            target_resize_hw=(512, 683)),
            dplg=DplgConfig(k0_choices=(50, 51), end_iter=8000),
            run=RunConfig(out_dir="runs/infrared"),
        )
    if task == "events":
        return AdaptConfig(
            task="events",
            data=DataConfig(target_kind="dsec_edges", target_root="/data/DSEC", modality="events", label_set="dsec11",
                            target_resize_hw=(512, 768)),
            dplg=DplgConfig(k0_choices=(50, 51), end_iter=8000),
            lplr=LplrConfig(source_weight=20.0, target_weight=0.0),
            run=RunConfig(out_dir="runs/events"),
        )
    raise ConfigError(f"task must be one of {', '.join(TASKS)}, got {task!r}")


def load_config(path: Path | str, overrides: Sequence[str] = ()) -> AdaptConfig:
    """Read the YAML at ``path``, apply ``overrides`` (``"section.key=value"``), validate.

    Raises:
        ConfigError: unreadable file, unknown key (the message lists the allowed ones), wrong type,
            out-of-range value or impossible combination.
    """
    import yaml

    path = Path(path)
    try:
        loaded = yaml.safe_load(path.read_text())
    except OSError as error:
        raise ConfigError(f"cannot read config {path}: {error.strerror}") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"{path} is not valid YAML: {error}") from None
    if loaded is None:
        loaded = {}
    if not isinstance(loaded, Mapping):
        raise ConfigError(f"{path} must hold a mapping of sections, got {type(loaded).__name__}")
    parsed = [_parse_override(text) for text in overrides]
    task = next((value for keys, value, _ in reversed(parsed) if keys == ["task"]), loaded.get("task"))
    if task is None:
        raise ConfigError(f"{path} has no 'task' key; set task: one of {', '.join(TASKS)}")
    merged = task_defaults(str(task)).to_dict()
    _merge(merged, loaded, prefix="", source=str(path))
    for keys, value, raw in parsed:
        _set(merged, keys, value, raw)
    return _build(AdaptConfig, merged, "")


def config_from_dict(values: Mapping[str, Any]) -> AdaptConfig:
    """Rebuild a config from :meth:`AdaptConfig.to_dict` output (a checkpoint's or run folder's)."""
    task = values.get("task")
    if task is None:
        raise ConfigError("config has no 'task' key")
    merged = task_defaults(str(task)).to_dict()
    _merge(merged, values, prefix="", source="saved config")
    return _build(AdaptConfig, merged, "")


def save_config(config: AdaptConfig, folder: Path | str) -> tuple[Path, Path]:
    """Write the resolved config as ``config.yaml`` and ``config.json`` into ``folder``, atomically."""
    import yaml

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    values = config.to_dict()
    text = "# Resolved madm_train adapt configuration (task defaults + YAML + --set).\n"
    text += yaml.safe_dump(values, sort_keys=False, allow_unicode=True)
    yaml_path = atomic_write_bytes(folder / "config.yaml", text.encode())
    json_path = atomic_write_bytes(folder / "config.json", (json.dumps(values, indent=2) + "\n").encode())
    return yaml_path, json_path


def check_data_paths(config: AdaptConfig) -> None:
    """Refuse data roots that do not exist, naming the key to set for each (call before building data sets)."""
    if config.data.target_bag and not (Path(config.data.target_bag_cache) / "bag_target.json").is_file():
        raise ConfigError(f"the frames of data.target_bag {config.data.target_bag} are not extracted into "
                          f"{config.data.target_bag_cache} yet: call madm_train.data.bag_target.prepare_bag_target(config) "
                          "first (python -m madm_train adapt does)")
    missing = [(key, value) for key, value in (("data.source_root", config.data.source_root),
                                               ("data.target_root", config.data.target_root))
               if not Path(value).is_dir()]
    if missing:
        lines = "; ".join(f"{key} = {value!r} does not exist" for key, value in missing)
        example = " ".join(f"--set {key}=PATH" for key, _ in missing)
        raise ConfigError(f"{lines}: point them at the data sets ({example}) or edit the YAML; "
                          "synthetic data: python -m madm_train synth --out data/synth")


# ----------------------------------------------------------------------------------------------
# Validation helpers


def _positive_size(key: str, size: tuple[int, int]) -> None:
    if len(size) != 2 or any(v <= 0 for v in size):
        raise ConfigError(f"{key} must be [height, width] with positive integers, got {list(size)}")


def _in_range(key: str, value: float, low: float, high: float) -> None:
    if not low <= value <= high:
        raise ConfigError(f"{key} must lie in [{low}, {high}], got {value}")


def _at_least(key: str, value: float, low: float) -> None:
    if value < low:
        raise ConfigError(f"{key} must be ≥ {low}, got {value}")


# ----------------------------------------------------------------------------------------------
# Merging and typed construction


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _unknown(key: str, allowed: Sequence[str], source: str) -> ConfigError:
    close = difflib.get_close_matches(key.rsplit(".", 1)[-1], allowed, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return ConfigError(f"unknown key {key!r} in {source}{hint}; allowed keys here: {', '.join(allowed)}")


def _merge(base: dict[str, Any], new: Mapping[str, Any], *, prefix: str, source: str) -> None:
    for key, value in new.items():
        dotted = f"{prefix}{key}"
        if key not in base:
            raise _unknown(dotted, list(base), source)
        if isinstance(base[key], dict):
            if not isinstance(value, Mapping):
                raise ConfigError(f"{dotted} in {source} must be a mapping of keys {', '.join(base[key])}, "
                                  f"got {value!r}")
            _merge(base[key], value, prefix=f"{dotted}.", source=source)
        else:
            base[key] = value


def _parse_override(text: str) -> tuple[list[str], Any, str]:
    import yaml

    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {text!r} must look like section.key=value, e.g. optim.lr=1e-5")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as error:
        raise ConfigError(f"override {text!r}: value is not a YAML scalar or list ({error})") from None
    return key.strip().split("."), value, raw


def _set(tree: dict[str, Any], keys: list[str], value: Any, raw: str) -> None:
    node = tree
    for depth, key in enumerate(keys):
        dotted = ".".join(keys[: depth + 1])
        if not isinstance(node, dict):
            raise ConfigError(f"--set {'.'.join(keys)}: {'.'.join(keys[:depth])} is not a section")
        if key not in node:
            raise _unknown(dotted, list(node), "--set")
        if depth == len(keys) - 1:
            if isinstance(node[key], dict):
                raise ConfigError(f"--set {dotted}=… names a whole section; set one of its keys: "
                                  f"{', '.join(f'{dotted}.{k}' for k in node[key])}")
            # A value that YAML reads as a number stays text where the field is text (run.out_dir=2024).
            node[key] = _Override((value, raw))
        node = node[key]


def _build(cls: type, values: Mapping[str, Any], prefix: str) -> Any:
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        key = f"{prefix}{f.name}"
        if f.name not in values:
            continue
        value = values[f.name]
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            kwargs[f.name] = _build(tp, value, f"{key}.")
        elif isinstance(value, _Override):
            parsed, raw = value
            text_wanted = _wants_str(tp) and parsed is not None and not isinstance(parsed, str)
            kwargs[f.name] = _convert(raw.strip() if text_wanted else parsed, tp, key)
        else:
            kwargs[f.name] = _convert(value, tp, key)
    return cls(**kwargs)


class _Override(tuple):
    """A (parsed value, raw text) pair from ``--set``, so that text fields can keep the raw text."""


def _wants_str(tp: Any) -> bool:
    return tp is str or (_is_union(tp) and str in typing.get_args(tp))


def _is_union(tp: Any) -> bool:
    return typing.get_origin(tp) in (typing.Union, types.UnionType)


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if _is_union(tp):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if typing.get_origin(tp) is tuple:
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list of {_type_name(args[0])}"
        return f"a list of {len(args)} values ({', '.join(_type_name(a) for a in args)})"
    return {bool: "true/false", int: "an integer", float: "a number", str: "text", type(None): "null"}.get(tp, str(tp))


_FLOAT_TEXT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def _convert(value: Any, tp: Any, key: str) -> Any:
    def bad() -> ConfigError:
        return ConfigError(f"{key} must be {_type_name(tp)}, got {value!r}")

    origin = typing.get_origin(tp)
    if origin is Literal:
        if value not in typing.get_args(tp) or isinstance(value, bool):
            raise bad()
        return value
    if _is_union(tp):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(value, arg, key)
            except ConfigError:
                pass
        raise bad()
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(value, (list, tuple)) or isinstance(value, str):
            raise bad()
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(v, args[0], f"{key}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise bad()
        return tuple(_convert(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    if tp is bool:
        if not isinstance(value, bool):
            raise bad()
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad()
        return value
    if tp is float:
        if isinstance(value, str) and _FLOAT_TEXT.fullmatch(value.strip()):
            return float(value)  # PyYAML reads 1e-5 (no dot) as text
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad()
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise bad()
        return value
    raise ConfigError(f"{key}: unsupported field type {tp}")  # internal: a field type this loader cannot read
