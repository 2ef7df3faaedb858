"""The parameters of the segmentation nodes, as typed dataclasses (ROS-free).

The nodes declare one ROS parameter per field (same name, type and default), so ``ros2 param``,
``config/<modality>.yaml`` and ``python -m madm_ros.launch`` all speak the same vocabulary, which
follows the Isaac ROS / Autoware names users know (``model_file_path``, ``engine_file_path``,
``input_qos`` ...). :func:`parameter_table` is the one table the nodes declare from: each
parameter's default, its description (the dataclass docstring's), its range or choices and when a
change takes effect (:data:`PARAMETER_RULES`): ``live`` (at once), ``input`` (the input is
restarted, e.g. a new accumulation window), ``reload`` (the node loads and checks the model the
new values name, then swaps it in, with new topics where their QoS or type changed: model,
backend, QoS) or ``start`` (read-only
after start). Depth and thermal ranges are deliberately not parameters: they travel inside
the model (:class:`madm_ros.preprocessing.InputSpec`), so a node cannot silently normalise
differently from training.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_type_hints

from madm_ros.errors import ConfigError, check_known_keys
from madm_ros.limits import InputLimits

__all__ = ["PARAMETER_RULES", "QOS_PRESETS", "EventParams", "ImageParams", "ParameterInfo", "ParameterRule",
           "SegmentationParams", "edge_fields", "load_node_config", "parameter_table", "params_from_values"]

QOS_PRESETS = ("SENSOR_DATA", "DEFAULT", "SYSTEM_DEFAULT")
"""Accepted ``input_qos`` / ``output_qos`` values (Isaac ROS style)."""
ROS_ONLY_PARAMETERS = ("use_sim_time", "start_type_description_service")
"""Parameters rclpy declares on every node: they may sit in a node's file, and mean nothing offline."""


@dataclass(frozen=True)
class SegmentationParams:
    """Parameters every segmentation node has.

    Attributes:
        model_file_path: ONNX model (``python -m madm_train export``); empty = the built-in default
            model for the node's modality (``models/<modality>_student.onnx``).
        engine_file_path: TensorRT engine; used by ``backend`` ``auto``/``tensorrt`` when present.
        backend: ``auto`` (fastest installed: TensorRT > ONNX Runtime), ``tensorrt`` or ``onnxruntime``.
        threads: CPU threads of ONNX Runtime (0 = one per core).
        mask_width: Width of the published masks; 0 = the input's width (camera resolution), or,
            with ``mask_height`` set, the width that keeps the input's aspect ratio.
        mask_height: Height of the published masks; 0 = the input's height, or, with
            ``mask_width`` set, the height that keeps the input's aspect ratio.
        color_segmentation_mask_encoding: ``rgb8`` (Isaac default) or ``bgr8``.
        overlay_alpha: Weight of the colour mask in ``segmentation_overlay``.
        input_qos: QoS preset of the input subscriptions (``SENSOR_DATA``: best effort, receives
            from reliable and best-effort publishers alike).
        input_qos_depth: History depth of the main input subscription (``camera_info`` keeps the newest 5).
        output_qos: QoS preset of the outputs (``DEFAULT``: reliable, what RViz expects).
        output_qos_depth: History depth of the outputs.
        diagnostics_period_s: Seconds between two ``diagnostics`` messages.
        autostart: Configure and activate on start (a plain node); false leaves the lifecycle
            node unconfigured until a manager or ``ros2 lifecycle set`` drives it.
        max_input_width: Largest accepted image width or event sensor width (pixels); larger
            inputs are refused and counted before anything is allocated (``madm_ros.limits``).
        max_input_height: Largest accepted image or event sensor height (pixels).
    """

    model_file_path: str = ""
    engine_file_path: str = ""
    backend: str = "auto"
    threads: int = 0
    mask_width: int = 0
    mask_height: int = 0
    color_segmentation_mask_encoding: str = "rgb8"
    overlay_alpha: float = 0.5
    input_qos: str = "SENSOR_DATA"
    input_qos_depth: int = 5
    output_qos: str = "DEFAULT"
    output_qos_depth: int = 5
    diagnostics_period_s: float = 1.0
    autostart: bool = True
    max_input_width: int = 4096
    max_input_height: int = 4096

    def __post_init__(self) -> None:
        from madm_ros.backends import BACKEND_CHOICES

        if self.backend not in BACKEND_CHOICES:
            raise ConfigError(f"backend must be one of {', '.join(BACKEND_CHOICES)}, got {self.backend!r}")
        if self.threads < 0:
            raise ConfigError(f"threads must be ≥ 0 (0 = one per core), got {self.threads}")
        if self.mask_width < 0 or self.mask_height < 0:
            raise ConfigError(f"mask_width and mask_height must be ≥ 0 (0: from the input), "
                              f"got {self.mask_width}×{self.mask_height}")
        if self.color_segmentation_mask_encoding not in ("rgb8", "bgr8"):
            raise ConfigError(f"color_segmentation_mask_encoding must be rgb8 or bgr8, "
                              f"got {self.color_segmentation_mask_encoding!r}")
        if not 0.0 <= self.overlay_alpha <= 1.0:
            raise ConfigError(f"overlay_alpha must be in [0, 1], got {self.overlay_alpha}")
        for name in ("input_qos", "output_qos"):
            if getattr(self, name) not in QOS_PRESETS:
                raise ConfigError(f"{name} must be one of {', '.join(QOS_PRESETS)}, got {getattr(self, name)!r}")
        if self.input_qos_depth < 1 or self.output_qos_depth < 1:
            raise ConfigError("input_qos_depth and output_qos_depth must be ≥ 1")
        if self.diagnostics_period_s <= 0:
            raise ConfigError(f"diagnostics_period_s must be positive, got {self.diagnostics_period_s}")
        InputLimits(self.max_input_width, self.max_input_height)  # refuses sizes that are not positive integers

    @property
    def limits(self) -> InputLimits:
        """The input size limits of ``max_input_width`` / ``max_input_height``."""
        return InputLimits(self.max_input_width, self.max_input_height)

    @property
    def mask_size(self) -> tuple[int, int] | None:
        """``(height, width)`` of the masks (a 0 follows the input's aspect), ``None`` for the camera resolution."""
        return (self.mask_height, self.mask_width) if self.mask_width or self.mask_height else None

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Any:
        """Build from a parameter dict; unknown keys are an error, not ignored."""
        check_known_keys(values, cls, cls.__name__)
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """Field name → value."""
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class ImageParams(SegmentationParams):
    """Parameters of the image (depth/thermal) node.

    Attributes:
        modality: ``depth`` or ``thermal``: picks the default model and must match the model's own.
    """

    modality: str = "depth"

    def __post_init__(self) -> None:
        from madm_ros.preprocessing import IMAGE_MODALITIES

        super().__post_init__()
        if self.modality not in IMAGE_MODALITIES:
            raise ConfigError(f"modality must be {' or '.join(IMAGE_MODALITIES)}, got {self.modality!r}")


