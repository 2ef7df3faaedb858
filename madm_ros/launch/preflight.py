"""Check what a launch's node would read, before any node starts: ``--dry-run`` and every real start.

A node given a missing model does not exit: it logs the error and stays unconfigured (a lifecycle
manager could still configure it later), which from a command line looks like a node that hangs;
a misspelt parameter it does not even notice (ROS drops parameters a node does not declare). So
the runner rehearses the node's configure beforehand and refuses with one line per problem, each
naming the argument and the fix: the files named exist; the parameters, gathered as rcl gathers
them, are all known and valid (the check ``bag_eval --config`` makes); and the model they name
loads and suits the launch's modality, through the node's own :func:`madm_ros.segmenter.load_segmenter`.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from madm_ros.default_models import default_model_path
from madm_ros.errors import ConfigError, MadmError
from madm_ros.launch.specs import launch_values, params_file_path
from madm_ros.launch.table import LaunchSpec

__all__ = ["launch_problems"]

CHECKED_PARAMETERS = ("model_file_path", "engine_file_path")
"""The node parameters naming files; the launch arguments that override them have the same names."""


def launch_problems(launch_name: str, arguments: dict[str, str] | None = None, ros_args: Sequence[str] = ()) -> list[str]:
    """Every problem with what the launch's node would read, one line each (empty: none found).

    Checked: the params file exists; ``model_file_path`` and, when set, ``engine_file_path`` name
    existing files; an empty ``model_file_path`` (the built-in model of the launch's modality) is
    found by :func:`madm_ros.default_models.default_model_path`. Each value is the one the node will
    get, taken as rcl takes it: a ``-p name:=value`` in ``ros_args`` (the ROS arguments after
    ``--ros-args``) over the launch argument over a ``--params-file`` in ``ros_args`` over the
    params file. When the files are there, the whole parameter set is checked and the model loaded
    (:func:`_configure_problems`).

    Raises:
        ConfigError: the launch or its arguments themselves are wrong (as :func:`madm_ros.launch.node_specs`).
    """
    spec, values = launch_values(launch_name, arguments or {})
    namespace = values["namespace"].strip("/")
    problems: list[str] = []
    in_files: dict[str, Any] = {}
    params_file: Path | None = None
    try:
        params_file = params_file_path(spec, values)
        in_files = _file_parameters(params_file, spec, namespace)
        for extra in _extra_params_files(ros_args):
            in_files.update(_file_parameters(extra, spec, namespace))
    except ConfigError as error:
        problems.append(str(error))
    launched, overrides = spec.parameters(values), _parameter_overrides(ros_args, spec.node_name)
    for name in CHECKED_PARAMETERS:
        if name in overrides:
            value, origin = _text(overrides[name]), " (from --ros-args -p)"
        elif name in launched:
            value, origin = launched[name], ""
        else:
            value, origin = _text(in_files.get(name)), f" (set in {params_file})"
        problem = _model_problem(spec, value, origin) if name == "model_file_path" else _engine_problem(value, origin)
        if problem:
            problems.append(problem)
    if not problems:
        problems += _configure_problems(spec, {**in_files, **launched, **overrides}, params_file)
    return problems


def _configure_problems(spec: LaunchSpec, values: dict[str, Any], params_file: Path | None) -> list[str]:
    """What the node's configure would refuse: an unknown or invalid parameter, a model that does not load or suit.

    The same functions as the node's (``params_from_values``, ``load_segmenter``), so the rehearsal
    and the node cannot disagree; a model is loaded once more for this (a fraction of a second).
    """
    from madm_ros.node_params import ROS_ONLY_PARAMETERS, params_class, params_from_values
    from madm_ros.segmenter import load_segmenter

    values = {name: value for name, value in values.items() if name not in ROS_ONLY_PARAMETERS}
    try:
        params = params_from_values(params_class(spec.modality), values, f"parameters of {spec.node_name} "
                                    f"(params file {params_file}, launch arguments, --ros-args -p)")
    except ConfigError as error:
        return [str(error)]
    try:
        load_segmenter(params, getattr(params, "modality", spec.modality))  # an image node serves its parameter's
    except MadmError as error:
        return [f"model_file_path {params.model_file_path or '(built-in)'}: {error}"]
    return []


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


def _file_parameters(path: Path, spec: LaunchSpec, namespace: str) -> dict[str, Any]:
    """The parameters a ROS params file gives the node (its node keys matched as rcl does, ``/**`` included)."""
    import yaml

    try:
        document = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        reason = " ".join(str(error).split())  # YAML errors span lines
        raise ConfigError(f"params_file {path} cannot be read as YAML ({reason}); fix it or start again from a copy of "
                          f"config/{spec.config}") from None
    node = f"/{namespace}/{spec.node_name}" if namespace else f"/{spec.node_name}"
    found: dict[str, Any] = {}
    for key, section in (document.items() if isinstance(document, dict) else ()):
        parameters = section.get("ros__parameters") if isinstance(section, dict) else None
        if isinstance(parameters, dict) and _node_key_matches(str(key), node):
            found.update(parameters)
    return found


def _node_key_matches(key: str, node: str) -> bool:
    """Whether a params file's node key (``/**/name``, ``ns/name``, ``/*/name``) selects the node named ``node``."""
    pattern = re.escape(key if key.startswith("/") else f"/{key}")
    pattern = pattern.replace(r"/\*\*", r"(?:/[^/]+)*").replace(r"\*", r"[^/]*")
    return re.fullmatch(pattern, node) is not None


def _extra_params_files(ros_args: Sequence[str]) -> list[Path]:
    """The files of ``--params-file FILE`` in ROS arguments, in order (a missing one is a ``ConfigError``)."""
    files = [Path(item) for flag, item in itertools.pairwise(ros_args) if flag == "--params-file"]
    for path in files:
        if not path.is_file():
            raise ConfigError(f"--params-file {path} in the ROS arguments does not exist; give an existing YAML file")
    return files


def _parameter_overrides(ros_args: Sequence[str], node_name: str) -> dict[str, Any]:
    """The parameters ``-p [node:]name:=value`` (or ``--param``) in ROS arguments set for the node; the last wins, as in rcl."""
    import yaml

    found: dict[str, Any] = {}
    for flag, item in itertools.pairwise(ros_args):
        target, sep, text = item.partition(":=")
        node, _, name = target.rpartition(":")
        if flag in ("-p", "--param") and sep and node in ("", node_name):
            try:
                found[name] = yaml.safe_load(text)  # rcl reads -p values as YAML
            except yaml.YAMLError:
                found[name] = text
    return found


def _text(value: object) -> str:
    return "" if value is None else str(value)
