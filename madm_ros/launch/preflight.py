"""Check the files a launch's node would open, before any node starts: ``--dry-run`` and every real start.

A node given a missing model does not exit: it logs the error and stays unconfigured (a lifecycle
manager could still configure it later), which from a command line looks like a node that hangs.
So the runner checks what it can beforehand and refuses with one line per problem, each naming
the argument and the fix. Only file names are checked; whether a model loads is the node's job.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence
from pathlib import Path

from madm_ros.default_models import default_model_path
from madm_ros.errors import ConfigError
from madm_ros.launch.specs import launch_values, params_file_path
from madm_ros.launch.table import LaunchSpec

__all__ = ["launch_problems"]

CHECKED_PARAMETERS = ("model_file_path", "engine_file_path")
"""The node parameters naming files; the launch arguments that override them have the same names."""


def launch_problems(launch_name: str, arguments: dict[str, str] | None = None, ros_args: Sequence[str] = ()) -> list[str]:
    """Every problem with the files the launch's node would open, one line each (empty: none found).

    Checked: the params file exists; ``model_file_path`` and, when set, ``engine_file_path`` name
    existing files; an empty ``model_file_path`` (the built-in model of the launch's modality) is
    found by :func:`madm_ros.default_models.default_model_path`. Each value is the one the node will
    get, taken as rcl takes it: a ``-p name:=value`` in ``ros_args`` (the ROS arguments after
    ``--ros-args``) over the launch argument over the params file.

    Raises:
        ConfigError: the launch or its arguments themselves are wrong (as :func:`madm_ros.launch.node_specs`).
    """
    spec, values = launch_values(launch_name, arguments or {})
    problems: list[str] = []
    in_file: dict[str, str] = {}
    params_file: Path | None = None
    try:
        params_file = params_file_path(spec, values)
        in_file = _file_parameters(params_file, spec, values["namespace"].strip("/"))
    except ConfigError as error:
        problems.append(str(error))
    overrides = _parameter_overrides(ros_args)
    for name in CHECKED_PARAMETERS:
        if name in overrides:
            value, origin = overrides[name], " (from --ros-args -p)"
        elif values[name]:
            value, origin = values[name], ""
        else:
            value, origin = in_file.get(name, ""), f" (set in {params_file})"
        problem = _model_problem(spec, value, origin) if name == "model_file_path" else _engine_problem(value, origin)
        if problem:
            problems.append(problem)
    return problems


def _model_problem(spec: LaunchSpec, value: str, origin: str) -> str | None:
    if not value:
        try:
            default_model_path(spec.modality)
        except ConfigError as error:
            return f"model_file_path is empty (the built-in {spec.modality} model) and there is {error}"
        return None
    path = Path(value)
    if path.is_dir():
        return (f"model_file_path {value}{origin} is a folder, not a model file; export it "
                "(python -m madm_train export --student FOLDER --out DIR) and give the .onnx")
    if not path.is_file():
        return (f"model_file_path {value}{origin} does not exist; give an exported .onnx (python -m madm_train export) "
                "or leave model_file_path empty for the built-in model")
    return None


def _engine_problem(value: str, origin: str) -> str | None:
    if not value:
        return None
    path = Path(value)
    if path.is_dir():
        return (f"engine_file_path {value}{origin} is a folder, not an engine file; give the .engine file "
                "or leave engine_file_path empty to run the ONNX model")
    if not path.is_file():
        return (f"engine_file_path {value}{origin} does not exist; build it (python -m madm_train export --tensorrt fp16) "
                "or leave engine_file_path empty to run the ONNX model")
    return None


def _file_parameters(path: Path, spec: LaunchSpec, namespace: str) -> dict[str, str]:
    """The checked parameters a ROS params file gives the node (its node keys matched as rcl does, ``/**`` included)."""
    import yaml

    try:
        document = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        reason = " ".join(str(error).split())  # YAML errors span lines
        raise ConfigError(f"params_file {path} cannot be read as YAML ({reason}); fix it or start again from a copy of "
                          f"config/{spec.config}") from None
    node = f"/{namespace}/{spec.node_name}" if namespace else f"/{spec.node_name}"
    found: dict[str, str] = {}
    for key, section in (document.items() if isinstance(document, dict) else ()):
        parameters = section.get("ros__parameters") if isinstance(section, dict) else None
        if isinstance(parameters, dict) and _node_key_matches(str(key), node):
            found.update({name: _text(parameters[name]) for name in CHECKED_PARAMETERS if name in parameters})
    return found


def _node_key_matches(key: str, node: str) -> bool:
    """Whether a params file's node key (``/**/name``, ``ns/name``, ``/*/name``) selects the node named ``node``."""
    pattern = re.escape(key if key.startswith("/") else f"/{key}")
    pattern = pattern.replace(r"/\*\*", r"(?:/[^/]+)*").replace(r"\*", r"[^/]*")
    return re.fullmatch(pattern, node) is not None


def _parameter_overrides(ros_args: Sequence[str]) -> dict[str, str]:
    """The checked parameters set by ``-p name:=value`` (or ``--param``) in ROS arguments; the last one wins, as in rcl."""
    import yaml

    found: dict[str, str] = {}
    for flag, item in itertools.pairwise(ros_args):
        name, sep, text = item.partition(":=")
        if flag in ("-p", "--param") and sep and name in CHECKED_PARAMETERS:
            try:
                found[name] = _text(yaml.safe_load(text))  # rcl reads -p values as YAML
            except yaml.YAMLError:
                found[name] = text
    return found


def _text(value: object) -> str:
    return "" if value is None else str(value)