@dataclass(frozen=True)
class EventParams(SegmentationParams):
    """Parameters of the event segmentation node (``input_qos_depth`` defaults to 1000 like event drivers).

    Attributes:
        message_type: ``event_packet`` (event_camera_msgs/EventPacket, any encoding), ``dvs``
            (dvs_msgs/EventArray), ``dv`` (dv_ros2_msgs/EventArray) or ``packed``
            (madm_ros/PackedEvents); checked against the topic's type at start.
        slice_method: ``time`` (a frame every ``accumulation_time_ms``) or ``count`` (every
            ``accumulation_number`` events).
        accumulation_time_ms: Time window of a frame (time slicing).
        accumulation_number: Events per frame (count slicing).
        event_contribution: Brightness step per event as a fraction of 255 (dv's ``EdgeMapAccumulator``).
        neutral_level: Start value of each pixel as a fraction of 255 (0.5 with ``signed`` polarity).
        polarity: ``ignore`` (every event adds) or ``signed`` (OFF subtracts).
        crop: ``[x0, y0, width, height]`` of the sensor to keep, empty = whole sensor.
        restart_after_ms: A jump back of event or header time by more than this restarts
            accumulation (bag loops, driver restarts).
        max_gap_ms: Time slicing: a forward jump of event time by more than this (at least
            ``accumulation_time_ms``) starts a new segment without emitting the empty frames in
            between (counted as ``accumulate_gaps`` / ``accumulate_skipped_windows``): a paused
            sensor or a corrupt packet yields a few frames, not hours of empty ones. 0 = emit
            every empty window (dv's slicer).
    """

    input_qos_depth: int = 1000
    message_type: str = "event_packet"
    slice_method: str = "time"
    accumulation_time_ms: float = 50.0
    accumulation_number: int = 100_000
    event_contribution: float = 0.25
    neutral_level: float = 0.0
    polarity: str = "ignore"
    crop: tuple[int, ...] = ()
    restart_after_ms: float = 1000.0
    max_gap_ms: float = 200.0

    def __post_init__(self) -> None:
        super().__post_init__()
        from madm_ros.events.stream import MESSAGE_TYPES

        if self.message_type not in MESSAGE_TYPES:
            raise ConfigError(f"message_type must be one of {', '.join(MESSAGE_TYPES)}, got {self.message_type!r}")
        if self.polarity not in ("ignore", "signed"):
            raise ConfigError(f"polarity must be ignore or signed (models take one channel), got {self.polarity!r}")
        if len(self.crop) not in (0, 4):
            raise ConfigError(f"crop must be empty or [x0, y0, width, height], got {list(self.crop)}")
        if self.restart_after_ms <= 0:
            raise ConfigError(f"restart_after_ms must be positive, got {self.restart_after_ms}")
        if self.max_gap_ms < 0 or (0 < self.max_gap_ms < self.accumulation_time_ms and self.slice_method == "time"):
            raise ConfigError(f"max_gap_ms must be 0 (off) or ≥ accumulation_time_ms ({self.accumulation_time_ms}), "
                              f"got {self.max_gap_ms}")
        object.__setattr__(self, "crop", tuple(int(v) for v in self.crop))
        edge_fields(self)  # validates the accumulation values through EdgeFrameConfig


