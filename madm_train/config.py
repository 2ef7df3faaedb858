"""Configuration of ``madm_train adapt``: one YAML per task → one frozen :class:`TrainConfig`.

How a value gets into force, in exactly this order (nothing else reads configuration):

1. The YAML's ``task`` (``depth``, ``infrared`` or ``events``) and ``method.name`` (a key of
   :data:`madm_train.methods.METHODS`, default ``madm``; a ``--set`` of either wins) select the
   released values for that task and method (:func:`task_defaults`, madm_spec.md §2–§5).
2. Every other key of the YAML replaces the value of the field of the same name.
3. ``--set section.key=value`` overrides replace single fields; values are read as YAML scalars
   (``--set optim.lr=1e-5``, ``--set data.crop_hw=[256,256]``, ``--set method.dplg.end_iter=3000``).

The ``method`` section is tagged: it holds ``name`` and that method's own keys only (MADM's
``model``, ``dplg``, ``lplr``, ``ema``, ``pseudo_labels``, ``mixing``); the trainer's sections are
``data``, ``optim`` and ``run``. Every key must name a field (a misspelt key is an error that lists
the allowed ones), every value must have the field's type, and impossible combinations are refused
before anything is built (:mod:`madm_train.config_loader` does the typed loading). The resolved
configuration is saved with every run (:func:`save_config`) and every checkpoint, so
``config.yaml`` in a run folder reproduces the run on its own.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from madm_ros.atomic_io import atomic_write_bytes
from madm_ros.errors import ConfigError
from madm_ros.palettes import LABEL_SETS
from madm_ros.preprocessing import Modality
from madm_train.config_loader import (
    at_least,
    build_dataclass,
    in_range,
    mapping_fields,
    merge_values,
    parse_override,
    plain,
    positive_size,
    set_override,
)

__all__ = [
    "TASKS",
    "DataConfig",
    "OptimConfig",
    "RunConfig",
    "TrainConfig",
    "check_data_paths",
    "config_from_dict",
    "load_config",
    "save_config",
    "task_defaults",
]

Task = Literal["depth", "infrared", "events", "rgb"]
TASKS: tuple[str, ...] = typing.get_args(Task)
"""The released tasks, each a set of defaults (:func:`task_defaults`): three RGB → modality tasks of
MADM, and ``rgb``, the synthetic-to-real RGB benchmark of DIFF and ICCLD (GTA5 → Cityscapes)."""

# ODISE's detectron2 schedule, which MADM rescales to its own length (madm_spec.md §2.5): 500
# warm-up iterations and drops at 163,889 and 177,546 of 184,375.
_ODISE_ITERS = 184_375
_ODISE_WARMUP = 500
_ODISE_MILESTONES = (163_889, 177_546)


@dataclass(frozen=True)
class DataConfig:
    """Source and target data (madm_spec.md §2.4, §2.6, §5; the ``rgb`` task: iccld_diff_spec.md A.3, B.3, B.4).

    Attributes:
        source_kind: Labelled RGB in its publisher's layout: ``cityscapes``, ``gta5`` (``images/``,
            ``labels/``) or ``synthia`` (SYNTHIA-RAND-CITYSCAPES: ``RGB/``, ``GT/LABELS/``); or
            ``folder`` (the generic folder layout, e.g. synthetic scenes, read as ``source_modality``).
            GTA5 and SYNTHIA are used whole (``source_split`` must be ``train``); their labels are
            Cityscapes train ids, like Cityscapes', so rare-class sampling counts in the 19 classes.
        source_root: Root of the source data set.
        source_split: Source split that is trained on.
        source_modality: Modality of the source images: ``rgb``, or ``modality`` itself for a
            ``folder`` source that holds that modality with labels (synthetic scenes): supervised
            training on labelled target-modality frames, the "oracle" that adaptation aims at.
        target_kind: ``deliver_depth``, ``fmb_infrared``, ``dsec_edges`` (MADM's pre-rendered DSEC
            edge PNGs), ``dsec_events`` (edge frames rendered from DSEC ``events.h5``),
            ``cityscapes`` (an RGB target, modality ``rgb``: ``target_split`` is read without its
            labels, ``test_split`` — ``val`` — with them) or ``folder``.
        target_root: Root of the target data set.
        target_split: Unlabelled target split that is adapted to.
        test_split: Labelled target split that is evaluated on.
        test_root: Root of the labelled evaluation data when it is not ``target_root`` (e.g. your
            own unlabelled folder to adapt to, plus a few hand-labelled frames in another folder);
            empty: ``target_root``.
        modality: Target modality (``depth``, ``thermal``, ``events`` or ``rgb``).
        label_set: Class set of labels and logits, a name of ``madm_ros.palettes.LABEL_SETS``
            (``dsec11``: 11 classes, ``fmb9``: 9, ``cityscapes19``: Cityscapes' 19 train ids).
        eval_classes: Which class subsets the benchmark also averages (``madm_ros.palettes.EVAL_CLASS_SUBSETS``),
            each reported as ``miou_<subset>`` beside ``miou`` (all classes): ``all`` (none), or for
            SYNTHIA → Cityscapes ``synthia16`` (without terrain, truck, train, which SYNTHIA lacks),
            ``synthia13`` (also without wall, fence, pole) or a list of both, ``[synthia16, synthia13]``;
            the network predicts all classes of ``label_set`` either way. A subset needs
            ``label_set`` ``cityscapes19``.
        source_resize_hw: Every source image is resized to this (height, width) before cropping.
        target_resize_hw: The same for target images.
        test_resize_hw: Test images (and labels, nearest) are resized to this for evaluation; null:
            ``crop_hw`` (MADM evaluates at its 512×512 network size). DIFF tests Cityscapes whole at
            1024×512: ``[512, 1024]``.
        crop_hw: Random training crop = network input size; must fit in both resize sizes.
        flip_probability: Chance of a horizontal flip (source and target independently).
        batch_size: Source images and target images per step (one of each in the reference, per GPU).
        rare_class_sampling: Rare-class sampling of source examples (DAFormer's RCS).
        rare_class_temperature: RCS temperature T in P(c) = softmax((1 − f_c)/T).
        rare_class_min_pixels: An example counts for a class when it holds this many of its pixels.
        rare_class_min_crop_ratio: A crop is redrawn (up to 10 times) until it holds this fraction
            of ``rare_class_min_pixels`` of the sampled class.
        rare_class_classes: ``source``: class statistics and the sampled class in the source data
            set's own classes (Cityscapes: the 19 trainIds, as the reference, mapped to the task's
            11/9 classes after sampling); ``merged``: in the task's label set (a merged class such
            as "car" = car + truck + bus + … is sampled by its merged frequency).
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

    source_kind: Literal["cityscapes", "gta5", "synthia", "folder"] = "cityscapes"
    source_root: str = "/data/cityscapes"
    source_split: str = "train"
    source_modality: Modality = "rgb"
    target_kind: Literal["deliver_depth", "fmb_infrared", "dsec_edges", "dsec_events", "cityscapes", "folder"] = \
        "deliver_depth"
    target_root: str = "/data/DELIVER"
    target_split: str = "train"
    test_split: str = "test"
    test_root: str = ""
    modality: Modality = "depth"
    label_set: str = "dsec11"
    eval_classes: Literal["all", "synthia16", "synthia13"] | tuple[Literal["synthia16", "synthia13"], ...] = "all"
    source_resize_hw: tuple[int, int] = (512, 1024)
    target_resize_hw: tuple[int, int] = (712, 712)
    test_resize_hw: tuple[int, int] | None = None
    crop_hw: tuple[int, int] = (512, 512)
    flip_probability: float = 0.5
    batch_size: int = 1
    rare_class_sampling: bool = True
    rare_class_temperature: float = 0.01
    rare_class_min_pixels: int = 3000
    rare_class_min_crop_ratio: float = 0.5
    rare_class_classes: Literal["source", "merged"] = "source"
    synthetic_frames: int = 0
    target_bag: str = ""
    target_topic: str = ""
    target_label_topic: str = ""
    target_label_tolerance_ms: float | None = None
    target_bag_every: int = 1
    target_bag_cache: str = ""
    target_events_params: str = ""

    def __post_init__(self) -> None:
        if self.label_set not in LABEL_SETS:
            raise ConfigError(f"data.label_set must be one of {', '.join(LABEL_SETS)}, got {self.label_set!r}")
        for name in ("source_resize_hw", "target_resize_hw", "crop_hw"):
            positive_size(f"data.{name}", getattr(self, name))
        if self.test_resize_hw is not None:
            positive_size("data.test_resize_hw", self.test_resize_hw)
        self._check_rgb_target()
        if self.source_modality not in ("rgb", self.modality):
            raise ConfigError(f"data.source_modality must be rgb or data.modality ({self.modality}), "
                              f"got {self.source_modality!r}")
        if self.source_modality != "rgb" and self.source_kind != "folder":
            raise ConfigError(f"data.source_modality={self.source_modality} needs data.source_kind=folder with "
                              f"{self.source_modality} frames; {self.source_kind} holds RGB only")
        for name in ("source_resize_hw", "target_resize_hw"):
            resize = getattr(self, name)
            if self.crop_hw[0] > resize[0] or self.crop_hw[1] > resize[1]:
                raise ConfigError(f"data.crop_hw {list(self.crop_hw)} is larger than data.{name} {list(resize)}; "
                                  "the crop must fit inside the resized image")
        in_range("data.flip_probability", self.flip_probability, 0.0, 1.0)
        at_least("data.batch_size", self.batch_size, 1)
        at_least("data.synthetic_frames", self.synthetic_frames, 0)
        if self.synthetic_frames and not (self.source_kind == "folder" and (self.target_bag or (
                self.target_kind == "folder" and self.source_root == self.target_root))):
            raise ConfigError("data.synthetic_frames needs source_kind and target_kind 'folder' on one root "
                              "(the generated folder holds every modality), or a folder source and data.target_bag")
        self._check_bag()
        if not self.rare_class_temperature > 0:
            raise ConfigError(f"data.rare_class_temperature must be > 0, got {self.rare_class_temperature}")
        at_least("data.rare_class_min_pixels", self.rare_class_min_pixels, 0)
        in_range("data.rare_class_min_crop_ratio", self.rare_class_min_crop_ratio, 0.0, 1.0)

    def _check_rgb_target(self) -> None:
        """Cityscapes is the one RGB target kind (besides a folder); the Synthia subsets live in the 19 classes."""
        if self.target_kind == "cityscapes" and self.modality != "rgb":
            raise ConfigError(f"data.target_kind=cityscapes is an RGB target but data.modality is {self.modality}: "
                              "use --set data.modality=rgb")
        if self.modality == "rgb" and self.target_kind not in ("cityscapes", "folder"):
            raise ConfigError(f"data.modality=rgb needs an RGB target; data.target_kind={self.target_kind} is not one: "
                              "use --set data.target_kind=cityscapes (or a folder with rgb frames)")
        subsets = (self.eval_classes,) if isinstance(self.eval_classes, str) else tuple(self.eval_classes)
        shown = self.eval_classes if isinstance(self.eval_classes, str) else f"[{', '.join(subsets)}]"
        if not subsets or len(set(subsets)) != len(subsets):
            raise ConfigError(f"data.eval_classes={shown} must name each subset once, e.g. [synthia16, synthia13], "
                              "or be all")
        if subsets != ("all",) and self.label_set != "cityscapes19":
            raise ConfigError(f"data.eval_classes={shown} averages Cityscapes classes; data.label_set is "
                              f"{self.label_set}: use --set data.label_set=cityscapes19 or --set data.eval_classes=all")

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
        at_least("data.target_bag_every", self.target_bag_every, 1)
        if self.target_events_params and self.modality != "events":
            raise ConfigError(f"data.target_events_params is for event topics; data.modality is {self.modality}")


