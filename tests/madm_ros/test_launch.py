"""Launch files, parameter files, the RViz config and ``python -m madm_ros.launch`` agree with each other and with the nodes."""

from __future__ import annotations

import ast
import dataclasses
import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import time
import types
from pathlib import Path
from typing import Any

import pytest
import yaml

from madm_ros.errors import ConfigError
from madm_ros.launch import LAUNCHES, RVIZ_CONFIG, launch_problems, node_specs
from madm_ros.node_params import EventParams, ImageParams

REPO = Path(__file__).resolve().parents[2]
LAUNCH_FILES = sorted((REPO / "launch").glob("*.launch.py"))
CONFIG_FILES = sorted((REPO / "config").glob("*.yaml"))
NODE_PARAMETER_FILES = {spec.config: spec for spec in LAUNCHES.values()}


def console_scripts() -> dict[str, str]:
    block = re.search(r'"console_scripts": \[(.*?)\]', (REPO / "setup.py").read_text(), re.S)
    assert block
    return dict(entry.split("=", 1) for entry in re.findall(r'"([^"]+)"', block.group(1)))


def node_params_class(spec: Any) -> type:
    """The parameter dataclass of a launch's node (ROS-free)."""
    return EventParams if spec.node_name == "event_segmentation" else ImageParams


def run_launch(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "madm_ros.launch", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout)


# ---------------------------------------------------------------------------------------------- launch files
def test_there_is_one_launch_file_per_launch():
    assert sorted(p.name for p in LAUNCH_FILES) == sorted(f"{name}.launch.py" for name in LAUNCHES)


@pytest.mark.parametrize("path", LAUNCH_FILES, ids=lambda p: p.name)
def test_launch_file_is_the_runners_launch_of_its_own_name(path):
    name = path.name.removesuffix(".launch.py")
    tree = ast.parse(path.read_text(), str(path))
    imports = [(getattr(s, "module", None), [a.name for a in s.names]) for s in tree.body
               if isinstance(s, (ast.Import, ast.ImportFrom))]
    assert imports == [("madm_ros.launch", ["ros2_launch_description"])]
    (function,) = [s for s in tree.body if isinstance(s, ast.FunctionDef)]
    assert function.name == "generate_launch_description"
    assert not function.args.args
    assert isinstance(function.body[-1], ast.Return)
    assert ast.unparse(function.body[-1].value) == f"ros2_launch_description({name!r})"
    usage = [line.strip() for line in (ast.get_docstring(tree) or "").splitlines() if line.strip().startswith("ros2 launch")]
    assert usage and all(line.startswith(f"ros2 launch madm_ros {path.name}") for line in usage)
    assert {word for line in usage for word in re.findall(r"(\w+):=", line)} <= set(LAUNCHES[name].defaults())


@pytest.mark.parametrize("spec", LAUNCHES.values(), ids=lambda s: s.name)
def test_launch_names_real_executables_and_parameter_files(spec):
    scripts = console_scripts()
    assert spec.executable in scripts
    assert scripts[spec.executable] == spec.factory.split(":")[0] + ":main"
    assert (REPO / "config" / spec.config).is_file()
    assert (REPO / "config" / RVIZ_CONFIG).is_file()


