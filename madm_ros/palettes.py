"""Class sets, colours and label mappings as data.

Three label sets matter to MADM (reference: MADM's configs, see ../shared/reference/madm_spec.md §4.1, §5):
Cityscapes-19 (the labelled RGB source, and the classes of the GTA5/SYNTHIA → Cityscapes
benchmarks), DSEC-11 (depth and event targets) and FMB-9 (infrared). Index order is logits order.
The 11- and 9-class colours are the Cityscapes colours of the kept classes, because LPLR paints
labels with exactly these colours; "traffic sign" therefore wears Cityscapes' traffic-*light* orange.

Mappings are 256-entry uint8 lookup tables, so any uint8 label image maps with one indexing
operation and 255 (ignore) stays 255.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from madm_ros.errors import ConfigError, InputError

__all__ = [
    "CITYSCAPES_19",
    "CITYSCAPES_LABELID_TO_TRAINID",
    "DELIVER_25_NAMES",
    "DSEC_11",
    "EVAL_CLASS_SUBSETS",
    "FMB_9",
    "FMB_15_NAMES",
    "IGNORE_INDEX",
    "LABEL_MAPPING_SOURCES",
    "LABEL_SETS",
    "SYNTHIA_23_NAMES",
    "LabelSet",
    "colorize",
    "eval_class_names",
    "get_label_set",
    "label_mapping",
    "remap_labels",
    "subset_miou",
]

IGNORE_INDEX = 255
"""Label value of pixels without a class, in labels and in published masks."""


@dataclass(frozen=True)
class LabelSet:
    """An ordered list of classes with their display colours."""

    name: str
    class_names: tuple[str, ...]
    colors: tuple[tuple[int, int, int], ...]

    def __post_init__(self) -> None:
        if len(self.class_names) != len(self.colors):
            raise ValueError(f"label set {self.name}: {len(self.class_names)} names but {len(self.colors)} colours")

    @property
    def num_classes(self) -> int:
        """Number of classes (logits channels)."""
        return len(self.class_names)

    def palette(self) -> np.ndarray:
        """Colours as a (num_classes, 3) uint8 RGB array."""
        return np.asarray(self.colors, dtype=np.uint8).reshape(-1, 3)

    def color_lut(self, unlabelled_color: tuple[int, int, int] = (0, 0, 0)) -> np.ndarray:
        """A (256, 3) uint8 table: class ids get their colour, every other value ``unlabelled_color``."""
        lut = np.empty((256, 3), dtype=np.uint8)
        lut[:] = unlabelled_color
        lut[: self.num_classes] = self.palette()
        return lut


def _trainid_lut(pairs: dict[int, int]) -> np.ndarray:
    lut = np.full(256, IGNORE_INDEX, dtype=np.uint8)
    for src, dst in pairs.items():
        lut[src] = dst
    lut.flags.writeable = False  # shared tables: a caller must not be able to change them for everyone
    return lut


CITYSCAPES_19 = LabelSet(
    "cityscapes19",
    ("road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign", "vegetation",
     "terrain", "sky", "person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle"),
    ((128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153), (153, 153, 153),
     (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152), (70, 130, 180), (220, 20, 60),
     (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100), (0, 80, 100), (0, 0, 230), (119, 11, 32)),
)

DSEC_11 = LabelSet(
    "dsec11",
    ("sky", "building", "fence", "person", "pole", "road", "sidewalk", "vegetation", "car", "wall", "traffic sign"),
    ((70, 130, 180), (70, 70, 70), (190, 153, 153), (220, 20, 60), (153, 153, 153), (128, 64, 128),
     (244, 35, 232), (107, 142, 35), (0, 0, 142), (102, 102, 156), (250, 170, 30)),
)

FMB_9 = LabelSet(
    "fmb9",
    ("sky", "building", "person", "pole", "road", "sidewalk", "vegetation", "car", "traffic sign"),
    ((70, 130, 180), (70, 70, 70), (220, 20, 60), (153, 153, 153), (128, 64, 128), (244, 35, 232),
     (107, 142, 35), (0, 0, 142), (250, 170, 30)),
)

LABEL_SETS: dict[str, LabelSet] = {s.name: s for s in (CITYSCAPES_19, DSEC_11, FMB_9)}

CITYSCAPES_LABELID_TO_TRAINID = _trainid_lut({
    7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11, 25: 12,
    26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18,
})
"""Cityscapes full label ids (gtFine ``*_labelIds.png``) → the 19 train ids; everything else → 255."""


DELIVER_25_NAMES = (
    "Building", "Fence", "Other", "Pedestrian", "Pole", "RoadLine", "Road", "SideWalk", "Vegetation", "Cars", "Wall",
    "TrafficSign", "Sky", "Ground", "Bridge", "RailTrack", "GroundRail", "TrafficLight", "Static", "Dynamic", "Water",
    "Terrain", "TwoWheeler", "Bus", "Truck",
)
"""DELIVER's 25 classes in label order (after DELIVER's own minus-one shift of the stored values)."""

FMB_15_NAMES = (
    "unlabelled", "road", "sidewalk", "building", "traffic lamp", "traffic sign", "vegetation", "sky", "person", "car",
    "truck", "bus", "motorcycle", "bicycle", "pole",
)
"""FMB's 15 label values in order (value 0 is unlabelled)."""

