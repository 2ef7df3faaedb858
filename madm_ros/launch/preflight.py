"""Check what a launch's node would read, before any node starts: ``--dry-run`` and every real start.

A node given a missing model does not exit: it logs the error and stays unconfigured (a lifecycle
manager could still configure it later), which from a command line looks like a node that hangs;
a misspelt parameter it does not even notice (ROS drops parameters a node does not declare). So
the runner rehearses the node's configure beforehand and refuses with one line per problem, each
naming the argument and the fix: the files named exist; the parameters, gathered as rcl gathers
them, are valid, and those given to this node by name are all its own (the check ``bag_eval
--config`` makes); and the model they name loads and suits the launch, through the node class's
own ``load_model``.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from madm_ros.default_models import default_model_path
from madm_ros.errors import ConfigError, MadmError, close_name
from madm_ros.launch.specs import launch_values, params_file_path
from madm_ros.launch.table import LaunchSpec

__all__ = ["launch_problems"]

CHECKED_PARAMETERS = ("model_file_path", "engine_file_path")
"""The node parameters naming files; the launch arguments that override them have the same names."""


@dataclass(frozen=True)
class _Setting:
    """One parameter value as the node would get it, and where it comes from."""

    value: Any
    origin: str  # for messages: " (set in FILE)", " (from --ros-args -p)", "" for a launch argument
    own: bool  # given to this node by name (its own file section, a launch argument, -p); else a wildcard section


def launch_problems(launch_name: str, arguments: dict[str, str] | None = None, ros_args: Sequence[str] = ()) -> list[str]:
    """Every problem with what the launch's node would read, one line each (empty: none found).

    Checked: the params file exists and has a section for the node; ``model_file_path`` and, when
    set, ``engine_file_path`` name existing files; an empty ``model_file_path`` (the built-in model
    of the launch's modality) is found by :func:`madm_ros.default_models.default_model_path`. Each
    value is the one the node will get, gathered as rcl gathers it: in command-line order, the
    params file, the launch arguments, then ``ros_args`` (the ROS arguments after ``--ros-args``:
    ``--params-file FILE`` and ``-p [node:]name:=value``), a later one winning. When the files are
    there, the whole parameter set is checked and the model loaded (:func:`_configure_problems`).

    Raises:
        ConfigError: the launch or its arguments themselves are wrong (as :func:`madm_ros.launch.node_specs`).
    """
    spec, values = launch_values(launch_name, arguments or {})
    namespace = values["namespace"].strip("/")
    node = f"/{namespace}/{spec.node_name}" if namespace else f"/{spec.node_name}"
    problems: list[str] = []
    settings: dict[str, _Setting] = {}
    try:
        settings.update(_file_settings(params_file_path(spec, values), spec, node, own_file=True))
    except ConfigError as error:
        problems.append(str(error))
    settings.update({name: _Setting(value, "", True) for name, value in spec.parameters(values).items()})
    try:
        settings.update(_ros_arg_settings(ros_args, spec, node))
    except ConfigError as error:
        problems.append(str(error))
    for name in CHECKED_PARAMETERS:
        setting = settings.get(name, _Setting("", "", True))
        value = _text(setting.value)
        problem = (_model_problem(spec, value, setting.origin) if name == "model_file_path"
                   else _engine_problem(value, setting.origin))
        if problem:
            problems.append(problem)
    if not problems:
        problems += _configure_problems(spec, node, settings)
    return problems


def _configure_problems(spec: LaunchSpec, node: str, settings: dict[str, _Setting]) -> list[str]:
    """What the node's configure would refuse: an unknown or invalid parameter, a model that does not load or suit.

    The node's own checks (``params_from_values``, the node class's ``load_model``), so the
    rehearsal and the node cannot disagree. An unknown name given to this node by name is refused
    (the node would drop it); one from a wildcard (``/**``) section is left to the node's warning,
    since shared files hold other nodes' parameters. The model is loaded once more for this, on
    ONNX Runtime's CPU provider, which builds no GPU engine (a fraction of a second).
    """
    from madm_ros.launch.specs import NodeFactory
    from madm_ros.node_params import ROS_ONLY_PARAMETERS, params_from_values

    node_class = NodeFactory(spec.factory).resolve()
    known = {field.name for field in dataclasses.fields(node_class.PARAMS)}
    problems = []
    for name, setting in settings.items():
        if setting.own and name not in known and name not in ROS_ONLY_PARAMETERS:
            close = close_name(name, known)
            problems.append(f"unknown parameter {name}{setting.origin}" + (f" (did you mean {close}?)" if close else "")
                            + f": {node} has no such parameter and would ignore it")
    values = {name: setting.value for name, setting in settings.items() if name in known}
    try:
        params = params_from_values(node_class.PARAMS, values, f"parameters of {node}")
    except ConfigError as error:
        return [*problems, str(error)]
    if problems:
        return problems
    rehearsal = dataclasses.replace(params, backend="onnxruntime", engine_file_path="")
    try:
        node_class.load_model(rehearsal, providers="cpu")
    except MadmError as error:
        return [f"model_file_path {params.model_file_path or '(built-in)'}: {error}"]
    except Exception as error:  # the node would catch it too, and fail its configure
        return [f"model_file_path {params.model_file_path or '(built-in)'}: unexpected {type(error).__name__}: {error}"]
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


def _file_settings(path: Path, spec: LaunchSpec, node: str, *, own_file: bool = False) -> dict[str, _Setting]:
    """The parameters a ROS params file gives the node ``node`` (``/ns/name``), its node keys matched as rcl does.

    ``own_file``: the launch's params file, which must hold a section for the node (a file keyed
    for another node name would otherwise be ignored without a word).
    """
    import yaml

    what = "params_file" if own_file else "--params-file"
    try:
        document = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        reason = " ".join(str(error).split())  # YAML errors span lines
        raise ConfigError(f"{what} {path} cannot be read as YAML ({reason}); fix it or start again from a copy of "
                          f"config/{spec.config}") from None
    found: dict[str, _Setting] = {}
    sections = []
    for key, section in (document.items() if isinstance(document, dict) else ()):
        parameters = section.get("ros__parameters") if isinstance(section, dict) else None
        if isinstance(parameters, dict):
            sections.append(str(key))
            if _node_key_matches(str(key), node):
                own = "*" not in str(key).rstrip("/").rsplit("/", 1)[-1]  # the key ends in the node's name
                found.update({name: _Setting(value, f" (set in {path})", own) for name, value in parameters.items()})
    if own_file and sections and not found:
        raise ConfigError(f"params_file {path} has no section for the node {node} (its sections: {', '.join(sections)}); "
                          f"key its parameters /**/{spec.node_name}: ros__parameters:")
    return found


def _node_key_matches(key: str, node: str) -> bool:
    """Whether a params file's node key (``/**/name``, ``ns/name``, ``/*/name``) selects the node named ``node``."""
    pattern = re.escape(key if key.startswith("/") else f"/{key}")
    pattern = pattern.replace(r"/\*\*", r"(?:/[^/]+)*").replace(r"\*", r"[^/]*")
    return re.fullmatch(pattern, node) is not None


def _ros_arg_settings(ros_args: Sequence[str], spec: LaunchSpec, node: str) -> dict[str, _Setting]:
    """What ``--params-file FILE`` and ``-p [node:]name:=value`` (or ``--param``) in ROS arguments give the node, in order."""
    import yaml

    found: dict[str, _Setting] = {}
    items = list(ros_args)
    for index, flag in enumerate(items):
        if flag not in ("--params-file", "-p", "--param"):
            continue
        if index + 1 == len(items):
            raise ConfigError(f"{flag} ends the ROS arguments without its value")
        item = items[index + 1]
        if flag == "--params-file":
            if not Path(item).is_file():
                raise ConfigError(f"--params-file {item} in the ROS arguments does not exist; give an existing YAML file")
            found.update(_file_settings(Path(item), spec, node))
            continue
        target, sep, text = item.partition(":=")
        prefix, _, name = target.rpartition(":")
        if sep and (not prefix or _node_key_matches(prefix, node)):  # rcl: a node prefix selects as a file key does
            try:
                value = yaml.safe_load(text)  # rcl reads -p values as YAML
            except yaml.YAMLError:
                value = text
            found[name] = _Setting(value, " (from --ros-args -p)", True)
    return found


def _text(value: object) -> str:
    return "" if value is None else str(value)
