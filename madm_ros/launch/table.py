"""The one table of launches (:data:`LAUNCHES`): each launch's node and its arguments.

``launch/<name>.launch.py`` (through :func:`madm_ros.launch.ros2_launch_description`) and
``python -m madm_ros.launch <name>`` both read this table, so the two ways of starting a node
cannot drift apart. Nothing here imports ROS.
"""

from __future__ import annotations

from dataclasses import dataclass

from madm_ros.backends import BACKEND_CHOICES
from madm_ros.events.types import MESSAGE_TYPES

__all__ = ["FALSE_WORDS", "LAUNCHES", "PACKAGE", "RVIZ_CONFIG", "TRUE_WORDS", "LaunchArgument", "LaunchSpec"]

PACKAGE = "madm_ros"
RVIZ_CONFIG = "madm.rviz"
TRUE_WORDS = ("true", "1", "yes", "on")
FALSE_WORDS = ("false", "0", "no", "off")


@dataclass(frozen=True)
class LaunchArgument:
    """One launch argument: ``name:=value`` on the command line, ``DeclareLaunchArgument`` in the launch file.

    Attributes:
        name: Argument name.
        default: Default value as a string ("" for the string-valued ones means: keep the params file's value).
        description: One line for ``--help`` and the launch file.
        parameter: Node parameter the argument overrides when it is not empty.
        remap: Relative input topic of the node that the argument remaps.
        choices: Accepted values ("" always accepted for parameter arguments); empty = any.
    """

    name: str
    default: str
    description: str
    parameter: str | None = None
    remap: str | None = None
    choices: tuple[str, ...] = ()


@dataclass(frozen=True)
class LaunchSpec:
    """One launch: the node it starts and the arguments it takes.

    Attributes:
        name: Launch name (``launch/<name>.launch.py``).
        description: One line for ``--help``.
        config: Parameter file under ``config/`` (default of ``params_file``).
        executable: ``ros2 run madm_ros <executable>`` (a console script).
        factory: ``module:Class`` of the node.
        node_name: Node name (and the parameter file's node key).
        modality: The node's input modality; an empty ``model_file_path`` means ``models/<modality>_student.onnx``.
        fixed_parameters: Parameters set whatever the params file says (the modality of the image launches).
        arguments: The launch arguments, in ``--help`` order.
    """

    name: str
    description: str
    config: str
    executable: str
    factory: str
    node_name: str
    modality: str
    fixed_parameters: tuple[tuple[str, str], ...]
    arguments: tuple[LaunchArgument, ...]

    def argument(self, name: str) -> LaunchArgument:
        """The argument called ``name`` (``KeyError`` if there is none)."""
        for argument in self.arguments:
            if argument.name == name:
                return argument
        raise KeyError(name)

    def defaults(self) -> dict[str, str]:
        """Argument name → default value."""
        return {a.name: a.default for a in self.arguments}

    def parameters(self, values: dict[str, str]) -> dict[str, str]:
        """The node parameters the launch sets over its params file, as strings: the fixed ones and each non-empty argument's."""
        return dict(self.fixed_parameters, **{a.parameter: values[a.name] for a in self.arguments
                                              if a.parameter and values[a.name]})


def _one_of(names: tuple[str, ...]) -> str:
    """``a, b or c``: the values of a choice argument, for its description."""
    return f"{', '.join(names[:-1])} or {names[-1]}"


def _arguments(config: str, inputs: tuple[LaunchArgument, ...], extra: tuple[LaunchArgument, ...] = ()) -> tuple:
    """The arguments every launch has (model, backend, namespace, clock, params file, RViz) around its own."""
    return (
        LaunchArgument("model_file_path", "", "ONNX model from python -m madm_train export; empty: the params file's value "
                       "(by default the built-in model)", parameter="model_file_path"),
        LaunchArgument("engine_file_path", "", "TensorRT engine (built and cached on this machine); empty: the params "
                       "file's value", parameter="engine_file_path"),
        LaunchArgument("backend", "", f"{_one_of(BACKEND_CHOICES)}; empty: the params file's value (auto)",
                       parameter="backend", choices=BACKEND_CHOICES),
        *extra,
        *inputs,
        LaunchArgument("namespace", "", "namespace of the node; its outputs are <namespace>/<node name>/..."),
        LaunchArgument("use_sim_time", "false", "follow /clock (bag replay with ros2 bag play --clock)",
                       choices=("true", "false")),
        LaunchArgument("params_file", "", f"node parameter file; empty: the package's config/{config}"),
        LaunchArgument("rviz", "false", f"also start rviz2 with the package's config/{RVIZ_CONFIG}",
                       choices=("true", "false")),
    )


def _camera_info(what: str) -> LaunchArgument:
    return LaunchArgument("camera_info_topic", "camera_info", f"CameraInfo of the {what} (optional; republished scaled "
                          "to the masks on ~/camera_info)", remap="camera_info")


def _image_launch(modality: str, encodings: str, example_topic: str) -> LaunchSpec:
    """The launch of an image node for ``modality`` (depth and thermal differ only in names)."""
    return LaunchSpec(
        name=f"{modality}_seg", description=f"{modality} camera: {encodings} images segmented",
        config=f"{modality}.yaml", executable="image_segmentation",
        factory="madm_ros.nodes.image_segmentation:ImageSegmentationNode", node_name=f"{modality}_segmentation",
        modality=modality, fixed_parameters=(("modality", modality),),
        arguments=_arguments(
            f"{modality}.yaml",
            (LaunchArgument("image_topic", "image", f"{modality} image topic, e.g. {example_topic}", remap="image"),
             _camera_info(f"{modality} camera"))),
    )


LAUNCHES: dict[str, LaunchSpec] = {
    "event_seg": LaunchSpec(
        name="event_seg", description="event camera: events accumulated into edge frames and segmented",
        config="events.yaml", executable="event_segmentation",
        factory="madm_ros.nodes.event_segmentation:EventSegmentationNode", node_name="event_segmentation",
        modality="events", fixed_parameters=(),
        arguments=_arguments(
            "events.yaml",
            (LaunchArgument("events_topic", "events", "event topic, e.g. /event_camera/events", remap="events"),
             _camera_info("event camera")),
            (LaunchArgument("message_type", "", f"{_one_of(tuple(MESSAGE_TYPES))}; empty: the params file's value "
                            "(event_packet)", parameter="message_type", choices=tuple(MESSAGE_TYPES)),)),
    ),
    "depth_seg": _image_launch("depth", "16UC1 (mm) or 32FC1 (m)", "/camera/depth/image_rect_raw"),
    "thermal_seg": _image_launch("thermal", "mono16 (raw counts) or mono8", "/thermal/image_raw"),
}
"""Launch name → what it starts; ``launch/<name>.launch.py`` is ``ros2_launch_description(name)``."""