SYNTHIA_23_NAMES = (
    "void", "sky", "building", "road", "sidewalk", "fence", "vegetation", "pole", "car", "traffic sign", "pedestrian",
    "bicycle", "motorcycle", "parking slot", "road-work", "traffic light", "terrain", "rider", "truck", "bus", "train",
    "wall", "lanemarking",
)
"""SYNTHIA-RAND-CITYSCAPES' class ids 0..22 (its README), stored in the first channel of the 16-bit
``GT/LABELS`` PNGs. Terrain, truck and train are defined but never occur, so the data set covers
16 of Cityscapes' 19 classes."""


def _by_name(src: tuple[str, ...], dst: LabelSet, renames: dict[str, str | None]) -> np.ndarray:
    """Map class names ``src`` (index = value) onto ``dst`` by name, after ``renames`` (None = ignore)."""
    pairs = {}
    for index, name in enumerate(src):
        target = renames.get(name, name)
        if target is not None:
            pairs[index] = dst.class_names.index(target)
    return _trainid_lut(pairs)


_VEHICLES = {v: "car" for v in ("truck", "bus", "train", "motorcycle", "bicycle")}
_MAPPINGS: dict[tuple[str, str], np.ndarray] = {
    # MADM's label_convert for depth and events: traffic light joins traffic sign, terrain joins
    # vegetation, rider joins person, every vehicle joins car.
    ("cityscapes19", "dsec11"): _by_name(
        CITYSCAPES_19.class_names, DSEC_11,
        {"traffic light": "traffic sign", "terrain": "vegetation", "rider": "person", **_VEHICLES},
    ),
    # The same for infrared, where wall and fence are not classes and become ignore.
    ("cityscapes19", "fmb9"): _by_name(
        CITYSCAPES_19.class_names, FMB_9,
        {"traffic light": "traffic sign", "terrain": "vegetation", "rider": "person", "wall": None,
         "fence": None, **_VEHICLES},
    ),
    # MADM's DELIVER depth test labels (madm_spec.md §5.3).
    ("deliver25", "dsec11"): _by_name(DELIVER_25_NAMES, DSEC_11, {
        "Building": "building", "Fence": "fence", "Other": None, "Pedestrian": "person", "Pole": "pole",
        "RoadLine": "road", "Road": "road", "SideWalk": "sidewalk", "Vegetation": "vegetation", "Cars": "car",
        "Wall": "wall", "TrafficSign": "traffic sign", "Sky": "sky", "Ground": None, "Bridge": None,
        "RailTrack": None, "GroundRail": None, "TrafficLight": "traffic sign", "Static": None, "Dynamic": None,
        "Water": None, "Terrain": "vegetation", "TwoWheeler": "car", "Bus": "car", "Truck": "car",
    }),
    # SYNTHIA → Cityscapes train ids, exactly DAFormer's tools/convert_datasets/synthia.py: pedestrian is
    # person; void, parking slot, road-work and lane marking become ignore (lane marking is not road there).
    ("synthia23", "cityscapes19"): _by_name(SYNTHIA_23_NAMES, CITYSCAPES_19, {
        "void": None, "pedestrian": "person", "parking slot": None, "road-work": None, "lanemarking": None,
    }),
    # MADM's FMB infrared test labels (madm_spec.md §5.4).
    ("fmb15", "fmb9"): _by_name(FMB_15_NAMES, FMB_9, {
        "unlabelled": None, "traffic lamp": "traffic sign", "truck": "car", "bus": "car", "motorcycle": "car",
        "bicycle": "car",
    }),
}


