"""Start the segmentation nodes where ``ros2 launch`` is not installed: ``python -m madm_ros.launch NAME [name:=value ...]``.

The launch names and arguments are those of ``launch/<NAME>.launch.py``; this module holds the
one table of them (:data:`LAUNCHES`), and the launch files build their ``ros2 launch`` description
from it with :func:`ros2_launch_description`::

    python -m madm_ros.launch event_seg events_topic:=/event_camera/events
    python -m madm_ros.launch depth_seg image_topic:=/camera/depth/image_rect_raw model_file_path:=student.onnx
    python -m madm_ros.launch thermal_seg --params-file my_thermal.yaml use_sim_time:=true
    python -m madm_ros.launch depth_seg --dry-run        # print the nodes and their ROS arguments as JSON
    python -m madm_ros.launch --help                     # every launch, its arguments and their defaults

Like the launch files, every node reads ``config/<modality>.yaml`` (or ``params_file``); launch
arguments left empty keep the file's value, others override it. The nodes run in this one
process on a multi-threaded executor until Ctrl-C (exit code 0). ROS arguments after
``--ros-args`` are passed to every node as well (``--ros-args -p overlay_alpha:=0.3``).

Programs (the demo) use :func:`node_specs` and :meth:`NodeSpec.create` inside their own rclpy
context. Importing this module needs neither rclpy nor ROS (:func:`ros2_launch_description` imports
``launch``, ``launch_ros`` and ``ament_index_python`` when called).
"""

from __future__ import annotations

import importlib
import json
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from madm_ros.backends import BACKEND_CHOICES
from madm_ros.errors import ConfigError
from madm_ros.events.types import MESSAGE_TYPES

__all__ = ["LAUNCHES", "LaunchArgument", "LaunchSpec", "NodeFactory", "NodeSpec", "config_dirs", "find_config",
           "main", "node_specs", "parse_launch_arguments", "ros2_launch_description", "rviz_command"]

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
        fixed_parameters: Parameters set whatever the params file says (the modality of the image launches).
        arguments: The launch arguments, in ``--help`` order.
    """

    name: str
    description: str
    config: str
    executable: str
    factory: str
    node_name: str
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




def _arguments(config: str, inputs: tuple[LaunchArgument, ...], extra: tuple[LaunchArgument, ...] = ()) -> tuple:
    return (
        LaunchArgument("model_file_path", "", "ONNX model from python -m madm_train export; empty: the params file's value "
                       "(by default the built-in model)", parameter="model_file_path"),
        LaunchArgument("engine_file_path", "", "TensorRT engine (built and cached on this machine); empty: the params "
                       "file's value", parameter="engine_file_path"),
        LaunchArgument("backend", "", "auto, tensorrt or onnxruntime; empty: the params file's value (auto)",
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
        fixed_parameters=(("modality", modality),),
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
        fixed_parameters=(),
        arguments=_arguments(
            "events.yaml",
            (LaunchArgument("events_topic", "events", "event topic, e.g. /event_camera/events", remap="events"),
             _camera_info("event camera")),
            (LaunchArgument("message_type", "", "event_packet, dvs, dv or packed; empty: the params file's value "
                            "(event_packet)", parameter="message_type", choices=tuple(MESSAGE_TYPES)),)),
    ),
    "depth_seg": _image_launch("depth", "16UC1 (mm) or 32FC1 (m)", "/camera/depth/image_rect_raw"),
    "thermal_seg": _image_launch("thermal", "mono16 (raw counts) or mono8", "/thermal/image_raw"),
}
"""Launch name → what it starts; ``launch/<name>.launch.py`` is ``ros2_launch_description(name)``."""


# ---------------------------------------------------------------------------------------------- files
def config_dirs() -> list[Path]:
    """Where parameter files are looked for: the checkout's ``config/``, ``<prefix>/share/madm_ros/config``, the ament share."""
    dirs = [Path(__file__).resolve().parents[1] / "config", Path(sys.prefix) / "share" / PACKAGE / "config"]
    try:
        from ament_index_python.packages import get_package_share_directory

        dirs.append(Path(get_package_share_directory(PACKAGE)) / "config")
    except (ImportError, LookupError, OSError, ValueError):  # not installed, no such package, AMENT_PREFIX_PATH unset
        pass
    return dirs


def find_config(name: str) -> Path:
    """``config/<name>`` of the checkout or the installed package (``ConfigError`` naming the folders searched)."""
    searched = config_dirs()
    for folder in searched:
        if (folder / name).is_file():
            return folder / name
    raise ConfigError(f"config/{name} not found in {', '.join(map(str, searched))}; pass params_file:=<file>")


