"""The generic folder layout: one folder per modality plus labels, described by ``meta.json``.

Written by ``python -m madm_train synth`` and read by the folder data set; a user's own recordings
converted to it work the same way. ``DIR`` holds::

    DIR/meta.json            FolderMeta (below): format version, label set and class names,
                             modalities present with their sensor_msgs encodings, per-modality
                             notes (depth unit, thermal scale), the event accumulation config
                             (EdgeFrameConfig fields), generator name + config + seed, the frame
                             list with time stamps, camera intrinsics
    DIR/rgb/<name>.png       uint8 RGB, H×W×3 (stored by OpenCV, i.e. BGR in the file; the
                             readers and writers here convert)           encoding rgb8
    DIR/depth/<name>.png     uint16 millimetres, 0 = no measurement       encoding 16UC1
    DIR/thermal/<name>.png   uint16 raw counts; the synthetic generator writes centi-Kelvin
                             (counts = 100 × kelvin, so 29315 = 20 °C), like radiometric
                             cameras' "TLinear" output                     encoding mono16
    DIR/events/<name>.png    uint8 edge frame, accumulated by madm_ros.events.edge_frames with
                             the config in meta.json, covering the window that ends at the
                             frame's stamp                                 encoding mono8
    DIR/labels/<name>.png    uint8 class ids of the label set, 255 = ignore

``<name>`` is ``s{sequence:03d}_f{frame:05d}``; frames of one sequence are consecutive in time.
Every modality folder is optional (a user's folder may hold only ``depth/`` and no labels);
``meta.json`` says which are present. All images of one frame have the same height and width.

Every file is written atomically (a temporary file in the same folder, then ``os.replace``), and
``meta.json`` last: a folder without ``meta.json`` is incomplete and readers refuse it.
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from madm_ros.atomic_io import atomic_write_bytes
from madm_ros.errors import ConfigError, InputError, check_known_keys
from madm_ros.palettes import get_label_set
from madm_ros.preprocessing import ENCODINGS

__all__ = [
    "DEPTH_MM_PER_M",
    "FORMAT_VERSION",
    "LABELS_DIR",
    "META_FILE",
    "MODALITY_ENCODINGS",
    "THERMAL_COUNTS_PER_KELVIN",
    "FolderMeta",
    "frame_name",
    "parse_frame_name",
    "read_image",
    "write_image",
]

FORMAT_VERSION = 1
"""Version of this layout; bumped when a reader could misread a folder written by an older writer."""
META_FILE = "meta.json"
LABELS_DIR = "labels"
MODALITY_ENCODINGS: dict[str, str] = {"rgb": "rgb8", "depth": "16UC1", "thermal": "mono16", "events": "mono8"}
"""The one encoding each modality folder stores (a subset of ``madm_ros.preprocessing.ENCODINGS``)."""
DEPTH_MM_PER_M = 1000
THERMAL_COUNTS_PER_KELVIN = 100
"""Scale of the synthetic thermal counts (centi-Kelvin); other folders state theirs in ``notes``."""

# Encodings a PNG can hold (32FC1 cannot), with their dtypes.
_DTYPES = {"rgb8": np.uint8, "16UC1": np.uint16, "mono16": np.uint16, "mono8": np.uint8}
_NAME = re.compile(r"^s(\d{3})_f(\d{5})$")


def frame_name(sequence: int, frame: int) -> str:
    """``s{sequence:03d}_f{frame:05d}``, the file stem of one frame in every folder."""
    if not (0 <= sequence <= 999 and 0 <= frame <= 99999):
        raise ConfigError(f"sequence must be in 0..999 and frame in 0..99999, got {sequence} and {frame}")
    return f"s{sequence:03d}_f{frame:05d}"


def parse_frame_name(name: str) -> tuple[int, int]:
    """Inverse of :func:`frame_name`: ``(sequence, frame)``."""
    match = _NAME.match(name)
    if match is None:
        raise InputError(f"frame name {name!r} is not of the form s<3 digits>_f<5 digits>, e.g. s000_f00012")
    return int(match.group(1)), int(match.group(2))


@dataclass(frozen=True)
class FolderMeta:
    """Contents of ``meta.json`` (see the module docstring). Validated on construction.

    Attributes:
        frames: Frame names (``<name>`` of every file), in time order within each sequence.
        modalities: Modality folder present → its ``sensor_msgs`` encoding (see ``MODALITY_ENCODINGS``).
        has_labels: Whether ``labels/`` holds a label image for every frame.
        label_set: Name of the label set of ``labels/`` (``madm_ros.palettes``), e.g. ``dsec11``;
            ``None`` without labels.
        class_names: The label set's class names in id order (a copy, so the folder explains itself).
        notes: Free-text notes per modality (units, scales, how the data came about).
        events: ``EdgeFrameConfig`` fields used to accumulate ``events/`` (``None`` without events).
        stamps_us: Time of every frame in µs on its sequence's clock (same order as ``frames``);
            edge frames cover the window ending there. ``None`` if unknown.
        camera: Pinhole intrinsics of all modalities (``fx``, ``fy``, ``cx``, ``cy`` in pixels,
            ``width``, ``height``), or ``None`` if unknown.
        generator: What wrote the folder: ``{"name": ..., "config": {...}}``; ``None`` for user data.
        format_version: Layout version (``FORMAT_VERSION``).
    """

    frames: tuple[str, ...]
    modalities: dict[str, str]
    has_labels: bool = False
    label_set: str | None = None
    class_names: tuple[str, ...] | None = None
    notes: dict[str, str] = field(default_factory=dict)
    events: dict[str, Any] | None = None
    stamps_us: tuple[int, ...] | None = None
    camera: dict[str, float] | None = None
    generator: dict[str, Any] | None = None
    format_version: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        object.__setattr__(self, "frames", tuple(self.frames))
        if self.format_version != FORMAT_VERSION:
            raise ConfigError(
                f"meta.json has format_version {self.format_version!r}; this reader knows {FORMAT_VERSION}"
            )
        if len(set(self.frames)) != len(self.frames):
            raise ConfigError("meta.json lists a frame name twice")
        for modality, encoding in self.modalities.items():
            if modality not in MODALITY_ENCODINGS:
                raise ConfigError(f"unknown modality folder {modality!r}; known: {', '.join(MODALITY_ENCODINGS)}")
            if encoding not in ENCODINGS[modality] or encoding not in _DTYPES:
                raise ConfigError(
                    f"{modality} folder encoding must be {MODALITY_ENCODINGS[modality]}, got {encoding!r}"
                )
        if not self.modalities and not self.has_labels:
            raise ConfigError("a folder needs at least one modality or labels")
        if self.has_labels:
            if self.label_set is None:
                raise ConfigError("a folder with labels must name its label_set (e.g. 'dsec11')")
            names = get_label_set(self.label_set).class_names
            if self.class_names is None:
                object.__setattr__(self, "class_names", names)
            elif tuple(self.class_names) != names:
                raise ConfigError(
                    f"class_names {list(self.class_names)} differ from label set {self.label_set}: {list(names)}"
                )
        if self.class_names is not None:
            object.__setattr__(self, "class_names", tuple(self.class_names))
        if ("events" in self.modalities) != (self.events is not None):
            raise ConfigError(
                "meta.json needs an 'events' accumulation config exactly when an events folder is present"
            )
        if self.events is not None:
            self.edge_frame_config()  # validates the fields
        if self.stamps_us is not None:
            object.__setattr__(self, "stamps_us", tuple(int(s) for s in self.stamps_us))
            if len(self.stamps_us) != len(self.frames):
                raise ConfigError(f"meta.json has {len(self.stamps_us)} stamps for {len(self.frames)} frames")

    def edge_frame_config(self) -> Any:
        """The ``madm_ros.events.edge_frames.EdgeFrameConfig`` that made ``events/``."""
        from madm_ros.events.edge_frames import EdgeFrameConfig

        if self.events is None:
            raise ConfigError("this folder has no events modality")
        fields = dict(self.events)
        if fields.get("crop") is not None:
            fields["crop"] = tuple(fields["crop"])
        try:
            return EdgeFrameConfig(**fields)
        except TypeError as error:
            raise ConfigError(f"meta.json 'events' is not a valid EdgeFrameConfig: {error}") from None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (tuples become lists)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> FolderMeta:
        """Inverse of :meth:`to_dict`; unknown keys are an error, not ignored."""
        check_known_keys(values, cls, "meta.json")
        values = dict(values)
        for key in ("frames", "class_names", "stamps_us"):
            if values.get(key) is not None:
                values[key] = tuple(values[key])
        try:
            return cls(**values)
        except TypeError as error:
            raise ConfigError(f"meta.json is incomplete: {error}") from None

    def write(self, folder: Path | str) -> Path:
        """Write ``folder/meta.json`` atomically (call after every image is in place)."""
        path = Path(folder) / META_FILE
        text = json.dumps(self.to_dict(), indent=1, sort_keys=True) + "\n"
        atomic_write_bytes(path, text.encode())
        return path

    @classmethod
    def read(cls, folder: Path | str) -> FolderMeta:
        """Read ``folder/meta.json``; a folder without it is incomplete (an interrupted write) or not ours."""
        path = Path(folder) / META_FILE
        if not path.is_file():
            raise InputError(f"{path} not found: {folder} is not a complete madm folder (interrupted write?)")
        try:
            values = json.loads(path.read_text())
        except json.JSONDecodeError as error:
            raise InputError(f"{path} is not valid JSON: {error}") from None
        return cls.from_dict(values)


def _folder(modality: str) -> str:
    if modality != LABELS_DIR and modality not in MODALITY_ENCODINGS:
        raise ConfigError(f"unknown folder {modality!r}; known: {', '.join([*MODALITY_ENCODINGS, LABELS_DIR])}")
    return modality


def write_image(root: Path | str, modality: str, name: str, image: np.ndarray, *, encoding: str | None = None) -> Path:
    """Write one frame of ``modality`` (or ``"labels"``) as ``root/<modality>/<name>.png``, atomically.

    ``image`` must be in the folder's encoding: by default RGB uint8 H×W×3 (in RGB order), depth
    uint16 mm, thermal uint16 counts, events uint8, labels uint8 ids; ``encoding`` names another
    one the modality accepts (e.g. ``mono8`` thermal from a bag), which ``meta.json`` must then
    record. The subfolder is created if needed.
    """
    import cv2

    folder = _folder(modality)
    default = "mono8" if folder == LABELS_DIR else MODALITY_ENCODINGS[folder]
    if encoding is not None and encoding != default and (folder == LABELS_DIR or encoding not in ENCODINGS[folder]
                                                          or encoding not in _DTYPES):
        raise InputError(f"{folder} images cannot be stored as {encoding!r}")
    encoding = encoding or default
    channels = 3 if encoding == "rgb8" else 1
    ok = image.dtype == _DTYPES[encoding] and (image.ndim == 2 if channels == 1 else image.shape[2:] == (3,))
    if not ok or image.size == 0:
        raise InputError(
            f"{folder} images must be {np.dtype(_DTYPES[encoding]).name} with {channels} channel(s), "
            f"got {image.dtype} {image.shape}"
        )
    parse_frame_name(name)
    if channels == 3:
        image = np.ascontiguousarray(image[:, :, ::-1])
    ok, data = cv2.imencode(".png", image, [cv2.IMWRITE_PNG_COMPRESSION, 3])
    if not ok:
        raise InputError(f"OpenCV could not encode {folder}/{name}.png")
    path = Path(root) / folder / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, data.tobytes())
    return path


def read_image(root: Path | str, modality: str, name: str) -> np.ndarray:
    """Read ``root/<modality>/<name>.png`` unchanged; three channels come back in RGB order (PNG files hold BGR)."""
    import cv2

    path = Path(root) / _folder(modality) / f"{name}.png"
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise InputError(f"cannot read {path} (missing or not an image)")
    if modality == "rgb" and image.ndim != 3:
        raise InputError(f"{path} must be a 3-channel image, got shape {image.shape}")
    if image.ndim == 3:  # rgb, and depth or thermal rendered to rgb8
        image = np.ascontiguousarray(image[:, :, ::-1])
    return image
