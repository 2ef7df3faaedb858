"""The three data sets of a training config: labelled source, unlabelled target, labelled target test split.

Used by the trainer, ``evaluate``, ``distill``, ``export`` and the benchmark, so every command reads
a config's data the same way. Synthetic frames (``data.synthetic_frames``) and a bag's frames
(``data.target_bag``) are produced once by the writing process; the others wait at ``barrier``.

Sources (``data.source_kind``): ``cityscapes``, ``gta5``, ``synthia`` (labelled RGB in their
publishers' layouts) or ``folder`` (RGB, or with ``data.source_modality`` the target modality's
labelled frames). Targets (``data.target_kind``): ``deliver_depth``,
``fmb_infrared``, ``dsec_edges``, ``dsec_events``, ``cityscapes`` (RGB: the GTA5/SYNTHIA →
Cityscapes benchmarks, adapting to ``train`` without its labels and testing on labelled ``val``)
or ``folder``. A data set that cannot be found names the config key that points at it.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from madm_ros.errors import ConfigError, InputError
from madm_ros.preprocessing import InputSpec

if TYPE_CHECKING:
    from madm_train.config import TrainConfig

__all__ = ["TEST_FRACTION", "build_datasets", "split_folder_frames"]

TEST_FRACTION = 0.2
"""Folder data sets used as source and target at once: the fraction of sequences held out for testing."""

_T = TypeVar("_T")


def _found_at(key: str, root: str, make: Callable[[], _T]) -> _T:
    """``make()``, with a layout error (missing folder, no examples) extended by the config key to change."""
    try:
        return make()
    except InputError as error:
        raise InputError(f"{error} (looked under {key} = {root!r}; point it at the data set with "
                         f"--set {key}=PATH)") from None


def split_folder_frames(root: Path) -> tuple[list[str], list[str], list[str]]:
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


def build_datasets(config: TrainConfig, *, rank: int = 0, is_main: bool = True,
                   barrier: Callable[[], None] = lambda: None) -> tuple[Any, Any, Any]:
    """Source (labelled, ``data.source_modality``), target (unlabelled modality) and target test data sets of ``config``.

    Each process of a multi-process run augments with its own seed (``run.seed + rank``).
    """
    from madm_train.config import check_data_paths
    from madm_train.data import datasets
    from madm_train.data.augment import TrainAugmentation

    d = config.data
    if is_main and d.synthetic_frames and not (Path(d.source_root) / "meta.json").exists():
        from madm_ros.synthetic import SynthConfig, generate

        height, width = d.source_resize_hw
        print(f"adapt: generating {d.synthetic_frames} synthetic frames of {height}x{width} in {d.source_root} "
              "(once; later runs reuse them)", file=sys.stderr)
        generate(SynthConfig(frames=d.synthetic_frames, height=height, width=width, seed=config.run.seed),
                 d.source_root, workers=2, progress=True)
    if is_main and d.target_bag:  # the bag's frames, into the cache that data.target_root points at
        from madm_train.data.bag_target import prepare_bag_target

        prepare_bag_target(config)
    barrier()
    check_data_paths(config)
    spec_source = InputSpec(d.source_modality, height=d.crop_hw[0], width=d.crop_hw[1])
    spec_target = InputSpec(d.modality, height=d.crop_hw[0], width=d.crop_hw[1])
    test_hw = d.test_resize_hw or d.crop_hw
    spec_test = InputSpec(d.modality, height=test_hw[0], width=test_hw[1])
    source_aug = TrainAugmentation(d.source_resize_hw, d.crop_hw, d.flip_probability)
    target_aug = TrainAugmentation(d.target_resize_hw, d.crop_hw, d.flip_probability)
    seed = config.run.seed + rank
    shared_folder = d.source_kind == "folder" and d.target_kind == "folder" and \
        Path(d.source_root).resolve() == Path(d.target_root).resolve()
    source_frames = target_frames = test_frames = None
    if shared_folder:
        source_frames, target_frames, test_frames = split_folder_frames(Path(d.source_root))

    labelled_rgb = {"cityscapes": datasets.CityscapesDataset, "gta5": datasets.Gta5Dataset,
                    "synthia": datasets.SynthiaDataset}
    if d.source_kind in labelled_rgb:
        reader = labelled_rgb[d.source_kind]
        source = _found_at("data.source_root", d.source_root, lambda: reader(
            d.source_root, d.source_split, spec_source, label_set=d.label_set, augmentation=source_aug, seed=seed))
    else:
        source = _found_at("data.source_root", d.source_root, lambda: datasets.FolderDataset(
            d.source_root, spec_source, frames=source_frames, augmentation=source_aug, seed=seed))

    def target_set(split: str, spec: InputSpec, augmentation: TrainAugmentation | None, frames: list[str] | None,
                   offset: int, root: str, *, labelled: bool) -> Any:
        kind, more = d.target_kind, {"augmentation": augmentation, "seed": seed + offset}
        if kind == "deliver_depth":
            return datasets.DeliverDepthDataset(root, split, spec, **more)
        if kind == "fmb_infrared":
            return datasets.FmbInfraredDataset(root, split, spec, **more)
        if kind == "dsec_edges":
            return datasets.DsecEdgeDataset(root, split, spec, **more)
        if kind == "dsec_events":
            return datasets.DsecEventsDataset(root, split, spec, **more)
        if kind == "cityscapes":  # the split adapted to is read without its labels
            return datasets.CityscapesDataset(root, split, spec, label_set=d.label_set, labelled=labelled, **more)
        return datasets.FolderDataset(root, spec, frames=frames, **more)

    target = _found_at("data.target_root", d.target_root, lambda: target_set(
        d.target_split, spec_target, target_aug, target_frames, 1, d.target_root, labelled=False))
    test_key = "data.test_root" if d.test_root else "data.target_root"
    test = _found_at(test_key, d.test_root or d.target_root, lambda: target_set(
        d.test_split, spec_test, None, test_frames, 2, d.test_root or d.target_root, labelled=True))
    if source.label_set is None or source.label_set.name != d.label_set:
        raise ConfigError(f"the source data at {d.source_root} is not labelled in {d.label_set}")
    return source, target, test