EVAL_CLASS_SUBSETS: dict[str, tuple[str, ...]] = {
    # SYNTHIA → Cityscapes is scored over the 16 classes SYNTHIA has: all but terrain, truck, train
    # (iccld_diff_spec.md A.3; DAFormer, HRDA, MIC report this "mIoU16").
    "synthia16": tuple(n for n in CITYSCAPES_19.class_names if n not in ("terrain", "truck", "train")),
    # … and, in many papers beside it, over 13: also without wall, fence and pole (the "mIoU13" or
    # "mIoU*" of the UDA literature, e.g. the synthia_set_13 of AdaptSegNet-derived evaluation code).
    "synthia13": tuple(n for n in CITYSCAPES_19.class_names
                       if n not in ("terrain", "truck", "train", "wall", "fence", "pole")),
}
"""Class subsets an mIoU is reported over, by name (``data.eval_classes``); ``all`` means every class.

The network still predicts all classes of its label set and the confusion matrix is the full
one: a subset only chooses which per-class IoUs are averaged (so a pixel of a missing class that
is predicted as, say, terrain still costs the class it belongs to)."""


def eval_class_names(label_set: str, eval_classes: str) -> tuple[str, ...]:
    """The classes of ``label_set`` that ``eval_classes`` (``all`` or a key of :data:`EVAL_CLASS_SUBSETS`) averages."""
    classes = get_label_set(label_set).class_names
    if eval_classes == "all":
        return classes
    if eval_classes not in EVAL_CLASS_SUBSETS:
        raise ConfigError(f"unknown evaluation class subset {eval_classes!r}; known: all, {', '.join(EVAL_CLASS_SUBSETS)}")
    missing = [n for n in EVAL_CLASS_SUBSETS[eval_classes] if n not in classes]
    if missing:
        raise ConfigError(f"evaluation subset {eval_classes} names classes {missing} that label set {label_set} does not "
                          f"have; {eval_classes} is defined on cityscapes19 (--set data.label_set=cityscapes19)")
    return EVAL_CLASS_SUBSETS[eval_classes]


def subset_miou(per_class_iou: Mapping[str, float | None], names: Sequence[str]) -> float | None:
    """Mean IoU over ``names`` of a ``{class: IoU or None}`` mapping (``ConfusionMatrix.as_dict``'s ``per_class_iou``).

    Classes whose IoU is undefined (None: neither labelled nor predicted anywhere) are left out, as
    mmseg's ``nanmean`` does; None when every one is undefined.
    """
    unknown = [n for n in names if n not in per_class_iou]
    if unknown:
        raise InputError(f"classes {unknown} have no IoU here; the metrics hold {', '.join(per_class_iou)}")
    values = [v for v in (per_class_iou[n] for n in names) if v is not None]
    return float(np.mean(values)) if values else None


LABEL_MAPPING_SOURCES: tuple[str, ...] = (*LABEL_SETS, *dict.fromkeys(s for s, _ in _MAPPINGS if s not in LABEL_SETS))
"""Names of the label ids :func:`label_mapping` maps from: every label set, then each data set's own
ids that a mapping converts to one (in the order of the mappings)."""


def get_label_set(name: str) -> LabelSet:
    """The label set called ``name`` (``cityscapes19``, ``dsec11`` or ``fmb9``)."""
    try:
        return LABEL_SETS[name]
    except KeyError:
        raise ConfigError(f"unknown label set {name!r}; known: {', '.join(sorted(LABEL_SETS))}") from None


def label_mapping(source: str, target: str) -> np.ndarray:
    """The 256-entry lookup table that maps ``source`` class ids to ``target`` ids (identity if equal)."""
    if source == target:
        return _trainid_lut({c: c for c in range(get_label_set(source).num_classes)})
    try:
        return _MAPPINGS[(source, target)]
    except KeyError:
        known = ", ".join(f"{s}→{t}" for s, t in _MAPPINGS)
        raise ConfigError(f"no label mapping from {source!r} to {target!r}; known: {known}") from None


def remap_labels(labels: np.ndarray, lut: np.ndarray) -> np.ndarray:
    """Apply a 256-entry lookup table to a uint8 label image."""
    if labels.dtype != np.uint8:
        raise InputError(f"label images must be uint8, got {labels.dtype}; read PNG labels unchanged (no scaling)")
    return lut[labels]


def colorize(labels: np.ndarray, label_set: LabelSet, unlabelled_color: tuple[int, int, int] = (0, 0, 0)) -> np.ndarray:
    """Paint a uint8 id image (H×W) with the label set's colours → H×W×3 uint8 RGB."""
    if labels.dtype != np.uint8 or labels.ndim != 2:
        raise InputError(f"colorize expects an H×W uint8 id image, got {labels.dtype} with shape {labels.shape}")
    return label_set.color_lut(unlabelled_color)[labels]