@dataclass(frozen=True)
class OptimConfig:
    """AdamW and the learning-rate multiplier (MADM's by default; see ``madm_train.training.schedule``).

    Attributes:
        lr: Learning rate of every trained parameter (times ``head_lr_multiplier`` for the head).
        head_lr_multiplier: Learning-rate factor of the decode head's parameters (DIFF: 10).
        weight_decay: AdamW weight decay (0 on norm layers and biases).
        betas: AdamW β₁, β₂.
        eps: AdamW ε.
        grad_clip_norm: Global L2 gradient norm is clipped to this (after AMP unscaling); ``.inf`` clips nothing.
        max_iter: Training iterations (optimiser steps).
        gradient_accumulation_steps: Batches whose gradients are summed before each optimiser step
            (effective batch = ``data.batch_size`` × this × processes).
        schedule: ``step`` (MADM: warm-up, then drops at the milestones) or ``poly`` (DIFF:
            (1 − i/max_iter)^``poly_power`` times a linear warm-up factor).
        poly_power: Exponent of the ``poly`` schedule (DIFF: 1).
        warmup_factor: The multiplier starts at this factor and rises linearly to 1 (DIFF: 1e-6).
        warmup_fraction: Warm-up length as a fraction of ``max_iter`` (500/184375 ≈ 27 of 10,000;
            DIFF: 1500/40000).
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
    gradient_accumulation_steps: int = 1
    warmup_factor: float = 0.067
    warmup_fraction: float = _ODISE_WARMUP / _ODISE_ITERS
    milestone_fractions: tuple[float, ...] = tuple(m / _ODISE_ITERS for m in _ODISE_MILESTONES)
    step_factors: tuple[float, ...] = (0.1, 0.01)
    schedule: Literal["step", "poly"] = "step"
    poly_power: float = 1.0
    head_lr_multiplier: float = 1.0

    def __post_init__(self) -> None:
        if not self.lr > 0:
            raise ConfigError(f"optim.lr must be > 0, got {self.lr}")
        if not self.head_lr_multiplier > 0:
            raise ConfigError(f"optim.head_lr_multiplier must be > 0, got {self.head_lr_multiplier}")
        if not self.poly_power > 0:
            raise ConfigError(f"optim.poly_power must be > 0, got {self.poly_power}")
        at_least("optim.weight_decay", self.weight_decay, 0.0)
        if not all(0 <= b < 1 for b in self.betas):
            raise ConfigError(f"optim.betas must lie in [0, 1), got {list(self.betas)}")
        if not self.eps > 0:
            raise ConfigError(f"optim.eps must be > 0, got {self.eps}")
        if not self.grad_clip_norm > 0:
            raise ConfigError(f"optim.grad_clip_norm must be > 0, got {self.grad_clip_norm}")
        at_least("optim.max_iter", self.max_iter, 1)
        at_least("optim.gradient_accumulation_steps", self.gradient_accumulation_steps, 1)
        in_range("optim.warmup_factor", self.warmup_factor, 0.0, 1.0)
        in_range("optim.warmup_fraction", self.warmup_fraction, 0.0, 1.0)
        if len(self.milestone_fractions) != len(self.step_factors):
            raise ConfigError(f"optim.milestone_fractions ({len(self.milestone_fractions)} values) and "
                              f"optim.step_factors ({len(self.step_factors)} values) must have the same length")
        if any(not 0 < f < 1 for f in self.milestone_fractions) or list(self.milestone_fractions) != sorted(
                self.milestone_fractions):
            raise ConfigError(f"optim.milestone_fractions must increase within (0, 1), got {list(self.milestone_fractions)}")


@dataclass(frozen=True)
class RunConfig:
    """Where and how a run executes (the trainer's part: devices, precision, distribution, files).

    Attributes:
        out_dir: Run folder: resolved config, logs, ``checkpoints/checkpoint-<step>``.
        seed: Seed of every random generator of the run (process k of a multi-process run draws
            its batches and augmentations from ``seed + k``).
        device: ``cuda`` or ``cpu``. Which GPU(s): ``CUDA_VISIBLE_DEVICES``; several processes:
            ``accelerate launch`` or ``torchrun`` (one process per GPU, one or several nodes).
        amp: Mixed precision of the forward passes (the reference trains with fp16 AMP).
        amp_dtype: ``float16`` (CUDA only; with loss scaling, as the reference) or ``bfloat16``
            (CUDA or CPU; no loss scaling needed).
        distributed: With several processes: ``ddp`` (a full replica per process, gradients
            all-reduced during backward) or ``fsdp`` (parameters, gradients and optimiser state
            sharded across processes, FSDP2 through accelerate; CUDA only).
        log_every: Iterations between log lines.
        eval_every: Iterations between evaluations on the target test split (0: only at the end).
        checkpoint_every: Iterations between checkpoints (0: only at the end).
        checkpoints_total_limit: Newest checkpoints kept (the reference keeps only the last).
        resume: ``latest`` (newest checkpoint in ``out_dir``, or a fresh start if there is none),
            a checkpoint name such as ``checkpoint-3000`` or a path; empty: start fresh.
    """

    out_dir: str = "runs/adapt"
    seed: int = 42
    device: Literal["cuda", "cpu"] = "cuda"
    amp: bool = True
    amp_dtype: Literal["float16", "bfloat16"] = "float16"
    distributed: Literal["ddp", "fsdp"] = "ddp"
    log_every: int = 50
    eval_every: int = 1000
    checkpoint_every: int = 1000
    checkpoints_total_limit: int = 1
    resume: str | None = None

    def __post_init__(self) -> None:
        at_least("run.seed", self.seed, 0)
        at_least("run.log_every", self.log_every, 1)
        at_least("run.eval_every", self.eval_every, 0)
        at_least("run.checkpoint_every", self.checkpoint_every, 0)
        at_least("run.checkpoints_total_limit", self.checkpoints_total_limit, 1)
        if self.amp and self.device == "cpu" and self.amp_dtype == "float16":
            raise ConfigError("run.amp with float16 needs a CUDA device; on the CPU use --set run.amp_dtype=bfloat16 "
                              "or --set run.amp=false")
        if self.distributed == "fsdp" and self.device == "cpu":
            raise ConfigError("run.distributed=fsdp shards across GPUs and needs run.device=cuda; on the CPU use "
                              "--set run.distributed=ddp")


@dataclass(frozen=True)
class TrainConfig:
    """Everything ``madm_train adapt`` needs: the trainer's sections and one tagged method section.

    Attributes:
        task: ``depth``, ``infrared``, ``events`` or ``rgb``: selects the released per-task defaults.
        method: The adaptation method's own section, tagged by ``method.name`` (a key of
            :data:`madm_train.methods.METHODS`: ``madm``; ``diff``, DIFF's multi-timestep features
            with IPKL; or ``source_only`` — the source cross-entropy alone, the baseline adaptation
            is measured against). A run carries only its method's keys.
        data: Source and target data.
        optim: Optimiser and schedule.
        run: Devices, precision, distribution, logging and checkpoints.
    """

    task: Task = "depth"
    method: Any = None
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def __post_init__(self) -> None:
        from madm_train.methods import METHODS

        if self.task not in TASKS:
            raise ConfigError(f"task must be one of {', '.join(TASKS)}, got {self.task!r}")
        if self.method is None:
            object.__setattr__(self, "method", METHODS["madm"].for_task(self.task))
        if type(self.method) not in METHODS.values():
            raise ConfigError(f"method must be one of the config classes of {', '.join(METHODS)}, "
                              f"got {type(self.method).__name__}")
        self.method.check(self)
        if self.data.target_bag:  # the bag's frames are read from its cache folder (madm_train.data.bag_target)
            cache = Path(self.data.target_bag_cache or Path(self.run.out_dir) / "bag_target")
            # the labelled frames of the bag; without a label topic a test_root of your own, else none
            test = cache / "test" if self.data.target_label_topic else Path(self.data.test_root or cache / "target")
            object.__setattr__(self, "data", dataclasses.replace(
                self.data, target_kind="folder", target_bag_cache=str(cache), target_root=str(cache / "target"),
                test_root=str(test)))

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (tuples as lists): what ``config.yaml``/``config.json`` hold; ``method`` carries its ``name``."""
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        values["method"] = {"name": self.method.name, **dataclasses.asdict(self.method)}
        return plain({k: dataclasses.asdict(v) if dataclasses.is_dataclass(v) and k != "method" else v
                      for k, v in values.items()})