@dataclass(frozen=True)
class ParameterRule:
    """When a change of a parameter takes effect, and the values it may take.

    Attributes:
        apply: ``live`` (at once), ``input`` (the input is restarted: the frame source is
            rebuilt, a partial event slice is dropped), ``reload`` (a configured node loads and
            warms up the model of the new values first, refusing the change with the reason if
            that fails, then swaps it in, recreating topics whose QoS or type changed; unconfigured, the next
            configure reads it) or ``start`` (read-only).
        low: Smallest value of a number (inclusive), or None.
        high: Largest value of a number (inclusive), or None.
        choices: The allowed values of a string, or empty.
    """

    apply: Literal["live", "input", "reload", "start"]
    low: float | None = None
    high: float | None = None
    choices: tuple[str, ...] = ()


def _rules() -> dict[str, ParameterRule]:
    from madm_ros.backends import BACKEND_CHOICES
    from madm_ros.events.types import MESSAGE_TYPES
    from madm_ros.preprocessing import IMAGE_MODALITIES

    return {
        "model_file_path": ParameterRule("reload"), "engine_file_path": ParameterRule("reload"),
        "backend": ParameterRule("reload", choices=BACKEND_CHOICES), "threads": ParameterRule("reload", 0, 1024),
        "mask_width": ParameterRule("reload", 0, 65535), "mask_height": ParameterRule("reload", 0, 65535),
        "color_segmentation_mask_encoding": ParameterRule("live", choices=("rgb8", "bgr8")),
        "overlay_alpha": ParameterRule("live", 0.0, 1.0),
        "input_qos": ParameterRule("reload", choices=QOS_PRESETS), "input_qos_depth": ParameterRule("reload", 1, 100_000),
        "output_qos": ParameterRule("reload", choices=QOS_PRESETS),
        "output_qos_depth": ParameterRule("reload", 1, 100_000),
        "diagnostics_period_s": ParameterRule("live", 0.05, 3600.0), "autostart": ParameterRule("start"),
        # the segmenter checks its model against the limits when it loads: a change reloads it
        "max_input_width": ParameterRule("reload", 1, 65535), "max_input_height": ParameterRule("reload", 1, 65535),
        "modality": ParameterRule("reload", choices=IMAGE_MODALITIES),
        "message_type": ParameterRule("reload", choices=tuple(MESSAGE_TYPES)),
        "slice_method": ParameterRule("input", choices=("time", "count")),
        "accumulation_time_ms": ParameterRule("input", 0.001, 3_600_000.0),
        "accumulation_number": ParameterRule("input", 1, 1_000_000_000),
        "event_contribution": ParameterRule("input", 0.0, 1.0), "neutral_level": ParameterRule("input", 0.0, 1.0),
        "polarity": ParameterRule("input", choices=("ignore", "signed")), "crop": ParameterRule("input"),
        "restart_after_ms": ParameterRule("input", 0.001, 86_400_000.0),
        "max_gap_ms": ParameterRule("input", 0.0, 86_400_000.0),
    }


PARAMETER_RULES: dict[str, ParameterRule] = _rules()
"""Parameter name → :class:`ParameterRule`; every field of the parameter dataclasses has one (tested)."""


@dataclass(frozen=True)
class ParameterInfo:
    """One row of :func:`parameter_table`: what a node declares for a parameter."""

    name: str
    default: Any
    description: str
    rule: ParameterRule