# ---------------------------------------------------------------------------------------------- nodes
@dataclass(frozen=True)
class NodeFactory:
    """A node class named ``module:Class``, imported only when called (so this module needs no rclpy)."""

    target: str

    def resolve(self) -> Any:
        """The class itself."""
        module, _, name = self.target.partition(":")
        return getattr(importlib.import_module(module), name)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Create the node: ``Class(*args, **kwargs)``."""
        return self.resolve()(*args, **kwargs)


@dataclass(frozen=True)
class NodeSpec:
    """One node of a launch, ready to create in an initialised rclpy context.

    Attributes:
        factory: Creates the node: ``factory(node_name, **kwargs)``.
        node_name: Node name.
        namespace: Node namespace ("" = root).
        cli_args: The node's own ROS arguments (``['--ros-args', '--params-file', F, '-p', 'k:=v', '-r', 'from:=to']``).
        executable: The console script that runs the same node alone (``ros2 run madm_ros <executable>``).
    """

    factory: NodeFactory
    node_name: str
    namespace: str
    cli_args: list[str]
    executable: str

    def node_kwargs(self, context: Any = None) -> dict[str, Any]:
        """Keyword arguments of rclpy's ``Node``: the ROS arguments apply to this node only, not the process's."""
        kwargs: dict[str, Any] = {"cli_args": list(self.cli_args), "use_global_arguments": False}
        if self.namespace:
            kwargs["namespace"] = self.namespace
        if context is not None:
            kwargs["context"] = context
        return kwargs

    def create(self, context: Any = None) -> Any:
        """Create the node (rclpy must be initialised; ``context`` ``None`` = the default context)."""
        return self.factory(self.node_name, **self.node_kwargs(context))

    def ros2_run_command(self) -> list[str]:
        """The equivalent ``ros2 run`` command line."""
        remaps = ["-r", f"__node:={self.node_name}"] + (["-r", f"__ns:={self.namespace}"] if self.namespace else [])
        return ["ros2", "run", PACKAGE, self.executable, self.cli_args[0], *remaps, *self.cli_args[1:]]

    def to_json(self) -> dict[str, Any]:
        """What ``--dry-run`` prints for the node."""
        return {"node_name": self.node_name, "namespace": self.namespace, "executable": self.executable,
                "factory": self.factory.target, "cli_args": list(self.cli_args), "ros2_run": self.ros2_run_command()}


def _truth(name: str, value: str) -> bool:
    word = value.strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise ConfigError(f"{name} must be true or false, got {value!r}")


def _string_parameter(name: str, value: str) -> str:
    """``name:=value`` for ``-p`` with ``value`` kept a string (rcl reads ``-p`` values as YAML)."""
    import yaml

    try:
        plain = isinstance(yaml.safe_load(value), str) and value == value.strip()
    except yaml.YAMLError:
        plain = False
    return f"{name}:={value}" if plain else f"{name}:={json.dumps(value)}"


def _checked(launch_name: str, arguments: dict[str, str]) -> tuple[LaunchSpec, dict[str, str]]:
    if launch_name not in LAUNCHES:
        raise ConfigError(f"unknown launch {launch_name!r}; choose from {', '.join(LAUNCHES)}")
    spec = LAUNCHES[launch_name]
    known = spec.defaults()
    unknown = sorted(set(arguments) - set(known))
    if unknown:
        raise ConfigError(f"launch {launch_name} has no argument{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}; "
                          f"its arguments: {', '.join(known)}")
    values = {**known, **{k: str(v) for k, v in arguments.items()}}
    for argument in spec.arguments:
        value = values[argument.name]
        if argument.choices and value not in argument.choices and not (argument.parameter and value == ""):
            if set(argument.choices) == {"true", "false"}:
                values[argument.name] = "true" if _truth(argument.name, value) else "false"
            else:
                raise ConfigError(f"{argument.name} must be one of {', '.join(argument.choices)}, got {value!r}")
        if argument.remap and not value.strip():
            raise ConfigError(f"{argument.name} must name a topic, got an empty string")
    return spec, values


def node_specs(launch_name: str, arguments: dict[str, str] | None = None) -> list[NodeSpec]:
    """The nodes ``launch/<launch_name>.launch.py`` starts with ``arguments`` (name → value, as after ``:=``).

    Raises:
        ConfigError: unknown launch or argument, a bad value, or a params file that does not exist.
    """
    spec, values = _checked(launch_name, arguments or {})
    params_file = Path(values["params_file"]) if values["params_file"] else find_config(spec.config)
    if not params_file.is_file():
        raise ConfigError(f"params_file {params_file} does not exist")
    cli = ["--ros-args", "--params-file", str(params_file.resolve()), "-p", f"use_sim_time:={values['use_sim_time']}"]
    for name, value in spec.fixed_parameters:
        cli += ["-p", _string_parameter(name, value)]
    for argument in spec.arguments:
        if argument.parameter and values[argument.name]:
            cli += ["-p", _string_parameter(argument.parameter, values[argument.name])]
    for argument in spec.arguments:
        if argument.remap:
            cli += ["-r", f"{argument.remap}:={values[argument.name]}"]
    namespace = values["namespace"].rstrip("/")
    return [NodeSpec(NodeFactory(spec.factory), spec.node_name, namespace, cli, spec.executable)]


def rviz_command(launch_name: str, arguments: dict[str, str] | None = None) -> list[str] | None:
    """``rviz2 -d <config/madm.rviz> ...`` when the launch's ``rviz`` argument is true, else ``None``."""
    _, values = _checked(launch_name, arguments or {})
    if values["rviz"] != "true":
        return None
    return ["rviz2", "-d", str(find_config(RVIZ_CONFIG)), "--ros-args", "-p", f"use_sim_time:={values['use_sim_time']}"]