def task_defaults(task: str, method: str = "madm") -> TrainConfig:
    """The released settings of ``task`` for ``method`` (madm_spec.md §2.5, §2.6, §5).

    ``rgb`` is DIFF's GTA5 → Cityscapes protocol (iccld_diff_spec.md B.3, B.4; ICCLD's A.3 is the
    same benchmark): GTA5 whole, resized to 1280×720 and cropped to 512² (DAFormer keeps the aspect
    ratio, which gives 1280×704 for GTA5's 1914×1052 frames), adapted to Cityscapes ``train`` at
    1024×512 and tested on its 500 ``val`` images whole at 1024×512, over the 19 classes. For
    SYNTHIA → Cityscapes set ``data.source_kind=synthia``, ``data.source_root``,
    ``data.source_resize_hw=[760, 1280]`` (DAFormer's) and ``data.eval_classes=synthia16``, ``synthia13`` or
    both, ``[synthia16, synthia13]``.
    The optimiser is MADM's unless the method has released its own (``optim_defaults``: DIFF's
    poly schedule with a ×10 head); the rest of the trainer's values are MADM's for every method.
    """
    from madm_train.methods import METHODS

    if task not in TASKS:
        raise ConfigError(f"task must be one of {', '.join(TASKS)}, got {task!r}")
    if method not in METHODS:
        raise ConfigError(f"method.name must be one of {', '.join(METHODS)}, got {method!r}")
    data = {
        "depth": DataConfig(),
        "infrared": DataConfig(target_kind="fmb_infrared", target_root="/data/FMB", modality="thermal", label_set="fmb9",
                               target_resize_hw=(512, 683)),
        "events": DataConfig(target_kind="dsec_edges", target_root="/data/DSEC", modality="events", label_set="dsec11",
                             target_resize_hw=(512, 768)),
        "rgb": DataConfig(source_kind="gta5", source_root="/data/GTA5", source_split="train", source_resize_hw=(720, 1280),
                          target_kind="cityscapes", target_root="/data/cityscapes", target_split="train", test_split="val",
                          target_resize_hw=(512, 1024), test_resize_hw=(512, 1024), modality="rgb",
                          label_set="cityscapes19"),
    }[task]
    return TrainConfig(task=task, method=METHODS[method].for_task(task), data=data,  # type: ignore[arg-type]
                       optim=OptimConfig(**METHODS[method].optim_defaults), run=RunConfig(out_dir=f"runs/{task}"))