def test_importing_the_runner_loads_no_ros():
    code = ("import sys, madm_ros.launch\n"
            "print(sorted(m for m in ('rclpy', 'launch', 'launch_ros', 'ament_index_python') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


class _Recorded:
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args, self.kwargs = args, kwargs


class _LaunchConfiguration:
    def __init__(self, name: str) -> None:
        self.name = name

    def perform(self, context: Any) -> str:
        return context.launch_configurations[self.name]


class _ParameterValue:
    def __init__(self, value: Any, value_type: type | None = None) -> None:
        self.value, self.value_type = value, value_type


def fake_launch_api(monkeypatch: pytest.MonkeyPatch, share: Path) -> None:
    """Just enough of launch, launch_ros and ament_index_python (not on PyPI) to run a launch file's functions."""
    modules = {
        "launch": {"LaunchDescription": lambda entities: types.SimpleNamespace(entities=list(entities))},
        "launch.actions": {"DeclareLaunchArgument": _Recorded, "OpaqueFunction": _Recorded},
        "launch.substitutions": {"LaunchConfiguration": _LaunchConfiguration},
        "launch_ros": {},
        "launch_ros.actions": {"Node": _Recorded},
        "launch_ros.parameter_descriptions": {"ParameterValue": _ParameterValue},
        "ament_index_python": {},
        "ament_index_python.packages": {"get_package_share_directory": lambda package: str(share)},
    }
    for name, attributes in modules.items():
        module = types.ModuleType(name)
        module.__dict__.update(attributes)
        monkeypatch.setitem(sys.modules, name, module)


def launch_file_description(path: Path) -> types.SimpleNamespace:
    """What the launch file's ``generate_launch_description()`` returns (the fake launch API must be in place)."""
    spec = importlib.util.spec_from_file_location(path.stem.replace(".", "_"), path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.generate_launch_description()


def launch_file_nodes(path: Path, arguments: dict[str, str]) -> list[_Recorded]:
    description = launch_file_description(path)
    declared = {e.args[0]: e.kwargs["default_value"] for e in description.entities if "default_value" in e.kwargs}
    unknown = set(arguments) - set(declared)
    assert not unknown, unknown
    context = types.SimpleNamespace(launch_configurations={**declared, **arguments})
    (opaque,) = [e for e in description.entities if "function" in e.kwargs]
    return opaque.kwargs["function"](context)


def runner_view(cli_args: list[str]) -> tuple[str, dict[str, Any], dict[str, str]]:
    """(params file, -p overrides parsed as rcl parses them, -r remaps) of a NodeSpec's cli_args."""
    assert cli_args[:2] == ["--ros-args", "--params-file"]
    overrides, remaps = {}, {}
    for flag, value in zip(cli_args[3::2], cli_args[4::2]):
        key, _, text = value.partition(":=")
        if flag == "-p":
            overrides[key] = yaml.safe_load(text)
        else:
            assert flag == "-r"
            remaps[key] = text
    return cli_args[2], overrides, remaps


@pytest.mark.parametrize("path", LAUNCH_FILES, ids=lambda p: p.name)
def test_launch_files_declare_the_runners_arguments(monkeypatch, tmp_path, path):
    fake_launch_api(monkeypatch, tmp_path)
    spec = LAUNCHES[path.name.removesuffix(".launch.py")]
    declared = [e for e in launch_file_description(path).entities if "default_value" in e.kwargs]
    assert [(e.args[0], e.kwargs["description"]) for e in declared] == [(a.name, a.description) for a in spec.arguments]
    defaults = {e.args[0]: e.kwargs["default_value"] for e in declared}
    assert defaults == {**spec.defaults(), "params_file": str(tmp_path / "config" / spec.config)}


@pytest.mark.parametrize(("launch", "arguments"), [
    ("event_seg", {}),
    ("event_seg", {"events_topic": "/event_camera/events", "message_type": "dvs", "namespace": "front",
                   "use_sim_time": "true", "model_file_path": "/opt/m/123", "rviz": "true"}),
    ("depth_seg", {"image_topic": "/cam/depth", "camera_info_topic": "/cam/info", "backend": "onnxruntime"}),
    ("thermal_seg", {"engine_file_path": "/tmp/e.engine", "params_file": str(REPO / "config" / "depth.yaml")}),
])
def test_launch_files_start_the_same_node_as_the_runner(monkeypatch, launch, arguments):
    fake_launch_api(monkeypatch, REPO)
    nodes = launch_file_nodes(REPO / "launch" / f"{launch}.launch.py", arguments)
    (spec,) = node_specs(launch, arguments)
    ours = nodes[0].kwargs
    assert (ours["package"], ours["executable"], ours["name"]) == ("madm_ros", spec.executable, spec.node_name)
    assert ours["namespace"] == spec.namespace
    params_file, overrides, remaps = runner_view(spec.cli_args)
    assert Path(ours["parameters"][0]).resolve() == Path(params_file)
    launched = {k: v.value if isinstance(v, _ParameterValue) else v for k, v in ours["parameters"][1].items()}
    assert all(v.value_type is str for v in ours["parameters"][1].values() if isinstance(v, _ParameterValue))
    assert launched == {k: str(v) if k != "use_sim_time" else v for k, v in overrides.items()}
    assert dict(ours["remappings"]) == remaps
    rviz = [n.kwargs for n in nodes[1:]]
    if arguments.get("rviz") == "true":
        assert [n["executable"] for n in rviz] == ["rviz2"]
        assert Path(rviz[0]["arguments"][1]).resolve() == REPO / "config" / "madm.rviz"
    else:
        assert rviz == []


# ---------------------------------------------------------------------------------------------- parameter files
def test_every_node_parameter_file_belongs_to_a_launch():
    assert sorted(p.name for p in CONFIG_FILES) == sorted(NODE_PARAMETER_FILES)


@pytest.mark.parametrize("path", CONFIG_FILES, ids=lambda p: p.name)
def test_parameter_file_lists_every_parameter_of_its_node_with_its_default(path):
    spec = NODE_PARAMETER_FILES[path.name]
    params_class = node_params_class(spec)
    document = yaml.safe_load(path.read_text())
    assert list(document) == [f"/**/{spec.node_name}"]
    (section,) = document.values()
    assert list(section) == ["ros__parameters"]
    values = section["ros__parameters"]
    fields = {f.name: f for f in dataclasses.fields(params_class)}
    assert set(values) - {"use_sim_time"} <= set(fields)
    missing = {name for name in fields if name not in values}
    assert missing <= {"crop"}, f"{path.name} lacks {sorted(missing)}"  # an empty list cannot be written for rcl
    assert "# crop:" in path.read_text() or "crop" not in fields
    params = params_class.from_dict(values)
    expected = params_class(**dict(spec.fixed_parameters))
    assert params == expected, "the file's values are the dataclass defaults (and the launch's fixed parameters)"
    for name, value in values.items():  # written with the field's own type (floats as floats)
        assert type(value) is type(fields[name].default), name


def test_event_defaults_are_the_edge_frames_the_default_event_model_was_trained_on():
    pytest.importorskip("madm_ros.synthetic.generate")
    from madm_ros.node_params import edge_fields
    from madm_ros.synthetic.generate import SynthConfig

    values = yaml.safe_load((REPO / "config" / "events.yaml").read_text())["/**/event_segmentation"]["ros__parameters"]
    ours = edge_fields(EventParams.from_dict(values))
    trained = SynthConfig().edge_frame_config()
    assert ours["mode"] == trained.mode
    assert ours["window_us"] == trained.window_us
    assert ours["polarity"] == trained.polarity
    assert ours["contribution"] == trained.contribution
    assert ours["neutral"] == trained.neutral
    assert ours["crop"] == trained.crop


@pytest.mark.ros
def test_parameter_files_reach_nodes_in_any_namespace_and_launch_overrides_win(ros_domain, tmp_path):
    """rcl matches a plain ``name:`` key only at the root namespace; ``/**/name`` and -p precedence, checked for real."""
    rclpy = pytest.importorskip("rclpy")
    from rclpy.node import Node

    context = rclpy.Context()
    rclpy.init(context=context)
    try:
        for launch, namespace in (("depth_seg", "front"), ("thermal_seg", ""), ("event_seg", "a/b")):
            spec = LAUNCHES[launch]
            params = tmp_path / f"{launch}.yaml"
            params.write_text(yaml.safe_dump({f"/**/{spec.node_name}": {"ros__parameters": {
                "overlay_alpha": 0.25, "backend": "tensorrt", "modality": "depth"}}}))
            (node_spec,) = node_specs(launch, {"namespace": namespace, "params_file": str(params), "backend": "onnxruntime"})
            node = Node(node_spec.node_name, **node_spec.node_kwargs(context))  # a plain node: no model needed
            try:
                for name, default in (("overlay_alpha", 0.5), ("backend", "auto"), ("modality", "x")):
                    node.declare_parameter(name, default)  # use_sim_time: every rclpy node declares it
                got = {name: node.get_parameter(name).value for name in ("overlay_alpha", "backend", "modality", "use_sim_time")}
                assert got["overlay_alpha"] == 0.25
                assert got["backend"] == "onnxruntime"
                assert got["modality"] == dict(spec.fixed_parameters).get("modality", "depth")
                assert got["use_sim_time"] is False
                assert node.get_fully_qualified_name() == (f"/{namespace}" if namespace else "") + f"/{spec.node_name}"
            finally:
                node.destroy_node()
    finally:
        rclpy.shutdown(context=context)


# ---------------------------------------------------------------------------------------------- RViz
@pytest.mark.ros
def test_rviz_config_shows_topics_the_nodes_publish():
    pytest.importorskip("rclpy")
    from madm_ros.nodes.base import OUTPUT_TOPICS
    from madm_ros.nodes.event_segmentation import EventSegmentationNode

    config = yaml.safe_load((REPO / "config" / "madm.rviz").read_text())
    assert {"Panels", "Visualization Manager", "Window Geometry"} <= set(config)
    manager = config["Visualization Manager"]
    assert manager["Global Options"]["Fixed Frame"]
    displays = [d for d in manager["Displays"] if d["Class"] == "rviz_default_plugins/Image"]
    published = set()
    for spec in LAUNCHES.values():
        extra = (EventSegmentationNode.INPUT_FRAME_TOPIC,) if spec.node_name == "event_segmentation" else ()
        published |= {f"/{spec.node_name}/{topic}" for topic in (*OUTPUT_TOPICS, *extra)}
    topics = [d["Topic"]["Value"] for d in displays]
    assert set(topics) <= published, set(topics) - published
    assert {"/event_segmentation/colored_segmentation_mask", "/event_segmentation/segmentation_overlay",
            "/event_segmentation/edge_frame", "/depth_segmentation/segmentation_overlay",
            "/depth_segmentation/colored_segmentation_mask"} <= set(topics)
    for display in displays:
        assert {"Value", "Depth", "Reliability Policy", "History Policy", "Durability Policy"} <= set(display["Topic"])
        assert display["Topic"]["Reliability Policy"] == "Reliable"  # the nodes' default output_qos (DEFAULT)


# ---------------------------------------------------------------------------------------------- command line
def test_dry_run_prints_each_launchs_node_and_ros_arguments(tiny_onnx_models):
    model = tiny_onnx_models["depth"]
    result = run_launch("depth_seg", f"model_file_path:={model}", "image_topic:=/cam/depth", "namespace:=front",
                        "use_sim_time:=True", "--dry-run")
    assert result.returncode == 0, result.stderr
    plan = json.loads(result.stdout)
    (node,) = plan["nodes"]
    assert (node["node_name"], node["namespace"], node["executable"]) == ("depth_segmentation", "front", "image_segmentation")
    assert node["factory"] == "madm_ros.nodes.image_segmentation:ImageSegmentationNode"
    assert node["cli_args"] == [
        "--ros-args", "--params-file", str(REPO / "config" / "depth.yaml"), "-p", "use_sim_time:=true",
        "-p", "modality:=depth", "-p", f"model_file_path:={model}", "-r", "image:=/cam/depth",
        "-r", "camera_info:=camera_info"]
    assert plan["rviz"] is None

    result = run_launch("event_seg", "events_topic:=/event_camera/events", "message_type:=packed", "backend:=onnxruntime",
                        "--params-file", str(REPO / "config" / "events.yaml"), "rviz:=true", "--dry-run",
                        "--ros-args", "-p", "overlay_alpha:=0.3")
    assert result.returncode == 0, result.stderr
    plan = json.loads(result.stdout)
    assert plan["nodes"][0]["cli_args"] == [
        "--ros-args", "--params-file", str(REPO / "config" / "events.yaml"), "-p", "use_sim_time:=false",
        "-p", "backend:=onnxruntime", "-p", "message_type:=packed", "-r", "events:=/event_camera/events",
        "-r", "camera_info:=camera_info", "-p", "overlay_alpha:=0.3"]
    assert plan["rviz"][:3] == ["rviz2", "-d", str(REPO / "config" / "madm.rviz")]

    result = run_launch("thermal_seg", "--dry-run")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["nodes"][0]["cli_args"] == [
        "--ros-args", "--params-file", str(REPO / "config" / "thermal.yaml"), "-p", "use_sim_time:=false",
        "-p", "modality:=thermal", "-r", "image:=image", "-r", "camera_info:=camera_info"]


def test_string_parameters_stay_strings_for_rcl():
    (spec,) = node_specs("depth_seg", {"model_file_path": "123", "engine_file_path": "a: b"})
    _, overrides, _ = runner_view(spec.cli_args)
    assert overrides["model_file_path"] == "123"
    assert overrides["engine_file_path"] == "a: b"


@pytest.mark.parametrize(("args", "message"), [
    (("lidar_seg",), "unknown launch 'lidar_seg'; choose from event_seg, depth_seg, thermal_seg"),
    (("depth_seg", "events_topic:=/x"), "launch depth_seg has no argument events_topic"),
    (("event_seg", "backend:=cuda"), "backend must be one of auto, tensorrt, onnxruntime"),
    (("event_seg", "use_sim_time:=maybe"), "use_sim_time must be true or false"),
    (("depth_seg", "image_topic:="), "image_topic must name a topic"),
    (("depth_seg", "image_topic"), "launch arguments are written name:=value"),
    (("depth_seg", "--bogus"), "unknown option --bogus"),
    ((), "usage: python -m madm_ros.launch"),
])
def test_bad_command_lines_exit_2_with_a_message(args, message):
    result = run_launch(*args, "--dry-run") if args else run_launch()
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


MISSING_FILES = {
    "model": (("model_file_path:=missing.onnx",),
              "madm_ros.launch: model_file_path missing.onnx does not exist; give an exported .onnx "
              "(python -m madm_train export) or leave model_file_path empty for the built-in model"),
    "model folder": (("model_file_path:=models",),
                     "madm_ros.launch: model_file_path models is a folder, not a model file; export it "
                     "(python -m madm_train export --student FOLDER --out DIR) and give the .onnx"),
    "engine": (("engine_file_path:=/no/such.engine",),
               "madm_ros.launch: engine_file_path /no/such.engine does not exist; build it "
               "(python -m madm_train export --tensorrt fp16) or leave engine_file_path empty to run the ONNX model"),
    "params": (("params_file:=/no/such.yaml",),
               "madm_ros.launch: params_file /no/such.yaml does not exist; give an existing YAML file (a copy of "
               "config/depth.yaml) or leave params_file empty for the package's config/depth.yaml"),
    "model by -p": (("--ros-args", "-p", "model_file_path:=missing.onnx"),
                    "madm_ros.launch: model_file_path missing.onnx (from --ros-args -p) does not exist;"),
}


@pytest.mark.parametrize("dry_run", [True, False], ids=["dry-run", "real-start"])
@pytest.mark.parametrize("case", MISSING_FILES, ids=str)
def test_a_missing_file_exits_2_with_one_line_naming_the_argument_and_the_fix(ros_domain, dry_run, case):
    """The real start checks first as well: without the check it would spin a node that never configures (timeout)."""
    args, message = MISSING_FILES[case]
    at = args.index("--ros-args") if "--ros-args" in args else len(args)
    result = run_launch("depth_seg", *args[:at], *(["--dry-run"] if dry_run else []), *args[at:], timeout=30)
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines()[0].startswith(message), result.stderr
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert result.stdout == ""


def test_every_missing_file_is_reported_at_once():
    result = run_launch("event_seg", "params_file:=/no/such.yaml", "model_file_path:=missing.onnx",
                        "engine_file_path:=missing.engine", "--dry-run")
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert [line.split()[1] for line in lines] == ["params_file", "model_file_path", "engine_file_path"], lines


def test_existing_model_and_engine_pass_the_check(tmp_path, tiny_onnx_models):
    model, engine = tiny_onnx_models["thermal"], tmp_path / "student.engine"
    engine.write_bytes(b"")  # without TensorRT (as here) backend auto runs the ONNX model, as the node would
    result = run_launch("thermal_seg", f"model_file_path:={model}", f"engine_file_path:={engine}", "--dry-run")
    assert result.returncode == 0, result.stderr
    cli_args = json.loads(result.stdout)["nodes"][0]["cli_args"]
    assert f"model_file_path:={model}" in cli_args
    assert f"engine_file_path:={engine}" in cli_args
    assert launch_problems("event_seg", {"model_file_path": str(tiny_onnx_models["events"])}) == []
    assert launch_problems("depth_seg") == []  # the built-in model


def _params_file(path: Path, key: str, **parameters: str) -> Path:
    path.write_text(yaml.safe_dump({key: {"ros__parameters": parameters}}))
    return path


def test_files_named_in_the_params_file_are_checked_as_the_node_would_see_them(tmp_path, tiny_onnx_models):
    params = _params_file(tmp_path / "p.yaml", "/**/depth_segmentation", model_file_path="gone.onnx",
                          engine_file_path="gone.engine")
    (model, engine) = launch_problems("depth_seg", {"params_file": str(params)})
    assert model.startswith(f"model_file_path gone.onnx (set in {params}) does not exist;")
    assert engine.startswith(f"engine_file_path gone.engine (set in {params}) does not exist;")
    existing = tiny_onnx_models["depth"]
    # the launch argument wins over the file, and -p after --ros-args over both (rcl's order)
    assert launch_problems("depth_seg", {"params_file": str(params), "model_file_path": str(existing),
                                         "engine_file_path": str(existing)}) == []
    (problem,) = launch_problems("depth_seg", {"model_file_path": str(existing)}, ["-p", "model_file_path:=gone.onnx"])
    assert problem.startswith("model_file_path gone.onnx (from --ros-args -p) does not exist;")
    assert launch_problems("depth_seg", {"params_file": str(params), "engine_file_path": str(existing)},
                           ["-p", f"model_file_path:={existing}"]) == []


@pytest.mark.parametrize(("key", "namespace", "read"), [
    ("/**/depth_segmentation", "front", True),
    ("/**", "", True),
    ("depth_segmentation", "", True),
    ("depth_segmentation", "front", False),  # a plain key is the root namespace's node only
    ("/front/depth_segmentation", "front", True),
    ("/*/depth_segmentation", "a/b", False),
    ("/**/thermal_segmentation", "", False),
])
def test_params_file_keys_select_the_node_as_in_rcl(tmp_path, key, namespace, read):
    params = _params_file(tmp_path / "p.yaml", key, model_file_path="gone.onnx")
    (problem,) = launch_problems("depth_seg", {"params_file": str(params), "namespace": namespace})
    if read:  # the node gets the file's model
        assert problem.startswith("model_file_path gone.onnx (set in"), problem
    else:  # a file keyed for another node would be ignored without a word: refused, naming its sections
        assert f"has no section for the node {f'/{namespace}' if namespace else ''}/depth_segmentation" in problem
        assert f"(its sections: {key})" in problem


def test_the_node_configure_is_rehearsed_unknown_or_bad_parameters_and_unsuitable_models_refused(
        tmp_path, tiny_onnx_models):
    """What the node would refuse (or, for an unknown name, silently drop) is refused before it starts, as bag_eval does."""
    typo = _params_file(tmp_path / "typo.yaml", "/**/event_segmentation", overlay_alphaa=0.3)
    (problem,) = launch_problems("event_seg", {"params_file": str(typo)})
    assert problem == (f"unknown parameter overlay_alphaa (set in {typo}) (did you mean overlay_alpha?): "
                       "/event_segmentation has no such parameter and would ignore it")
    (problem,) = launch_problems("event_seg", {}, ["-p", "overlay_alpha:=5"])
    assert "overlay_alpha must be in [0, 1], got 5.0" in problem
    (problem,) = launch_problems("event_seg", {}, ["--params-file", str(typo)])  # extra files after --ros-args too
    assert f"overlay_alphaa (set in {typo})" in problem
    shared = _params_file(tmp_path / "shared.yaml", "/**", publish_rate_hz=5, use_sim_time=True)
    assert launch_problems("event_seg", {}, ["--params-file", str(shared)]) == []  # other nodes' keys: the node warns
    assert launch_problems("event_seg", {}, ["-p", "event_segmentation:overlay_alpha:=0.2",
                                             "-p", "another_node:overlay_alpha:=7"]) == []  # only this node's count
    assert launch_problems("event_seg", {"namespace": "front"}, ["-p", "event_segmentation:overlay_alpha:=7"]) == []
    (problem,) = launch_problems("event_seg", {"namespace": "front"}, ["-p", "/front/event_segmentation:overlay_alpha:=7"])
    assert "overlay_alpha must be in [0, 1], got 7.0" in problem
    # rcl's order: a later --params-file beats the launch argument, so the node would get the missing model
    gone = _params_file(tmp_path / "gone.yaml", "/**/event_segmentation", model_file_path="gone.onnx")
    (problem,) = launch_problems("event_seg", {"model_file_path": str(tiny_onnx_models["events"])},
                                 ["--params-file", str(gone)])
    assert problem.startswith(f"model_file_path gone.onnx (set in {gone}) does not exist")
    assert launch_problems("event_seg", {}, ["--params-file"]) == ["--params-file ends the ROS arguments without its value"]
    (problem,) = launch_problems("depth_seg", {"model_file_path": str(tiny_onnx_models["events"])})
    assert problem.startswith(f"model_file_path {tiny_onnx_models['events']}: ") and "trained for events input" in problem
    garbage = tmp_path / "text.onnx"
    garbage.write_text("not a model")
    (problem,) = launch_problems("event_seg", {"model_file_path": str(garbage)})
    assert problem.startswith(f"model_file_path {garbage}: cannot load ONNX model")
    result = run_launch("event_seg", f"params_file:={typo}", "--dry-run")
    assert result.returncode == 2 and "overlay_alphaa" in result.stderr and not result.stdout


def test_an_unreadable_params_file_is_one_line(tmp_path):
    params = tmp_path / "bad.yaml"
    params.write_text("/**/depth_segmentation:\n  ros__parameters: [\n")
    (problem,) = launch_problems("depth_seg", {"params_file": str(params)})
    assert problem.startswith(f"params_file {params} cannot be read as YAML (")
    assert problem.endswith("; fix it or start again from a copy of config/depth.yaml")
    assert "\n" not in problem


def test_an_empty_model_file_path_needs_the_built_in_model(monkeypatch):
    import madm_ros.launch.preflight as preflight

    def no_default(modality: str) -> Path:
        raise ConfigError(f"no default model {modality}_student.onnx in /x; set model_file_path")

    monkeypatch.setattr(preflight, "default_model_path", no_default)
    assert launch_problems("thermal_seg") == [
        "model_file_path is empty (the built-in thermal model) and there is no default model thermal_student.onnx "
        "in /x; set model_file_path"]


def test_node_specs_refuses_a_missing_params_file():
    with pytest.raises(ConfigError, match=r"^params_file /no/such\.yaml does not exist; give an existing YAML file"):
        node_specs("depth_seg", {"params_file": "/no/such.yaml"})
    with pytest.raises(ConfigError, match=r"^unknown launch 'lidar_seg'"):
        launch_problems("lidar_seg")


def test_help_lists_every_launch_and_argument_with_its_default():
    result = run_launch("--help")
    assert result.returncode == 0
    for spec in LAUNCHES.values():
        assert f"\n{spec.name}: " in result.stdout
        for argument in spec.arguments:
            assert f"{argument.name}:={argument.default!r}" in result.stdout


def test_message_type_choices_are_the_nodes_message_types():
    from madm_ros.events.stream import MESSAGE_TYPES

    assert LAUNCHES["event_seg"].argument("message_type").choices == tuple(MESSAGE_TYPES)


# ---------------------------------------------------------------------------------------------- end to end
class _Listener:
    """Publishes a 16UC1 image on /cam/depth until a mask arrives on /depth_segmentation/raw_segmentation_mask."""

    def __init__(self) -> None:
        import rclpy
        from rclpy.executors import SingleThreadedExecutor
        from sensor_msgs.msg import Image

        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node("madm_test_depth_camera", context=self.context)
        self.masks: list[Any] = []
        self.images_sent = 0
        self.node.create_subscription(Image, "/depth_segmentation/raw_segmentation_mask", self.masks.append, 5)
        self.publisher = self.node.create_publisher(Image, "/cam/depth", 5)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)

    def image(self) -> Any:
        import numpy as np
        from sensor_msgs.msg import Image

        depth = (np.arange(48 * 80, dtype=np.uint16).reshape(48, 80) % 5000 + 500).astype("<u2")
        message = Image(height=48, width=80, encoding="16UC1", is_bigendian=0, step=160, data=depth.tobytes())
        message.header.frame_id = "depth_camera_optical"
        message.header.stamp.sec, message.header.stamp.nanosec = 1234, 567_000_000
        return message

    def exchange(self, deadline: float) -> Any:
        message = self.image()
        while not self.masks and time.monotonic() < deadline:
            if self.publisher.get_subscription_count() > 0:
                self.publisher.publish(message)
                self.images_sent += 1
            self.executor.spin_once(timeout_sec=0.2)
        return self.masks[0] if self.masks else None

    def close(self) -> None:
        import rclpy

        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.shutdown(context=self.context)


@pytest.mark.ros
@pytest.mark.slow
def test_runner_segments_a_depth_image_and_stops_cleanly_on_sigint(ros_domain, tiny_onnx_models, tmp_path):
    pytest.importorskip("rclpy")
    model = tiny_onnx_models["depth"]
    log = (tmp_path / "launch.log").open("w+")
    process = subprocess.Popen([sys.executable, "-m", "madm_ros.launch", "depth_seg", f"model_file_path:={model}",
                                "image_topic:=/cam/depth"], cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                               env={**os.environ, "PYTHONUNBUFFERED": "1"})

    def output() -> str:
        log.seek(0)
        return log.read()

    listener = _Listener()
    try:
        mask = listener.exchange(time.monotonic() + 90)
        assert mask is not None, (f"no mask within 90 s ({listener.publisher.get_subscription_count()} subscribers to the "
                                  f"image, {listener.images_sent} images sent); node output:\n{output()}")
        assert process.poll() is None, output()
    finally:
        listener.close()
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
        try:
            code = process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise AssertionError(f"the runner did not stop within 10 s of SIGINT:\n{output()}") from None
    assert (mask.header.stamp.sec, mask.header.stamp.nanosec, mask.header.frame_id) == (1234, 567_000_000,
                                                                                        "depth_camera_optical")
    assert (mask.encoding, mask.height, mask.width) == ("mono8", 48, 80)
    assert code == 0, output()
    assert "Traceback" not in output(), output()
