"""Data sets for MADM: labelled RGB sources and unlabelled (or test-labelled) target modalities.

Every data set is a list of records (file paths) plus one loading path, so all of them yield the
same :class:`Sample`: the network tensor made by ``madm_ros.preprocessing`` (the function the ROS
nodes call), the label in the task's label set, the modality and metadata. They are plain
map-style sequences (``len`` and indexing), usable directly with ``torch.utils.data.DataLoader``.

Layouts, as their publishers ship them (paths relative to the root given):

- Cityscapes: ``leftImg8bit/<split>/<city>/<stem>_leftImg8bit.png`` with
  ``gtFine/<split>/<city>/<stem>_gtFine_labelTrainIds.png``, or ``…_labelIds.png`` mapped to train
  ids when the former is missing.
- GTA5 (Richter et al. 2016): ``images/<NNNNN>.png`` with ``labels/<NNNNN>.png`` (8-bit palette
  PNGs whose indices are Cityscapes label ids), or ``labels/<NNNNN>_labelTrainIds.png`` as
  DAFormer's ``tools/convert_datasets/gta.py`` writes them beside the originals.
- SYNTHIA-RAND-CITYSCAPES: ``RGB/<NNNNNNN>.png`` with ``GT/LABELS/<NNNNNNN>.png`` (16-bit PNGs, the
  class id in the first channel), or ``GT/LABELS/<NNNNNNN>_labelTrainIds.png`` (DAFormer's
  ``tools/convert_datasets/synthia.py``).
- DELIVER depth (front camera): ``depth/<condition>/<split>/<map>/<frame>_depth_front.png``, labels
  ``semantic/<condition>/<split>/<map>/<frame>_semantic_front.png`` (first channel minus one with
  uint8 wrap, a stored 255 staying 255, then 25 → 11 classes, as MADM's loader does).
- FMB infrared: ``<split>/Infrared/<name>.png`` with ``<split>/Label/<name>.png`` (15 → 9 classes).
- DSEC-Semantic events, pre-rendered edge PNGs as MADM uses them:
  ``69mask_<split>_edges/<sequence>/<frame>.png`` with
  ``test_semantic_labels/<sequence>/11classes/<frame>.png`` (no conversion); rendering edge frames
  from ``events.h5`` is :class:`DsecEventsDataset`.
- The generic folder layout of :mod:`madm_ros.folder_layout` (synthetic scenes, bag-derived sets,
  a user's own recordings).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from madm_ros.errors import ConfigError, InputError
from madm_ros.palettes import (
    CITYSCAPES_LABELID_TO_TRAINID,
    IGNORE_INDEX,
    SYNTHIA_23_NAMES,
    LabelSet,
    get_label_set,
    label_mapping,
)
from madm_ros.preprocessing import IMAGE_MODALITIES, InputSpec, modality_image, to_network_input
from madm_train.data.augment import TrainAugmentation, resize_label

__all__ = [
    "CLASS_SPACES",
    "CityscapesDataset",
    "ClassSpace",
    "DeliverDepthDataset",
    "DsecEdgeDataset",
    "DsecEventsDataset",
    "FmbInfraredDataset",
    "FolderDataset",
    "Gta5Dataset",
    "ModalityDataset",
    "Record",
    "Sample",
    "SynthiaDataset",
    "read_gta5_label",
    "read_label_file",
    "read_modality_file",
    "read_synthia_label",
]


ClassSpace = Literal["source", "merged"]
"""Where class ids live: ``source`` = the classes the labels are annotated in (Cityscapes' 19 train
ids), ``merged`` = the task's label set (DSEC-11 or FMB-9). They differ only where a data set maps
finer annotations onto the task's classes; elsewhere both name the data set's own label set."""

CLASS_SPACES: tuple[ClassSpace, ...] = ("source", "merged")


@dataclass(frozen=True)
class Sample:
    """One training or evaluation example.

    Attributes:
        image: float32 3×H×W in [0, 1], H×W = the spec's network size.
        label: uint8 H×W class ids of the data set's label set (255 = ignore), or None.
        modality: ``rgb``, ``depth``, ``thermal`` or ``events``.
        meta: ``name``, ``path`` and ``original_size`` (H, W) at least.
    """

    image: np.ndarray
    label: np.ndarray | None
    modality: str
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Record:
    """Where one example lives on disk (``stamp_us``: its time, for inputs rendered from event streams)."""

    name: str
    image_path: Path
    label_path: Path | None = None
    stamp_us: int | None = None


def read_modality_file(path: Path, modality: str) -> tuple[np.ndarray, str]:
    """Read an image file unchanged and name its ``sensor_msgs`` encoding for ``modality``.

    16-bit single-channel files are depth in millimetres (``16UC1``) or thermal counts
    (``mono16``); 8-bit single-channel files are ``mono8``; colour files are ``rgb8`` (the first
    three channels of four-channel files, as MADM reads them).
    """
    import cv2

    array = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if array is None:
        raise InputError(f"cannot read image {path}: missing, unreadable or not an image file")
    if array.ndim == 3:
        if array.dtype != np.uint8 or array.shape[2] not in (3, 4):
            raise InputError(f"{path}: colour images must be 8-bit with 3 or 4 channels, got {array.dtype} {array.shape}")
        return np.ascontiguousarray(array[:, :, 2::-1]), "rgb8"
    if array.dtype == np.uint8:
        return array, "mono8"
    if array.dtype == np.uint16 and modality in IMAGE_MODALITIES:
        return array, "16UC1" if modality == "depth" else "mono16"
    raise InputError(f"{path}: a {array.dtype} single-channel image is not a {modality} image this reader understands")


def read_label_file(path: Path, lut: np.ndarray | None = None, *, channel: int = 0, shift: int = 0,
                    source_classes: int | None = None) -> np.ndarray:
    """Read a label PNG as uint8 ids, optionally taking one RGB channel, shifting and mapping by ``lut``.

    The shift wraps in uint8 (DELIVER's stored 0 becomes 255, ignore) but leaves a stored 255 at
    255: it already means ignore, and MADM's loader keeps it so. With ``source_classes``, stored
    values (after the shift) outside ``0..source_classes-1`` and 255 are an error: a mapping table
    would otherwise turn them silently into "ignore".
    """
    import cv2

    label = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if label is None:
        raise InputError(f"cannot read label {path}: missing, unreadable or not an image file")
    if label.ndim == 3:
        label = label[:, :, 2 - channel]  # OpenCV stores BGR; channel counts in RGB order
    if label.dtype != np.uint8:
        raise InputError(f"{path}: labels must be 8-bit, got {label.dtype} (read the file unchanged, do not rescale)")
    if shift:
        shifted = (label.astype(np.int16) + shift).astype(np.uint8)  # uint8 wrap: 0 - 1 → 255 (ignore)
        label = np.where(label == IGNORE_INDEX, label, shifted)
    if source_classes is not None:
        bad = np.unique(label[(label >= source_classes) & (label != IGNORE_INDEX)])
        if bad.size:
            raise InputError(f"label {path} has values {bad[:5].tolist()} outside the data set's {source_classes} "
                             f"classes (0..{source_classes - 1}, 255); is this the right label folder?")
    return label if lut is None else lut[label]


class ModalityDataset(Sequence[Sample]):
    """Records of one modality + the shared loading path; the concrete data sets only find records.

    Args:
        records: The examples, in a fixed order.
        spec: Network input description; its ``modality`` is the data set's.
        label_set: Name of the label set the labels are returned in (``None`` for unlabelled data).
        label_reader: Turns a label path into ids of ``source_classes`` (data-set specific conversion).
        source_classes: Name of the label set the stored labels are annotated in, where it is finer
            than ``label_set`` and mapped onto it by ``label_mapping`` (Cityscapes' 19 train ids for
            an 11- or 9-class task). Rare-class sampling counts and crops in these classes, as MADM
            does. Default: ``label_set``.
        augmentation: Training augmentation; ``None`` for evaluation (image and label are resized
            to the network size, as MADM evaluates at 512×512).
        seed: Seed of this data set's augmentation generator (independent of other data sets).

    Attributes:
        label_reader: Label path → ids of ``label_set`` (:meth:`read_label` reads either space).
    """

    labels_sized_like_images = True
    """Whether a label must have its image's size. Where a publisher ships them at different sizes
    (DSEC), MADM resizes each to the network size on its own and so does :meth:`load`; elsewhere a
    mismatch means a broken data set and is an error (beyond ``label_size_tolerance``)."""

    label_size_tolerance = 0.0
    """Largest relative difference per side between a label and its image that is resized away
    rather than refused (with ``labels_sized_like_images``). 0 elsewhere; GTA5 ships a few frames
    whose label is a few pixels off its image."""

    def __init__(
        self,
        records: list[Record],
        spec: InputSpec,
        label_set: str | None,
        label_reader: Callable[[Path], np.ndarray],
        *,
        source_classes: str | None = None,
        augmentation: TrainAugmentation | None = None,
        seed: int = 0,
    ) -> None:
        if not records:
            raise InputError(f"no {spec.modality} examples found: check the data-set root and split")
        if augmentation is not None and augmentation.crop_hw != (spec.height, spec.width):
            raise ConfigError(f"augmentation crop {augmentation.crop_hw} must equal the network size "
                              f"{(spec.height, spec.width)}")
        self.records = records
        self.spec = spec
        self.label_set = get_label_set(label_set) if label_set is not None else None
        if self.label_set is None and any(r.label_path is not None for r in records):
            raise ConfigError("labelled records need a label set")
        self.source_classes = get_label_set(source_classes) if source_classes is not None else self.label_set
        self._to_label_set: np.ndarray | None = None
        if self.label_set is not None and self.source_classes is not self.label_set:
            self._to_label_set = label_mapping(self.source_classes.name, self.label_set.name)
        self._read_source_label = label_reader
        to_label_set = self._to_label_set
        self.label_reader = label_reader if to_label_set is None else lambda path: to_label_set[label_reader(path)]
        self.augmentation = augmentation
        self.seed = seed
        self._rng: tuple[int, np.random.Generator] | None = None

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> Sample:  # type: ignore[override]
        return self.load(index)

    def load(self, index: int, *, required_class: int | None = None, min_class_pixels: int = 0,
             classes: ClassSpace = "merged") -> Sample:
        """Load example ``index``; the label is always returned in ``label_set``.

        With augmentation, crops are redrawn until they hold ``min_class_pixels`` of
        ``required_class``, an id in ``classes`` (pass the rare-class sampler's ``classes``: MADM
        checks the crop on the 19-class label and maps to 11/9 classes afterwards).
        """
        _check_class_space(classes)
        record = self.records[index]
        array, encoding = self.read_input(record)
        try:
            image = modality_image(array, encoding, self.spec)
        except InputError as error:
            raise InputError(f"{record.image_path}: {error}") from None
        label = None
        if record.label_path is not None:
            label = self.read_label(record.label_path, classes)
            self._check_label(label, image, record, self.label_classes(classes))
        original_size = image.shape[:2]
        if self.augmentation is not None:  # resizes image and label each to resize_hw, like MADM
            image, label = self.augmentation(image, label, self._generator(), required_class=required_class,
                                             min_class_pixels=min_class_pixels)
        elif label is not None:  # the image is resized by to_network_input, exactly as in the node
            label = resize_label(label, (self.spec.height, self.spec.width))
        if label is not None and classes == "source" and self._to_label_set is not None:
            label = self._to_label_set[label]  # a lookup table commutes with nearest resize, crop and flip
        meta = {"name": record.name, "path": str(record.image_path), "original_size": original_size}
        return Sample(to_network_input(image, self.spec), label, self.spec.modality, meta)

    def _generator(self) -> np.random.Generator:
        """The augmentation generator of this process.

        DataLoader workers are forked copies of the data set; without this each of them would
        draw the same crops. Worker k draws from ``SeedSequence([seed, k])``, the main process
        from ``SeedSequence([seed])``, so runs stay reproducible.
        """
        pid = os.getpid()
        if self._rng is None or self._rng[0] != pid:
            worker = None
            torch_data = sys.modules.get("torch.utils.data")
            if torch_data is not None and torch_data.get_worker_info() is not None:
                worker = torch_data.get_worker_info().id
            entropy = [self.seed] if worker is None else [self.seed, worker]
            self._rng = (pid, np.random.default_rng(np.random.SeedSequence(entropy)))
        return self._rng[1]

    def read_input(self, record: Record) -> tuple[np.ndarray, str]:
        """The sensor array of ``record`` and its encoding (a file read; event data sets render instead)."""
        return read_modality_file(record.image_path, self.spec.modality)

    def label_paths(self) -> list[Path]:
        """Label files of the labelled records."""
        return [r.label_path for r in self.records if r.label_path is not None]

    def label_classes(self, classes: ClassSpace) -> LabelSet:
        """The label set that ids in ``classes`` belong to (``source_classes`` or ``label_set``)."""
        _check_class_space(classes)
        if self.label_set is None or self.source_classes is None:
            raise ConfigError(f"the {self.spec.modality} data set is unlabelled, so it has no classes to count or "
                              "crop for; rare-class sampling needs a labelled source")
        return self.source_classes if classes == "source" else self.label_set

    def read_label(self, path: Path, classes: ClassSpace = "merged") -> np.ndarray:
        """The label file ``path`` as ids of :meth:`label_classes` ``(classes)``, at its stored size."""
        _check_class_space(classes)
        return self._read_source_label(path) if classes == "source" else self.label_reader(path)

    def _check_label(self, label: np.ndarray, image: np.ndarray, record: Record, label_set: LabelSet) -> None:
        if self.labels_sized_like_images and label.shape != image.shape[:2]:
            off = max(abs(a - b) / b for a, b in zip(label.shape, image.shape[:2]))
            if off > self.label_size_tolerance:
                allowed = f" (more than the {self.label_size_tolerance:.0%} this data set tolerates)" \
                    if self.label_size_tolerance else ""
                raise InputError(f"label {record.label_path} is {label.shape[1]}×{label.shape[0]} but its image "
                                 f"{record.image_path} is {image.shape[1]}×{image.shape[0]}{allowed}")
        bad = label[(label >= label_set.num_classes) & (label != IGNORE_INDEX)]
        if bad.size:
            raise InputError(f"label {record.label_path} has values {sorted(set(bad.tolist()))[:5]} outside "
                             f"{label_set.name} (0..{label_set.num_classes - 1}, 255); "
                             f"check the label set or the label conversion")


def _check_class_space(classes: str) -> None:
    if classes not in CLASS_SPACES:
        raise ConfigError(f"classes must be one of {CLASS_SPACES}, got {classes!r}")


def _require_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise InputError(f"{what} folder {path} not found; check the data-set root")
    return path


def _require_labels(records: list[Record], what: str, label_dir: Path) -> None:
    """Refuse a labelled source in which some images have no label (they would train on nothing)."""
    missing = [r.image_path.name for r in records if r.label_path is None]
    if missing:
        raise InputError(f"{len(missing)} {what} image(s) have no label in {label_dir} (e.g. {', '.join(missing[:3])}); "
                         "a labelled source needs one per image: restore them, or remove those images")


def _whole_set_split(what: str, split: str) -> None:
    """GTA5 and SYNTHIA are used whole as the training source (DAFormer's readers accept only ``train``)."""
    if split != "train":
        raise ConfigError(f"{what} has no {split!r} split here: every image is the training source, as in "
                          "DAFormer/DIFF; use split 'train' (--set data.source_split=train)")


def _read_index_png(path: Path) -> np.ndarray:
    """An 8-bit single-channel or palette PNG as its stored values (OpenCV would expand a palette to colours)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            mode = image.mode
            array = np.asarray(image) if mode in ("P", "L") else None
    except (OSError, UnidentifiedImageError):
        raise InputError(f"cannot read label {path}: missing, unreadable or not an image file") from None
    if array is None:
        raise InputError(f"{path}: a label must be an 8-bit palette or grey PNG of class ids, got PIL mode {mode} "
                         "(a colour-painted label cannot be read as ids)")
    return array


def read_gta5_label(path: Path) -> np.ndarray:
    """A GTA5 label as Cityscapes train ids (255 = ignore).

    ``*_labelTrainIds.png`` (DAFormer's conversion) holds train ids already; the publisher's
    ``labels/<NNNNN>.png`` are palette PNGs whose indices are Cityscapes label ids 0..33, mapped
    with Cityscapes' table (0 unlabelled … 6 ground and the other non-train ids → 255, a stored 255
    stays 255). Values beyond them are an error, not silently "ignore".
    """
    label = _read_index_png(path)
    if path.name.endswith("_labelTrainIds.png"):
        return _checked_ids(label, path, 19)
    return CITYSCAPES_LABELID_TO_TRAINID[_checked_ids(label, path, 34)]


def _checked_ids(label: np.ndarray, path: Path, classes: int) -> np.ndarray:
    bad = np.unique(label[(label >= classes) & (label != IGNORE_INDEX)])
    if bad.size:
        raise InputError(f"label {path} has values {bad[:5].tolist()} outside the data set's {classes} classes "
                         f"(0..{classes - 1}, 255); is this the right label folder?")
    return label


_SYNTHIA_TO_TRAINID = label_mapping("synthia23", "cityscapes19")


def read_synthia_label(path: Path) -> np.ndarray:
    """A SYNTHIA-RAND-CITYSCAPES label as Cityscapes train ids (255 = ignore).

    The publisher's ``GT/LABELS/*.png`` are 16-bit PNGs with the class id (0..22, see
    ``SYNTHIA_23_NAMES``) in the first channel and the instance id in the second; OpenCV reads them
    unchanged (PIL would cut them to 8 bits) in BGR order, so the id is channel 2, as DAFormer's
    converter takes it. ``*_labelTrainIds.png`` (DAFormer's conversion) holds train ids already.
    """
    import cv2

    label = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if label is None:
        raise InputError(f"cannot read label {path}: missing, unreadable or not an image file")
    if path.name.endswith("_labelTrainIds.png"):
        if label.ndim != 2 or label.dtype != np.uint8:
            raise InputError(f"{path}: a _labelTrainIds.png must be 8-bit single-channel, got {label.dtype} {label.shape}")
        return _checked_ids(label, path, 19)
    if label.ndim == 3:
        label = label[:, :, 2]  # BGR(A): the file's first (R) channel
    if label.dtype not in (np.uint8, np.uint16):
        raise InputError(f"{path}: SYNTHIA labels are 16-bit PNGs, got {label.dtype}")
    bad = np.unique(label[label >= len(SYNTHIA_23_NAMES)])
    if bad.size:
        raise InputError(f"label {path} has class ids {bad[:5].tolist()} beyond SYNTHIA's 0..{len(SYNTHIA_23_NAMES) - 1} "
                         "in its first channel; is this GT/LABELS (not GT/COLOR or Depth)?")
    return _SYNTHIA_TO_TRAINID[label.astype(np.uint8)]


def _pair(images: list[Path], label_for: Callable[[Path], Path | None], name_for: Callable[[Path], str]) -> list[Record]:
    return [Record(name_for(p), p, label_for(p)) for p in sorted(images)]


def _train_id_or_raw_label(label_dir: Path) -> Callable[[Path], Path | None]:
    """The label of an image: DAFormer's converted ``<stem>_labelTrainIds.png``, else the publisher's file of the same name."""

    def label_for(image: Path) -> Path | None:
        for candidate in (label_dir / f"{image.stem}_labelTrainIds.png", label_dir / image.name):
            if candidate.exists():
                return candidate
        return None

    return label_for


class CityscapesDataset(ModalityDataset):
    """Cityscapes RGB with labels in ``label_set`` (``cityscapes19``, ``dsec11`` or ``fmb9``).

    The annotations' own classes are the 19 train ids (``source_classes``), the space MADM's
    rare-class sampling works in. As the target of GTA5/SYNTHIA → Cityscapes, ``train`` is read
    with ``labelled=False`` (adaptation must not see its labels) and ``val`` (the 500 images every
    such benchmark reports on) with labels.
    """

    def __init__(self, root: Path | str, split: str, spec: InputSpec, *, label_set: str = "dsec11",
                 labelled: bool = True, augmentation: TrainAugmentation | None = None, seed: int = 0) -> None:
        root = Path(root)
        image_dir = _require_dir(root / "leftImg8bit" / split, "Cityscapes leftImg8bit")
        label_dir = root / "gtFine" / split

        def label_for(image: Path) -> Path | None:
            if not labelled:
                return None
            stem = image.name.removesuffix("_leftImg8bit.png")
            folder = label_dir / image.parent.name
            train_ids = folder / f"{stem}_gtFine_labelTrainIds.png"
            if train_ids.exists():
                return train_ids
            label_ids = folder / f"{stem}_gtFine_labelIds.png"
            return label_ids if label_ids.exists() else None

        records = _pair(list(image_dir.glob("*/*_leftImg8bit.png")), label_for,
                        lambda p: p.name.removesuffix("_leftImg8bit.png"))

        def read_train_ids(path: Path) -> np.ndarray:
            if path.name.endswith("_labelIds.png"):
                return read_label_file(path, CITYSCAPES_LABELID_TO_TRAINID, source_classes=34)
            return read_label_file(path, source_classes=19)

        if spec.modality != "rgb":
            raise ConfigError(f"Cityscapes is an RGB data set; got an InputSpec for {spec.modality}")
        super().__init__(records, spec, label_set, read_train_ids, source_classes="cityscapes19",
                         augmentation=augmentation, seed=seed)


class Gta5Dataset(ModalityDataset):
    """GTA5 (24,966 game frames, 1914×1052 mostly) as labelled RGB source, labels in ``label_set``.

    Every image is the training set (``split`` must be ``train``), as DAFormer and DIFF use it.
    Labels are read from ``labels/<NNNNN>_labelTrainIds.png`` where DAFormer's converter wrote
    them, else from the publisher's ``labels/<NNNNN>.png`` (see :func:`read_gta5_label`). The
    annotations' own classes are Cityscapes' 19 train ids, so rare-class sampling counts in them
    and other label sets (``dsec11``, ``fmb9``) are mapped from them, as for Cityscapes.

    A few GTA5 labels differ from their image by some pixels. DAFormer's pipeline resizes image and
    label each to its working size on its own; so does this reader (``label_size_tolerance``: up
    to 5 % per side), and a larger difference is an error.
    """

    label_size_tolerance = 0.05

    def __init__(self, root: Path | str, split: str, spec: InputSpec, *, label_set: str = "cityscapes19",
                 augmentation: TrainAugmentation | None = None, seed: int = 0) -> None:
        root = Path(root)
        _whole_set_split("GTA5", split)
        if spec.modality != "rgb":
            raise ConfigError(f"GTA5 is an RGB data set; got an InputSpec for {spec.modality}")
        image_dir = _require_dir(root / "images", "GTA5 images")
        label_dir = _require_dir(root / "labels", "GTA5 labels")

        records = _pair(list(image_dir.glob("*.png")), _train_id_or_raw_label(label_dir), lambda p: p.stem)
        _require_labels(records, "GTA5", label_dir)
        super().__init__(records, spec, label_set, read_gta5_label, source_classes="cityscapes19",
                         augmentation=augmentation, seed=seed)


class SynthiaDataset(ModalityDataset):
    """SYNTHIA-RAND-CITYSCAPES (9,400 frames, 1280×760) as labelled RGB source, labels in ``label_set``.

    Every image is the training set (``split`` must be ``train``), as in DAFormer. Labels are read
    from ``GT/LABELS/<NNNNNNN>_labelTrainIds.png`` where DAFormer's converter wrote them, else from
    the publisher's 16-bit ``GT/LABELS/<NNNNNNN>.png`` (see :func:`read_synthia_label`). Labels hold
    16 of Cityscapes' 19 train ids (never terrain, truck or train); the network still predicts 19
    and the benchmark averages 16 or 13 of them (``data.eval_classes``).
    """

    def __init__(self, root: Path | str, split: str, spec: InputSpec, *, label_set: str = "cityscapes19",
                 augmentation: TrainAugmentation | None = None, seed: int = 0) -> None:
        root = Path(root)
        _whole_set_split("SYNTHIA", split)
        if spec.modality != "rgb":
            raise ConfigError(f"SYNTHIA is an RGB data set; got an InputSpec for {spec.modality}")
        image_dir = _require_dir(root / "RGB", "SYNTHIA RGB")
        label_dir = _require_dir(root / "GT" / "LABELS", "SYNTHIA GT/LABELS")

        records = _pair(list(image_dir.glob("*.png")), _train_id_or_raw_label(label_dir), lambda p: p.stem)
        _require_labels(records, "SYNTHIA", label_dir)
        super().__init__(records, spec, label_set, read_synthia_label, source_classes="cityscapes19",
                         augmentation=augmentation, seed=seed)


class DeliverDepthDataset(ModalityDataset):
    """DELIVER depth, front camera, any of its five conditions; labels in DSEC-11."""

    CONDITIONS = ("cloud", "fog", "night", "rain", "sun")

    def __init__(self, root: Path | str, split: str, spec: InputSpec, *, conditions: Sequence[str] = CONDITIONS,
                 augmentation: TrainAugmentation | None = None, seed: int = 0) -> None:
        root = Path(root)
        unknown = sorted(set(conditions) - set(self.CONDITIONS))
        if unknown:
            raise ConfigError(f"unknown DELIVER conditions {unknown}; known: {', '.join(self.CONDITIONS)}")
        images: list[Path] = []
        for condition in conditions:
            images += _require_dir(root / "depth" / condition / split, "DELIVER depth").glob("*/*_depth_front.png")

        def label_for(image: Path) -> Path | None:
            relative = image.relative_to(root / "depth")
            label = root / "semantic" / relative.parent / image.name.replace("_depth_front", "_semantic_front")
            return label if label.exists() else None

        records = _pair(images, label_for, lambda p: f"{p.parts[-4]}/{p.parent.name}/{p.name.removesuffix('_depth_front.png')}")
        lut = label_mapping("deliver25", "dsec11")
        super().__init__(records, spec, "dsec11", lambda p: read_label_file(p, lut, channel=0, shift=-1, source_classes=25),
                         augmentation=augmentation, seed=seed)


class FmbInfraredDataset(ModalityDataset):
    """FMB infrared (``<split>/Infrared``), labels (``<split>/Label``) in FMB-9."""

    def __init__(self, root: Path | str, split: str, spec: InputSpec, *,
                 augmentation: TrainAugmentation | None = None, seed: int = 0) -> None:
        root = Path(root)
        image_dir = _require_dir(root / split / "Infrared", "FMB Infrared")
        label_dir = root / split / "Label"
        records = _pair(list(image_dir.glob("*.png")),
                        lambda p: (label_dir / p.name) if (label_dir / p.name).exists() else None, lambda p: p.stem)
        lut = label_mapping("fmb15", "fmb9")
        super().__init__(records, spec, "fmb9", lambda p: read_label_file(p, lut, source_classes=15),
                         augmentation=augmentation, seed=seed)


class DsecEdgeDataset(ModalityDataset):
    """DSEC-Semantic events as pre-rendered edge PNGs (MADM's ``69mask_*_edges``), labels in DSEC-11.

    Edge frames and labels may differ in size (e.g. 640×480 frames, 640×440 labels): MADM resizes
    each on its own to the training or evaluation size (labels nearest), and so does this loader.
    """

    labels_sized_like_images = False

    def __init__(self, root: Path | str, split: str, spec: InputSpec, *, edges_dir: str | None = None,
                 augmentation: TrainAugmentation | None = None, seed: int = 0) -> None:
        root = Path(root)
        image_dir = _require_dir(root / (edges_dir or f"69mask_{split}_edges"), "DSEC edge-frame")
        label_root = root / "test_semantic_labels"

        def label_for(image: Path) -> Path | None:
            label = label_root / image.parent.name / "11classes" / image.name
            return label if label.exists() else None

        records = _pair(list(image_dir.glob("*/*.png")), label_for, lambda p: f"{p.parent.name}/{p.stem}")
        super().__init__(records, spec, "dsec11", read_label_file, augmentation=augmentation, seed=seed)


class DsecEventsDataset(ModalityDataset):
    """DSEC-Semantic events rendered from ``events.h5`` by the node's edge-frame accumulator.

    Layout per sequence (DSEC's): ``<split>/<sequence>/events/left/events.h5`` (and
    ``rectify_map.h5`` beside it, used when present), labels
    ``<split>/<sequence>/semantic/left/11classes/data/<NNNNNN>.png`` and their times in
    ``<split>/<sequence>/semantic/timestamps.txt`` (µs, one per label, same clock as the events
    plus ``t_offset``). The input of label k is the edge frame of the ``events`` window that ends at
    its time stamp, cropped to DSEC-Semantic's top 640×440 by default.

    Args:
        events: ``EdgeFrameConfig`` fields except width and height (DSEC's 640×480); defaults to a
            50 ms window (the label interval), polarity ignored and the 640×440 crop.
        every: Keep every n-th label (MADM trains on even label indices: ``every=2``).

    As for :class:`DsecEdgeDataset`, a rendered frame and its label may differ in size (a crop
    other than 640×440); each is resized to the training or evaluation size on its own.
    """

    labels_sized_like_images = False

    def __init__(self, root: Path | str, split: str, spec: InputSpec, *, sequences: Sequence[str] | None = None,
                 events: dict[str, Any] | None = None, every: int = 1,
                 augmentation: TrainAugmentation | None = None, seed: int = 0) -> None:
        from madm_ros.events.edge_frames import check_edge_frame_fields

        root = _require_dir(Path(root) / split, "DSEC split")
        names = sorted(p.name for p in root.iterdir() if p.is_dir()) if sequences is None else list(sequences)
        if every < 1:
            raise ConfigError(f"every must be ≥ 1, got {every}")
        check_edge_frame_fields(events or {}, "DSEC events config")
        ignored = sorted({"mode", "stride_us", "window_events", "stride_events", "origin_us"} & set(events or {}))
        if ignored:
            raise ConfigError(f"DSEC events config: {ignored} do not apply; each label gets the window_us "
                              "of events that ends at its time stamp")
        self.events_config = {"window_us": 50_000, "crop": (0, 0, 640, 440), **(events or {})}
        records: list[Record] = []
        for sequence in names:
            folder = _require_dir(root / sequence, "DSEC sequence")
            stamps_file = folder / "semantic" / "timestamps.txt"
            if not stamps_file.is_file():
                raise InputError(f"{stamps_file} not found: DSEC-Semantic labels need their time stamps")
            try:
                stamps = [int(float(v)) for v in stamps_file.read_text().split()]
            except ValueError as error:
                raise InputError(f"{stamps_file}: not a list of µs time stamps ({error})") from None
            label_dir = folder / "semantic" / "left" / "11classes" / "data"
            for index in range(0, len(stamps), every):
                label = label_dir / f"{index:06d}.png"
                records.append(Record(f"{sequence}/{index:06d}", folder / "events" / "left" / "events.h5",
                                      label if label.exists() else None, stamps[index]))
        self._files: dict[Path, Any] = {}
        self._files_pid = os.getpid()
        super().__init__(records, spec, "dsec11", read_label_file, augmentation=augmentation, seed=seed)

    def close(self) -> None:
        """Close the event files this process opened."""
        for source, _ in self._files.values():
            source.close()
        self._files = {}

    def __enter__(self) -> DsecEventsDataset:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def read_input(self, record: Record) -> tuple[np.ndarray, str]:
        """Render the edge frame of the window ending at the record's time stamp."""
        from madm_ros.events.dsec import DsecEventsFile
        from madm_ros.events.edge_frames import EdgeFrameConfig, accumulate

        if self._files_pid != os.getpid():  # h5py handles must not cross a fork (DataLoader workers)
            self._files, self._files_pid = {}, os.getpid()
        if record.image_path not in self._files:
            rectify = record.image_path.with_name("rectify_map.h5")
            source = DsecEventsFile(record.image_path, rectify if rectify.exists() else None)
            config = EdgeFrameConfig(width=source.width, height=source.height, rectify_map=source.rectify_map,
                                     **self.events_config)
            self._files[record.image_path] = (source, config)
        source, config = self._files[record.image_path]
        assert record.stamp_us is not None
        window = config.window_us
        return accumulate(source.events_between(record.stamp_us - window, record.stamp_us), config), "mono8"


class FolderDataset(ModalityDataset):
    """The generic folder layout (``madm_ros.folder_layout``): one modality folder, labels if present."""

    def __init__(self, root: Path | str, spec: InputSpec, *, frames: Sequence[str] | None = None,
                 augmentation: TrainAugmentation | None = None, seed: int = 0) -> None:
        from madm_ros.folder_layout import LABELS_DIR, FolderMeta

        root = Path(root)
        meta = FolderMeta.read(root)
        if spec.modality not in meta.modalities:
            raise InputError(f"{root} holds no {spec.modality} frames (it has {', '.join(meta.modalities) or 'none'})")
        names = list(frames) if frames is not None else list(meta.frames)
        unknown = sorted(set(names) - set(meta.frames))
        if unknown:
            raise InputError(f"frames {unknown[:5]} are not listed in {root / 'meta.json'}")
        label_dir = root / LABELS_DIR
        records = [Record(n, root / spec.modality / f"{n}.png",
                          (label_dir / f"{n}.png") if meta.has_labels else None) for n in names]
        self.meta = meta
        super().__init__(records, spec, meta.label_set if meta.has_labels else None, read_label_file,
                         augmentation=augmentation, seed=seed)