def _method_name(values: Mapping[str, Any], source: str) -> str:
    method = values.get("method", {})
    if method is None:
        method = {}
    if not isinstance(method, Mapping):
        raise ConfigError(f"method in {source} must be a mapping with a name key (method: {{name: madm, ...}}), "
                          f"got {method!r}")
    return str(method.get("name", "madm"))


def load_config(path: Path | str, overrides: Sequence[str] = ()) -> TrainConfig:
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
    parsed = [parse_override(text) for text in overrides]
    task = next((value for keys, value, _ in reversed(parsed) if keys == ["task"]), loaded.get("task"))
    if task is None:
        raise ConfigError(f"{path} has no 'task' key; set task: one of {', '.join(TASKS)}")
    method = next((str(value) for keys, value, _ in reversed(parsed) if keys == ["method", "name"]),
                  _method_name(loaded, str(path)))
    merged = task_defaults(str(task), method).to_dict()
    written = _method_name(loaded, str(path))
    stray = sorted(set(loaded.get("method") or {}) - set(merged["method"]))
    if written != method and stray:
        raise ConfigError(f"--set method.name={method} switches {path}'s method {written}, whose keys "
                          f"{', '.join(f'method.{k}' for k in stray)} {method} does not have; use a YAML written for "
                          f"{method} (method: {{name: {method}, ...}})")
    mappings = _mapping_fields(method)
    merge_values(merged, loaded, prefix="", source=str(path), mappings=mappings)
    for keys, value, raw in parsed:
        set_override(merged, keys, value, raw, mappings)
    return _build(merged)