# ---------------------------------------------------------------------------------------------- ros2 launch
def ros2_launch_description(name: str) -> Any:
    """The ``LaunchDescription`` of ``launch/<name>.launch.py``: what ``ros2 launch madm_ros <name>.launch.py`` runs.

    Declares every argument of ``LAUNCHES[name]`` (``params_file`` defaults to the installed package's
    ``config/<config>``); once their values are known it starts the node with the params file, then the
    fixed parameters and the non-empty parameter arguments as string overrides and ``use_sim_time``,
    its input topics remapped, and with ``rviz:=true`` rviz2 with ``config/madm.rviz`` as well. The
    same node and ROS arguments as :func:`node_specs` (a test checks). Needs ``launch``, ``launch_ros``
    and ``ament_index_python`` (imported here, so that importing this module does not).
    """
    import os

    from ament_index_python.packages import get_package_share_directory
    from launch.actions import DeclareLaunchArgument, OpaqueFunction
    from launch.substitutions import LaunchConfiguration
    from launch_ros.actions import Node
    from launch_ros.parameter_descriptions import ParameterValue

    # a group of its own only because ruff takes `launch` for this checkout's launch/ folder
    from launch import LaunchDescription

    spec = LAUNCHES[name]
    config = os.path.join(get_package_share_directory(PACKAGE), "config")

    def nodes(context: Any) -> list[Any]:
        value = {a.name: LaunchConfiguration(a.name).perform(context) for a in spec.arguments}
        strings = dict(spec.fixed_parameters, **{a.parameter: value[a.name] for a in spec.arguments
                                                 if a.parameter and value[a.name]})
        overrides: dict[str, Any] = {key: ParameterValue(text, value_type=str)  # "123" stays a str
                                     for key, text in strings.items()}
        overrides["use_sim_time"] = value["use_sim_time"].strip().lower() in TRUE_WORDS
        started = [Node(
            package=PACKAGE, executable=spec.executable, name=spec.node_name, namespace=value["namespace"],
            parameters=[value["params_file"] or os.path.join(config, spec.config), overrides],
            remappings=[(a.remap, value[a.name]) for a in spec.arguments if a.remap],
            output="screen", emulate_tty=True,
        )]
        if value["rviz"].strip().lower() in TRUE_WORDS:
            started.append(Node(package="rviz2", executable="rviz2", name="rviz2", output="screen",
                                arguments=["-d", os.path.join(config, RVIZ_CONFIG)],
                                parameters=[{"use_sim_time": overrides["use_sim_time"]}]))
        return started

    defaults = {"params_file": os.path.join(config, spec.config)}
    return LaunchDescription([
        *(DeclareLaunchArgument(a.name, default_value=defaults.get(a.name, a.default), description=a.description)
          for a in spec.arguments),
        OpaqueFunction(function=nodes),
    ])


