"""Launch arguments turned into the node to start (:class:`NodeSpec`), and where parameter files are found.

The node's ROS arguments are built here once, for both the in-process runner and programs that
create the nodes inside their own rclpy context (:meth:`NodeSpec.create`). Node classes are
imported only when a node is created, so this module needs no rclpy.
"""

from __future__ import annotations

import importlib
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from madm_ros.errors import ConfigError
from madm_ros.launch.table import FALSE_WORDS, LAUNCHES, PACKAGE, RVIZ_CONFIG, TRUE_WORDS, LaunchSpec

__all__ = ["NodeFactory", "NodeSpec", "config_dirs", "find_config", "launch_values", "node_specs", "params_file_path",
           "rviz_command"]


# ---------------------------------------------------------------------------------------------- files
def config_dirs() -> list[Path]:
    """Where parameter files are looked for: the checkout's ``config/``, ``<prefix>/share/madm_ros/config``, the ament share."""
    dirs = [Path(__file__).resolve().parents[2] / "config", Path(sys.prefix) / "share" / PACKAGE / "config"]
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


def params_file_path(spec: LaunchSpec, values: dict[str, str]) -> Path:
    """The parameter file the node reads: ``params_file`` or the package's ``config/<spec.config>``.

    Raises:
        ConfigError: the file does not exist (or is not a file), naming the argument and the fix.
    """
    if not values["params_file"]:
        return find_config(spec.config)
    path = Path(values["params_file"])
    if not path.is_file():
        what = "is a folder" if path.is_dir() else "does not exist"
        raise ConfigError(f"params_file {path} {what}; give an existing YAML file (a copy of config/{spec.config}) "
                          f"or leave params_file empty for the package's config/{spec.config}")
    return path


# ---------------------------------------------------------------------------------------------- arguments
def _truth(name: str, value: str) -> bool:
    word = value.strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise ConfigError(f"{name} must be true or false, got {value!r}")


def launch_values(launch_name: str, arguments: dict[str, str]) -> tuple[LaunchSpec, dict[str, str]]:
    """The launch and the value of each of its arguments (defaults filled in, true/false words normalised).

    Raises:
        ConfigError: unknown launch or argument, a value outside the argument's choices, an empty topic.
    """
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


def _string_parameter(name: str, value: str) -> str:
    """``name:=value`` for ``-p`` with ``value`` kept a string (rcl reads ``-p`` values as YAML)."""
    import yaml

    try:
        plain = isinstance(yaml.safe_load(value), str) and value == value.strip()
    except yaml.YAMLError:
        plain = False
    return f"{name}:={value}" if plain else f"{name}:={json.dumps(value)}"


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


def node_specs(launch_name: str, arguments: dict[str, str] | None = None) -> list[NodeSpec]:
    """The nodes ``launch/<launch_name>.launch.py`` starts with ``arguments`` (name → value, as after ``:=``).

    Only the parameter file is opened here; the model files are checked by
    :func:`madm_ros.launch.launch_problems` (the node itself would only log them).

    Raises:
        ConfigError: unknown launch or argument, a bad value, or a params file that does not exist.
    """
    spec, values = launch_values(launch_name, arguments or {})
    params_file = params_file_path(spec, values)
    cli = ["--ros-args", "--params-file", str(params_file.resolve()), "-p", f"use_sim_time:={values['use_sim_time']}"]
    for name, value in spec.parameters(values).items():
        cli += ["-p", _string_parameter(name, value)]
    for argument in spec.arguments:
        if argument.remap:
            cli += ["-r", f"{argument.remap}:={values[argument.name]}"]
    namespace = values["namespace"].rstrip("/")
    return [NodeSpec(NodeFactory(spec.factory), spec.node_name, namespace, cli, spec.executable)]


def rviz_command(launch_name: str, arguments: dict[str, str] | None = None) -> list[str] | None:
    """``rviz2 -d <config/madm.rviz> ...`` when the launch's ``rviz`` argument is true, else ``None``."""
    _, values = launch_values(launch_name, arguments or {})
    if values["rviz"] != "true":
        return None
    return ["rviz2", "-d", str(find_config(RVIZ_CONFIG)), "--ros-args", "-p", f"use_sim_time:={values['use_sim_time']}"]