def _mapping_fields(method: str) -> frozenset[str]:
    """The dict-valued keys of a config with ``method``: whole values for YAML and ``--set``, not sections."""
    from madm_train.methods import METHODS

    return mapping_fields(TrainConfig) | {f"method.{key}" for key in mapping_fields(METHODS[method])}


def config_from_dict(values: Mapping[str, Any]) -> TrainConfig:
    """Rebuild a config from :meth:`TrainConfig.to_dict` output (a checkpoint's or run folder's)."""
    task = values.get("task")
    if task is None:
        raise ConfigError("config has no 'task' key")
    method = _method_name(values, "saved config")
    merged = task_defaults(str(task), method).to_dict()
    merge_values(merged, values, prefix="", source="saved config", mappings=_mapping_fields(method))
    return _build(merged)


def _build(values: Mapping[str, Any]) -> TrainConfig:
    from madm_train.methods import METHODS

    method_values = dict(values["method"])
    name = method_values.pop("name")
    if isinstance(name, tuple):  # a --set override: (parsed, raw)
        name = name[0]
    if name not in METHODS:
        raise ConfigError(f"method.name must be one of {', '.join(METHODS)}, got {name!r}")
    method = build_dataclass(METHODS[name], method_values, "method.")
    return build_dataclass(TrainConfig, values, "", built={"method": method})


def save_config(config: TrainConfig, folder: Path | str) -> tuple[Path, Path]:
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


def check_data_paths(config: TrainConfig) -> None:
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