# ---------------------------------------------------------------------------------------------- command line
def _usage() -> str:
    lines = ["usage: python -m madm_ros.launch NAME [name:=value ...] [--params-file FILE] [--dry-run] [--ros-args ...]",
             "",
             "Starts the nodes of launch/NAME.launch.py in this process (for machines without `ros2 launch`).",
             "Empty string arguments keep the params file's value. Ctrl-C stops the nodes (exit code 0).",
             "",
             "options:",
             "  --params-file FILE  same as params_file:=FILE",
             "  --dry-run           print the nodes and their ROS arguments as JSON, start nothing",
             "  --ros-args ...      further ROS arguments for every node (e.g. -p overlay_alpha:=0.3)",
             "  -h, --help          this text",
             ""]
    for spec in LAUNCHES.values():
        lines.append(f"{spec.name}: {spec.description} (node {spec.node_name}, ros2 run {PACKAGE} {spec.executable})")
        for argument in spec.arguments:
            lines.append(f"  {argument.name + ':=' + repr(argument.default):<32} {argument.description}")
        lines.append("")
    return "\n".join(lines)


def parse_launch_arguments(argv: Sequence[str]) -> tuple[str, dict[str, str], bool, list[str]]:
    """``(launch name, arguments, dry_run, extra ROS arguments)`` of a command line (``ConfigError`` if malformed)."""
    argv = list(argv)
    extra: list[str] = []
    if "--ros-args" in argv:
        at = argv.index("--ros-args")
        argv, extra = argv[:at], argv[at + 1:]
    name: str | None = None
    arguments: dict[str, str] = {}
    dry_run = False
    items = iter(argv)
    for item in items:
        if item == "--dry-run":
            dry_run = True
        elif item == "--params-file" or item.startswith("--params-file="):
            value = item.partition("=")[2] if "=" in item else next(items, None)
            if not value:
                raise ConfigError("--params-file needs a file")
            arguments["params_file"] = value
        elif ":=" in item:
            key, _, value = item.partition(":=")
            arguments[key] = value
        elif item.startswith("-"):
            raise ConfigError(f"unknown option {item}")
        elif name is None:
            name = item
        else:
            raise ConfigError(f"unexpected {item!r}: launch arguments are written name:=value")
    if name is None:
        raise ConfigError(f"name a launch: {', '.join(LAUNCHES)}")
    return name, arguments, dry_run, extra


def _run(specs: list[NodeSpec], rviz: list[str] | None) -> int:
    import os
    import subprocess

    from madm_ros.nodes.spin import spin_nodes

    # node logs appear at once when stderr is a pipe or file too (ros2 launch's emulate_tty does the same job)
    os.environ.setdefault("RCUTILS_LOGGING_BUFFERED_STREAM", "0")

    viewer = None
    if rviz is not None:
        if shutil.which(rviz[0]) is None:
            print("madm_ros.launch: rviz:=true but rviz2 is not installed here; starting the nodes without it",
                  file=sys.stderr)
        else:
            viewer = subprocess.Popen(rviz)
    for spec in specs:
        name = f"{spec.namespace}/{spec.node_name}" if spec.namespace else f"/{spec.node_name}"
        print(f"madm_ros.launch: starting {name} ({spec.factory.target}) {' '.join(spec.cli_args)}", file=sys.stderr)
    try:
        return spin_nodes([spec.factory for spec in specs], [sys.argv[0] if sys.argv else "madm_ros.launch"],
                          node_kwargs=[{"node_name": spec.node_name, **spec.node_kwargs()} for spec in specs])
    finally:
        if viewer is not None:
            viewer.terminate()
            viewer.wait(timeout=10)


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point; returns the exit code (2 for a bad command line)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    head = argv[:argv.index("--ros-args")] if "--ros-args" in argv else argv
    if not argv:
        print(_usage(), file=sys.stderr)
        return 2
    if "-h" in head or "--help" in head:
        print(_usage())
        return 0
    try:
        name, arguments, dry_run, extra = parse_launch_arguments(argv)
        specs = node_specs(name, arguments)
        rviz = rviz_command(name, arguments)
    except ConfigError as error:
        print(f"madm_ros.launch: {error}", file=sys.stderr)
        return 2
    if extra:
        specs = [NodeSpec(s.factory, s.node_name, s.namespace, [*s.cli_args, *extra], s.executable) for s in specs]
    if dry_run:
        print(json.dumps({"launch": name, "nodes": [s.to_json() for s in specs], "rviz": rviz}, indent=1))
        return 0
    return _run(specs, rviz)


if __name__ == "__main__":
    sys.exit(main())