def _attribute_docs(cls: type) -> dict[str, str]:
    """``name: text`` entries of the ``Attributes:`` sections of ``cls`` and its bases (Google style)."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        text = inspect.getdoc(klass) or ""
        section = text.split("Attributes:", 1)[1] if "Attributes:" in text else ""
        for match in re.finditer(r"^    (\w+): (.+?)(?=^    \w+: |\Z)", section, re.S | re.M):
            docs[match.group(1)] = " ".join(match.group(2).split())
    return docs


def parameter_table(cls: type) -> list[ParameterInfo]:
    """Every parameter of the node parameter dataclass ``cls``, in field order (the nodes declare these)."""
    docs = _attribute_docs(cls)
    return [ParameterInfo(f.name, f.default, docs.get(f.name, ""), PARAMETER_RULES[f.name])
            for f in dataclasses.fields(cls)]


def edge_fields(params: EventParams) -> dict[str, Any]:
    """The :class:`~madm_ros.events.edge_frames.EdgeFrameConfig` fields (less the sensor size) of ``params``."""
    from madm_ros.events.edge_frames import EdgeFrameConfig

    if params.slice_method not in ("time", "count"):
        raise ConfigError(f"slice_method must be time or count, got {params.slice_method!r}")
    window_us = round(params.accumulation_time_ms * 1000)
    fields: dict[str, Any] = {
        "mode": params.slice_method, "window_us": window_us, "window_events": params.accumulation_number,
        "polarity": params.polarity, "contribution": params.event_contribution, "neutral": params.neutral_level,
        "crop": params.crop or None,
        "max_gap_us": round(params.max_gap_ms * 1000) if params.max_gap_ms and params.slice_method == "time" else None,
    }
    EdgeFrameConfig(width=65535, height=65535, **fields)  # the real sensor size comes with the first message
    return fields


def params_from_values(cls: type, values: dict[str, Any], source: str) -> Any:
    """``cls.from_dict`` after the conversions the node applies to ROS parameters (50 → 50.0, lists → tuples)."""
    hints = get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    converted: dict[str, Any] = {}
    for name, value in values.items():
        kind = hints.get(name) if name in known else None
        try:
            if kind is float and not isinstance(value, bool):
                value = float(value)
            elif kind is int and not isinstance(value, bool):
                value = int(value)
            elif kind is bool and not isinstance(value, bool):
                raise ConfigError(f"{source}: {name} must be true or false, got {value!r}")
            elif kind is str and not isinstance(value, str):
                raise ConfigError(f"{source}: {name} must be a string, got {value!r}")
            elif kind is not None and str(kind).startswith("tuple"):
                value = tuple(int(v) for v in value)
        except (TypeError, ValueError):
            raise ConfigError(f"{source}: {name}: {value!r} is not a {getattr(kind, '__name__', kind)}") from None
        converted[name] = value
    try:
        return cls.from_dict(converted)
    except ConfigError as error:
        raise ConfigError(f"{source}: {error}") from None


def load_node_config(path: str | Path, *, allow_plain: bool = False) -> tuple[str | None, dict[str, Any]]:
    """The ``ros__parameters`` of a node parameter file (``config/events.yaml`` style) and the kind of node it is for.

    Entries are merged in file order when several apply (``/**`` wildcards and the node's own key).
    Returns ``("events" | "image" | None, values)``; the kind comes from the node name in the key
    (``event_segmentation``, ``depth_segmentation`` ...) or from keys only one node has.

    With ``allow_plain`` a file that is just a mapping of parameters (or a top-level
    ``ros__parameters:``) is accepted too, as training configs may name one.

    Raises:
        ConfigError: unreadable file, no ``ros__parameters``, or entries for several different nodes.
    """
    import yaml

    from madm_ros.preprocessing import IMAGE_MODALITIES

    path = Path(path)
    try:
        document = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as error:
        raise ConfigError(f"cannot read node parameter file {path}: {error}") from None
    entries = {str(k): v["ros__parameters"] for k, v in (document or {}).items()
               if isinstance(v, dict) and isinstance(v.get("ros__parameters"), dict)} if isinstance(document, dict) else {}
    if not entries and allow_plain and isinstance(document, dict):
        plain = document.get("ros__parameters", document)
        if not isinstance(plain, dict):
            raise ConfigError(f"{path} must hold the node's parameters")
        entries = {"/**": plain}
    if not entries:
        raise ConfigError(f"{path} has no '<node>: ros__parameters:' entry (see config/events.yaml for the layout)")
    names = {key: key.rstrip("/").rsplit("/", 1)[-1] for key in entries}
    specific = {name for name in names.values() if name != "**"}
    if len(specific) > 1:
        raise ConfigError(f"{path} has parameters for several nodes ({', '.join(sorted(specific))}); "
                          "give a file for the one node this bag feeds")
    values: dict[str, Any] = {}
    for entry in entries.values():
        values.update(entry)
    for name in ROS_ONLY_PARAMETERS:
        values.pop(name, None)
    node = next(iter(specific), "")
    if "event" in node:
        kind: str | None = "events"
    elif any(word in node for word in (*IMAGE_MODALITIES, "image")):
        kind = "image"
    else:
        kind = _kind_from_keys(values)
    return kind, values


def _kind_from_keys(values: dict[str, Any]) -> str | None:
    event_only = {f.name for f in dataclasses.fields(EventParams)} - {f.name for f in dataclasses.fields(ImageParams)}
    if set(values) & event_only:
        return "events"
    return "image" if "modality" in values else None
